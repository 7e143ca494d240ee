"""What every plan keeps, whoever wrote it: one list of invariants, two callers.

`plan` checks its own actions after the diff (a violation there is a bug of ours), and `apply` checks the
saved plan's actions before the first step, against the configuration it runs with and the PBX it has just
read: a plan file is input, and not even a plan written by a bug of ours may delete a user, change a
protected one, give a number two owners or use a reserved number. Pure: actions, a PBX state, bindings and
the configuration in; sentences out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from adsync_plan.config import Config
from adsync_plan.errors import PlanRefused
from adsync_plan.model import GROUP_NAME_MAX, OVERRIDE_MASS_ORPHAN, ROLE_ADMIN, Action, GroupAction, PbxState, Plan
from adsync_plan.rules.numbers import NumberRules

ACTIONS = ("create", "update", "orphan")
ORPHAN_MARK = "-"
SHOWN = 5  # violations named in the refusal; the rest are counted


@dataclass
class Facts:
    """One plan's actions and what they are checked against; the costly indexes are built when asked for."""

    changes: Sequence[Action]
    state: PbxState
    bindings: Mapping[str, str]  # source id -> PBX user id, of the snapshot the plan was made or is applied on
    config: Config
    allow_mass_orphan: bool
    group_changes: Sequence[GroupAction] = ()
    group_bindings: Mapping[str, str] = field(default_factory=dict)  # group key -> PBX group id

    @cached_property
    def group_targeted(self) -> list[GroupAction]:
        """Group updates and orphans aimed at an existing PBX group."""
        return [a for a in self.group_changes if a.action != "create" and a.pbx_group_id in self.state.groups]

    @cached_property
    def targeted(self) -> list[Action]:
        """Updates and orphans aimed at an existing PBX user (the others break `_targets`)."""
        return [a for a in self.changes if a.action in ("update", "orphan") and a.pbx_user_id in self.state.users]

    @cached_property
    def writes(self) -> list[Action]:
        """Creates and updates: the actions that set a user's fields and numbers."""
        users = self.state.users
        return [a for a in self.changes if a.action == "create" or (a.action == "update" and a.pbx_user_id in users)]

    def live(self, action: Action):
        return self.state.users[action.pbx_user_id]


def _known_actions(facts: Facts) -> Iterator[str]:
    for a in facts.changes:
        if a.action not in ACTIONS:
            yield f"{a.address}: the action '{a.action}' does not exist (no user is ever deleted)"


def _targets(facts: Facts) -> Iterator[str]:
    """A create makes a new user; an update or orphan names an existing one, as it is now, once."""
    for a in facts.changes:
        if a.action == "create" and (a.pbx_user_id is not None or a.before is not None):
            yield f"{a.address}: a create names an existing PBX user ({a.pbx_user_id})"
        elif a.action in ("update", "orphan") and a.pbx_user_id not in facts.state.users:
            yield f"{a.address}: the PBX has no user {a.pbx_user_id} to {a.action}"
        elif a.action in ("update", "orphan") and a.before != facts.live(a):
            yield f"{a.address}: its 'before' is not PBX user {a.pbx_user_id} as it is"
    ids = Counter(a.pbx_user_id for a in facts.changes if a.pbx_user_id is not None)
    sources = Counter(a.source_id for a in facts.changes if a.source_id)
    yield from (f"PBX user {i} is changed by {n} actions" for i, n in ids.items() if n > 1)
    yield from (f"source id {s} is given to {n} PBX users" for s, n in sources.items() if n > 1)


def _protected(facts: Facts) -> Iterator[str]:
    """R10: no change of a user in protect.logins or of an administrator, except an administrator that this
    tool bound as one, kept an administrator."""
    for a in facts.targeted:
        live = facts.live(a)
        if live.login_id in facts.config.protect_logins:
            yield f"{a.address}: PBX user {a.pbx_user_id} (login {live.login_id}) is protected by protect.logins"
        elif a.pbx_user_id in facts.state.admins and not (
            a.action == "update"
            and a.after.role == ROLE_ADMIN
            and a.source_id
            and facts.bindings.get(a.source_id) == a.pbx_user_id
        ):
            yield f"{a.address}: PBX user {a.pbx_user_id} (login {live.login_id}) is an administrator"


