"""`explain ACCOUNT`: every decision about one user, as lines for people. Pure: it reads only the results of
the pipeline (the directory, the rendered desired state, the reconcile decisions and the plan).

Also `outcomes()`, the final decision about every user, which the CLI logs at debug level.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from adsync_plan.config import Config
from adsync_plan.errors import InputError
from adsync_plan.model import Action, Diagnostic, Directory, DirectoryUser, normalise_dn
from adsync_plan.rules.directory import DesiredUser, HeldUser, address_of, in_scope
from adsync_plan.rules.groups import GROUP_NUMBER_CONFLICT, DesiredGroup, mapped_numbers, phone_numbers
from adsync_plan.rules.numbers import NumberRules
from adsync_plan.schemas import guess_name

if TYPE_CHECKING:  # the pipeline hands its results in; this module never runs a stage itself
    from adsync_plan.pipeline import PlanResult

log = logging.getLogger(__name__)

# the rule (SPEC 5) behind each diagnostic code
RULE_OF_CODE = {
    "MISSING_FIRST_NAME": "R1",
    "MISSING_LAST_NAME": "R1",
    "MISSING_ACCOUNT": "R1",
    "MISSING_EMAIL": "R1",
    "DUPLICATE_EMAIL": "R2",
    "LICENSE_LIMIT": "R4",
    "RESERVED_NUMBER": "R5",
    "LOGIN_ID_COLLISION": "R6",
    "INVALID_EXTERNAL_NUMBER": "R7",
    "PROTECTED_USER": "R10",
    "NUMBER_CONFLICT": "R11",
    "NO_INTERNAL_NUMBER": "R12",
    "SAFETY_THRESHOLD": "R13",
    "DUPLICATE_ACCOUNT": "R14",
    "GROUP_NUMBER_CONFLICT": "pbx_groups",
    "GROUP_NAME_COLLISION": "pbx_groups",
}
_FIELDS = ("account", "first_name", "last_name", "email", "phones", "faxes", "enabled")


def explain(query: str, config: Config, result: PlanResult, directory: Directory | None = None) -> list[str]:
    """The decisions about the user `query` names: an account, `user.<account>`, a source id, or
    `pbx_user.<login_id>` for a PBX user. Raises InputError (one sentence) when there is nothing to explain."""
    if query.lower().startswith("pbx_user."):
        return _explain_pbx_user(query.partition(".")[2], config, result)
    if query.startswith("group."):
        return _explain_group(query.removeprefix("group."), config, result, directory)
    key = query.lower().removeprefix("user.")
    if directory is not None:
        entries = [u for u in directory.users if key in ((u.account or "").lower(), u.source_id.lower())]
        if not entries:
            raise InputError(
                f"{query}: no user with this account (sAMAccountName) or source id among the "
                f"{len(directory.users)} users the source returned; check the spelling and source.base_dn."
            )
        in_scope_entries = [u for u in entries if in_scope(u, config)]
        if not in_scope_entries:
            raise InputError(_out_of_scope_sentence(query, entries[0], config))
        lines = []
        for user in in_scope_entries:
            lines += _explain_entry(user, config, result, directory)
        return lines
    desired, held = _find_rendered(key, result)
    if desired is None and not held:
        raise InputError(
            f"{query}: neither a desired nor a held user in the desired state; it is out of scope or not in "
            "the directory. Run explain without --desired to read the directory and see why."
        )
    return _explain_rendered(key, desired, held, config, result)


# -- a directory entry ----------------------------------------------------------------------------------


def _out_of_scope_sentence(query: str, user: DirectoryUser, config: Config) -> str:
    if not user.enabled and not config.scope.include_disabled:
        reason = "the account is disabled (userAccountControl) and scope.include_disabled is false"
        fix = "enable the account"
    else:
        reason = "it is a member of none of scope.admin_groups and scope.user_groups"
        fix = "add it to one of those groups"
    return f"{query}: {user.dn} is in the directory but out of scope: {reason} (R3); nothing is planned for it; {fix}."


def _explain_entry(user: DirectoryUser, config: Config, result: PlanResult, directory: Directory) -> list[str]:
    address = address_of(user)
    attrs = directory.attributes
    lines = [f"{address}", f"  entry:      {user.dn}", f"  source id:  {user.source_id} ({attrs.get('source_id')})"]
    lines += [*_answered_by(directory.origin), ""]
    lines.append("Values read from the directory:")
    for name in _FIELDS:
        value = getattr(user, name)
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, tuple):
            value = ", ".join(repr(v) for v in value) if value else "(none)"
        elif value is None:
            value = "(missing)"
        lines.append(f"  {name:<11} {str(value):<40} from {attrs.get(name, name)}")
    lines += ["", "Scope (R3):"] + _scope_lines(user, config)
    lines += ["", "Numbers (SPEC 6):"] + _number_lines(user, config, attrs)
    held = next((h for h in result.desired.rendered.held if h.source_id == user.source_id), None)
    lines += ["", "Directory rules (R1, R2, R5, R12, R14):"]
    lines += _diagnostic_lines(held.diagnostics) if held else ["  passed every rule"]
    shared = phone_numbers(user, NumberRules(config.numbering))
    lines += _plan_lines(
        address, user.account, result, held_at_render=held is not None, phones=shared, groups=user.groups
    )
    return lines + [""]


def _answered_by(origin) -> list[str]:
    """Which domain controller and port the ldap source read (several answer to one name)."""
    if "server" not in origin:
        return []
    catalog = " (global catalog: the whole forest)" if origin.get("global_catalog") == "true" else ""
    return [f"  read from:  {origin['server']} port {origin['port']}{catalog}"]


def _scope_lines(user: DirectoryUser, config: Config) -> list[str]:
    admin = [g for g in config.scope.admin_groups if normalise_dn(g) in user.groups]
    users = [g for g in config.scope.user_groups if normalise_dn(g) in user.groups]
    how = "directly or through nested groups" if config.scope.nested_groups else "directly"
    role = in_scope(user, config)
    lines = [f"  in scope with the role {role}; enabled: {'yes' if user.enabled else 'no (include_disabled)'}"]
    lines += [f"  member ({how}) of admin group {g}" for g in admin]
    lines += [f"  member ({how}) of user group {g}" for g in users]
    if admin and users:
        lines.append("  an admin group wins over a user group")
    return lines


def _number_lines(user: DirectoryUser, config: Config, attrs) -> list[str]:
    rules = NumberRules(config.numbering)
    lines = []
    for field, values in (("phones", user.phones), ("faxes", user.faxes)):
        for value in values:
            parsed = rules.parse(value)
            text = f"  {value!r} ({attrs.get(field, field)}): {parsed.kind}"
            if parsed.kind == "external":
                derived = rules.derive_internal(parsed.number) if field == "phones" else None
                text += f" {parsed.number}" + (f", internal {derived} through numbering.blocks" if derived else "")
            elif parsed.kind == "internal":
                text += f" {parsed.number}"
            lines.append(text)
    numbers = rules.user_numbers(user.phones, user.faxes)
    if numbers.primary:
        lines.append(
            f"  primary internal number {numbers.primary} (the first phone value that yields one); "
            f"login ID {rules.login_id(numbers.primary)} (numbering.login_id {config.numbering.login_id})"
        )
    else:
        lines.append("  no primary internal number")
    lines.append("  ignored attributes: ipPhone, otherIpPhone, pager, mobile, homePhone (R8)")
    return lines


def _diagnostic_lines(diagnostics) -> list[str]:
    lines = []
    for d in diagnostics:
        where = ""
        if d.source and d.source.get("attribute"):
            where = f" [fix {d.source['attribute']} of {d.source.get('dn')}]"
        lines.append(f"  {d.severity} {d.code} ({RULE_OF_CODE.get(d.code, '-')}): {d.message}{where}")
    return lines


# -- the plan's view (shared with the desired-state mode) -----------------------------------------------


def _plan_lines(
    address: str,
    account: str | None,
    result: PlanResult,
    held_at_render: bool = False,
    phones: set[str] = frozenset(),
    groups: frozenset[str] = frozenset(),
) -> list[str]:
    d = result.decisions
    key = (account or "").lower()
    state = result.snapshot.state
    lines = ["", "PBX rules and matching (R4, R6, R7, R10, R11, SPEC 7):"]
    plan_time = d.held.get(address, []) + [x for x in d.diagnostics if x.address == address]
    if held_at_render:
        lines.append("  not checked: a directory rule holds the user already")
    else:
        lines += _diagnostic_lines(plan_time) or ["  passed every rule"]
    if key in d.matches:
        _, pbx_id, how = d.matches[key]
        lines.append(f"  matches {_pbx_name(state, pbx_id)} by {_how(how)}")
    elif key in d.protected:
        lines.append(f"  matches {_pbx_name(state, d.protected[key])}, which is protected (R10)")
    elif address in d.held_match:
        lines.append(f"  its PBX counterpart {_pbx_name(state, d.held_match[address])} stays exactly as it is")
    elif key in d.creates:
        lines.append("  no PBX user matches by binding or by e-mail address")
    lines += ["", "Plan:"] + _outcome_lines(address, key, result)
    return lines + _group_lines(key, phones, result, groups)


def _group_lines(
    account: str, phones: set[str], result: PlanResult, in_groups: frozenset[str] = frozenset()
) -> list[str]:
    """The PBX groups (pbx_groups) the user's numbers went to, and those it is (or is not) a member of;
    `in_groups` are the user's directory groups (known only when the directory was read)."""
    groups = result.desired.rendered.groups
    lines = []
    for name in sorted(groups):
        group = groups[name]
        member = account in group.members
        if group.shared_number is not None and (group.shared_number in phones or member):
            lines.append(
                f"  number {group.shared_number} goes to the group {name!r}, not to this user: other directory users "
                "carry it too (pbx_groups.shared_numbers: group); the user is planned with its other numbers"
            )
        if member:
            lines.append(f"  {_membership(account, group, result)} of the group {name!r}, for {group.purpose}")
        elif group.shared_number in phones or normalise_dn(group.directory_group or "") in in_groups:
            lines.append(f"  not a member of the group {name!r}: a held user is never a member")
    d = result.decisions
    for warning in (w for w in result.desired.rendered.warnings if w.code == "GROUP_NUMBER_CONFLICT"):
        if warning.message and f"user.{account}," in warning.message:
            lines.append(f"  {warning.address}: {warning.message}")
    if not lines and not (d.group_matches or d.group_creates):
        return []
    return ["", "Groups (pbx_groups):", *(lines or ["  in no PBX group"])]


