"""The ldap source against real servers: a Samba AD domain controller and OpenLDAP slapd (with AD's
1,000-entry size limit), both started by these tests on 127.0.0.x and seeded from tests/servers/ad_seed.py.

The servers are skipped only when they cannot be installed at all (no apt-get or not root); set
ADSYNC_REQUIRE_LDAP_SERVERS=1 (CI does) to make that a failure instead.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

import ldap3
import pytest
import trustme

from adsync_plan.config import Scope
from adsync_plan.errors import ConfigError, SourceError
from adsync_plan.explain import _answered_by
from adsync_plan.sources import ad
from adsync_plan.sources.ldap import endpoint_from, read_directory
from tests.servers import ad_seed, samba, slapd
from tests.servers.ad_seed import ADMINS, HOSTILE, PEOPLE, STAFF_ALL

PASSWORD_ENV = "ADSYNC_TEST_LDAP_PASSWORD"
SEED_SIZE = 2600
# ldap3 checks host names with ssl.match_hostname, which Python 3.11 marks deprecated (it still works)
pytestmark = pytest.mark.filterwarnings("ignore:ssl.match_hostname:DeprecationWarning")
SCOPE = Scope(admin_groups=(ADMINS,), user_groups=(STAFF_ALL, HOSTILE), nested_groups=True)


def _unavailable(reason: str):
    if os.environ.get("ADSYNC_REQUIRE_LDAP_SERVERS") == "1":
        pytest.fail(f"ADSYNC_REQUIRE_LDAP_SERVERS=1 but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def seed():
    return ad_seed.make_seed(SEED_SIZE)


@pytest.fixture(scope="session")
def dc(seed):
    try:
        domain = samba.start_domain(seed)
    except samba.Unavailable as err:
        _unavailable(f"Samba AD DC unavailable: {err}")
    yield domain
    domain.stop()


@pytest.fixture(scope="session")
def openldap(seed):
    try:
        server = slapd.start_slapd(seed)
    except samba.Unavailable as err:
        _unavailable(f"slapd unavailable: {err}")
    yield server
    server.stop()


@pytest.fixture
def reader_password(monkeypatch):
    def set_password(value: str) -> None:
        monkeypatch.setenv(PASSWORD_ENV, value)

    return set_password


def dc_settings(dc, **changes) -> dict:
    settings = {
        "type": "ldap",
        "url": dc.ldaps_url,
        "bind_dn": samba.READER_DN,
        "password_env": PASSWORD_ENV,
        "base_dn": PEOPLE,
        "ca_file": str(dc.ca_file),
        "tls_server_name": samba.SERVER_NAME,
        "page_size": 500,
        "timeout": 10,
    }
    settings.update(changes)
    return {k: v for k, v in settings.items() if v is not None}


def slapd_settings(server, **changes) -> dict:
    settings = {
        "type": "ldap",
        "url": server.ldaps_url,
        "bind_dn": slapd.READER_DN,
        "password_env": PASSWORD_ENV,
        "base_dn": PEOPLE,
        "ca_file": str(server.ca_file),
        "page_size": 1000,
        "timeout": 10,
    }
    settings.update(changes)
    return {k: v for k, v in settings.items() if v is not None}


def bare_settings(url: str, **changes) -> dict:
    """Settings for a server that is not a directory at all (nothing listening, or silent)."""
    settings = {
        "type": "ldap",
        "url": url,
        "bind_dn": "CN=x",
        "password_env": PASSWORD_ENV,
        "base_dn": PEOPLE,
    }
    return {**settings, **changes}


def read(settings, scope=SCOPE, attributes=None, progress=None, base_dir=None):
    kwargs = {"progress": progress} if progress else {}
    return read_directory(settings, scope, attributes or {}, base_dir or os.getcwd(), **kwargs)


class RecordingProgress:
    def __init__(self, on_advance=None):
        self.calls: list[tuple] = []
        self.on_advance = on_advance

    def start(self, label, total=None):
        self.calls.append(("start", label))

    def advance(self, n=1):
        self.calls.append(("advance", n))
        if self.on_advance:
            self.on_advance()

    def done(self):
        self.calls.append(("done",))

    def pages(self) -> list[int]:
        return [c[1] for c in self.calls if c[0] == "advance"]


def as_list(value) -> list[str]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def expected_numbers(attrs: dict, single: str, multi: str) -> tuple[list[str], list[str]]:
    return as_list(attrs.get(single)), as_list(attrs.get(multi))


def check_user(user, seeded: ad_seed.SeedUser) -> None:
    """One directory user against its seed entry: every SPEC 4 field."""
    a = seeded.attributes
    assert user.account == a["sAMAccountName"]
    assert user.first_name == a["givenName"] and user.last_name == a["sn"]
    assert user.email == a.get("mail")
    for field, single, multi in (
        ("phones", "telephoneNumber", "otherTelephone"),
        ("faxes", "facsimileTelephoneNumber", "otherFacsimileTelephoneNumber"),
    ):
        first, rest = expected_numbers(a, single, multi)
        got = list(getattr(user, field))
        # the single-valued attribute first; a multi-valued attribute's order is the server's
        assert got[: len(first)] == first, (user.account, field)
        assert sorted(got[len(first) :]) == sorted(rest), (user.account, field)
    ignored = {v for name in ("ipPhone", "pager", "mobile", "homePhone", "otherIpPhone") for v in as_list(a.get(name))}
    assert not ignored & set(user.phones + user.faxes)
    assert user.enabled == (int(a["userAccountControl"]) & 2 == 0)


def check_all(directory, seed) -> None:
    by_account = seed.by_account()
    expected = {u.account for u in seed.users if u.dn.endswith(PEOPLE)}
    assert sorted(u.account for u in directory.users) == sorted(expected)
    for user in directory.users:
        check_user(user, by_account[user.account])
        assert user.dn.lower() == by_account[user.account].dn.lower()


def scope_groups_of(user, scope) -> set[str]:
    configured = {g.lower() for g in (*scope.admin_groups, *scope.user_groups)}
    return configured & user.groups


def one_sentence(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message
    assert message.endswith(".") and message[0].isupper()


# --- Samba AD DC ---------------------------------------------------------------------------------------


def test_samba_every_spec4_mapping(dc, seed, reader_password):
    reader_password(samba.READER_PASSWORD)
    directory = read(dc_settings(dc))
    check_all(directory, seed)
    # the 3 users outside base_dn and the service account are not read
    assert len(directory.users) == SEED_SIZE
    by_account = {u.account: u for u in directory.users}
    # umlauts and non-Latin letters intact
    assert (by_account["u00000"].first_name, by_account["u00000"].last_name) == ("Jürgen", "Müller")
    assert (by_account["u00007"].first_name, by_account["u00007"].last_name) == ("Ольга", "Müller")
    assert by_account["u00008"].first_name == "美咲" and by_account["u00060"].last_name == "Παπαδόπουλος"
    # several numbers, disabled users, missing values
    assert len(by_account["u00030"].phones) == 3 and len(by_account["u00030"].faxes) == 3
    assert by_account["u00007"].enabled is False and by_account["u00008"].enabled is True
    assert by_account["u00003"].email is None and by_account["u00005"].phones == ()
    assert directory.attributes == ad.diagnostic_names(ad.DEFAULT_ATTRIBUTES)
    assert directory.origin == {
        "type": "ldap",
        "url": dc.ldaps_url,
        "base_dn": PEOPLE,
        "server": samba.SERVER_NAME,  # the domain controller that answered, from its rootDSE
        "port": "636",
    }


def test_samba_object_guid_is_the_string_windows_shows(dc, reader_password):
    """AD resolves <GUID=...> in the string form Windows shows: each source_id must find its own entry."""
    reader_password(samba.READER_PASSWORD)
    users = read(dc_settings(dc)).users
    assert all(str(uuid.UUID(u.source_id)) == u.source_id for u in users)
    assert len({u.source_id for u in users}) == len(users)
    conn = dc.admin_connection()
    for user in users[::130]:
        conn.search(f"<GUID={user.source_id}>", "(objectClass=*)", ldap3.BASE, attributes=["sAMAccountName"])
        assert conn.response[0]["raw_attributes"]["sAMAccountName"] == [user.account.encode()]
    conn.unbind()


def test_samba_pages_beyond_2500_users_with_a_small_page_size(dc, reader_password):
    reader_password(samba.READER_PASSWORD)
    progress = RecordingProgress()
    directory = read(dc_settings(dc, page_size=100), progress=progress)
    assert len(directory.users) == SEED_SIZE
    assert progress.pages() == [100] * 26  # one advance per page: the paged-results control was honoured
    assert progress.calls[0][0] == "start" and progress.calls[-1] == ("done",)


def test_samba_nested_scope_through_in_chain(dc, seed, reader_password):
    reader_password(samba.READER_PASSWORD)
    directory = read(dc_settings(dc))
    configured = {g.lower() for g in (ADMINS, STAFF_ALL, HOSTILE)}
    for user in directory.users:
        expected = {g.lower() for g in seed.chain_groups(seed.by_account()[user.account].dn)} & configured
        assert scope_groups_of(user, SCOPE) == expected, user.account
    members = {u.account for u in directory.users if STAFF_ALL.lower() in u.groups}
    assert members == seed.members(STAFF_ALL, nested=True)
    assert "u00150" in members  # Staff-Team ∈ Staff-Dept ∈ Staff-All: three deep
    assert len(members) > 2000


def test_samba_direct_scope_uses_member_of_only(dc, seed, reader_password):
    reader_password(samba.READER_PASSWORD)
    scope = Scope(admin_groups=(ADMINS,), user_groups=(STAFF_ALL, HOSTILE), nested_groups=False)
    directory = read(dc_settings(dc), scope=scope)
    for group in (ADMINS, STAFF_ALL, HOSTILE):
        members = {u.account for u in directory.users if group.lower() in u.groups}
        assert members == seed.members(group, nested=False), group
    assert "u00150" not in {u.account for u in directory.users if STAFF_ALL.lower() in u.groups}


def test_samba_hostile_group_dn_is_escaped(dc, seed, reader_password):
    """CN=Ops (Nord) * \\ Süd: parentheses, an asterisk and a backslash in the filter value."""
    reader_password(samba.READER_PASSWORD)
    for nested, size in ((True, 20), (False, 10)):
        scope = Scope(admin_groups=(), user_groups=(HOSTILE,), nested_groups=nested)
        directory = read(dc_settings(dc), scope=scope)
        members = {u.account for u in directory.users if HOSTILE.lower() in u.groups}
        assert members == seed.members(HOSTILE, nested=nested)
        assert len(members) == size


def test_samba_scope_group_spelled_differently(dc, seed, reader_password):
    """The configuration may write a group DN in another case and with blanks after the commas."""
    reader_password(samba.READER_PASSWORD)
    spelled = ", ".join(STAFF_ALL.lower().split(","))  # cn=staff-all, ou=groups, dc=example, dc=test
    directory = read(dc_settings(dc), scope=Scope(admin_groups=(), user_groups=(spelled,)))
    normalised = STAFF_ALL.lower()  # the form the rules compare in: lower case, no blanks around commas
    members = {u.account for u in directory.users if normalised in u.groups}
    assert members == seed.members(STAFF_ALL, nested=True)


def test_samba_starttls_with_the_domains_certificate(dc, seed, reader_password):
    reader_password(samba.READER_PASSWORD)
    directory = read(dc_settings(dc, url=dc.ldap_url, start_tls=True))
    check_all(directory, seed)


@pytest.mark.parametrize("url_kind", ["ldaps", "starttls"])
def test_samba_untrusted_certificate_is_refused(dc, reader_password, tmp_path, url_kind):
    reader_password(samba.READER_PASSWORD)
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    tls = {"url": dc.ldaps_url} if url_kind == "ldaps" else {"url": dc.ldap_url, "start_tls": True}
    for changes in (
        {"ca_file": str(other_ca)},  # signed by a CA we do not trust
        {"ca_file": None},  # the system store does not know Samba's self-made CA
        {"tls_server_name": None},  # the right CA, but the certificate does not name 127.0.0.x
    ):
        with pytest.raises(SourceError) as err:
            read(dc_settings(dc, **tls, **changes))
        message = str(err.value)
        one_sentence(message)
        assert "certificate" in message and "could not be verified" in message


def test_samba_ca_file_that_is_no_certificate(dc, reader_password, tmp_path):
    reader_password(samba.READER_PASSWORD)
    garbage = tmp_path / "ca.pem"
    garbage.write_text("this is not a PEM certificate\n")
    with pytest.raises(ConfigError) as err:
        read(dc_settings(dc, ca_file=str(garbage)))
    one_sentence(str(err.value))
    assert str(garbage) in str(err.value) and "no PEM certificate" in str(err.value)


def test_samba_wrong_password(dc, reader_password, caplog):
    secret = "Wr0ng!Secret-Value"
    reader_password(secret)
    with caplog.at_level(logging.DEBUG), pytest.raises(SourceError) as err:
        read(dc_settings(dc))
    assert not any(secret in r.getMessage() for r in caplog.records)
    message = str(err.value)
    one_sentence(message)
    assert "rejected the bind" in message and samba.READER_DN in message
    assert secret not in message and samba.READER_PASSWORD not in message


def test_samba_missing_base_dn(dc, reader_password):
    reader_password(samba.READER_PASSWORD)
    with pytest.raises(SourceError) as err:
        read(dc_settings(dc, base_dn=f"OU=Nowhere,{ad_seed.DOMAIN}"))
    one_sentence(str(err.value))
    assert "base DN" in str(err.value) and "OU=Nowhere" in str(err.value) and "does not exist" in str(err.value)


def test_samba_missing_scope_group(dc, reader_password):
    reader_password(samba.READER_PASSWORD)
    missing = f"CN=PBX-Typo,{ad_seed.GROUPS}"
    with pytest.raises(SourceError) as err:
        read(dc_settings(dc), scope=Scope(admin_groups=(ADMINS,), user_groups=(missing,)))
    one_sentence(str(err.value))
    assert missing in str(err.value) and "scope group" in str(err.value) and "(scope.user_groups)" in str(err.value)


@pytest.mark.parametrize(
    ("configured", "meant"),
    [
        (f"CN=Staff-All,{PEOPLE}", STAFF_ALL),  # the right group in the wrong OU
        (f"CN=Staff-Al,{ad_seed.GROUPS}", STAFF_ALL),  # a typo in the CN
    ],
)
def test_samba_missing_scope_group_suggests_the_group_meant(dc, reader_password, configured, meant):
    reader_password(samba.READER_PASSWORD)
    with pytest.raises(SourceError) as err:
        read(dc_settings(dc), scope=Scope(admin_groups=(ADMINS,), user_groups=(configured,)))
    one_sentence(str(err.value).replace("?", "."))
    assert configured in str(err.value) and str(err.value).endswith(f"Did you mean {meant}?")


def test_samba_a_mapped_attribute_holding_bytes_that_are_not_utf8_is_a_located_error(dc, reader_password):
    """Samba refuses bytes that are not UTF-8 in a string attribute (sn); they reach the tool when a field is
    mapped to a binary attribute (attributes: email: thumbnailPhoto)."""
    reader_password(samba.READER_PASSWORD)
    ou = f"OU=Undecodable,{ad_seed.DOMAIN}"
    dn = f"CN=Photo Only,{ou}"
    admin = dc.admin_connection()
    try:
        admin.add(ou, ["top", "organizationalUnit"])
        admin.add(dn, ad_seed.USER_CLASSES, {"sAMAccountName": "photoonly", "thumbnailPhoto": b"\xff\xd8\xff\xe0"})
        with pytest.raises(SourceError) as err:
            read(dc_settings(dc, base_dn=ou), attributes={"email": "thumbnailPhoto"})
        one_sentence(str(err.value))
        assert dn in str(err.value) and "thumbnailPhoto value that is not UTF-8" in str(err.value)
        assert "ff d8 ff e0" in str(err.value)
    finally:
        admin.delete(dn)
        admin.delete(ou)
        admin.unbind()


def test_samba_refuses_simple_bind_without_encryption(dc, reader_password):
    reader_password(samba.READER_PASSWORD)
    with pytest.raises(SourceError) as err:  # adsync-plan itself refuses to send the password
        read(dc_settings(dc, url=dc.ldap_url))
    one_sentence(str(err.value))
    assert "unencrypted" in str(err.value)
    with pytest.raises(SourceError) as err:  # with allow_insecure, Samba refuses (as AD can)
        read(dc_settings(dc, url=dc.ldap_url, allow_insecure=True))
    one_sentence(str(err.value))
    assert "without encryption" in str(err.value)


# --- connection failures without a directory -----------------------------------------------------------


# --- values that are not UTF-8, without a server ------------------------------------------------------------------


def _mapped(dn: str, raw: dict, attributes=None):
    from adsync_plan.sources.ldap import ScopeGroups, _PageMapper

    mapper = _PageMapper(ad.attribute_map(attributes or {}), ScopeGroups({}, {}))
    return mapper.map([{"dn": dn, "raw_attributes": raw}])


GUID_BYTES = uuid.UUID(int=7).bytes_le


def test_a_string_attribute_that_is_not_utf8_names_the_entry_and_the_attribute():
    with pytest.raises(SourceError) as err:
        _mapped("CN=A,DC=x", {"objectGUID": [GUID_BYTES], "sn": [b"M\xfcller"]})
    one_sentence(str(err.value))
    message = str(err.value)
    assert "CN=A,DC=x" in message and "sn value that is not UTF-8 text (bytes 4d fc 6c 6c 65 72)" in message


def test_a_member_of_value_that_is_not_utf8_is_an_error_too():
    with pytest.raises(SourceError) as err:
        _mapped("CN=A,DC=x", {"objectGUID": [GUID_BYTES], "memberOf": [b"CN=\xff"]})
    assert "memberOf value" in str(err.value)


def test_a_binary_source_id_is_shown_in_hex_not_refused():
    [user] = _mapped("CN=A,DC=x", {"objectSid": [b"\x01\x05\xff"]}, {"source_id": "objectSid"})
    assert user.source_id == "0105ff"


def test_a_dn_that_is_not_utf8_is_refused():
    dn = b"CN=M\xfcller,DC=x".decode("utf-8", "surrogateescape")  # as the lean decoder passes it on
    with pytest.raises(SourceError) as err:
        _mapped(dn, {"objectGUID": [GUID_BYTES]})
    one_sentence(str(err.value))
    assert "DN is not UTF-8" in str(err.value) and "\\udcfc" in str(err.value)


def test_unreachable_server(reader_password, closed_port):
    reader_password("whatever")
    port = closed_port  # bound, never listening
    with pytest.raises(SourceError) as err:
        read(bare_settings(f"ldaps://127.0.0.1:{port}", timeout=2))
    one_sentence(str(err.value))
    assert "Cannot reach" in str(err.value) and str(port) in str(err.value)


@pytest.mark.parametrize("scheme", ["ldaps", "ldap"])
def test_silent_server_times_out(reader_password, scheme):
    """A server that accepts the connection but never answers: the timeout ends the wait."""
    reader_password("whatever")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        accepted = []
        threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
        port = listener.getsockname()[1]
        settings = bare_settings(f"{scheme}://127.0.0.1:{port}", timeout=1, allow_insecure=True)
        with pytest.raises(SourceError) as err:
            read(settings)
    one_sentence(str(err.value))
    assert "did not answer within 1 s" in str(err.value)


def test_password_variable_must_be_set(monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(ConfigError) as err:
        read(bare_settings("ldaps://127.0.0.1:1"))
    assert PASSWORD_ENV in str(err.value)


# --- slapd: AD's 1,000-entry size limit -----------------------------------------------------------------


def test_slapd_plain_search_hits_the_size_limit_but_the_paged_read_gets_everyone(openldap, seed, reader_password):
    conn = ldap3.Connection(
        ldap3.Server("127.0.0.1", port=openldap.ldap_port),
        slapd.READER_DN,
        slapd.READER_PASSWORD,
        auto_bind=ldap3.AUTO_BIND_TLS_BEFORE_BIND,
    )
    conn.search(PEOPLE, "(objectClass=person)", attributes=["sAMAccountName"])
    assert conn.result["description"] == "sizeLimitExceeded"
    assert len(conn.response) == slapd.SIZE_LIMIT
    conn.unbind()

    reader_password(slapd.READER_PASSWORD)
    for page_size in (1000, 300):
        progress = RecordingProgress()
        directory = read(slapd_settings(openldap, page_size=page_size), progress=progress)
        check_all(directory, seed)
        assert len(directory.users) == SEED_SIZE > slapd.SIZE_LIMIT
        assert max(progress.pages()) <= page_size and sum(progress.pages()) == SEED_SIZE
        # slapd keeps the objectGUID of the seed: the string form is uuid(bytes_le) of it
        by_account = seed.by_account()
        assert all(u.source_id == str(by_account[u.account].guid) for u in directory.users)


def test_slapd_only_the_mapped_attributes_are_requested(openldap, reader_password):
    reader_password(slapd.READER_PASSWORD)
    before = openldap.log_file.read_text(errors="replace")
    read(slapd_settings(openldap), scope=Scope((ADMINS,), (), nested_groups=False))
    new_lines = openldap.log_file.read_text(errors="replace")[len(before) :].splitlines()
    requested = [line.split("SRCH attr=", 1)[1].split() for line in new_lines if "SRCH attr=" in line]
    wanted = ad.requested_attributes(ad.DEFAULT_ATTRIBUTES)
    assert sorted(wanted, key=str.lower) in [sorted(r, key=str.lower) for r in requested]
    assert not any({"ipPhone", "pager", "mobile", "*"} & set(r) for r in requested)
    assert any("scope=2" in line and 'base="ou=People' in line for line in new_lines)


def test_slapd_attribute_override(openldap, seed, reader_password):
    """attributes: phones: [mobile] reads mobile instead (the FAQ's default ignores it)."""
    reader_password(slapd.READER_PASSWORD)
    directory = read(slapd_settings(openldap), attributes={"phones": ["mobile"]})
    by_account = seed.by_account()
    for user in directory.users[:200]:
        assert list(user.phones) == as_list(by_account[user.account].attributes.get("mobile"))
    assert directory.attributes["phones"] == "mobile"


def test_slapd_plain_ldap_only_with_allow_insecure_and_a_warning(openldap, seed, reader_password, caplog):
    reader_password(slapd.READER_PASSWORD)
    with pytest.raises(SourceError):
        read(slapd_settings(openldap, url=openldap.ldap_url))
    with caplog.at_level(logging.WARNING, logger="adsync_plan.sources.ldap"):
        directory = read(slapd_settings(openldap, url=openldap.ldap_url, allow_insecure=True))
    assert len(directory.users) == SEED_SIZE
    assert any("not encrypted" in r.getMessage() for r in caplog.records)
    assert not any(slapd.READER_PASSWORD in r.getMessage() for r in caplog.records)


def test_a_read_that_fails_halfway_fails_as_a_whole(seed, reader_password):
    """The server dies after the first page: SourceError, never a partial directory."""
    try:
        server = slapd.start_slapd(seed)
    except samba.Unavailable as err:
        _unavailable(f"slapd unavailable: {err}")
    try:
        reader_password(slapd.READER_PASSWORD)
        progress = RecordingProgress(on_advance=server.kill)
        with pytest.raises(SourceError) as err:
            read(slapd_settings(server, page_size=500), progress=progress)
        one_sentence(str(err.value))
        assert "partial" in str(err.value)
        assert progress.pages() == [500] and progress.calls[-1] == ("done",)
    finally:
        server.stop()


# --- Active Directory as it really is: primary groups -------------------------------------------------

CASE_GROUPS = "OU=Groups,DC=example,DC=com"
PBX_USERS, TEAM = f"CN=PBX-Users,{CASE_GROUPS}", f"CN=Team,{CASE_GROUPS}"


@pytest.fixture(scope="module")
def case_dc():
    """A domain holding the r3_scope case (PBX-Users ∋ Abteilung ∋ Team), for tests that change it."""
    from tests.cases.make_cases import case_entries

    try:
        domain = samba.start_domain_from_entries(case_entries("r3_scope"))
    except samba.Unavailable as err:
        _unavailable(f"Samba AD DC unavailable: {err}")
    yield domain
    domain.stop()


def set_primary_group(domain, user_cn: str, group_dn: str) -> None:
    """What an administrator does in "Member Of > Set Primary Group": the user must be a member already."""
    conn = domain.admin_connection()
    conn.search(group_dn, "(objectClass=group)", ldap3.BASE, attributes=["primaryGroupToken"])
    token = conn.response[0]["raw_attributes"]["primaryGroupToken"][0].decode()
    user_dn = f"CN={user_cn},OU=Staff,DC=example,DC=com"
    assert conn.modify(user_dn, {"primaryGroupID": [(ldap3.MODIFY_REPLACE, [token])]}), conn.result
    conn.search(user_dn, "(objectClass=user)", ldap3.BASE, attributes=["memberOf"])
    # the premise: AD lists the primary group in neither memberOf nor the group's member
    assert group_dn.lower() not in {g.lower() for g in conn.response[0]["attributes"]["memberOf"]}
    conn.unbind()


@pytest.mark.parametrize("global_catalog", [False, True], ids=["domain controller", "global catalog"])
@pytest.mark.parametrize("nested", [False, True])
def test_samba_a_scope_group_as_primary_group_is_membership(case_dc, reader_password, nested, global_catalog):
    """primaryGroupID = the RID of a scope group makes a member, directly; and with nested groups, through
    every group containing the group (Team ∈ Abteilung ∈ PBX-Users). A domain controller holds one domain: the
    RID tells the group; a global catalog holds the forest: the user's objectSid tells the domain."""
    reader_password(samba.READER_PASSWORD)
    set_primary_group(case_dc, "Vor Both", PBX_USERS)
    set_primary_group(case_dc, "Vor Nested", TEAM)
    settings = dc_settings(
        case_dc,
        base_dn="OU=Staff,DC=example,DC=com",
        bind_dn=case_dc.reader_dn,
        tls_server_name=case_dc.server_name,
        global_catalog=global_catalog,
    )
    directory = read(settings, scope=Scope((), (PBX_USERS,), nested_groups=nested))
    members = {u.account for u in directory.users if PBX_USERS.lower() in u.groups}
    # "disabled" is a member through memberOf; "both" and "nested" only through their primary group
    assert members == ({"both", "disabled", "nested"} if nested else {"both", "disabled"})
    assert next(u for u in directory.users if u.account == "nested").groups >= ({TEAM.lower()} if nested else set())


def test_samba_contacts_and_computers_are_no_users(case_dc, reader_password):
    """A contact (objectClass person, not user) and a computer (class user) in OU=Staff are not read."""
    conn = case_dc.admin_connection()
    contact = "CN=Extern Partner,OU=Staff,DC=example,DC=com"
    conn.add(contact, ["top", "person", "organizationalPerson", "contact"], {"mail": "p@example.org"})
    conn.add("CN=PC1,OU=Staff,DC=example,DC=com", ["top", "person", "organizationalPerson", "user", "computer"],
             {"sAMAccountName": "PC1$", "userAccountControl": 4096})  # fmt: skip
    conn.modify(PBX_USERS, {"member": [(ldap3.MODIFY_ADD, [contact])]})
    conn.unbind()
    reader_password(samba.READER_PASSWORD)
    settings = dc_settings(
        case_dc, base_dn="OU=Staff,DC=example,DC=com", bind_dn=case_dc.reader_dn, tls_server_name=case_dc.server_name
    )
    accounts = sorted(u.account for u in read(settings, scope=Scope((), (PBX_USERS,))).users)
    assert accounts == ["both", "disabled", "leiterin", "nested", "outside"]


# --- ldap3 upgrades: the lean decoding only with a tested ldap3 ---------------------------------------


def test_samba_lean_decoding_only_with_a_tested_ldap3_and_the_fallback_reads_the_same(dc, reader_password, monkeypatch):
    """The source's own entry decoding relies on ldap3 2.9's message layout. It runs with the installed ldap3
    (if this fails after an ldap3 upgrade: run this test and benchmarks/ldap_scale.py with the new version, then
    add it to LEAN_DECODING_TESTED); any other version gets ldap3's own decoding, which reads the same."""
    from adsync_plan.sources import ldap as ldap_source

    reader_password(samba.READER_PASSWORD)
    calls = []
    lean_decoding = ldap_source._decode_entries_lean
    monkeypatch.setattr(ldap_source, "_decode_entries_lean", lambda conn: calls.append(lean_decoding(conn)))
    lean = read(dc_settings(dc))
    assert len(calls) == 1, f"ldap3 {ldap3.__version__} is not among the versions the lean decoding was tested with"
    monkeypatch.setattr(ldap_source, "LEAN_DECODING_TESTED", frozenset({"2.9.0"}))
    plain = read(dc_settings(dc))
    assert len(calls) == 1  # not used with an untested version
    assert len(plain.users) == SEED_SIZE
    assert plain == lean  # every field of every user, the groups included


# --- forests: the global catalog -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("ldaps://dc.example.com", 3269),
        ("ldap://dc.example.com", 3268),
        ("ldaps://gc.example.com:3269", 3269),
        ("ldaps://gc-proxy.example.com:13269", 13269),
    ],
)
def test_global_catalog_port(url, port, tmp_path):
    assert endpoint_from({"url": url, "global_catalog": True}, tmp_path).port == port
    assert endpoint_from({"url": url}, tmp_path).port == (port if ":" in url[8:] else 636 if "ldaps" in url else 389)


