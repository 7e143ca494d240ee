"""STARFACE groups (issue 16): the pure rules with plain data (render, reconcile, diff, steps, invariants), the
file PBX's refusals, the configuration's mistakes as one sentence, apply's order, verification, parallel apply
and recovery of a killed apply that had created a group."""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
from pathlib import Path

import pytest

from adsync_plan import diff, providers
from adsync_plan.config import Block, Config, GroupMap, Numbering, PbxGroups, Safety, Scope
from adsync_plan.errors import ConfigError, PbxError
from adsync_plan.model import Directory, DirectoryUser, GroupAction, PbxAccount, PbxGroup, PbxNumber, PbxState
from adsync_plan.planfile import load_plan, save_plan
from adsync_plan.providers.file import FileProvider, next_id
from adsync_plan.rules import invariants
from adsync_plan.rules.directory import render_users
from adsync_plan.rules.pbx import reconcile
from adsync_plan.steps import plan_steps
from tests.conftest import CASES, copy_case

PREFIX = "+49702227978"
USERS, SALES = "cn=users", "cn=sales,ou=groups"
SHARED = PREFIX + "20"


def config(shared="hold", mapped=(), name="Shared {number}", licenses=None, protect=()) -> Config:
    return Config(
        path=Path("adsync.yaml"),
        base_dir=Path("."),
        sha256="0",
        source={"type": "ldif"},
        scope=Scope((), (USERS,), True, False, tuple(m.directory_group for m in mapped)),
        numbering=Numbering(trunk_prefix="0", blocks=(Block(PREFIX, ""),)),
        pbx={"type": "file"},
        licenses=licenses,
        protect_logins=frozenset(protect),
        safety=Safety(1.0, 0.0),
        pbx_groups=PbxGroups(shared, name, tuple(mapped)),
    )


def user(account: str, *phones: str, groups=(USERS,), email: str | None = None) -> DirectoryUser:
    return DirectoryUser(
        source_id=f"sid-{account}",
        dn=f"CN={account},DC=x",
        account=account,
        first_name="Vor",
        last_name=account.capitalize(),
        email=email if email is not None else f"{account}@example.com",
        phones=phones,
        groups=frozenset(groups),
    )


def directory(*users: DirectoryUser) -> Directory:
    return Directory(users, {"phones": "telephoneNumber"}, {"type": "test"})


def inventory(owners=None) -> dict[str, PbxNumber]:
    owners = owners or {}
    numbers = {}
    for n in range(10, 40):
        for number, kind in ((str(n), "internal"), (f"{PREFIX}{n}", "external")):
            owner = owners.get(number)
            numbers[number] = PbxNumber(kind, owner, "standard" if owner else None)
    return numbers


def state(accounts=(), owners=None, groups=None) -> PbxState:
    return dataclasses.replace(PbxState.from_parts(accounts, inventory(owners)), groups=groups or {})


def plan(directory_, state_, cfg, bindings=None, group_bindings=None):
    rendered = render_users(directory_, cfg)
    d = reconcile(rendered.desired, rendered.held, state_, bindings or {}, cfg, {}, rendered.groups, group_bindings)
    actions, _ = diff.actions(d, state_)
    return rendered, d, actions, diff.group_actions(d, state_)


# -- render ---------------------------------------------------------------------------------------------


def test_a_shared_number_goes_to_a_group_whose_members_are_its_users():
    found = render_users(
        directory(user("a", "11", "+49 7022 27978-20"), user("b", "12", "07022 2797820"), user("c", "13")),
        config("group"),
    )
    group = found.groups["Shared +4970222797820"]
    assert (group.members, group.numbers, group.shared_number) == (("a", "b"), (SHARED,), SHARED)
    assert group.key == f"shared:{SHARED}"
    assert found.desired["a"].user.numbers() == {"11"} and found.desired["b"].user.numbers() == {"12"}
    assert found.desired["c"].user.numbers() == {"13"} and not found.held


def test_with_hold_a_shared_number_makes_no_group_and_stays_with_the_users_until_plan_holds_them():
    found = render_users(directory(user("a", "11", SHARED), user("b", "12", SHARED)), config("hold"))
    assert found.groups == {}
    assert SHARED in found.desired["a"].user.numbers() and SHARED in found.desired["b"].user.numbers()


def test_a_user_left_without_an_internal_number_is_held_and_no_member():
    found = render_users(directory(user("a", "11", SHARED), user("b", SHARED)), config("group"))
    assert [h.address for h in found.held] == ["user.b"]
    (reason,) = found.held[0].diagnostics
    assert reason.code == "NO_INTERNAL_NUMBER" and SHARED in reason.message and "goes to a group" in reason.message
    assert found.groups[f"Shared {SHARED}"].members == ("a",)


