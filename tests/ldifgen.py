"""Write Active Directory style LDIF (as ldifde does): base64 for binary and non-ASCII values.

Shared by the demo generator, the golden cases, the benchmarks and the tests.
"""

from __future__ import annotations

import base64
import uuid

BASE = "DC=example,DC=com"


def guid(n: int, kind: str = "user") -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_OID, f"adsync-plan-{kind}-{n}")


def _safe(value: str) -> bool:
    return value.isascii() and not value.startswith((" ", ":", "<")) and not value.endswith(" ") and "\n" not in value


def attr_line(name: str, value: str | bytes) -> str:
    if isinstance(value, bytes):
        return f"{name}:: {base64.b64encode(value).decode()}"
    if _safe(value):
        return f"{name}: {value}"
    return f"{name}:: {base64.b64encode(value.encode()).decode()}"


def entry(dn: str, attrs: dict) -> str:
    lines = [attr_line("dn", dn)]
    for name, values in attrs.items():
        if values is None:
            continue
        for value in values if isinstance(values, list) else [values]:
            lines.append(attr_line(name, value))
    return "\n".join(lines) + "\n"


def user_entry(n: int, cn: str, ou: str = "OU=Staff", uac: int = 512, **attrs) -> tuple[str, dict]:
    """(dn, attributes) of a user, as data: attrs use AD names (sAMAccountName, givenName, telephoneNumber,
    ...); a value is a str, a list of str, bytes (objectGUID) or None (left out)."""
    dn = f"CN={cn},{ou},{BASE}"
    body = {
        "objectClass": ["top", "person", "organizationalPerson", "user"],
        "cn": cn,
        "objectGUID": guid(n).bytes_le,
        "userAccountControl": str(uac),
        **attrs,
    }
    return dn, {name: value for name, value in body.items() if value is not None}


def user(n: int, cn: str, ou: str = "OU=Staff", uac: int = 512, **attrs) -> tuple[str, str]:
    """(dn, LDIF text) of a user; attrs use AD names (sAMAccountName, givenName, telephoneNumber, ...)."""
    dn, body = user_entry(n, cn, ou, uac, **attrs)
    return dn, entry(dn, body)


def group_entry(name: str, members: list[str], ou: str = "OU=Groups", n: int = 0) -> tuple[str, dict]:
    dn = f"CN={name},{ou},{BASE}"
    body = {
        "objectClass": ["top", "group"],
        "cn": name,
        "objectGUID": guid(n, "group").bytes_le,
        "sAMAccountName": name,
        "member": members,
    }
    return dn, body


def group(name: str, members: list[str], ou: str = "OU=Groups", n: int = 0) -> tuple[str, str]:
    dn, body = group_entry(name, members, ou, n)
    return dn, entry(dn, body)


def document(entries: list[str]) -> str:
    return "version: 1\n\n" + "\n".join(entries)
