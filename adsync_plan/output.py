"""The only module that prints: plans (text, markdown, json), progress, messages and log set-up."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
from collections.abc import Iterator

from adsync_plan.model import SHAPE_FIELDS, Action, Diagnostic, Plan
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
    prefix = "\x1b[31mError:\x1b[0m " if _color and sys.stderr.isatty() else "Error: "
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
    """A progress bar on a terminal, drawn on standard error so that `show --markdown > plan.md` stays clean."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import Progress as _Bar

        self.bar = _Bar(console=Console(stderr=True, no_color=not _color), transient=True)
        self.task = None

    def start(self, label: str, total: int | None = None) -> None:
        self.bar.start()
        self.task = self.bar.add_task(label, total=total)

    def advance(self, n: int = 1) -> None:
        self.bar.advance(self.task, n)

    def done(self) -> None:
        # each stage (directory, PBX, apply) gets its own bar; remove the finished one so it is not redrawn
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None
        self.bar.stop()


def progress():
    return RichProgress() if sys.stderr.isatty() else LogProgress()


# -- plans --------------------------------------------------------------------------------------------------


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# a phone number in free text: an optional +, then at least two digits, single separators allowed between
# digits ("+49 7022 27978-20"); not inside a word, a uuid or a placeholder
_NUMBER = re.compile(r"(?<![\w:.-])\+?\d(?:[ \-/]?\d)+(?![\w-]|:\w)")
_NUMBER_SEPARATORS = re.compile(r"[ \-/]")


