"""Shared fixtures: the CLI run in-process, and copies of the demo and of the golden cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adsync_plan.cli import run

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