def _membership(account: str, group, result: PlanResult) -> str:
    d = result.decisions
    if account in d.matches or account in d.creates or account in d.protected:
        return "member"
    return "not made a member (held)"


def _how(how: str) -> str:
    if how == "binding":
        return "binding (its source id is bound to this PBX user in the state snapshot)"
    return "e-mail address (case-insensitive; the binding is recorded when the plan is applied)"


def _pbx_name(state, pbx_id: str) -> str:
    u = state.users[pbx_id]
    return f"PBX user {pbx_id} (login {u.login_id}, {u.first_name} {u.last_name})"


def _action(address: str, result: PlanResult) -> Action | None:
    return next((a for a in result.plan.changes if a.address == address), None)


def _outcome_lines(address: str, key: str, result: PlanResult) -> list[str]:
    d = result.decisions
    action = _action(address, result)
    refused = _refused(result)
    if action is not None and action.action == "create":
        a = action.after
        return [
            f"  + create{refused}: login ID {a.login_id}, role {a.role}, primary internal number "
            f"{a.primary_internal_number}, numbers {', '.join(sorted(a.numbers())) or '(none)'}"
        ]
    if action is not None:
        heading = f"  ~ update PBX user {action.pbx_user_id}{refused}: the directory differs in these fields"
        return [heading, *_field_changes(action)]
    if key in d.matches:
        return [f"  unchanged: PBX user {d.matches[key][1]} already matches the directory"]
    if key in d.protected:
        return ["  nothing: a protected PBX user is never renamed, renumbered or orphaned (R10)"]
    return ["  held: no change is made for this user, and its PBX user (if any) is never orphaned"]


