"""STARFACE groups (issue 16): the provider's group read and writes against the local STARFACE server, before 10
(nonce login) and from 10 on (OAuth), and the server's own enforcement (one owner per number, existing members,
name rules, whole lists on PUT)."""

from __future__ import annotations

import threading

import pytest

from adsync_plan.errors import PbxError
from adsync_plan.model import PbxGroup, PbxNumber
from tests.servers.starface import (
    CLIENT_SECRET_ENV,
    GROUP_NAME_MAX,
    PASSWORD_ENV,
    StarfaceServer,
    _Operations,
    export_pbx_file,
    provider_for,
    seed_from_pbx_file,
)

BULK_READS = {
    "GET /users": 1,
    "GET /phonenumbers": 1,
    "GET /accounts": 1,
    "GET /callservices": 1,
    "GET /permissions": 1,
    "GET /permissions/{id}/users": 1,
    "GET /groups": 1,
}


@pytest.fixture(params=["6", "10"], ids=["nonce-login", "starface10-oauth"])
def server(request, monkeypatch):
    with StarfaceServer(version=request.param) as srv:
        monkeypatch.setenv(PASSWORD_ENV, srv.password)
        monkeypatch.setenv(CLIENT_SECRET_ENV, srv.client_secret)
        yield srv
        assert srv.errors == []  # no bug inside the emulator went unnoticed
        assert "DELETE /groups/{id}" not in srv.counts and "DELETE /users/{id}" not in srv.counts
        srv.check_consistency()


@pytest.fixture
def provider(server, tmp_path):
    with provider_for(server, tmp_path) as prov:
        yield prov


def seed(srv: StarfaceServer) -> dict:
    """Three users; the group Vertrieb (two members, an internal and an external number), an empty group; a
    number of a module and free numbers."""
    ids = {n: srv.add_internal(n) for n in ("30", "40", "50", "60", "300", "301", "302")}
    for n in ("+4970222797300", "+4970222797301"):
        ids[n] = srv.add_external(n)
    jane = srv.add_user("30", "Jane", "Doe", "jane@example.com", user_id=17)
    bea = srv.add_user("40", "Bea", "Boss", "bea@example.com", user_id=18)
    carl = srv.add_user("50", "Carl", "Cole", "carl@example.com", user_id=19)
    for uid, n in ((jane, "30"), (bea, "40"), (carl, "50")):
        srv.assign(uid, ids[n])
        srv.set_primary(uid, ids[n])
    srv.give_to_module(ids["60"], "ivr-1")
    ids["sales"] = srv.add_group("Vertrieb", (ids["300"], ids["+4970222797300"]), members=(jane, bea), group_id=50)
    ids["empty"] = srv.add_group("Empty", group_id=51)
    return ids


def snapshot(srv: StarfaceServer) -> tuple:
    """Everything a refused write must leave as it was."""
    with srv.lock:
        groups = {gid: (g["name"], frozenset(g["members"])) for gid, g in srv.data.groups.items()}
        return groups, {nid: dict(n) for nid, n in srv.data.numbers.items()}


def writes(srv: StarfaceServer) -> dict:
    return {k: c for k, c in srv.counts.items() if k.split()[0] in ("POST", "PUT", "DELETE") and "login" not in k}


# ---- reading ----------------------------------------------------------------------------------------------


def test_read_fills_the_groups_with_members_and_numbers(server, provider):
    seed(server)
    state = provider.read()
    assert state.groups == {
        "50": PbxGroup("Vertrieb", members=("17", "18"), numbers=("+4970222797300", "300")),
        "51": PbxGroup("Empty"),
    }
    assert state.numbers["300"] == PbxNumber("internal", "group:50", "standard")
    assert state.numbers["+4970222797300"] == PbxNumber("external", "group:50", "standard")
    assert state.users["17"].internal_numbers == ("30",)  # a group's number is not its members'
    assert "50" not in state.users and "51" not in state.users


@pytest.mark.parametrize("count", [0, 1, 12])
def test_a_read_costs_one_request_for_the_list_and_one_per_group(count, server, tmp_path):
    uid = server.add_user("30", "Jane", "Doe", "jane@example.com")
    for i in range(count):
        server.add_group(f"Group {i}", members=(uid,) if i % 2 else ())
    with provider_for(server, tmp_path, parallelism=4) as prov:
        state = prov.read()
    assert len(state.groups) == count
    assert sum(1 for g in state.groups.values() if g.members == (str(uid),)) == count // 2
    reads = {k: c for k, c in server.counts.items() if k.startswith("GET") and "login" not in k and "/." not in k}
    assert reads == {**BULK_READS, **({"GET /groups/{id}": count} if count else {})}


