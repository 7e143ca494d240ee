"""Ranged values (issue 13, item 4): Active Directory returns at most MaxValRange (1,500) values of an
attribute per answer, as `memberOf;range=0-1499`, and the client must ask for the rest. Samba never does on
its own, so a proxy in front of it (tests/servers/ranging_proxy.py) cuts every attribute to 10 values per
answer, as AD would cut it to 1,500; the ldap source must still receive every value.
"""

from __future__ import annotations

import os

import pytest

from adsync_plan.config import Scope
from adsync_plan.sources import ldap as ldap_source
from tests import ldifgen
from tests.servers import samba
from tests.servers.ranging_proxy import RangingProxy

pytestmark = pytest.mark.filterwarnings("ignore:ssl.match_hostname:DeprecationWarning")
PASSWORD_ENV = "ADSYNC_TEST_LDAP_PASSWORD"
MAX_VALUES = 10
GROUPS = [f"CN=G{i:02d},OU=Groups,{ldifgen.BASE}" for i in range(35)]  # 10 + 10 + 10 + 5: four answers
STAFF = f"OU=Staff,{ldifgen.BASE}"


def directory_ldif() -> str:
    people = [
        ldifgen.user(1, "Many Groups", sAMAccountName="many", givenName="Many", sn="Groups", memberOf=GROUPS)[1],
        *(ldifgen.user(n, f"User {n}", sAMAccountName=f"user{n}", memberOf=[GROUPS[n]])[1] for n in range(2, 6)),
    ]
    groups = [ldifgen.group(dn.split(",")[0][3:], [], n=100 + i)[1] for i, dn in enumerate(GROUPS)]
    return ldifgen.document(people + groups)


@pytest.fixture(scope="module")
def ranged_dc():
    try:
        domain = samba.start_domain_from_ldif(directory_ldif())
    except samba.Unavailable as err:
        if os.environ.get("ADSYNC_REQUIRE_LDAP_SERVERS") == "1":
            pytest.fail(f"ADSYNC_REQUIRE_LDAP_SERVERS=1 but Samba is unavailable: {err}")
        pytest.skip(f"Samba AD DC unavailable: {err}")
    yield domain
    domain.stop()


def read_through(proxy: RangingProxy, domain, scope: Scope):
    settings = {
        "type": "ldap",
        "url": proxy.url,
        "bind_dn": domain.reader_dn,
        "password_env": PASSWORD_ENV,
        "base_dn": STAFF,
        "ca_file": str(domain.ca_file),
        "tls_server_name": domain.server_name,
        "page_size": 2,  # the ranged entry arrives within a page of several
        "timeout": 10,
    }
    return ldap_source.read_directory(settings, scope, {}, os.getcwd())


@pytest.mark.parametrize("lean", [True, False], ids=["lean decoding", "ldap3 decoding"])
@pytest.mark.parametrize("nested", [False, True])
def test_every_ranged_value_arrives(ranged_dc, monkeypatch, lean, nested):
    monkeypatch.setenv(PASSWORD_ENV, samba.READER_PASSWORD)
    if not lean:
        monkeypatch.setattr(ldap_source, "LEAN_DECODING_TESTED", frozenset())
    scope = Scope(admin_groups=(GROUPS[0],), user_groups=(GROUPS[-1],), nested_groups=nested)
    with RangingProxy(ranged_dc.ip, ranged_dc.root, MAX_VALUES) as proxy:
        directory = read_through(proxy, ranged_dc, scope)
    # memberOf of "many" came as 0-9, then 10-19 and 20-29 of the answers to the source's own requests
    assert proxy.ranged == 3
    users = {u.account: u for u in directory.users}
    assert sorted(users) == ["many", "user2", "user3", "user4", "user5"]
    assert {g.lower() for g in GROUPS} <= users["many"].groups  # every value, the last ranges included
    assert GROUPS[-1].lower() in users["many"].groups and GROUPS[0].lower() in users["many"].groups
    assert users["user2"].groups == {GROUPS[2].lower()}


def test_the_proxy_answers_as_active_directory_does(ranged_dc):
    """Without ldap3's auto_range, the first answer has 10 values named memberOf;range=0-9, and an explicit
    request for the rest gets the next 10: the proxy ranges as AD, not merely truncates."""
    import ssl

    import ldap3

    with RangingProxy(ranged_dc.ip, ranged_dc.root, MAX_VALUES) as proxy:
        server = ldap3.Server(
            "127.0.0.1", port=proxy.port, use_ssl=True, tls=ldap3.Tls(validate=ssl.CERT_NONE), get_info=ldap3.NONE
        )
        user = f"Administrator@{ranged_dc.realm.lower()}"
        conn = ldap3.Connection(
            server, user, samba.ADMIN_PASSWORD, auto_bind=True, auto_range=False, return_empty_attributes=False
        )
        dn = f"CN=Many Groups,{STAFF}"
        conn.search(dn, "(objectClass=user)", ldap3.BASE, attributes=["memberOf"])
        assert {k: len(v) for k, v in conn.response[0]["raw_attributes"].items()} == {"memberOf;range=0-9": 10}
        conn.search(dn, "(objectClass=user)", ldap3.BASE, attributes=["memberOf;range=30-*"])
        assert {k: len(v) for k, v in conn.response[0]["raw_attributes"].items()} == {"memberOf;range=30-*": 5}
        conn.unbind()