def test_a_user_held_by_another_rule_is_no_member_of_a_mapped_group():
    mapped = (GroupMap("CN=Sales,OU=Groups", "Vertrieb", ("+49 7022 27978-30", "30")),)
    found = render_users(
        directory(
            user("a", "11", groups=(USERS, SALES)),
            user("b", "12", groups=(USERS, SALES), email=""),  # R1: held
            user("c", "13", groups=(SALES,)),  # out of scope: membership alone puts nobody in scope
            user("d", "14"),
        ),
        config(mapped=mapped),
    )
    group = found.groups["Vertrieb"]
    assert (group.members, group.numbers, group.key) == (("a",), (PREFIX + "30", "30"), f"map:{SALES}")
    assert group.directory_group == "CN=Sales,OU=Groups"


def test_a_mapped_group_number_a_user_has_stays_with_the_user_and_is_reported():
    mapped = (GroupMap("CN=Sales,OU=Groups", "Vertrieb", ("30", "31")),)
    found = render_users(directory(user("a", "11", "31", groups=(USERS, SALES))), config(mapped=mapped))
    assert found.groups["Vertrieb"].numbers == ("30",)
    assert "31" in found.desired["a"].user.numbers()
    (warning,) = found.warnings
    assert (warning.code, warning.address, warning.source["dn"]) == (
        "GROUP_NUMBER_CONFLICT",
        "group.Vertrieb",
        "CN=a,DC=x",
    )
    assert "pbx_groups.map.0.numbers" in warning.message and "user.a" in warning.message


def test_an_invalid_mapped_number_is_a_configuration_error_naming_its_key():
    mapped = (GroupMap("CN=Sales,OU=Groups", "Vertrieb", ("30", "call the hotline")),)
    with pytest.raises(ConfigError, match=r"pbx_groups\.map\.0\.numbers: 'call the hotline' is not a phone number"):
        render_users(directory(user("a", "11")), config(mapped=mapped))


def test_a_shared_group_name_too_long_or_taken_by_a_mapped_group_is_a_configuration_error():
    users = directory(user("a", "11", SHARED), user("b", "12", SHARED))
    with pytest.raises(ConfigError, match=r"pbx_groups\.shared_name: .* at most 64"):
        render_users(users, config("group", name="x" * 60 + " {number}"))
    mapped = (GroupMap("CN=Sales,OU=Groups", f"shared {SHARED}"),)
    with pytest.raises(ConfigError, match=r"pbx_groups\.map\.0\.name: .* is also the name of the group"):
        render_users(users, config("group", mapped=mapped))


@pytest.mark.parametrize(
    ("groups", "words"),
    [
        (
            '[{directory_group: "CN=A", name: "Sales"}, {directory_group: "CN=B", name: "SALES"}]',
            "pbx_groups.map.1.name",
        ),
        (f'[{{directory_group: "CN=A", name: "{"n" * 65}"}}]', "pbx_groups.map.0.name"),
        (
            '[{directory_group: "CN=A", name: "X"}, {directory_group: "cn=a", name: "Y"}]',
            "pbx_groups.map.1.directory_group",
        ),
    ],
    ids=["duplicate-name", "too-long", "mapped-twice"],
)
def test_group_names_and_directory_groups_are_refused_in_one_sentence(cli, tmp_path, groups, words):
    case = copy_case("create_basic", tmp_path)
    cfg = json.loads((case / "adsync.yaml").read_text())
    text = json.dumps(cfg)[:-1] + ', "pbx_groups": {"map": ' + "__MAP__" + "}}"
    (case / "adsync.yaml").write_text(text.replace('"__MAP__"', "__MAP__").replace("__MAP__", groups))
    code, out, err = cli("render", "-c", case / "adsync.yaml")
    assert code != 0 and words in err and "Traceback" not in err, err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err


# -- plan -----------------------------------------------------------------------------------------------


def test_a_group_the_tool_did_not_make_is_never_touched_and_its_name_holds_the_desired_group():
    mapped = (GroupMap("CN=Sales,OU=Groups", "vertrieb"),)
    foreign = {"50": PbxGroup("Vertrieb", ("1",), ("30",))}
    pbx = state(
        [PbxAccount("1", "11", "Vor", "A", "a@example.com", False, "11")], {"11": "1", "30": "group:50"}, foreign
    )
    _, d, actions, groups = plan(directory(user("a", "11", groups=(USERS, SALES))), pbx, config(mapped=mapped))
    assert groups == [] and d.group_orphans == []
    assert [x.code for x in d.group_held["group.vertrieb"]] == ["GROUP_NAME_COLLISION"]


def test_a_group_number_another_keeps_holds_the_group_not_the_user():
    mapped = (GroupMap("CN=Sales,OU=Groups", "Vertrieb", ("30",)),)
    admin = PbxAccount("1", "0001", "Admin", "X", "admin@example.com", True, "30")
    pbx = state([admin], {"30": "1"})
    _, d, actions, groups = plan(directory(user("a", "11", groups=(USERS, SALES))), pbx, config(mapped=mapped))
    assert groups == [] and [a.address for a in actions] == ["user.a"]
    (held,) = d.group_held["group.Vertrieb"]
    assert held.code == "NUMBER_CONFLICT" and "PBX user 1" in held.message