def _orphans(facts: Facts) -> Iterator[str]:
    """R9: an orphan only gets the mark before its last name and loses every number but its primary; only a
    managed user becomes one."""
    bound = set(facts.bindings.values())
    for a in (a for a in facts.targeted if a.action == "orphan"):
        live, after = facts.live(a), a.after
        kept = (after.login_id, after.first_name, after.email, after.role, after.primary_internal_number)
        marked = live.last_name if live.last_name.startswith(ORPHAN_MARK) else ORPHAN_MARK + live.last_name
        if kept != (live.login_id, live.first_name, live.email, live.role, live.primary_internal_number):
            yield f"{a.address}: an orphan keeps its login ID, first name, e-mail, role and primary number"
        elif after.last_name != marked or not after.numbers() <= {live.primary_internal_number}:
            yield f"{a.address}: an orphan only gets '{ORPHAN_MARK}' before its last name and loses its numbers"
        if facts.config.ownership == "bound" and a.pbx_user_id not in bound:
            yield f"{a.address}: PBX user {a.pbx_user_id} is not managed (ownership: bound) and cannot be orphaned"


def _reserved(facts: Facts) -> Iterator[str]:
    """R5: no emergency or reserved number as login ID or internal number."""
    rules = NumberRules(facts.config.numbering)
    for a in facts.writes:
        for number in sorted({a.after.login_id, *a.after.internal_numbers}):
            reason = rules.reserved_reason(number)
            if reason:
                yield f"{a.address}: {number} {reason}"


def _numbers(facts: Facts) -> Iterator[str]:
    """R11, R12: every number exists, a user's primary is one of its internal numbers, and after the plan
    each number has one owner: taken only from an owner that the plan releases it from."""
    numbers, released, claims = facts.state.numbers, set(), {}
    for a in facts.targeted:
        released |= facts.live(a).numbers() - a.after.numbers()
    for a in facts.group_targeted:
        released |= set(facts.state.groups[a.pbx_group_id].numbers) - set(a.after.numbers)
    for a in facts.group_changes:  # one owner per number, groups included
        own = f"group:{a.pbx_group_id}" if a.action != "create" else None
        for number in a.after.numbers:
            info = numbers.get(number)
            if info is None:
                yield f"{a.address}: number {number} does not exist on the PBX"
            elif own is None or info.owner != own:
                claims.setdefault(number, []).append(a.address)
                if info.owner is not None and number not in released:
                    yield f"{a.address}: number {number} belongs to {info.owner}, which the plan does not release"
    for a in facts.writes:
        primary = a.after.primary_internal_number
        if primary is None or primary not in (*a.after.internal_numbers, *a.after.fax_numbers):
            yield f"{a.address}: its primary internal number {primary} is not one of its own numbers"
        for number in sorted(a.after.numbers()):
            info = numbers.get(number)
            if info is None:
                yield f"{a.address}: number {number} does not exist on the PBX"
            elif info.owner != a.pbx_user_id or a.pbx_user_id is None:
                claims.setdefault(number, []).append(a.address)
                if info.owner is not None and number not in released:
                    yield f"{a.address}: number {number} belongs to {info.owner}, which the plan does not release"
    for number, claimants in claims.items():
        if len(claimants) > 1:
            yield f"number {number} would have {len(claimants)} owners ({', '.join(sorted(claimants))})"


