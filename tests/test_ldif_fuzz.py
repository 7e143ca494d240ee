"""Fuzzing the LDIF reader (hypothesis).

1. Round trip (1,000 documents): any directory written as LDIF in any of the ways RFC 2849 allows (base64 or
   not, folded at any width, comments anywhere, CR LF or LF, with or without a version line, one to three
   empty lines between records, plain or `changetype: add` records) reads back as exactly the values written.
2. Mutations of such files (at least 2,000): a line deleted, doubled, moved, broken or inserted, an empty line
   lost, a character or an invalid byte added or removed. Every one ends in a directory or in an InputError
   that is one sentence naming the file and a line that exists (or, for a scope group that is gone, the file):
   never another exception, never a hang.
3. The same mutations of the demo's export, through `render`: a desired state, or one "Error:" sentence
   naming the export (no "This is a bug").

Deterministic in CI (the CI environment variable set: derandomize, no example database); locally each run
explores new examples. HYPOTHESIS_LDIF_EXAMPLES raises the number of mutated files.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from adsync_plan.cli import run
from adsync_plan.config import Scope
from adsync_plan.errors import InputError
from adsync_plan.sources import ldif
from tests.conftest import DEMO

IN_CI = bool(os.environ.get("CI"))
MUTATED = max(2000, int(os.environ.get("HYPOTHESIS_LDIF_EXAMPLES", "2000")))
STAFF = "CN=Staff,OU=Groups,DC=x"
SCOPE = Scope(admin_groups=(), user_groups=(STAFF,), nested_groups=True)
COMMON = {"deadline": None, "derandomize": IN_CI, "database": None if IN_CI else settings.default.database}

# Documents are built by plain Python from a seed that hypothesis draws: drawing every character through
# hypothesis cost 100 ms a document, a seed costs nothing (and a failing seed reproduces its document).
VALUE_CHARACTERS = " :<#=;,-+é€ü𝄞\t\r\n\0x" + "".join(map(chr, range(32, 127))) + "äöüßÄÖÜ"
RDN_CHARACTERS = "abcXYZ09 -_äö"
NAME_FIRST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
NAME_REST = NAME_FIRST + "0123456789-"
SPECIAL_NAMES = ("dn", "objectguid", "control", "changetype", "version")


def _text(rnd: random.Random, characters: str, low: int, high: int) -> str:
    return "".join(rnd.choice(characters) for _ in range(rnd.randint(low, high)))


def _name(rnd: random.Random) -> str:
    while True:
        name = rnd.choice(NAME_FIRST) + _text(rnd, NAME_REST, 0, 10)
        if rnd.random() < 0.2:
            name += ";" + _text(rnd, "abcz019-", 1, 5)
        if name.split(";")[0].lower() not in SPECIAL_NAMES:
            return name


def make_records(rnd: random.Random) -> list[tuple[str, list[tuple[str, str | bytes]]]]:
    """(dn, [(attribute, value)]) per record: users and groups, with the attributes the source reads."""
    out = []
    for n in range(rnd.randint(1, 5)):
        if rnd.random() < 0.5:
            dn = f"CN={_text(rnd, RDN_CHARACTERS, 1, 10).strip() or 'u'} {n},OU=People,DC=x"
            attrs = [("objectClass", "top"), ("objectClass", "person"), ("objectClass", "user")]
            attrs.append(("objectGUID", rnd.randbytes(16)))
            attrs.append(("sAMAccountName", f"u{n}"))
            for name in rnd.sample(["givenName", "sn", "mail", "telephoneNumber"], rnd.randint(0, 4)):
                attrs.append((name, _text(rnd, VALUE_CHARACTERS, 0, 24)))
            attrs += [("memberOf", rnd.choice([STAFF, "CN=Other,DC=x"])) for _ in range(rnd.randint(0, 2))]
        else:
            dn = f"CN=Group {n},OU=Groups,DC=x" if n else STAFF
            attrs = [("objectClass", "group"), ("member", f"CN=x {n},OU=People,DC=x")]
        attrs += [(_name(rnd), _text(rnd, VALUE_CHARACTERS, 0, 24)) for _ in range(rnd.randint(0, 3))]
        out.append((dn, attrs))
    return out


def _safe(value: str | bytes) -> bool:
    return isinstance(value, str) and not value.startswith((" ", ":", "<")) and not any(c in value for c in "\r\n\0")


def make_document(seed: int) -> tuple[str, list]:
    """An LDIF text of `make_records()`, written in one of the many ways RFC 2849 allows, and the records."""
    rnd = random.Random(seed)
    recs = make_records(rnd)
    width = rnd.choice([None, 2, 5, 76])
    newline = rnd.choice(["\n", "\r\n"])
    lines = ["version: 1", ""] if rnd.random() < 0.5 else []
    if rnd.random() < 0.5:
        lines += ["# an export", " folded comment"]
    for index, (dn, attrs) in enumerate(recs):
        if index:
            lines += [""] * rnd.randint(1, 3)
        record = [_line("dn", dn, rnd.random() < 0.5)]
        if rnd.random() < 0.25:
            record.append("changetype: add")
        for name, value in attrs:
            record.append(_line(name, value, not _safe(value) or rnd.random() < 0.2))
            if rnd.random() < 0.1:
                record.append("# comment: " + name)
        for line in record:
            lines += _fold(line, width)
    return newline.join(lines) + newline * rnd.randint(0, 2), recs


def _line(name: str, value: str | bytes, encode: bool) -> str:
    if encode:
        raw = value if isinstance(value, bytes) else value.encode()
        return f"{name}:: {base64.b64encode(raw).decode()}"
    return f"{name}: {value}"


def _fold(line: str, width: int | None) -> list[str]:
    if width is None or len(line) <= width:
        return [line]
    return [line[:width]] + [" " + line[i : i + width] for i in range(width, len(line), width)]


SEEDS = st.integers(0, 2**64 - 1)


def expected(recs) -> list[tuple[str, dict]]:
    out = []
    for dn, attrs in recs:
        entry: dict[str, list] = {}
        for name, value in attrs:
            entry.setdefault(name.split(";")[0].lower(), []).append(value)
        out.append((dn, entry))
    return out


def _as_read(entry: dict) -> dict:
    """Values as the reader gives them: Binary for bytes that are not UTF-8 becomes plain bytes."""
    return {k: [bytes(v) if isinstance(v, bytes) else v for v in values] for k, values in entry.items()}


@settings(max_examples=1000, **COMMON)
@given(SEEDS)
def test_any_way_of_writing_a_directory_reads_back_the_same(seed):
    text, recs = make_document(seed)
    note(text)
    parsed = [(dn, _as_read(entry)) for dn, entry in ldif.parse_ldif(text, "f.ldif")]
    assert parsed == expected(recs)


# --- mutations ----------------------------------------------------------------------------------------------

INSERTED_LINES = [
    "",
    " ",
    "  ",
    " x",
    "#",
    "# c",
    "dn: CN=Intruder,DC=x",
    "dn:: gA==",
    "sn:: gA==",
    "mail:: /w==",
    "memberOf:: /w==",
    "member:: /w==",
    "objectClass:: gA==",
    "objectClass: group",
    "objectClass: person",
    "changetype: modify",
    "changetype: add",
    "control: 1.2.3 true",
    "control: x",
    "version: 1",
    "version: 2",
    "jpegPhoto:< file:///etc/passwd",
    ":",
    "::",
    ":<",
    "x",
    "sn;: y",
    "s_n: y",
    "objectGUID:: AAAA",
    "objectGUID: not-a-guid",
    "sn:: Rm9v=",
    "sn::",
    "userAccountControl: 514",
    "userAccountControl: 9" * 30,
    f"memberOf: {STAFF}",
    "member: " + STAFF,
    "dn:",
    "DN: cn=upper",
    "sn: \t",
    "sn: a\rb",
]
CHARACTERS = list(" \n:#<=\r\0-;é\t") + ["\n\n", "\n ", "\r\n"]
BYTES = [b"\xff", b"\xc3", b"\xe2\x82", b"\xef\xbb\xbf", b"\x00"]


def mutate(text: str, mutations: list[tuple[str, int, int]]) -> bytes:
    data = text.encode()
    for kind, at, choice in mutations:
        if kind.startswith("byte"):
            at %= len(data) + 1
            data = data[:at] + (BYTES[choice % len(BYTES)] if kind == "byte+" else b"") + data[at + (kind == "byte-") :]
            continue
        text = data.decode("utf-8", "surrogateescape")
        lines = text.split("\n")
        i = at % len(lines)
        if kind == "delete line":
            del lines[i]
        elif kind == "double line":
            lines.insert(i, lines[i])
        elif kind == "move line":
            lines.insert(choice % len(lines), lines.pop(i))
        elif kind == "insert line":
            lines.insert(i, INSERTED_LINES[choice % len(INSERTED_LINES)])
        elif kind == "indent line":
            lines[i] = " " + lines[i]
        elif kind == "lose empty line":
            empty = [n for n, line in enumerate(lines) if not line]
            if empty:
                del lines[empty[choice % len(empty)]]
        text = "\n".join(lines)
        if kind == "insert char":
            at %= len(text) + 1
            text = text[:at] + CHARACTERS[choice % len(CHARACTERS)] + text[at:]
        elif kind == "delete char" and text:
            at %= len(text)
            text = text[:at] + text[at + 1 :]
        data = text.encode("utf-8", "surrogateescape")
    return data


MUTATION = st.tuples(
    st.sampled_from(
        [
            "delete line", "double line", "move line", "insert line", "insert line", "indent line",
            "lose empty line", "insert char", "insert char", "delete char", "byte+", "byte-",
        ]
    ),
    st.integers(0, 10_000),
    st.integers(0, 1000),
)  # fmt: skip


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory(prefix="ldif-fuzz-") as name:
        yield Path(name)


@settings(max_examples=MUTATED, **COMMON)
@given(seed=SEEDS, mutations=st.lists(MUTATION, min_size=1, max_size=3))
def test_a_mutated_file_reads_or_is_one_located_sentence(folder, seed, mutations):
    data = mutate(make_document(seed)[0], mutations)
    note(data)
    path = folder / "directory.ldif"
    path.write_bytes(data)
    started = time.process_time()  # CPU time: a loaded machine stretches wall time, not this
    try:
        directory = ldif.read_directory({"type": "ldif", "path": path.name}, SCOPE, {}, folder)
    except InputError as err:
        message = str(err)
        assert "\n" not in message and message.endswith((".", "?")), message
        located = re.match(re.escape(str(path)) + r":(\d+): \S", message)
        if located:
            assert 1 <= int(located.group(1)) <= data.count(b"\n") + 1, message
        else:  # only what concerns the whole file may name no line
            assert message.startswith(f"{path}: the scope group {STAFF} (scope.user_groups)"), message
    else:
        assert all(user.source_id and user.dn is not None for user in directory.users)
    assert time.process_time() - started < 5


@settings(max_examples=60, **COMMON)
@given(mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_render_of_a_mutated_demo_export_writes_a_desired_state_or_says_one_sentence(demo_copy, mutations):
    demo, original = demo_copy
    (demo / "directory.ldif").write_bytes(mutate(original, mutations))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(["render", "-c", str(demo / "adsync.yaml"), "-o", str(demo / "desired.yaml")])
    errors = [line for line in err.getvalue().splitlines() if line.startswith("Error:")]
    assert code in (0, 1) and "Traceback" not in err.getvalue(), err.getvalue()
    if code:
        assert len(errors) == 1 and "bug" not in errors[0], err.getvalue()
        assert errors[0].startswith(f"Error: {demo / 'directory.ldif'}"), errors[0]


@pytest.fixture(scope="module")
def demo_copy(folder):
    demo = folder / "demo"
    shutil.copytree(DEMO, demo, ignore=shutil.ignore_patterns("states", "plans", "make_demo.py"))
    return demo, (demo / "directory.ldif").read_text(encoding="utf-8")
