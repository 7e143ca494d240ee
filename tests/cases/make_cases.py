"""Write the inputs of the golden cases: one folder per rule, each with adsync.yaml, directory.ldif, pbx.yaml.

    python tests/cases/make_cases.py              # inputs only
    UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py   # then regenerate expected_* and review the diff

Every case shares one small company: a PBX with internal numbers 10-39 and 90, the external block
+49702227978 10-39 (and fax 99), an administrator (0001) and a door phone (90).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from adsync_plan.files import render_document  # noqa: E402
from tests import ldifgen  # noqa: E402

PREFIX = "+49702227978"
ADMINS = f"CN=PBX-Admins,OU=Groups,{ldifgen.BASE}"
USERS = f"CN=PBX-Users,OU=Groups,{ldifgen.BASE}"

CONFIG = {
    "version": 1,
    "source": {"type": "ldif", "path": "directory.ldif"},
    "scope": {"admin_groups": [ADMINS], "user_groups": [USERS], "nested_groups": True},
    "numbering": {"country": "DE", "trunk_prefix": "0", "blocks": [{"external_prefix": PREFIX, "internal_prefix": ""}]},
    "rules": {"on_invalid_number": "hold_user"},
    "pbx": {"type": "file", "path": "pbx.yaml", "licenses": 50},
    "protect": {"logins": ["0001", "90"]},
    "ownership": "all",
    "safety": {"max_orphans": 5, "min_source_ratio": 0.5},
    "plan": {"ttl": "24h"},
}

ADMIN = {
    "id": 1,
    "login_id": "0001",
    "first_name": "Admin",
    "last_name": "STARFACE",
    "email": "admin@example.com",
    "is_admin": True,
    "primary_internal_number": None,
}
DOOR = {
    "id": 2,
    "login_id": "90",
    "first_name": "Tür",
    "last_name": "Sprechstelle",
    "email": "tuer@example.com",
    "is_admin": False,
    "primary_internal_number": "90",
}


def person(n, account, first="Vor", last=None, mail=None, phones=("",), uac=512, groups=(USERS,), **extra):
    """A directory user as data, (dn, attributes); `phones` are telephoneNumber then otherTelephone values."""
    last = last if last is not None else account.capitalize()
    mail = mail if mail is not None else f"{account}@example.com"
    attrs = {"sAMAccountName": account or None, "givenName": first or None, "sn": last or None, "mail": mail or None}
    phones = [p for p in phones if p]
    if phones:
        attrs["telephoneNumber"] = phones[0]
    if phones[1:]:
        attrs["otherTelephone"] = phones[1:]
    attrs.update(extra)
    attrs["memberOf"] = list(groups)
    return ldifgen.user_entry(n, f"{first or 'X'} {last or account or n}", uac=uac, **attrs)


def contact(n, cn, mail, phone, groups=(USERS,)):
    """An Active Directory contact: a person without an account (objectClass contact, not user)."""
    first, last = cn.split(" ", 1)
    attrs = {
        "objectClass": ["top", "person", "organizationalPerson", "contact"],
        "cn": cn,
        "objectGUID": ldifgen.guid(n, "contact").bytes_le,
        "givenName": first,
        "sn": last,
        "mail": mail,
        "telephoneNumber": phone,
        "memberOf": list(groups),
    }
    return f"CN={cn},OU=Staff,{ldifgen.BASE}", attrs


def computer(n, name, groups=(USERS,)):
    """A computer account: objectClass user too (computer derives from it), but never a person to phone."""
    attrs = {
        "objectClass": ["top", "person", "organizationalPerson", "user", "computer"],
        "cn": name,
        "objectGUID": ldifgen.guid(n, "computer").bytes_le,
        "sAMAccountName": f"{name}$",
        "userAccountControl": "4096",  # WORKSTATION_TRUST_ACCOUNT
        "memberOf": list(groups),
    }
    return f"CN={name},OU=Staff,{ldifgen.BASE}", attrs


DOMAIN_SID = "S-1-5-21-1004336348-1177238915-682003330"  # the example domain's SID, as an export shows it
DOMAIN_USERS = f"CN=Domain Users,CN=Users,{ldifgen.BASE}"


def sid(rid: int) -> bytes:
    """objectSid in the binary form an ldifde export base64-encodes."""
    revision, authority, *subs = (int(p) for p in f"{DOMAIN_SID}-{rid}".split("-")[1:])
    return bytes([revision, len(subs)]) + authority.to_bytes(6, "big") + b"".join(s.to_bytes(4, "little") for s in subs)


def domain_user(n, account, phones, groups=()):
    """A user as AD exports one: its own objectSid, and Domain Users (RID 513) as primary group, which
    its memberOf never lists."""
    return person(n, account, phones=phones, groups=groups, objectSid=sid(1000 + n), primaryGroupID="513")


def domain_users_entries(people: list[tuple[str, dict]], inside: str | None = None) -> list[tuple[str, dict]]:
    """The usual groups and Domain Users (in CN=Users, with its well-known RID), nested in `inside`."""
    users_members = [DOMAIN_USERS] if inside == USERS else []
    domain_users = {
        "objectClass": ["top", "group"],
        "cn": "Domain Users",
        "objectGUID": ldifgen.guid(513, "group").bytes_le,
        "objectSid": sid(513),
        "sAMAccountName": "Domain Users",
        "groupType": "-2147483646",
    }
    groups = [
        ldifgen.group_entry("PBX-Admins", [], n=1),
        ldifgen.group_entry("PBX-Users", users_members, n=2),
        (DOMAIN_USERS, domain_users),
    ]
    return [*people, *groups]


def directory_entries(people: list[tuple[str, dict]], nested_user_groups: bool = False) -> list[tuple[str, dict]]:
    """Every entry of a case's directory as data: the people, then the groups."""
    groups = [ldifgen.group_entry("PBX-Admins", [], n=1)]
    if nested_user_groups:  # PBX-Users > Abteilung > Team: three deep
        team = f"CN=Team,OU=Groups,{ldifgen.BASE}"
        groups.append(ldifgen.group_entry("PBX-Users", [f"CN=Abteilung,OU=Groups,{ldifgen.BASE}"], n=2))
        groups.append(ldifgen.group_entry("Abteilung", [team], n=3))
        groups.append(ldifgen.group_entry("Team", [], n=4))
    else:
        groups.append(ldifgen.group_entry("PBX-Users", [], n=2))
    return [*people, *groups]


