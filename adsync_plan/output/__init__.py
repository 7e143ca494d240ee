"""The only package that prints: messages, log set-up and progress here; plans in text, markdown and json
in modules of their own, values escaped by `escape`, personal data replaced by `redact`."""

from __future__ import annotations

import json
import logging
import sys
import time

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


# -- plans: each rendering has its own module; these names are the interface the CLI uses ------------------

from adsync_plan.output.doctor import doctor_markdown, doctor_text  # noqa: E402
from adsync_plan.output.escape import clean, md  # noqa: E402
from adsync_plan.output.jsondoc import plan_json  # noqa: E402
from adsync_plan.output.markdown import MARKDOWN_LIMIT, plan_markdown  # noqa: E402
from adsync_plan.output.redact import Redactor, learn_names  # noqa: E402
from adsync_plan.output.text import SIGNS, plan_text, summary_line  # noqa: E402

__all__ = [
    "MARKDOWN_LIMIT",
    "SIGNS",
    "Redactor",
    "clean",
    "doctor_markdown",
    "doctor_text",
    "learn_names",
    "md",
    "plan_json",
    "plan_markdown",
    "plan_text",
    "summary_line",
]