def test_read_group_is_one_request_and_matches_the_read(server, provider):
    seed(server)
    state = provider.read()
    server.reset_counts()
    assert provider.read_group("50") == state.groups["50"]
    assert server.total_requests == 1 and server.counts["GET /groups/{id}"] == 1


def test_read_group_of_a_group_gone_says_so(server, provider):
    seed(server)
    with pytest.raises(PbxError, match=r"no longer has the group 77; run refresh and plan again\.$"):
        provider.read_group("77")


# ---- writing ----------------------------------------------------------------------------------------------


def test_create_group_makes_an_empty_group_and_finds_its_id(server, provider):
    seed(server)
    provider.read()
    server.reset_counts()
    gid = provider.create_group("Support")
    assert gid not in ("17", "18", "19", "50", "51")  # one account id space for users and groups
    assert provider.read_group(gid) == PbxGroup("Support")
    assert writes(server) == {"POST /groups": 1}
    assert server.counts["GET /groups"] == 1  # the search by name found it
    assert server.add_user("60", "Dan", "Diaz", "dan@example.com") != int(gid)


def test_create_group_refuses_ambiguity(server, provider, monkeypatch):
    """On a PBX that lets two groups share a name, the new one cannot be told apart: refused, not guessed."""
    seed(server)
    monkeypatch.setattr(_Operations, "_check_group_name", lambda *args: None)
    server.add_group("support", group_id=60)  # differs in case only: not an exact-name match
    first = provider.create_group("Support")
    with pytest.raises(PbxError, match=r"has 2 groups named 'Support' \(ids \d+, \d+\); rename all but one on the"):
        provider.create_group("Support")
    server.data.groups[int(first)]["name"] = "Support 1"  # what the sentence asks for (and check_consistency)
    server.data.groups[60]["name"] = "Support 2"


@pytest.mark.parametrize(
    "name, words",
    [
        ("vertrieb", ["already used by the group 50"]),
        ("", ["must not be empty"]),
        ("   ", ["must not be empty"]),
        ("x" * (GROUP_NAME_MAX + 1), [f"longer than {GROUP_NAME_MAX} characters"]),
    ],
)
def test_create_group_refusals_are_one_sentence(name, words, server, provider):
    seed(server)
    before = snapshot(server)
    with pytest.raises(PbxError) as err:
        provider.create_group(name)
    message = str(err.value)
    assert f"refused to create the new group {name!r}" in message and all(w in message for w in words), message
    assert "\n" not in message and message.endswith(".")
    assert snapshot(server) == before


def test_a_name_of_the_maximum_length_is_accepted(server, provider):
    name = "x" * GROUP_NAME_MAX
    assert provider.read_group(provider.create_group(name)).name == name


def test_create_group_whose_answer_was_lost_finds_the_group(server, provider, caplog):
    seed(server)
    server.fail(1, "drop", "POST", "/groups", after=True)  # created, then the connection broke
    gid = provider.create_group("Support")
    assert server.data.groups[int(gid)]["name"] == "Support" and server.counts["POST /groups"] == 1
    assert "did not confirm the creation of the new group 'Support'" in caplog.text


def test_create_group_lost_before_it_landed_says_nothing_was_created(server, provider):
    seed(server)
    server.fail(1, "drop", "POST", "/groups")
    with pytest.raises(PbxError, match=r"has no group with that name, so nothing was created; run plan and apply"):
        provider.create_group("Support")
    assert server.counts["POST /groups"] == 1 and len(server.data.groups) == 2  # never repeated


def test_create_group_lost_while_a_busy_group_of_that_name_appeared_is_refused(server, provider):
    seed(server)
    server.fail(1, "500", "POST", "/groups")  # not created; meanwhile someone made a group of that name
    server.data.groups[50]["name"] = "Support"
    with pytest.raises(PbxError, match=r"a group 50 with that name has members or numbers, so it is not the one"):
        provider.create_group("Support")


def test_rename_group_changes_the_name_only(server, provider):
    seed(server)
    provider.read()
    server.reset_counts()
    provider.rename_group("50", "-Vertrieb")
    assert provider.read_group("50") == PbxGroup("-Vertrieb", ("17", "18"), ("+4970222797300", "300"))
    assert writes(server) == {"PUT /groups": 1}


def test_set_group_members_makes_exactly_those_the_members(server, provider):
    seed(server)
    provider.read()
    server.reset_counts()
    provider.set_group_members("50", ["18", "19"])
    assert server.group_members(50) == {18, 19}
    provider.set_group_members("51", ["17"])
    provider.set_group_members("50", [])
    assert server.group_members(50) == set() and server.group_members(51) == {17}
    assert server.group_numbers(50) == {"300", "+4970222797300"}  # members only
    assert writes(server) == {"PUT /groups": 3} and server.counts["GET /groups/{id}"] == 3


