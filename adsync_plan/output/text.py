"""The plan for a terminal: what needs attention first, one line per change (or the full form with
`--detailed`), the held users once under their own heading, and a Terraform-like summary line.

The parts are plain functions of the plan so that the Markdown rendering says the same things in the same
order: `attention`, `change_line`, `held_users`, `summary_line`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from adsync_plan.model import ROLE_ADMIN, SHAPE_FIELDS, Action, Diagnostic, GroupAction, Plan
from adsync_plan.output.escape import clean
from adsync_plan.output.redact import Redactor

SIGNS = {"create": "+", "update": "~", "orphan": "!"}
VERBS = {"create": "will be created", "update": "will be updated", "orphan": "will be orphaned"}
LEGEND = "adsync-plan will make these changes (+ create, ~ update, ! orphan; nothing is ever deleted):"
PLAN_WIDE = "plan"  # the address of a diagnostic about the whole plan (the safety valve)
GROUP_PREFIX = "group."
HELD_GROUPS = "Held groups (nothing is planned for them until the PBX or pbx_groups changes)"
NO_REDACTION = Redactor(False)
NUMBER_LISTS = ("internal_numbers", "external_numbers", "fax_numbers")


# -- the summary --------------------------------------------------------------------------------------------


def summary_line(plan: Plan, redact: Redactor = NO_REDACTION) -> str:
    s = plan.summary
    if plan.changes or plan.group_changes:
        return (
            f"Plan: {s['create']} to create, {s['update']} to update, {s['orphan']} to orphan; {s.get('held', 0)} held."
            + group_summary(s)
        )
    count = held_count(plan)
    if not count:
        return "No changes. The PBX matches the directory."
    named = clean(", ".join(h.address for h in islice(iter_held(plan, redact), 5))) + (", ..." if count > 5 else "")
    return f"No changes. {_users(count)} held: {named}."


def group_summary(s) -> str:
    """` Groups: 1 to create, 0 to update, 1 to orphan.` when the plan is about groups (pbx_groups)."""
    if "group_create" not in s:
        return ""
    held = f"; {s['group_held']} held" if s.get("group_held") else ""
    return (
        f" Groups: {s['group_create']} to create, {s['group_update']} to update, {s['group_orphan']} to orphan{held}."
    )


def _users(n: int) -> str:
    return f"{n} user is" if n == 1 else f"{n} users are"


def held_heading(count: int, held_by: tuple[int, int] | None = None) -> str:
    """`Held: 11 users the directory must fix (6 held by the directory rules, 5 by the PBX rules)`: render
    knows only the directory rules, plan adds the PBX rules; the split (known while planning) says why
    their counts differ."""
    heading = f"Held: {count} {'user' if count == 1 else 'users'} the directory must fix"
    if held_by is not None:
        heading += f" ({held_by[0]} held by the directory rules, {held_by[1]} by the PBX rules)"
    return heading


# -- needs attention ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attention:
    """One line of "Needs attention": the user it is about and what happens."""

    sign: str
    address: str
    text: str

    def line(self) -> str:
        return f"{self.sign} {self.address} {self.text}"


def attention(plan: Plan, redact: Redactor = NO_REDACTION) -> list[Attention]:
    """The riskiest changes first: every grant and revoke of administrator, then orphans, then numbers that
    move from one user to another (taken from one, given to another in the same apply)."""
    grants, orphans = [], []
    for a in plan.changes:
        before_admin = a.before is not None and a.before.role == ROLE_ADMIN
        if a.after.role == ROLE_ADMIN and not before_admin:
            verb = "is created as administrator" if a.action == "create" else "becomes administrator"
            grants.append(Attention(SIGNS[a.action], _who(a, redact), verb))
        elif before_admin and a.after.role != ROLE_ADMIN:
            grants.append(Attention(SIGNS[a.action], _who(a, redact), "loses administrator"))
        if a.action == "orphan":
            orphans.append(Attention("!", _who(a, redact), "will be orphaned: no counterpart in the directory's scope"))
    for g in plan.group_changes:
        if g.action == "orphan":
            who = clean(f"{redact.address(g.address)} (PBX group {g.pbx_group_id})")
            orphans.append(
                Attention("!", who, "will be orphaned: no longer desired; its members and numbers are removed")
            )
    return grants + orphans + _moves(plan, redact)


def _who(a: Action, redact: Redactor) -> str:
    shape = a.before or a.after
    name = f"{redact('first_name', shape.first_name)} {redact('last_name', shape.last_name)}"
    where = f", PBX user {a.pbx_user_id}" if a.pbx_user_id else ""
    return clean(f"{redact.address(a.address)} ({name}{where})")


def _moves(plan: Plan, redact: Redactor) -> list[Attention]:
    """Numbers given up by one user or group and taken by another in the same apply."""
    taken: dict[str, str] = {}
    for a in plan.changes:
        if a.before is not None and (a.action == "orphan" or any(f in NUMBER_LISTS for f in a.fields)):
            for number in a.before.numbers() - a.after.numbers():
                taken[number] = a.address
    for g in plan.group_changes:
        for number in set(g.before.numbers if g.before else ()) - set(g.after.numbers):
            taken[number] = g.address
    if not taken:  # the common case: no number is given up, none can move
        return []
    moves = []
    gains = [
        (a.address, a.before.numbers() if a.before is not None else set(), a.after.numbers()) for a in plan.changes
    ]
    gains += [(g.address, set(g.before.numbers if g.before else ()), set(g.after.numbers)) for g in plan.group_changes]
    for address, before, after in gains:
        for number in sorted(after - before):
            if number in taken and taken[number] != address:
                shown = clean(redact("external_numbers", number))
                text = clean(f"moves from {redact.address(taken[number])} to {redact.address(address)}")
                moves.append(Attention("~", f"number {shown}", text))
    return moves


# -- changes ------------------------------------------------------------------------------------------------


def change_line(action: Action, redact: Redactor = NO_REDACTION) -> str:
    """One line per change: a create as `name <email>  numbers`, an update or orphan as its changed fields."""
    head = f"{SIGNS[action.action]} {redact.address(action.address)}"
    if action.pbx_user_id:
        head += f" (PBX user {action.pbx_user_id})"
    if action.action == "create":
        return clean(f"{head}  {_create_summary(action, redact)}")
    return clean(f"{head}  " + "; ".join(_field_changes(action, redact, compact=True)))


def group_change_line(action: GroupAction, redact: Redactor = NO_REDACTION) -> str:
    """One line per group change: a create as its members and numbers, an update or orphan as its changes."""
    head = f"{SIGNS[action.action]} {redact.address(action.address)}"
    if action.pbx_group_id:
        head += f" (PBX group {action.pbx_group_id})"
    if action.action == "create":
        after = action.after
        members = ", ".join(redact.address(m) for m in after.members) or "none"
        numbers = ", ".join(redact("external_numbers", list(after.numbers))) or "none"
        return clean(f"{head}  group, members {members}; numbers {numbers}")
    return clean(f"{head}  " + "; ".join(group_field_changes(action, redact)))


def group_field_changes(action: GroupAction, redact: Redactor = NO_REDACTION) -> list[str]:
    """`name: before -> after`, `members: + added, - removed`, `numbers: + added, - removed`."""
    before, after = action.before or type(action.after)(""), action.after
    lines = []
    for name in action.fields:
        if name == "name":
            lines.append(clean(f"name: {redact.text(before.name)} -> {redact.text(after.name)}"))
            continue
        show = redact.address if name == "members" else (lambda n: redact("external_numbers", n))
        was, now = set(getattr(before, name)), set(getattr(after, name))
        parts = [f"+ {show(v)}" for v in sorted(now - was)] + [f"- {show(v)}" for v in sorted(was - now)]
        lines.append(clean(f"{name}: " + ", ".join(parts)))
    return lines


def group_detailed_lines(action: GroupAction, redact: Redactor = NO_REDACTION) -> list[str]:
    if action.action != "create":
        return group_field_changes(action, redact)
    after = action.after
    return [
        clean(f"name: {redact.text(after.name)}"),
        clean(f"members: [{', '.join(redact.address(m) for m in after.members)}]"),
        clean(f"numbers: [{', '.join(redact('external_numbers', list(after.numbers)))}]"),
    ]


def _create_summary(action: Action, redact: Redactor) -> str:
    u = action.after
    numbers = _unique([u.primary_internal_number, *u.internal_numbers, *u.external_numbers])
    if redact.enabled:
        parts = [redact("internal_numbers", n) for n in numbers]
        name, email = (
            f"{redact('first_name', u.first_name)} {redact('last_name', u.last_name)}",
            redact("email", u.email),
        )
    else:  # the common case, at 100,000 users
        parts, name, email = numbers, f"{u.first_name} {u.last_name}", u.email
    if u.login_id not in numbers:
        parts.insert(0, f"login {redact('login_id', u.login_id)}")
    parts += [f"fax {redact('fax_numbers', n)}" for n in u.fax_numbers]
    return f"{name} <{email}>  {', '.join(parts)}" + ("  administrator" if u.role == ROLE_ADMIN else "")


def _unique(values) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _field_changes(action: Action, redact: Redactor, compact: bool) -> list[str]:
    """`name: before -> after` for a value, `name: + added, - removed` for a list; compact leaves out the
    quotes and brackets of the full form."""
    before, after = action.before.to_dict(), action.after.to_dict()
    fmt = _plain if compact else _fmt
    lines = []
    for name in action.fields:
        if isinstance(after[name], list):
            added = sorted(set(after[name]) - set(before[name]))
            removed = sorted(set(before[name]) - set(after[name]))
            parts = [f"+ {v}" for v in redact(name, added)] + [f"- {v}" for v in redact(name, removed)]
            lines.append(clean(f"{name}: " + ", ".join(parts)))
        else:
            lines.append(clean(f"{name}: {fmt(redact(name, before[name]))} -> {fmt(redact(name, after[name]))}"))
    return lines


def _plain(value) -> str:
    return "(none)" if value is None else str(value)


def _fmt(value) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return json.dumps(value, ensure_ascii=False)


def detailed_lines(action: Action, redact: Redactor = NO_REDACTION) -> list[str]:
    """The full form (`--detailed`): every field of a create, every changed field of an update."""
    if action.action == "create":
        after = action.after.to_dict()
        return [clean(f"{name}: {_fmt(redact(name, after[name]))}") for name in SHAPE_FIELDS]
    return _field_changes(action, redact, compact=False)


def heading(action: Action, redact: Redactor = NO_REDACTION) -> str:
    where = f" (PBX user {action.pbx_user_id})" if action.pbx_user_id else ""
    return f"{SIGNS[action.action]} {clean(redact.address(action.address))}{where} {VERBS[action.action]}"


# -- held users and other findings --------------------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """A held user, once, with every reason it is held (values as they are: `line` or `md` makes them safe)."""

    address: str
    codes: tuple[str, ...]
    reasons: tuple[str, ...]
    diagnostics: tuple[Diagnostic, ...]

    def line(self) -> str:
        return clean(f"{self.address}  {', '.join(self.codes)}: {' '.join(self.reasons)}")


def is_held(d: Diagnostic) -> bool:
    """An error about one user: the user is held."""
    return d.severity == "error" and d.address != PLAN_WIDE and not d.address.startswith(GROUP_PREFIX)


def is_group_held(d: Diagnostic) -> bool:
    """An error about one group (pbx_groups): nothing is planned for the group."""
    return d.severity == "error" and d.address.startswith(GROUP_PREFIX)


def held_groups(plan: Plan, redact: Redactor = NO_REDACTION) -> list[Diagnostic]:
    return [redact.diagnostic(d) for d in plan.diagnostics if is_group_held(d)]


def held_users(plan: Plan, redact: Redactor = NO_REDACTION) -> list[Held]:
    return list(iter_held(plan, redact))


def held_count(plan: Plan) -> int:
    return len({d.address for d in plan.diagnostics if is_held(d)})


def iter_held(plan: Plan, redact: Redactor = NO_REDACTION) -> Iterator[Held]:
    """Each held user once, in the plan's order; redacted lazily, so a comment that shows 200 of 100,000
    held users redacts 200."""
    by_user: dict[str, list[Diagnostic]] = {}
    for d in plan.diagnostics:
        if is_held(d):
            by_user.setdefault(d.address, []).append(d)
    for found in by_user.values():
        if redact.enabled:
            found = [redact.diagnostic(d) for d in found]
        codes = (found[0].code,) if len(found) == 1 else tuple(dict.fromkeys(d.code for d in found))
        yield Held(found[0].address, codes, tuple(d.message for d in found), tuple(found))


def findings(plan: Plan, severity: str, redact: Redactor = NO_REDACTION) -> Iterator[Diagnostic]:
    """Diagnostics that are not a held user's: the safety valve's refusal (errors about the whole plan),
    warnings, notes."""
    for d in plan.diagnostics:
        if d.severity == severity and not is_held(d) and not is_group_held(d):
            yield redact.diagnostic(d)


def finding_count(plan: Plan, severity: str) -> int:
    return sum(1 for d in plan.diagnostics if d.severity == severity and not is_held(d) and not is_group_held(d))


def finding_line(d: Diagnostic) -> str:
    return clean(f"{d.address}  {d.code}: {d.message}")


# -- the whole plan -----------------------------------------------------------------------------------------


def plan_text(
    plan: Plan, redact: Redactor | None = None, detailed: bool = False, held_by: tuple[int, int] | None = None
) -> str:
    redact = redact or NO_REDACTION
    if plan.refresh_only is not None:
        return refresh_only_text(plan, redact)
    lines = []
    refused = list(findings(plan, "error", redact))
    if refused:
        lines += ["Refused:"] + [f"  {finding_line(d)}" for d in refused] + [""]
    notes = attention(plan, redact)
    if notes:
        lines += ["Needs attention:"] + [f"  {n.line()}" for n in notes] + [""]
    if plan.changes or plan.group_changes:
        lines += [LEGEND, ""]
        lines += _detailed_changes(plan, redact) if detailed else [f"  {change_line(a, redact)}" for a in plan.changes]
        if not detailed:
            lines += [f"  {group_change_line(g, redact)}" for g in plan.group_changes] + [""]
    warnings = list(findings(plan, "warning", redact))
    if warnings:
        lines += ["Warnings:"] + [f"  {finding_line(d)}" for d in warnings] + [""]
    held = held_users(plan, redact)
    if held:
        lines += [held_heading(len(held), held_by) + ":"] + [f"  {h.line()}" for h in held] + [""]
    groups = held_groups(plan, redact)
    if groups:
        lines += [HELD_GROUPS + ":"] + [f"  {finding_line(d)}" for d in groups] + [""]
    if plan.overrides:
        lines += [clean(f"Overrides used: {', '.join(plan.overrides)}"), ""]
    if plan.targets:
        lines += [targeted_line(plan, redact), ""]
    lines.append(summary_line(plan, redact))
    return "\n".join(lines)


def refresh_only_text(plan: Plan, redact: Redactor = NO_REDACTION) -> str:
    """`plan --refresh-only`: the PBX's own changes since the committed snapshot; no user changes."""
    changed, serial = refresh_only_changes(plan, redact), plan.refresh_only["since_serial"]
    if not changed:
        return f"No changes. The PBX matches the committed snapshot (serial {serial})."
    lines = [f"Refresh only: the PBX changed since the committed snapshot (serial {serial}):"]
    lines += [f"  {clean(line)}" for line in changed] + [""]
    lines.append(
        f"Refresh only: {len(changed)} change(s) on the PBX; applying this plan writes them to the snapshot and "
        "changes nothing on the PBX."
    )
    return "\n".join(lines)


