"""Apply trusts no plan file (issue 10, items 5 and 8): a plan carries the digest of its content and, when the
configuration asks for it, a signature; apply refuses an edited plan, a plan of another configuration or
another project, an unsigned or wrongly signed plan, and a file that is no plan at all. Each refusal is one
sentence, exit 1, and changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from adsync_plan.planfile import content_digest
from tests.plans import edit_plan, make_plan, refused

KEY_ENV = "ADSYNC_PLAN_SIGNING_KEY"
KEY = "plan-signing-" + "5e1f" * 8


def first_admin_change(doc: dict) -> dict:
    return next(c for c in doc["changes"] if c["after"]["role"] == "admin")


# -- the digest -----------------------------------------------------------------------------------------


def test_a_plan_carries_the_digest_of_its_content(cli, demo):
    doc = json.loads(make_plan(cli, demo).read_text())
    assert doc["digest"] == content_digest(doc) and doc["digest"].startswith("sha256:")
    assert "signature" not in doc  # no signing configured


def test_an_edited_role_is_refused(cli, demo):
    """Seen on main: after.role admin -> user in a saved plan, and apply exited 0 and did it."""
    path = make_plan(cli, demo)
    edit_plan(path, lambda doc: first_admin_change(doc)["after"].update(role="user"))
    err = refused(cli, demo, "apply", "-c", demo / "adsync.yaml", path)
    assert f"{path}: the plan was changed after it was made; make a new plan." in err
    assert not (demo / "states" / "audit.jsonl").exists()


@pytest.mark.parametrize(
    "change",
    [
        lambda doc: doc.update(expires_at="2099-01-01T00:00:00Z"),
        lambda doc: doc["base_state"].update(serial=99),
        lambda doc: doc["bindings"].update({"5f0c1b7e-0000-0000-0000-000000000000": "1"}),
        lambda doc: doc.update(overrides=["allow-mass-orphan"]),
        lambda doc: doc.update(config_sha256="0" * 64),
        lambda doc: doc.update(desired_sha256="0" * 64),
        lambda doc: doc.update(diagnostics=[]),
        lambda doc: doc["changes"].pop(),
        lambda doc: doc.update(digest="sha256:" + "0" * 64),
    ],
    ids=["expiry", "base-state", "bindings", "overrides", "config", "desired", "diagnostics", "changes", "digest"],
)
def test_every_part_of_the_plan_is_covered(cli, demo, change):
    path = make_plan(cli, demo)
    edit_plan(path, change)
    err = refused(cli, demo, "apply", "-c", demo / "adsync.yaml", path)
    assert "the plan was changed after it was made" in err


def test_a_dropped_safety_refusal_is_refused(cli, demo):
    """The SAFETY_THRESHOLD diagnostic is what keeps a refused plan from being applied: removing it is an edit."""
    text = (demo / "adsync.yaml").read_text()
    (demo / "adsync.yaml").write_text(text.replace("max_orphans: 5", "max_orphans: 0"))
    path = demo / "p.plan.json"
    code, _, _ = cli("plan", "-c", demo / "adsync.yaml", "-o", path, "--allow-mass-orphan")
    assert code == 0
    edit_plan(path, lambda doc: doc.update(overrides=[]))
    assert "changed after it was made" in refused(cli, demo, "apply", "-c", demo / "adsync.yaml", path)


def test_a_plan_without_digest_is_refused(cli, demo):
    path = make_plan(cli, demo)
    edit_plan(path, lambda doc: doc.pop("digest"))
    err = refused(cli, demo, "apply", "-c", demo / "adsync.yaml", path)
    assert "the plan has no digest of its content" in err and "make a new plan" in err
    assert "no digest" in refused(cli, demo, "show", path)


def test_show_refuses_an_edited_plan_too(cli, demo):
    path = make_plan(cli, demo)
    edit_plan(path, lambda doc: first_admin_change(doc)["after"].update(role="user"))
    assert "changed after it was made" in refused(cli, demo, "show", path, "--markdown")


def test_the_audit_record_names_the_plan_digest(cli, demo):
    path = make_plan(cli, demo)
    digest = json.loads(path.read_text())["digest"]
    assert cli("apply", "-c", demo / "adsync.yaml", path)[0] == 0
    record = json.loads((demo / "states" / "audit.jsonl").read_text().splitlines()[-1])
    assert record["plan_digest"] == digest and record["result"] == "applied"


# -- the configuration and the project ------------------------------------------------------------------


def test_a_plan_of_another_configuration_is_refused(cli, demo):
    """Seen on main: pbx.licenses lowered after planning, and apply stopped after 10 of 156 steps."""
    path = make_plan(cli, demo)
    cfg = demo / "adsync.yaml"
    cfg.write_text(cfg.read_text().replace("licenses: 40", "licenses: 10"))
    err = refused(cli, demo, "apply", "-c", cfg, path)
    assert f"{path}: the plan was made with another configuration than {cfg}" in err and "make a new plan" in err


def test_a_plan_of_another_project_is_refused_as_such(cli, demo, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(demo, other)
    assert cli("refresh", "-c", other / "adsync.yaml")[0] == 0
    path = make_plan(cli, other, "--no-refresh")  # planned against the other project's snapshot
    assert cli("refresh", "-c", demo / "adsync.yaml")[0] == 0  # this project: its own lineage
    err = refused(cli, demo, "apply", "-c", demo / "adsync.yaml", path)
    assert "the plan was made for another project" in err and "stale" not in err
    lineage = json.loads((demo / "states" / "pbx.yaml").read_text())["lineage"]
    assert lineage in err


def test_a_plan_made_before_the_first_snapshot_still_applies_after_a_refresh(cli, demo):
    """Without a snapshot the plan's lineage was never saved: a refresh in between is no other project."""
    path = make_plan(cli, demo)
    assert cli("refresh", "-c", demo / "adsync.yaml")[0] == 0
    code, _, err = cli("apply", "-c", demo / "adsync.yaml", path)
    assert code == 0, err