def _field_changes(action: Action) -> list[str]:
    before, after = action.before.to_dict(), action.after.to_dict()
    return [f"      {f}: {before[f]} -> {after[f]}" for f in action.fields]


# -- the desired-state mode (no directory access) -------------------------------------------------------


def _find_rendered(key: str, result: PlanResult) -> tuple[DesiredUser | None, list[HeldUser]]:
    rendered = result.desired.rendered
    desired = rendered.desired.get(key) or next((u for u in rendered.desired.values() if u.source_id == key), None)
    held = [h for h in rendered.held if key in ((h.account or "").lower(), h.source_id.lower())]
    return desired, held


def _explain_rendered(key, desired: DesiredUser | None, held: list[HeldUser], config, result) -> list[str]:
    lines = []
    if desired is not None:
        lines += [desired.address, f"  entry:      {desired.dn}", f"  source id:  {desired.source_id}", ""]
        lines.append("As rendered in the desired state (run explain without --desired for the raw attributes):")
        lines += [f"  {name:<24} {value}" for name, value in desired.user.to_dict().items()]
        lines += ["", "Directory rules (R1, R2, R5, R12, R14):", "  passed every rule"]
        lines += _plan_lines(desired.address, desired.account, result)
    for h in held:
        lines += [h.address, f"  entry:      {h.dn}", f"  source id:  {h.source_id}", ""]
        lines += ["Directory rules (R1, R2, R5, R12, R14):"] + _diagnostic_lines(h.diagnostics)
        lines += _plan_lines(h.address, h.account, result, held_at_render=True)
    return lines + [""]


