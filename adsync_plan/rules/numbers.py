"""Phone numbers (SPEC 6) and reserved numbers (R5). The only module that imports phonenumbers."""

from __future__ import annotations

import re
from typing import NamedTuple

import phonenumbers

from adsync_plan.config import Numbering

# R5: emergency and reserved service numbers per country; x is any digit. A number is reserved when it
# starts with a pattern: the PBX would route a longer internal number like 1101 to the emergency call 110.
RESERVED = {
    "DE": ("110", "112", "115", "116xxx", "118xx"),
    "AT": ("112", "122", "133", "144", "140", "141", "142", "147"),
    "CH": ("112", "117", "118", "144", "143", "147"),
}
RESERVED_DEFAULT = ("112",)
# with a trunk prefix (Amtsholung) configured, these service prefixes are reserved too (FAQ)
RESERVED_WITH_TRUNK = {"DE": ("199", "310", "311", "700", "900")}

_SEPARATORS = re.compile(r"[\s\-/().]")


class Parsed(NamedTuple):  # a tuple: made once per phone value, a dataclass costs three times as much
    kind: str  # internal | external | invalid
    number: str  # digits (internal), E.164 (external), the raw value (invalid)


class UserNumbers(NamedTuple):
    primary: str | None
    internal: tuple[str, ...]
    external: tuple[str, ...]
    fax: tuple[str, ...]
    invalid: tuple[str, ...]  # raw values that are no phone number at all
    outside: tuple[str, ...] = ()  # R7: external numbers (E.164) in no configured block, when blocks are set


class NumberRules:
    """Everything SPEC 6 and R5 decide about numbers, for one configuration."""

    def __init__(self, numbering: Numbering):
        self.numbering = numbering
        self.country = numbering.country
        self.min_len, self.max_len = numbering.internal_length
        patterns = RESERVED.get(self.country, RESERVED_DEFAULT)
        if numbering.trunk_prefix:
            patterns += RESERVED_WITH_TRUNK.get(self.country, ())
        patterns += tuple(numbering.reserved_extra)
        self._reserved = re.compile("|".join(p.lower().replace("x", "[0-9]") for p in patterns))
        self._blocks = sorted(numbering.blocks, key=lambda b: -len(b.external_prefix))

    def parse(self, value: str) -> Parsed:
        kind, number, _ = self._parsed(value)
        return Parsed(kind, number)

    def _parsed(self, value: str) -> tuple[str, str, str | None]:
        """parse, and for an external number the internal number behind it through numbering.blocks (None
        when it is in no block): worked out once per value, not again for the primary and R7."""
        plain = value.isdigit() or (value[:1] == "+" and value[1:].isdigit())  # nothing for the regex to remove
        compact = value if plain else _SEPARATORS.sub("", value)
        if compact.isdigit() and len(compact) <= self.max_len:
            return "internal", compact, None
        # A '+digits' value of at most 15 digits inside a configured block: phonenumbers would say the same,
        # at a hundredth of the cost (it is the most frequent spelling in a directory).
        if compact.startswith("+") and compact[1:].isdigit() and len(compact) <= 16:
            derived = self.derive_internal(compact)
            if derived is not None:
                return "external", compact, derived  # already E.164, in one of the PBX's own number blocks
        try:
            number = phonenumbers.parse(value, self.country)
        except phonenumbers.NumberParseException:
            return "invalid", value, None
        if not phonenumbers.is_possible_number(number):
            return "invalid", value, None
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return "external", e164, self.derive_internal(e164)

    def derive_internal(self, e164: str) -> str | None:
        """The internal number behind an external one, through numbering.blocks (longest prefix first)."""
        for block in self._blocks:
            if e164.startswith(block.external_prefix) and len(e164) > len(block.external_prefix):
                return block.internal_prefix + e164[len(block.external_prefix) :]
        return None

    def user_numbers(self, phones, faxes) -> UserNumbers:
        """Each value parsed once; R7's numbers outside every block are looked up on the parsed numbers."""
        primary, internal, external, fax, invalid = None, set(), set(), set(), []
        derived_of: dict[str, str | None] = {}  # external or fax number -> its internal number, if in a block
        for value in phones:
            kind, number, derived = self._parsed(value)
            if kind == "invalid":
                invalid.append(value)
            elif kind == "internal":
                internal.add(number)
                primary = primary or number
            else:
                external.add(number)
                derived_of[number] = derived
                primary = primary or derived
        for value in faxes:
            kind, number, derived = self._parsed(value)
            if kind == "invalid":
                invalid.append(value)
            else:
                fax.add(number)
                derived_of[number] = derived
        if primary is not None:
            internal.add(primary)
        external, fax = tuple(sorted(external - fax)), tuple(sorted(fax))
        outside = ()
        if self._blocks:  # as outside_blocks, from the numbers derived above
            outside = tuple(dict.fromkeys(n for n in (*external, *fax) if n[:1] == "+" and derived_of[n] is None))
        return UserNumbers(
            primary=primary,
            internal=tuple(sorted(internal - set(fax))),
            external=external,
            fax=fax,
            invalid=tuple(invalid),
            outside=outside,
        )

    def outside_blocks(self, numbers) -> tuple[str, ...]:
        """R7 on normalised numbers: the E.164 ones in no configured block. With no block configured, only the
        PBX can tell (at plan time)."""
        if not self._blocks:
            return ()
        return tuple(dict.fromkeys(n for n in numbers if n.startswith("+") and self.derive_internal(n) is None))

    def reserved_reason(self, number: str) -> str | None:
        """Why an internal number or login ID may not be used, or None."""
        if self._reserved.match(number):
            return "is an emergency or reserved service number"
        trunk = self.numbering.trunk_prefix
        if trunk and number.startswith(trunk):
            return f"starts with the trunk prefix {trunk}"
        if len(number) < self.min_len:
            return f"is shorter than {self.min_len} digits"
        return None

    def login_id(self, primary: str) -> str:
        return self.numbering.login_id.replace("{internal}", primary)