@pytest.mark.parametrize("url", ["ldaps://dc.example.com:636", "ldap://dc.example.com:389"])
def test_global_catalog_on_a_domain_controllers_own_port_is_refused(url, tmp_path):
    with pytest.raises(ConfigError) as err:
        endpoint_from({"url": url, "global_catalog": True}, tmp_path)
    one_sentence(str(err.value))
    assert "source.global_catalog" in str(err.value) and "3269" in str(err.value)


def test_samba_global_catalog_reads_the_forest(dc, seed, reader_password, monkeypatch):
    """Samba is a global catalog of its one-domain forest (ports 3268/3269): the same users and groups as from
    the domain's own port, nested groups searched under the forest's root (the empty DN), and the origin (and
    explain) says which server and port answered."""
    from adsync_plan.sources import ldap as ldap_source

    reader_password(samba.READER_PASSWORD)
    bases = []
    pages = ldap_source._Reader.pages
    monkeypatch.setattr(
        ldap_source._Reader, "pages", lambda self, base, *a: (bases.append(base), pages(self, base, *a))[1]
    )
    domain = read(dc_settings(dc))
    # in the groups' domain: one search finding the 3 scope groups, one telling which of them hold groups, and
    # the in-chain search of the two that do (Staff-All, Ops); then the users
    assert bases == [ad_seed.DOMAIN] * 4 + [PEOPLE]
    bases.clear()
    forest = read(dc_settings(dc, global_catalog=True))
    assert bases == [""] * 4 + [PEOPLE]
    assert forest.users == domain.users
    assert forest.origin == {**domain.origin, "port": "3269", "global_catalog": "true"}
    assert _answered_by(forest.origin) == [
        f"  read from:  {samba.SERVER_NAME} port 3269 (global catalog: the whole forest)"
    ]