# -- files of the wrong kind ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("adsync.yaml", "a configuration file"),
        ("directory.ldif", "an LDIF file"),
        ("pbx.yaml", "a PBX file (pbx.type: file)"),
        ("states/pbx.yaml", "a state snapshot (states/pbx.yaml)"),
        ("states/desired.yaml", "a desired state (states/desired.yaml)"),
        ("states/audit.jsonl", "the audit log (states/audit.jsonl)"),
    ],
)
def test_files_of_the_wrong_kind_say_so(cli, demo, name, kind):
    cfg = demo / "adsync.yaml"
    assert cli("render", "-c", cfg)[0] == 0 and cli("refresh", "-c", cfg)[0] == 0
    path = make_plan(cli, demo, "--no-refresh")
    assert cli("apply", "-c", cfg, path)[0] == 0  # writes states/audit.jsonl
    (demo / "states" / "audit.jsonl").write_text((demo / "states" / "audit.jsonl").read_text() * 2)
    for command in (("show", demo / name), ("apply", "-c", cfg, demo / name)):
        err = refused(cli, demo, *command)
        assert f"{demo / name}: this is {kind}, not a plan;" in err


def test_a_one_line_audit_log_is_named_too(cli, demo):
    path = make_plan(cli, demo)
    assert cli("apply", "-c", demo / "adsync.yaml", path)[0] == 0
    err = refused(cli, demo, "show", demo / "states" / "audit.jsonl")
    assert "this is the audit log (states/audit.jsonl), not a plan" in err


# -- signing --------------------------------------------------------------------------------------------


@pytest.fixture
def signed(demo, monkeypatch) -> Path:
    """The demo with plan.signing_key_env set and the secret in the environment."""
    cfg = demo / "adsync.yaml"
    cfg.write_text(cfg.read_text().replace("  ttl: 24h", f"  ttl: 24h\n  signing_key_env: {KEY_ENV}"))
    monkeypatch.setenv(KEY_ENV, KEY)
    return demo


def assert_no_secret(folder: Path, *texts: str) -> None:
    for text in texts:
        assert KEY not in text
    for path in folder.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_a_signed_plan_applies(cli, signed):
    path = make_plan(cli, signed)
    doc = json.loads(path.read_text())
    assert doc["signature"].startswith("hmac-sha256:") and len(doc["signature"]) == len("hmac-sha256:") + 64
    code, out, err = cli("apply", "-c", signed / "adsync.yaml", path)
    assert code == 0, err
    assert_no_secret(signed, out, err)


