"""`--redact`: stable placeholders for personal data, so a plan can be posted in a public repository.

The same value always gives the same placeholder, in fields, messages, DNs and addresses alike, so a reviewer
can still see that two users claim the same number without seeing the number. Counts ("40 licences", "35 of
50 managed PBX users") and PBX user ids are not personal data and stay readable."""

from __future__ import annotations

import hashlib
import re

from adsync_plan.model import Diagnostic

# An e-mail address with any Unicode local part (jürgen@, o'brien@) and domain (exämple.de, with combining
# marks too): anything but blanks and the signs that delimit an address in a sentence; the local part does
# not start with a quote or a dot, so that 'a@b.example' in a message loses its quotes only, and the domain
# ends before a full stop.
_ADDRESS_SIGNS = r"\s@<>()\[\]{},;:\"`|\\"
_LABEL = rf"[^{_ADDRESS_SIGNS}'./]+"
_EMAIL = re.compile(rf"[^{_ADDRESS_SIGNS}'.][^{_ADDRESS_SIGNS}]*@{_LABEL}(?:\.{_LABEL})+")
# A phone number in free text: an optional + or an area code in parentheses, then digits with up to three
# separators (blank, dot, dash, slash, parentheses) between them: "+49 (711) 555-1234", "0711.555.1234",
# "07022/27978-30". Not inside a word, a uuid, a timestamp or an address such as pbx_user.67.
_NUMBER = re.compile(r"(?<![\w:.\-/+])(?:\+|\(\+?(?=[\d ]+\)))?\d(?:[ ./\-()]{0,3}\d)*(?![\w\-]|[:.]\w)")
_SEPARATOR = re.compile(r"[ ./\-()]")
# what makes a number a count or a PBX user id rather than a phone number
_COUNT_AFTER = re.compile(r"\s*(?:licen[cs]es?\b|(?:managed )?PBX users?\b|users?\b|of\b|steps?\b|digits?\b|%)")
_ID_BEFORE = re.compile(r"(?:PBX user|group|serial) $")
# a DN's naming attribute value, for --redact=names: CN=Anna Schröder,OU=...
_RDN_NAME = re.compile(r"(?i)\b(CN|UID|DisplayName)=((?:\\,|[^,])+)")
# the rules name a PBX user as "PBX user 17 (Tür Sprechstelle, login 90)"
_PBX_USER_NAME = re.compile(r"(PBX user \d+ \()([^,()]+)")
_WORD = re.compile(r"[^\W\d_][\w'-]*")
NAME_FIELDS = ("first_name", "last_name")
NUMBER_FIELDS = ("login_id", "primary_internal_number", "internal_numbers", "external_numbers", "fax_numbers")


class Redactor:
    """`enabled` replaces e-mail addresses and phone numbers; `names` also first and last names, names in
    DNs and the accounts in addresses (an account is usually made from the name)."""

    def __init__(self, enabled: bool = False, names: bool = False):
        self.enabled = enabled or names
        self.names = names
        self._name_words: set[str] = set()

    def learn_names(self, names) -> None:
        """Names to replace wherever they appear in free text, word by word (a set lookup per word, so
        100,000 names cost no more than ten)."""
        for name in names:
            self._name_words.update(w.casefold() for w in _WORD.findall(name or "") if len(w) > 1)

    def __call__(self, field: str, value):
        if not self.enabled or value is None:
            return value
        if isinstance(value, list | tuple):
            return [self(field, v) for v in value]
        if field == "email":
            return self.placeholder("email", str(value))
        if field in NUMBER_FIELDS:
            return self.placeholder("number", str(value))
        if self.names and field in NAME_FIELDS:
            return self.placeholder("name", str(value))
        return value

    @staticmethod
    def placeholder(tag: str, value: str) -> str:
        key = _SEPARATOR.sub("", value) if tag == "number" else value.lower()
        return f"<{tag}:{hashlib.sha256(key.encode()).hexdigest()[:8]}>"

    def text(self, text: str | None) -> str | None:
        """Free text (a diagnostic message, a DN): e-mail addresses and phone numbers replaced, names too
        with `names`."""
        if not self.enabled or not text:
            return text
        text = _EMAIL.sub(lambda m: self.placeholder("email", m.group()), text)
        text = _NUMBER.sub(lambda m: self._number(m, text), text)
        if self.names:
            text = _RDN_NAME.sub(lambda m: f"{m.group(1)}={self.placeholder('name', m.group(2))}", text)
            text = _PBX_USER_NAME.sub(lambda m: m.group(1) + self.placeholder("name", m.group(2)), text)
            if self._name_words:
                text = _WORD.sub(self._name_word, text)
        return text

    def _name_word(self, match: re.Match) -> str:
        word = match.group()
        return self.placeholder("name", word) if word.casefold() in self._name_words else word

    def _number(self, match: re.Match, text: str) -> str:
        found = match.group()
        digits = sum(c.isdigit() for c in found)
        if digits < 2 or (digits < 4 and _SEPARATOR.search(found)):  # "5 users", "0.5"
            return found
        if _COUNT_AFTER.match(text, match.end()) or _ID_BEFORE.search(text, 0, match.start()):
            return found
        return self.placeholder("number", found)

    def address(self, address: str) -> str:
        """`pbx_user.<login_id>` names a user by its login ID, a number; `user.<account>` by an account
        that may be an e-mail address (`attributes.account: mail`) or made from a name."""
        if not self.enabled:
            return address
        kind, _, name = address.partition(".")
        if kind == "pbx_user":
            return "pbx_user." + self.placeholder("number", name)
        if kind == "user" and self.names:
            return "user." + self.placeholder("name", name)
        if kind == "user":
            return "user." + self.text(name)
        if kind == "group":  # a group's name is the configuration's, not personal; a shared number in it is
            return "group." + self.text(name)
        return address

    def diagnostic(self, d: Diagnostic) -> Diagnostic:
        if not self.enabled:
            return d
        source = {k: self.text(v) if k == "dn" else v for k, v in d.source.items()} if d.source else d.source
        return Diagnostic(d.severity, d.code, self.address(d.address), self.text(d.message), source)


def learn_names(redactor: Redactor, plan) -> None:
    """Every first and last name the plan holds, so that messages naming these users lose them too."""
    names = set()
    for action in plan.changes:
        for shape in (action.before, action.after):
            if shape is not None:
                names |= {shape.first_name, shape.last_name}
    redactor.learn_names(names)
