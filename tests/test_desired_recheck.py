"""A hand-edited states/desired.yaml is input, not truth: `plan --desired` re-checks every rule that needs no
directory, and a user failing one is held as after render (issue 10, item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_bad_input import replace_in


def rendered(cli, demo: Path) -> dict:
    assert cli("render", "-c", demo / "adsync.yaml")[0] == 0
    assert cli("refresh", "-c", demo / "adsync.yaml")[0] == 0
    return json.loads((demo / "states" / "desired.yaml").read_text(encoding="utf-8"))


def write(demo: Path, desired: dict) -> None:
    (demo / "states" / "desired.yaml").write_text(json.dumps(desired, indent=1), encoding="utf-8")


def plan_desired(cli, demo: Path, *extra) -> dict:
    code, out, err = cli(
        "plan",
        "-c",
        demo / "adsync.yaml",
        "--desired",
        demo / "states" / "desired.yaml",
        "--no-refresh",
        "--json",
        *extra,
    )
    assert code == 0, err
    return json.loads(out)


def held_codes(plan: dict, address: str) -> set[str]:
    return {d["code"] for d in plan["diagnostics"] if d["address"] == address and d["severity"] == "error"}


def touched(plan: dict) -> set[str]:
    return {c["address"] for c in plan["changes"]}


def test_a_hand_written_emergency_login_id_is_held_and_never_created(cli, demo):
    """The issue's reproduction: "login_id": "112" in desired.yaml, plan --desired --no-refresh, apply."""
    desired = rendered(cli, demo)
    desired["users"]["abrandt"]["login_id"] = "112"
    write(demo, desired)
    out = demo / "plans" / "p.plan.json"
    code, _, err = cli(
        "plan", "-c", demo / "adsync.yaml", "--desired", demo / "states/desired.yaml", "--no-refresh", "-o", out
    )
    assert code == 0, err
    plan = json.loads(out.read_text(encoding="utf-8"))
    assert "RESERVED_NUMBER" in held_codes(plan, "user.abrandt")
    assert "user.abrandt" not in touched(plan)
    assert cli("apply", out, "-c", demo / "adsync.yaml")[0] == 0
    pbx = json.loads((demo / "pbx.yaml").read_text(encoding="utf-8"))
    assert "112" not in {u["login_id"] for u in pbx["users"]}


EDITS = [
    # (what is edited, the user held, the code it is held with)
    (lambda d: d["users"]["abrandt"].update(internal_numbers=["44", "110"]), "user.abrandt", "RESERVED_NUMBER"),
    (lambda d: d["users"]["abrandt"].update(login_id="5"), "user.abrandt", "RESERVED_NUMBER"),  # too short
    (lambda d: d["users"]["abrandt"].update(first_name=""), "user.abrandt", "MISSING_FIRST_NAME"),
    (lambda d: d["users"]["abrandt"].update(last_name="Brandt\nX"), "user.abrandt", "INVALID_VALUE"),
    (lambda d: d["users"]["abrandt"].update(email="a" * 250 + "@x.de"), "user.abrandt", "INVALID_VALUE"),
    (lambda d: d["users"]["abrandt"].update(first_name="\u200b\u200b"), "user.abrandt", "INVALID_VALUE"),
    (lambda d: d["users"]["abrandt"].update(last_name="\u202eTDNARB"), "user.abrandt", "INVALID_VALUE"),
    (lambda d: d["users"]["abrandt"].update(primary_internal_number="45"), "user.abrandt", "NO_INTERNAL_NUMBER"),
    (lambda d: d["users"]["abrandt"].update(primary_internal_number=None), "user.abrandt", "NO_INTERNAL_NUMBER"),
    (
        lambda d: d["users"]["abrandt"].update(fax_numbers=d["users"]["abrandt"]["external_numbers"]),
        "user.abrandt",
        "NUMBER_CONFLICT",
    ),
    (
        lambda d: d["users"]["abrandt"].update(email=d["users"]["jmueller"]["email"].upper()),
        "user.abrandt",
        "DUPLICATE_EMAIL",
    ),
    (
        lambda d: d["users"]["abrandt"].update(source_id=d["users"]["jmueller"]["source_id"]),
        "user.jmueller",
        "DUPLICATE_SOURCE_ID",
    ),
    (  # a held user's source id given to a desired user: both entries are one directory user
        lambda d: d["users"]["abrandt"].update(source_id=d["held"][0]["source_id"]),
        "user.abrandt",
        "DUPLICATE_SOURCE_ID",
    ),
    (  # an account that a held user has (case-insensitive)
        lambda d: d["users"].__setitem__(d["held"][0]["account"].lower(), d["users"].pop("abrandt")),
        None,
        "DUPLICATE_ACCOUNT",
    ),
    (  # a number of another user: held by R11 at plan time, as after render
        lambda d: d["users"]["abrandt"].update(external_numbers=d["users"]["jmueller"]["external_numbers"]),
        "user.abrandt",
        "NUMBER_CONFLICT",
    ),
    (  # a login ID another user claims: R6
        lambda d: d["users"]["abrandt"].update(login_id=d["users"]["jmueller"]["login_id"]),
        "user.abrandt",
        "LOGIN_ID_COLLISION",
    ),
    (  # a number the PBX does not have: R7
        lambda d: d["users"]["abrandt"].update(external_numbers=["+4930123456"]),
        "user.abrandt",
        "INVALID_EXTERNAL_NUMBER",
    ),
    (  # an internal number the PBX does not have: R12
        lambda d: d["users"]["abrandt"].update(
            login_id="777", primary_internal_number="777", internal_numbers=["777"], external_numbers=[]
        ),
        "user.abrandt",
        "NO_INTERNAL_NUMBER",
    ),
]