def directory(people: list[tuple[str, dict]], nested_user_groups: bool = False) -> str:
    """The case's directory.ldif, written from the data by ldifgen (never read back by the project's parser)."""
    return ldifgen.document([ldifgen.entry(dn, attrs) for dn, attrs in directory_entries(people, nested_user_groups)])


def case_entries(name: str) -> list[tuple[str, dict]]:
    """The entries of a case's directory.ldif as data: what tests seed Samba and the Graph tenant from, so
    that a bug of the LDIF parser cannot cancel out in "ldap result == ldif result"."""
    return spec_entries(cases()[name])


def spec_entries(spec: dict) -> list[tuple[str, dict]]:
    make = spec.get("entries") or (lambda people: directory_entries(people, spec.get("nested", False)))
    return [*make(spec["people"]), *spec.get("extra_groups", ())]


def group_dn(name: str) -> str:
    return f"CN={name},OU=Groups,{ldifgen.BASE}"


def group_key(name: str) -> str:
    """The binding key of the PBX group mapped from directory group `name` (adsync_plan.rules.groups)."""
    return f"map:{group_dn(name).lower()}"


def pbx_group(gid: int, name: str, members=()) -> dict:
    return {"id": gid, "name": name, "members": list(members)}


LINEAGE = "00000000-0000-4000-8000-000000000016"


