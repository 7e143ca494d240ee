"""Shared fixtures: the CLI run in-process, and copies of the demo and of the golden cases."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import warnings
from pathlib import Path

import pytest
from hypothesis import settings

from adsync_plan.cli import run

# Property tests: a fixed seed in CI (env CI set), so a red build can be run again and stays red, and the
# same examples run on every push; a random one on developers' machines, so that over time more are tried.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", derandomize=False)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# A suite started in the background by a script (`cmd &` without job control, nohup) inherits SIGINT ignored,
# and adsync-plan rightly leaves a signal ignored that whoever started it ignored: the Ctrl-C tests, in process
# and in the commands they start (which inherit it), would see no signal at all. Tests run as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "cases"
DEMO = ROOT / "examples" / "demo"


class Cli:
    """Runs `adsync-plan ARGS` in-process; returns (exit code, stdout, stderr)."""

    def __init__(self, capsys):
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = run([str(a) for a in args])
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture
def cli(capsys) -> Cli:
    return Cli(capsys)


@pytest.fixture
def demo(tmp_path) -> Path:
    target = tmp_path / "demo"
    shutil.copytree(DEMO, target, ignore=shutil.ignore_patterns("states", "plans", "make_demo.py"))
    return target


def copy_case(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(CASES / name, target, ignore=shutil.ignore_patterns("expected_*"))
    return target


def golden_update_requested() -> bool:
    """UPDATE_GOLDEN=1 rewrites the golden files, which then only compare with themselves: allowed on a
    developer's machine (review the diff), never in CI (env CI set), where it would make the tests blind."""
    if not os.environ.get("UPDATE_GOLDEN"):
        return False
    if os.environ.get("CI"):
        pytest.fail("UPDATE_GOLDEN is set in CI (env CI): the golden tests would compare files with themselves.")
    return True


def check_golden(path: Path, actual: str | bytes) -> None:
    """`actual` must equal the golden file; with UPDATE_GOLDEN (never in CI) the file is rewritten first."""
    if isinstance(actual, bytes):
        actual = actual.decode("utf-8")
    if golden_update_requested() and (not path.exists() or path.read_text(encoding="utf-8") != actual):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        warnings.warn(f"UPDATE_GOLDEN rewrote {path}: review the diff before committing it", stacklevel=2)
    assert path.exists(), f"{path} is missing; run with UPDATE_GOLDEN=1 (not in CI) and review it"
    assert actual == path.read_text(encoding="utf-8"), f"{path} differs (UPDATE_GOLDEN=1 rewrites it)"


@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 that is bound but never listens: a connection to it is refused at once, and no
    other process can take it while the test runs (a port picked free and closed could be taken meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