@pytest.mark.parametrize(("edit", "address", "code"), EDITS, ids=[e[2] + str(n) for n, e in enumerate(EDITS)])
def test_every_rule_without_the_directory_holds_a_hand_edited_user(cli, demo, edit, address, code):
    desired = rendered(cli, demo)
    edit(desired)
    write(demo, desired)
    plan = plan_desired(cli, demo)
    if address is None:  # the moved user: its new key is the held user's account
        address = "user." + desired["held"][0]["account"].lower()
    assert code in held_codes(plan, address), plan["diagnostics"]
    assert address not in touched(plan)


def test_the_door_phone_protected_and_the_admin_protected_stay_so_from_a_desired_file(cli, demo):
    """R10 from a desired file: a desired user with the door phone's e-mail matches it and is reported."""
    desired = rendered(cli, demo)
    pbx = json.loads((demo / "pbx.yaml").read_text(encoding="utf-8"))
    door = next(u for u in pbx["users"] if u["login_id"] == "90")
    desired["users"]["abrandt"]["email"] = door["email"]
    write(demo, desired)
    plan = plan_desired(cli, demo)
    assert ("PROTECTED_USER", "user.abrandt") in {(d["code"], d["address"]) for d in plan["diagnostics"]}
    assert str(door["id"]) not in {c["pbx_user_id"] for c in plan["changes"]}


def test_an_admin_role_needs_an_admin_group(cli, demo):
    desired = rendered(cli, demo)
    desired["users"]["abrandt"]["role"] = "admin"
    write(demo, desired)
    replace_in(demo / "adsync.yaml", '["CN=PBX-Admins,OU=Groups,DC=example,DC=com"]', "[]")
    plan = plan_desired(cli, demo)
    assert "INVALID_VALUE" in held_codes(plan, "user.abrandt")
    assert all(c["after"]["role"] == "user" for c in plan["changes"] if c["action"] == "create")


def test_the_licence_limit_holds_hand_added_users(cli, demo):
    desired = rendered(cli, demo)
    before = plan_desired(cli, demo)
    assert {d["code"] for d in before["diagnostics"]} >= {"LICENSE_LIMIT"}
    creates = sum(1 for c in before["changes"] if c["action"] == "create")
    desired["users"]["zz-extra"] = {**desired["users"]["abrandt"], "source_id": "extra", "email": "extra@example.com"}
    desired["users"]["zz-extra"].update(login_id="19", primary_internal_number="19", internal_numbers=["19"])
    desired["users"]["zz-extra"]["external_numbers"] = []
    write(demo, desired)
    after = plan_desired(cli, demo)
    assert sum(1 for c in after["changes"] if c["action"] == "create") == creates  # still within the licences
    assert "LICENSE_LIMIT" in held_codes(after, "user.zz-extra")


def test_an_untouched_desired_file_plans_as_the_source_does(cli, demo):
    rendered(cli, demo)
    from_file = plan_desired(cli, demo)
    code, out, err = cli("plan", "-c", demo / "adsync.yaml", "--no-refresh", "--json")
    assert code == 0, err
    from_source = json.loads(out)
    assert from_file["changes"] == from_source["changes"]
    assert from_file["diagnostics"] == from_source["diagnostics"]
