"""The plan names the fields of an update as deepdiff does (SPEC 1: the diff is deepdiff's), for the
price of a comparison per field: deepdiff on every changed user was a third of `plan`'s time over its
floor at 100,000 users (issue 15, item 4)."""

from __future__ import annotations

import random

from deepdiff import DeepDiff

from adsync_plan import diff
from adsync_plan.model import SHAPE_FIELDS, PhoneUser

BASE = PhoneUser(
    login_id="2001",
    first_name="Jürgen",
    last_name="Müller",
    email="juergen@example.com",
    role="user",
    primary_internal_number="2001",
    internal_numbers=("2001", "600001"),
    external_numbers=("+497022202001",),
    fax_numbers=(),
)
# values each field may take: equal ones, near ones (case, normal form, order, one more), None and empty
CHOICES = {
    "login_id": ["2001", "2002", "02001"],
    "first_name": ["Jürgen", "Ju\u0308rgen", "jürgen", ""],
    "last_name": ["Müller", "-Müller", "Mueller"],
    "email": ["juergen@example.com", "Juergen@example.com", ""],
    "role": ["user", "admin"],
    "primary_internal_number": ["2001", "600001", None],
    "internal_numbers": [("2001", "600001"), ("600001", "2001"), ("2001",), ()],
    "external_numbers": [("+497022202001",), (), ("+497022202001", "+497022202002")],
    "fax_numbers": [(), ("+497022209999",), ("",)],
}


def deepdiff_fields(before: PhoneUser, after: PhoneUser) -> tuple[str, ...]:
    """What plan named the fields with before: deepdiff's root keys of the two users' dictionaries."""
    found = DeepDiff(before.to_dict(), after.to_dict(), verbose_level=0).affected_root_keys
    return tuple(sorted(str(key) for key in found))


def test_the_changed_fields_are_the_root_keys_deepdiff_finds():
    pick = random.Random(15)
    pairs = [(BASE, BASE.changed(**{f: pick.choice(CHOICES[f]) for f in SHAPE_FIELDS})) for _ in range(400)]
    pairs += [(BASE.changed(**{f: CHOICES[f][-1]}), BASE) for f in SHAPE_FIELDS]
    named = [diff.changed_fields(before, after) for before, after in pairs]
    assert named == [deepdiff_fields(before, after) for before, after in pairs]
    assert len({fields for fields in named}) > 50  # many different combinations were compared