def test_slapd_is_no_global_catalog(openldap, reader_password):
    reader_password(slapd.READER_PASSWORD)
    with pytest.raises(SourceError) as err:
        read(slapd_settings(openldap, global_catalog=True))
    one_sentence(str(err.value))
    assert "no global catalog" in str(err.value) and "source.global_catalog: false" in str(err.value)


# --- mapped directory groups (pbx_groups.map, issue 16) ----------------------------------------------------------

CANTEEN = ad_seed.UNRELATED  # no scope group: u00000 (an admin) is in it, u00040 only in it
MAPPED_SCOPE = Scope(
    admin_groups=(ADMINS,), user_groups=(ad_seed.STAFF_TEAM,), nested_groups=True,
    mapped_groups=(CANTEEN, ad_seed.STAFF_DEPT, HOSTILE),
)  # fmt: skip


def role_of(user, scope):
    """The role R3 gives the user under `scope` (None: out of scope), by the rules' own function."""
    from dataclasses import replace

    from adsync_plan.config import load_config
    from adsync_plan.rules.directory import in_scope
    from tests.cases.make_cases import HERE as CASES

    return in_scope(user, replace(load_config(CASES / "r3_scope" / "adsync.yaml"), scope=scope))


def counted_searches(monkeypatch) -> list[str]:
    """The base of every LDAP search the source sends (one per page of a paged search)."""
    from adsync_plan.sources import ldap as ldap_source

    bases: list[str] = []
    search = ldap_source._Reader._search
    monkeypatch.setattr(
        ldap_source._Reader, "_search", lambda self, base, *a: (bases.append(base), search(self, base, *a))[1]
    )
    return bases


