"""Reading and writing the machine-made files: JSON-compatible YAML, one record per line, written atomically.

JSON is valid YAML 1.2 and parses 30-40x faster than YAML at 100,000 users (reference/deepdiff-scale-notes):
so desired state, snapshot, plan and the embedded PBX file are written as sorted, indented JSON with one
user per line, which keeps a git diff to the lines of the users that changed. Hand-written YAML (a PBX
file someone typed, or one a YAML formatter rewrote) is read by yaml-rs, a YAML 1.2 loader written in Rust
that reads the same data as ruamel.yaml (tests/test_yaml_loader.py) about 100 times faster and in a fifth of
the memory; ruamel's round-trip parse, which knows line numbers, runs only to locate an error.
"""

from __future__ import annotations

import gc
import os
import re
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import orjson
import yaml_rs
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


def parse_document(raw: bytes, path: Path, what: str) -> tuple[object, LineTree | None]:
    """Data, and for YAML a tree that finds the line of a key (parsed only when an error needs a line)."""
    if raw.lstrip()[:1] in (b"{", b"["):
        try:
            with _gc_paused():
                return orjson.loads(raw), None
        except orjson.JSONDecodeError:
            pass  # flow-style YAML also starts with { or [: let the YAML parser say what is wrong
    data, tree = parse_yaml_fast(raw, path, what)
    if data is None:
        raise _unreadable(InputError, f"{path}: {what} is empty")
    return data, tree


def parse_yaml_fast(
    raw: bytes, path: Path, what: str, error: type[AdsyncError] = InputError
) -> tuple[object, LineTree]:
    """Data read by yaml-rs, and a tree that finds the line of a key; None for an empty file. ruamel.yaml
    parses only what yaml-rs cannot read as it would, and says what is wrong, with the line, as `error`."""
    data = _fast_yaml(raw)
    tree = LineTree(raw, path, what, error)
    if data is _SLOW:
        data = plain(tree.parsed())
    return data, tree


class _Slow:
    """yaml-rs cannot read this document as ruamel.yaml would: let the round-trip parser do it."""


_SLOW = _Slow()
_CONTAINERS = (dict, list)
# A directive (%YAML 1.1 changes the meaning of scalars) is left to ruamel.yaml.
_DIRECTIVE = re.compile(rb"^%", re.MULTILINE)


def _fast_yaml(raw: bytes):
    """The data of a YAML mapping, read by yaml-rs; _SLOW for anything that needs ruamel.yaml (a syntax error
    to locate, a directive, a key that is a list or a mapping, and a list: yaml-rs also returns several
    documents as one list, and every file read here holds one mapping)."""
    if _DIRECTIVE.search(raw):
        return _SLOW
    try:
        text = raw.decode("utf-8")
        with _gc_paused():
            data = yaml_rs.loads(text)
    except (UnicodeDecodeError, yaml_rs.YAMLDecodeError):
        return _SLOW
    return _plain_keys(data) if isinstance(data, dict) else _SLOW


def _plain_keys(node):
    """Mapping keys as strings, as plain() makes them, changed in place (the data is fresh from the parser);
    _SLOW for a key that is a list or a mapping. Only containers are visited: most values are scalars."""
    if type(node) is dict:
        if not all(type(k) is str for k in node):
            if any(isinstance(k, tuple | frozenset) for k in node):
                return _SLOW
            node = {str(k): v for k, v in node.items()}
        children = node.items()
    else:
        children = enumerate(node)
    for key, value in children:
        if type(value) in _CONTAINERS:
            plain_value = _plain_keys(value)
            if plain_value is _SLOW:
                return _SLOW
            node[key] = plain_value  # a new mapping when its keys were not all strings
    return node


class LineTree:
    """The round-trip parse of a YAML document, made on first use: only an error needs line numbers."""

    def __init__(self, raw: bytes, path: Path, what: str, error: type[AdsyncError] = InputError):
        self._args, self._tree = (raw, path, what, error), None

    def parsed(self):
        if self._tree is None:
            self._tree = parse_yaml(*self._args)
        return self._tree


