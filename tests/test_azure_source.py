"""The azure source against a local Graph server: users, SPEC 4 mapping, paging, $select, scope groups.

The real msal and requests talk HTTPS to tests/servers/graph.py; nothing in the source knows it is a test.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adsync_plan.config import Scope
from adsync_plan.errors import ConfigError, SourceError
from adsync_plan.model import DirectoryUser
from adsync_plan.sources import azure
from adsync_plan.sources import read_directory as read_any
from tests.servers.graph import CLIENT_SECRET, GraphServer, graph_user, group_id

NEEDED_SELECT = {
    "id",
    "userPrincipalName",
    "onPremisesSamAccountName",
    "givenName",
    "surname",
    "mail",
    "businessPhones",
    "faxNumber",
    "accountEnabled",
    "userType",  # guests are left out unless source.include_guests
}


@pytest.fixture
def graph(monkeypatch):
    monkeypatch.setenv("GRAPH_TEST_SECRET", CLIENT_SECRET)
    with GraphServer() as server:
        yield server


class RecordingProgress:
    def __init__(self):
        self.events = []

    def start(self, label, total=None):
        self.events.append(("start", label, total))

    def advance(self, n=1):
        self.events.append(("advance", n))

    def done(self):
        self.events.append(("done",))


def read(graph, scope=None, attributes=None, progress=None, **settings):
    scope = scope or Scope(admin_groups=(), user_groups=tuple(graph.groups) or (group_id("none"),))
    kwargs = {"progress": progress} if progress else {}
    return azure.read_directory(graph.source_settings(**settings), scope, attributes or {}, Path("."), **kwargs)


def test_reads_2500_users_over_several_pages_with_one_token(graph):
    graph.users = [graph_user(n) for n in range(2500)]
    graph.add_group(group_id("staff"), [u["id"] for u in graph.users[::7]])

    directory = read(graph, page_size=999)

    assert len(directory.users) == 2500
    assert [u.source_id for u in directory.users] == [u["id"] for u in graph.users]
    assert graph.counts["users:200"] == 3  # 999 + 999 + 502
    assert graph.counts["discovery"] == 1
    assert graph.counts["token"] == 1  # msal's cache serves the token for the later pages
    assert graph.foreign_links == 0  # every nextLink was followed verbatim
    in_group = {u.source_id for u in directory.users if u.groups}
    assert in_group == {u["id"] for u in graph.users[::7]}


def test_page_size_is_sent_as_top(graph):
    graph.users = [graph_user(n) for n in range(250)]
    graph.add_group(group_id("staff"), [])

    directory = read(graph, page_size=100)

    assert len(directory.users) == 250
    assert graph.counts["users"] == 3


def test_select_names_exactly_the_needed_properties(graph):
    graph.users = [graph_user(1)]
    graph.add_group(group_id("staff"), [])

    read(graph)

    assert graph.selects, "the server saw no $select"
    assert [set(s) for s in graph.selects] == [NEEDED_SELECT]
    assert len(graph.selects[0]) == len(NEEDED_SELECT)  # no duplicates


def test_attribute_overrides_change_select_and_mapping(graph):
    graph.users = [graph_user(1, businessPhones=["+49 7022 2797830"], mobilePhone="31", employeeId="E-1")]
    graph.add_group(group_id("staff"), [])

    directory = read(graph, attributes={"phones": ["businessPhones", "mobilePhone"], "account": "employeeId"})

    assert set(graph.selects[0]) == (NEEDED_SELECT - {"onPremisesSamAccountName"}) | {
        "mobilePhone",
        "employeeId",
    }
    user = directory.users[0]
    assert user.phones == ("+49 7022 2797830", "31")
    assert user.account == "E-1"
    assert directory.attributes["phones"] == "businessPhones/mobilePhone"


def test_an_unknown_property_in_the_overrides_is_a_clear_error(graph):
    graph.users = [graph_user(1)]
    graph.add_group(group_id("staff"), [])

    with pytest.raises(SourceError) as err:
        read(graph, attributes={"last_name": "sn"})

    message = str(err.value)
    assert "Could not find a property named 'sn'" in message
    assert "HTTP 400" in message
    assert "\n" not in message


def test_graph_users_map_as_spec_4(graph):
    staff = group_id("staff")
    graph.users = [
        graph_user(
            1,
            id="AAAAAAAA-1111-2222-3333-444444444444",
            onPremisesSamAccountName="jdoe",
            givenName="Jürgen",
            surname="Müller",
            mail="juergen.mueller@contoso.example",
            businessPhones=["+49 (7022) 27978-30", "31"],
            faxNumber="+49 7022 2797899",
            accountEnabled=True,
        ),
        graph_user(2, onPremisesSamAccountName=None, userPrincipalName="cloud.only@contoso.example"),
        graph_user(3, accountEnabled=False, mail=None, givenName=None, businessPhones=[], faxNumber=""),
    ]
    graph.add_group(staff, [graph.users[0]["id"], graph.users[2]["id"]])

    directory = read(graph, scope=Scope(admin_groups=(), user_groups=(staff.upper(),)))

    first, second, third = directory.users
    assert first == DirectoryUser(
        source_id="aaaaaaaa-1111-2222-3333-444444444444",
        dn="user000001@contoso.example",
        account="jdoe",
        first_name="Jürgen",
        last_name="Müller",
        email="juergen.mueller@contoso.example",
        phones=("+49 (7022) 27978-30", "31"),
        faxes=("+49 7022 2797899",),
        groups=frozenset({staff.lower()}),
        enabled=True,
    )
    assert second.account == "cloud.only"  # no on-premises account: the UPN's local part
    assert second.groups == frozenset()
    assert (third.enabled, third.email, third.first_name, third.phones, third.faxes) == (
        False,
        None,
        None,
        (),
        (),
    )
    assert third.groups == frozenset({staff.lower()})
    assert directory.origin == {"type": "azure", "tenant_id": graph.tenant_id, "graph_url": graph.base_url}
    assert directory.attributes["account"] == "onPremisesSamAccountName/userPrincipalName"
    assert directory.attributes["last_name"] == "surname"


def test_account_from_user_principal_name(graph):
    graph.users = [graph_user(1, onPremisesSamAccountName="legacy", userPrincipalName="j.doe@contoso.example")]
    graph.add_group(group_id("staff"), [])

    directory = read(graph, account_from="userPrincipalName")

    assert directory.users[0].account == "j.doe"
    assert "onPremisesSamAccountName" not in graph.selects[0]


def nested_tenant(graph):
    """admins -> [u0, staff]; staff -> [u1, team]; team -> [u2, staff] (a cycle); u3 in no group."""
    graph.users = [graph_user(n) for n in range(4)]
    ids = [u["id"] for u in graph.users]
    admins, staff, team = group_id("admins"), group_id("staff"), group_id("team")
    graph.add_group(admins, [ids[0], staff])
    graph.add_group(staff, [ids[1], team])
    graph.add_group(team, [ids[2], staff])
    return ids, admins, staff


def test_nested_groups_through_transitive_members(graph):
    ids, admins, staff = nested_tenant(graph)

    directory = read(graph, scope=Scope(admin_groups=(admins,), user_groups=(staff,), nested_groups=True))

    groups = {u.source_id: u.groups for u in directory.users}
    assert groups[ids[0]] == {admins}
    assert groups[ids[1]] == {admins, staff}
    assert groups[ids[2]] == {admins, staff}
    assert groups[ids[3]] == frozenset()
    assert graph.counts["transitive"] == 2 and graph.counts["members"] == 0


def test_without_nested_groups_only_direct_members_count(graph):
    ids, admins, staff = nested_tenant(graph)

    directory = read(graph, scope=Scope(admin_groups=(admins,), user_groups=(staff,), nested_groups=False))

    groups = {u.source_id: u.groups for u in directory.users}
    assert groups[ids[0]] == {admins}
    assert groups[ids[1]] == {staff}
    assert groups[ids[2]] == frozenset()
    assert graph.counts["members"] == 2 and graph.counts["transitive"] == 0


def test_group_members_are_paged(graph):
    graph.users = [graph_user(n) for n in range(2500)]
    staff = graph.add_group(group_id("staff"), [u["id"] for u in graph.users])

    directory = read(graph, scope=Scope(admin_groups=(), user_groups=(staff,)), page_size=999)

    assert all(u.groups == {staff} for u in directory.users)
    assert graph.counts["transitive:200"] == 3
    assert graph.foreign_links == 0


def test_a_group_listed_twice_is_read_once(graph):
    graph.users = [graph_user(1)]
    staff = graph.add_group(group_id("staff"), [graph.users[0]["id"]])

    directory = read(graph, scope=Scope(admin_groups=(staff,), user_groups=(staff.upper(),)))

    assert directory.users[0].groups == {staff}
    assert graph.counts["transitive"] == 1


def test_an_unknown_group_is_a_clear_error(graph):
    graph.users = [graph_user(1)]
    staff = graph.add_group(group_id("staff"), [])
    missing = group_id("deleted")

    with pytest.raises(SourceError) as err:
        read(graph, scope=Scope(admin_groups=(missing,), user_groups=(staff,)))

    message = str(err.value)
    assert missing in message and "scope.admin_groups" in message and "does not exist" in message


def test_a_group_that_is_not_an_object_id_is_refused_before_any_request(graph):
    graph.users = [graph_user(1)]

    with pytest.raises(ConfigError, match=r"scope.user_groups: 'CN=PBX-Users,DC=x' is not an Entra ID group"):
        read(graph, scope=Scope(admin_groups=(), user_groups=("CN=PBX-Users,DC=x",)))
    assert sum(graph.counts.values()) == 0


def test_progress_counts_users_and_groups(graph):
    graph.users = [graph_user(n) for n in range(1200)]
    staff = graph.add_group(group_id("staff"), [])
    progress = RecordingProgress()

    read(graph, scope=Scope(admin_groups=(), user_groups=(staff,)), progress=progress, page_size=500)

    starts = [e for e in progress.events if e[0] == "start"]
    assert [s[2] for s in starts] == [None, 1]
    assert progress.events.count(("done",)) == 2
    user_steps = progress.events[1 : progress.events.index(("done",))]
    assert [n for _, n in user_steps] == [500, 500, 200]


def test_the_source_registry_selects_azure(graph):
    graph.users = [graph_user(1)]
    staff = graph.add_group(group_id("staff"), [])

    directory = read_any(graph.source_settings(), Scope((), (staff,)), {}, Path("."))

    assert directory.origin["type"] == "azure"
    assert len(directory.users) == 1


def test_relative_ca_file_is_resolved_against_the_configuration_folder(graph):
    graph.users = [graph_user(1)]
    staff = graph.add_group(group_id("staff"), [])
    settings = graph.source_settings(ca_file=graph.ca_file.name)

    directory = azure.read_directory(settings, Scope((), (staff,)), {}, graph.ca_file.parent)

    assert len(directory.users) == 1


@pytest.fixture(scope="module")
def shared_graph():
    with GraphServer() as server:
        yield server


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(total=st.integers(min_value=0, max_value=2100), page_size=st.integers(min_value=1, max_value=999))
def test_paging_returns_every_user_once_in_order(shared_graph, monkeypatch, total, page_size):
    monkeypatch.setenv("GRAPH_TEST_SECRET", CLIENT_SECRET)
    graph = shared_graph
    page_size = max(page_size, total // 15 + 1)  # at most ~15 pages per example keeps the test quick
    graph.users = [graph_user(n) for n in range(total)]
    graph.add_group(group_id("staff"), [u["id"] for u in graph.users[::3]])
    graph.reset_counts()

    directory = read(graph, scope=Scope((), (group_id("staff"),)), page_size=page_size)

    assert [u.source_id for u in directory.users] == [u["id"] for u in graph.users]
    assert graph.counts["users"] == max(1, -(-total // page_size))
    assert sum(1 for u in directory.users if u.groups) == len(graph.users[::3])


# --- Entra as it really is: guests, cloud-only users, members that are no users ---------------------------


def guest_tenant(graph):
    graph.users = [
        graph_user(1),
        graph_user(
            2,
            userType="Guest",
            onPremisesSamAccountName=None,
            userPrincipalName="ext_partner.example#EXT#@contoso.example",
        ),
        graph_user(3, userType=None),  # older objects may have no userType: a member, as Graph documents
    ]
    return graph.add_group(group_id("staff"), [u["id"] for u in graph.users])


def test_guests_are_out_of_scope_unless_configured(graph, caplog):
    staff = guest_tenant(graph)
    scope = Scope(admin_groups=(), user_groups=(staff,))
    with caplog.at_level("INFO", logger="adsync_plan.sources.azure"):
        directory = read(graph, scope=scope)
    assert [u.account for u in directory.users] == ["user000001", "user000003"]
    assert "Left out 1 guest accounts" in caplog.text
    assert "userType" in graph.selects[0]

    directory = read(graph, scope=scope, include_guests=True)
    assert [u.account for u in directory.users] == ["user000001", "ext_partner.example#EXT#", "user000003"]
    assert "userType" not in graph.selects[-1]


def test_a_cloud_only_user_gets_the_local_part_of_its_upn(graph):
    """README (source.account_from): without onPremisesSamAccountName, the account is the UPN's local part."""
    graph.users = [graph_user(1, onPremisesSamAccountName=None, userPrincipalName="Cloud.Only@contoso.example")]
    graph.add_group(group_id("staff"), [graph.users[0]["id"]])
    assert [u.account for u in read(graph).users] == ["Cloud.Only"]


