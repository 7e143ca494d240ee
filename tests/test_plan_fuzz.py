"""Fuzz: thousands of mutations of a valid plan file (issue 10, item 4), given to `apply` and `show`.

Every mutated file is refused with one sentence that names it, and nothing changed; or it applies, or
stops on a refusal of the PBX, with one sentence. Never a traceback (an exception that is not an
AdsyncError is what the CLI calls "a bug"), never a hang. The mutations are byte-level (cuts, junk, flipped
bytes), JSON-level (a value replaced, removed or added anywhere, a change duplicated), and JSON-level with a
digest that matches again: what a bug of ours or a forger without the signing key would write, so that
every check behind the digest is reached too. Derandomized: the same cases on every run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adsync_plan import output, pipeline, planfile
from adsync_plan.config import load_config
from adsync_plan.errors import AdsyncError
from adsync_plan.files import parse_document
from tests.conftest import copy_case

EXAMPLES = 2000
# a Python exception's name in a message means an unexpected error was wrapped, not explained
PYTHON_ERROR = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b")
INTERESTING = [
    "admin",
    "user",
    "create",
    "update",
    "orphan",
    "112",
    "110",
    "1",
    "2",
    "90",
    "",
    "0",
    None,
    True,
    -1,
    10**30,
    1.5,
    "2020-01-01T00:00:00Z",
    "2099-01-01T00:00:00Z",
    "+4970222797830",
    "sha256:" + "0" * 64,
    "\u202e\x00\n",
    [],
    {},
]

scalars = (
    st.sampled_from(INTERESTING)
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
json_values = scalars | st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=6), scalars, max_size=3)


# small golden cases between them plan every kind of change (create, update, orphan), held and protected users
# and an override; small, so that 2,000 cases run in seconds
CASE_NAMES = ("r6_login_collision", "update_matched", "r10_protected", "r13_safety")


class Project:
    """A golden case with a saved plan; put back as it was after every case that changed it."""

    def __init__(self, name: str, folder: Path):
        self.folder = copy_case(name, folder)
        self.config = load_config(self.folder / "adsync.yaml")
        self.plan_path = self.folder / "p.plan.json"
        result = pipeline.make_plan(self.config, allow_mass_orphan=name == "r13_safety")
        assert result.plan.changes and not result.refused
        planfile.save_plan(self.plan_path, result.plan)
        self.raw = self.plan_path.read_bytes()
        self.doc = json.loads(self.raw)
        self.pbx = (self.folder / "pbx.yaml").read_bytes()

    def changed(self) -> bool:
        return (self.folder / "pbx.yaml").read_bytes() != self.pbx or self.config.state_dir.exists()

    def restore(self) -> None:
        (self.folder / "pbx.yaml").write_bytes(self.pbx)
        shutil.rmtree(self.config.state_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def projects(tmp_path_factory) -> list[Project]:
    """In memory where the system offers it, and without fsync: each case writes a few small files, and
    durability is not what this test is about (2,000 cases on a busy disk would take minutes)."""
    shm = Path("/dev/shm")
    folder = (
        Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path_factory.mktemp("f")
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", lambda fd: None)
        yield [Project(name, folder) for name in CASE_NAMES]
    shutil.rmtree(folder, ignore_errors=True)


@st.composite
def byte_mutation(draw, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.sampled_from(["cut", "insert", "flip", "truncate"]))
        if op == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b"{", b"]", b'"', b"\xff", b"\n"]))
        elif op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        else:
            del data[at:]
    return bytes(data)


def _children(node) -> list:
    if isinstance(node, dict):
        return sorted(node)
    if isinstance(node, list):
        return list(range(len(node)))
    return []


@st.composite
def json_mutation(draw, doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))  # a fresh copy
    for _ in range(draw(st.integers(1, 3))):
        parent, key = doc, draw(st.sampled_from(_children(doc)))
        while _children(parent[key]) and draw(st.booleans()):  # walk down to a random place
            parent, key = parent[key], draw(st.sampled_from(_children(parent[key])))
        op = draw(st.sampled_from(["replace", "replace", "remove", "add", "duplicate"]))
        if op == "replace":
            parent[key] = draw(json_values)
        elif op == "remove":
            del parent[key]
        elif op == "add" and isinstance(parent[key], dict):
            parent[key][draw(st.text(max_size=8) | st.sampled_from(["fields", "source_id", "signature"]))] = draw(
                json_values
            )
        elif op == "duplicate" and isinstance(parent[key], list) and parent[key]:
            parent[key].append(parent[key][draw(st.integers(0, len(parent[key]) - 1))])
        if not doc:
            break
    return doc


@st.composite
def mutated_plan(draw, project: Project) -> tuple[bytes, bool]:
    """The mutated file, and whether its digest was made to match again."""
    how = draw(st.sampled_from(["bytes", "json", "resealed", "resealed"]))
    if how == "bytes":
        return draw(byte_mutation(project.raw)), False
    doc = draw(json_mutation(project.doc))
    if how == "resealed" and isinstance(doc, dict):
        doc.pop(planfile.DIGEST, None)
        with contextlib.suppress(orjson.JSONEncodeError, TypeError):  # beyond JSON: left without a digest
            doc[planfile.DIGEST] = planfile.content_digest(doc)
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode(), how == "resealed"


def show(plan) -> None:
    """What `show` prints, in every format (redacted too): it must not fail on any plan it accepts."""
    for render in (output.plan_text, output.plan_markdown, output.plan_json):
        for redactor in (output.Redactor(False), output.Redactor(True), output.Redactor(names=True)):
            assert render(plan, redactor)


def check_one(project: Project, raw: bytes) -> str:
    """Apply (and show) one mutated plan; returns what happened, fails on a traceback."""
    project.plan_path.write_bytes(raw)
    started = time.process_time()  # CPU time: a loaded machine stretches wall time, not this
    try:
        show(planfile.load_plan(project.plan_path))
        pipeline.apply(project.config, project.plan_path)
        outcome = "applied"
    except AdsyncError as err:
        message = str(err)
        assert message and "\n" not in message and not PYTHON_ERROR.search(message), message
        if not project.changed():
            assert str(project.plan_path) in message, message  # a refusal names the file
        outcome = "refused" if not project.changed() else "stopped"
    assert time.process_time() - started < 20, "one case took longer than 20 s of CPU time"
    if project.changed():
        project.restore()
    return outcome


def test_the_unmutated_plans_apply(projects):
    for project in projects:
        assert check_one(project, project.raw) == "applied"


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_mutated_plans_are_refused_in_one_sentence_or_apply(projects, data):
    project = data.draw(st.sampled_from(projects))
    raw, resealed = data.draw(mutated_plan(project))
    outcome = check_one(project, raw)
    if not resealed and outcome != "refused":  # only the digest stands between an edit and the PBX
        assert same_content(raw, project.doc), "an edited plan was applied"


def same_content(raw: bytes, doc: dict) -> bool:
    """The file still says the same, as the tool reads it (JSON, or YAML such as `{! "base_state": ...`)."""
    try:
        return parse_document(raw, Path("p.plan.json"), "the plan file")[0] == doc
    except AdsyncError:
        return False
