"""Reading and writing the machine-made files: JSON-compatible YAML, one record per line, written atomically.

JSON is valid YAML 1.2 and parses 30-40x faster than YAML at 100,000 users (reference/deepdiff-scale-notes):
so desired state, snapshot, plan and the embedded PBX file are written as sorted, indented JSON with one
user per line, which keeps a git diff to the lines of the users that changed. Hand-written YAML (a PBX
file someone typed) is still read, with line numbers in errors.
"""

from __future__ import annotations

import gc
import os
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import orjson
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from adsync_plan.errors import AdsyncError, InputError


@contextmanager
def _gc_paused():
    """Loading large trees of small objects triggers many useless GC passes; pause it while parsing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_document(path: Path, what: str) -> tuple[object, YAML | None]:
    """Parse a JSON or YAML file. Returns the data and, for YAML, the parsed tree with line positions."""
    return parse_document(read_bytes(path, what), path, what)


def read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found.") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read {what}: {err.strerror}.") from None


def parse_document(raw: bytes, path: Path, what: str) -> tuple[object, YAML | None]:
    if raw.lstrip()[:1] in (b"{", b"["):
        try:
            with _gc_paused():
                return orjson.loads(raw), None
        except orjson.JSONDecodeError:
            pass  # flow-style YAML also starts with { or [: let the YAML parser say what is wrong
    data = parse_yaml(raw, path, what)
    if data is None:
        raise InputError(f"{path}: {what} is empty.")
    return plain(data), data


def parse_yaml(raw: bytes, path: Path, what: str, error: type[AdsyncError] = InputError):
    """A round-trip parse (it keeps line positions); a syntax error is one sentence with the line."""
    try:
        tree = YAML(typ="rt").load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise error(f"{path}: {what} is not UTF-8 text; save it as UTF-8.") from None
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or "syntax error"
        raise error(f"{where}: {what} is not valid YAML ({problem}); fix the syntax.") from None
    _refuse_complex_keys(tree, path, what, error)
    return tree


_SCALAR_KEYS = (str, int, float, type(None), date)  # bool is an int


def _refuse_complex_keys(tree, path: Path, what: str, error: type[AdsyncError]) -> None:
    """YAML allows a mapping or a list as a key (`? [a, b]`, `{x: 1}: y`); no file of ours has one, and
    such a key would reach the code as a tuple or a map. Refused here, with its line, for every YAML file."""
    stack = [tree]
    while stack:  # a loop, not recursion: a deeply nested file must not overflow the stack
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, _SCALAR_KEYS):
                    line = _key_line(node, key)
                    where = f"{path}:{line}" if line else str(path)
                    kind = "a mapping" if isinstance(key, Mapping) else "a list"
                    raise error(f"{where}: {what} has a key that is {kind}; a key must be a plain name, fix it.")
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def _key_line(node, key) -> int | None:
    try:
        return node.lc.key(key)[0] + 1
    except (AttributeError, KeyError, TypeError):
        return None


# What each file of a project holds at its top level, to name a file given in place of another.
_KINDS = (
    ("a plan", ("plan_id", "changes")),
    ("a state snapshot (states/pbx.yaml)", ("lineage", "fingerprint")),
    ("a desired state (states/desired.yaml)", ("held", "users")),
    ("a configuration file", ("version", "source")),
    ("a configuration file", ("version", "pbx")),
    ("the audit log (states/audit.jsonl)", ("plan_id", "result")),
    ("a PBX file (pbx.type: file)", ("users", "numbers")),
)


def kind_of(raw: bytes, data=None) -> str | None:
    """What kind of project file this is ("a plan", "a configuration file", ...), or None when unknown."""
    if looks_like_ldif(raw):
        return "an LDIF file"
    if data is None:  # not parsed (yet): one JSON record a line, as in the audit log?
        try:
            data = orjson.loads(raw.split(b"\n", 1)[0])
        except orjson.JSONDecodeError:
            return None
    if isinstance(data, dict):
        return next((name for name, keys in _KINDS if all(k in data for k in keys)), None)
    return None


def looks_like_ldif(raw: bytes) -> bool:
    """An LDIF file starts (after comments and a `version:` line) with a `dn:` line (RFC 2849)."""
    for line in raw[:4096].splitlines():
        if not line.strip() or line.startswith(b"#") or line.lower().startswith(b"version:"):
            continue
        return line.lower().startswith(b"dn:")
    return False


def plain(node):
    """ruamel's commented maps and sequences -> plain dicts, lists and scalars."""
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    return node


def yaml_line_finder(tree):
    """schema path -> 1-based line of that key in a ruamel round-trip tree (None for JSON files)."""
    if tree is None:
        return None

    def find(parts):
        node, line = tree, None
        for part in parts:
            lc = getattr(node, "lc", None)
            try:
                if lc is not None:
                    line = (lc.key(part) if isinstance(node, dict) else lc.item(part))[0] + 1
                node = node[part]
            except (KeyError, IndexError, TypeError):
                break
        return line

    return find


def _dump(value) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def render_document(doc: dict) -> bytes:
    """Sorted JSON; the entries of each top-level dict, and the records of a top-level list, one a line."""
    lines = [b"{"]
    keys = sorted(doc)
    for i, key in enumerate(keys):
        comma = b"," if i < len(keys) - 1 else b""
        value = doc[key]
        head = _dump(key) + b": "
        if isinstance(value, dict) and value:
            lines.append(b" " + head + b"{")
            items = sorted(value.items())
            lines.extend(
                b"  " + _dump(k) + b": " + _dump(v) + (b"," if j < len(items) - 1 else b"")
                for j, (k, v) in enumerate(items)
            )
            lines.append(b" }" + comma)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(b" " + head + b"[")
            lines.extend(b"  " + _dump(v) + (b"," if j < len(value) - 1 else b"") for j, v in enumerate(value))
            lines.append(b" ]" + comma)
        else:
            lines.append(b" " + head + _dump(value) + comma)
    lines.append(b"}")
    return b"\n".join(lines) + b"\n"


def write_atomic(path: Path, data: bytes) -> None:
    """Temporary file in the same folder, fsync, rename: a reader sees the old file or the new one."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise InputError(f"{path}: cannot write it: {err.strerror}; check the path and its folder.") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)  # gone already after the rename


def write_document(path: Path, doc: dict) -> None:
    write_atomic(path, render_document(doc))