def test_a_number_moves_from_a_bound_group_to_a_user_and_from_a_user_to_a_group_in_one_plan():
    mapped = (GroupMap("CN=Sales,OU=Groups", "Vertrieb", ("31",)),)
    a = PbxAccount("1", "11", "Vor", "A", "a@example.com", False, "11")
    bound = {"50": PbxGroup("Vertrieb", ("1",), ("30",))}
    pbx = state([a], {"11": "1", "31": "1", "30": "group:50"}, bound)
    directory_ = directory(user("a", "11", "30", groups=(USERS, SALES)))  # 31 -> group, 30 -> user
    _, d, actions, groups = plan(directory_, pbx, config(mapped=mapped), {"sid-a": "1"}, {f"map:{SALES}": "50"})
    (group,) = groups
    assert (group.action, group.fields, group.after.numbers) == ("update", ("numbers",), ("31",))
    assert actions[0].after.internal_numbers == ("11", "30")
    assert (
        invariants.violations(actions, pbx, {"sid-a": "1"}, config(mapped=mapped), True, groups, {f"map:{SALES}": "50"})
        == []
    )
    kinds = [s.kind for s in plan_steps(actions, groups)]
    # the group gives up 30 before the user takes it; the user gives up 31 before the group takes it
    assert kinds.index("group_release") < kinds.index("assign")
    assert kinds.index("release") < kinds.index("group_assign")


def test_a_bound_group_no_longer_desired_is_orphaned_never_deleted_and_counts_for_the_safety_valve():
    bound = {"50": PbxGroup("Alt", ("1",), ("30",)), "51": PbxGroup("-Done")}
    a = PbxAccount("1", "11", "Vor", "A", "a@example.com", False, "11")
    pbx = state([a], {"11": "1", "30": "group:50"}, bound)
    keys = {"map:cn=alt": "50", "map:cn=done": "51"}
    _, d, actions, groups = plan(directory(user("a", "11")), pbx, config(), {"sid-a": "1"}, keys)
    (orphan,) = groups  # the one already orphaned has nothing left to change
    assert (orphan.address, orphan.action, orphan.pbx_group_id) == ("group.Alt", "orphan", "50")
    assert orphan.after == PbxGroup("-Alt") and orphan.before.members == ("user.a",)
    assert d.group_managed == 2
    problems = diff.safety_problems(1, d, {}, set(), Safety(0, 0.0))
    assert problems == [
        "the plan would orphan 1 of 3 managed PBX users and groups, more than safety.max_orphans allows (0)"
    ]


def test_members_are_the_users_the_plan_keeps_or_creates_and_protected_ones_never_held_ones():
    mapped = (GroupMap("CN=Sales,OU=Groups", "Vertrieb"),)
    door = PbxAccount("2", "12", "Tür", "X", "door@example.com", False, "12")
    pbx = state([door], {"12": "2"})
    people = directory(
        user("a", "11", groups=(USERS, SALES)),
        user("door", "12", groups=(USERS, SALES), email="door@example.com"),  # matches a protected PBX user
        user("c", "13", groups=(USERS, SALES)),  # no licence left: held at plan time
    )
    _, d, actions, groups = plan(people, pbx, config(mapped=mapped, licenses=2, protect=("12",)))
    (group,) = groups
    # a protected user is a member (R10 keeps its name and numbers; membership is the group's), so a user
    # created now and protected later (protect.logins) stays one: the next plan does not take it out again
    assert group.after.members == ("user.a", "user.door") and group.member_ids == {"user.door": "2"}
    assert [a.address for a in actions] == ["user.a"] and "user.c" in d.held


# -- the plan file and apply's checks -------------------------------------------------------------------


def applied_case(cli, tmp_path, name: str) -> Path:
    case = copy_case(name, tmp_path)
    code, _, err = cli("plan", "-c", case / "adsync.yaml", "-o", case / "p.plan.json")
    assert code == 0, err
    return case


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda g: dataclasses.replace(g, action="delete"), "'delete' is not one of: create, update, orphan"),
        (
            lambda g: dataclasses.replace(g, pbx_group_id="52", key="map:cn=fremd"),
            "was not made or bound by adsync-plan",
        ),
        (
            lambda g: dataclasses.replace(g, after=PbxGroup("-Altgruppe", ("user.anna",))),
            "only gets '-' before its name",
        ),
        (lambda g: dataclasses.replace(g, after=PbxGroup("-Altgruppe", (), (PREFIX + "36",))), "belongs to group:52"),
    ],
    ids=["delete", "unbound-group", "orphan-keeps-members", "number-of-another-group"],
)
def test_apply_refuses_a_plan_whose_group_changes_break_the_rules(cli, tmp_path, edit, words):
    case = applied_case(cli, tmp_path, "groups_orphaned")
    saved = load_plan(case / "p.plan.json")
    edited = tuple(edit(g) for g in saved.group_changes)
    save_plan(case / "e.plan.json", dataclasses.replace(saved, group_changes=edited))
    pbx = (case / "pbx.yaml").read_bytes()
    code, _, err = cli("apply", "-c", case / "adsync.yaml", case / "e.plan.json")
    assert code == 1 and words in err and err.count("Error") == 1, err
    assert (case / "pbx.yaml").read_bytes() == pbx


