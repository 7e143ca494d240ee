"""Operating adsync-plan: init, explain, sync, the lock, progress and logs, from the CLI as a user types it.

Every command runs in-process through `adsync_plan.cli.run([...])` (which returns the exit code) in a copy
of examples/demo, or of a project that `init` wrote.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from adsync_plan import cli, output, pipeline, schemas
from adsync_plan.config import load_config
from adsync_plan.state import Lock, read_lock

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo"
DEMO_SUMMARY = "Plan: 35 to create, 2 to update, 1 to orphan; 11 held."


@pytest.fixture
def demo(tmp_path, monkeypatch):
    folder = tmp_path / "demo"
    shutil.copytree(DEMO, folder, ignore=shutil.ignore_patterns("make_demo.py", "states", "plans", "__pycache__"))
    monkeypatch.chdir(folder)
    return folder


def adsync(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI as a user types it; returns (exit code, stdout, stderr)."""
    code = cli.run(["--no-color", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def set_in_config(path: Path, section: str, key: str, value) -> None:
    yaml = YAML()
    data = yaml.load(path.read_text())
    data.setdefault(section, {})[key] = value
    with open(path, "w") as fh:
        yaml.dump(data, fh)


# -- init ---------------------------------------------------------------------------------------------


def test_init_ldif_file_writes_a_project_that_plans_at_once(tmp_path, monkeypatch, capsys):
    code, out, err = adsync(capsys, "init", str(tmp_path / "pbx"), "--source", "ldif", "--pbx", "file")
    assert code == 0, err
    written = sorted(str(p.relative_to(tmp_path / "pbx")) for p in (tmp_path / "pbx").rglob("*") if p.is_file())
    assert written == [
        ".adsync/config.schema.json",
        ".github/workflows/adsync-plan.yml",
        ".gitignore",
        ".gitlab-ci.yml",
        "adsync.yaml",
        "directory.ldif",
        "pbx.yaml",
        "plans/.gitkeep",
        "states/.gitkeep",
    ]
    assert out.startswith(f"Wrote 9 files in {tmp_path / 'pbx'}: ")
    folder = tmp_path / "pbx"
    config = (folder / "adsync.yaml").read_text()
    assert config.splitlines()[0] == "# yaml-language-server: $schema=.adsync/config.schema.json"
    assert (folder / ".adsync/config.schema.json").read_text() == schemas.schema_text("config")
    assert "states/.adsync.lock" in (folder / ".gitignore").read_text().splitlines()

    monkeypatch.chdir(folder)
    assert adsync(capsys, "validate")[:2] == (0, "adsync.yaml: the configuration is valid (ldif source, file PBX).\n")
    assert adsync(capsys, "render")[0] == 0
    assert adsync(capsys, "refresh")[0] == 0
    code, out, err = adsync(capsys, "plan", "-o", "plans/first.plan.json")
    assert code == 0, err
    assert out.splitlines()[-1] == "Plan: 2 to create, 1 to update, 0 to orphan; 1 held."
    assert "  user.kohnemail  MISSING_EMAIL: " in out
    code, out, err = adsync(capsys, "apply", "plans/first.plan.json")
    assert code == 0, err
    assert out.splitlines()[-1].endswith("Applied: 2 to create, 1 to update, 0 to orphan; 1 held.")
    code, out, _ = adsync(capsys, "plan", "--detailed-exitcode")
    assert (code, out.splitlines()[-1]) == (0, "No changes. 1 user is held: user.kohnemail.")


@pytest.mark.parametrize("source", ["ldap", "azure", "ldif"])
@pytest.mark.parametrize("pbx", ["starface", "file"])
def test_init_every_combination_validates(tmp_path, monkeypatch, capsys, source, pbx):
    code, _, err = adsync(capsys, "init", str(tmp_path), "--source", source, "--pbx", pbx)
    assert code == 0, err
    monkeypatch.chdir(tmp_path)
    code, out, err = adsync(capsys, "validate")
    assert (code, out) == (0, f"adsync.yaml: the configuration is valid ({source} source, {pbx} PBX).\n"), err
    text = (tmp_path / "adsync.yaml").read_text()
    assert "@@" not in text
    for ci_file in (".github/workflows/adsync-plan.yml", ".gitlab-ci.yml"):
        body = (tmp_path / ci_file).read_text()
        assert "@@" not in body
        YAML(typ="safe").load(body)  # parses
    github = (tmp_path / ".github/workflows/adsync-plan.yml").read_text()
    # the jobs run the same commands whatever the source and PBX; only the secrets differ
    assert pipeline_commands(tmp_path / ".github/workflows/adsync-plan.yml")[:3] == [
        ["validate"],
        ["plan", "--desired", "states/desired.yaml", "--no-refresh", "-o", "plans/pr.plan.json"],
        ["show", "plans/pr.plan.json", "--markdown", ">", "plan.md"],
    ]
    if pbx == "starface":
        assert "ADSYNC_STARFACE_PASSWORD: ${{ secrets.ADSYNC_STARFACE_PASSWORD }}" in github
        assert "password_env: ADSYNC_STARFACE_PASSWORD" in text
        # a STARFACE 10 signs in with OAuth: the template names the client secret, the jobs that reach the
        # PBX get it, and the configuration with that line switched on is valid too
        assert "# client_secret_env: ADSYNC_STARFACE_CLIENT_SECRET" in text
        assert "ADSYNC_STARFACE_CLIENT_SECRET: ${{ secrets.ADSYNC_STARFACE_CLIENT_SECRET }}" in github
        assert "ADSYNC_STARFACE_CLIENT_SECRET (STARFACE 10 and later)" in github
        (tmp_path / "adsync.yaml").write_text(text.replace("# client_secret_env:", "client_secret_env:"))
        code, out, err = adsync(capsys, "validate")
        assert code == 0, err
    if source == "ldap":
        assert "ADSYNC_LDAP_PASSWORD: ${{ secrets.ADSYNC_LDAP_PASSWORD }}" in github


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "adsync.yaml").write_text("# mine\n")
    code, out, err = adsync(capsys, "init", str(tmp_path), "--source", "ldif", "--pbx", "file")
    assert code == 1
    assert out == ""
    assert err == (
        f"Error: {tmp_path}: init never overwrites files and adsync.yaml exist already, so nothing was written; "
        "run it in an empty folder, or move those files away first.\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["adsync.yaml"]
    assert (tmp_path / "adsync.yaml").read_text() == "# mine\n"


def test_init_unknown_source_is_a_usage_error(tmp_path, capsys):
    code, _, err = adsync(capsys, "init", str(tmp_path), "--source", "nis")
    assert code == 64
    assert "nis" in err
    assert list(tmp_path.iterdir()) == []


# -- the generated pipelines, run against the demo ------------------------------------------------------


def pipeline_commands(path: Path) -> list[list[str]]:
    """Every adsync-plan command line of a generated pipeline, in job order, with its variables expanded."""
    data = YAML(typ="safe").load(path.read_text())
    env = {**data.get("env", {}), **data.get("variables", {})}
    scripts = []
    if "jobs" in data:  # GitHub Actions
        for job in data["jobs"].values():
            scripts += [step["run"] for step in job["steps"] if "run" in step]
    else:  # GitLab CI
        scripts += ["\n".join(job["script"]) for name, job in data.items() if isinstance(job, dict) and "script" in job]
    commands = []
    for script in scripts:
        for line in script.splitlines():
            line = line.strip()
            if not line.startswith("adsync-plan "):
                continue
            for name, value in env.items():
                line = line.replace(f"${name}", str(value))
            commands.append(line.split()[1:])
    return commands


def run_pipeline(capsys, commands: list[list[str]]) -> list[tuple[list[str], int]]:
    results = []
    for args in commands:
        redirect = None
        if ">" in args:
            args, redirect = args[: args.index(">")], args[args.index(">") + 1]
        code, out, err = adsync(capsys, *args)
        if redirect:
            Path(redirect).write_text(out)
        allowed = (0, 2) if "--detailed-exitcode" in args else (0,)
        assert code in allowed, f"adsync-plan {' '.join(args)} exited {code}: {err}"
        results.append((args, code))
    return results


@pytest.mark.parametrize("pipeline", [".github/workflows/adsync-plan.yml", ".gitlab-ci.yml"])
def test_generated_pipelines_run_against_the_demo(tmp_path, demo, capsys, pipeline):
    assert adsync(capsys, "init", str(tmp_path / "new"), "--source", "ldif", "--pbx", "file")[0] == 0
    commands = pipeline_commands(tmp_path / "new" / pipeline)
    # the pull-request job, the main-branch job, the drift job, the unattended sync job
    assert commands == [
        ["validate"],
        ["plan", "--desired", "states/desired.yaml", "--no-refresh", "-o", "plans/pr.plan.json"],
        ["show", "plans/pr.plan.json", "--markdown", ">", "plan.md"],
        ["plan", "--desired", "states/desired.yaml", "--no-refresh", "-o", "plans/main.plan.json"],
        ["--log-level", "info", "--log-format", "json", "apply", "plans/main.plan.json"],
        ["--log-level", "info", "--log-format", "json", "render"],
        ["--log-level", "info", "--log-format", "json", "refresh"],
        [
            "plan",
            "--desired",
            "states/desired.yaml",
            "--no-refresh",
            "--detailed-exitcode",
            "-o",
            "plans/drift.plan.json",
        ],
        *([["show", "plans/drift.plan.json", "--markdown", ">", "plan.md"]] if "github" in pipeline else []),
        ["--log-level", "info", "--log-format", "json", "sync", "--yes"],
    ]
    # what the repository holds when a pull request is opened: the rendered desired state and the snapshot
    assert adsync(capsys, "render")[0] == 0
    assert adsync(capsys, "refresh")[0] == 0
    pbx_before = (demo / "pbx.yaml").read_bytes()
    results = run_pipeline(capsys, commands)
    markdown = (demo / "plan.md").read_text()
    assert markdown.startswith("### adsync-plan\n")
    assert (demo / "pbx.yaml").read_bytes() != pbx_before  # the main-branch job applied the reviewed plan
    audit = [json.loads(line) for line in (demo / "states/audit.jsonl").read_text().splitlines()]
    assert [a["result"] for a in audit] == ["applied"]
    assert audit[0]["summary"]["create"] == 35
    drift = next(code for args, code in results if "--detailed-exitcode" in args)
    assert drift == 0  # right after the apply, nothing has drifted


def test_main_job_refuses_a_stale_plan(demo, capsys):
    """The main-branch job re-plans from the committed files; the PBX changed since the snapshot: refused."""
    assert adsync(capsys, "render")[0] == 0
    assert adsync(capsys, "refresh")[0] == 0
    assert (
        adsync(capsys, "plan", "--desired", "states/desired.yaml", "--no-refresh", "-o", "plans/main.plan.json")[0] == 0
    )
    pbx = demo / "pbx.yaml"
    pbx.write_text(pbx.read_text().replace('"last_name":"Müller"', '"last_name":"Müller-Neu"'))
    changed = pbx.read_bytes()
    code, _, err = adsync(capsys, "apply", "plans/main.plan.json")
    assert code == 1
    assert "the plan is stale" in err and "PBX user 3 (20) changed: last_name" in err
    assert pbx.read_bytes() == changed


# -- explain --------------------------------------------------------------------------------------------


def test_explain_an_updated_user(demo, capsys):
    code, out, err = adsync(capsys, "explain", "jmueller")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "user.jmueller"
    assert lines[1] == "  entry:      CN=Jürgen Müller,OU=Staff,DC=example,DC=com"
    assert any(re.fullmatch(r"  email\s+juergen\.mueller@example\.com\s+from mail", line) for line in lines)
    assert any(re.fullmatch(r"  phones\s+'\+49 7022 27978-20'\s+from telephoneNumber/otherTelephone", x) for x in lines)
    assert "  in scope with the role admin; enabled: yes" in lines
    assert (
        "  '+49 7022 27978-20' (telephoneNumber/otherTelephone): external +4970222797820, internal 20 through "
        "numbering.blocks" in lines
    )
    assert any(line.startswith("  matches PBX user 3 (login 20, Jürgen Müller) by e-mail address") for line in lines)
    assert "  ~ update PBX user 3: the directory differs in these fields" in lines
    assert "      role: user -> admin" in lines


def test_explain_says_when_the_safety_valve_refused_the_whole_plan(demo, capsys):
    """The user's own action is shown as planned, but a reviewer must not read it as what apply will do."""
    cfg = demo / "adsync.yaml"
    cfg.write_text(cfg.read_text().replace("max_orphans: 5", "max_orphans: 0"))  # the demo orphans one user
    code, out, err = adsync(capsys, "explain", "jmueller")
    assert code == 0, err
    assert (
        "  ~ update PBX user 3 (but the safety valve refused the whole plan): the directory differs in these "
        "fields" in out.splitlines()
    )
    cfg.write_text(cfg.read_text().replace("max_orphans: 0", "max_orphans: 5"))
    code, out, err = adsync(capsys, "explain", "jmueller")
    assert "  ~ update PBX user 3: the directory differs in these fields" in out.splitlines()


def test_explain_held_users_render_time_and_plan_time(demo, capsys):
    code, out, _ = adsync(capsys, "explain", "kvorname")
    assert code == 0
    assert "  error MISSING_FIRST_NAME (R1): CN=Kein Vorname,OU=Staff,DC=example,DC=com has no givenName" in out
    assert "[fix givenName of CN=Kein Vorname,OU=Staff,DC=example,DC=com]" in out
    assert "  held: no change is made for this user" in out
    code, out, _ = adsync(capsys, "explain", "user.tkollision")
    assert code == 0
    lines = out.splitlines()
    start = lines.index("PBX rules and matching (R4, R6, R7, R10, R11, SPEC 7):")
    assert lines[start + 1].startswith(
        "  error LOGIN_ID_COLLISION (R6): login ID 90 is already used by PBX user 2 (Tür Sprechstelle)."
    )


def test_explain_an_orphan(demo, capsys):
    code, out, _ = adsync(capsys, "explain", "pbx_user.67")
    assert code == 0
    assert "  ! orphan (R9): no directory user in scope matches it, by binding or by e-mail address" in out
    assert "      last_name: Gegangen -> -Gegangen" in out


def test_explain_a_protected_pbx_user(demo, capsys):
    code, out, _ = adsync(capsys, "explain", "pbx_user.90")
    assert code == 0
    assert out.splitlines()[1] == "  PBX user 2 (login 90, Tür Sprechstelle), user"
    assert "  nothing: its login ID is in protect.logins, so it is never changed (R10)" in out
    code, _, err = adsync(capsys, "explain", "pbx_user.4711")
    assert code == 1
    assert err.splitlines()[-1] == "Error: pbx_user.4711: no PBX user has the login ID 4711; check the snapshot."


def test_explain_unknown_and_out_of_scope(demo, capsys):
    code, out, err = adsync(capsys, "explain", "nobody")
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] + "\n" == (
        "Error: nobody: no user with this account (sAMAccountName) or source id among the 50 users the source "
        "returned; check the spelling and source.base_dn.\n"
    )
    code, out, err = adsync(capsys, "explain", "eberater")
    assert (code, out) == (1, "")
    assert err.splitlines()[-1].startswith(
        "Error: eberater: CN=Extern Berater,OU=Staff,DC=example,DC=com is in the directory but out of scope: "
        "it is a member of none of scope.admin_groups and scope.user_groups (R3)"
    )
    code, _, err = adsync(capsys, "explain", "aalt")
    assert code == 1
    assert "out of scope: the account is disabled (userAccountControl)" in err


def test_explain_from_the_committed_files(demo, capsys):
    assert adsync(capsys, "render")[0] == 0
    assert adsync(capsys, "refresh")[0] == 0
    (demo / "directory.ldif").write_text("garbage\n")  # no directory access in a pull request: never read
    code, out, err = adsync(capsys, "explain", "aschroeder", "--desired", "states/desired.yaml", "--no-refresh")
    assert code == 0, err
    assert "As rendered in the desired state" in out
    assert "      last_name: Schröder-Alt -> Schröder" in out
    code, _, err = adsync(capsys, "explain", "eberater", "--desired", "states/desired.yaml", "--no-refresh")
    assert code == 1
    assert "neither a desired nor a held user in the desired state" in err


# -- sync and the lock ----------------------------------------------------------------------------------


def test_sync_without_yes_only_plans(demo, capsys):
    pbx = (demo / "pbx.yaml").read_bytes()
    code, out, err = adsync(capsys, "sync")
    assert code == 0
    assert out.splitlines()[-1] == DEMO_SUMMARY
    assert "Only planned; run `adsync-plan sync --yes` to apply these changes." in err
    assert adsync(capsys, "sync", "--detailed-exitcode")[0] == 2
    assert (demo / "pbx.yaml").read_bytes() == pbx
    assert not (demo / "plans").exists()
    assert not (demo / "states/audit.jsonl").exists()


def test_sync_yes_applies_then_finds_nothing(demo, capsys):
    code, out, err = adsync(capsys, "sync", "--yes", "--detailed-exitcode")
    assert code == 2, err
    plans = list((demo / "plans").glob("sync-*.plan.json"))
    assert len(plans) == 1
    last = out.splitlines()[-1]
    assert last.startswith("Apply complete: 156 steps, plan saved as ")
    assert last.endswith("Applied: 35 to create, 2 to update, 1 to orphan; 11 held.")
    audit = [json.loads(x) for x in (demo / "states/audit.jsonl").read_text().splitlines()]
    assert [(a["result"], a["plan_id"]) for a in audit] == [("applied", json.loads(plans[0].read_text())["plan_id"])]
    assert not (demo / "states/.adsync.lock").exists()
    code, out, _ = adsync(capsys, "sync", "--yes", "--detailed-exitcode")
    held = "user.deins, user.dzwei, user.fnummer, user.kvorname, user.nruf, ..."
    assert (code, out.splitlines()[-1]) == (0, f"No changes. 11 users are held: {held}.")
    assert len(list((demo / "plans").glob("*.plan.json"))) == 1


def test_sync_refused_by_the_safety_valve_applies_nothing(demo, capsys):
    set_in_config(demo / "adsync.yaml", "safety", "max_orphans", 0)
    pbx = (demo / "pbx.yaml").read_bytes()
    code, _, err = adsync(capsys, "sync", "--yes")
    assert code == 1
    assert "the safety valve refused the plan, nothing was applied: the plan would orphan 1 of 3" in err
    assert (demo / "pbx.yaml").read_bytes() == pbx
    code, out, _ = adsync(capsys, "sync", "--yes", "--allow-mass-orphan")
    assert code == 0
    assert "Overrides used: allow-mass-orphan" in out


def test_sync_and_apply_refuse_a_held_lock_until_force_unlock(demo, capsys):
    set_in_config(demo / "adsync.yaml", "state", "lock_timeout", "1s")
    crashed = Lock(demo / "states", "p-123", "apply", 0)
    crashed.__enter__()  # a run that crashed on another machine: its lock stays until force-unlock
    crashed.path.write_text(json.dumps({**crashed.info, "host": "build-agent-2"}))
    lock_id = crashed.info["id"]
    pbx = (demo / "pbx.yaml").read_bytes()
    code, out, err = adsync(capsys, "sync", "--yes")
    assert (code, out) == (1, "")
    assert f"another run holds the lock (id {lock_id}, apply of plan p-123 by " in err
    assert err.rstrip().endswith(f"if it crashed, run `adsync-plan force-unlock {lock_id}`.")
    assert (demo / "pbx.yaml").read_bytes() == pbx
    assert adsync(capsys, "plan", "-o", "plans/p.plan.json")[0] == 0  # planning needs no lock
    assert adsync(capsys, "apply", "plans/p.plan.json")[0] == 1
    code, _, err = adsync(capsys, "force-unlock", "not-the-id")
    assert code == 1 and f"the lock's id is {lock_id}, not not-the-id; nothing was removed." in err
    code, out, _ = adsync(capsys, "force-unlock", lock_id)
    assert code == 0
    assert out.startswith(f"Removed the lock {lock_id} held by ")
    assert not (demo / "states/.adsync.lock").exists()
    assert adsync(capsys, "sync", "--yes")[0] == 0
    assert (demo / "pbx.yaml").read_bytes() != pbx


def test_sync_holds_the_lock_while_it_runs(demo, capsys, monkeypatch):
    seen = {}
    real_apply = pipeline.apply

    def spy(config, path, progress, on_step=None, locked=False):
        seen["lock"] = read_lock(demo / "states/.adsync.lock")
        seen["locked"] = locked
        return real_apply(config, path, progress, on_step, locked)

    monkeypatch.setattr(pipeline, "apply", spy)
    assert adsync(capsys, "sync", "--yes")[0] == 0
    assert seen["locked"] is True
    assert seen["lock"]["operation"] == "sync"


# -- progress and logs ----------------------------------------------------------------------------------


def test_progress_lines_when_not_a_terminal(demo, capsys):
    code, _, err = adsync(capsys, "sync", "--yes")
    assert code == 0
    lines = err.splitlines()
    for expected in (
        "Reading the LDIF directory ...",
        "Reading the LDIF directory: done (50)",
        "Reading the PBX file: done (5)",
        "Applying the plan ...",
        "Applying the plan: done (156)",
    ):
        assert expected in lines


def test_rich_progress_draws_on_stderr():
    bar = output.RichProgress()
    assert bar.bar.console.stderr is True
    bar.start("Reading", 2)
    bar.advance(2)
    bar.done()
    assert bar.task is None and not bar.bar.tasks


def test_debug_log_has_a_decision_for_every_user(demo, capsys):
    code, _, err = adsync(capsys, "--log-level", "debug", "--log-format", "json", "plan")
    assert code == 0
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    decisions = {r["message"].split(":")[0] for r in records if r["logger"] == "adsync_plan.explain"}
    rendered = pipeline.render(load_config(demo / "adsync.yaml")).rendered
    in_scope = {u.address for u in rendered.desired.values()} | {h.address for h in rendered.held}
    assert len(in_scope) == 48
    assert in_scope <= decisions
    assert "pbx_user.67" in decisions
    out_of_scope = [r["message"] for r in records if r["level"] == "debug" and "out of scope" in r["message"]]
    assert len(out_of_scope) == 2
    assert all(r["level"] in ("debug", "info", "warning") for r in records)


def test_unexpected_errors_are_one_sentence(demo, capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(pipeline, "make_plan", boom)
    code, out, err = adsync(capsys, "plan")
    assert (code, out) == (1, "")
    assert err == (
        "Error: unexpected RuntimeError: boom. This is a bug in adsync-plan; run again with --log-level trace "
        "for the details and report it.\n"
    )
    code, _, err = adsync(capsys, "--log-level", "trace", "plan")
    assert code == 1 and "Traceback (most recent call last)" in err