def snapshot(pbx_file: dict, group_bindings: dict) -> dict:
    """states/pbx.yaml as apply leaves it after it made the case's groups: the PBX of pbx.yaml and the group
    bindings (the only thing plan takes from it besides the lineage)."""
    from adsync_plan.model import PbxAccount, PbxGroup, PbxNumber, PbxState
    from adsync_plan.state import canonical, fingerprint

    accounts = [
        PbxAccount(
            str(u["id"]),
            u["login_id"],
            u["first_name"],
            u["last_name"],
            u["email"],
            u["is_admin"],
            u["primary_internal_number"],
        )
        for u in pbx_file["users"]
    ]
    numbers = {
        n["number"]: PbxNumber(n["type"], None if n["owner"] is None else str(n["owner"]), n["service"])
        for n in pbx_file["numbers"]
    }
    groups = {
        str(g["id"]): PbxGroup(
            g["name"],
            tuple(sorted(str(m) for m in g["members"])),
            tuple(sorted(n for n, info in numbers.items() if info.owner == f"group:{g['id']}")),
        )
        for g in pbx_file.get("groups", ())
    }
    state = PbxState.from_parts(accounts, numbers)
    state = PbxState(state.users, state.admins, state.numbers, groups)
    return {
        "format_version": 1,
        "lineage": LINEAGE,
        "serial": 1,
        "fingerprint": fingerprint(state),
        "pbx": {"type": "file", "path": "pbx.yaml"},
        **canonical(state),
        "bindings": {},
        "group_bindings": group_bindings,
    }


def inventory(owners: dict | None = None) -> list[dict]:
    owners = owners or {}
    numbers = []
    for n in [*range(10, 40), 90]:
        for number, kind in ((str(n), "internal"), (f"{PREFIX}{n}", "external")):
            owner, service = owners.get(number, (None, None))
            numbers.append({"number": number, "type": kind, "owner": owner, "service": service})
    owner, service = owners.get(PREFIX + "99", (None, None))
    numbers.append({"number": PREFIX + "99", "type": "external", "owner": owner, "service": service})
    return numbers


def pbx(users=(), owners=None, groups=()) -> dict:
    owners = {"90": (2, "standard"), **(owners or {})}
    out = {"format_version": 1, "users": [ADMIN, DOOR, *users], "numbers": inventory(owners)}
    if groups:
        out["groups"] = list(groups)
    return out


def pbx_user(uid, login, first, last, email, primary=None, admin=False):
    return {
        "id": uid,
        "login_id": login,
        "first_name": first,
        "last_name": last,
        "email": email,
        "is_admin": admin,
        "primary_internal_number": primary,
    }