# -- a PBX user -----------------------------------------------------------------------------------------


def _explain_pbx_user(login_id: str, config: Config, result: PlanResult) -> list[str]:
    state, d = result.snapshot.state, result.decisions
    pbx_id = next((i for i, u in state.users.items() if u.login_id == login_id), None)
    if pbx_id is None:
        raise InputError(f"pbx_user.{login_id}: no PBX user has the login ID {login_id}; check the snapshot.")
    lines = [
        f"pbx_user.{login_id}",
        f"  {_pbx_name(state, pbx_id)}, {'administrator' if pbx_id in state.admins else 'user'}",
    ]
    counterpart = next((a for a, (_, i, _) in d.matches.items() if i == pbx_id), None)
    counterpart = counterpart or next((a for a, i in d.protected.items() if i == pbx_id), None)
    bound = [s for s, i in result.snapshot.bindings.items() if i == pbx_id]
    lines.append(f"  binding: {'source id ' + bound[0] if bound else 'none'}")
    action = next((a for a in result.plan.changes if a.pbx_user_id == pbx_id), None)
    lines += ["", "Plan:"]
    if counterpart:
        lines.append(f"  counterpart of user.{counterpart}; run `adsync-plan explain {counterpart}`")
    elif pbx_id in d.held_match.values():
        held = next(a for a, i in d.held_match.items() if i == pbx_id)
        lines.append(f"  counterpart of the held user {held}: it stays exactly as it is")
    elif action is not None and action.action == "orphan":
        lines.append("  ! orphan (R9): no directory user in scope matches it, by binding or by e-mail address")
        lines += _field_changes(action)
    elif pbx_id in d.orphans:
        lines.append("  an orphan already (marked, numbers removed): nothing left to change")
    elif login_id in config.protect_logins:
        lines.append("  nothing: its login ID is in protect.logins, so it is never changed (R10)")
    elif pbx_id in state.admins:
        lines.append("  nothing: an administrator is never changed (R10)")
    else:
        lines.append("  nothing: not managed (ownership: bound, and this tool neither created nor bound it)")
    return lines + [""]


