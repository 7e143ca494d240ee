"""A desired state is a file anyone can edit in a pull request (issue 10, item 3).

Property: whatever a desired file says, no plan made from it breaks an invariant: nothing deleted, no reserved
login ID or number, no number with two owners, no protected or administrator PBX user changed (the plan is
carried out on a PBX that refuses what a STARFACE refuses, and checked independently of rules.invariants).

Fuzz: 2,000 mutations of the demo's rendered desired state (structure and bytes) each end in a plan or in one
sentence that names the file; never in a traceback.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adsync_plan import diff, pipeline
from adsync_plan.config import load_config
from adsync_plan.errors import AdsyncError
from adsync_plan.model import SHAPE_FIELDS
from adsync_plan.rules.numbers import NumberRules
from adsync_plan.state import load_snapshot
from tests.conftest import DEMO
from tests.test_invariants import MemoryPbx, carry_out

CI = bool(os.environ.get("CI"))
FUZZ_CASES = int(os.environ.get("ADSYNC_FUZZ_CASES", "2000"))
PROPERTY_CASES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "400"))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The demo, rendered and refreshed once: its configuration, snapshot and desired state."""
    from adsync_plan.cli import run

    folder = tmp_path_factory.mktemp("fuzz") / "demo"
    shutil.copytree(DEMO, folder, ignore=shutil.ignore_patterns("states", "plans", "make_demo.py"))
    assert run(["render", "-c", str(folder / "adsync.yaml")]) == 0
    assert run(["refresh", "-c", str(folder / "adsync.yaml")]) == 0
    config = load_config(folder / "adsync.yaml")
    desired = json.loads(config.desired_path.read_text(encoding="utf-8"))
    # the users matched to PBX users, and ten more: a small file keeps 2,000 cases within seconds
    keep = ["jmueller", "aschroeder", *sorted(desired["users"])[:10]]
    desired["users"] = {account: desired["users"][account] for account in keep}
    return config, load_snapshot(config.snapshot_path), desired, folder


@pytest.fixture
def cheap_field_names(monkeypatch):
    """Naming the changed fields with deepdiff costs 10 ms a user: the fuzz is about the rules, not the names."""
    monkeypatch.setattr(
        diff, "changed_fields", lambda b, a: tuple(f for f in SHAPE_FIELDS if getattr(b, f) != getattr(a, f))
    )


def plan_from(project, document, raw: bytes | None = None):
    """The plan `plan --desired FILE --no-refresh` makes, or the AdsyncError it ends in."""
    config, snapshot, _, folder = project
    path = folder / "states" / "fuzzed.yaml"
    path.write_bytes(raw if raw is not None else json.dumps(document, ensure_ascii=False).encode("utf-8"))
    try:
        desired = pipeline._read_desired(path, config)
        return pipeline._plan(config, desired, snapshot, path, False), path
    except AdsyncError as err:
        return err, path


# -- the property ---------------------------------------------------------------------------------------

INTERNAL = [str(n) for n in range(10, 30)] + ["90", "110", "112", "116123", "0123", "5", "999"]
EXTERNAL = [f"+497022279781{n}" for n in range(0, 10)] + ["+4970222797890", "+4930123456", "+4970222797821"]
EMAILS = ["admin@example.com", "tuer@example.com", "juergen.mueller@example.com", "anna.schroeder@example.com"]
EMAILS += ["gustav.gegangen@example.com", "a@example.com", "A@EXAMPLE.COM", "b@example.com"]
NAMES = ["Anna", "Müller", "-Gegangen", "STARFACE", "Zoë", "x\ny", "\u202eevil", "\u200b", " ", "y" * 300, ""]


@st.composite
def desired_users(draw):
    primary = draw(st.sampled_from(INTERNAL + [None]))
    internal = draw(st.lists(st.sampled_from(INTERNAL), max_size=3, unique=True))
    return {
        "source_id": draw(st.sampled_from(["s1", "s2", "s3", "s4", "s5", "s6"])),
        "dn": "CN=X,DC=example,DC=com",
        "login_id": draw(st.sampled_from(INTERNAL + ["0001"])),
        "first_name": draw(st.sampled_from(NAMES)),
        "last_name": draw(st.sampled_from(NAMES)),
        "email": draw(st.sampled_from(EMAILS)),
        "role": draw(st.sampled_from(["user", "user", "admin"])),
        "primary_internal_number": primary,
        "internal_numbers": sorted({*internal, *([primary] if primary and draw(st.booleans()) else [])}),
        "external_numbers": draw(st.lists(st.sampled_from(EXTERNAL), max_size=2, unique=True)),
        "fax_numbers": draw(st.lists(st.sampled_from(EXTERNAL[:3] + ["25"]), max_size=1, unique=True)),
    }


