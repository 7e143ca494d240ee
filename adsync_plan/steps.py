"""A plan's actions as provider calls, in apply order (SPEC 8), each describing itself.

Order: every removal of a number assignment (groups', then orphans', then updates'), then creates and field
updates, then new number assignments, call-service changes and primary numbers; last the groups: renamed,
created, given their new numbers, then their members (so a member created in this apply has its id). So a
number can move from an orphan to a new user, or between a user and a group, in one apply. A number that
stays with its user but changes service (phone <-> fax) is changed in place (`Provider.change_service`),
never released and assigned again.

Group names are unique on the PBX (case-insensitive) at every moment, not only after the plan: a group
renames only once the group holding its new name has moved on (`_rename_order`), and groups that swap names
(a cycle) go through a temporary name first. The plan shows only the final names; the temporary name is
apply's detail, in its log and journal, and in the next plan if apply stops between the two renames.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace

from adsync_plan.errors import PbxError
from adsync_plan.model import (
    EDITABLE_FIELDS,
    GROUP_NAME_MAX,
    ROLE_ADMIN,
    SERVICE_FAX,
    SERVICE_STANDARD,
    Action,
    GroupAction,
)
from adsync_plan.providers.base import Provider


@dataclass(frozen=True)
class Step:
    index: int  # the action's position in the plan
    kind: str  # release | create | update | admin | assign | service | primary | group_* (GROUP_KINDS)
    args: tuple
    text: str  # a sentence for logs and reports


GROUP_KINDS = ("group_release", "group_create", "group_rename", "group_assign", "group_members")
# a swap's temporary name: says who renamed the group and that it is on its way (should an apply stop there);
# never a name a directory or configuration gives a group by chance, and followed by a number if one does
TEMPORARY_NAME = "adsync-plan renaming {id}"


def is_group_step(step: Step) -> bool:
    return step.kind.startswith("group_")


def plan_steps(
    actions: Sequence[Action], group_actions: Sequence[GroupAction] = (), group_names: Collection[str] = ()
) -> list[Step]:
    """The steps of the user actions and then the group actions; a group action's index counts on from the
    last user action's (`plan.changes + plan.group_changes`). `group_names`: the names of every PBX group now
    (apply reads them), which a temporary name must avoid."""
    group_releases, group_rest = _group_steps(len(actions), group_actions, group_names)
    return group_releases + _user_steps(actions) + group_rest


def _user_steps(actions: Sequence[Action]) -> list[Step]:
    releases, changes, assigns = [], [], []
    for index, action in enumerate(actions):
        released = _released(action)
        releases += [Step(index, "release", (n,), f"{action.address}: remove number {n}") for n in sorted(released)]
        changes += _change_steps(index, action)
        assigns += _assign_steps(index, action, released)
    # orphans come first in the plan, so their releases already precede the updates' releases
    return releases + changes + assigns


def _released(action: Action) -> set[str]:
    """Numbers to unassign: those the user loses."""
    if action.before is None:
        return set()
    return action.before.numbers() - action.after.numbers()


def _service_changed(action: Action) -> set[str]:
    """Numbers the user keeps whose call service changes (phone <-> fax)."""
    if action.before is None:
        return set()
    before, after = action.before, action.after
    return (set(before.fax_numbers) ^ set(after.fax_numbers)) & before.numbers() & after.numbers()


def _change_steps(index: int, action: Action) -> list[Step]:
    before, after = action.before, action.after
    if action.action == "create":
        steps = [Step(index, "create", (), f"{action.address}: create user with login ID {after.login_id}")]
    else:
        changed = {f: getattr(after, f) for f in EDITABLE_FIELDS if getattr(before, f) != getattr(after, f)}
        steps = [Step(index, "update", (changed,), f"{action.address}: set {', '.join(changed)}")] if changed else []
    was_admin = before is not None and before.role == ROLE_ADMIN
    if (after.role == ROLE_ADMIN) != was_admin:
        verb = "grant" if after.role == ROLE_ADMIN else "revoke"
        steps.append(Step(index, "admin", (after.role == ROLE_ADMIN,), f"{action.address}: {verb} administrator"))
    return steps


def _assign_steps(index: int, action: Action, released: set[str]) -> list[Step]:
    after = action.after
    kept = action.before.numbers() - released if action.before else set()
    steps = []
    for number in sorted(after.numbers() - kept):
        service = SERVICE_FAX if number in after.fax_numbers else SERVICE_STANDARD
        steps.append(Step(index, "assign", (number, service), f"{action.address}: assign {number} ({service})"))
    for number in sorted(_service_changed(action)):
        service = SERVICE_FAX if number in after.fax_numbers else SERVICE_STANDARD
        steps.append(Step(index, "service", (number, service), f"{action.address}: make {number} {service}"))
    before_primary = action.before.primary_internal_number if action.before else None
    if after.primary_internal_number != before_primary or before_primary in released:
        number = after.primary_internal_number
        steps.append(Step(index, "primary", (number,), f"{action.address}: primary internal number {number}"))
    return steps


def _group_steps(
    offset: int, group_actions: Sequence[GroupAction], group_names: Collection[str] = ()
) -> tuple[list[Step], list[Step]]:
    """(the releases of group numbers, the other group steps: renames, then create, new numbers, members)."""
    releases, rest = [], []
    for j, a in enumerate(group_actions):
        index, before = offset + j, a.before
        had = set(before.numbers) if before else set()
        for number in sorted(had - set(a.after.numbers)):
            releases.append(Step(index, "group_release", (number,), f"{a.address}: remove number {number}"))
        if before is None:
            rest.append(Step(index, "group_create", (a.after.name,), f"{a.address}: create group {a.after.name}"))
        for number in sorted(set(a.after.numbers) - had):
            rest.append(Step(index, "group_assign", (number,), f"{a.address}: assign {number}"))
        if a.after.members != (before.members if before else ()):
            shown = ", ".join(a.after.members) or "none"
            rest.append(Step(index, "group_members", (a.after.members,), f"{a.address}: members {shown}"))
    # every rename before any create: a new group may take the name another gives up
    return releases, _rename_order(offset, group_actions, group_names) + rest


def _rename_order(offset: int, group_actions: Sequence[GroupAction], group_names: Collection[str]) -> list[Step]:
    """The renames, each after the rename of the group that holds its new name (case-insensitive), so that no
    name is ever taken twice. Each name is wanted by at most one group (the plan's final names are unique), so
    the renames form chains, done from their free end, and cycles (swaps), each opened by moving one of its
    groups to a temporary name first."""
    pending = {
        offset + j: a for j, a in enumerate(group_actions) if a.before is not None and a.before.name != a.after.name
    }
    holder = {a.before.name.lower(): index for index, a in pending.items()}  # the name a pending group has now
    avoid = {n.lower() for n in group_names} | set(holder) | {a.after.name.lower() for a in group_actions}
    steps = []
    while pending:
        ready = [i for i, a in pending.items() if holder.get(a.after.name.lower(), i) == i]
        for index in ready:
            a = pending.pop(index)
            holder.pop(a.before.name.lower(), None)
            steps.append(Step(index, "group_rename", (a.after.name,), f"{a.address}: rename to {a.after.name}"))
        if not ready:  # only cycles are left: open the first by a temporary name, which frees its name
            index = min(pending)
            a = pending[index]
            name = _temporary_name(a.pbx_group_id, avoid)
            avoid.add(name.lower())
            holder.pop(a.before.name.lower(), None)
            pending[index] = replace(a, before=replace(a.before, name=name))
            holder[name.lower()] = index
            text = f"{a.address}: rename to {name} for now ({a.after.name} is still another group's name)"
            steps.append(Step(index, "group_rename", (name,), text))
    return steps


def _temporary_name(group_id: str, avoid: set[str]) -> str:
    """TEMPORARY_NAME for the group, followed by a number if some group has that name already."""
    base = TEMPORARY_NAME.format(id=group_id)[:GROUP_NAME_MAX]
    name, n = base, 1
    while name.lower() in avoid:
        n += 1
        name = f"{base[: GROUP_NAME_MAX - len(str(n)) - 1]} {n}"
    return name


def run_group_step(
    step: Step, action: GroupAction, provider: Provider, group_id: str | None, member_id: Callable[[str], str | None]
) -> str | None:
    """Carry out one group step; returns the new PBX group id for a create. `member_id` gives the PBX id of
    a member address (a user created earlier in this apply, or one the plan resolved)."""
    if step.kind == "group_create":
        return provider.create_group(step.args[0])
    if step.kind == "group_rename":
        provider.rename_group(group_id, step.args[0])
    elif step.kind == "group_release":
        provider.release_group_number(group_id, step.args[0])
    elif step.kind == "group_assign":
        provider.assign_group_number(group_id, step.args[0])
    elif step.kind == "group_members":
        ids = {address: action.member_ids.get(address) or member_id(address) for address in step.args[0]}
        missing = sorted(address for address, pbx_id in ids.items() if pbx_id is None)
        if missing:
            raise PbxError(f"{action.address}: no PBX user for member(s) {', '.join(missing)} (not created?).")
        provider.set_group_members(group_id, sorted(ids.values()))
    return None


def run_step(step: Step, action: Action, provider: Provider, user_id: str | None) -> str | None:
    """Carry out one step; returns the new PBX user id for a create."""
    if step.kind == "create":
        return provider.create_user(action.after)
    if step.kind == "update":
        provider.update_user(user_id, step.args[0])
    elif step.kind == "admin":
        provider.set_admin(user_id, step.args[0])
    elif step.kind == "release":
        provider.release_number(user_id, step.args[0])
    elif step.kind == "assign":
        provider.assign_number(user_id, *step.args)
    elif step.kind == "service":
        provider.change_service(user_id, *step.args)
    elif step.kind == "primary":
        provider.set_primary_internal_number(user_id, step.args[0])
    return None