# -- a group (issue 16) ---------------------------------------------------------------------------------


def _explain_group(name: str, config: Config, result: PlanResult, directory: Directory | None) -> list[str]:
    """A desired group (where it comes from, members, numbers, rules, plan), a bound PBX group no longer
    desired (its orphaning), or a PBX group the tool did not make (never touched)."""
    desired, state = result.desired.rendered.groups, result.snapshot.state
    pbx_names = {g.name: gid for gid, g in state.groups.items()}
    for exact in (True, False):  # an exact name first, desired groups before PBX groups
        if (found := _named(name, desired, exact)) is not None:
            return _explain_desired_group(desired[found], config, result, directory)
        if (found := _named(name, pbx_names, exact)) is not None:
            return _explain_pbx_group(pbx_names[found], result)
    guess = guess_name(name, [*desired, *pbx_names])
    raise InputError(
        f"group.{name}: no desired group and no PBX group has this name"
        + (f" (did you mean group.{guess}?)" if guess else "")
        + "; `adsync-plan plan` lists the groups."
    )


def _named(name: str, names, exact: bool) -> str | None:
    """`name` itself, or (not exact) the only one of `names` that equals it whatever the case."""
    if exact:
        return name if name in names else None
    found = [n for n in names if n.lower() == name.lower()]
    return found[0] if len(found) == 1 else None


def _explain_desired_group(group: DesiredGroup, config: Config, result: PlanResult, directory) -> list[str]:
    d, state = result.decisions, result.snapshot.state
    gid = d.group_bindings.get(group.key)
    where = _map_key(group, config)
    bound = f" -> PBX group {gid} ({state.groups[gid].name})" if gid else ", no PBX group bound yet"
    lines = [group.address, f"  for:        {_group_purpose(group, where)}", f"  binding:    {group.key}{bound}"]
    members, carriers = _member_lines(group, config, result, directory)
    held = d.group_held.get(group.address, [])
    # a held group's members are only wanted: say so where a reviewer reads "member"
    heading = "Members (as the directory wants them; the group is held, so none is added or removed):"
    lines += ["", heading if held else "Members:", *members]
    lines += ["", f"Numbers ({where + '.numbers' if where else 'pbx_groups.shared_numbers'}):"]
    lines += _group_number_lines(group, config, result, where, carriers)
    others = [x for x in result.plan.diagnostics if x.address == group.address and x.code != GROUP_NUMBER_CONFLICT]
    lines += [
        "",
        "Rules (pbx_groups, R7, R11):",
        *(_diagnostic_lines(_unique(held + others)) or ["  passed every rule"]),
    ]
    return [*lines, "", "Plan:", *_group_outcome(group, gid, result), ""]