def _logins(facts: Facts) -> Iterator[str]:
    """R6: login IDs stay unique: taken only from a user whose login ID the plan changes, claimed once."""
    users = facts.state.users
    claimed = {
        a.after.login_id: a for a in facts.writes if a.action == "create" or a.after.login_id != facts.live(a).login_id
    }
    if not claimed:
        return
    moving = {
        facts.live(a).login_id
        for a in facts.writes
        if a.action == "update" and a.after.login_id != facts.live(a).login_id
    }
    holders = {u.login_id: i for i, u in users.items() if u.login_id in claimed}
    for login, a in claimed.items():
        holder = holders.get(login)
        if holder is not None and holder != a.pbx_user_id and login not in moving:
            yield f"{a.address}: login ID {login} is used by PBX user {holder}"
    twice = Counter(a.after.login_id for a in facts.writes)
    yield from (f"login ID {login} would be given to {n} users" for login, n in twice.items() if n > 1)


def _licences(facts: Facts) -> Iterator[str]:
    """R4: creates only while licences remain (pbx.licenses as apply runs with it)."""
    licences = facts.config.licenses
    creates = sum(1 for a in facts.changes if a.action == "create")
    if creates and licences is not None and creates > licences - len(facts.state.users):
        users = "1 user" if creates == 1 else f"{creates} users"
        yield (
            f"the plan creates {users}, but only {max(licences - len(facts.state.users), 0)} of the {licences} "
            "licences (pbx.licenses) are free"
        )


def _admin_grants(facts: Facts) -> Iterator[str]:
    """R3: the admin role comes from an admin group; with none configured, nobody is granted it."""
    if facts.config.scope.admin_groups:
        return
    for a in facts.writes:
        was_admin = a.action == "update" and facts.live(a).role == ROLE_ADMIN
        if a.after.role == ROLE_ADMIN and not was_admin:
            yield f"{a.address}: grants the admin role, but scope.admin_groups names no admin group"


def _mass_orphans(facts: Facts) -> Iterator[str]:
    """R13: not more orphans than safety.max_orphans allows, unless the plan was made with the override."""
    if facts.allow_mass_orphan:
        return
    orphans = sum(1 for a in facts.changes if a.action == "orphan")
    orphans += sum(1 for a in facts.group_changes if a.action == "orphan")  # group orphans count with users
    if not orphans:
        return
    protect, bound = facts.config.protect_logins, set(facts.bindings.values())
    managed = sum(
        1
        for i, u in facts.state.users.items()
        if i not in facts.state.admins and u.login_id not in protect and (facts.config.ownership == "all" or i in bound)
    )
    managed += len({i for i in facts.group_bindings.values() if i in facts.state.groups})
    limit = facts.config.safety.max_orphans
    limit = limit if isinstance(limit, int) else int(limit * managed)
    if orphans > limit:
        yield (
            f"the plan orphans {orphans} of {managed} managed PBX users, more than safety.max_orphans allows "
            f"({limit}), and was not made with --allow-mass-orphan"
        )


def _groups(facts: Facts) -> Iterator[str]:
    """Groups: no delete; a create makes a new group; an update or orphan names a group this tool made or
    bound (never another), as it is now, once; an orphan only gets '-' before its name and loses its members
    and numbers; names fit the PBX and stay unique; every member is a PBX user or created by the plan."""
    groups, bound = facts.state.groups, facts.group_bindings
    created = {a.address for a in facts.changes if a.action == "create"}
    for a in facts.group_changes:
        if a.action not in ACTIONS or not a.address.startswith("group."):
            yield f"{a.address}: the group action '{a.action}' does not exist (no group is ever deleted)"
        elif a.action == "create":
            if a.pbx_group_id is not None or a.before is not None or bound.get(a.key) in groups:
                yield f"{a.address}: a create names an existing PBX group"
        elif a.pbx_group_id not in groups or bound.get(a.key) != a.pbx_group_id:
            yield f"{a.address}: PBX group {a.pbx_group_id} was not made or bound by adsync-plan; it is never touched"
        else:
            live = groups[a.pbx_group_id]
            members = sorted(a.member_ids.get(m, m) for m in a.before.members)
            if (a.before.name, a.before.numbers, members) != (live.name, live.numbers, sorted(live.members)):
                yield f"{a.address}: its 'before' is not PBX group {a.pbx_group_id} as it is"
            marked = live.name if live.name.startswith(ORPHAN_MARK) else ORPHAN_MARK + live.name
            if a.action == "orphan" and (a.after.name, a.after.members, a.after.numbers) != (marked, (), ()):
                yield f"{a.address}: an orphaned group only gets '{ORPHAN_MARK}' before its name and loses its members"
        if not 0 < len(a.after.name) <= GROUP_NAME_MAX:
            yield f"{a.address}: the name {a.after.name!r} is not 1 to {GROUP_NAME_MAX} characters long"
        for member in a.after.members:
            if facts.state.users.get(a.member_ids.get(member)) is None and member not in created:
                yield f"{a.address}: member {member} is no PBX user and is not created by the plan"
    yield from _group_names(facts)
    ids = Counter(a.pbx_group_id for a in facts.group_changes if a.pbx_group_id is not None)
    yield from (f"PBX group {i} is changed by {n} actions" for i, n in ids.items() if n > 1)


