"""A fast, strict check that a snapshot document is valid (schemas/state.schema.json), for load_snapshot.

The compiled schema validator takes about 2 s of `plan`'s 100,000 users (a fifth of its time over its floor,
issue 15): it looks every pattern up and runs it per number. This check asks the same with str methods, and
is stricter where that is cheaper (types exactly, no trailing newline in a digit string). It only says
"valid for sure": on False (or any surprise) the schema validator runs, decides, and says what is wrong. So
a snapshot it does not know (a key added to the schema) is only slower, never accepted wrongly; tests hold
it no more lenient than the schema (tests/test_snapshot_check.py).
"""

from __future__ import annotations

from adsync_plan.model import SHAPE_FIELDS

TOP_REQUIRED = frozenset({"format_version", "lineage", "serial", "fingerprint", "users", "numbers", "bindings"})
TOP_KEYS = TOP_REQUIRED | {"pbx", "groups", "group_bindings"}
GROUP_KEYS = frozenset({"name", "members", "numbers"})
# a user has exactly these keys (all are required): the comparable shape and the admin flag
USER_KEYS = frozenset({*SHAPE_FIELDS, "is_admin"})
NUMBER_KEYS = frozenset({"type", "owner", "service"})
NUMBER_REQUIRED = frozenset({"type", "owner"})
ROLES = frozenset({"user", "admin"})
NUMBER_TYPES = frozenset({"internal", "external"})
SERVICES = frozenset({"standard", "fax"})
HEX = frozenset("0123456789abcdef")


def surely_valid(data) -> bool:
    """True only when `data` is a valid snapshot document; False when it may not be."""
    try:
        return _valid(data)
    except (TypeError, KeyError, AttributeError):  # e.g. a list where a string belongs: the schema says it
        return False


def _valid(data) -> bool:
    if type(data) is not dict or not (TOP_REQUIRED <= data.keys() <= TOP_KEYS):
        return False
    return (
        type(data["format_version"]) is int
        and data["format_version"] == 1
        and type(data["lineage"]) is str
        and data["lineage"] != ""
        and type(data["serial"]) is int
        and data["serial"] >= 0
        and _fingerprint(data["fingerprint"])
        and type(data.get("pbx", {})) is dict
        and _users(data["users"])
        and _numbers(data["numbers"])
        and type(data["bindings"]) is dict
        and all(type(v) is str for v in data["bindings"].values())
        and _groups(data.get("groups", {}))
        and type(data.get("group_bindings", {})) is dict
        and all(type(v) is str for v in data.get("group_bindings", {}).values())
    )


def _groups(groups) -> bool:
    """Groups (issue 16): a name and lists of strings; the schema asks no more of them."""
    if type(groups) is not dict:
        return False
    for group in groups.values():
        if type(group) is not dict or group.keys() != GROUP_KEYS or type(group["name"]) is not str:
            return False
        for key in ("members", "numbers"):
            if type(group[key]) is not list or not all(type(v) is str for v in group[key]):
                return False
    return True


def _users(users) -> bool:
    if type(users) is not dict:
        return False
    for user in users.values():  # one user after the other, the checks written out: 0.2 s at 100,000
        if type(user) is not dict or user.keys() != USER_KEYS:
            return False
        primary = user["primary_internal_number"]
        if not (
            _digits(user["login_id"])
            and type(user["first_name"]) is str
            and type(user["last_name"]) is str
            and type(user["email"]) is str
            and type(user["role"]) is str
            and user["role"] in ROLES
            and (primary is None or _digits(primary))
            and type(user["is_admin"]) is bool
            and _internal(user["internal_numbers"])
            and _external(user["external_numbers"])
            and _fax(user["fax_numbers"])
        ):
            return False
    return True


def _numbers(numbers) -> bool:
    if type(numbers) is not dict:
        return False
    for number in numbers.values():
        if type(number) is not dict or not (NUMBER_REQUIRED <= number.keys() <= NUMBER_KEYS):
            return False
        owner, service = number["owner"], number.get("service")
        if not (
            type(number["type"]) is str
            and number["type"] in NUMBER_TYPES
            and (owner is None or type(owner) is str)
            and (service is None or (type(service) is str and service in SERVICES))
        ):
            return False
    return True


def _digits(value) -> bool:
    """^[0-9]+$"""
    return type(value) is str and value.isdigit() and value.isascii()


def _joined(values) -> str | None:
    """A list's unique, non-empty strings joined, or None for anything else ("".join raises TypeError on an
    item that is not a string)."""
    if type(values) is not list or len(set(values)) != len(values) or not all(values):
        return None
    return "".join(values)


def _internal(values) -> bool:
    """Unique items of ^[0-9]+$."""
    joined = _joined(values)
    return joined is not None and (joined == "" or _digits(joined))


def _external(values) -> bool:
    """Unique items of ^\\+[0-9]{4,16}$: each starts with its only "+"."""
    joined = _joined(values)
    if not joined:
        return joined == ""
    return (
        joined.count("+") == len(values)
        and all(v[0] == "+" and 5 <= len(v) <= 17 for v in values)
        and _digits(joined.replace("+", ""))
    )


def _fax(values) -> bool:
    """Unique items of ^\\+?[0-9]+$."""
    joined = _joined(values)
    if not joined:
        return joined == ""
    return all(_digits(v[1:] if v[0] == "+" else v) for v in values)


def _fingerprint(value) -> bool:
    """^sha256:[0-9a-f]{64}$"""
    return type(value) is str and len(value) == 71 and value.startswith("sha256:") and HEX.issuperset(value[7:])
