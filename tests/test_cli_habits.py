"""The habits Terraform users bring: -out=FILE, show with no argument, --no-color anywhere, validate --json,
--lock-timeout. Each runs the CLI in-process in a copy of the demo, as a user types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adsync_plan import cli
from adsync_plan.state import Lock
from tests.test_cli_ops import set_in_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def demo(demo, monkeypatch):
    """conftest's copy of the demo, as the working directory: the commands run as a user types them there."""
    monkeypatch.chdir(demo)
    return demo


def adsync(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "-out=plans/p.plan.json"],
        ["plan", "-out", "plans/p.plan.json"],
        ["plan", "-refresh-only"],
        ["apply", "-lock-timeout=5m", "plans/p.plan.json"],
    ],
)
def test_terraform_single_dash_options_are_a_usage_error(demo, capsys, args):
    code, out, err = adsync(capsys, *args)
    name = args[1].split("=")[0]
    assert code == 64 and out == ""
    assert err.startswith(f"Error: {name}: long options take two dashes here: -{name}")
    assert not any(p.name.startswith("ut") for p in demo.rglob("*"))  # `-o ut=...` would have saved there


def test_out_long_form_with_equals_saves_the_plan(demo, capsys):
    assert adsync(capsys, "plan", "--out=plans/p.plan.json")[0] == 0
    assert json.loads((demo / "plans/p.plan.json").read_text())["changes"]


def test_a_glued_short_option_still_works(demo, capsys):
    assert adsync(capsys, "plan", "-oplans/glued.plan.json")[0] == 0
    assert (demo / "plans/glued.plan.json").is_file()


def test_show_without_argument_shows_the_newest_plan(demo, capsys):
    assert adsync(capsys, "plan", "-o", "plans/a.plan.json")[0] == 0
    set_in_config(demo / "adsync.yaml", "pbx", "licenses", 10)
    assert adsync(capsys, "plan", "-o", "plans/b.plan.json")[0] == 0
    newest = json.loads((demo / "plans/b.plan.json").read_text())
    os.utime(demo / "plans/a.plan.json", (1, 1))  # a.plan.json is older whatever the clock's resolution
    code, out, err = adsync(capsys, "show", "--json")
    assert code == 0 and "plans/b.plan.json, the newest plan under plans/" in err
    assert json.loads(out)["plan_id"] == newest["plan_id"]


def test_show_without_argument_and_no_plans_says_what_to_do(demo, capsys):
    code, out, err = adsync(capsys, "show")
    assert code == 64 and out == ""
    assert "no saved plan under plans/; name the plan file: adsync-plan show PLANFILE." in err


def test_no_color_is_accepted_after_the_subcommand(demo, capsys):
    code, out, _ = adsync(capsys, "validate", "--no-color")
    assert code == 0 and "the configuration is valid" in out


def test_validate_json_reports_every_problem(demo, capsys):
    code, out, _ = adsync(capsys, "validate", "--json")
    assert code == 0 and json.loads(out) == {"valid": True, "file": "adsync.yaml", "source": "ldif", "pbx": "file"}
    text = (demo / "adsync.yaml").read_text().replace("ownership: all", "ownership: everyone\nownershp: all")
    (demo / "adsync.yaml").write_text(text)
    code, out, err = adsync(capsys, "validate", "--json")
    report = json.loads(out)
    assert code == 1 and err == "" and report["valid"] is False
    assert [p.split(": ", 1)[1] for p in report["problems"]] == [
        "ownership: 'everyone' is not one of: all, bound.",
        "ownershp: unknown key 'ownershp'; did you mean 'ownership'?",
    ]


def test_lock_timeout_overrides_the_configuration(demo, capsys):
    set_in_config(demo / "adsync.yaml", "state", "lock_timeout", "10m")
    assert adsync(capsys, "plan", "-o", "plans/p.plan.json")[0] == 0
    with Lock(demo / "states", "p-1", "apply", 0):  # held by this (living) process
        # in a child process: were the option ignored, it would wait ten minutes and the timeout below fails
        proc = subprocess.run(
            [sys.executable, "-m", "adsync_plan", "apply", "plans/p.plan.json", "--lock-timeout", "0s"],
            cwd=demo,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    assert proc.returncode == 1 and "another run holds the lock" in proc.stderr
    code, _, err = adsync(capsys, "apply", "plans/p.plan.json", "--lock-timeout", "soon")
    assert code == 64 and "--lock-timeout soon: write a duration such as 0s, 30s, 5m or 1h." in err


def test_the_command_line_is_made_once_however_often_the_cli_runs(capsys, monkeypatch):
    """typer makes the click command by evaluating every option's annotations (30 ms); the suite runs the
    CLI in process thousands of times."""
    import typer.main

    made = []
    real = typer.main.get_command
    monkeypatch.setattr(typer.main, "get_command", lambda app: made.append(app) or real(app))
    cli._command.cache_clear()
    try:
        assert [cli.run(["--version"]) for _ in range(3)] == [0, 0, 0]
        assert cli.run(["-out=p.json", "plan"]) == cli.EXIT_USAGE  # the Terraform-style check uses it too
    finally:
        cli._command.cache_clear()
    assert len(made) == 1