@pytest.mark.parametrize("nested", [True, False])
def test_samba_mapped_groups_of_each_user_directly_or_nested(dc, seed, reader_password, nested):
    """Every mapped group a user is in is among its groups, in the configuration's lowered form; Staff-Dept
    holds Staff-Team (u00150 is in Staff-Dept only through it), the hostile DN holds Ops-Sub."""
    reader_password(samba.READER_PASSWORD)
    scope = Scope(**{**MAPPED_SCOPE.__dict__, "nested_groups": nested})
    directory = read(dc_settings(dc), scope=scope)
    for group in scope.mapped_groups:
        members = {u.account for u in directory.users if group.lower() in u.groups}
        assert members == seed.members(group, nested=nested), group
    by_account = {u.account: u for u in directory.users}
    assert (ad_seed.STAFF_DEPT.lower() in by_account["u00150"].groups) is nested
    assert role_of(by_account["u00151"], scope) == "user"  # in scope directly through Staff-Team (u00150 is disabled)
    assert {CANTEEN.lower(), ADMINS.lower()} <= by_account["u00000"].groups


def test_samba_a_mapped_group_alone_puts_nobody_in_scope(dc, reader_password):
    reader_password(samba.READER_PASSWORD)
    by_account = {u.account: u for u in read(dc_settings(dc), scope=MAPPED_SCOPE).users}
    assert CANTEEN.lower() in by_account["u00040"].groups
    assert role_of(by_account["u00040"], MAPPED_SCOPE) is None
    assert role_of(by_account["u00000"], MAPPED_SCOPE) == "admin"