def test_members_that_are_devices_contacts_or_service_principals_are_skipped(graph, caplog):
    """transitiveMembers and members list every kind of directory object; only users count. Object ids are
    unique in a tenant, so the test gives the other kinds the ids of users that are not members: if their kind
    were ignored, those users would be in scope."""
    graph.users = [graph_user(n) for n in range(4)]
    ids = [u["id"] for u in graph.users]
    graph.kinds = {
        ids[1]: "#microsoft.graph.device",
        ids[2]: "#microsoft.graph.orgContact",
        ids[3]: "#microsoft.graph.servicePrincipal",
    }
    staff = graph.add_group(group_id("staff"), ids)
    for nested in (True, False):
        with caplog.at_level("INFO", logger="adsync_plan.sources.azure"):
            directory = read(graph, scope=Scope(admin_groups=(), user_groups=(staff,), nested_groups=nested))
        assert {u.account for u in directory.users if staff in u.groups} == {"user000000"}
    assert "1 device, 1 orgContact, 1 servicePrincipal" in caplog.text


# --- values the tool cannot read as text: a located error, never a traceback -------------------------------


def one_sentence(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message and message.endswith(".")


@pytest.mark.parametrize(
    ("prop", "value", "words"),
    [
        ("surname", {"value": "Müller"}, "an object in surname"),
        ("givenName", True, "a true/false value in givenName"),
        ("businessPhones", [["+49 7022 1"]], "a list inside a list in businessPhones"),
        ("accountEnabled", {"enabled": False}, "an object in accountEnabled, where true or false was expected"),
    ],
)
def test_a_property_that_is_no_text_names_the_user_and_the_property(graph, prop, value, words):
    graph.users = [graph_user(1), graph_user(2, **{prop: value})]
    graph.add_group(group_id("staff"), [])

    with pytest.raises(SourceError) as err:
        read(graph)

    one_sentence(str(err.value))
    assert graph.users[1]["id"] in str(err.value) and "user000002@contoso.example" in str(err.value)
    assert words in str(err.value)


def test_numbers_in_a_mapped_property_are_text(graph):
    graph.users = [graph_user(1, employeeId=4711)]
    graph.add_group(group_id("staff"), [])

    [user] = read(graph, attributes={"account": "employeeId"}).users

    assert user.account == "4711"


@pytest.mark.parametrize(
    ("raw", "replacement"),
    [
        (b'"surname":"Last2"', b'"surname":"Last\xff2"'),  # bytes that are not UTF-8
        (b'"surname":"Last2"', b'"surname":"Last\\ud8002"'),  # a lone surrogate escape
    ],
)
def test_a_page_with_text_that_is_not_unicode_names_the_user_and_the_property(graph, raw, replacement):
    graph.users = [graph_user(1), graph_user(2)]
    graph.add_group(group_id("staff"), [])
    page = orjson.dumps({"value": graph.users})
    assert raw in page
    graph.fail("users", 200, body=page.replace(raw, replacement))

    with pytest.raises(SourceError) as err:
        read(graph)

    one_sentence(str(err.value))
    assert f"object {graph.users[1]['id']} (user000002@contoso.example) whose surname" in str(err.value)
    assert "not valid Unicode text" in str(err.value)


def test_a_page_that_is_not_json_at_all_is_still_said_so(graph):
    graph.users = [graph_user(1)]
    graph.add_group(group_id("staff"), [])
    graph.fail("users", 200, body=b"<html>\xff</html>")

    with pytest.raises(SourceError, match="something that is not JSON"):
        read(graph)


def test_a_page_with_an_item_that_is_no_user_object(graph):
    graph.users = [graph_user(1)]
    graph.add_group(group_id("staff"), [])
    graph.fail("users", 200, body=b'{"value": ["not a user"]}')

    with pytest.raises(SourceError, match="an item that is not a user object"):
        read(graph)


def test_a_member_page_with_an_item_that_is_no_object(graph):
    graph.users = [graph_user(1)]
    staff = graph.add_group(group_id("staff"), [graph.users[0]["id"]])
    graph.fail("members", 200, body=b'{"value": [42]}')

    with pytest.raises(SourceError, match=f"page 1 of the members of group {staff} .* not an object"):
        read(graph, scope=Scope((), (staff,), nested_groups=False))


# --- mapped directory groups (pbx_groups.map, issue 16) ----------------------------------------------------------


def mapped_tenant(graph):
    """staff (scope) -> [u0, u1, u2]; sales (mapped) -> [u0, north, u3]; north -> [u1]; u4 in no group."""
    graph.users = [graph_user(n) for n in range(5)]
    ids = [u["id"] for u in graph.users]
    staff, sales, north = group_id("staff"), group_id("sales"), group_id("sales-north")
    graph.add_group(staff, ids[:3])
    graph.add_group(sales, [ids[0], north, ids[3]])
    graph.add_group(north, [ids[1]])
    return ids, staff, sales


def role_of(user, scope):
    """The role R3 gives the user under `scope` (None: out of scope), by the rules' own function."""
    from dataclasses import replace

    from adsync_plan.config import load_config
    from adsync_plan.rules.directory import in_scope
    from tests.cases.make_cases import HERE as CASES

    return in_scope(user, replace(load_config(CASES / "r3_scope" / "adsync.yaml"), scope=scope))


@pytest.mark.parametrize("nested", [True, False])
def test_mapped_groups_directly_or_through_a_nested_group(graph, nested):
    ids, staff, sales = mapped_tenant(graph)
    scope = Scope((), (staff,), nested_groups=nested, mapped_groups=(sales.upper(),))  # ids compare lowered

    directory = read(graph, scope=scope)

    groups = {u.source_id: u.groups for u in directory.users}
    assert groups[ids[0]] == {staff, sales}
    assert groups[ids[1]] == ({staff, sales} if nested else {staff})  # in sales through sales-north
    assert groups[ids[3]] == {sales} and groups[ids[4]] == frozenset()
    # one request per group (each fits a page), never one per user
    assert graph.counts["transitive" if nested else "members"] == 2
    assert graph.counts["users"] == 1


def test_membership_in_a_mapped_group_alone_puts_nobody_in_scope(graph):
    ids, staff, sales = mapped_tenant(graph)
    scope = Scope((), (staff,), mapped_groups=(sales,))

    users = {u.source_id: u for u in read(graph, scope=scope).users}

    assert sales in users[ids[3]].groups and role_of(users[ids[3]], scope) is None
    assert role_of(users[ids[0]], scope) == "user"


def test_a_missing_mapped_group_is_refused_with_its_key(graph):
    _, staff, sales = mapped_tenant(graph)
    missing = group_id("deleted")

    with pytest.raises(SourceError) as err:
        read(graph, scope=Scope((), (staff,), mapped_groups=(sales, missing)))

    assert str(err.value).startswith(f"The group {missing} named in pbx_groups.map.1.directory_group does not exist")


def test_a_mapped_group_that_is_not_an_object_id_is_refused_before_any_request(graph):
    _, staff, _ = mapped_tenant(graph)

    with pytest.raises(ConfigError) as err:
        read(graph, scope=Scope((), (staff,), mapped_groups=("CN=Vertrieb,DC=x",)))

    assert str(err.value).startswith("pbx_groups.map.0.directory_group: 'CN=Vertrieb,DC=x' is not an Entra ID group")
    assert sum(graph.counts.values()) == 0


def test_a_mapped_group_that_is_also_a_scope_group_is_read_once(graph):
    ids, staff, _ = mapped_tenant(graph)

    directory = read(graph, scope=Scope((), (staff,), mapped_groups=(staff,)))

    assert {u.source_id for u in directory.users if staff in u.groups} == set(ids[:3])
    assert graph.counts["transitive"] == 1
