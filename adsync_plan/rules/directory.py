"""The rules that need only the directory and the configuration (R1, R2, R3, R5, R7 by numbering.blocks, R12,
R14).

`render_users` turns a Directory into desired users and held users. The rules that need the PBX (R4, R6,
R7 by the PBX's numbers, R10, R11, R13 and whether numbers exist) run at plan time, in `rules.pbx`.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace

from adsync_plan.config import Config
from adsync_plan.model import ROLE_ADMIN, ROLE_USER, Diagnostic, Directory, DirectoryUser, PhoneUser, normalise_dn
from adsync_plan.rules.groups import DesiredGroup, render_groups, shared_numbers, without_numbers
from adsync_plan.rules.numbers import NumberRules, UserNumbers
from adsync_plan.rules.values import INVALID_VALUE, TEXT_FIELDS, all_clean, value_problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DesiredUser:
    """A directory user who passed every directory rule: its identity and its comparable shape."""

    account: str
    source_id: str
    dn: str
    user: PhoneUser

    @property
    def address(self) -> str:
        return f"user.{self.account}"


@dataclass(frozen=True)
class HeldUser:
    """In scope but failing a rule: nothing is changed for this user, and it is never orphaned."""

    address: str
    account: str | None
    source_id: str
    dn: str
    email: str | None
    diagnostics: tuple[Diagnostic, ...]


@dataclass
class Rendered:
    desired: dict[str, DesiredUser]  # account (lower case) -> user
    held: list[HeldUser]
    out_of_scope: int = 0
    warnings: list[Diagnostic] = field(default_factory=list)  # of desired users (R7 drops) and groups
    groups: dict[str, DesiredGroup] = field(default_factory=dict)  # name -> group (pbx_groups)


def invalid_external_number(address: str, number: str, source: dict | None, drop: bool) -> Diagnostic:
    """R7, in the vendor FAQ's words: at render (outside numbering.blocks) and at plan time (not on the PBX)
    alike. An error holds the user; with rules.on_invalid_number: drop_number, a warning and the number goes."""
    if drop:
        message = f"invalid external phone number {number} dropped (rules.on_invalid_number: drop_number)."
        return Diagnostic("warning", "INVALID_EXTERNAL_NUMBER", address, message, source)
    message = (
        f"invalid external phone number {number}: it is in no number block of the PBX's lines; "
        "correct it in the directory."
    )
    return Diagnostic("error", "INVALID_EXTERNAL_NUMBER", address, message, source)


def address_of(user: DirectoryUser) -> str:
    return f"user.{user.account.lower()}" if user.account else f"user.{user.source_id}"


class _Checker:
    """Collects the diagnostics of one user."""

    def __init__(self, user: DirectoryUser, attributes):
        self.user, self.attributes, self.found, self.warned = user, attributes, [], []

    def source(self, field_name: str) -> dict:
        return {"dn": self.user.dn, "attribute": self.attributes.get(field_name, field_name)}

    def error(self, code: str, field_name: str, message: str) -> None:
        self.found.append(Diagnostic("error", code, address_of(self.user), message, self.source(field_name)))


def in_scope(user: DirectoryUser, config: Config) -> str | None:
    """The role a user gets (admin wins), or None when out of scope (R3)."""
    if not user.enabled and not config.scope.include_disabled:
        return None
    if user.groups & _lowered(config.scope.admin_groups):
        return ROLE_ADMIN
    if user.groups & _lowered(config.scope.user_groups):
        return ROLE_USER
    return None


_LOWERED: dict[tuple, frozenset] = {}


def _lowered(groups: tuple[str, ...]) -> frozenset[str]:
    if groups not in _LOWERED:
        _LOWERED[groups] = frozenset(normalise_dn(g) for g in groups)
    return _LOWERED[groups]


def render_users(directory: Directory, config: Config) -> Rendered:
    """The directory rules, user by user as the users arrive (they may stream from another process), then
    the uniqueness rules over all of them."""
    rules = NumberRules(config.numbering)
    candidates: list[tuple[DirectoryUser, DesiredUser | None, list[Diagnostic]]] = []
    accounts, emails, source_ids = [], [], []  # lower case, counted at the end (Counter counts at C speed)
    out_of_scope, warnings = 0, []
    debug = log.isEnabledFor(logging.DEBUG)  # skip building the arguments of 100,000 unused messages
    for user in directory.users:
        role = in_scope(user, config)
        if role is None:
            out_of_scope += 1
            if debug:
                log.debug("%s: out of scope (not enabled or in no configured group): %s", address_of(user), user.dn)
            continue
        shape, found, warned = _check_user(user, role, rules, directory.attributes, config)
        desired = DesiredUser(user.account.lower(), user.source_id, user.dn, shape) if shape else None
        candidates.append((user, desired, found))
        warnings.extend(warned)
        source_ids.append(user.source_id.lower())
        if user.account:
            accounts.append(user.account.lower())
        if user.email:
            emails.append(user.email.lower())
    names = directory.attributes
    carried = _share_numbers(candidates, rules, names, config) if config.pbx_groups.shared_numbers == "group" else {}
    _check_unique(candidates, Counter(accounts), "account", "DUPLICATE_ACCOUNT", "sAMAccountName", names)
    _check_unique(candidates, Counter(emails), "email", "DUPLICATE_EMAIL", "e-mail address", names)
    # one source id on two entries would bind two PBX users to one key: both are held
    _check_unique(candidates, Counter(source_ids), "source_id", "DUPLICATE_SOURCE_ID", "source id", names)
    rendered = Rendered(desired={}, held=[], out_of_scope=out_of_scope)
    members: dict[str, DirectoryUser] = {}  # account -> directory user, of the desired users (for groups)
    warned = defaultdict(list)
    for warning in warnings:
        warned[warning.address].append(warning)
    for user, desired, found in candidates:
        if found:
            found += warned.pop(address_of(user), ())  # a held user's dropped numbers: said once, with it
            rendered.held.append(
                HeldUser(address_of(user), user.account, user.source_id, user.dn, user.email, tuple(found))
            )
            if debug:
                log.debug("%s: held: %s", address_of(user), "; ".join(d.code for d in found))
        else:
            rendered.desired[desired.account] = desired
            members[desired.account] = user
            if debug:
                log.debug("%s: desired as %s", address_of(user), desired.user)
    if carried or config.pbx_groups.map:
        attribute = names.get("phones", "phones")
        rendered.groups, group_warnings = render_groups(members, carried, rendered.desired, config, rules, attribute)
        warned["groups"] += group_warnings
    rendered.held.sort(key=lambda h: (h.address, h.source_id))
    rendered.warnings = sorted((w for found in warned.values() for w in found), key=lambda d: (d.address, d.message))
    return rendered


def _share_numbers(candidates: list, rules: NumberRules, attributes, config: Config) -> dict[str, set[str]]:
    """pbx_groups.shared_numbers: group. A phone number several users carry goes to a group: each such user is
    checked again without it (so it may now lack an internal number: the usual rules hold it). Changes
    `candidates` in place; returns account -> the shared numbers it carried."""
    shared = shared_numbers((user for user, desired, _ in candidates if desired is not None), rules)
    if not shared:
        return {}
    carried = {}
    for n, (user, desired, found) in enumerate(candidates):
        mine = shared.intersection(rules.parse(v).number for v in user.phones) if desired is not None else set()
        if not mine:
            continue
        carried[desired.account] = mine
        role = desired.user.role
        shape, again, _ = _check_user(without_numbers(user, mine, rules), role, rules, attributes, config)
        # (the warnings of dropped numbers were given by the first check already)
        found += [_went_to_group(d, mine) if d.code == "NO_INTERNAL_NUMBER" else d for d in again]
        candidates[n] = (user, DesiredUser(desired.account, user.source_id, user.dn, shape) if shape else None, found)
        log.debug("%s: shares %s; the number(s) go to a group", address_of(user), ", ".join(sorted(mine)))
    return carried


REQUIRED = (
    ("first_name", "MISSING_FIRST_NAME", "a first name"),
    ("last_name", "MISSING_LAST_NAME", "a last name"),
    ("account", "MISSING_ACCOUNT", "an account name"),
    ("email", "MISSING_EMAIL", "an e-mail address"),
)


def _check_user(user: DirectoryUser, role: str, rules: NumberRules, attributes, config: Config):
    check = _Checker(user, attributes)
    if not all_clean(user.account, user.first_name, user.last_name, user.email):
        _check_required(check, user, attributes)
    numbers = rules.user_numbers(user.phones, user.faxes)
    for value in numbers.invalid:
        check.error(
            "INVALID_EXTERNAL_NUMBER",
            "phones",
            f"{value!r} is not a phone number (invalid external phone number); correct it in the directory.",
        )
    external, fax = _check_blocks(check, numbers, config.on_invalid_number == "drop_number")
    login_id = rules.login_id(numbers.primary) if numbers.primary else None
    if numbers.primary is None:
        check.error(
            "NO_INTERNAL_NUMBER",
            "phones",
            (
                f"no phone value ({', '.join(user.phones)}) gives an internal number: none is short enough, and no "
                "external number falls into numbering.blocks; add the extension to the directory."
            )
            if user.phones
            else "the user has no phone number; add the extension to the directory.",
        )
    for number in sorted({*numbers.internal, *([login_id] if login_id else [])}):
        reason = rules.reserved_reason(number)
        if reason:
            check.error(
                "RESERVED_NUMBER",
                "phones",
                f"{number} {reason} and cannot be an internal number or login ID.",
            )
    if check.found:
        return None, check.found, check.warned
    shape = PhoneUser(
        login_id=login_id,
        first_name=user.first_name,
        last_name=user.last_name,
        email=user.email,
        role=role,
        primary_internal_number=numbers.primary,
        internal_numbers=numbers.internal,
        external_numbers=external,
        fax_numbers=fax,
    )
    return shape, check.found, check.warned


def _went_to_group(diagnostic: Diagnostic, shared: set[str]) -> Diagnostic:
    """R12 for a user whose internal number came from a number that went to a group: say so."""
    numbers = ", ".join(sorted(shared))
    message = (
        f"no internal number is left: the user's number {numbers} is shared with other users and goes to a group "
        "(pbx_groups.shared_numbers: group); add the user's own extension to the directory."
    )
    return replace(diagnostic, message=message)


def _check_blocks(check: _Checker, numbers, drop: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """R7 as far as the configuration tells: an external or fax number in no block of numbering.blocks.
    Returns the external and fax numbers the user keeps."""
    if not numbers.outside:
        return numbers.external, numbers.fax  # the usual case
    for number in numbers.outside:
        diagnostic = invalid_external_number(
            address_of(check.user), number, check.source("faxes" if number in numbers.fax else "phones"), drop
        )
        (check.warned if drop else check.found).append(diagnostic)
    if not drop:
        return numbers.external, numbers.fax
    outside = set(numbers.outside)
    return tuple(n for n in numbers.external if n not in outside), tuple(n for n in numbers.fax if n not in outside)


def _check_required(check: _Checker, user, attributes) -> None:
    """R1 (the text fields are set) and clean values (no control characters, bidi overrides, blank or overlong
    values): `user` is a DirectoryUser or a desired user's identity and shape."""
    for field_name, code, label in REQUIRED:
        if not getattr(user, field_name):
            attr = attributes.get(field_name, field_name)
            check.error(code, field_name, f"{user.dn} has no {attr}: a PBX user needs {label}; set {attr}.")
    for field_name in TEXT_FIELDS:
        value = getattr(user, field_name)
        problem = value_problem(field_name, value) if value else None
        if problem:
            attr = attributes.get(field_name, field_name)
            check.error(INVALID_VALUE, field_name, f"the {attr} of {user.dn} {problem}; correct it in the directory.")