def test_samba_a_missing_mapped_group_is_refused_with_its_key(dc, reader_password):
    reader_password(samba.READER_PASSWORD)
    typo = f"CN=Canten,{ad_seed.GROUPS}"
    scope = Scope(admin_groups=(ADMINS,), user_groups=(STAFF_ALL,), mapped_groups=(ad_seed.STAFF_DEPT, typo))
    with pytest.raises(SourceError) as err:
        read(dc_settings(dc), scope=scope)
    one_sentence(str(err.value).replace("?", "."))
    assert str(err.value).startswith(f"The mapped group {typo} (pbx_groups.map.1.directory_group) does not exist")
    assert str(err.value).endswith(f"Did you mean {CANTEEN}?")


@pytest.mark.parametrize("nested", [True, False])
def test_samba_a_mapped_group_as_primary_group_is_membership(case_dc, reader_password, nested):
    """primaryGroupID naming a mapped group (Team), or a group inside one (Team ∈ Abteilung), is membership
    as for scope groups: AD lists the primary group in neither memberOf nor the group's member."""
    reader_password(samba.READER_PASSWORD)
    set_primary_group(case_dc, "Vor Nested", TEAM)
    settings = dc_settings(
        case_dc, base_dn="OU=Staff,DC=example,DC=com", bind_dn=case_dc.reader_dn, tls_server_name=case_dc.server_name
    )
    department = f"CN=Abteilung,{CASE_GROUPS}"
    scope = Scope((), (PBX_USERS,), nested_groups=nested, mapped_groups=(TEAM, department))
    user = next(u for u in read(settings, scope=scope).users if u.account == "nested")
    assert TEAM.lower() in user.groups
    assert (department.lower() in user.groups) is nested


