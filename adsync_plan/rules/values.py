"""What reaches the PBX is clean: text values without control characters, bidirectional overrides, or nothing
but invisible characters, and no longer than the PBX stores. Pure; checked at render and on a desired file.
"""

from __future__ import annotations

import re
import unicodedata

INVALID_VALUE = "INVALID_VALUE"
# What the PBX accepts: a name field holds 255 characters; an e-mail address at most 254 (RFC 5321 path limit).
MAX_LENGTH = {"account": 255, "first_name": 255, "last_name": 255, "email": 254}
# The fields of a user whose text is written to the PBX (the account names the user in plans and messages).
TEXT_FIELDS = ("account", "first_name", "last_name", "email")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# LRE, RLE, PDF, LRO, RLO and the isolates LRI, RLI, FSI, PDI: they reorder what a reader sees
_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069]")
# letters and symbols that print as nothing (Hangul fillers, braille blank) besides the spaces str.strip knows
_BLANK_LETTERS = "\u115f\u1160\u3164\uffa0\u2800"
_INVISIBLE_CATEGORIES = {"Cf", "Cc", "Zs", "Zl", "Zp", "Mn", "Me"}


_PRINTABLE_BLANKS = " " + _BLANK_LETTERS  # the only blanks str.isprintable lets through


def all_clean(account: str | None, first_name: str | None, last_name: str | None, email: str | None) -> bool:
    """The usual user, in a few C-speed tests: every value set, printable, not blank, not too long. Only a user
    failing this is looked at value by value (R1 and value_problem), which names what is wrong."""
    return bool(
        account
        and first_name
        and last_name
        and email
        and (account + first_name + last_name + email).isprintable()
        and len(account) <= 255
        and len(first_name) <= 255
        and len(last_name) <= 255
        and len(email) <= 254
        and account.strip(_PRINTABLE_BLANKS)
        and first_name.strip(_PRINTABLE_BLANKS)
        and last_name.strip(_PRINTABLE_BLANKS)
        and email.strip(_PRINTABLE_BLANKS)
    )


def value_problem(field: str, value: str) -> str | None:
    """Why `value` of `field` may not reach the PBX, as the end of a sentence; None when it is clean.

    The usual value is printable, short and not blank: three C-speed tests, no regex (run for every user)."""
    if value.isprintable() and len(value) <= MAX_LENGTH[field] and value.strip().strip(_BLANK_LETTERS):
        return None
    if len(value) > MAX_LENGTH[field]:
        return f"is {len(value):,} characters long, more than the PBX stores ({MAX_LENGTH[field]})"
    control = _CONTROL.search(value)
    if control:
        return f"contains the control character U+{ord(control.group()):04X}"
    bidi = _BIDI.search(value)
    if bidi:
        return f"contains the bidirectional override U+{ord(bidi.group()):04X}, which reorders what a reader sees"
    if all(ch in _BLANK_LETTERS or unicodedata.category(ch) in _INVISIBLE_CATEGORIES for ch in value):
        return "has only invisible characters" if value else "is empty"
    return None  # e.g. a no-break space or a zero-width joiner inside a visible name: allowed
