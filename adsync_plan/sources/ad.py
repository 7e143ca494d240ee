"""Active Directory entries -> DirectoryUser: the attribute mapping of SPEC 4 shared by ldap and ldif.

An entry is a mapping of attribute name (any case) -> list of values (str, or bytes for binary values such
as objectGUID). Other phone attributes (ipPhone, otherIpPhone, pager, mobile, homePhone) are never read.
"""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Iterable, Mapping, Sequence

from adsync_plan.errors import SourceError
from adsync_plan.model import DirectoryUser

# normalised field -> AD attribute(s), in the order values are taken
DEFAULT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "source_id": ("objectGUID",),
    "account": ("sAMAccountName",),
    "first_name": ("givenName",),
    "last_name": ("sn",),
    "email": ("mail",),
    "phones": ("telephoneNumber", "otherTelephone"),
    "faxes": ("facsimileTelephoneNumber", "otherFacsimileTelephoneNumber"),
    "enabled": ("userAccountControl",),
}
ACCOUNTDISABLE = 0x2
# Persons that are not user accounts: a contact has no account, a computer's (and a managed service
# account's, which derives from computer) is no one's to phone with.
NOT_USERS = frozenset({"contact", "computer"})
SAM_NORMAL_USER_ACCOUNT = "805306368"  # sAMAccountType of a user account (not a computer, trust or group)
# attributes that hold a GUID as 16 bytes: objectGUID, and mS-DS-ConsistencyGuid (Entra Connect's anchor)
GUID_ATTRIBUTES = frozenset({"objectguid", "ms-ds-consistencyguid"})


def attribute_map(overrides: Mapping, defaults: Mapping = DEFAULT_ATTRIBUTES) -> dict[str, tuple[str, ...]]:
    """The defaults with the configuration's `attributes:` overrides applied."""
    out = dict(defaults)
    for field, value in (overrides or {}).items():
        out[field] = (value,) if isinstance(value, str) else tuple(value)
    return out


def requested_attributes(attrs: Mapping[str, Sequence[str]]) -> list[str]:
    """Exactly the attributes an LDAP search needs (plus memberOf for scope)."""
    names = [name for names in attrs.values() for name in names]
    return sorted(set(names) | {"memberOf"}, key=str.lower)


def is_user_account_type(values: Sequence[str]) -> bool:
    """True without a sAMAccountType (not every export has one), else only for a normal user account."""
    return not values or values[0].strip() == SAM_NORMAL_USER_ACCOUNT


def sid_bytes(value: str | bytes) -> bytes | None:
    """An objectSid as its binary form (MS-DTYP 2.4.2.2), from the bytes or the text form S-1-5-21-...;
    None for anything else. (An LDIF reader may hand over binary that happens to be UTF-8 as text.)"""
    if isinstance(value, bytes):
        return value if len(value) >= 12 else None
    parts = value.strip().split("-")
    if len(parts) < 3 or parts[0].upper() != "S" or not all(p.isdigit() for p in parts[1:]):
        return sid_bytes(value.encode("utf-8"))
    revision, authority, *subs = (int(p) for p in parts[1:])
    try:
        tail = b"".join(sub.to_bytes(4, "little") for sub in subs)
        return bytes([revision, len(subs)]) + authority.to_bytes(6, "big") + tail
    except OverflowError:
        return None


def rid(sid: bytes) -> int:
    """The relative identifier: the last sub-authority of a SID (a group's primaryGroupToken)."""
    return int.from_bytes(sid[-4:], "little")


def primary_group_sid(user_sid: bytes, primary_group_id: str) -> bytes | None:
    """The objectSid of a user's primary group: the user's domain (its own SID without the last part) and
    the group's RID from primaryGroupID. The primary group is always one of the user's own domain."""
    try:
        return user_sid[:-4] + int(primary_group_id).to_bytes(4, "little")
    except (ValueError, OverflowError):
        return None


def guid_string(value: str | bytes) -> str:
    """objectGUID as Windows shows it: the 16 bytes with the first three fields little-endian, lower case."""
    if isinstance(value, bytes) and len(value) == 16:
        # what str(uuid.UUID(bytes_le=value)) gives, at a third of the cost (one call per user)
        h = (value[3::-1] + value[5:3:-1] + value[7:5:-1] + value[8:]).hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return str(uuid.UUID(text.strip("{}")))