def refresh_only_changes(plan: Plan, redact: Redactor) -> list[str]:
    """The lines of the PBX's changes (state.describe_changes); --redact hides the login IDs and numbers they
    name, short ones too (free text keeps "(20)" as it might be a count)."""
    if not redact.enabled:
        return list(plan.refresh_only["pbx_changes"])
    return [
        redact.text(_REFRESH_NUMBERS.sub(lambda m: _redacted_numbers(m, redact), line))
        for line in plan.refresh_only["pbx_changes"]
    ]


# "PBX user 3 (20) changed: ..." and "2 number(s) changed owner or were added/removed: +4970222797867, 67"
_REFRESH_NUMBERS = re.compile(r"(?<=^PBX user )(\S+ \()([^)]*)(?=\))|(?<=were added/removed: )(.*?)(?=(?: \.\.\.)?$)")


def _redacted_numbers(match: re.Match, redact: Redactor) -> str:
    if match.group(1) is not None:  # a PBX user's login ID
        return match.group(1) + redact.placeholder("number", match.group(2))
    return ", ".join(redact.placeholder("number", n) for n in match.group(3).split(", "))


def targeted_line(plan: Plan, redact: Redactor) -> str:
    """`plan --target`: how many users were considered, of how many, and which."""
    t = plan.targets
    listed = ", ".join(redact.address(a) for a in t["addresses"])
    return clean(
        f"This is a targeted plan: {t['considered']} of {t['of']} users considered (--target {listed}); "
        "changes for other users are left out."
    )


def _detailed_changes(plan: Plan, redact: Redactor) -> list[str]:
    lines = []
    for action in plan.changes:
        lines.append(f"  {heading(action, redact)}")
        lines += [f"      {line}" for line in detailed_lines(action, redact)]
        lines.append("")
    for group in plan.group_changes:
        where = f" (PBX group {group.pbx_group_id})" if group.pbx_group_id else ""
        address = clean(redact.address(group.address))
        lines.append(f"  {SIGNS[group.action]} {address}{where} {VERBS[group.action]}")
        lines += [f"      {line}" for line in group_detailed_lines(group, redact)]
        lines.append("")
    return lines