def test_assign_and_release_group_numbers(server, provider):
    seed(server)
    provider.read()
    server.reset_counts()
    provider.assign_group_number("51", "301")
    provider.assign_group_number("51", "+4970222797301")
    provider.release_group_number("50", "300")
    assert server.group_numbers(51) == {"301", "+4970222797301"}
    assert server.group_numbers(50) == {"+4970222797300"}
    assert server.data.numbers[server.number_id("300")]["assignedServiceId"] is None  # free again
    assert server.group_members(50) == {17, 18}
    assert writes(server) == {"PUT /groups": 3}
    state = provider.read()
    assert state.numbers["301"] == PbxNumber("internal", "group:51", "standard")
    assert state.numbers["300"] == PbxNumber("internal", None, None)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda p: p.set_group_members("50", ["17", "99"]), ["set the members", "'Vertrieb' (id 50)", "user 99"]),
        (lambda p: p.assign_group_number("51", "30"), ["assign the number 30 to", "'Empty'", "already assigned"]),
        (lambda p: p.assign_group_number("51", "60"), ["number 60", "'Empty'", "already assigned"]),  # a module's
        (lambda p: p.assign_group_number("51", "300"), ["number 300", "'Empty'", "already assigned"]),  # a group's
        (lambda p: p.assign_number("19", "300", "standard"), ["number 300", "user 19", "already assigned"]),
        (lambda p: p.rename_group("51", "VERTRIEB"), ["rename to 'VERTRIEB'", "'Empty'", "already used"]),
        (lambda p: p.rename_group("51", ""), ["'Empty'", "must not be empty"]),
        (lambda p: p.rename_group("51", "y" * 65), ["'Empty'", "longer than 64 characters"]),
        (lambda p: p.release_group_number("51", "301"), ["does not list the number 301", "'Empty'"]),
        (lambda p: p.assign_group_number("51", "+4930123456"), ["+4930123456 is not in the inventory"]),
        (lambda p: p.set_group_members("77", ["17"]), ["no longer has the group 77"]),
    ],
)
def test_every_refusal_is_one_sentence_naming_the_group(server, provider, call, words):
    seed(server)
    provider.read()
    before = snapshot(server)
    with pytest.raises(PbxError) as err:
        call(provider)
    message = str(err.value)
    assert all(w in message for w in words), message
    assert "\n" not in message and message.endswith(".") and "Traceback" not in message
    assert snapshot(server) == before


def test_a_put_whose_answer_is_lost_is_not_repeated(server, provider):
    seed(server)
    provider.read()
    server.fail(1, "500", "PUT", "/groups", after=True)  # the change landed, the answer said 500
    with pytest.raises(PbxError, match=r"did not confirm that it could set the members .* run plan and apply again"):
        provider.set_group_members("50", ["19"])
    assert server.counts["PUT /groups"] == 1 and server.group_members(50) == {19}


def test_writes_to_different_groups_in_parallel(server, provider):
    """parallel_safe: different groups' writes at once (each GET + PUT touches its own group only)."""
    for i in range(8):
        server.add_user(str(100 + i), f"U{i}", "Test", f"u{i}@example.com", user_id=100 + i)
    gids = [provider.create_group(f"Team {i}") for i in range(8)]
    numbers = [server.add_internal(str(700 + i)) for i in range(8)]
    provider.read()

    def work(i: int) -> None:
        provider.set_group_members(gids[i], [str(100 + i), str(100 + (i + 1) % 8)])
        provider.assign_group_number(gids[i], str(700 + i))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, gid in enumerate(gids):
        assert server.group_members(int(gid)) == {100 + i, 100 + (i + 1) % 8}
        assert server.group_numbers(int(gid)) == {str(700 + i)}
    assert len(numbers) == 8


# ---- the server's own rules -------------------------------------------------------------------------------


def put(provider, body) -> tuple[int, object]:
    resp = provider._call("PUT", "/groups/", body=body)  # the PHP client's form, with the trailing slash
    return resp.status_code, resp.text


def test_the_server_refuses_a_put_that_leaves_out_a_member(server, provider):
    """Java's example PUTs only the new member: on a PBX that reads that as "replace" the others would go; this
    server refuses it, so a provider sending partial lists fails here."""
    seed(server)
    group = provider._group("50")
    partial = {**group, "assignableUsers": [{"id": 19, "firstname": "Carl", "lastname": "Cole", "assigned": True}]}
    status, text = put(provider, partial)
    assert status == 400 and "member 17 of the group is missing" in text and not text.startswith("{")
    no_numbers = {**group, "assignableNumbers": []}
    status, text = put(provider, no_numbers)
    assert status == 400 and "is missing from its assignableNumbers" in text
    assert server.group_members(50) == {17, 18} and server.group_numbers(50) == {"300", "+4970222797300"}