def _unreadable(error: type[AdsyncError], located: str, advice: str = "") -> AdsyncError:
    """The error for a file that cannot be read at all: `located` (the file, the line, what is wrong), then the
    advice for a file people write. `located` is kept apart so that a file only the tool writes can give its
    own advice instead (parse_as): no one should mend a plan or a snapshot by hand."""
    err = error(f"{located}; {advice}." if advice else f"{located}.")
    err.located = located
    return err


def parse_yaml(raw: bytes, path: Path, what: str, error: type[AdsyncError] = InputError):
    """A round-trip parse (it keeps line positions); a syntax error is one sentence with the line."""
    try:
        tree = YAML(typ="rt").load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _unreadable(error, f"{path}: {what} is not UTF-8 text", "save it as UTF-8") from None
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or "syntax error"
        raise _unreadable(error, f"{where}: {what} is not valid YAML ({problem})", "fix the syntax") from None
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


PLAN = "a plan"
SNAPSHOT = "a state snapshot (states/pbx.yaml)"
DESIRED = "a desired state (states/desired.yaml)"
CONFIG = "a configuration file"
AUDIT = "the audit log (states/audit.jsonl)"
LDIF = "an LDIF file"
# What each file of a project holds at its top level, to name a file given in place of another.
_KINDS = (
    (PLAN, ("plan_id", "changes")),
    (SNAPSHOT, ("lineage", "fingerprint")),
    (DESIRED, ("held", "users")),
    (CONFIG, ("version", "source")),
    (CONFIG, ("version", "pbx")),
    (AUDIT, ("plan_id", "result")),
    ("a PBX file (pbx.type: file)", ("users", "numbers")),
)


def parse_as(raw: bytes, path: Path, what: str, kind: str, hint: str, remake: str | None = None):
    """parse_document for a file that should be `kind`; another file of the project (a configuration given
    as a plan, an LDIF file as a desired state) is named as what it is, whether it parses or not. `remake`:
    how to make the file again, for a file only the tool writes: one that cannot be read was cut short (a full
    disk, a copy stopped halfway) or changed, and is made again, not mended."""
    try:
        data, tree = parse_document(raw, path, what)
    except InputError as err:
        refuse_other_kind(raw, None, path, kind, hint)
        located = getattr(err, "located", None)
        if remake and located:
            raise InputError(f"{located}; it was cut short or changed: {remake}.") from None
        raise
    refuse_other_kind(raw, data, path, kind, hint)
    return data, tree


def refuse_other_kind(raw: bytes, data, path: Path, kind: str, hint: str, error: type[AdsyncError] = InputError):
    found = kind_of(raw, data)
    if found and found != kind:
        raise error(f"{path}: this is {found}, not {kind}; {hint}.")


def kind_of(raw: bytes, data=None) -> str | None:
    """What kind of project file this is ("a plan", "a configuration file", ...), or None when unknown."""
    if looks_like_ldif(raw):
        return LDIF
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
    """schema path -> 1-based line of that key in a ruamel round-trip tree, or a LineTree (None for JSON)."""
    if tree is None:
        return None

    def find(parts):
        node, line = (tree.parsed() if isinstance(tree, LineTree) else tree), None
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
    """Temporary file in the same folder, fsync, rename: a reader sees the old file or the new one. The file
    keeps its mode (a new one gets the umask's), and a symbolic link is written through: its target is
    replaced, the link stays."""
    tmp = None
    try:
        target = _write_target(path)
        mode = _mode_for(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # mkstemp makes it 600
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as err:
        raise InputError(f"{path}: cannot write it: {err.strerror}; check the path and its folder.") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)  # gone already after the rename


def _write_target(path: Path) -> Path:
    if not path.is_symlink():
        return path
    target = path.resolve()
    if not target.parent.is_dir():
        raise InputError(
            f"{path} is a symbolic link to {target}, whose folder does not exist; nothing was written. Point the "
            "link at an existing folder, or remove the link."
        )
    return target


def _mode_for(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


_UMASK = _umask()  # read once, at import: os.umask can only be read by setting it


def write_document(path: Path, doc: dict) -> None:
    write_atomic(path, render_document(doc))
