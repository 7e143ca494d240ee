"""Every rule R1-R14 stated as facts about the plan of its case (independent of the golden files)."""

from __future__ import annotations

import json

import pytest

from adsync_plan.files import read_document
from adsync_plan.model import PbxNumber, PbxState
from tests.conftest import copy_case


def plan_of(cli, tmp_path, name, *extra):
    case = copy_case(name, tmp_path)
    code, out, err = cli("plan", "-c", case / "adsync.yaml", "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def findings(plan) -> set[tuple[str, str]]:
    return {(d["code"], d["address"]) for d in plan["diagnostics"]}


def changes(plan) -> dict[str, dict]:
    return {c["address"]: c for c in plan["changes"]}


def test_r1_missing_fields_hold_the_user(cli, tmp_path):
    plan = plan_of(cli, tmp_path, "r1_missing_fields")
    found = findings(plan)
    assert ("MISSING_FIRST_NAME", "user.nofirst") in found
    assert ("MISSING_LAST_NAME", "user.nolast") in found
    assert ("MISSING_EMAIL", "user.nomail") in found
    assert any(code == "MISSING_ACCOUNT" for code, _ in found)
    assert set(changes(plan)) == {"user.complete"}
    first = next(d for d in plan["diagnostics"] if d["code"] == "MISSING_FIRST_NAME")
    assert first["source"] == {"dn": "CN=X Nofirst,OU=Staff,DC=example,DC=com", "attribute": "givenName"}


def test_r2_every_user_sharing_an_email_is_held(cli, tmp_path):
    plan = plan_of(cli, tmp_path, "r2_duplicate_email")
    assert {("DUPLICATE_EMAIL", "user.one"), ("DUPLICATE_EMAIL", "user.two")} <= findings(plan)
    assert set(changes(plan)) == {"user.three"}


def test_r3_scope_groups_roles_nesting_and_disabled(cli, tmp_path):
    plan = changes(plan_of(cli, tmp_path, "r3_scope"))
    assert set(plan) == {"user.leiterin", "user.both", "user.nested"}  # not outside, not disabled
    assert plan["user.leiterin"]["after"]["role"] == "admin"
    assert plan["user.both"]["after"]["role"] == "admin"  # admin group wins
    assert plan["user.nested"]["after"]["role"] == "user"  # member of Team < Abteilung < PBX-Users


def test_r3_nested_groups_off_counts_direct_members_only(cli, tmp_path):
    assert set(changes(plan_of(cli, tmp_path, "r3_direct_only"))) == {"user.direct"}


def test_r4_licences_hold_the_leftover_users_in_account_order(cli, tmp_path):
    plan = plan_of(cli, tmp_path, "r4_license_limit")
    assert set(changes(plan)) == {"user.user0", "user.user1", "user.user2"}  # 5 licences, 2 PBX users
    assert {a for c, a in findings(plan) if c == "LICENSE_LIMIT"} == {"user.user3", "user.user4"}


def test_r5_reserved_numbers_and_trunk_prefix(cli, tmp_path):
    plan = plan_of(cli, tmp_path, "r5_reserved")
    held = {a for c, a in findings(plan) if c == "RESERVED_NUMBER"}
    assert held == {"user.emergency", "user.service", "user.trunk", "user.extra"}
    assert set(changes(plan)) == {"user.fine"}


def test_r6_login_id_taken_or_claimed_twice(cli, tmp_path):
    plan = plan_of(cli, tmp_path, "r6_login_collision")
    held = {a for c, a in findings(plan) if c == "LOGIN_ID_COLLISION"}
    assert held == {"user.newcomer", "user.twin1", "user.twin2"}
    assert "user.keeper" in changes(plan)


@pytest.mark.parametrize(("name", "severity"), [("r7_invalid_number", "error"), ("r7_drop_number", "warning")])
def test_r7_invalid_external_number(cli, tmp_path, name, severity):
    plan = plan_of(cli, tmp_path, name)
    invalid = [d for d in plan["diagnostics"] if d["code"] == "INVALID_EXTERNAL_NUMBER"]
    assert invalid and all(d["severity"] == severity for d in invalid)
    assert "invalid external phone number" in invalid[0]["message"]
    if severity == "warning":  # only the number is dropped; the user is created without it
        created = changes(plan)["user.wrongblock"]["after"]
        assert created["external_numbers"] == [] and created["internal_numbers"] == ["10"]
    else:
        assert "user.wrongblock" not in changes(plan)


def test_r9_orphan_marks_and_strips_but_keeps_the_primary_and_never_deletes(cli, tmp_path):
    plan = plan_of(cli, tmp_path, "r9_orphan")
    orphan = changes(plan)["pbx_user.20"]
    assert orphan["action"] == "orphan"
    assert orphan["after"]["last_name"] == "-Away"
    assert orphan["after"]["internal_numbers"] == ["20"] and orphan["after"]["external_numbers"] == []
    assert orphan["after"]["fax_numbers"] == []
    assert "pbx_user.21" not in changes(plan)  # already marked, nothing left to strip
    # the orphan's external number moves to the new user in the same apply
    assert changes(plan)["user.newuser"]["after"]["external_numbers"] == ["+4970222797830"]
    assert {c["action"] for c in plan["changes"]} <= {"create", "update", "orphan"}


def test_r10_protected_users_are_reported_and_never_changed(cli, tmp_path):
    plan = plan_of(cli, tmp_path, "r10_protected")
    assert {("PROTECTED_USER", "user.boss"), ("PROTECTED_USER", "user.door")} <= findings(plan)
    assert all(c["pbx_user_id"] not in ("1", "2") for c in plan["changes"])


def test_r11_numbers_owned_by_others_are_not_taken(cli, tmp_path):
    plan = plan_of(cli, tmp_path, "r11_number_conflict")
    conflicts = {a for c, a in findings(plan) if c == "NUMBER_CONFLICT"}
    assert conflicts == {"user.groupnum", "user.adminnum", "user.first", "user.second", "user.wants34"}
    assert set(changes(plan)) == {"user.fine"}  # the held user's PBX user is not orphaned either


def test_r12_needs_an_internal_number_on_the_pbx(cli, tmp_path):
    plan = plan_of(cli, tmp_path, "r12_no_internal_number")
    assert {a for c, a in findings(plan) if c == "NO_INTERNAL_NUMBER"} == {
        "user.nophone",
        "user.foreign",
        "user.notonpbx",
    }


def test_r13_safety_valve_refuses_then_override_is_recorded(cli, tmp_path):
    case = copy_case("r13_safety", tmp_path)
    code, out, err = cli("plan", "-c", case / "adsync.yaml", "-o", case / "p.plan.json")
    assert code == 1
    assert "safety valve refused" in err and "--allow-mass-orphan" in err
    assert not (case / "p.plan.json").exists()
    code, out, err = cli("plan", "-c", case / "adsync.yaml", "--json", "--allow-mass-orphan")
    assert code == 0
    plan = json.loads(out)
    assert plan["overrides"] == ["allow-mass-orphan"] and plan["summary"]["orphan"] == 7


def test_r14_duplicate_accounts_are_held(cli, tmp_path):
    plan = plan_of(cli, tmp_path, "r14_duplicate_account")
    assert [c for c, _ in findings(plan)].count("DUPLICATE_ACCOUNT") == 1  # same address for both
    assert len([d for d in plan["diagnostics"] if d["code"] == "DUPLICATE_ACCOUNT"]) == 2
    assert set(changes(plan)) == {"user.unique"}


def test_update_by_email_match_shows_only_changed_fields(cli, tmp_path):
    update = changes(plan_of(cli, tmp_path, "update_matched"))["user.mmuster"]
    assert update["action"] == "update" and update["pbx_user_id"] == "20"
    assert update["fields"] == ["email", "external_numbers", "internal_numbers", "last_name", "role"]
    assert update["before"]["last_name"] == "Muster" and update["after"]["last_name"] == "Mustermann"


def test_ownership_bound_leaves_unbound_users_alone(cli, tmp_path):
    assert set(changes(plan_of(cli, tmp_path, "ownership_bound"))) == {"user.newuser"}


# -- R13 on the first contact and for an empty source (issue 10, item 2) ----------------------------------


def _refused(cli, demo, *extra):
    return cli("plan", "-c", demo / "adsync.yaml", *extra)


def test_a_source_with_nobody_in_scope_refuses_the_plan_unless_overridden(cli, demo):
    """max_orphans: 5 allows orphaning the demo's 3 managed users; an export that lost its users must not.
    (The scope groups are still in it: a group missing from the file is refused before, as a typo.)"""
    groups = "".join(
        f"dn: CN={name},OU=Groups,DC=example,DC=com\nobjectClass: top\nobjectClass: group\ncn: {name}\n\n"
        for name in ("PBX-Admins", "PBX-Users")
    )
    (demo / "directory.ldif").write_text("version: 1\n\n" + groups, encoding="utf-8")
    code, out, err = _refused(cli, demo)
    assert code == 1
    assert "the source put no user in scope, while the PBX has 3 managed users" in err
    assert "--allow-mass-orphan" in err and "Traceback" not in err
    code, out, err = _refused(cli, demo, "--allow-mass-orphan", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["overrides"] == ["allow-mass-orphan"]
    assert sum(c["action"] == "orphan" for c in plan["changes"]) == 3


def test_misspelled_scope_groups_are_refused_before_anything_is_planned(cli, demo):
    text = (demo / "adsync.yaml").read_text(encoding="utf-8").replace("CN=PBX-", "CN=PBX_")
    (demo / "adsync.yaml").write_text(text, encoding="utf-8")
    code, out, err = _refused(cli, demo)
    assert code == 1 and out == "" and "Traceback" not in err
    assert "is not in the LDIF file" in err and "Did you mean CN=PBX-Admins,OU=Groups,DC=example,DC=com?" in err


def test_an_empty_desired_file_is_refused_as_an_empty_source(cli, demo):
    assert cli("render", "-c", demo / "adsync.yaml")[0] == 0
    path = demo / "states" / "desired.yaml"
    desired = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**desired, "users": {}, "held": []}), encoding="utf-8")
    code, _, err = _refused(cli, demo, "--desired", path)
    assert code == 1 and "no user in scope" in err


