"""Desired users vs PBX users -> ordered actions. Pure.

Users are compared by key with `!=` first; deepdiff then runs only on the users that differ, to name the
fields that changed (a whole-state DeepDiff costs ~80 s at 100,000 users; this costs ~1 s).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from adsync_plan.model import GROUP_FIELDS, Action, GroupAction, PbxGroup, PbxState, PhoneUser
from adsync_plan.rules.directory import Rendered
from adsync_plan.rules.pbx import Decisions, orphaned_name

ORPHAN_MARK = "-"


def changed_fields(before: PhoneUser, after: PhoneUser) -> tuple[str, ...]:
    from deepdiff import DeepDiff  # here: its import is 40% of every command's start-up, and only plan needs it

    diff = DeepDiff(before.to_dict(), after.to_dict(), verbose_level=0)
    return tuple(sorted(str(key) for key in diff.affected_root_keys))


def orphaned(user: PhoneUser) -> PhoneUser:
    """R9: a `-` before the last name (once) and every number but the primary internal one removed."""
    last = user.last_name if user.last_name.startswith(ORPHAN_MARK) else ORPHAN_MARK + user.last_name
    primary = user.primary_internal_number
    keep = (primary,) if primary in user.internal_numbers else ()
    return user.changed(last_name=last, internal_numbers=keep, external_numbers=(), fax_numbers=())


def actions(decisions: Decisions, state: PbxState, map_fields=map) -> tuple[list[Action], int]:
    """The actions in apply order (orphans, updates, creates, each sorted), and the unchanged count.

    Naming the changed fields with deepdiff is the costly part (about 0.2 ms a changed user, a minute when
    all 100,000 change): `map_fields(changed_fields_of, changes)` may spread it over processes."""
    changes, unchanged = [], 0
    for pbx_id in decisions.orphans:
        before = state.users[pbx_id]
        after = orphaned(before)
        if after != before:
            changes.append(Action(f"pbx_user.{before.login_id}", "orphan", pbx_id, before, after))
    for account in sorted(decisions.matches):
        desired, pbx_id, _ = decisions.matches[account]
        before = state.users[pbx_id]
        if before == desired.user:
            unchanged += 1
            continue
        changes.append(Action(desired.address, "update", pbx_id, before, desired.user, (), desired.source_id))
    named = [
        replace(a, fields=fields) for a, fields in zip(changes, map_fields(changed_fields_of, changes), strict=True)
    ]
    creates = [
        Action(desired.address, "create", None, None, desired.user, (), desired.source_id)
        for desired in (decisions.creates[account] for account in sorted(decisions.creates))
    ]
    return named + creates, unchanged


def group_actions(decisions: Decisions, state: PbxState) -> list[GroupAction]:
    """The group actions in apply order: orphans, updates, creates (each by name). Members are addresses:
    `user.<account>` for a directory user, `pbx_user.<login>` for a PBX user none stands for (a member added
    by hand); `member_ids` resolves those that exist on the PBX. Held users are no members; a protected one
    is (the group changes, not the user)."""
    if not (decisions.group_orphans or decisions.group_matches or decisions.group_creates):
        return []  # no groups: nothing to index
    matches, protected = decisions.matches, decisions.protected
    # a protected user is a member too: R10 keeps its own name and numbers, membership is the group's
    id_of = {account: pbx_id for account, (_, pbx_id, _) in matches.items()} | protected
    kept = [decisions.group_matches[name] for name in sorted(decisions.group_matches)]
    changed = [(group, gid) for group, gid in kept if not _unchanged(group, state.groups[gid], id_of, decisions)]
    shown = set().union(*(state.groups[gid].members for gid in [*decisions.group_orphans, *(g for _, g in changed)]))
    address_of = {pbx_id: f"user.{account}" for account, pbx_id in id_of.items() if pbx_id in shown}

    def pbx_members(group: PbxGroup) -> tuple[tuple[str, ...], dict[str, str]]:
        shown = {address_of.get(i) or pbx_user_address(state, i): i for i in group.members}
        return tuple(sorted(shown)), shown

    def desired_members(accounts) -> tuple[tuple[str, ...], dict[str, str]]:
        wanted = [a for a in accounts if a in matches or a in decisions.creates or a in protected]
        ids = {
            f"user.{a}": matches[a][1] if a in matches else protected[a] for a in wanted if a not in decisions.creates
        }
        return tuple(sorted(f"user.{a}" for a in wanted)), ids

    orphans, updates, creates = [], [], []
    for gid in decisions.group_orphans:
        current = state.groups[gid]
        members, ids = pbx_members(current)
        before = PbxGroup(current.name, members, current.numbers)
        after = PbxGroup(orphaned_name(current.name))
        if after != before:
            key = next(k for k, i in decisions.group_bindings.items() if i == gid)
            orphans.append(
                GroupAction(f"group.{current.name}", "orphan", gid, key, before, after, _fields(before, after), ids)
            )
    for group, gid in changed:
        current = state.groups[gid]
        members, ids = pbx_members(current)
        before = PbxGroup(current.name, members, current.numbers)
        wanted, wanted_ids = desired_members(group.members)
        after = PbxGroup(group.name, wanted, group.numbers)
        if after != before:
            fields = _fields(before, after)
            updates.append(
                GroupAction(group.address, "update", gid, group.key, before, after, fields, {**ids, **wanted_ids})
            )
    for name in sorted(decisions.group_creates):
        group = decisions.group_creates[name]
        wanted, wanted_ids = desired_members(group.members)
        creates.append(
            GroupAction(
                group.address, "create", None, group.key, None, PbxGroup(name, wanted, group.numbers), (), wanted_ids
            )
        )
    return orphans + updates + creates


def _unchanged(group, current: PbxGroup, id_of: dict[str, str], decisions: Decisions) -> bool:
    """A kept group that stays as it is, seen in PBX user ids: most groups do not change in a run, and only a
    changed one needs its members as addresses. False when unsure: the addresses decide then."""
    if (group.name, group.numbers) != (current.name, current.numbers):
        return False
    ids = list(map(id_of.get, group.members))
    if None in ids:  # a member to create, or one held or gone (no member)
        if any(pbx_id is None and a in decisions.creates for a, pbx_id in zip(group.members, ids, strict=True)):
            return False
        ids = [pbx_id for pbx_id in ids if pbx_id is not None]
    return len(ids) == len(current.members) and set(ids) == set(current.members)


def _fields(before: PbxGroup, after: PbxGroup) -> tuple[str, ...]:
    return tuple(f for f in GROUP_FIELDS if getattr(before, f) != getattr(after, f))


def pbx_user_address(state: PbxState, pbx_id: str) -> str:
    user = state.users.get(pbx_id)
    return f"pbx_user.{user.login_id}" if user else f"pbx_user_id.{pbx_id}"


def changed_fields_of(action: Action) -> tuple[str, ...]:
    return changed_fields(action.before, action.after)


def likely_fields(rendered: Rendered, state: PbxState, bindings: Mapping[str, str], everyone: bool) -> dict:
    """PBX user id -> (the shape it likely gets, the fields that change), for the PBX users a plan likely
    changes, worked out before the PBX rules decide (by another process, meanwhile): each bound to a desired
    user of another shape (updated); each bound to a source id the directory no longer has, or (`everyone`:
    ownership all) bound to none while no user in scope has its e-mail address (orphaned). A guess that is
    wrong or missing costs only naming those fields in `actions`.

    Only as many guesses are named here as take about as long as plan's reconciling (one for every ten users
    in scope: deepdiff takes 0.2 ms a user, the rules 20 us): when nearly every user changes, `actions` names
    the rest in two processes, as without guesses."""
    alone = max(1_000, len(rendered.desired) // 10)
    likely, users = [], state.users
    for user in rendered.desired.values():
        pbx_id = bindings.get(user.source_id)
        before = users.get(pbx_id) if pbx_id is not None else None
        if before is not None and before != user.user:
            likely.append((pbx_id, before, user.user))
    present = {u.source_id for u in rendered.desired.values()} | {h.source_id for h in rendered.held}
    bound_to = {pbx_id: source_id for source_id, pbx_id in bindings.items()}
    emails = {u.user.email.lower() for u in rendered.desired.values()} | {
        (h.email or "").lower() for h in rendered.held
    }
    for pbx_id, before in users.items():
        source_id = bound_to.get(pbx_id)
        if source_id in present or (source_id is None and (not everyone or (before.email or "").lower() in emails)):
            continue
        likely.append((pbx_id, before, orphaned(before)))
    return {pbx_id: (after, changed_fields(before, after)) for pbx_id, before, after in likely[:alone]}


def known_fields(likely: Mapping[str, tuple[PhoneUser, tuple[str, ...]]], map_fields=map):
    """A `map_fields` for `actions`: an action's fields from `likely` (likely_fields) when it guessed the same
    change, the others named by `map_fields`. The fields depend only on before and after, and the before of a
    PBX user id is the same state's in both."""

    def known(fn, changes):
        guessed = [likely.get(a.pbx_user_id, (None,)) for a in changes]
        misses = [a for a, guess in zip(changes, guessed, strict=True) if guess[0] != a.after]
        named = iter(map_fields(fn, misses))
        return [guess[1] if guess[0] == a.after else next(named) for a, guess in zip(changes, guessed, strict=True)]

    return known