def test_no_plan_may_delete_a_group_whoever_wrote_it():
    group = GroupAction("group.X", "delete", "50", "map:cn=x", PbxGroup("X"), PbxGroup("X"))
    pbx = state(groups={"50": PbxGroup("X")})
    found = invariants.violations((), pbx, {}, config(), True, (group,), {"map:cn=x": "50"})
    assert found == ["group.X: the group action 'delete' does not exist (no group is ever deleted)"]


def test_a_plan_file_round_trips_its_group_changes(cli, tmp_path):
    case = applied_case(cli, tmp_path, "groups_member_leaves")
    saved = load_plan(case / "p.plan.json")
    (group,) = saved.group_changes
    assert isinstance(group, GroupAction) and group.member_ids == {"user.anna": "20", "user.bernd": "21"}
    assert saved.has_changes and "group_changes" in json.loads((case / "p.plan.json").read_text())


def test_an_edited_group_change_breaks_the_plans_digest(cli, tmp_path):
    case = applied_case(cli, tmp_path, "groups_member_leaves")
    doc = json.loads((case / "p.plan.json").read_text())
    doc["group_changes"][0]["after"]["members"].append("user.bernd")
    (case / "p.plan.json").write_text(json.dumps(doc))
    code, _, err = cli("apply", "-c", case / "adsync.yaml", case / "p.plan.json")
    assert code == 1 and "the plan was changed after it was made" in err, err


# -- the file PBX ---------------------------------------------------------------------------------------


@pytest.fixture
def pbx_file(tmp_path) -> FileProvider:
    doc = {
        "format_version": 1,
        "users": [{"id": 17, "login_id": "17", "first_name": "A", "last_name": "B", "email": "a@x"}],
        "numbers": [
            {"number": "30", "type": "internal", "owner": None, "service": None},
            {"number": "31", "type": "internal", "owner": 17, "service": "standard"},
            {"number": "32", "type": "internal", "owner": "group:50", "service": "standard"},
        ],
        "groups": [{"id": 50, "name": "Vertrieb", "members": [17]}],
    }
    (tmp_path / "pbx.yaml").write_text(json.dumps(doc))
    return FileProvider({"type": "file", "path": "pbx.yaml"}, tmp_path)


def test_the_file_pbx_reads_groups_and_gives_new_ids_after_every_user_and_group(pbx_file):
    read = pbx_file.read()
    assert read.groups == {"50": PbxGroup("Vertrieb", ("17",), ("32",))}
    assert (
        pbx_file.create_group("Support") == "51"
        and pbx_file.create_user(read.users["17"].changed(login_id="18")) == "52"
    )


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda p: p.create_group("VERTRIEB"), "PBX group 50 has it"),
        (lambda p: p.create_group("n" * 65), "1 to 64 characters"),
        (lambda p: p.rename_group("50", ""), "1 to 64 characters"),
        (lambda p: p.set_group_members("50", ["17", "99"]), "no user 99"),
        (lambda p: p.assign_group_number("50", "31"), "it belongs to 17"),
        (lambda p: p.assign_group_number("50", "77"), "not in the inventory"),
        (lambda p: p.release_group_number("50", "30"), "does not own it"),
        (lambda p: p.assign_number("17", "32", "standard"), "it belongs to group:50"),
        (lambda p: p.rename_group("51", "X"), "PBX group 51 does not exist"),
    ],
)
def test_the_file_pbx_refuses_what_a_starface_refuses(pbx_file, call, words):
    with pytest.raises(PbxError, match=words):
        call(pbx_file)


def test_the_file_pbx_writes_groups_back_in_the_contracts_format(pbx_file, tmp_path):
    gid = pbx_file.create_group("Support")
    pbx_file.assign_group_number(gid, "30")
    pbx_file.set_group_members(gid, ["17"])
    pbx_file.release_group_number("50", "32")
    pbx_file.flush()
    doc = json.loads((tmp_path / "pbx.yaml").read_text())
    assert doc["groups"] == [
        {"id": 50, "name": "Vertrieb", "members": [17]},
        {"id": 51, "name": "Support", "members": [17]},
    ]
    owners = {n["number"]: (n["owner"], n["service"]) for n in doc["numbers"]}
    assert owners["30"] == ("group:51", "standard") and owners["32"] == (None, None)


@pytest.mark.parametrize(
    ("group", "words"),
    [
        ({"id": 17, "name": "X"}, "groups.0.id: id 17 appears twice"),
        ({"id": 50, "name": "X", "members": [99]}, "groups.0.members: user 99 does not exist"),
    ],
)
def test_a_pbx_file_with_a_wrong_group_is_refused_naming_the_entry(tmp_path, group, words):
    doc = {
        "format_version": 1,
        "users": [{"id": 17, "login_id": "17", "first_name": "A", "last_name": "B", "email": "a@x"}],
        "numbers": [],
        "groups": [group],
    }
    (tmp_path / "pbx.yaml").write_text(json.dumps(doc))
    with pytest.raises(Exception, match=words):
        FileProvider({"type": "file", "path": "pbx.yaml"}, tmp_path).read()


# -- apply: verification, parallel, recovery ------------------------------------------------------------


