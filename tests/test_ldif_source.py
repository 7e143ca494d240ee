"""The ldif source as a whole: a malformed or undecodable export, a scope group that is not in it and a group
recorded twice are one sentence naming the file (and line), and nothing is written."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest

from adsync_plan.config import Scope, load_config
from adsync_plan.errors import InputError
from adsync_plan.rules.directory import in_scope
from adsync_plan.sources import ldif
from adsync_plan.sources import read_directory as read_any
from tests.test_bad_input import replace_in, tree_digest

STAFF = "CN=Staff,OU=Groups,DC=x"
SCOPE = Scope(admin_groups=(), user_groups=(STAFF,))


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def user(n: int, *lines: str, member_of: tuple[str, ...] = (STAFF,)) -> str:
    head = [
        f"dn: CN=U{n},OU=People,DC=x",
        "objectClass: person",
        "objectClass: user",
        f"objectGUID:: {b64(uuid.UUID(int=n).bytes_le)}",
        f"sAMAccountName: u{n}",
    ]
    return "\n".join(head + [f"memberOf: {g}" for g in member_of] + list(lines)) + "\n"


def group(dn: str, *members: str) -> str:
    return "\n".join([f"dn: {dn}", "objectClass: top", "objectClass: group", *(f"member: {m}" for m in members)]) + "\n"


def read(tmp_path: Path, *records: str, scope: Scope = SCOPE, attributes=None, data: bytes | None = None):
    path = tmp_path / "d.ldif"
    path.write_bytes(data if data is not None else "\n".join(records).encode())
    directory = ldif.read_directory({"type": "ldif", "path": "d.ldif"}, scope, attributes or {}, tmp_path)
    return {u.account: u for u in directory.users}


def refused(tmp_path: Path, *records: str, line: int | None, words: tuple[str, ...] = (), **kwargs) -> str:
    with pytest.raises(InputError) as err:
        read(tmp_path, *records, **kwargs)
    message = str(err.value)
    where = str(tmp_path / "d.ldif") + (f":{line}: " if line else ": ")
    assert message.startswith(where), message
    for word in words:
        assert word in message, message
    return message


# --- the cases of issue 10, end to end ------------------------------------------------------------------------


def test_a_missing_empty_line_between_two_users_is_refused_not_a_lost_user(cli, demo):
    replace_in(demo / "directory.ldif", "mobile: +49 171 1234567\n\n", "mobile: +49 171 1234567\n")
    before = tree_digest(demo)
    for command in ("render", "plan"):
        code, out, err = cli(command, "-c", demo / "adsync.yaml")
        assert code == 1, out
        assert "directory.ldif:18: a second 'dn:' in the record that began at line 3" in err, err
        assert "Traceback" not in err and "bug" not in err
    assert tree_digest(demo) == before


def test_a_base64_last_name_that_is_not_utf8_is_a_located_error(cli, demo):
    replace_in(demo / "directory.ldif", "sn:: U2NocsO2ZGVy", "sn:: gA==")
    before = tree_digest(demo)
    code, _, err = cli("render", "-c", demo / "adsync.yaml")
    assert code == 1
    assert "directory.ldif:29: sn: the base64 value of CN=Anna Schröder,OU=Staff,DC=example,DC=com is not UTF-8" in err
    assert "bug" not in err and "Traceback" not in err and err.count("Error:") == 1
    assert tree_digest(demo) == before


def test_a_base64_mail_that_is_not_utf8_is_a_located_error_in_explain(cli, demo):
    replace_in(demo / "directory.ldif", "mail: anna.schroeder@example.com", "mail:: /w==")
    code, _, err = cli("explain", "-c", demo / "adsync.yaml", "aschroeder")
    assert code == 1
    assert "directory.ldif:30: mail: the base64 value of" in err and "(bytes ff)" in err and "bug" not in err


def test_a_misspelled_scope_group_refuses_the_plan_with_a_suggestion(cli, demo):
    replace_in(demo / "adsync.yaml", "CN=PBX-Users,OU=Groups", "CN=PBX-User,OU=Groups")
    before = tree_digest(demo)
    for command in ("render", "plan"):
        code, _, err = cli(command, "-c", demo / "adsync.yaml")
        assert code == 1
        assert "the scope group CN=PBX-User,OU=Groups,DC=example,DC=com (scope.user_groups) is not in the LDIF" in err
        assert "Did you mean CN=PBX-Users,OU=Groups,DC=example,DC=com?" in err
    assert tree_digest(demo) == before


def test_a_second_record_of_a_scope_group_is_refused(cli, demo):
    text = (demo / "directory.ldif").read_text(encoding="utf-8")
    (demo / "directory.ldif").write_text(
        text.rstrip("\n") + "\n\ndn: CN=PBX-Users,OU=Groups,DC=example,DC=com\nobjectClass: group\n"
        "member: CN=Paul Becker,OU=Staff,DC=example,DC=com\n",
        encoding="utf-8",
    )
    before = tree_digest(demo)
    code, _, err = cli("plan", "-c", demo / "adsync.yaml")
    assert code == 1
    assert "the group CN=PBX-Users,OU=Groups,DC=example,DC=com appears a second time (first at line 801)" in err
    assert tree_digest(demo) == before


# --- scope groups ----------------------------------------------------------------------------------------------


def test_a_scope_group_with_an_entry_of_its_own(tmp_path):
    users = read(tmp_path, group(STAFF, "CN=U1,OU=People,DC=x"), user(1, member_of=()))
    assert users["u1"].groups == {STAFF.lower()}


def test_a_scope_group_named_only_by_member_of_exists(tmp_path):
    assert read(tmp_path, user(1))["u1"].groups == {STAFF.lower()}


def test_a_scope_group_named_only_as_a_member_of_another_group_exists(tmp_path):
    users = read(tmp_path, group("CN=All,DC=x", STAFF), user(1, member_of=()))
    assert users["u1"].groups == frozenset()


def test_the_configured_spelling_of_a_scope_group_may_differ_in_case_and_blanks(tmp_path):
    scope = Scope(admin_groups=(), user_groups=("cn=staff, ou=groups, dc=x",))
    assert read(tmp_path, user(1), scope=scope)["u1"].groups == {STAFF.lower()}


def test_a_scope_group_that_is_nowhere_in_the_file(tmp_path):
    scope = Scope(admin_groups=("CN=Admins,OU=Groups,DC=x",), user_groups=(STAFF,))
    message = refused(
        tmp_path, user(1), scope=scope, line=None, words=("CN=Admins,OU=Groups,DC=x", "scope.admin_groups")
    )
    assert "Did you mean" not in message


def test_a_scope_group_in_the_wrong_ou_gets_a_suggestion(tmp_path):
    scope = Scope(admin_groups=(), user_groups=("CN=Staff,OU=Gruops,DC=x",))
    refused(tmp_path, user(1), scope=scope, line=None, words=("Did you mean CN=Staff,OU=Groups,DC=x?",))


def test_a_scope_group_that_names_a_user(tmp_path):
    scope = Scope(admin_groups=(), user_groups=("CN=U1,OU=People,DC=x",))
    refused(tmp_path, user(1), scope=scope, line=None, words=("an entry at line 1 that is not a group", "person"))


def test_an_empty_file_has_no_scope_group(tmp_path):
    refused(tmp_path, "", line=None, words=("is not in the LDIF file",))


def test_two_records_of_one_group_are_refused(tmp_path):
    first = group(STAFF, "CN=U1,OU=People,DC=x")
    second = group("cn=staff, ou=groups, dc=x", "CN=U2,OU=People,DC=x")
    refused(tmp_path, first, user(1), second, line=13, words=("appears a second time (first at line 1)",))


# --- encodings and values the tool reads as text ---------------------------------------------------------------


def test_a_utf16_export_is_named_as_such(tmp_path):
    data = "\ufeff".encode("utf-16-le") + user(1).encode("utf-16-le")
    refused(tmp_path, data=data, line=None, words=("UTF-16", "export it as UTF-8"))


def test_a_utf8_byte_order_mark_is_dropped(tmp_path):
    assert list(read(tmp_path, data=b"\xef\xbb\xbf" + user(1).encode())) == ["u1"]


def test_a_file_that_is_not_utf8_names_the_line(tmp_path):
    data = user(1).encode() + "sn: M\xfcller\n".encode("latin-1")
    refused(tmp_path, data=data, line=7, words=("not UTF-8", "0xfc"))


def test_binary_attributes_the_tool_does_not_read_are_fine(tmp_path):
    sid, photo = b64(b"\x01\x05\xff\xfe"), b64(b"\xff\xd8\xff")
    users = read(tmp_path, user(1, f"objectSid:: {sid}", f"jpegPhoto:: {photo}"))
    assert users["u1"].account == "u1"


def test_a_mapped_attribute_holding_binary_data_is_a_located_error(tmp_path):
    record = user(1, "thumbnailPhoto:: " + b64(b"\xff\xd8\xff\xe0"))
    refused(tmp_path, record, attributes={"email": "thumbnailPhoto"}, line=7, words=("thumbnailPhoto:", "ff d8 ff e0"))


def test_a_member_of_value_that_is_not_utf8(tmp_path):
    refused(tmp_path, user(1, "memberOf:: " + b64(b"CN=\xff")), line=7, words=("memberof:", "not UTF-8"))


def test_a_member_value_that_is_not_utf8(tmp_path):
    bad = group(STAFF) + "member:: " + b64(b"CN=\xfe") + "\n"
    refused(tmp_path, bad, line=4, words=("member:", "not UTF-8"))


def test_an_object_class_that_is_not_utf8(tmp_path):
    refused(tmp_path, user(1, "objectClass:: " + b64(b"\xc3")), line=7, words=("objectclass:",))


def test_a_user_without_object_guid_names_its_line(tmp_path):
    without = user(2).replace(f"objectGUID:: {b64(uuid.UUID(int=2).bytes_le)}\n", "")
    refused(tmp_path, user(1), without, line=8, words=("has no objectGUID",))


def test_a_user_with_folded_and_commented_lines_reads_as_written(tmp_path):
    record = user(1, "givenName: Jo\n hn", "# a comment\n folded", "sn:   Smith", "mail:: " + b64("jöhn@x"))
    found = read(tmp_path, record)["u1"]
    assert (found.first_name, found.last_name, found.email) == ("John", "Smith", "jöhn@x")


# --- mapped directory groups (pbx_groups.map, issue 16) --------------------------------------------------------

SALES, SALES_NORTH = "CN=Vertrieb,OU=Groups,DC=x", "CN=Vertrieb-Nord,OU=Groups,DC=x"


def read_mapped(tmp_path: Path, *mapped: str, nested: bool = True):
    """The directory of MAPPED_RECORDS read through a real configuration (load_config builds
    scope.mapped_groups from pbx_groups.map): scope STAFF, one PBX group per directory group of `mapped`.
    Returns the configuration and the users by account."""
    (tmp_path / "d.ldif").write_text("\n".join(MAPPED_RECORDS), encoding="utf-8")
    (tmp_path / "pbx.yaml").write_text("users: []\n", encoding="utf-8")
    entries = "".join(f"    - {{directory_group: '{dn}', name: 'G{n}'}}\n" for n, dn in enumerate(mapped))
    (tmp_path / "adsync.yaml").write_text(
        "version: 1\nsource: {type: ldif, path: d.ldif}\n"
        f"scope: {{admin_groups: [], user_groups: ['{STAFF}'], nested_groups: {str(nested).lower()}}}\n"
        "pbx: {type: file, path: pbx.yaml}\n"
        f"pbx_groups:\n  map:\n{entries}",
        encoding="utf-8",
    )
    config = load_config(tmp_path / "adsync.yaml")
    directory = read_any(config.source, config.scope, config.attributes, config.base_dir)
    return config, {u.account: u for u in directory.users}


MAPPED_RECORDS = (
    group(SALES, SALES_NORTH),
    group(SALES_NORTH),
    user(1, member_of=(STAFF, SALES)),  # in scope, in the mapped group directly
    user(2, member_of=(STAFF, SALES_NORTH)),  # in scope, in the mapped group through Vertrieb-Nord
    user(3, member_of=(SALES,)),  # in the mapped group only
    user(4, member_of=(STAFF,)),  # in neither
)


@pytest.mark.parametrize("nested", [True, False])
def test_a_mapped_group_is_among_its_members_groups_nested_or_directly(tmp_path, nested):
    _, users = read_mapped(tmp_path, "cn=vertrieb, ou=groups, dc=x", nested=nested)  # spelled unlike the file
    members = {account for account, u in users.items() if SALES.lower() in u.groups}
    assert members == ({"u1", "u2", "u3"} if nested else {"u1", "u3"})
    assert SALES_NORTH.lower() in users["u2"].groups  # its direct group, as before


def test_membership_in_a_mapped_group_alone_puts_nobody_in_scope(tmp_path):
    config, users = read_mapped(tmp_path, SALES)
    assert SALES.lower() in users["u3"].groups
    assert {account: in_scope(u, config) for account, u in users.items()} == {
        "u1": "user", "u2": "user", "u3": None, "u4": "user",
    }  # fmt: skip


def test_a_mapped_group_that_is_nowhere_in_the_file_is_refused_with_its_key(tmp_path):
    with pytest.raises(InputError) as err:
        read_mapped(tmp_path, SALES, "CN=Vertrieb-Nord,OU=Gruops,DC=x")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'd.ldif'}: the mapped group CN=Vertrieb-Nord,OU=Gruops,DC=x ")
    assert "(pbx_groups.map.1.directory_group) is not in the LDIF file" in message
    assert message.endswith(f"Did you mean {SALES_NORTH}?")
    assert "\n" not in message