def test_the_server_accepts_a_list_that_names_every_member(server, provider):
    seed(server)
    group = provider._group("50")
    members = [{"id": 17, "assigned": True}, {"id": 18, "assigned": False}, {"id": 19, "assigned": True}]
    status, _ = put(provider, {**group, "assignableUsers": members})
    assert status == 204 and server.group_members(50) == {17, 19}


def test_the_server_lists_free_numbers_and_the_groups_own_as_assignable(server, provider):
    seed(server)
    group = provider._group("51")
    offered = {e["extension"]: e["assigned"] for e in group["assignableNumbers"]}
    assert offered == {"301": False, "302": False, "2797301": False}  # not 30 (a user's), 60, 300 (a group's)
    assert {u["id"]: u["assigned"] for u in provider._group("50")["assignableUsers"]} == {17: True, 18: True, 19: False}
    items = provider._get_list("/groups", params={"searchTerm": "vert"})
    assert items == [
        {"id": 50, "groupname": "Vertrieb", "groupinternalnumber": "300", "groupexternalnumber": "+4970222797300"}
    ]


def test_deleting_a_user_removes_it_from_its_groups(server, provider):
    seed(server)
    assert provider._call("DELETE", "/users/17").status_code == 204  # by hand on the PBX; the tool never does
    assert server.group_members(50) == {18}
    server.counts.pop("DELETE /users/{id}")  # the fixture's check is about the tool


def test_check_consistency_catches_broken_groups(server):
    seed(server)
    with server.lock:
        server.data.groups[51]["members"].add(99)
    with pytest.raises(AssertionError, match="missing members"):
        server.check_consistency()
    with server.lock:
        server.data.groups[51]["members"].discard(99)
        server.data.groups[51]["name"] = "VERTRIEB"
    with pytest.raises(AssertionError, match="duplicate group names"):
        server.check_consistency()
    with server.lock:
        server.data.groups[51]["name"] = "Empty"
        server.data.numbers[server.number_id("301")]["assignedGroupAccountId"] = 77
    with pytest.raises(AssertionError, match="missing group 77"):
        server.check_consistency()
    with server.lock:
        server.data.numbers[server.number_id("301")]["assignedGroupAccountId"] = None


# ---- the file PBX's groups --------------------------------------------------------------------------------


def document(groups=True) -> dict:
    doc = {
        "format_version": 1,
        "users": [
            {
                "id": 17,
                "login_id": "30",
                "first_name": "Jane",
                "last_name": "Doe",
                "email": "jane@example.com",
                "is_admin": False,
                "primary_internal_number": "30",
            }
        ],
        "numbers": [
            {"number": "+4970222797300", "type": "external", "owner": "group:50", "service": "standard"},
            {"number": "30", "type": "internal", "owner": 17, "service": "standard"},
            {"number": "300", "type": "internal", "owner": "group:50", "service": "standard"},
            {"number": "301", "type": "internal", "owner": None, "service": None},
        ],
    }
    if groups:
        doc["groups"] = [{"id": 50, "name": "Vertrieb", "members": [17]}, {"id": 60, "name": "Leer", "members": []}]
    return doc


def test_seed_and_export_keep_the_groups_of_a_pbx_file(server, provider):
    seed_from_pbx_file(server, document())
    assert export_pbx_file(server) == document()
    state = provider.read()
    assert state.groups == {
        "50": PbxGroup("Vertrieb", ("17",), ("+4970222797300", "300")),
        "60": PbxGroup("Leer"),
    }
    assert provider.create_group("Neu") == "61"  # max(all user and group ids) + 1


def test_a_group_owner_without_a_groups_list_is_not_exported(server, provider):
    seed_from_pbx_file(server, document(groups=False))
    assert export_pbx_file(server) == document(groups=False)
    assert provider.read().groups == {"50": PbxGroup("Group 50", (), ("+4970222797300", "300"))}


def test_an_undeclared_group_owner_may_share_a_user_id_as_in_the_demo(server):
    """examples/demo/pbx.yaml has `owner: group:1` beside user 1 (older than the shared id space)."""
    doc = document(groups=False)
    doc["numbers"][0]["owner"] = "group:17"
    seed_from_pbx_file(server, doc)
    assert export_pbx_file(server) == doc
    with pytest.raises(ValueError, match="account id 17 is taken"):
        server.add_group("Declared", group_id=17)  # a declared group may not
