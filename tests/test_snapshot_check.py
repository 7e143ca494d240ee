"""The fast check of a snapshot (adsync_plan.snapshot_check) never accepts what the schema rejects, and it
does accept the snapshots the tool writes (else plan at scale is a fifth slower again, issue 15)."""

from __future__ import annotations

import copy
import json

import fastjsonschema
import pytest

from adsync_plan import schemas, state
from adsync_plan.model import PbxGroup, PbxNumber, PbxState, PhoneUser
from adsync_plan.snapshot_check import surely_valid

ODD_VALUES = [
    None,
    True,
    0,
    1,
    -1,
    1.0,
    "",
    "x",
    "12",
    "12\n",
    "1 2",
    "\uff11\uff12",  # full-width digits: str.isdigit() says yes, the schema's [0-9] no
    "\u00b2",  # superscript two, the same
    "+4912",
    "+4970222797811",
    "+49702227978112345",
    "++4912345",
    "+",
    "49+12345",
    "sha256:" + "a" * 64,
    "sha256:" + "A" * 64,
    "user",
    "admin",
    "internal",
    "external",
    "standard",
    "fax",
    [],
    ["12"],
    ["12", "12"],
    ["+4970222797811"],
    ["+4970222797811", "+4970222797811"],
    [12],
    [["12"]],
    {},
    {"a": "1"},
]


def snapshot_document() -> dict:
    users = {
        "1": PhoneUser(
            "2001", "Jürgen", "Müller", "j@example.com", "user", "2001", ("2001", "600001"), ("+497022202001",)
        ),
        "2": PhoneUser("2002", "Anna", "", "a@example.com", "admin", None, (), (), ("+497022209999", "2002")),
    }
    numbers = {"2001": PbxNumber("internal", "1", "standard"), "+497022202001": PbxNumber("external", "1")}
    numbers["7"] = PbxNumber("internal", "group:5", "standard")
    groups = {"5": PbxGroup("Zentrale", ("1", "2"), ("7",))}  # issue 16: a snapshot with groups stays fast
    snap = state.Snapshot(PbxState(users, frozenset({"2"}), numbers, groups), {"sid-1": "1"}, pbx={"type": "file"})
    return {
        "format_version": 1,
        "lineage": snap.lineage,
        "serial": 3,
        "fingerprint": snap.fingerprint,
        "pbx": snap.pbx,
        **state.canonical(snap.state),
        "bindings": snap.bindings,
        "group_bindings": {"shared:7": "5"},
    }


def places(doc, path=()):
    """Every key path of the document, leaves and containers."""
    yield path
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from places(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from places(value, (*path, i))


def mutations(doc):
    """The document with one value replaced by an odd one, one key removed, or one key added."""
    for path in list(places(doc)):
        if not path:
            continue
        *parent_path, last = path
        for value in ODD_VALUES:
            mutated = copy.deepcopy(doc)
            parent = mutated
            for part in parent_path:
                parent = parent[part]
            parent[last] = copy.deepcopy(value)
            yield path, mutated
        if isinstance(last, str):
            mutated = copy.deepcopy(doc)
            parent = mutated
            for part in parent_path:
                parent = parent[part]
            del parent[last]
            yield (*path, "removed"), mutated
            parent["extra"] = "x"
            yield (*path, "extra"), mutated


def schema_accepts(doc) -> bool:
    try:
        schemas.fast_validator("state")(doc)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def test_the_check_accepts_a_snapshot_the_tool_writes(tmp_path):
    doc = snapshot_document()
    assert schema_accepts(doc) and surely_valid(doc)
    users = {str(i): PhoneUser(str(2000 + i), "A", "B", f"{i}@example.com", "user", str(2000 + i)) for i in range(5)}
    state.save_snapshot(tmp_path / "pbx.yaml", PbxState(users, frozenset(), {}), {"s": "1"}, {"type": "file"}, None)
    assert surely_valid(json.loads((tmp_path / "pbx.yaml").read_text()))


def test_the_check_is_never_more_lenient_than_the_schema():
    accepted = rejected = 0
    for path, doc in mutations(snapshot_document()):
        if surely_valid(doc):
            assert schema_accepts(doc), f"the fast check accepts what the schema rejects at {path}"
            accepted += 1
        else:
            rejected += 1
    assert accepted > 50 and rejected > 1000  # both sides were exercised


@pytest.mark.parametrize("top", [None, [], "x", {}])
def test_the_check_rejects_what_is_no_snapshot_at_all(top):
    assert not surely_valid(top)


def test_a_snapshot_the_check_rejects_is_still_explained_by_the_schema(tmp_path):
    doc = snapshot_document()
    doc["users"]["1"]["internal_numbers"] = ["20O1"]  # a letter O
    path = tmp_path / "pbx.yaml"
    path.write_text(json.dumps(doc))
    with pytest.raises(Exception, match=r"users\.1\.internal_numbers\.0: '20O1' has the wrong form \(digits only\)"):
        state.load_snapshot(path)