def cases() -> dict[str, dict]:
    c = {}
    c["create_basic"] = dict(
        people=[
            person(
                10,
                "jmueller",
                "Jürgen",
                "Müller",
                phones=["+49 (7022) 27978-10", "31"],
                facsimileTelephoneNumber="+49 7022 27978-99",
                ipPhone="555",
                pager="777",
                mobile="+49 171 1",
            ),
            person(11, "aschulz", "Anna", "Schulz", phones=["11"], groups=[ADMINS]),
            person(
                12, "zoe", "Zoë", "Ångström", phones=["07022 2797812"], groups=[f"CN=Team,OU=Groups,{ldifgen.BASE}"]
            ),
        ],
        nested=True,
    )
    c["r1_missing_fields"] = dict(
        people=[
            person(10, "nofirst", first="", phones=["10"]),
            person(11, "nolast", last="", phones=["11"]),
            person(12, "", mail="noaccount@example.com", phones=["12"]),
            person(13, "nomail", mail="", phones=["13"]),
            person(14, "complete", phones=["14"]),
        ]
    )
    c["r2_duplicate_email"] = dict(
        people=[
            person(10, "one", mail="same@example.com", phones=["10"]),
            person(11, "two", mail="SAME@example.com", phones=["11"]),
            person(12, "three", phones=["12"]),
        ]
    )
    c["r3_scope"] = dict(
        people=[
            person(10, "leiterin", phones=["10"], groups=[ADMINS]),
            person(11, "both", phones=["11"], groups=[ADMINS, USERS]),
            person(12, "nested", phones=["12"], groups=[f"CN=Team,OU=Groups,{ldifgen.BASE}"]),
            person(13, "outside", phones=["13"], groups=[f"CN=Other,OU=Groups,{ldifgen.BASE}"]),
            person(14, "disabled", phones=["14"], uac=514),
        ],
        nested=True,
    )
    c["r3_direct_only"] = dict(
        people=[
            person(12, "nested", phones=["12"], groups=[f"CN=Team,OU=Groups,{ldifgen.BASE}"]),
            person(13, "direct", phones=["13"]),
        ],
        nested=True,
        config={"scope": {"nested_groups": False}},
    )
    c["r4_license_limit"] = dict(
        people=[person(10 + i, f"user{i}", phones=[str(10 + i)]) for i in range(5)],
        config={"pbx": {"licenses": 5}},
    )
    c["r5_reserved"] = dict(
        people=[
            person(10, "emergency", phones=["110"]),
            person(11, "service", phones=["116117"]),
            person(12, "trunk", phones=["05"]),
            person(13, "extra", phones=["1995"]),
            person(14, "fine", phones=["14"]),
        ],
        config={"numbering": {"reserved_extra": ["199x"]}},
    )
    c["r6_login_collision"] = dict(
        people=[
            person(10, "newcomer", phones=["21"]),
            person(11, "twin1", phones=["22"]),
            person(12, "twin2", phones=["+49 7022 27978-22"]),
            person(13, "keeper", phones=["23"]),
        ],
        pbx=pbx([pbx_user(21, "21", "Alt", "Besitzer", "alt@example.com", "21")], {"21": (21, "standard")}),
    )
    c["r7_invalid_number"] = dict(
        people=[
            person(10, "wrongblock", phones=["10", "+49 711 1234567"]),
            person(11, "garbage", phones=["11", "call me maybe"]),
            person(12, "fine", phones=["12"]),
        ]
    )
    c["r7_drop_number"] = dict(
        people=[person(10, "wrongblock", phones=["10", "+49 711 1234567"]), person(12, "fine", phones=["12"])],
        config={"rules": {"on_invalid_number": "drop_number"}},
    )
    c["r9_orphan"] = dict(
        people=[person(10, "newuser", phones=["+49 7022 27978-30"])],
        pbx=pbx(
            [
                pbx_user(20, "20", "Gone", "Away", "gone@example.com", "20"),
                pbx_user(21, "21", "Already", "-Orphaned", "old@example.com", "21"),
            ],
            {
                "20": (20, "standard"),
                PREFIX + "30": (20, "standard"),
                PREFIX + "99": (20, "fax"),
                "21": (21, "standard"),
            },
        ),
    )
    c["r10_protected"] = dict(
        people=[
            person(10, "boss", mail="admin@example.com", phones=["10"]),
            person(11, "door", mail="tuer@example.com", phones=["11"]),
            person(12, "normal", phones=["12"]),
        ],
    )
    c["r11_number_conflict"] = dict(
        people=[
            person(10, "groupnum", phones=["10"]),
            person(11, "adminnum", phones=["11"]),
            person(12, "first", phones=["12", "33"]),
            person(13, "second", phones=["13", "33"]),
            person(14, "fine", phones=["14"]),
            person(15, "heldone", first="", mail="held@example.com", phones=["35"]),
            person(16, "wants34", phones=["36", "34"]),
        ],
        pbx=pbx(
            [
                pbx_user(30, "0030", "Chef", "Admin", "chef@example.com", "11", admin=True),
                pbx_user(31, "35", "Held", "User", "held@example.com", "35"),
            ],
            {"10": ("group:7", "standard"), "11": (30, "standard"), "35": (31, "standard"), "34": (31, "standard")},
            # a group adsync-plan did not make (declared, as a STARFACE reads it: issue 16)
            [pbx_group(7, "Empfang")],
        ),
    )
    c["r12_no_internal_number"] = dict(
        people=[
            person(10, "nophone", phones=[]),
            person(11, "foreign", phones=["+49 30 1234567"]),
            person(12, "notonpbx", phones=["77"]),
            person(13, "fine", phones=["13"]),
        ]
    )
    c["r13_safety"] = dict(
        people=[person(10, "stays", phones=["10"])],
        pbx=pbx(
            [pbx_user(20 + i, str(20 + i), "Gone", f"User{i}", f"gone{i}@example.com", str(20 + i)) for i in range(7)],
            {str(20 + i): (20 + i, "standard") for i in range(7)},
        ),
    )
    c["r14_duplicate_account"] = dict(
        people=[
            person(10, "Dup", mail="dup1@example.com", phones=["10"]),
            person(11, "dup", mail="dup2@example.com", phones=["11"]),
            person(12, "unique", phones=["12"]),
        ]
    )
    c["ad_contact_in_scope_group"] = dict(
        people=[
            person(10, "employee", phones=["10"]),
            contact(11, "Extern Partner", "partner@example.org", "+49 7022 27978-11"),
            computer(12, "PC-EMPFANG"),
        ],
    )
    c["ad_domain_users_scope"] = dict(
        people=[
            domain_user(10, "everyone", ["10"]),
            domain_user(11, "chefin", ["11"], groups=[ADMINS]),
        ],
        entries=domain_users_entries,
        config={"scope": {"user_groups": [DOMAIN_USERS]}},
    )
    c["ad_domain_users_nested"] = dict(
        people=[
            domain_user(10, "everyone", ["10"]),
            domain_user(11, "chefin", ["11"], groups=[ADMINS]),
        ],
        entries=lambda people: domain_users_entries(people, inside=USERS),
    )
    c["update_matched"] = dict(
        people=[
            person(
                10,
                "mmuster",
                "Max",
                "Mustermann",
                mail="MAX.muster@example.com",
                phones=["+49 7022 27978-10", "31"],
                groups=[ADMINS],
            )
        ],
        pbx=pbx(
            [pbx_user(20, "10", "Max", "Muster", "max.muster@example.com", "10")],
            {"10": (20, "standard"), PREFIX + "11": (20, "standard")},
        ),
    )
    c["ownership_bound"] = dict(
        people=[person(10, "newuser", phones=["10"])],
        pbx=pbx([pbx_user(20, "20", "Manual", "User", "manual@example.com", "20")], {"20": (20, "standard")}),
        config={"ownership": "bound"},
    )
    c.update(group_cases())
    return c