class RenamingPbx(FileProvider):
    """A PBX that quietly shortens group names: verification must notice."""

    def create_group(self, name: str) -> str:
        return super().create_group(name[:4])


def test_a_group_that_does_not_read_back_as_planned_stops_the_apply(cli, tmp_path, monkeypatch):
    case = applied_case(cli, tmp_path, "groups_nested")
    monkeypatch.setitem(providers.PROVIDERS, "file", "tests.test_groups:RenamingPbx")
    code, _, err = cli("apply", "-c", case / "adsync.yaml", case / "p.plan.json")
    assert code == 1 and "group.Vertrieb (PBX group 6) does not read back as planned" in err, err
    assert "name 'Vert' instead of 'Vertrieb'" in err


class ThreadedPbx(FileProvider):
    """The file PBX, safe under threads (one call at a time), so apply runs its parallel path."""

    parallel_safe = True
    _lock = threading.Lock()

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        if callable(attr) and not name.startswith("_") and name not in ("read", "flush", "describe", "close"):

            def locked(*args, **kwargs):
                with ThreadedPbx._lock:
                    return attr(*args, **kwargs)

            return locked
        return attr


@pytest.mark.parametrize("name", ["groups_member_leaves", "groups_shared_number", "groups_mapped"])
def test_a_parallel_apply_ends_as_the_sequential_one(cli, tmp_path, monkeypatch, name):
    case = applied_case(cli, tmp_path, name)
    monkeypatch.setitem(providers.PROVIDERS, "file", "tests.test_groups:ThreadedPbx")
    code, _, err = cli("apply", "-c", case / "adsync.yaml", case / "p.plan.json", "--parallelism", "4")
    assert code == 0, err
    expected = json.loads((CASES / name / "expected_pbx.yaml").read_text())
    actual = json.loads((case / "pbx.yaml").read_text())
    login = {u["id"]: u["login_id"] for u in actual["users"]}
    login_expected = {u["id"]: u["login_id"] for u in expected["users"]}
    # concurrent creates may take their ids in another order: compare members by login ID
    assert [sorted(login[m] for m in g["members"]) for g in actual["groups"]] == [
        sorted(login_expected[m] for m in g["members"]) for g in expected["groups"]
    ]
    assert cli("plan", "-c", case / "adsync.yaml", "--detailed-exitcode")[0] == 0


def test_a_killed_apply_that_created_groups_binds_them_on_recovery(cli, tmp_path):
    from tests.test_interrupt import HOOK, audit, leftovers, run

    case = applied_case(cli, tmp_path, "groups_mapped")
    killed = run("apply", "-c", case / "adsync.yaml", case / "p.plan.json", **{HOOK: "KILL@flushed"})
    assert killed.returncode == -signal.SIGKILL
    assert len(json.loads((case / "pbx.yaml").read_text())["groups"]) == 2  # on the PBX, bound nowhere yet
    code, _, err = cli("refresh", "-c", case / "adsync.yaml")
    assert code == 0 and "recovered from the journal" in err, err
    assert leftovers(case) == [] and audit(case)[-1]["groups_found"] == 2
    snapshot = json.loads((case / "states" / "pbx.yaml").read_text())
    assert sorted(snapshot["group_bindings"]) == [
        f"map:cn={g},ou=groups,dc=example,dc=com" for g in ("support", "vertrieb")
    ]
    code, out, err = cli("plan", "-c", case / "adsync.yaml", "--detailed-exitcode")
    assert code == 0 and "No changes." in out, out + err  # no second group of the same name


class UnreadableAfterApply(FileProvider):
    reads = 0

    def read(self, progress=None):
        UnreadableAfterApply.reads += 1
        if UnreadableAfterApply.reads > 1:
            raise PbxError("the PBX did not answer.")
        return super().read()


def test_when_the_pbx_cannot_be_read_after_apply_the_snapshot_replays_the_group_steps(cli, tmp_path, monkeypatch):
    case = applied_case(cli, tmp_path, "groups_member_leaves")
    monkeypatch.setitem(providers.PROVIDERS, "file", "tests.test_groups:UnreadableAfterApply")
    UnreadableAfterApply.reads = 0
    code, _, err = cli("apply", "-c", case / "adsync.yaml", case / "p.plan.json")
    assert code == 0 and "could not read the PBX after apply" in err, err
    replayed = json.loads((case / "states" / "pbx.yaml").read_text())
    monkeypatch.undo()
    assert cli("refresh", "-c", case / "adsync.yaml")[0] == 0
    read_back = json.loads((case / "states" / "pbx.yaml").read_text())
    assert (
        replayed["groups"]
        == read_back["groups"]
        == {"50": {"name": "Vertrieb", "members": ["20", "51"], "numbers": ["30"]}}
    )
    assert replayed["fingerprint"] == read_back["fingerprint"]