def test_the_orphan_limit_holds_on_the_first_contact(cli, demo):
    """No bindings yet (no snapshot at all): orphaning more than safety.max_orphans is refused."""
    text = (demo / "adsync.yaml").read_text(encoding="utf-8").replace("max_orphans: 5", "max_orphans: 1")
    (demo / "adsync.yaml").write_text(text, encoding="utf-8")
    ldif = (demo / "directory.ldif").read_text(encoding="utf-8")
    entries = ldif.split("\n\n")
    (demo / "directory.ldif").write_text(
        "\n\n".join(e for e in entries if "anna.schroeder@example.com" not in e), encoding="utf-8"
    )
    assert not (demo / "states" / "pbx.yaml").exists()
    code, _, err = _refused(cli, demo)
    assert code == 1
    assert "would orphan 2 of 3 managed PBX users, more than safety.max_orphans allows (1)" in err


def held_at_render(cli, config) -> tuple[dict[str, list[dict]], dict]:
    """(address -> the diagnostics `render` wrote for a held user, the desired state written)."""
    code, out, err = cli("render", "-c", config, "-o", config.parent / "desired.yaml")
    assert code == 0, err
    data, _ = read_document(config.parent / "desired.yaml", "the desired state")
    return {h["address"]: h["diagnostics"] for h in data["held"]}, data