VERTRIEB, SUPPORT = group_dn("Vertrieb"), group_dn("Support")
SHARED = "+49 7022 27978-20"


def group_cases() -> dict[str, dict]:
    """Issue 16: STARFACE groups for shared numbers and for mapped directory groups."""
    c = {}
    shared_people = [
        person(10, "empfang1", phones=["11", SHARED]),  # the reception line as a second number
        person(11, "empfang2", phones=["12", SHARED]),
        person(12, "nurzentrale", phones=[SHARED]),  # without the shared number: no internal number, held
        person(13, "solo", phones=["13"]),
    ]
    c["groups_shared_number"] = dict(
        people=shared_people,
        # the reception line belongs to a PBX user today: it moves to the group in the same apply
        pbx=pbx(
            [pbx_user(20, "20", "Vor", "Empfang1", "empfang1@example.com", "20")],
            {"20": (20, "standard"), PREFIX + "20": (20, "standard")},
        ),
        config={"pbx_groups": {"shared_numbers": "group", "shared_name": "Zentrale {number}"}},
    )
    c["groups_shared_hold"] = dict(people=shared_people, config={"pbx_groups": {"shared_numbers": "hold"}})
    c["groups_mapped"] = dict(
        people=[
            person(10, "anna", phones=["10"], groups=[USERS, VERTRIEB]),
            person(11, "bernd", phones=["11"], groups=[USERS, VERTRIEB, SUPPORT]),
            person(12, "carla", phones=["12"], groups=[VERTRIEB]),  # in the group, not in scope: no member
            person(13, "dieter", phones=["13", "+49 7022 27978-31"], groups=[USERS, SUPPORT]),
            person(14, "emil", mail="", phones=["14"], groups=[USERS, VERTRIEB]),  # held: no member
        ],
        extra_groups=[ldifgen.group_entry("Vertrieb", [], n=5), ldifgen.group_entry("Support", [], n=6)],
        config={
            "pbx_groups": {
                "map": [
                    # +...31 is dieter's number: it stays his, the group goes without it (reported)
                    {
                        "directory_group": VERTRIEB,
                        "name": "Vertrieb",
                        "numbers": ["+49 7022 27978-30", "30", "+49 7022 27978-31"],
                    },
                    {"directory_group": SUPPORT, "name": "Support"},
                ]
            }
        },
    )
    anna = pbx_user(20, "10", "Vor", "Anna", "anna@example.com", "10")
    bernd = pbx_user(21, "11", "Vor", "Bernd", "bernd@example.com", "11")
    c["groups_member_leaves"] = dict(
        people=[
            person(10, "anna", phones=["10"], groups=[USERS, VERTRIEB]),
            person(11, "bernd", phones=["11"]),  # left Vertrieb: no longer a member
            person(12, "clara", phones=["12"], groups=[USERS, VERTRIEB]),  # new: created, then made a member
        ],
        extra_groups=[ldifgen.group_entry("Vertrieb", [], n=5)],
        pbx=pbx(
            [anna, bernd],
            {"10": (20, "standard"), "11": (21, "standard"), "30": ("group:50", "standard")},
            [pbx_group(50, "Vertrieb", [20, 21])],
        ),
        group_bindings={group_key("Vertrieb"): "50"},
        config={"pbx_groups": {"map": [{"directory_group": VERTRIEB, "name": "Vertrieb", "numbers": ["30"]}]}},
    )
    c["groups_orphaned"] = dict(
        people=[
            person(10, "anna", phones=["10", "+49 7022 27978-35"], groups=[USERS, VERTRIEB]),  # freed by the orphan
            person(11, "bernd", phones=["11", "+49 7022 27978-36"]),  # a group the tool did not make keeps it
        ],
        extra_groups=[ldifgen.group_entry("Vertrieb", [], n=5)],
        pbx=pbx(
            [anna],
            {"10": (20, "standard"), PREFIX + "35": ("group:51", "standard"), PREFIX + "36": ("group:52", "standard")},
            [pbx_group(51, "Altgruppe", [20]), pbx_group(52, "Fremdgruppe", [20])],
        ),
        group_bindings={group_key("Altgruppe"): "51"},
        # the name is taken by the group the tool did not make (names are unique, whatever the case): held
        config={"pbx_groups": {"map": [{"directory_group": VERTRIEB, "name": "FREMDGRUPPE"}]}},
    )
    c["groups_nested"] = dict(
        people=[
            person(10, "anna", phones=["10"], groups=[USERS, group_dn("Vertrieb-Nord")]),  # a member through Nord
            person(11, "bernd", phones=["11"], groups=[USERS, VERTRIEB]),
            person(12, "carla", phones=["12"]),
        ],
        extra_groups=[
            ldifgen.group_entry("Vertrieb", [group_dn("Vertrieb-Nord")], n=5),
            ldifgen.group_entry("Vertrieb-Nord", [], n=7),
        ],
        config={"pbx_groups": {"map": [{"directory_group": VERTRIEB, "name": "Vertrieb"}]}},
    )
    return c


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_case(name: str, spec: dict) -> None:
    folder = HERE / name
    folder.mkdir(exist_ok=True)
    (folder / "adsync.yaml").write_text(json.dumps(merge(CONFIG, spec.get("config", {})), indent=2) + "\n")
    text = ldifgen.document([ldifgen.entry(dn, attrs) for dn, attrs in spec_entries(spec)])
    (folder / "directory.ldif").write_text(text, encoding="utf-8")
    (folder / "pbx.yaml").write_bytes(render_document(spec.get("pbx") or pbx()))
    if "group_bindings" in spec:
        (folder / "states").mkdir(exist_ok=True)
        state = snapshot(spec.get("pbx") or pbx(), spec["group_bindings"])
        (folder / "states" / "pbx.yaml").write_bytes(render_document(state))


def main() -> None:
    for name, spec in cases().items():
        write_case(name, spec)
    print(f"wrote {len(cases())} cases")


if __name__ == "__main__":
    main()