def _group_names(facts: Facts) -> Iterator[str]:
    """After the plan, no two PBX groups share a name (case-insensitive)."""
    names = {gid: g.name for gid, g in facts.state.groups.items()}
    news = []
    for a in facts.group_changes:
        if a.action == "create":
            news.append(a.after.name)
        elif a.pbx_group_id in names:
            names[a.pbx_group_id] = a.after.name
    counts = Counter(name.lower() for name in (*names.values(), *news))
    yield from (f"the group name {name!r} would be given to {n} PBX groups" for name, n in counts.items() if n > 1)


INVARIANTS = (
    _known_actions,
    _targets,
    _protected,
    _orphans,
    _reserved,
    _numbers,
    _logins,
    _licences,
    _admin_grants,
    _mass_orphans,
    _groups,
)


def violations(
    changes: Sequence[Action],
    state: PbxState,
    bindings: Mapping[str, str],
    config: Config,
    allow_mass_orphan: bool = False,
    group_changes: Sequence[GroupAction] = (),
    group_bindings: Mapping[str, str] | None = None,
) -> list[str]:
    """Every invariant the actions break, as clauses naming the action; empty when the plan is sound."""
    facts = Facts(changes, state, bindings, config, allow_mass_orphan, group_changes, group_bindings or {})
    return [found for invariant in INVARIANTS for found in invariant(facts)]


def _listed(found: list[str]) -> str:
    more = f"; and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    return "; ".join(found[:SHOWN]) + more


def refuse_unsound_plan(
    plan: Plan,
    plan_path,
    state: PbxState,
    bindings: Mapping[str, str] | None,
    config: Config,
    group_bindings: Mapping[str, str] | None = None,
) -> None:
    """Before apply's first step: the saved plan against the configuration apply runs with and the live PBX."""
    found = violations(
        plan.changes,
        state,
        bindings or {},
        config,
        OVERRIDE_MASS_ORPHAN in plan.overrides,
        plan.group_changes,
        group_bindings,
    )
    if found:
        raise PlanRefused(
            f"{plan_path}: the plan breaks the rules of adsync-plan for this PBX and configuration "
            f"({_listed(found)}). Nothing was changed; make a new plan."
        )


def refuse_own_plan(
    changes: Sequence[Action],
    state: PbxState,
    bindings: Mapping[str, str],
    config: Config,
    group_changes: Sequence[GroupAction] = (),
    group_bindings: Mapping[str, str] | None = None,
) -> None:
    """After plan's diff. The rules already held every user that would break an invariant, so a violation
    here is a bug of ours: no plan rather than a wrong one. (R13 has its own diagnostics and override.)"""
    found = violations(changes, state, bindings, config, True, group_changes, group_bindings)
    if found:
        raise PlanRefused(
            f"the plan would break the rules of adsync-plan ({_listed(found)}); this is a bug of adsync-plan, "
            "please report it. Nothing was planned."
        )