def _unique(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return [x for n, x in enumerate(diagnostics) if x not in diagnostics[:n]]


def _map_key(group: DesiredGroup, config: Config) -> str | None:
    """pbx_groups.map.N of a mapped group (None for a shared number's group, or a group the file alone has)."""
    if group.directory_group is None:
        return None
    wanted = normalise_dn(group.directory_group)
    mapped = (n for n, m in enumerate(config.pbx_groups.map) if normalise_dn(m.directory_group) == wanted)
    n = next(mapped, None)
    return None if n is None else f"pbx_groups.map.{n}"


def _group_purpose(group: DesiredGroup, where: str | None) -> str:
    if group.shared_number is not None:
        return (
            f"the number {group.shared_number} several directory users share (pbx_groups.shared_numbers: group; "
            "the name from pbx_groups.shared_name)"
        )
    return f"the directory group {group.directory_group} ({where or 'pbx_groups.map'})"


def _member_lines(group: DesiredGroup, config: Config, result: PlanResult, directory) -> tuple[list[str], list[str]]:
    """One line per directory user the group concerns (in the mapped directory group, or carrying the shared
    number): member or not, and why; then the PBX members the plan removes. Also the users' addresses."""
    held_at_render = {h.source_id: h for h in result.desired.rendered.held}
    lines, seen = [], []
    for user in sorted(_concerned(group, config, directory), key=address_of):
        address = address_of(user)
        seen.append(address)
        if not in_scope(user, config):
            disabled = "" if user.enabled or config.scope.include_disabled else ": the account is disabled"
            alone = "; membership in a mapped group alone puts nobody in scope" if group.shared_number is None else ""
            lines.append(f"  {address}: not a member: out of scope (R3){disabled}{alone}")
        elif user.source_id in held_at_render:
            held = held_at_render[user.source_id].diagnostics
            lines.append(f"  {address}: not a member: held by {_code_list(held)}; a held user is never a member")
        else:
            lines.append(f"  {address}: {_member_reason((user.account or '').lower(), address, result)}")
    for account in group.members:  # what the desired state says (all there is without the directory)
        if f"user.{account}" not in seen:
            seen.append(f"user.{account}")
            lines.append(f"  user.{account}: {_member_reason(account, f'user.{account}', result)}")
    if directory is None:
        lines.append("  (held and out-of-scope users are not in the desired state: run explain without --desired)")
    action = _group_action(group.address, result)
    if action is not None and action.before is not None:
        what = "the directory group" if group.shared_number is None else "the users who carry the number"
        for address in sorted(set(action.before.members) - set(action.after.members)):
            lines.append(f"  {address}: leaves the group: not (or no longer) a member of {what}")
    return lines or ["  none"], seen


def _concerned(group: DesiredGroup, config: Config, directory: Directory | None) -> list[DirectoryUser]:
    if directory is None:
        return []
    if group.shared_number is not None:
        rules = NumberRules(config.numbering)
        return [u for u in directory.users if group.shared_number in phone_numbers(u, rules)]
    wanted = normalise_dn(group.directory_group or "")
    return [u for u in directory.users if wanted in u.groups]


def _member_reason(account: str, address: str, result: PlanResult) -> str:
    d = result.decisions
    if account in d.creates:
        return "member (the plan creates the user, then adds it)"
    if account in d.matches:
        return "member"
    if account in d.protected:
        return "member (a protected PBX user: R10 keeps its name and numbers, membership is the group's)"
    if address in d.held:
        return f"not a member: held at plan time by {_code_list(d.held[address])}; a held user is never a member"
    return "not a member"


def _code_list(diagnostics) -> str:
    return ", ".join(f"{x.code} ({RULE_OF_CODE.get(x.code, '-')})" for x in diagnostics if x.severity == "error")


def _group_number_lines(group: DesiredGroup, config: Config, result: PlanResult, where, carriers) -> list[str]:
    if group.shared_number is not None:
        return [f"  {group.shared_number}: the shared number, carried by {', '.join(carriers) or '(nobody)'}"]
    configured = mapped_numbers(config, NumberRules(config.numbering))[int(where.rsplit(".", 1)[1])] if where else ()
    warnings = [
        w.message
        for w in result.desired.rendered.warnings
        if w.address == group.address and w.code == GROUP_NUMBER_CONFLICT
    ]
    lines = []
    for number in sorted(set(configured) | set(group.numbers)):
        if number in group.numbers:
            lines.append(f"  {number}: the group's")
            continue
        why = next((m for m in warnings if m.startswith(f"number {number} ")), "not in the desired state")
        lines.append(f"  {number}: left out ({GROUP_NUMBER_CONFLICT}): {why}")
    return lines or ["  none configured"]


def _refused(result: PlanResult) -> str:
    """What an action's heading adds when the safety valve refused the plan it belongs to."""
    return " (but the safety valve refused the whole plan)" if result.refused else ""


def _group_action(address: str, result: PlanResult):
    return next((a for a in result.plan.group_changes if a.address == address), None)


def _group_outcome(group: DesiredGroup, gid: str | None, result: PlanResult) -> list[str]:
    action = _group_action(group.address, result)
    refused = _refused(result)
    if action is not None and action.action == "create":
        a = action.after
        return [
            f"  + create{refused}: name {a.name}, members {', '.join(a.members) or '(none)'}; "
            f"numbers {', '.join(a.numbers) or '(none)'}"
        ]
    if action is not None:
        heading = f"  ~ update PBX group {action.pbx_group_id}{refused}: the directory differs in these fields"
        return [heading, *_field_changes(action)]
    if group.address in result.decisions.group_held:
        return ["  held: nothing is planned for this group; a bound PBX group stays exactly as it is"]
    return [f"  unchanged: PBX group {gid} already matches" if gid else "  nothing"]


def _explain_pbx_group(gid: str, result: PlanResult) -> list[str]:
    """A PBX group no desired group stands for: bound (orphaned by the plan) or not the tool's (never touched)."""
    d, group = result.decisions, result.snapshot.state.groups[gid]
    key = next((k for k, i in d.group_bindings.items() if i == gid), None)
    lines = [f"group.{group.name}"]
    if key is None:
        lines.append(f"  PBX group {gid}, not bound: adsync-plan did not make it and never touches it")
        for other in result.desired.rendered.groups.values():
            if other.name.lower() == group.name.lower() and other.address in d.group_held:
                lines += [f"  the desired group {other.address} has its name and is held:"]
                lines += _diagnostic_lines(d.group_held[other.address])
        return lines + [""]
    lines.append(f"  PBX group {gid}, bound by {key}")
    renamed = next((g for g in result.desired.rendered.groups.values() if g.key == key), None)
    if renamed is not None:  # desired under another name: the plan renames it
        return lines + [f"  desired as {renamed.address}: run `adsync-plan explain '{renamed.address}'`", ""]
    if key.startswith("shared:"):
        lines.append(
            "  no longer desired: the number is no longer shared by several users in scope (or shared_numbers is hold)"
        )
    else:
        lines.append("  no longer desired: no entry of pbx_groups.map is for this directory group")
    action = next((a for a in result.plan.group_changes if a.pbx_group_id == gid), None)
    lines += ["", "Plan:"]
    if action is not None and action.action == "orphan":
        lines.append("  ! orphan: members and numbers removed, '-' before the name; never deleted (counts for R13)")
        lines += _field_changes(action)
    elif gid in d.group_orphans:
        lines.append("  an orphan already (marked, members and numbers removed): nothing left to change")
    else:
        lines.append("  nothing")
    return lines + [""]


# -- every decision, for the debug log ------------------------------------------------------------------


def outcomes(result: PlanResult) -> Iterator[tuple[str, str]]:
    """(address, decision) for every user in scope and every PBX user the plan touches."""
    d = result.decisions
    actions = {a.address: a for a in result.plan.changes}
    for account in sorted(d.desired):
        user = d.desired[account]
        action = actions.get(user.address)
        if action is not None and action.action == "create":
            yield user.address, f"create with login ID {action.after.login_id}"
        elif action is not None:
            yield user.address, f"update PBX user {action.pbx_user_id} ({', '.join(action.fields)})"
        elif account in d.matches:
            _, pbx_id, how = d.matches[account]
            yield user.address, f"unchanged (PBX user {pbx_id}, matched by {how})"
        elif account in d.protected:
            yield user.address, f"nothing: matches protected PBX user {d.protected[account]}"
        else:
            yield user.address, "held: " + "; ".join(_codes(d.held.get(user.address, [])))
    for h in result.desired.rendered.held:
        yield h.address, "held: " + "; ".join(_codes(h.diagnostics))
    for action in result.plan.changes:
        if action.action == "orphan":
            yield action.address, f"orphan PBX user {action.pbx_user_id} ({', '.join(action.fields)})"


def _codes(diagnostics: list[Diagnostic] | tuple[Diagnostic, ...]) -> list[str]:
    return [f"{x.code}: {x.message}" for x in diagnostics]


def log_decisions(result: PlanResult) -> None:
    if log.isEnabledFor(logging.DEBUG):
        for address, decision in outcomes(result):
            log.debug("%s: %s", address, decision)