def test_an_unsigned_plan_is_refused(cli, signed, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    code, out, err = cli("plan", "-c", signed / "adsync.yaml", "-o", signed / "p.plan.json")
    assert code == 0 and f"{KEY_ENV} is not set, so this plan is not signed" in err  # a review job has no secret
    assert "signature" not in json.loads((signed / "p.plan.json").read_text())
    monkeypatch.setenv(KEY_ENV, KEY)
    err = refused(cli, signed, "apply", "-c", signed / "adsync.yaml", signed / "p.plan.json")
    assert "the plan is not signed" in err and KEY_ENV in err


def test_a_resealed_plan_is_refused_by_its_signature(cli, signed):
    """Whoever edits a plan can recompute its digest; without the secret, not its signature."""
    path = make_plan(cli, signed)
    edit_plan(path, lambda doc: first_admin_change(doc)["after"].update(role="user"), reseal=True)
    assert "the plan is not signed" in refused(cli, signed, "apply", "-c", signed / "adsync.yaml", path)
    other = json.loads(make_plan(cli, signed, name="q.plan.json").read_text())[
        "signature"
    ]  # a valid signature, of another plan
    edit_plan(path, lambda doc: doc.update(signature=other))  # the digest does not cover the signature itself
    assert "the plan's signature is wrong" in refused(cli, signed, "apply", "-c", signed / "adsync.yaml", path)


def test_a_plan_signed_with_another_secret_is_refused(cli, signed, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "another-secret-of-32-characters")
    path = make_plan(cli, signed)
    monkeypatch.setenv(KEY_ENV, KEY)
    err = refused(cli, signed, "apply", "-c", signed / "adsync.yaml", path)
    assert "the plan's signature is wrong" in err and KEY not in err


def test_apply_without_the_secret_is_one_sentence(cli, signed, monkeypatch):
    path = make_plan(cli, signed)
    monkeypatch.delenv(KEY_ENV)
    err = refused(cli, signed, "apply", "-c", signed / "adsync.yaml", path)
    assert f"The environment variable {KEY_ENV}" in err and "is not set" in err


def test_sync_signs_and_verifies_its_plan(cli, signed):
    code, out, err = cli("sync", "-c", signed / "adsync.yaml", "--yes")
    assert code == 0, err
    (plan,) = (signed / "plans").glob("sync-*.plan.json")
    assert json.loads(plan.read_text())["signature"].startswith("hmac-sha256:")
    assert_no_secret(signed, out, err)


def job_commands(job: dict) -> list[list[str]]:
    lines = [line.strip() for step in job.get("steps", []) for line in step.get("run", "").splitlines()]
    lines += [line.strip() for line in job.get("script", [])]
    return [line.replace("$ADSYNC_LOG ", "").split()[1:] for line in lines if line.startswith("adsync-plan ")]


def test_the_generated_pipelines_share_the_signing_key(cli, signed, tmp_path, monkeypatch):
    """plan-main signs, apply (another job, another machine) checks; the review job gets no secret."""
    assert cli("init", tmp_path / "new", "--source", "ldif", "--pbx", "file")[0] == 0
    github = YAML(typ="safe").load((tmp_path / "new/.github/workflows/adsync-plan.yml").read_text())["jobs"]
    with_key = {name for name, job in github.items() if KEY_ENV in job.get("env", {})}
    assert with_key == {"plan-main", "apply", "sync"} and github["apply"]["needs"] == "plan-main"
    gitlab = YAML(typ="safe").load((tmp_path / "new/.gitlab-ci.yml").read_text())
    assert gitlab["adsync-plan:apply"]["needs"] == ["adsync-plan:plan-main"]
    assert "plans/main.plan.json" in gitlab["adsync-plan:plan-main"]["artifacts"]["paths"]
    monkeypatch.chdir(signed)
    assert cli("render")[0] == 0 and cli("refresh")[0] == 0
    plan_main, apply = job_commands(github["plan-main"]), job_commands(github["apply"])
    assert plan_main == [["plan", "--desired", "states/desired.yaml", "--no-refresh", "-o", "plans/main.plan.json"]]
    assert cli(*plan_main[0])[0] == 0
    edit_plan(signed / "plans/main.plan.json", lambda d: first_admin_change(d)["after"].update(role="user"), True)
    assert "the plan is not signed" in refused(cli, signed, *apply[0])  # changed on its way between the jobs
    assert cli(*plan_main[0])[0] == 0
    code, out, err = cli(*apply[0])
    assert code == 0, err
    assert_no_secret(signed, out, err)


@pytest.mark.parametrize(
    ("option", "name", "message"),
    [
        ("-c", "states/pbx.yaml", "this is a state snapshot (states/pbx.yaml), not a configuration file; pass the"),
        ("-c", "directory.ldif", "this is an LDIF file, not a configuration file"),
        ("-c", "p.plan.json", "this is a plan, not a configuration file"),
        ("--desired", "adsync.yaml", "this is a configuration file, not a desired state (states/desired.yaml); give"),
        ("--desired", "directory.ldif", "this is an LDIF file, not a desired state"),
        ("--desired", "p.plan.json", "this is a plan, not a desired state"),
        ("--desired", "states/pbx.yaml", "this is a state snapshot (states/pbx.yaml), not a desired state"),
        ("snapshot", "p.plan.json", "this is a plan, not a state snapshot (states/pbx.yaml); move it away"),
    ],
)
def test_every_file_given_in_place_of_another_says_what_it_is(cli, demo, option, name, message):
    cfg = demo / "adsync.yaml"
    assert cli("render", "-c", cfg)[0] == 0 and cli("refresh", "-c", cfg)[0] == 0
    make_plan(cli, demo, "--no-refresh")
    if option == "snapshot":
        shutil.copy(demo / name, demo / "states" / "pbx.yaml")
        args = ("plan", "-c", cfg, "--no-refresh")
    elif option == "-c":
        args = ("plan", "-c", demo / name, "--no-refresh")
    else:
        args = ("plan", "-c", cfg, "--no-refresh", "--desired", demo / name)
    err = refused(cli, demo, *args)
    assert message in err


def test_a_short_signing_secret_is_refused_without_showing_it(cli, signed, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "hunter2")
    err = refused(cli, signed, "plan", "-c", signed / "adsync.yaml", "-o", signed / "p.plan.json")
    assert f"The secret in {KEY_ENV}" in err and "too short" in err and "hunter2" not in err


def test_a_key_with_a_newline_is_named_on_one_line(cli, demo):
    """Found by the fuzz test: a binding keyed "\n" made the schema's message two lines."""
    path = make_plan(cli, demo)
    edit_plan(path, lambda doc: doc["bindings"].update({"\n": 0}), reseal=True)
    err = refused(cli, demo, "apply", "-c", demo / "adsync.yaml", path)
    assert "bindings.'\\n'" in err