class Redactor:
    """Stable placeholders for e-mail addresses and numbers (for public repositories).

    The same value always gives the same placeholder, in fields, messages, DNs and addresses alike, so a
    reviewer can still see that two users claim the same number without seeing the number."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, field: str, value):
        if not self.enabled or value is None:
            return value
        if isinstance(value, list | tuple):
            return [self(field, v) for v in value]
        if field == "email":
            return self.placeholder("email", str(value))
        if field.endswith("numbers") or field in ("login_id", "primary_internal_number"):
            return self.placeholder("number", str(value))
        return value

    @staticmethod
    def placeholder(tag: str, value: str) -> str:
        key = value.lower() if tag == "email" else _NUMBER_SEPARATORS.sub("", value)
        return f"<{tag}:{hashlib.sha256(key.encode()).hexdigest()[:8]}>"

    def text(self, text: str | None) -> str | None:
        """Free text (a diagnostic message, a DN, an address): e-mail addresses and numbers replaced."""
        if not self.enabled or not text:
            return text
        text = _EMAIL.sub(lambda m: self.placeholder("email", m.group(0)), text)
        return _NUMBER.sub(lambda m: self.placeholder("number", m.group(0)), text)

    def address(self, address: str) -> str:
        """`pbx_user.<login_id>` names a user by its login ID, which is a number."""
        if self.enabled and address.startswith("pbx_user."):
            return "pbx_user." + self.placeholder("number", address.partition(".")[2])
        return address

    def diagnostic(self, d: Diagnostic) -> Diagnostic:
        if not self.enabled:
            return d
        source = {k: self.text(v) if k == "dn" else v for k, v in d.source.items()} if d.source else d.source
        return Diagnostic(d.severity, d.code, self.address(d.address), self.text(d.message), source)


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


def _heading(action: Action, redact: Redactor | None = None) -> str:
    address = redact.address(action.address) if redact else action.address
    where = f" (PBX user {action.pbx_user_id})" if action.pbx_user_id else ""
    verb = {"create": "will be created", "update": "will be updated", "orphan": "will be orphaned"}[action.action]
    return f"{SIGNS[action.action]} {address}{where} {verb}"


def plan_text(plan: Plan, redact: Redactor | None = None) -> str:
    redact = redact or Redactor(False)
    lines = []
    if plan.changes:
        lines += [
            "adsync-plan will make these changes (+ create, ~ update, ! orphan; nothing is ever deleted):",
            "",
        ]
    for action in plan.changes:
        lines.append(f"  {_heading(action, redact)}")
        lines += [f"      {line}" for line in _action_lines(action, redact)]
        lines.append("")
    problems = [redact.diagnostic(d) for d in plan.diagnostics if d.severity != "info"]
    if problems:
        lines.append("Diagnostics:")
        for d in problems:
            lines.append(f"  {d.severity:<7} {d.code:<24} {d.address}: {d.message}")
        lines.append("")
    if plan.overrides:
        lines += [f"Overrides used: {', '.join(plan.overrides)}", ""]
    lines.append(summary_line(plan))
    return "\n".join(lines)


# GitHub refuses comments over 65,536 characters; GitLab notes allow more, but nobody reads that much.
MARKDOWN_LIMIT = 60_000
# characters for each part, so that a long held list never crowds out the changes (and the other way round)
HELD_BUDGET = 18_000
NOTES_BUDGET = 3_000  # warnings, and again the notes (one per protected user can be thousands)
DETAILS_BUDGET = 24_000  # per-action <details> blocks; the rest are listed by address ...
LIST_BUDGET = 8_000  # ... as long as this lasts


def plan_markdown(plan: Plan, redact: Redactor | None = None) -> str:
    """A pull-request comment: summary first, then held users with reasons, then one <details> per action."""
    redact = redact or Redactor(False)
    lines = _markdown_summary(plan)
    lines += _markdown_diagnostics(plan, redact)
    lines += _markdown_changes(plan, redact)
    footer = f"<sub>plan {plan.plan_id}, made {plan.created_at}, expires {plan.expires_at}</sub>"
    text = "\n".join(lines)
    if len(text) > MARKDOWN_LIMIT:
        cut = text.rfind("\n</details>\n", 0, MARKDOWN_LIMIT)
        cut = cut + len("\n</details>\n") if cut > 0 else MARKDOWN_LIMIT
        text = text[:cut] + (
            "\n_The rest of this plan is too long for a comment; run "
            "`adsync-plan show PLANFILE` on the saved plan to see all of it._\n"
        )
    return text + "\n" + footer


def _markdown_summary(plan: Plan) -> list[str]:
    s = plan.summary
    lines = ["### adsync-plan", ""]
    refused = [d for d in plan.diagnostics if d.code == "SAFETY_THRESHOLD" and d.severity == "error"]
    if refused:
        lines += ["> [!CAUTION]", "> The safety valve (R13) refused this plan; it cannot be applied.", ""]
    if plan.overrides:
        lines += ["> [!WARNING]", f"> Made with `--{', --'.join(plan.overrides)}`: a safety limit was overridden.", ""]
    lines += [
        f"**{summary_line(plan)}**",
        "",
        "| to create | to update | to orphan | unchanged | held | protected |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {s['create']} | {s['update']} | {s['orphan']} | {s.get('unchanged', 0)} | {s.get('held', 0)} "
        f"| {s.get('protected', 0)} |",
        "",
    ]
    return lines


def _markdown_diagnostics(plan: Plan, redact: Redactor) -> list[str]:
    lines = []
    by_severity = {"error": [], "warning": [], "info": []}
    for d in plan.diagnostics:
        by_severity[d.severity].append(redact.diagnostic(d))
    held = [d for d in by_severity["error"] if d.code != "SAFETY_THRESHOLD"]
    plan_errors = [d for d in by_severity["error"] if d.code == "SAFETY_THRESHOLD"]
    if plan_errors:
        lines += ["#### Refused", ""] + [f"- {_md_escape(d.message)}" for d in plan_errors] + [""]
    if held:
        lines += [
            f"#### Held users ({len({d.address for d in held})})",
            "",
            "Nothing changes for these users until the directory is fixed.",
            "",
            "| user | rule | reason | fix in |",
            "| --- | --- | --- | --- |",
        ]
        rows = (f"| `{d.address}` | `{d.code}` | {_md_escape(d.message)} | {_md_source(d)} |" for d in held)
        lines += _bounded(rows, len(held), HELD_BUDGET, "| ... | | {} more; see `adsync-plan show PLANFILE` | |")
        lines.append("")
    if by_severity["warning"]:
        lines += ["#### Warnings", ""]
        lines += _bounded(_md_items(by_severity["warning"]), len(by_severity["warning"]), NOTES_BUDGET, MORE)
        lines.append("")
    if by_severity["info"]:
        lines += [
            "<details>",
            f"<summary>Notes ({len(by_severity['info'])})</summary>",
            "",
        ]
        lines += _bounded(_md_items(by_severity["info"]), len(by_severity["info"]), NOTES_BUDGET, MORE)
        lines += ["", "</details>", ""]
    return lines


def _markdown_changes(plan: Plan, redact: Redactor) -> list[str]:
    if not plan.changes:
        return []
    lines, used, done = ["#### Changes", ""], 0, 0
    for action in plan.changes:
        block = ["<details>", f"<summary><code>{_html(_heading(action, redact))}</code></summary>", ""]
        block += ["```diff"] + _diff_lines(action, redact) + ["```", "", "</details>", ""]
        used += sum(len(line) + 1 for line in block)
        if used > DETAILS_BUDGET:
            break
        lines += block
        done += 1
    if done == len(plan.changes):
        return lines
    rest = plan.changes[done:]
    lines += ["<details>", f"<summary>... and {len(rest)} more changes</summary>", ""]
    lines += _bounded((f"- `{_heading(a, redact)}`" for a in rest), len(rest), LIST_BUDGET, MORE)
    return lines + ["", "</details>", ""]


MORE = "- ... and {} more; see `adsync-plan show PLANFILE`"


def _md_items(diagnostics: list[Diagnostic]) -> Iterator[str]:
    return (f"- `{d.address}` `{d.code}`: {_md_escape(d.message)}" for d in diagnostics)


def _bounded(lines: Iterator[str], total: int, budget: int, more: str) -> list[str]:
    """The first of `total` lines that fit into `budget` characters, then `more` with how many were left
    out. Lazy: only the lines shown are made, however long the plan."""
    out, used = [], 0
    for line in lines:
        used += len(line) + 1
        if used > budget:
            return out + [more.format(total - len(out))]
        out.append(line)
    return out


def _diff_lines(action: Action, redact: Redactor) -> list[str]:
    """A diff GitHub and GitLab colour: `-` the value before, `+` the value after."""
    after = action.after.to_dict()
    if action.action == "create":
        return [f"+ {name}: {_fmt(redact(name, after[name]))}" for name in SHAPE_FIELDS]
    before = action.before.to_dict()
    lines = []
    for name in action.fields:
        lines.append(f"- {name}: {_fmt(redact(name, before[name]))}")
        lines.append(f"+ {name}: {_fmt(redact(name, after[name]))}")
    return lines


def _md_source(d: Diagnostic) -> str:
    if not d.source:
        return ""
    parts = [f"`{_md_code(d.source['dn'])}`"] if d.source.get("dn") else []
    if d.source.get("attribute"):
        parts.append(f"`{d.source['attribute']}`")
    return " ".join(parts)


def _md_code(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")


def _md_escape(text: str) -> str:
    # `<` too: a placeholder such as <email:1a2b3c4d> would otherwise render as a link or vanish as HTML
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plan_json(plan: Plan, redact: Redactor | None = None) -> str:
    doc = to_document(plan)
    if redact and redact.enabled:
        for change in doc["changes"]:
            change["address"] = redact.address(change["address"])
            for side in ("before", "after"):
                if change[side]:
                    change[side] = {k: redact(k, v) for k, v in change[side].items()}
        doc["diagnostics"] = [redact.diagnostic(d).to_dict() for d in plan.diagnostics]
    return json.dumps(doc, indent=2, ensure_ascii=False)


# -- doctor -----------------------------------------------------------------------------------------------


def doctor_text(profile: dict) -> str:
    """The doctor report for a terminal."""
    lines = [f"{profile['pbx']}: signed in with {profile['sign_in']}."]
    lines.append(f"Version: {profile['version'] or 'not told by the API'}.")
    for title, rows in _doctor_sections(profile):
        lines += ["", f"{title}:"] + [f"  {row}" for row in rows or ["none"]]
    lines += ["", _doctor_verdict(profile)]
    return "\n".join(lines)


def doctor_markdown(profile: dict) -> str:
    """The doctor report as Markdown, to attach when asking for help (no secrets: there are none in it)."""
    lines = ["## adsync-plan doctor", "", f"- **PBX:** {_md_escape(profile['pbx'])}"]
    lines.append(f"- **Signed in with:** {_md_escape(profile['sign_in'])}")
    lines.append(f"- **Version:** {_md_escape(profile['version'] or 'not told by the API')}")
    lines.append(f"- **Verdict:** {_md_escape(_doctor_verdict(profile))}")
    tables = {
        "Call services": (("Id", "Name", "Label", "adsync-plan uses it for"), "services", ("id", "name", "label")),
        "Permissions": (
            ("Id", "Name", "Description", "adsync-plan uses it for"),
            "permissions",
            ("id", "name", "description"),
        ),
    }
    for title, (head, key, cols) in tables.items():
        lines += ["", f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += [
            "| "
            + " | ".join(_md_escape(str(row[c] if row[c] is not None else "")) for c in (*cols, "mapped_to"))
            + " |"
            for row in profile[key]
        ]
    for title, rows in _doctor_sections(profile)[2:]:
        lines += ["", f"### {title}", ""] + [f"- {_md_escape(row)}" for row in rows or ["none"]]
    return "\n".join(lines) + "\n"


def _doctor_sections(profile: dict) -> list[tuple[str, list[str]]]:
    services = [f"{s['id']} {s['name']} ({s['label']}){_mapped(s)}" for s in profile["services"]]
    permissions = [f"{p['id']} {p['name']} ({p['description']}){_mapped(p)}" for p in profile["permissions"]]
    numbers = [f"{kind}: {n['total']} ({n['users']} assigned to users)" for kind, n in profile["numbers"].items()]
    numbers += [f"read {e['fields']} as {e['e164']}" for e in profile["examples"]]
    system = [f"{u['id']} login ID {u['login']} {u['name']}: {u['why']}" for u in profile["system_users"]]
    return [
        ("Call services", services),
        ("Permissions", permissions),
        ("Numbers", numbers),
        ("Users that look like system or API users", system),
        ("Assumptions not confirmed", profile["assumptions"]),
        ("Warnings", profile["warnings"]),
        ("Problems (apply cannot run until they are fixed)", profile["problems"]),
    ]


def _mapped(row: dict) -> str:
    return f" -> {row['mapped_to']}" if row["mapped_to"] else ""


def _doctor_verdict(profile: dict) -> str:
    if profile["problems"]:
        return f"{len(profile['problems'])} mapping(s) missing or ambiguous: plan and apply refuse until fixed."
    return "Every mapping apply needs was found."
