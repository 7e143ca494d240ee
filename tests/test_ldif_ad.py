"""The ldif source reads an Active Directory export as AD means it (issue 13): primary groups by objectSid or,
without the users' SIDs, by RID; only user accounts (no contacts, computers or trust accounts)."""

from __future__ import annotations

from pathlib import Path

from adsync_plan.config import Scope
from adsync_plan.sources.ldif import read_directory
from tests import ldifgen
from tests.cases.make_cases import DOMAIN_SID, DOMAIN_USERS, sid

OTHER_DOMAIN_SID = "S-1-5-21-11-22-33"


def read(tmp_path: Path, people: list[str], domain_users_sid) -> dict[str, frozenset[str]]:
    group = {"objectClass": ["top", "group"], "cn": "Domain Users", "objectSid": domain_users_sid}
    text = ldifgen.document([*people, ldifgen.entry(DOMAIN_USERS, group)])
    (tmp_path / "d.ldif").write_text(text, encoding="utf-8")
    directory = read_directory({"path": "d.ldif"}, Scope((), (DOMAIN_USERS,)), {}, tmp_path)
    return {u.account: u.groups for u in directory.users}


def user(n: int, account: str, **attrs) -> str:
    return ldifgen.user(n, account, sAMAccountName=account, **attrs)[1]


def test_primary_group_by_the_users_domain_or_by_rid(tmp_path):
    people = [
        user(1, "withsid", primaryGroupID="513", objectSid=sid(1101)),
        user(2, "ridonly", primaryGroupID="513"),  # an export without the users' objectSid
        user(3, "otherdomain", primaryGroupID="513", objectSid=f"{OTHER_DOMAIN_SID}-1103"),  # its own Domain Users
        user(4, "guests", primaryGroupID="514", objectSid=sid(1104)),
        user(5, "noprimary"),
    ]
    for domain_users_sid in (sid(513), f"{DOMAIN_SID}-513"):  # binary as ldifde writes it, or as text
        groups = read(tmp_path, people, domain_users_sid)
        members = {account for account, names in groups.items() if DOMAIN_USERS.lower() in names}
        assert members == {"withsid", "ridonly"}


def test_only_user_accounts_are_users(tmp_path):
    people = [
        user(1, "person"),
        user(2, "typed", sAMAccountType="805306368"),
        user(3, "TRUST$", sAMAccountType="805306370"),  # an interdomain trust account: class user, no person
    ]
    contact = {"objectClass": ["top", "person", "organizationalPerson", "contact"], "cn": "c", "mail": "c@x.org"}
    people.append(ldifgen.entry(f"CN=c,OU=Staff,{ldifgen.BASE}", contact))
    assert sorted(read(tmp_path, people, sid(513))) == ["person", "typed"]