def _text(value: str | bytes) -> str:
    return value if type(value) is str else value.decode("utf-8")


def _values(entry: Mapping[str, list], names: Sequence[str]) -> tuple[str, ...]:
    out = []
    for name in _lowered(names):
        for value in entry.get(name) or ():
            text = (value if type(value) is str else value.decode("utf-8")).strip()  # _text, inlined: hot
            if text:
                out.append(text)
    return tuple(out)


def _first(entry: Mapping[str, list], names: Sequence[str]) -> str | None:
    for name in _lowered(names):
        for value in entry.get(name) or ():
            text = (value if type(value) is str else value.decode("utf-8")).strip()
            if text:
                return text
    return None


_LOWERED: dict[tuple[str, ...], tuple[str, ...]] = {}


def _lowered(names: Sequence[str]) -> tuple[str, ...]:
    """The attribute names in lower case, as entries hold them: worked out once per list of names, not per
    user (the names are the configuration's few tuples)."""
    try:
        return _LOWERED[names]
    except (KeyError, TypeError):  # a list is no key: lowered each time
        lowered = tuple(name.lower() for name in names)
        if type(names) is tuple:
            _LOWERED[names] = lowered
        return lowered


def _enabled(entry: Mapping[str, list], names: Sequence[str]) -> bool:
    raw = _first(entry, names)
    if raw is None:
        return True
    try:
        return not int(raw) & ACCOUNTDISABLE
    except ValueError:
        return True


def to_directory_user(dn: str, entry: Mapping[str, list], attrs: Mapping[str, Sequence[str]], groups) -> DirectoryUser:
    """Map one entry. `entry` keys must be lower case; `groups` are the user's group DNs (lower case)."""
    source_id = _source_id(entry, attrs["source_id"])
    if not source_id:
        names = "/".join(attrs["source_id"])
        raise SourceError(f"{dn}: the entry has no {names}; it cannot be bound to a PBX user.")
    return DirectoryUser(
        source_id=source_id,
        dn=dn,
        account=_first(entry, attrs["account"]),
        first_name=_first(entry, attrs["first_name"]),
        last_name=_first(entry, attrs["last_name"]),
        email=_first(entry, attrs["email"]),
        phones=_values(entry, attrs["phones"]),
        faxes=_values(entry, attrs["faxes"]),
        groups=groups if type(groups) is frozenset else frozenset(groups),
        enabled=_enabled(entry, attrs["enabled"]),
    )


def _source_id(entry: Mapping[str, list], names: Sequence[str]) -> str | None:
    """The first of the attributes with a value, lower case: a GUID attribute in the form Windows shows,
    any other as text (hexadecimal if it is binary)."""
    for name in names:
        key = name.lower()
        values = entry.get(key)
        if not values:
            continue
        if key in GUID_ATTRIBUTES:
            try:
                return guid_string(values[0])
            except ValueError:
                pass  # not a GUID after all: compare it as it is
        try:
            return _text(values[0]).strip().lower()
        except UnicodeDecodeError:
            return values[0].hex()
    return None


def diagnostic_names(attrs: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """field -> the attribute name(s) a diagnostic shows, e.g. phones -> "telephoneNumber/otherTelephone"."""
    return {field: "/".join(names) for field, names in attrs.items()}


def similar_dn(wanted: str, candidates: Iterable[str]) -> str | None:
    """The candidate DN that `wanted` most likely meant, for a "did you mean": the same first RDN elsewhere in
    the tree, or a first RDN spelled nearly alike in the same place. All DNs normalised (normalise_dn)."""
    head, _, tail = wanted.partition(",")
    best, best_score = None, 0.0
    for candidate in candidates:
        first, _, rest = candidate.partition(",")
        if first == head:
            score = 2.0
        elif rest == tail:
            score = difflib.SequenceMatcher(None, first, head).ratio()
        else:
            continue
        if score > best_score and score >= 0.75:
            best, best_score = candidate, score
    return best
