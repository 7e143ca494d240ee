"""The rules that need the PBX (R4, R6, R7, R9, R10, R11, R12, R13) and matching (SPEC 7).

`reconcile` is a pure function of the desired users, the held users, the PBX snapshot and the
configuration. It decides, for every user, one of: create, match (then update or unchanged), protected,
held; and which PBX users become orphans. `diff` turns the decisions into actions.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from adsync_plan.config import Config
from adsync_plan.model import EXTERNAL, INTERNAL, ROLE_ADMIN, Diagnostic, PbxState, PhoneUser
from adsync_plan.rules.directory import DesiredUser, HeldUser, invalid_external_number
from adsync_plan.rules.groups import DesiredGroup

ORPHAN_MARK = "-"

log = logging.getLogger(__name__)


@dataclass
class Decisions:
    creates: dict[str, DesiredUser] = field(default_factory=dict)  # account -> user
    matches: dict[str, tuple[DesiredUser, str, str]] = field(default_factory=dict)  # account -> (user, id, how)
    orphans: list[str] = field(default_factory=list)  # PBX user ids
    protected: dict[str, str] = field(default_factory=dict)  # account -> PBX user id
    held: dict[str, list[Diagnostic]] = field(default_factory=dict)  # address -> plan-time diagnostics
    held_match: dict[str, str] = field(default_factory=dict)  # address -> PBX user id left as it is
    diagnostics: list[Diagnostic] = field(default_factory=list)
    managed: int = 0
    desired: dict[str, DesiredUser] = field(default_factory=dict)  # after R7 drops
    # groups (pbx_groups): desired groups to create, bound ones to keep up to date, bound ones no longer desired
    group_creates: dict[str, DesiredGroup] = field(default_factory=dict)  # name -> group
    group_matches: dict[str, tuple[DesiredGroup, str]] = field(default_factory=dict)  # name -> (group, PBX id)
    group_orphans: list[str] = field(default_factory=list)  # PBX group ids
    group_held: dict[str, list[Diagnostic]] = field(default_factory=dict)  # address -> diagnostics
    group_managed: int = 0  # bound PBX groups (the safety valve counts them with the managed users)
    group_bindings: dict[str, str] = field(default_factory=dict)  # key -> PBX group id, of existing groups


def _error(address: str, code: str, message: str, user: DesiredUser | None, attribute: str | None = None):
    source = {"dn": user.dn, "attribute": attribute} if user and attribute else ({"dn": user.dn} if user else None)
    return Diagnostic("error", code, address, message, source)


class Reconciler:
    def __init__(
        self,
        desired: Mapping[str, DesiredUser],
        held: list[HeldUser],
        state: PbxState,
        bindings: Mapping[str, str],
        config: Config,
        attributes: Mapping[str, str],
        groups: Mapping[str, DesiredGroup] | None = None,
        group_bindings: Mapping[str, str] | None = None,
    ):
        self.state, self.config, self.attributes = state, config, attributes
        self.groups = dict(groups or {})
        self.group_bindings = {k: i for k, i in (group_bindings or {}).items() if i in state.groups}
        self.desired = dict(desired)
        self.held_users = held
        present = {u.source_id for u in desired.values()} | {h.source_id for h in held}
        # bindings to users that still exist; a binding to a vanished source id frees the PBX user for
        # e-mail matching (an account deleted and re-created in the directory keeps its PBX user)
        self.bindings = {s: i for s, i in bindings.items() if i in state.users}
        self.bound_present = {i for s, i in self.bindings.items() if s in present}
        self.bound_ids = set(self.bindings.values())
        self.by_email = self._email_index()
        self.owner_of_login = {u.login_id: i for i, u in state.users.items()}
        # R10 without the exception for bound admins (see is_protected)
        protect = config.protect_logins
        self.always_protected = set(state.admins) | {i for i, u in state.users.items() if u.login_id in protect}
        kinds = {INTERNAL, EXTERNAL} | {info.type for info in state.numbers.values()}
        self.of_type = {kind: {n for n, info in state.numbers.items() if info.type == kind} for kind in kinds}
        self.d = Decisions()
        self._claimants: dict[str, list[DesiredUser]] | None = None  # see _claimed_group_numbers

    def _email_index(self) -> dict[str, str]:
        """e-mail (lower case) -> the unbound PBX user with it; the lowest id when several share it."""
        index: dict[str, str] = {}
        for pbx_id, user in self.state.users.items():
            if pbx_id in self.bound_present:
                continue
            email = (user.email or "").lower()
            other = index.get(email)
            if other is None or _id_order(pbx_id) < _id_order(other):
                index[email] = pbx_id
        return index

    def match(self, source_id: str, email: str | None) -> tuple[str | None, str]:
        pbx_id = self.bindings.get(source_id)
        if pbx_id is not None:
            return pbx_id, "binding"
        pbx_id = self.by_email.get((email or "").lower()) if email else None
        return (pbx_id, "e-mail") if pbx_id is not None else (None, "")

    def is_protected(self, pbx_id: str, desired: DesiredUser | None) -> bool:
        """R10: listed in protect.logins, or an administrator the tool did not create or bind as one."""
        if pbx_id not in self.always_protected:
            return False
        if self.state.users[pbx_id].login_id in self.config.protect_logins:
            return True
        bound_as_admin = desired is not None and desired.user.role == ROLE_ADMIN
        return not (bound_as_admin and self.bindings.get(desired.source_id) == pbx_id)

    # -- the steps, in order -------------------------------------------------------------------------

    def run(self) -> Decisions:
        self._match_all()
        self._check_numbers_exist()
        self._orphans()
        self._match_groups()
        # Holding a user keeps its login ID and numbers where they are, which can conflict with another
        # user's claim: repeat until nothing changes (each round holds at least one more user or group, so
        # this ends).
        while self._check_login_ids() + self._check_numbers() + self._check_group_names():
            pass  # (a group held for its name keeps its numbers, so the numbers are checked again)
        self._check_licences()
        self.d.desired = self.desired
        return self.d

    def _hold(self, user: DesiredUser, diagnostic: Diagnostic) -> None:
        self.d.held.setdefault(user.address, []).append(diagnostic)
        self.d.creates.pop(user.account, None)
        matched = self.d.matches.pop(user.account, None)
        if matched:
            self.d.held_match[user.address] = matched[1]
        log.debug("%s: held at plan time: %s", user.address, diagnostic.message)

    def _match_all(self) -> None:
        claimed: dict[str, str] = {}
        debug = log.isEnabledFor(logging.DEBUG)  # skip building the arguments of 100,000 unused messages
        for account in sorted(self.desired):
            user = self.desired[account]
            pbx_id, how = self.match(user.source_id, user.user.email)
            if pbx_id is not None and pbx_id in claimed:
                pbx_id, how = None, ""  # the PBX user is already another directory user's counterpart
            if pbx_id is None:
                self.d.creates[account] = user
                if debug:
                    log.debug("%s: no PBX counterpart; to create", user.address)
            elif self.is_protected(pbx_id, user):
                self.d.protected[account] = pbx_id
                self.d.diagnostics.append(
                    Diagnostic(
                        "info",
                        "PROTECTED_USER",
                        user.address,
                        f"matches protected PBX user {pbx_id} (login {self.state.users[pbx_id].login_id}, by {how}); "
                        "it is never changed.",
                        {"dn": user.dn},
                    )
                )
            else:
                claimed[pbx_id] = account
                self.d.matches[account] = (user, pbx_id, how)
                if debug:
                    log.debug("%s: matches PBX user %s by %s", user.address, pbx_id, how)
        for held in self.held_users:
            pbx_id, how = self.match(held.source_id, held.email)
            if pbx_id is not None and pbx_id not in claimed:
                self.d.held_match[held.address] = pbx_id
                log.debug("%s: held; its PBX user %s (by %s) stays as it is", held.address, pbx_id, how)

    def _check_numbers_exist(self) -> None:
        """R7 (external and fax numbers must be on the PBX) and R12 (the primary internal number too)."""
        drop = self.config.on_invalid_number == "drop_number"
        numbers, internal, external = self.state.numbers, self.of_type[INTERNAL], self.of_type[EXTERNAL]
        if _all_exist([u.user for u in self.desired.values()], numbers, internal, external):
            return  # the usual case, checked for everyone at once
        for account in sorted(self.desired):
            user = self.desired[account]
            shape = user.user
            if shape.primary_internal_number not in internal:
                self._hold(
                    user,
                    _error(
                        user.address,
                        "NO_INTERNAL_NUMBER",
                        f"the internal number {shape.primary_internal_number} does not exist on the PBX; "
                        "use an extension of the PBX's internal range.",
                        user,
                        self.attributes.get("phones"),
                    ),
                )
                continue
            wanted = shape.numbers()
            if wanted <= numbers.keys() and external.issuperset(shape.external_numbers):
                continue  # the usual case, checked at C speed
            missing = sorted(n for n in wanted if n not in numbers)
            wrong_type = sorted(n for n in shape.external_numbers if n in numbers and numbers[n].type != EXTERNAL)
            bad = missing + wrong_type
            if drop:
                self._drop_numbers(user, bad)
                continue
            for number in bad:
                source = {"dn": user.dn, "attribute": self._attr_of(shape, number)}
                self._hold(user, invalid_external_number(user.address, number, source, drop=False))

    def _attr_of(self, shape: PhoneUser, number: str) -> str | None:
        return self.attributes.get("faxes" if number in shape.fax_numbers else "phones")

    def _drop_numbers(self, user: DesiredUser, bad: list[str]) -> None:
        shape = user.user
        kept = {
            f: tuple(n for n in getattr(shape, f) if n not in bad)
            for f in ("internal_numbers", "external_numbers", "fax_numbers")
        }
        self.desired[user.account] = DesiredUser(user.account, user.source_id, user.dn, shape.changed(**kept))
        for bucket in (self.d.creates, self.d.matches):
            if user.account in bucket:
                entry = bucket[user.account]
                bucket[user.account] = (
                    self.desired[user.account] if bucket is self.d.creates else (self.desired[user.account], *entry[1:])
                )
        for number in bad:
            source = {"dn": user.dn, "attribute": self._attr_of(shape, number)}
            self.d.diagnostics.append(invalid_external_number(user.address, number, source, drop=True))

    def _active(self) -> list:
        """(account, user, matched PBX id or None) of everyone still to be created or matched."""
        creates = [(account, user, None) for account, user in self.d.creates.items()]
        return creates + [(account, user, pbx_id) for account, (user, pbx_id, _) in self.d.matches.items()]

    def _check_login_ids(self) -> int:
        """R6: a login ID kept by another PBX user, or claimed twice in this run, holds the newcomer.
        Returns how many users it held."""
        users = self.state.users
        moving = {users[i].login_id for u, i, _ in self.d.matches.values() if u.user.login_id != users[i].login_id}
        active = self._active()
        claims = Counter(user.user.login_id for _, user, _ in active)
        twice = defaultdict(list)  # only the logins claimed more than once
        for _, user, _ in active if len(claims) < len(active) else ():
            if claims[user.user.login_id] > 1:
                twice[user.user.login_id].append(user)
        held = []
        for _, user, pbx_id in active:
            login = user.user.login_id
            holder = self.owner_of_login.get(login)
            keeper = holder if holder is not None and login not in moving else None
            if keeper is not None and keeper != pbx_id:
                other = users[keeper]
                message = (
                    f"login ID {login} is already used by PBX user {keeper} ({other.first_name} {other.last_name})."
                )
            elif keeper is None and login in twice:
                others = ", ".join(sorted(u.address for u in twice[login] if u is not user))
                message = f"login ID {login} is also claimed by {others} in this run."
            else:
                continue
            held.append(
                (user, _error(user.address, "LOGIN_ID_COLLISION", message, user, self.attributes.get("phones")))
            )
        for user, diagnostic in held:
            self._hold(user, diagnostic)
        return len(held)

    def _orphans(self) -> None:
        """R9: managed, unprotected PBX users with no counterpart in scope (held users keep theirs)."""
        kept = {pbx_id for _, _, pbx_id in self._active() if pbx_id} | set(self.d.protected.values())
        kept |= set(self.d.held_match.values())
        everyone = self.config.ownership == "all"
        managed = [i for i in self.state.users if (everyone or i in self.bound_ids) and i not in self.always_protected]
        self.d.managed = len(managed)
        self.d.orphans = sorted((i for i in managed if i not in kept), key=_id_order)

    def _check_numbers(self) -> int:
        """R11 for users, then for groups. Holding only shrinks what is released, so the groups' check may
        miss a conflict the users' check has just made; the round repeats then, as it held someone.
        Returns how many users and groups it held."""
        released = self._released()
        return self._check_number_owners(released) + self._check_group_numbers(released)

    def _check_number_owners(self, released: set[str]) -> int:
        """R11: a number may only move from an owner that releases it in this run; one number, one owner.
        Returns how many users it held."""
        claims, numbers = {}, self.state.numbers
        for _, user, pbx_id in self._active():
            for number in user.user.numbers():
                if pbx_id is None or numbers[number].owner != pbx_id:  # keeping one's own number claims nothing
                    claims.setdefault(number, []).append((user, pbx_id))
        conflicts = self._conflicts(claims, released)
        for user, diagnostic in conflicts:
            self._hold(user, diagnostic)
        return len(conflicts)

    def _released(self) -> set[str]:
        released = self._group_released()
        for pbx_id in self.d.orphans:
            current = self.state.users[pbx_id]
            released |= current.numbers() - {current.primary_internal_number}
        users = self.state.users
        for user, pbx_id, _ in self.d.matches.values():
            current, wanted = users[pbx_id], user.user
            if (
                current.internal_numbers != wanted.internal_numbers
                or current.external_numbers != wanted.external_numbers
                or current.fax_numbers != wanted.fax_numbers
            ):
                released |= current.numbers() - wanted.numbers()
        return released

    def _conflicts(self, claims, released):
        found = []
        for number, claimants in claims.items():
            owner = self.state.numbers[number].owner
            for user, pbx_id in claimants:
                if owner is not None and owner != pbx_id and number not in released:
                    message = f"number {number} belongs to {self._owner_name(owner)}, which this run does not release."
                elif len(claimants) > 1:
                    others = ", ".join(sorted(u.address for u, _ in claimants if u is not user))
                    message = f"number {number} is also claimed by {others}; a number has one owner."
                else:
                    continue
                found.append(
                    (
                        user,
                        _error(user.address, "NUMBER_CONFLICT", message, user, self._attr_of(user.user, number)),
                    )
                )
        return found

    def _owner_name(self, owner: str) -> str:
        if owner in self.state.users:
            u = self.state.users[owner]
            return f"PBX user {owner} ({u.first_name} {u.last_name}, login {u.login_id})"
        group = self.state.groups.get(owner.removeprefix("group:")) if owner.startswith("group:") else None
        if group is not None:
            return f"PBX group {owner.removeprefix('group:')} ({group.name})"
        return owner.replace(":", " ", 1)

    # -- groups -------------------------------------------------------------------------------------------

    def _match_groups(self) -> None:
        """A desired group is its bound PBX group (never one matched by name: a group the tool did not make is
        never touched), else a new one; a bound group no longer desired becomes an orphan."""
        matched = set()
        twice = _twice(self.groups.values())
        for name in sorted(self.groups):
            group = self.groups[name]
            if group in twice:  # only from a hand-edited desired file: render refuses it as configuration
                message = "another desired group has the same name (whatever the case) or is for the same thing"
                self.d.group_held.setdefault(group.address, []).append(
                    Diagnostic("error", "GROUP_NAME_COLLISION", group.address, message + "; render it again.")
                )
                continue
            gid = self.group_bindings.get(group.key)
            if gid is None:
                self.d.group_creates[name] = group
            else:
                self.d.group_matches[name] = (group, gid)
                matched.add(gid)
        bound = set(self.group_bindings.values())
        self.d.group_bindings = dict(self.group_bindings)
        self.d.group_managed = len(bound)
        self.d.group_orphans = sorted(bound - matched, key=_id_order)

    def _active_groups(self):
        """(group, PBX id or None) of every desired group still to be created or kept up to date."""
        for group in self.d.group_creates.values():
            yield group, None
        for group, gid in self.d.group_matches.values():
            yield group, gid

    def _claimed_group_numbers(self) -> dict[str, DesiredUser]:
        """Group numbers -> a user still planned (created or matched) who claims it too. The desired users'
        numbers are indexed once, in the first round (after R7 dropped what it drops): this runs in every round,
        and groups have few numbers."""
        if self._claimants is None:
            wanted = {n for group in self.groups.values() for n in group.numbers}
            self._claimants = {}
            for user in self.desired.values():
                for number in user.user.numbers() & wanted:
                    self._claimants.setdefault(number, []).append(user)
        planned = self.d.creates.keys() | self.d.matches.keys()
        claimed = {}
        for number, users in self._claimants.items():
            user = next((u for u in users if u.account in planned), None)
            if user is not None:
                claimed[number] = user
        return claimed

    def _group_released(self) -> set[str]:
        """The numbers bound groups give up in this run: an orphan all of them, a kept group those it no longer
        has (a held group keeps its numbers)."""
        groups, released = self.state.groups, set()
        for gid in self.d.group_orphans:
            released.update(groups[gid].numbers)
        for group, gid in self.d.group_matches.values():
            released.update(set(groups[gid].numbers) - set(group.numbers))
        return released

    def _hold_group(self, group: DesiredGroup, diagnostic: Diagnostic) -> None:
        """Nothing is planned for a held group: a bound one stays exactly as it is (and is no orphan)."""
        self.d.group_held.setdefault(group.address, []).append(diagnostic)
        self.d.group_creates.pop(group.name, None)
        self.d.group_matches.pop(group.name, None)
        log.debug("%s: held at plan time: %s", group.address, diagnostic.message)

    def _check_group_numbers(self, released: set[str]) -> int:
        """R7 and R11 for groups: a group number exists on the PBX, is free or released in this run, and is no
        number a user of this run claims (the user keeps it). Returns how many groups it held."""
        if not (self.d.group_creates or self.d.group_matches):
            return 0  # the usual case: no groups
        numbers, claimed = self.state.numbers, self._claimed_group_numbers()
        held = []
        for group, gid in self._active_groups():
            for number in group.numbers:
                info = numbers.get(number)
                if info is None:
                    code, message = "INVALID_EXTERNAL_NUMBER", f"number {number} does not exist on the PBX"
                elif info.owner not in (None, f"group:{gid}") and number not in released:
                    code = "NUMBER_CONFLICT"
                    message = (
                        f"number {number} belongs to {self._owner_name(info.owner)}, which this run does not release"
                    )
                elif number in claimed:
                    code, message = "NUMBER_CONFLICT", f"number {number} is also claimed by {claimed[number].address}"
                else:
                    continue
                held.append((group, Diagnostic("error", code, group.address, f"{message}; the group is held.")))
                break
        for group, diagnostic in held:
            self._hold_group(group, diagnostic)
        return len(held)

    def _check_group_names(self) -> int:
        """Group names are unique on the PBX (case-insensitive). A group that keeps its name (one the tool did
        not make, a held one, an orphan named `-` already) holds the orphan that would get that name as its `-`
        name (it stays as it is: members, numbers, name) and the desired group that wants it. A held group
        keeps its name and numbers, so this runs in plan's loop with the number checks. Returns how many
        groups it held."""
        groups = self.state.groups
        if not groups and not self.d.group_creates:
            return 0
        active = {gid for _, gid in self._active_groups() if gid is not None}
        final = {gid: self._final_name(gid) for gid in groups if gid not in active}
        keeps = {groups[gid].name.lower(): gid for gid, name in final.items() if name == groups[gid].name}
        held = 0
        for gid in list(self.d.group_orphans):
            other = keeps.get(final[gid].lower())
            if other is not None and other != gid:
                self._hold_orphan(gid, other)
                final[gid] = groups[gid].name
                held += 1
        taken = {name.lower(): gid for gid, name in final.items()}
        for group, gid in list(self._active_groups()):
            other = taken.get(group.name.lower())
            if other is not None and other != gid:
                held += 1
                self._hold_group(
                    group,
                    Diagnostic(
                        "error",
                        "GROUP_NAME_COLLISION",
                        group.address,
                        _name_taken(other, groups[other].name, final[other]),
                    ),
                )
        return held

    def _final_name(self, gid: str) -> str:
        """The name after this run of a PBX group no desired group stands for."""
        name = self.state.groups[gid].name
        return orphaned_name(name) if gid in self.d.group_orphans else name

    def _hold_orphan(self, gid: str, other: str) -> None:
        """An orphan whose `-` name another group keeps stays as it is (and keeps its numbers: not released)."""
        groups = self.state.groups
        self.d.group_orphans.remove(gid)
        address = f"group.{groups[gid].name}"
        message = (
            f"{address} (PBX group {gid}) is no longer desired, but PBX group {other} is named "
            f"{groups[other].name!r} already, the name it would get as an orphan; group names are unique on the PBX, "
            f"whatever the case: it stays as it is; rename PBX group {other} on the PBX to have it orphaned."
        )
        self.d.group_held.setdefault(address, []).append(Diagnostic("error", "GROUP_NAME_COLLISION", address, message))
        log.debug("%s: held at plan time: %s", address, message)

    def _check_licences(self) -> None:
        """R4: creates only while licences remain; the ones left over are held, in account order."""
        if self.config.licenses is None:
            return
        free = self.config.licenses - len(self.state.users)
        for n, account in enumerate(sorted(self.d.creates)):
            if n >= free:
                user = self.d.creates[account]
                self._hold(
                    user,
                    _error(
                        user.address,
                        "LICENSE_LIMIT",
                        f"no user licence left ({self.config.licenses} licences, "
                        f"{len(self.state.users)} PBX users); add licences or free one.",
                        user,
                    ),
                )


def _name_taken(gid: str, name: str, final: str) -> str:
    """Why a desired group cannot have its name: PBX group `gid`, now `name`, has `final` after this run."""
    if final == name:
        who = (
            f"PBX group {gid} is named {name!r} and keeps its name (adsync-plan did not make it, or leaves it as it is)"
        )
    else:
        who = f"PBX group {gid} ({name!r}) is orphaned in this run and gets the name {final!r}"
    return (
        f"{who}; group names are unique on the PBX, whatever the case: rename that group on the PBX or choose "
        "another name in pbx_groups."
    )


def orphaned_name(name: str) -> str:
    """An orphaned group's name: `-` before it, once (R9 for groups)."""
    return name if name.startswith(ORPHAN_MARK) else ORPHAN_MARK + name


def _twice(groups) -> set[DesiredGroup]:
    """The desired groups sharing a name (case-insensitive, as the PBX compares) or a binding key."""
    groups = list(groups)
    names = Counter(g.name.lower() for g in groups)
    keys = Counter(g.key for g in groups)
    return {g for g in groups if names[g.name.lower()] > 1 or keys[g.key] > 1}


def _all_exist(shapes: list[PhoneUser], numbers, internal: set[str], external: set[str]) -> bool:
    """Every primary internal number is an internal number of the PBX, every external number an external one,
    and every other number one of the PBX: what _check_numbers_exist asks of each user, for all at once."""
    primaries, externals, others = set(), set(), set()
    for shape in shapes:
        primaries.add(shape.primary_internal_number)
        externals.update(shape.external_numbers)
        others.update(shape.internal_numbers)
        others.update(shape.fax_numbers)
    return primaries <= internal and externals <= external and others <= numbers.keys()


def _id_order(pbx_id: str):
    return (0, int(pbx_id), "") if pbx_id.isdigit() else (1, 0, pbx_id)


def reconcile(desired, held, state, bindings, config, attributes, groups=None, group_bindings=None) -> Decisions:
    return Reconciler(desired, held, state, bindings, config, attributes, groups, group_bindings).run()
