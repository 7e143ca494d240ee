"""Regenerate the demo: directory.ldif (about 50 users of a German company) and pbx.yaml (a file PBX).

    python examples/demo/make_demo.py

The directory has nested groups three deep, umlauts, and a few users that break each rule; the PBX has a
number inventory, an administrator, a door phone, users to update and one to orphan.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from tests import ldifgen  # noqa: E402

PREFIX = "+49702227978"
NAMES = [
    ("Jürgen", "Müller"),
    ("Anna", "Schröder"),
    ("Björn", "Kühn"),
    ("Sophie", "Weiß"),
    ("Lukas", "Groß"),
    ("Marie", "Bäcker"),
    ("Felix", "Hoffmann"),
    ("Lena", "Schäfer"),
    ("Jonas", "Köhler"),
    ("Mia", "Wölfel"),
    ("Paul", "Becker"),
    ("Emma", "Schulz"),
    ("Leon", "Fuchs"),
    ("Hannah", "Lehmann"),
    ("Finn", "Krüger"),
    ("Lea", "Schmitt"),
    ("Noah", "Zimmermann"),
    ("Clara", "Braun"),
    ("Elias", "Hartmann"),
    ("Ida", "Lange"),
    ("Ben", "Werner"),
    ("Greta", "Jäger"),
    ("Emil", "Huber"),
    ("Frieda", "Vogel"),
    ("Anton", "Brandt"),
    ("Ella", "Haas"),
    ("Theo", "Dietrich"),
    ("Luisa", "Engel"),
    ("Oskar", "Kuhn"),
    ("Zoë", "Ångström"),
    ("Karl", "Straße"),
    ("Ayşe", "Öztürk"),
    ("Henrik", "Nußbaum"),
    ("Johanna", "Löffler"),
    ("Moritz", "Götze"),
    ("Paula", "Sommer"),
    ("Max", "Mustermann"),
    ("Erika", "Musterfrau"),
    ("Tim", "Seifert"),
    ("Nina", "Roth"),
]


# umlauts and other letters as German account names and e-mail addresses spell them
ASCII = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "ë": "e", "å": "a", "ş": "s", "Å": "A", "Ö": "O"})


def account(first: str, last: str) -> str:
    return f"{first[0]}{last}".translate(ASCII).lower()


def email(first: str, last: str) -> str:
    return f"{first}.{last}@example.com".translate(ASCII).lower()


def directory() -> str:
    entries, members = [], {"Vertrieb-Nord": [], "Technik": [], "PBX-Admins": [], "Staff": []}
    for n, (first, last) in enumerate(NAMES, start=10):
        ext = str(n + 10)  # 20..59
        attrs = {
            "sAMAccountName": account(first, last),
            "givenName": first,
            "sn": last,
            "mail": email(first, last),
            "telephoneNumber": f"+49 7022 27978-{ext}",
            "facsimileTelephoneNumber": None,
            "ipPhone": f"9{ext}",
            "mobile": "+49 171 1234567",
        }
        if n % 7 == 0:
            attrs["otherTelephone"] = [str(int(ext) + 40)]  # a second internal number (60..99)
        if n % 11 == 0:
            attrs["facsimileTelephoneNumber"] = f"07022 27978{ext}9"
        group = "Vertrieb-Nord" if n % 3 == 0 else "Technik" if n % 3 == 1 else "Staff"
        if n in (10, 11):
            group = "PBX-Admins"
        dn, text = ldifgen.user(n, f"{first} {last}", **attrs)
        members[group].append(dn)
        entries.append(text)
    entries += _rule_breakers(members)
    groups = [
        ldifgen.group("PBX-Admins", members["PBX-Admins"], n=1),
        ldifgen.group(
            "PBX-Users",
            [f"CN=Vertrieb,OU=Groups,{ldifgen.BASE}", f"CN=Technik,OU=Groups,{ldifgen.BASE}"] + members["Staff"],
            n=2,
        ),
        ldifgen.group("Vertrieb", [f"CN=Vertrieb-Nord,OU=Groups,{ldifgen.BASE}"], n=3),
        ldifgen.group("Vertrieb-Nord", members["Vertrieb-Nord"], n=4),
        ldifgen.group("Technik", members["Technik"], n=5),
    ]
    return ldifgen.document(entries + [text for _, text in groups])


def _rule_breakers(members) -> list[str]:
    """One user per rule the FAQ names, each in scope (a member of PBX-Users through Staff)."""
    cases = [
        (
            100,
            "Kein Vorname",
            {
                "sAMAccountName": "kvorname",
                "sn": "Vorname",
                "mail": "kein.vorname@example.com",
                "telephoneNumber": "+49 7022 27978-60",
            },
        ),  # R1: no givenName
        (
            101,
            "Ohne Mail",
            {
                "sAMAccountName": "omail",
                "givenName": "Otto",
                "sn": "Mail",
                "telephoneNumber": "+49 7022 27978-61",
            },
        ),  # R1: no mail
        (
            102,
            "Doppel Eins",
            {
                "sAMAccountName": "deins",
                "givenName": "Doppel",
                "sn": "Eins",
                "mail": "vertrieb@example.com",
                "telephoneNumber": "62",
            },
        ),  # R2
        (
            103,
            "Doppel Zwei",
            {
                "sAMAccountName": "dzwei",
                "givenName": "Doppel",
                "sn": "Zwei",
                "mail": "Vertrieb@example.com",
                "telephoneNumber": "63",
            },
        ),  # R2
        (
            104,
            "Not Ruf",
            {
                "sAMAccountName": "nruf",
                "givenName": "Notburga",
                "sn": "Ruf",
                "mail": "notburga.ruf@example.com",
                "telephoneNumber": "110",
            },
        ),  # R5
        (
            105,
            "Falsche Nummer",
            {
                "sAMAccountName": "fnummer",
                "givenName": "Fritz",
                "sn": "Nummer",
                "mail": "fritz.nummer@example.com",
                "telephoneNumber": "64",
                "otherTelephone": "+49 711 1234567",
            },
        ),  # R7: not on the PBX's lines
        (
            106,
            "Tür Kollision",
            {
                "sAMAccountName": "tkollision",
                "givenName": "Türkan",
                "sn": "Kollision",
                "mail": "tuerkan.kollision@example.com",
                "telephoneNumber": "90",
            },
        ),  # R6 door phone
        (
            107,
            "Ohne Nummer",
            {
                "sAMAccountName": "onummer",
                "givenName": "Olga",
                "sn": "Nummer",
                "mail": "olga.nummer@example.com",
                "telephoneNumber": "+49 30 1234567",
            },
        ),  # R12
    ]
    texts = []
    for n, cn, attrs in cases:
        dn, text = ldifgen.user(n, cn, **attrs)
        members["Staff"].append(dn)
        texts.append(text)
    # R3: not in any group; and a disabled member of a group
    texts.append(
        ldifgen.user(
            108,
            "Extern Berater",
            **{
                "sAMAccountName": "eberater",
                "givenName": "Ernst",
                "sn": "Berater",
                "mail": "ernst.berater@example.com",
                "telephoneNumber": "65",
            },
        )[1]
    )
    dn, text = ldifgen.user(
        109,
        "Ausgeschieden Alt",
        uac=514,
        **{
            "sAMAccountName": "aalt",
            "givenName": "Adele",
            "sn": "Alt",
            "mail": "adele.alt@example.com",
            "telephoneNumber": "66",
        },
    )
    members["Staff"].append(dn)
    texts.append(text)
    return texts


def pbx() -> dict:
    users = [
        {
            "id": 1,
            "login_id": "0001",
            "first_name": "Admin",
            "last_name": "STARFACE",
            "email": "admin@example.com",
            "is_admin": True,
            "primary_internal_number": None,
        },
        {
            "id": 2,
            "login_id": "90",
            "first_name": "Tür",
            "last_name": "Sprechstelle",
            "email": "tuer@example.com",
            "is_admin": False,
            "primary_internal_number": "90",
        },
        {
            "id": 3,
            "login_id": "20",
            "first_name": "Jürgen",
            "last_name": "Müller",
            "email": "juergen.mueller@example.com",
            "is_admin": False,
            "primary_internal_number": "20",
        },
        {
            "id": 4,
            "login_id": "21",
            "first_name": "Anna",
            "last_name": "Schröder-Alt",
            "email": "anna.schroeder@example.com",
            "is_admin": False,
            "primary_internal_number": "21",
        },
        {
            "id": 5,
            "login_id": "67",
            "first_name": "Gustav",
            "last_name": "Gegangen",
            "email": "gustav.gegangen@example.com",
            "is_admin": False,
            "primary_internal_number": "67",
        },
    ]
    owners = {
        "90": (2, "standard"),
        "20": (3, "standard"),
        "21": (4, "standard"),
        "67": (5, "standard"),
        PREFIX + "67": (5, "standard"),
        PREFIX + "21": (4, "standard"),
        "30": ("group:1", "standard"),
    }
    numbers = []
    for n in range(10, 100):
        for number, kind in ((str(n), "internal"), (PREFIX + str(n), "external")):
            owner, service = owners.get(number, (None, None))
            numbers.append({"number": number, "type": kind, "owner": owner, "service": service})
    for n in range(10, 100):
        numbers.append({"number": f"{PREFIX}{n}9", "type": "external", "owner": None, "service": None})
    return {"format_version": 1, "users": users, "numbers": numbers}


def main() -> None:
    from adsync_plan.files import render_document

    (HERE / "directory.ldif").write_text(directory(), encoding="utf-8")
    (HERE / "pbx.yaml").write_bytes(render_document(pbx()))
    print(json.dumps({"written": ["directory.ldif", "pbx.yaml"]}))


if __name__ == "__main__":
    main()
