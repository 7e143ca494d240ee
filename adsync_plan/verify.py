"""Verified apply: after the last step of each user, read the user back and compare it with the plan's
`after`. A PBX that silently ignores or rewrites a field then stops the apply after one user, not after all.

Only the parts of the user the plan changes are read (the provider reads whole parts: names and e-mail
together, all numbers together), so the cost is a fixed, small number of requests per changed user.

Apply runs the steps in SPEC 8's order (every release, then every create and field update, then every
assignment), so a user's steps are not contiguous. Each user is therefore checked at two points: its account
(names, e-mail, login ID, role) after its last create/update/admin step, before the next user's account is
touched; the rest (numbers, primary number) after its last step.
"""

from __future__ import annotations

from adsync_plan.errors import PbxError
from adsync_plan.model import SHAPE_FIELDS, Action, GroupAction
from adsync_plan.providers.base import Provider

WORDS = {
    "login_id": "login ID",
    "first_name": "first name",
    "last_name": "last name",
    "email": "e-mail address",
    "role": "role",
    "primary_internal_number": "primary internal number",
    "internal_numbers": "internal numbers",
    "external_numbers": "external numbers",
    "fax_numbers": "fax numbers",
}


class VerificationFailed(PbxError):
    """The PBX accepted the steps of a user but shows something else than the plan's `after`."""


ACCOUNT_FIELDS = frozenset({"login_id", "first_name", "last_name", "email", "role"})
ACCOUNT_STEPS = ("create", "update", "admin")


def checkpoints(steps) -> dict[int, frozenset[str] | None]:
    """Step position -> the fields to verify after it: ACCOUNT_FIELDS after a user's last account step,
    the others after its last step (None: all, when the account was not checked before)."""
    last, last_account = {}, {}
    for n, step in enumerate(steps):
        last[step.index] = n
        if step.kind in ACCOUNT_STEPS:
            last_account[step.index] = n
    points: dict[int, frozenset[str] | None] = {n: None for n in last.values()}
    for index, n in last_account.items():
        if n != last[index]:
            points[n] = ACCOUNT_FIELDS
            points[last[index]] = frozenset(SHAPE_FIELDS) - ACCOUNT_FIELDS
    return points


def changed_fields(action: Action) -> list[str]:
    before, after = action.before, action.after
    return [f for f in SHAPE_FIELDS if before is None or getattr(before, f) != getattr(after, f)]


def verify_user(provider: Provider, action: Action, user_id: str, only: frozenset[str] | None = None) -> None:
    """Raise VerificationFailed naming the user and every field whose value on the PBX is not the plan's.
    Reads only when the plan changes one of the fields (`only` narrows them)."""
    fields = [f for f in changed_fields(action) if only is None or f in only]
    if not fields:
        return
    wanted = action.after.to_dict()
    actual = provider.read_user(user_id, fields)
    wrong = [
        f for f in SHAPE_FIELDS if f in actual and (only is None or f in only) and _same(actual[f]) != _same(wanted[f])
    ]
    if not wrong:
        return
    shown = "; ".join(f"{WORDS[f]} {_show(actual[f])} instead of {_show(wanted[f])}" for f in wrong)
    raise VerificationFailed(
        f"{action.address} (PBX user {user_id}) does not read back as planned: the PBX shows {shown}; it may "
        "ignore or rewrite these fields, so apply stopped at this user; check the user on the PBX."
    )


def _same(value):
    return sorted(value) if isinstance(value, list | tuple) else (value or None)


def _show(value) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(value) + "]" if value else "none"
    return repr(value) if value else "none"


def verify_group(provider: Provider, action: GroupAction, group_id: str, member_id) -> None:
    """After a group's last step: read it back (one read) and compare name, numbers and members (as PBX ids;
    `member_id` resolves a member created in this apply)."""
    actual = provider.read_group(group_id)
    wanted = action.after
    members = sorted(action.member_ids.get(a) or member_id(a) or a for a in wanted.members)
    wrong = []
    if actual.name != wanted.name:
        wrong.append(f"name {actual.name!r} instead of {wanted.name!r}")
    if sorted(actual.numbers) != sorted(wanted.numbers):
        wrong.append(f"numbers {_show(actual.numbers)} instead of {_show(wanted.numbers)}")
    if sorted(actual.members) != members:
        wrong.append(f"members {_show(actual.members)} instead of {_show(members)}")
    if wrong:
        raise VerificationFailed(
            f"{action.address} (PBX group {group_id}) does not read back as planned: the PBX shows {'; '.join(wrong)}; "
            "apply stopped at this group; check the group on the PBX."
        )