def _check_unique(candidates, counts: Counter, field_name: str, code: str, label: str, attributes) -> None:
    """R2 and R14: every user sharing a value (case-insensitive) is held. `counts` counts the values."""
    if max(counts.values(), default=0) < 2:
        return  # the usual case
    by_value = defaultdict(list)  # only the shared values
    for user, _, found in candidates:
        value = (getattr(user, field_name) or "").lower()
        if counts[value] > 1:
            by_value[value].append((user, found))
    for value, users in by_value.items():
        for user, found in users:
            others = ", ".join(sorted(u.dn for u, _ in users if u is not user))
            found.append(
                Diagnostic(
                    "error",
                    code,
                    address_of(user),
                    f"the {label} {value!r} is also used by {others}; every user sharing it is held "
                    "until it is unique.",
                    {"dn": user.dn, "attribute": attributes.get(field_name, field_name)},
                )
            )


# -- a desired state read from a file --------------------------------------------------------------------


def recheck(rendered: Rendered, config: Config, attributes) -> Rendered:
    """A desired state read from a file is input, not truth (anyone can edit it in a pull request): every
    rule that needs no directory runs again (R1 and clean values, R5, R12's primary number, R2, R14, one
    source id per user, an admin role backed by an admin group, R7 by numbering.blocks); a user failing one is
    held, as after render. The rules that need the PBX (R4, R6, R7, R10, R11) run at plan time anyway."""
    rules = NumberRules(config.numbering)
    candidates, warnings = [], list(rendered.warnings)
    for desired in rendered.desired.values():
        identity = _identity(desired)
        desired, found = _recheck_blocks(identity, desired, rules, attributes, config, warnings)
        found += _recheck_user(identity, desired.user, rules, attributes, config)
        candidates.append((identity, desired, found))
    held = [(DirectoryUser(h.source_id, h.dn, h.account, email=h.email), None, []) for h in rendered.held]
    everyone = candidates + held
    for field_name, code, label in UNIQUE:
        counts = Counter((getattr(u, field_name) or "").lower() for u, _, _ in everyone if getattr(u, field_name))
        _check_unique(everyone, counts, field_name, code, label, attributes)
    out = Rendered({}, list(rendered.held), rendered.out_of_scope, warnings)
    for user, desired, found in candidates:
        if found:
            out.held.append(HeldUser(address_of(user), user.account, user.source_id, user.dn, user.email, tuple(found)))
        else:
            out.desired[desired.account] = desired
    out.held.sort(key=lambda h: (h.address, h.source_id))
    # a held user is never a member (a member held by this recheck leaves its groups)
    out.groups = {
        name: replace(g, members=tuple(m for m in g.members if m in out.desired)) for name, g in rendered.groups.items()
    }
    return out


