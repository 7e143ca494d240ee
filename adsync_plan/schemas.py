"""The JSON Schemas of every file format (top-level schemas/), and validation with located messages."""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import fastjsonschema
import jsonschema

from adsync_plan.errors import ConfigError, InputError

_SOURCE_TREE = Path(__file__).resolve().parent.parent / "schemas"


def schema_text(name: str) -> str:
    """The schema `<name>.schema.json`: from the source tree when run from it, else from the package."""
    filename = f"{name}.schema.json"
    if (_SOURCE_TREE / filename).is_file():
        return (_SOURCE_TREE / filename).read_text(encoding="utf-8")
    return resources.files("adsync_plan").joinpath("schemas", filename).read_text(encoding="utf-8")


@functools.cache
def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_text(name))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@functools.cache
def fast_validator(name: str):
    """A compiled validator: 20-40x faster than jsonschema on 100,000 users. jsonschema still explains
    what is wrong when this one finds a problem. (The data-file schemas use only draft-07 keywords.)"""
    schema = json.loads(schema_text(name))
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    return fastjsonschema.compile(schema)


def dotted(path: Sequence) -> str:
    return ".".join(_key(p) for p in path) or "(top level)"


def _key(part) -> str:
    """A key as written, or quoted with escapes when it holds a newline or another unprintable character:
    a message is one line, whatever a file's keys are."""
    text = str(part)
    return text if text.isprintable() else repr(text)


def validate(data, name: str, filename: str, lines: Callable[[Sequence], int | None] | None = None) -> None:
    """Raise clear sentences, one a line: file, line (YAML), key path, what is wrong, and how to fix it where
    that is known. The configuration is short: every problem in it is reported at once. A data file may hold
    100,000 users: its first problem is enough."""
    if name != "config":
        try:
            fast_validator(name)(data)
            return
        except fastjsonschema.JsonSchemaException:
            pass  # find and describe the problem below
    errors = sorted(validator(name).iter_errors(data), key=_order)
    if not errors:
        return
    problems = [p for error in errors for p in _problems(_deepest(error))]
    if name != "config":
        problems = problems[:1]
    located = []
    for path, text in problems:
        line = lines(path) if lines else None
        located.append((line or 0, f"{filename}:{line}" if line else filename, dotted(path), text))
    messages = list(dict.fromkeys(f"{where}: {key}: {_sentence(text)}" for _, where, key, text in sorted(located)))
    if len(messages) > MAX_REPORTED:
        messages = messages[:MAX_REPORTED] + [f"... and {len(messages) - MAX_REPORTED} more problems."]
    raise (ConfigError if name == "config" else InputError)("\n".join(messages))


MAX_REPORTED = 20


def _sentence(text: str) -> str:
    return text if text.endswith(("?", ".")) else text + "."


def _order(error) -> tuple:
    return (len(error.absolute_path), [str(p) for p in error.absolute_path])


def _deepest(error):
    """For if/then and oneOf failures, report the most specific sub-error: the deepest, and among equals the
    alternative of the value's own type (for "10 %" the percentage's pattern, not "should be an integer")."""
    while error.context:
        error = max(error.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
    return error


def _problems(error) -> list[tuple[list, str]]:
    """(key path, sentence) for each problem the error stands for: an unknown key is a problem of its own,
    located at that key's line."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        extra = sorted(str(k) for k in set(error.instance) - set(known))
        return [(path + [key], _unknown_key(key, known)) for key in extra]
    return [(path, _describe(error))]


def _unknown_key(key: str, known: list[str]) -> str:
    guess = did_you_mean(key, known)
    return f"unknown key {key!r}" + (f"; did you mean {guess!r}?" if guess else "; check the spelling in the README")


def did_you_mean(word: str, choices: Sequence) -> str | None:
    normal = {str(c).replace("_", "").replace("-", "").lower(): str(c) for c in choices}
    squashed = word.replace("_", "").replace("-", "").lower()
    if squashed in normal:
        return normal[squashed]
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return close[0] if close else None


def guess_name(word: str, names: Sequence[str]) -> str | None:
    """did_you_mean, else the only name that starts with `word` whatever the case (`Zentrale` for the group
    `Zentrale +4970222797820`, whose name a shared number makes long)."""
    prefixed = [n for n in names if word and n.lower().startswith(word.lower())]
    return did_you_mean(word, names) or (prefixed[0] if len(prefixed) == 1 else None)


def _describe(error) -> str:
    value = _show(error.instance)
    if error.validator == "required":
        return error.message.replace("is a required property", "is required but missing")
    if error.validator == "enum":
        choices = ", ".join(_show(c, quote=False) for c in error.validator_value)
        guess = did_you_mean(str(error.instance), error.validator_value)
        return f"{value} is not one of: {choices}" + (f"; did you mean {guess}?" if guess else "")
    if error.validator == "pattern":
        hint = PATTERN_HINTS.get(error.validator_value, f"expected to match {error.validator_value}")
        return f"{value} has the wrong form ({hint})"
    if error.validator == "type":
        return f"{value} should be {_type_names(error.validator_value)}{_quote_hint(error)}"
    return error.message


# What a pattern of the schemas asks for, in words.
PATTERN_HINTS = {
    "^[0-9]+(\\.[0-9]+)?%$": 'write a percentage as "10%", with no space, or a count as a plain number',
    "^[0-9]{1,6}[smhd]$": "write a duration as a number and a unit: 10s, 30m, 24h or 7d",
    "^[0-9]{1,6}[smh]$": "write a duration as a number and a unit: 10s, 5m or 1h",
    "^[0-9]*$": "digits only",
    "^[0-9]+$": "digits only",
    "^[0-9xX]+$": "digits, and x for any digit",
    "^\\+[0-9]+$": 'a "+" and digits, e.g. "+49702227978"',
    "^[A-Z]{2}$": "a two-letter country code in capitals, e.g. DE",
    "^[A-Za-z_][A-Za-z0-9_]*$": "the name of an environment variable that holds the secret, not the secret itself",
    "^https://": "a URL that starts with https://",
    "^https?://": "a URL that starts with https:// or http://",
    "^ldaps?://": "a URL that starts with ldaps:// or ldap://",
}
_TYPE_NAMES = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
    "object": "a mapping (key: value lines)",
    "array": "a list",
}


def _type_names(expected) -> str:
    names = [expected] if isinstance(expected, str) else list(expected)
    return " or ".join(_TYPE_NAMES.get(n, n) for n in names)


def _quote_hint(error) -> str:
    """A number where text is expected: YAML read it as a number (and dropped any leading zeros)."""
    expected, value = error.validator_value, error.instance
    if "string" not in ([expected] if isinstance(expected, str) else expected):
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    width = getattr(value, "_width", None)  # ruamel keeps how many digits 0001 was written with
    text = f"{value:0{width}d}" if isinstance(value, int) and width else str(value)
    return f'; put it in quotes: "{text}"' + (" keeps its leading zeros" if text != str(value) else "")


def _show(value, quote: bool = True) -> str:
    """A value as the user wrote it in YAML, never as Python prints it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return repr(value) if quote else value
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