def test_r7_at_render_a_number_outside_every_block_is_an_invalid_external_number(cli, demo):
    """The demo's onummer has only +49 30 1234567, in no block of numbering.blocks: render says the FAQ's
    reason, naming the attribute, besides NO_INTERNAL_NUMBER; plan says the same words."""
    held, _ = held_at_render(cli, demo / "adsync.yaml")
    codes = {d["code"]: d for d in held["user.onummer"]}
    assert set(codes) == {"INVALID_EXTERNAL_NUMBER", "NO_INTERNAL_NUMBER"}
    invalid = codes["INVALID_EXTERNAL_NUMBER"]
    assert invalid["severity"] == "error"
    assert invalid["message"].startswith("invalid external phone number +49301234567:")
    assert invalid["source"]["attribute"] == "telephoneNumber/otherTelephone"
    code, out, err = cli("plan", "-c", demo / "adsync.yaml", "--json")
    planned = [d for d in json.loads(out)["diagnostics"] if d["address"] == "user.onummer"]
    assert invalid in planned  # the same words at render and at plan time


def test_r7_at_render_drop_number_warns_and_drops_only_that_number(cli, tmp_path):
    case = copy_case("r7_drop_number", tmp_path)
    held, data = held_at_render(cli, case / "adsync.yaml")
    assert held == {}
    assert data["users"]["wrongblock"]["external_numbers"] == []
    assert data["users"]["wrongblock"]["internal_numbers"] == ["10"]
    [warning] = data["warnings"]
    assert (warning["severity"], warning["code"], warning["address"]) == (
        "warning",
        "INVALID_EXTERNAL_NUMBER",
        "user.wrongblock",
    )
    assert "+497111234567 dropped" in warning["message"]
    plan = plan_of(cli, tmp_path / "again", "r7_drop_number")
    assert [d for d in plan["diagnostics"] if d["code"] == "INVALID_EXTERNAL_NUMBER"] == [warning]
    code, out, err = cli("plan", "-c", case / "adsync.yaml", "--desired", case / "desired.yaml", "--json")
    assert code == 0, err
    assert warning in json.loads(out)["diagnostics"]  # a desired state read from the file keeps the warning