def test_a_targeted_plan_leaves_groups_out(cli, tmp_path):
    case = copy_case("groups_member_leaves", tmp_path)
    code, out, err = cli("plan", "-c", case / "adsync.yaml", "--target", "user.clara", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert [c["address"] for c in doc["changes"]] == ["user.clara"] and "group_changes" not in doc


def test_explain_says_where_a_shared_number_went(cli, tmp_path):
    case = copy_case("groups_shared_number", tmp_path)
    code, out, err = cli("explain", "-c", case / "adsync.yaml", "empfang2")
    assert code == 0, err
    assert "number +4970222797820 goes to the group 'Zentrale +4970222797820', not to this user" in out
    assert "member of the group 'Zentrale +4970222797820'" in out


def explain_lines(cli, case: Path, *args: str) -> list[str]:
    code, out, err = cli("explain", "-c", case / "adsync.yaml", *args)
    assert code == 0, err
    return out.splitlines()


def test_explain_a_mapped_group_names_its_key_its_members_and_why_and_the_number_left_out(cli, tmp_path):
    lines = explain_lines(cli, copy_case("groups_mapped", tmp_path), "group.Vertrieb")
    assert lines[:3] == [
        "group.Vertrieb",
        "  for:        the directory group CN=Vertrieb,OU=Groups,DC=example,DC=com (pbx_groups.map.0)",
        "  binding:    map:cn=vertrieb,ou=groups,dc=example,dc=com, no PBX group bound yet",
    ]
    members = lines[lines.index("Members:") + 1 : lines.index("Numbers (pbx_groups.map.0.numbers):") - 1]
    assert members == [
        "  user.anna: member (the plan creates the user, then adds it)",
        "  user.bernd: member (the plan creates the user, then adds it)",
        "  user.carla: not a member: out of scope (R3); membership in a mapped group alone puts nobody in scope",
        "  user.emil: not a member: held by MISSING_EMAIL (R1); a held user is never a member",
    ]
    assert "  +4970222797830: the group's" in lines and "  30: the group's" in lines
    assert (
        "  +4970222797831: left out (GROUP_NUMBER_CONFLICT): number +4970222797831 (pbx_groups.map.0.numbers) is also "
        "a number of user.dieter, which keeps it; group.Vertrieb is planned without it. Remove it from the directory "
        "or from the configuration." in lines
    )
    assert lines[lines.index("Plan:") + 1] == (
        "  + create: name Vertrieb, members user.anna, user.bernd; numbers +4970222797830, 30"
    )


def test_explain_a_shared_number_group_names_who_carries_it_and_why_one_is_no_member(cli, tmp_path):
    lines = explain_lines(cli, copy_case("groups_shared_number", tmp_path), "group.Zentrale +4970222797820")
    assert lines[1] == (
        "  for:        the number +4970222797820 several directory users share (pbx_groups.shared_numbers: group; "
        "the name from pbx_groups.shared_name)"
    )
    assert "  user.empfang1: member" in lines
    assert "  user.empfang2: member (the plan creates the user, then adds it)" in lines
    assert "  user.nurzentrale: not a member: held by NO_INTERNAL_NUMBER (R12); a held user is never a member" in lines
    assert "  +4970222797820: the shared number, carried by user.empfang1, user.empfang2, user.nurzentrale" in lines


def test_explain_a_bound_group_a_member_left_shows_the_update(cli, tmp_path):
    lines = explain_lines(cli, copy_case("groups_member_leaves", tmp_path), "group.Vertrieb")
    assert lines[2] == "  binding:    map:cn=vertrieb,ou=groups,dc=example,dc=com -> PBX group 50 (Vertrieb)"
    assert "  user.bernd: leaves the group: not (or no longer) a member of the directory group" in lines
    start = lines.index("Plan:")
    assert lines[start + 1 : start + 3] == [
        "  ~ update PBX group 50: the directory differs in these fields",
        "      members: ['user.anna', 'user.bernd'] -> ['user.anna', 'user.clara']",
    ]


def test_explain_an_orphaned_group_and_one_the_tool_did_not_make(cli, tmp_path):
    case = copy_case("groups_orphaned", tmp_path)
    lines = explain_lines(cli, case, "group.Altgruppe")
    assert lines[1:3] == [
        "  PBX group 51, bound by map:cn=altgruppe,ou=groups,dc=example,dc=com",
        "  no longer desired: no entry of pbx_groups.map is for this directory group",
    ]
    assert "  ! orphan: members and numbers removed, '-' before the name; never deleted (counts for R13)" in lines
    assert "      name: Altgruppe -> -Altgruppe" in lines
    lines = explain_lines(cli, case, "group.Fremdgruppe")
    assert lines[1] == "  PBX group 52, not bound: adsync-plan did not make it and never touches it"
    start = lines.index("  the desired group group.FREMDGRUPPE has its name and is held:")
    assert lines[start + 1].startswith("  error GROUP_NAME_COLLISION (pbx_groups): PBX group 52 is named 'Fremdgruppe'")
    lines = explain_lines(cli, case, "group.FREMDGRUPPE")
    assert "  held: nothing is planned for this group; a bound PBX group stays exactly as it is" in lines
    start = lines.index("Members (as the directory wants them; the group is held, so none is added or removed):")
    assert lines[start + 1] == "  user.anna: member"  # of the group as desired: a reviewer sees who waits for it


def test_explain_a_group_from_the_committed_files(cli, tmp_path):
    case = copy_case("groups_mapped", tmp_path)
    assert cli("render", "-c", case / "adsync.yaml")[0] == 0
    assert cli("refresh", "-c", case / "adsync.yaml")[0] == 0
    (case / "directory.ldif").write_text("garbage\n")  # never read
    desired = case / "states" / "desired.yaml"
    lines = explain_lines(cli, case, "group.Vertrieb", "--desired", desired, "--no-refresh")
    assert "  user.anna: member (the plan creates the user, then adds it)" in lines
    assert not any("user.carla" in line for line in lines)
    assert any("run explain without --desired" in line for line in lines)


def test_explain_a_held_user_of_a_mapped_directory_group_says_it_is_no_member(cli, tmp_path):
    lines = explain_lines(cli, copy_case("groups_mapped", tmp_path), "emil")
    assert "  not a member of the group 'Vertrieb': a held user is never a member" in lines
    assert "  in no PBX group" not in lines


def test_explain_a_group_by_the_start_of_its_name_guesses_the_whole_name(cli, tmp_path):
    case = copy_case("groups_shared_number", tmp_path)
    code, _, err = cli("explain", "-c", case / "adsync.yaml", "group.zentrale")
    assert code == 1
    assert "(did you mean group.Zentrale +4970222797820?)" in err.splitlines()[-1]


def test_explain_an_unknown_group_is_one_sentence_with_a_guess(cli, tmp_path):
    code, out, err = cli("explain", "-c", copy_case("groups_mapped", tmp_path) / "adsync.yaml", "group.Vertreib")
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == (
        "Error: group.Vertreib: no desired group and no PBX group has this name (did you mean group.Vertrieb?); "
        "`adsync-plan plan` lists the groups."
    )


# -- property: whatever the directory, the PBX and its groups -------------------------------------------

import os  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from adsync_plan.steps import is_group_step, run_group_step, run_step  # noqa: E402
from tests.test_invariants import INTERNAL, MemoryPbx, directories, make_config, pbx_states  # noqa: E402

OTHER = "cn=other"  # a group of test_invariants' directories that is no scope group


class GroupMemoryPbx(MemoryPbx):
    """test_invariants' in-memory file PBX, with the state's groups."""

    def __init__(self, state_: PbxState, licenses):
        super().__init__(state_, licenses)
        for gid, group in state_.groups.items():
            self.groups[gid] = {"name": group.name, "members": list(group.members)}
        for number, info in state_.numbers.items():
            if info.owner is not None:
                self.owned.setdefault(info.owner, set()).add(number)
        self._next_id = next_id(self.users, self.groups, self.numbers)


@st.composite
def pbx_with_groups(draw) -> tuple[PbxState, dict[str, str]]:
    """A PBX whose numbers owned "group:1" belong to a real group 101 (bound or not, maybe orphaned) or to a
    group the PBX does not list; and the group bindings of the snapshot."""
    base = draw(pbx_states())
    if not draw(st.booleans()):
        return base, {}
    numbers = {
        n: PbxNumber(i.type, "group:101", "standard") if i.owner == "group:1" else i for n, i in base.numbers.items()
    }
    members = draw(st.lists(st.sampled_from(sorted(base.users)), unique=True)) if base.users else []
    owned = tuple(sorted(n for n, i in numbers.items() if i.owner == "group:101"))
    group = PbxGroup(draw(st.sampled_from(["Sales", "sales", "Alt", "-Alt"])), tuple(sorted(members)), owned)
    groups = {"101": group}
    # a second group, maybe bound to the other mapped directory group: names to swap, chain or orphan onto
    second = draw(st.sampled_from([None, "Alle", "SALES", "-Sales", "Alt", "-alt"]))
    if second is not None and second.lower() != group.name.lower():
        groups["102"] = PbxGroup(second)
    pbx = dataclasses.replace(base, numbers=numbers, groups=groups)
    pbx = dataclasses.replace(pbx, users=PbxState.from_parts(_accounts(pbx), numbers).users)
    key = draw(st.sampled_from([None, f"map:{OTHER}", "map:cn=gone"]))
    bindings = {key: "101"} if key else {}
    if "102" in groups and (other := draw(st.sampled_from([None, f"map:{USERS}", "map:cn=gone2"]))):
        bindings[other] = "102"
    return pbx, bindings


def _accounts(pbx: PbxState) -> list[PbxAccount]:
    return [
        PbxAccount(i, u.login_id, u.first_name, u.last_name, u.email, i in pbx.admins, u.primary_internal_number)
        for i, u in pbx.users.items()
    ]


def carry_out(actions, group_actions, pbx, bindings: dict, group_bindings: dict) -> None:
    ids = {i: a.pbx_user_id for i, a in enumerate(actions)}
    ids.update({len(actions) + j: g.pbx_group_id for j, g in enumerate(group_actions)})
    created = {}
    everything = (*actions, *group_actions)
    for step in plan_steps(actions, group_actions, [g["name"] for g in pbx.groups.values()]):
        action = everything[step.index]
        if is_group_step(step):
            new_id = run_group_step(step, action, pbx, ids[step.index], created.get)
            if new_id:
                group_bindings[action.key] = new_id
        else:
            new_id = run_step(step, action, pbx, ids[step.index])
            if new_id:
                bindings[action.source_id], created[action.address] = new_id, new_id
        ids[step.index] = new_id or ids[step.index]


@settings(
    max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_plans_with_groups_are_safe_executable_and_converge(data):
    pbx, group_bindings = data.draw(pbx_with_groups())
    people = data.draw(directories())
    numbers = tuple(data.draw(st.lists(st.sampled_from(INTERNAL + [PREFIX + n for n in INTERNAL]), max_size=2)))
    maps = data.draw(
        st.sampled_from(
            [
                (),
                (GroupMap(OTHER, "Sales", numbers),),
                (GroupMap(OTHER, "Sales", numbers), GroupMap(USERS, "Alle")),
                (GroupMap(OTHER, "Alle", numbers), GroupMap(USERS, "sales")),  # 101 and 102 may swap names
            ]
        )
    )
    cfg = dataclasses.replace(
        make_config(data.draw), pbx_groups=PbxGroups(data.draw(st.sampled_from(["hold", "group"])), "S {number}", maps)
    )
    bindings = {}

    _, d, actions, group_actions = plan(people, pbx, cfg, bindings, group_bindings)
    assert invariants.violations(actions, pbx, bindings, cfg, True, group_actions, group_bindings) == []
    assert {g.action for g in group_actions} <= {"create", "update", "orphan"}
    assert all(g.pbx_group_id in group_bindings.values() for g in group_actions if g.action != "create")

    memory = GroupMemoryPbx(pbx, cfg.licenses)
    new_bindings, new_group_bindings = {**bindings, **diff.bindings(d)}, dict(group_bindings)
    carry_out(actions, group_actions, memory, new_bindings, new_group_bindings)  # PbxError: a refused step
    after = memory.read()
    assert set(after.groups) >= set(pbx.groups), "a PBX group disappeared"
    for gid in set(pbx.groups) - set(group_bindings.values()):
        assert after.groups[gid] == pbx.groups[gid], "a group the tool did not make was touched"

    _, _, again, groups_again = plan(people, after, cfg, new_bindings, new_group_bindings)
    assert (again, groups_again) == ([], []), f"a second plan still has changes: {again} {groups_again}"


def test_a_desired_file_plans_the_same_groups_as_the_directory_and_a_member_held_there_leaves_them(cli, tmp_path):
    case = copy_case("groups_mapped", tmp_path)
    cfg, desired = case / "adsync.yaml", case / "desired.yaml"
    code, out, err = cli("plan", "-c", cfg, "--json")
    assert code == 0, err
    from_source = json.loads(out)["group_changes"]
    assert cli("render", "-c", cfg, "-o", desired)[0] == 0
    assert json.loads(desired.read_text())["groups"]["Vertrieb"]["members"] == ["anna", "bernd"]
    code, out, err = cli("plan", "-c", cfg, "--desired", desired, "--json")
    assert code == 0, err
    assert json.loads(out)["group_changes"] == from_source
    doc = json.loads(desired.read_text())
    doc["users"]["anna"]["login_id"] = "112"  # a hand edit the recheck holds (R5): anna leaves her groups
    desired.write_text(json.dumps(doc))
    code, out, err = cli("plan", "-c", cfg, "--desired", desired, "--json")
    assert code == 0, err
    vertrieb = next(g for g in json.loads(out)["group_changes"] if g["address"] == "group.Vertrieb")
    assert vertrieb["after"]["members"] == ["user.bernd"]


def test_a_hand_edited_desired_file_with_two_groups_of_one_name_holds_both(cli, tmp_path):
    case = copy_case("groups_mapped", tmp_path)
    cfg, desired = case / "adsync.yaml", case / "desired.yaml"
    assert cli("render", "-c", cfg, "-o", desired)[0] == 0
    doc = json.loads(desired.read_text())
    doc["groups"]["SUPPORT"] = {**doc["groups"]["Support"], "directory_group": "CN=Other"}
    desired.write_text(json.dumps(doc))
    code, out, err = cli("plan", "-c", cfg, "--desired", desired, "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert [g["address"] for g in plan["group_changes"]] == ["group.Vertrieb"]
    held = {d["address"] for d in plan["diagnostics"] if d["code"] == "GROUP_NAME_COLLISION"}
    assert held == {"group.SUPPORT", "group.Support"} and plan["summary"]["group_held"] == 2


def test_a_group_changed_on_the_pbx_after_the_plan_makes_it_stale(cli, tmp_path):
    case = applied_case(cli, tmp_path, "groups_member_leaves")
    assert cli("refresh", "-c", case / "adsync.yaml")[0] == 0  # the snapshot the plan was made against
    case_pbx = json.loads((case / "pbx.yaml").read_text())
    case_pbx["groups"][0]["members"] = [20]  # someone edits the group on the PBX meanwhile
    (case / "pbx.yaml").write_text(json.dumps(case_pbx))
    code, _, err = cli("apply", "-c", case / "adsync.yaml", case / "p.plan.json")
    assert code == 1 and "the plan is stale" in err and "PBX group 50 (Vertrieb) changed" in err, err
