"""The only module that prints: plans (text, markdown, json), progress, messages and log set-up."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time

from adsync_plan.model import SHAPE_FIELDS, Action, Plan
from adsync_plan.planfile import to_document

SIGNS = {"create": "+", "update": "~", "orphan": "!"}
TRACE = 5
logging.addLevelName(TRACE, "TRACE")
_color = False


# -- messages -----------------------------------------------------------------------------------------------


def setup(level: str = "warning", fmt: str = "text", color: bool = True) -> None:
    global _color
    _color = color and sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter() if fmt == "json" else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(TRACE if level == "trace" else getattr(logging, level.upper()))
    for noisy in ("urllib3", "msal", "ldap3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "trace" else logging.WARNING)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def out(text: str = "") -> None:
    print(text)


def error(text: str) -> None:
    prefix = "\x1b[31mError:\x1b[0m " if _color else "Error: "
    print(prefix + text, file=sys.stderr)


def info(text: str) -> None:
    print(text, file=sys.stderr)


# -- progress -----------------------------------------------------------------------------------------------


class LogProgress:
    """Plain lines for pipelines: start, then a line at most every 5 s, then done with the count."""

    def __init__(self):
        self.label, self.count, self.total, self.last = "", 0, None, 0.0

    def start(self, label: str, total: int | None = None) -> None:
        self.label, self.count, self.total, self.last = label, 0, total, time.monotonic()
        info(f"{label} ...")

    def advance(self, n: int = 1) -> None:
        self.count += n
        if time.monotonic() - self.last > 5:
            self.last = time.monotonic()
            info(f"{self.label}: {self.count}" + (f"/{self.total}" if self.total else ""))

    def done(self) -> None:
        info(f"{self.label}: done ({self.count})")


class RichProgress:
    """A progress bar on a terminal."""

    def __init__(self):
        from rich.progress import Progress as _Bar

        self.bar = _Bar(transient=True)
        self.task = None

    def start(self, label: str, total: int | None = None) -> None:
        self.bar.start()
        self.task = self.bar.add_task(label, total=total)

    def advance(self, n: int = 1) -> None:
        self.bar.advance(self.task, n)

    def done(self) -> None:
        self.bar.stop()


def progress(quiet: bool = False):
    from adsync_plan.model import NO_PROGRESS

    if quiet:
        return NO_PROGRESS
    return RichProgress() if sys.stderr.isatty() else LogProgress()


# -- plans --------------------------------------------------------------------------------------------------


class Redactor:
    """Stable placeholders for e-mail addresses and numbers (for public repositories)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, field: str, value):
        if not self.enabled or value is None:
            return value
        if isinstance(value, list | tuple):
            return [self(field, v) for v in value]
        if field == "email" or field.endswith("numbers") or field in ("login_id", "primary_internal_number"):
            tag = "email" if field == "email" else "number"
            return f"<{tag}:{hashlib.sha256(str(value).encode()).hexdigest()[:8]}>"
        return value


def summary_line(plan: Plan) -> str:
    s = plan.summary
    if not plan.changes:
        line = "No changes. The PBX matches the directory."
        return line + (f" {s.get('held', 0)} held." if s.get("held") else "")
    return f"Plan: {s['create']} to create, {s['update']} to update, {s['orphan']} to orphan; {s.get('held', 0)} held."


def _fmt(value) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return json.dumps(value, ensure_ascii=False)


def _action_lines(action: Action, redact: Redactor) -> list[str]:
    if action.action == "create":
        after = action.after.to_dict()
        return [f"{name}: {_fmt(redact(name, after[name]))}" for name in SHAPE_FIELDS]
    lines = []
    before, after = action.before.to_dict(), action.after.to_dict()
    for name in action.fields:
        if isinstance(after[name], list):
            added = sorted(set(after[name]) - set(before[name]))
            removed = sorted(set(before[name]) - set(after[name]))
            parts = [f"+ {v}" for v in redact(name, added)] + [f"- {v}" for v in redact(name, removed)]
            lines.append(f"{name}: " + ", ".join(parts))
        else:
            lines.append(f"{name}: {_fmt(redact(name, before[name]))} -> {_fmt(redact(name, after[name]))}")
    return lines


def _heading(action: Action) -> str:
    where = f" (PBX user {action.pbx_user_id})" if action.pbx_user_id else ""
    verb = {"create": "will be created", "update": "will be updated", "orphan": "will be orphaned"}[action.action]
    return f"{SIGNS[action.action]} {action.address}{where} {verb}"


def plan_text(plan: Plan, redact: Redactor | None = None) -> str:
    redact = redact or Redactor(False)
    lines = []
    if plan.changes:
        lines += [
            "adsync-plan will make these changes (+ create, ~ update, ! orphan; nothing is ever deleted):",
            "",
        ]
    for action in plan.changes:
        lines.append(f"  {_heading(action)}")
        lines += [f"      {line}" for line in _action_lines(action, redact)]
        lines.append("")
    problems = [d for d in plan.diagnostics if d.severity != "info"]
    if problems:
        lines.append("Diagnostics:")
        for d in problems:
            lines.append(f"  {d.severity:<7} {d.code:<24} {d.address}: {d.message}")
        lines.append("")
    if plan.overrides:
        lines += [f"Overrides used: {', '.join(plan.overrides)}", ""]
    lines.append(summary_line(plan))
    return "\n".join(lines)


def plan_markdown(plan: Plan, redact: Redactor | None = None) -> str:
    redact = redact or Redactor(False)
    s = plan.summary
    lines = [
        "### adsync-plan",
        "",
        f"**{summary_line(plan)}**",
        "",
        "| create | update | orphan | unchanged | held |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {s['create']} | {s['update']} | {s['orphan']} | {s.get('unchanged', 0)} | {s.get('held', 0)} |",
        "",
    ]
    held = [d for d in plan.diagnostics if d.severity == "error"]
    if held:
        lines += ["#### Held users", "", "| user | code | reason |", "| --- | --- | --- |"]
        lines += [f"| `{d.address}` | `{d.code}` | {_md_escape(d.message)} |" for d in held]
        lines.append("")
    warnings = [d for d in plan.diagnostics if d.severity == "warning"]
    if warnings:
        lines += ["#### Warnings", ""] + [f"- `{d.address}` `{d.code}`: {_md_escape(d.message)}" for d in warnings]
        lines.append("")
    for action in plan.changes:
        lines += ["<details>", f"<summary><code>{_html(_heading(action))}</code></summary>", "", "```diff"]
        sign = {"create": "+", "update": "!", "orphan": "!"}[action.action]
        lines += [f"{sign} {line}" for line in _action_lines(action, redact)]
        lines += ["```", "", "</details>", ""]
    if plan.overrides:
        lines += [f"Overrides used: `{', '.join(plan.overrides)}`", ""]
    lines.append(f"<sub>plan {plan.plan_id}, made {plan.created_at}, expires {plan.expires_at}</sub>")
    return "\n".join(lines)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plan_json(plan: Plan, redact: Redactor | None = None) -> str:
    doc = to_document(plan)
    if redact and redact.enabled:
        for change in doc["changes"]:
            for side in ("before", "after"):
                if change[side]:
                    change[side] = {k: redact(k, v) for k, v in change[side].items()}
    return json.dumps(doc, indent=2, ensure_ascii=False)