def test_slapd_mapped_groups_and_a_missing_one(openldap, seed, reader_password):
    """slapd (no in-chain rule; its memberOf is computed, transitively, by dynlist) gives the same mapped
    groups; a mapped group it does not have is refused the same way."""
    reader_password(slapd.READER_PASSWORD)
    directory = read(slapd_settings(openldap), scope=MAPPED_SCOPE)
    for group in MAPPED_SCOPE.mapped_groups:
        members = {u.account for u in directory.users if group.lower() in u.groups}
        assert members == seed.members(group, nested=True), group
    typo = f"CN=Staff-Dep,{ad_seed.GROUPS}"
    with pytest.raises(SourceError) as err:
        read(slapd_settings(openldap), scope=Scope((ADMINS,), (), mapped_groups=(CANTEEN, typo)))
    assert f"The mapped group {typo} (pbx_groups.map.1.directory_group) does not exist" in str(err.value)
    assert str(err.value).lower().endswith(f"did you mean {ad_seed.STAFF_DEPT.lower()}?")  # as slapd spells it


MANY = 150  # mapped groups: more than one batch (TERMS_PER_SEARCH) of them


@pytest.fixture(scope="module")
def many_groups(case_dc) -> list[str]:
    """MANY groups in the case domain: Mapped-000 holds Team (a group), Mapped-001 the user "both"."""
    conn = case_dc.admin_connection()
    dns = [f"CN=Mapped-{n:03d},{CASE_GROUPS}" for n in range(MANY)]
    members = {0: [TEAM], 1: ["CN=Vor Both,OU=Staff,DC=example,DC=com"]}
    for n, dn in enumerate(dns):
        attrs = {"sAMAccountName": f"mapped-{n:03d}", **({"member": members[n]} if n in members else {})}
        assert conn.add(dn, ["top", "group"], attrs), conn.result
    conn.unbind()
    return dns