UNIQUE = (
    ("account", "DUPLICATE_ACCOUNT", "sAMAccountName"),
    ("email", "DUPLICATE_EMAIL", "e-mail address"),
    ("source_id", "DUPLICATE_SOURCE_ID", "source id"),
)


def _identity(desired: DesiredUser) -> DirectoryUser:
    shape = desired.user
    return DirectoryUser(desired.source_id, desired.dn, desired.account, shape.first_name, shape.last_name, shape.email)


def _recheck_blocks(identity: DirectoryUser, desired: DesiredUser, rules: NumberRules, attributes, config, warnings):
    """R7 by numbering.blocks on a desired user, as `render` does it: (the user, maybe without the dropped
    numbers; the errors holding it). The warnings of dropped numbers go to `warnings`."""
    shape = desired.user
    outside = rules.outside_blocks((*shape.external_numbers, *shape.fax_numbers))
    if not outside:
        return desired, []  # the usual case
    check = _Checker(identity, attributes)
    numbers = UserNumbers(None, (), shape.external_numbers, shape.fax_numbers, (), outside)
    external, fax = _check_blocks(check, numbers, config.on_invalid_number == "drop_number")
    warnings += check.warned
    if check.warned:
        shape = shape.changed(external_numbers=external, fax_numbers=fax)
        desired = DesiredUser(desired.account, desired.source_id, desired.dn, shape)
    return desired, check.found


