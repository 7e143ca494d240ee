"""`plan --target`: plan only some users, as Terraform's -target, from the CLI on a copy of examples/demo."""

from __future__ import annotations

import json

from adsync_plan import schemas
from adsync_plan.state import load_snapshot
from tests.test_cli_ops import DEMO_SUMMARY, adsync, demo, set_in_config  # noqa: F401 - the fixture

ABRANDT_SID = "77997d12-4316-5c4e-888e-6f568c529732"
# the demo: 38 users in scope and valid, 11 held, and Gustav Gegangen (PBX user 5, login 67) to orphan
CONSIDERED = 49


def changes(path) -> dict[str, dict]:
    return {c["address"]: c for c in json.loads(path.read_text())["changes"]}


def test_targeted_plan_lists_only_the_targets_changes_and_records_them(demo, capsys):  # noqa: F811
    assert adsync(capsys, "plan", "-o", "plans/all.plan.json")[0] == 0
    code, out, err = adsync(
        capsys, "plan", "--target", "abrandt", "--target", "user.aschroeder", "--target", "pbx_user.67", "-o", "t.json"
    )
    assert code == 0, err
    everything, targeted = changes(demo / "plans/all.plan.json"), changes(demo / "t.json")
    assert sorted(targeted) == ["pbx_user.67", "user.abrandt", "user.aschroeder"]
    for address, change in targeted.items():  # the same change as in the whole plan
        assert change == everything[address]
    doc = json.loads((demo / "t.json").read_text())
    assert doc["targets"] == {
        "addresses": ["pbx_user.67", "user.abrandt", "user.aschroeder"],
        "considered": 3,
        "of": CONSIDERED,
    }
    schemas.validate(doc, "plan", "t.json")
    assert doc["summary"]["create"] == 1 and doc["summary"]["update"] == 1 and doc["summary"]["orphan"] == 1
    assert list(doc["bindings"]) == ["b8e9b3e0-179d-54c2-91ff-d4b2b72b3d45"]  # aschroeder only, not jmueller
    assert "held" not in out.split("This is a targeted plan")[0].lower()  # no other user's held diagnostics
    assert out.splitlines()[-1] == "Plan: 1 to create, 1 to update, 1 to orphan; 0 held."
    line = f"This is a targeted plan: 3 of {CONSIDERED} users considered"
    assert line in out
    code, out, _ = adsync(capsys, "show", "t.json")
    assert code == 0 and line in out
    code, out, _ = adsync(capsys, "show", "t.json", "--markdown")
    assert code == 0 and "targeted plan\\: 3 of 49 users considered" in out
    code, out, _ = adsync(capsys, "show", "t.json", "--json")
    assert code == 0 and json.loads(out)["targets"]["considered"] == 3


def test_a_plan_without_target_has_no_targets_field(demo, capsys):  # noqa: F811
    code, out, _ = adsync(capsys, "plan", "-o", "all.json")
    assert code == 0 and out.splitlines()[-1] == DEMO_SUMMARY
    assert "targets" not in json.loads((demo / "all.json").read_text())
    assert "targeted plan" not in out


def test_target_pbx_user_login_names_a_matched_user_too(demo, capsys):  # noqa: F811
    code, out, err = adsync(capsys, "plan", "--target", "pbx_user.21", "-o", "t.json")  # Anna Schröder, PBX user 4
    assert code == 0, err
    assert list(changes(demo / "t.json")) == ["user.aschroeder"]
    assert "1 of 49 users considered (--target user.aschroeder)" in out


def test_a_held_target_is_reported_held(demo, capsys):  # noqa: F811
    code, out, _ = adsync(capsys, "plan", "--target", "user.deins")
    assert code == 0
    assert "  user.deins  DUPLICATE_EMAIL: " in out
    assert "user.dzwei" not in out
    assert out.splitlines()[-1] == "No changes. 1 user is held: user.deins."


def test_unknown_target_is_one_sentence_and_plans_nothing(demo, capsys):  # noqa: F811
    code, out, err = adsync(capsys, "plan", "--target", "nobody", "-o", "t.json")
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == (
        "Error: --target nobody: no user in scope or PBX user to orphan has this address; write user.<account> or "
        "pbx_user.<login ID> (`adsync-plan explain` tells what happens to a user)."
    )
    assert not (demo / "t.json").exists()


def test_target_that_needs_a_change_left_out_is_refused(demo, capsys):  # noqa: F811
    # Gustav Gegangen, to be orphaned, holds Anton Brandt's external number: the orphan must release it first
    pbx = demo / "pbx.yaml"
    free = '{"number":"+4970222797844","owner":null,"service":null,"type":"external"}'
    assert free in pbx.read_text()
    pbx.write_text(
        pbx.read_text().replace(free, free.replace("null,", "5,", 1).replace('null,"type"', '"standard","type"'))
    )
    code, out, err = adsync(capsys, "plan", "--target", "user.abrandt", "-o", "t.json")
    assert (code, out) == (1, "")
    assert "Error: the targeted plan needs changes of users it leaves out (user.abrandt: number +4970222797844 " in err
    assert "add their addresses with --target, or plan without --target. Nothing was planned." in err
    assert not (demo / "t.json").exists()
    code, out, _ = adsync(capsys, "plan", "--target", "user.abrandt", "--target", "pbx_user.67")
    assert code == 0 and out.splitlines()[-1] == "Plan: 1 to create, 0 to update, 1 to orphan; 0 held."


def test_the_safety_valve_still_applies_to_a_targeted_plan(demo, capsys):  # noqa: F811
    set_in_config(demo / "adsync.yaml", "safety", "max_orphans", 0)
    code, _, err = adsync(capsys, "plan", "--target", "pbx_user.67", "-o", "t.json")
    assert code == 1
    assert "the safety valve refused the plan: the plan would orphan 1 of 3" in err
    assert not (demo / "t.json").exists()
    assert adsync(capsys, "plan", "--target", "user.abrandt")[0] == 0  # no orphan among the targets


def test_apply_of_a_targeted_plan_applies_only_what_it_lists(demo, capsys):  # noqa: F811
    assert adsync(capsys, "plan", "--target", "user.abrandt", "--target", "user.aschroeder", "-o", "t.json")[0] == 0
    code, out, err = adsync(capsys, "apply", "t.json")
    assert code == 0, err
    assert out.endswith("Applied: 1 to create, 1 to update, 0 to orphan; 0 held.\n")
    snapshot = load_snapshot(demo / "states/pbx.yaml")
    assert sorted(snapshot.bindings) == [ABRANDT_SID, "b8e9b3e0-179d-54c2-91ff-d4b2b72b3d45"]
    assert len(snapshot.state.users) == 6  # the five of the demo and Anton Brandt
    code, out, _ = adsync(capsys, "plan")
    assert out.splitlines()[-1] == "Plan: 34 to create, 1 to update, 1 to orphan; 11 held."


def test_editing_the_targets_of_a_saved_plan_is_refused(demo, capsys):  # noqa: F811
    assert adsync(capsys, "plan", "--target", "user.abrandt", "-o", "t.json")[0] == 0
    doc = json.loads((demo / "t.json").read_text())
    doc["targets"]["considered"] = 49
    (demo / "t.json").write_text(json.dumps(doc))
    code, _, err = adsync(capsys, "apply", "t.json")
    assert code == 1
    assert err == "Error: t.json: the plan was changed after it was made; make a new plan.\n"