@pytest.mark.parametrize("nested", [True, False])
def test_samba_many_mapped_groups_cost_a_few_searches_never_one_per_user(
    case_dc, many_groups, reader_password, monkeypatch, nested
):
    """150 mapped groups: batched searches find them (distinguishedName) and tell which hold a group
    (memberOf); only that one (Mapped-000 ∋ Team) gets an in-chain search. The user pages do not change."""
    from adsync_plan.sources.ldap import TERMS_PER_SEARCH

    reader_password(samba.READER_PASSWORD)
    settings = dc_settings(
        case_dc, base_dn="OU=Staff,DC=example,DC=com", bind_dn=case_dc.reader_dn, tls_server_name=case_dc.server_name
    )
    bases = counted_searches(monkeypatch)
    scope = Scope((), (PBX_USERS,), nested_groups=nested)
    plain = read(settings, scope=scope)
    before = list(bases)
    bases.clear()
    mapped = Scope((), (PBX_USERS,), nested_groups=nested, mapped_groups=tuple(many_groups))
    directory = read(settings, scope=mapped)
    more_batches = -(-(1 + MANY) // TERMS_PER_SEARCH) - 1  # 1 scope group + MANY mapped groups, per batch
    assert len(bases) - len(before) == (2 * more_batches + 1 if nested else more_batches)
    assert bases.count("OU=Staff,DC=example,DC=com") == before.count("OU=Staff,DC=example,DC=com")
    assert [u.source_id for u in directory.users] == [u.source_id for u in plain.users]
    members = {g: {u.account for u in directory.users if g.lower() in u.groups} for g in many_groups[:3]}
    assert members == {many_groups[0]: {"nested"} if nested else set(), many_groups[1]: {"both"}, many_groups[2]: set()}