def property_settings(cases: int):
    return settings(
        max_examples=cases,
        deadline=None,
        derandomize=CI,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


@property_settings(PROPERTY_CASES)
@given(
    users=st.dictionaries(
        st.sampled_from(["anna", "ben", "cleo", "dora", "emil", "fritz", "jmueller"]), desired_users()
    ),
    bindings=st.dictionaries(st.sampled_from(["s1", "s2", "s3"]), st.sampled_from(["1", "2", "3", "4", "5"])),
)
def test_no_plan_from_any_desired_file_breaks_an_invariant(project, cheap_field_names, users, bindings):
    config, snapshot, base, _ = project
    bindings = {s: i for s, i in bindings.items() if list(bindings.values()).count(i) == 1}
    project = (config, _with_bindings(snapshot, bindings), base, project[3])
    result, path = plan_from(project, {**base, "users": users, "held": []})
    if isinstance(result, AdsyncError):
        assert str(path) in str(result) and "bug" not in str(result)  # a schema error names the file
        return
    actions, state = result.plan.changes, snapshot.state
    assert {a.action for a in actions} <= {"create", "update", "orphan"}, "something is deleted"
    rules = NumberRules(config.numbering)
    for a in actions:
        if a.action != "orphan":
            assert all(rules.reserved_reason(n) is None for n in {a.after.login_id, *a.after.internal_numbers})
    protected = {i for i, u in state.users.items() if u.login_id in config.protect_logins}
    admins_bound_as_admins = {bindings.get(a.source_id) for a in actions if a.after.role == "admin"}
    protected |= state.admins - admins_bound_as_admins
    assert not {a.pbx_user_id for a in actions} & protected, "a protected or administrator PBX user is changed"
    pbx = MemoryPbx(state, config.licenses)
    carry_out(list(actions), pbx, {**bindings, **result.plan.bindings})  # refuses two owners, a login twice
    after = pbx.read()
    assert set(after.users) >= set(state.users), "a PBX user disappeared"
    assert all(after.users[i] == state.users[i] for i in protected)
    assert len({u.login_id for u in after.users.values()}) == len(after.users)


def _with_bindings(snapshot, bindings):
    from dataclasses import replace

    return replace(snapshot, bindings=dict(bindings))


# -- the fuzz ---------------------------------------------------------------------------------------------

# Mostly values of the right type, which reach the rules; values of a wrong type end at the schema (and its
# located error message is the slow part of a case), so they are drawn less often.
STRINGS = st.sampled_from(["", "112", "110", "0", "20", "21", "90", "0001", "+4970222797821", "admin", "user", "x\n"])
STRINGS |= st.sampled_from(["\u202e", "\x00", "y" * 300, "\u200b", "tuer@example.com", "ANNA.SCHROEDER@example.com"])
NUMBER_LISTS = st.lists(st.sampled_from(["20", "21", "25", "90", "110", "+4970222797821", "+4930123456"]), max_size=3)
WRONG_TYPES = st.sampled_from([None, 0, -1, 10**30, 1.5, True, [], {}, ["20", "20"], {"a": 1}])
VALUES = st.one_of(STRINGS, STRINGS, NUMBER_LISTS, NUMBER_LISTS, WRONG_TYPES, st.text(max_size=8))
FIELDS = [*SHAPE_FIELDS, "source_id", "dn", "extra"]


@st.composite
def mutations(draw, base):
    accounts = sorted(base["users"])
    kind = draw(st.sampled_from(["set", "set", "set", "delete", "copy", "unhold", "top", "bytes"]))
    account = draw(st.sampled_from(accounts))
    if kind == "set":
        field = draw(st.sampled_from(FIELDS))
        typed = NUMBER_LISTS if field.endswith("_numbers") else STRINGS
        return kind, account, field, draw(st.one_of(typed, typed, VALUES))
    if kind == "delete":
        return kind, account, draw(st.sampled_from(FIELDS)), None
    if kind == "copy":
        return kind, account, draw(st.sampled_from([*accounts, "new", "ANNA", ""])), None
    if kind == "unhold":
        return kind, draw(st.integers(0, len(base["held"]) - 1)), None, None
    if kind == "top":
        return (
            kind,
            draw(st.sampled_from(["format_version", "users", "held", "attributes", "source"])),
            None,
            draw(VALUES),
        )
    return kind, draw(st.integers(0, 20_000)), draw(st.sampled_from(["cut", "insert"])), draw(st.text(max_size=3))


def mutate(document: dict, mutation) -> bytes | None:
    """Apply one mutation; bytes when the file is cut or spliced. A mutation that no longer fits the document
    (its users were replaced by an earlier one) is skipped."""
    try:
        return _mutate(document, mutation)
    except (TypeError, KeyError, AttributeError, IndexError):
        return None


def _mutate(document: dict, mutation) -> bytes | None:
    kind, a, b, value = mutation
    users = document["users"]
    if kind == "set":
        users[a][b] = value
    elif kind == "delete":
        users[a].pop(b, None)
    elif kind == "copy":
        users[b] = {**users[a]}
    elif kind == "unhold":  # a held user, moved into users as if its rules had passed
        held = document["held"][a]
        users[(held.get("account") or "x").lower()] = {**users[sorted(users)[0]], **{k: held[k] for k in ("dn",)}}
    elif kind == "top":
        document[a] = value
    else:
        raw = json.dumps(document, ensure_ascii=False).encode("utf-8")
        a %= len(raw)
        return raw[:a] if b == "cut" else raw[:a] + value.encode("utf-8") + raw[a:]
    return None


@settings(
    max_examples=FUZZ_CASES,
    deadline=None,
    derandomize=CI,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_mutated_desired_states_end_in_a_plan_or_one_sentence(project, cheap_field_names, data):
    base = project[2]
    document = json.loads(json.dumps(base))
    raw = None
    for mutation in data.draw(st.lists(mutations(base), min_size=1, max_size=3)):
        raw = mutate(document, mutation) if raw is None else raw
    result, path = plan_from(project, document, raw)
    if isinstance(result, AdsyncError):
        message = str(result)
        assert str(path) in message, message
        assert "\n" not in message.strip() and "bug" not in message, message
    else:
        assert {a.action for a in result.plan.changes} <= {"create", "update", "orphan"}