def bindings(decisions: Decisions) -> dict[str, str]:
    """source id -> PBX user id for every matched user (creates are bound when apply creates them)."""
    return {user.source_id: pbx_id for user, pbx_id, _ in decisions.matches.values()}


def safety_problems(
    orphan_count: int, decisions: Decisions, state_bindings, desired_ids, safety, in_scope: int | None = None
) -> list[str]:
    """R13: too many orphans, a source that returns too few of the bound users, or nobody in scope at all (an
    empty export or a wrong group: on first contact no binding tells, and a count limit may be high)."""
    problems = []
    if in_scope == 0 and decisions.managed:
        problems.append(
            f"the source put no user in scope, while the PBX has {decisions.managed} managed users that would all "
            "become orphans"
        )
    managed = decisions.managed + decisions.group_managed  # group orphans count with user orphans
    limit = safety.max_orphans if isinstance(safety.max_orphans, int) else int(safety.max_orphans * managed)
    what = "managed PBX users and groups" if decisions.group_managed else "managed PBX users"
    if orphan_count > limit:
        problems.append(
            f"the plan would orphan {orphan_count} of {managed} {what}, more than safety.max_orphans allows ({limit})"
        )
    bound = len(state_bindings)
    returned = len(desired_ids & state_bindings.keys())
    if bound and returned < safety.min_source_ratio * bound:
        problems.append(
            f"the source returned {returned} of the {bound} users bound to PBX users, fewer than "
            f"safety.min_source_ratio ({safety.min_source_ratio:g}) allows"
        )
    return problems