@pytest.mark.parametrize("mode", ["hold_user", "drop_number"])
def test_r7_a_hand_edited_desired_state_is_checked_against_the_blocks_as_render_does(cli, tmp_path, mode):
    """A number on the PBX but in no block of numbering.blocks, added to desired.yaml by hand: plan --desired
    says what render would have said, even though the PBX's numbers alone would let it through."""
    case = copy_case("r7_invalid_number", tmp_path)
    config = json.loads((case / "adsync.yaml").read_text())
    config["rules"]["on_invalid_number"] = mode
    (case / "adsync.yaml").write_text(json.dumps(config))
    pbx = json.loads((case / "pbx.yaml").read_text())
    pbx["numbers"].append({"number": "+497111234599", "owner": None, "service": None, "type": "external"})
    (case / "pbx.yaml").write_text(json.dumps(pbx))
    _, data = held_at_render(cli, case / "adsync.yaml")
    data["users"]["fine"]["external_numbers"] = ["+497111234599"]
    (case / "desired.yaml").write_text(json.dumps(data))
    code, out, err = cli("plan", "-c", case / "adsync.yaml", "--desired", case / "desired.yaml", "--json")
    assert code == 0, err
    plan = json.loads(out)
    [found] = [d for d in plan["diagnostics"] if d["address"] == "user.fine"]
    assert found["code"] == "INVALID_EXTERNAL_NUMBER" and "+497111234599" in found["message"]
    if mode == "hold_user":
        assert found["severity"] == "error" and "user.fine" not in changes(plan)
    else:
        assert found["severity"] == "warning"
        assert changes(plan)["user.fine"]["after"]["external_numbers"] == []


def test_a_pbx_with_internal_numbers_only_still_takes_a_user_with_one():
    """The number inventory decides which kinds exist; a PBX without a single external number (no trunk yet)
    must still check and take users by their internal numbers (R12), not fail on the missing kind."""
    from tests.test_groups import config, directory, plan, user

    live = PbxState.from_parts((), {"11": PbxNumber("internal", None, None)})
    rendered, decisions, actions, _ = plan(directory(user("a", "11"), user("b", "12")), live, config())
    assert [(a.address, a.action, a.after.internal_numbers) for a in actions] == [("user.a", "create", ("11",))]
    assert {a: [d.code for d in found] for a, found in decisions.held.items()} == {"user.b": ["NO_INTERNAL_NUMBER"]}
