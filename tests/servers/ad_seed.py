"""A deterministic Active Directory seed shared by the Samba and slapd test servers.

`make_seed(n)` always gives the same users and groups for the same n: names with umlauts and non-Latin
letters, several numbers per user, disabled users, phone attributes that must be ignored (ipPhone, pager,
mobile, homePhone, otherIpPhone), nested groups three deep, a group whose DN holds `(`, `)`, `*` and `\\`,
and a few users outside OU=People (base_dn) who must never be read.

Tests compute what a source must return from the same seed (`expected_*`), so the seed is the single truth.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field

DOMAIN = "DC=example,DC=test"
REALM = "example.test"
PEOPLE = f"OU=People,{DOMAIN}"
ELSEWHERE = f"OU=Elsewhere,{DOMAIN}"
GROUPS = f"OU=Groups,{DOMAIN}"
SERVICE = f"OU=Service,{DOMAIN}"
USER_CLASSES = ["top", "person", "organizationalPerson", "user"]
GROUP_CLASSES = ["top", "group"]
ENABLED_UAC, DISABLED_UAC = 544, 546  # NORMAL_ACCOUNT|PASSWD_NOTREQD, plus ACCOUNTDISABLE (0x2)
GUID_NAMESPACE = uuid.UUID("6f1c0e5e-5a0b-4c1e-9a55-0d7e2f6b1a10")

FIRST = [
    "Jürgen",
    "Zoë",
    "Søren",
    "Çağla",
    "Anna",
    "Björn",
    "Δημήτρης",
    "Ольга",
    "美咲",
    "José",
    "Łukasz",
    "Renée",
]
LAST = [
    "Müller",
    "Ångström",
    "Straße",
    "Öztürk",
    "Schmidt",
    "Παπαδόπουλος",
    "Иванова",
    "山田",
    "Núñez",
    "Wójcik",
    "Østergård",
]

# Group names: the chain Staff-All ∋ Staff-Dept ∋ Staff-Team is three deep; the hostile one tests escaping.
ADMINS = f"CN=PBX-Admins,{GROUPS}"
STAFF_ALL = f"CN=Staff-All,{GROUPS}"
STAFF_DEPT = f"CN=Staff-Dept,{GROUPS}"
STAFF_TEAM = f"CN=Staff-Team,{GROUPS}"
HOSTILE = f"CN=Ops (Nord) * \\\\ Süd,{GROUPS}"  # CN value: Ops (Nord) * \ Süd
HOSTILE_SUB = f"CN=Ops-Sub,{GROUPS}"
UNRELATED = f"CN=Canteen,{GROUPS}"


@dataclass
class SeedUser:
    dn: str
    attributes: dict  # LDAP attribute -> str | list[str]
    guid: uuid.UUID  # what slapd stores; Samba assigns its own objectGUID

    @property
    def account(self) -> str:
        return self.attributes["sAMAccountName"]


@dataclass
class SeedGroup:
    dn: str
    name: str
    members: list[str] = field(default_factory=list)  # DNs of users and groups (inner groups come first)


@dataclass
class Seed:
    users: list[SeedUser]
    groups: list[SeedGroup]  # in creation order: a group's member groups exist before it

    def digest(self) -> str:
        data = {
            "users": [(u.dn, u.attributes) for u in self.users],
            "groups": [asdict(g) for g in self.groups],
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def by_account(self) -> dict[str, SeedUser]:
        return {u.account: u for u in self.users}

    def direct_groups(self, dn: str) -> set[str]:
        if not hasattr(self, "_parents"):
            self._parents: dict[str, set[str]] = {}
            for group in self.groups:
                for member in group.members:
                    self._parents.setdefault(member, set()).add(group.dn)
        return self._parents.get(dn, set())

    def chain_groups(self, dn: str) -> set[str]:
        """Every group the entry belongs to, at any depth."""
        found, todo = set(), [dn]
        while todo:
            for group in self.direct_groups(todo.pop()):
                if group not in found:
                    found.add(group)
                    todo.append(group)
        return found

    def members(self, group_dn: str, nested: bool, base: str = PEOPLE) -> set[str]:
        """Accounts of the users under `base` in a group (directly, or at any depth)."""
        return {
            u.account
            for u in self.users
            if u.dn.endswith(base) and group_dn in (self.chain_groups(u.dn) if nested else self.direct_groups(u.dn))
        }


def _phones(i: int) -> dict:
    out: dict = {}
    if i % 17 != 5:  # a few users have no main number at all
        out["telephoneNumber"] = f"+49 7022 27978-{i % 100:02d}{i // 100:03d}"
    if i % 3 == 0:
        out["otherTelephone"] = [f"{2000 + i}", f"+49 30 5550{i:05d}"]
    if i % 5 == 0:
        out["facsimileTelephoneNumber"] = f"+49 7022 27978-9{i:05d}"
    if i % 10 == 0:
        out["otherFacsimileTelephoneNumber"] = [f"+49 89 4440{i:05d}", f"+49 89 4441{i:05d}"]
    if i % 4 == 0:  # phone attributes the FAQ says to ignore
        out.update(
            ipPhone=f"7{i:05d}",
            pager=f"+49 160 1{i:06d}",
            mobile=f"+49 171 2{i:06d}",
            homePhone=f"+49 711 3{i:06d}",
            otherIpPhone=[f"8{i:05d}"],
        )
    return out


def _user(i: int, ou: str) -> SeedUser:
    given, sn = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
    sam = f"u{i:05d}"
    attrs = {
        "sAMAccountName": sam,
        "userPrincipalName": f"{sam}@{REALM}",
        "givenName": given,
        "sn": sn,
        "displayName": f"{given} {sn}",
        "userAccountControl": str(DISABLED_UAC if i % 13 == 7 else ENABLED_UAC),
        **_phones(i),
    }
    if i % 97 != 3:  # a few users have no e-mail address
        attrs["mail"] = f"{sam}@{REALM}"
    return SeedUser(f"CN={given} {sn} {sam},{ou}", attrs, uuid.uuid5(GUID_NAMESPACE, sam))


def make_seed(n: int = 2600) -> Seed:
    users = [_user(i, PEOPLE) for i in range(n)]
    outsiders = [_user(n + i, ELSEWHERE) for i in range(3)]
    dn = [u.dn for u in users]
    groups = [
        SeedGroup(ADMINS, "PBX-Admins", dn[0:10]),
        SeedGroup(STAFF_TEAM, "Staff-Team", dn[100:300]),
        SeedGroup(STAFF_DEPT, "Staff-Dept", [STAFF_TEAM, *dn[300:400]]),
        SeedGroup(STAFF_ALL, "Staff-All", [STAFF_DEPT, *dn[400 : n - 100], *(u.dn for u in outsiders)]),
        SeedGroup(HOSTILE_SUB, "Ops-Sub", dn[20:30]),
        SeedGroup(HOSTILE, "Ops-Hostile", [HOSTILE_SUB, *dn[10:20]]),
        SeedGroup(UNRELATED, "Canteen", dn[0:50:2]),
    ]
    return Seed(users + outsiders, groups)


def organizational_units() -> list[str]:
    return [PEOPLE, ELSEWHERE, GROUPS, SERVICE]


# --- LDIF (for slapadd) ---------------------------------------------------------------------------------


def _ldif_line(name: str, value: str | bytes) -> str:
    """RFC 2849: base64 for binary and non-ASCII values (and values starting with a space, colon or <)."""
    if isinstance(value, bytes):
        return f"{name}:: {base64.b64encode(value).decode()}"
    if not value.isascii() or value[:1] in (" ", ":", "<") or "\n" in value:
        return f"{name}:: {base64.b64encode(value.encode()).decode()}"
    return f"{name}: {value}"


def ldif_entry(dn: str, attributes: dict) -> str:
    lines = [_ldif_line("dn", dn)]
    for name, value in attributes.items():
        for one in value if isinstance(value, list) else [value]:
            lines.append(_ldif_line(name, one))
    return "\n".join(lines) + "\n"


def to_ldif(seed: Seed, suffix_entries: list[str] = ()) -> str:
    """The seed as LDIF for slapd (objectGUID stored from the seed, groups with member)."""
    chunks = list(suffix_entries)
    for ou in organizational_units():
        chunks.append(ldif_entry(ou, {"objectClass": ["top", "organizationalUnit"], "ou": ou[3:].split(",")[0]}))
    for user in seed.users:
        attrs = {"objectClass": USER_CLASSES, "cn": _cn(user.dn)}
        attrs.update(user.attributes)
        attrs["objectGUID"] = user.guid.bytes_le
        chunks.append(ldif_entry(user.dn, attrs))
    for group in seed.groups:
        attrs = {"objectClass": GROUP_CLASSES, "cn": _cn(group.dn), "sAMAccountName": group.name}
        if group.members:
            attrs["member"] = group.members
        chunks.append(ldif_entry(group.dn, attrs))
    return "\n".join(chunks)


def _cn(dn: str) -> str:
    """The unescaped value of a DN's first RDN (the seed only escapes backslashes)."""
    first = dn.split(",", 1)[0]  # no seed CN contains a comma
    return first.split("=", 1)[1].replace("\\\\", "\\")
