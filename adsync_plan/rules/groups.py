"""STARFACE groups (issue 16) at render: a number several users share, and directory groups mapped to PBX
groups (`pbx_groups`). Pure: directory users and the configuration in, desired groups and diagnostics out.

A desired group is keyed for its binding by what it is for: `shared:<number>` or `map:<directory group>`
(normalised), so renaming it in the configuration renames the PBX group instead of making a new one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from adsync_plan.config import Config
from adsync_plan.errors import ConfigError
from adsync_plan.model import GROUP_NAME_MAX, Diagnostic, DirectoryUser, normalise_dn
from adsync_plan.rules.numbers import NumberRules

if TYPE_CHECKING:
    from adsync_plan.rules.directory import DesiredUser  # which imports this module

GROUP_NUMBER_CONFLICT = "GROUP_NUMBER_CONFLICT"


@dataclass(frozen=True)
class DesiredGroup:
    """A group as the directory and the configuration want it: members are accounts (lower case)."""

    key: str
    name: str
    members: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()
    shared_number: str | None = None  # a group for a shared number: that number
    directory_group: str | None = None  # a mapped group: the directory group, as configured

    @property
    def address(self) -> str:
        return f"group.{self.name}"

    @property
    def purpose(self) -> str:
        if self.shared_number is not None:
            return f"the number {self.shared_number} several directory users share (pbx_groups.shared_numbers: group)"
        return f"the directory group {self.directory_group} (pbx_groups.map)"

    def to_dict(self) -> dict:
        out = {"members": list(self.members), "numbers": list(self.numbers)}
        if self.shared_number is not None:
            out["shared_number"] = self.shared_number
        else:
            out["directory_group"] = self.directory_group
        return out

    @classmethod
    def from_dict(cls, name: str, data: Mapping) -> DesiredGroup:
        shared, mapped = data.get("shared_number"), data.get("directory_group")
        return cls(
            key=group_key(shared, mapped),
            name=name,
            members=tuple(sorted(data.get("members", ()))),
            numbers=tuple(sorted(data.get("numbers", ()))),
            shared_number=shared,
            directory_group=mapped,
        )


def group_key(shared_number: str | None, directory_group: str | None) -> str:
    return f"shared:{shared_number}" if shared_number is not None else f"map:{normalise_dn(directory_group or '')}"


def phone_numbers(user: DirectoryUser, rules: NumberRules) -> set[str]:
    """The user's phone values, normalised (faxes are no hunt-group numbers; invalid values are R7's)."""
    return {number for kind, number in map(rules.parse, user.phones) if kind != "invalid"}


def shared_numbers(users: Iterable[DirectoryUser], rules: NumberRules) -> set[str]:
    """The phone numbers more than one of `users` carries."""
    counts = Counter(n for user in users for n in phone_numbers(user, rules))
    return {n for n, count in counts.items() if count > 1}


def without_numbers(user: DirectoryUser, numbers: set[str], rules: NumberRules) -> DirectoryUser:
    """The user with the phone values that normalise to `numbers` left out (they go to a group)."""
    return replace(user, phones=tuple(v for v in user.phones if rules.parse(v).number not in numbers))


def mapped_numbers(config: Config, rules: NumberRules) -> list[tuple[str, ...]]:
    """pbx_groups.map.N.numbers normalised like directory numbers; a value that is none is the configuration's
    mistake, named by its key."""
    out = []
    for n, entry in enumerate(config.pbx_groups.map):
        numbers = []
        for value in entry.numbers:
            kind, number = rules.parse(value)
            if kind == "invalid":
                raise ConfigError(
                    f"{config.path}: pbx_groups.map.{n}.numbers: {value!r} is not a phone number; write it as a "
                    "directory would (e.g. +49 7022 27978-300, or an internal number such as 300)."
                )
            numbers.append(number)
        out.append(tuple(sorted(set(numbers))))
    return out


def shared_name(config: Config, number: str) -> str:
    name = config.pbx_groups.shared_name.replace("{number}", number)
    if len(name) > GROUP_NAME_MAX:
        raise ConfigError(
            f"{config.path}: pbx_groups.shared_name: {name!r} (for the shared number {number}) has {len(name)} "
            f"characters; a STARFACE group name has at most {GROUP_NAME_MAX}. Choose a shorter pattern."
        )
    return name


def render_groups(
    members: Mapping[str, DirectoryUser],
    carried: Mapping[str, set[str]],
    desired: Mapping[str, DesiredUser],
    config: Config,
    rules: NumberRules,
    attribute: str = "phones",
) -> tuple[dict[str, DesiredGroup], list[Diagnostic]]:
    """The desired groups, by name, and their warnings.

    `members`: account -> directory user, of every desired (not held) user; `carried`: account -> the shared
    numbers it carried (they went to groups); `desired`: account -> the desired user (its numbers are what it
    keeps). A group number that is also a user's number stays with the user: the group goes without it
    (reported).
    """
    groups: dict[str, DesiredGroup] = {}
    warnings: list[Diagnostic] = []
    shared = sorted({n for numbers in carried.values() for n in numbers})
    numbers_of_map = mapped_numbers(config, rules)
    owners = _owners(set(shared).union(*numbers_of_map), desired)
    for number in shared:
        name = shared_name(config, number)
        group = DesiredGroup(
            key=group_key(number, None),
            name=name,
            members=tuple(sorted(a for a, numbers in carried.items() if number in numbers and a in members)),
            numbers=(number,),
            shared_number=number,
        )
        group, found = _without_user_numbers(group, owners, members, "the shared number", attribute)
        warnings += found
        if group.numbers:
            groups[name] = group
    taken = {name.lower(): name for name in groups}
    in_shared = {num: f"the group {name}" for name, g in groups.items() for num in g.numbers}
    of_group = _members_by_group(members, config)
    for n, (entry, numbers) in enumerate(zip(config.pbx_groups.map, numbers_of_map, strict=True)):
        if entry.name.lower() in taken:
            raise ConfigError(
                f"{config.path}: pbx_groups.map.{n}.name: {entry.name!r} is also the name of the group for the shared "
                f"number in {taken[entry.name.lower()]!r} (pbx_groups.shared_name); choose another name."
            )
        group = DesiredGroup(
            key=group_key(None, entry.directory_group),
            name=entry.name,
            members=tuple(sorted(of_group.get(normalise_dn(entry.directory_group), ()))),
            numbers=numbers,
            directory_group=entry.directory_group,
        )
        group, found = _without_user_numbers(
            group, owners, members, f"pbx_groups.map.{n}.numbers", attribute, in_shared
        )
        warnings += found
        groups[entry.name] = group
    return groups, warnings


def _owners(wanted: set[str], desired: Mapping[str, DesiredUser]) -> dict[str, str]:
    """Group number -> the desired user whose number it is too (the first account in order, when several):
    only the groups' numbers are looked for, not every user's (100,000 users, a few hundred group numbers)."""
    owners: dict[str, str] = {}
    if not wanted:
        return owners
    for account, user in desired.items():
        shape = user.user
        for number in wanted.intersection(shape.internal_numbers + shape.external_numbers + shape.fax_numbers):
            if number not in owners or account < owners[number]:
                owners[number] = account
    return owners


def _members_by_group(members: Mapping[str, DirectoryUser], config: Config) -> dict[str, list[str]]:
    """mapped directory group (normalised) -> the accounts in it: one pass over the users, whatever the number
    of mapped groups (1,000 groups at 100,000 users)."""
    mapped = frozenset(normalise_dn(m.directory_group) for m in config.pbx_groups.map)
    found: dict[str, list[str]] = {}
    for account, user in members.items():
        for group in user.groups & mapped if user.groups else ():
            found.setdefault(group, []).append(account)
    return found


def _without_user_numbers(group: DesiredGroup, owners, members, what: str, attribute: str, others=None):
    """The group without the numbers a user (or another group) keeps, and a warning for each."""
    kept, warnings = [], []
    for number in group.numbers:
        account = owners.get(number)
        holder = f"user.{account}" if account else (others or {}).get(number)
        if holder is None:
            kept.append(number)
            continue
        source = {"dn": members[account].dn, "attribute": attribute} if account else None
        warnings.append(
            Diagnostic(
                "warning",
                GROUP_NUMBER_CONFLICT,
                group.address,
                f"number {number} ({what}) is also a number of {holder}, which keeps it; {group.address} is planned "
                "without it. Remove it from the directory or from the configuration.",
                source,
            )
        )
    return replace(group, numbers=tuple(kept)), warnings