def _recheck_user(user: DirectoryUser, shape: PhoneUser, rules: NumberRules, attributes, config: Config):
    check = _Checker(user, attributes)
    _check_required(check, user, attributes)
    primary = shape.primary_internal_number
    if primary is None or primary not in (*shape.internal_numbers, *shape.fax_numbers):  # a fax primary: as render
        check.error(
            "NO_INTERNAL_NUMBER",
            "phones",
            f"the primary internal number {primary} is not among the user's internal numbers "
            f"({', '.join(shape.internal_numbers) or 'none'}); render the desired state again.",
        )
    for number in sorted({*shape.internal_numbers, shape.login_id}):
        reason = rules.reserved_reason(number)
        if reason:
            check.error("RESERVED_NUMBER", "phones", f"{number} {reason} and cannot be an internal number or login ID.")
    listed = (*shape.internal_numbers, *shape.external_numbers, *shape.fax_numbers)
    for number in sorted(n for n, count in Counter(listed).items() if count > 1):
        check.error("NUMBER_CONFLICT", "phones", f"number {number} is listed twice; a number has one use.")
    if shape.role == ROLE_ADMIN and not config.scope.admin_groups:
        check.error(
            INVALID_VALUE,
            "role",
            "the role admin needs an admin group, and scope.admin_groups names none; render the desired state again.",
        )
    return check.found
