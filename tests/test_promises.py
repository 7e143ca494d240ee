"""Promises of the README that an audit could break with the rest of the suite green (issue 17, item 1):
the safety valve's two limits, apply refusing a plan the valve refused, `expires_at` from `plan.ttl`, and
stale detection of changes to numbers alone. Each test here was seen to fail with its promise broken by hand.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest

from adsync_plan import diff, pipeline
from adsync_plan.config import Safety, load_config
from adsync_plan.planfile import save_plan
from tests.conftest import check_golden, copy_case


def set_config(demo, old: str, new: str) -> None:
    cfg = demo / "adsync.yaml"
    text = cfg.read_text()
    assert old in text, old
    cfg.write_text(text.replace(old, new))


def safety_diagnostics(out: str) -> list[str]:
    return [d["message"] for d in json.loads(out)["diagnostics"] if d["code"] == "SAFETY_THRESHOLD"]


# -- R13: the safety valve, as a pure function at its limits ---------------------------------------------


def problems(orphans: int, managed: int, max_orphans, bound: int = 0, returned: int = 0, ratio: float = 0.5):
    decisions = SimpleNamespace(managed=managed, group_managed=0)  # no bound PBX groups (issue 16)
    bindings = {f"s{i}": str(i) for i in range(bound)}
    desired_ids = {f"s{i}" for i in range(returned)} | {"new-user-not-bound"}
    return diff.safety_problems(orphans, decisions, bindings, desired_ids, Safety(max_orphans, ratio))


@pytest.mark.parametrize(
    ("orphans", "managed", "max_orphans", "refused"),
    [
        (5, 100, 5, False),  # a count: up to it is fine
        (6, 100, 5, True),
        (10, 100, 0.10, False),  # "10%": 10 of 100
        (11, 100, 0.10, True),
        (3, 39, 0.10, False),  # 3 of 39 is 7.7%
        (4, 39, 0.10, True),  # 4 of 39 is 10.3%
        (1, 3, 0.10, True),  # 10% of 3 managed users allows none
        (0, 0, 0.10, False),
    ],
)
def test_max_orphans_as_a_count_and_as_a_share(orphans, managed, max_orphans, refused):
    found = problems(orphans, managed, max_orphans)
    assert bool(found) is refused, found
    if refused:
        assert f"orphan {orphans} of {managed} managed" in found[0] and "safety.max_orphans" in found[0]


@pytest.mark.parametrize(
    ("bound", "returned", "ratio", "refused"),
    [
        (10, 5, 0.5, False),  # exactly half returned: allowed
        (10, 4, 0.5, True),
        (10, 0, 0.5, True),
        (10, 10, 1.0, False),
        (10, 9, 1.0, True),
        (10, 0, 0.0, False),  # 0 switches the check off
        (0, 0, 0.5, False),  # nothing bound yet (first run): nothing to compare with
    ],
)
def test_min_source_ratio(bound, returned, ratio, refused):
    found = problems(0, 100, 1000, bound, returned, ratio)
    assert bool(found) is refused, found
    if refused:
        assert found == [
            f"the source returned {returned} of the {bound} users bound to PBX users, fewer than "
            f"safety.min_source_ratio ({ratio:g}) allows"
        ]


def test_both_limits_at_once_are_both_reported():
    found = problems(20, 100, 5, bound=10, returned=1)
    assert len(found) == 2 and "max_orphans" in found[0] and "min_source_ratio" in found[1]


def test_a_source_with_nobody_in_scope_is_refused_whatever_the_limits_allow():
    decisions = SimpleNamespace(managed=3, group_managed=0)
    found = diff.safety_problems(0, decisions, {}, set(), Safety(1000, 0.0), in_scope=0)
    assert found == ["the source put no user in scope, while the PBX has 3 managed users that would all become orphans"]
    assert diff.safety_problems(0, SimpleNamespace(managed=0, group_managed=0), {}, set(), Safety(0, 0.0), 0) == []


# -- R13 end to end -------------------------------------------------------------------------------------


def test_a_source_returning_too_few_bound_users_is_refused(cli, demo):
    """37 users are bound after the first apply; a scope that keeps only the 2 administrators returns 2 of
    them. The orphan limit is set out of reach, so only min_source_ratio can refuse."""
    cfg = demo / "adsync.yaml"
    assert cli("plan", "-c", cfg, "-o", demo / "p.plan.json")[0] == 0
    assert cli("apply", "-c", cfg, demo / "p.plan.json")[0] == 0
    set_config(demo, "max_orphans: 5", "max_orphans: 1000")
    set_config(demo, 'user_groups: ["CN=PBX-Users,OU=Groups,DC=example,DC=com"]', "user_groups: []")
    pbx_before = (demo / "pbx.yaml").read_bytes()
    code, out, err = cli("plan", "-c", cfg, "--json", "-o", demo / "q.plan.json")
    assert code == 1, err
    assert safety_diagnostics(out) == [
        "the source returned 2 of the 37 users bound to PBX users, fewer than safety.min_source_ratio (0.5) allows."
    ]
    assert "min_source_ratio" in err and not (demo / "q.plan.json").exists()
    code, _, err = cli("sync", "-c", cfg, "--yes")
    assert code == 1 and "min_source_ratio" in err
    assert (demo / "pbx.yaml").read_bytes() == pbx_before
    set_config(demo, "min_source_ratio: 0.5", "min_source_ratio: 0.05")  # 2 of 37 is above 5%
    code, out, err = cli("plan", "-c", cfg, "--json")
    assert code == 0 and safety_diagnostics(out) == [], err


def test_the_default_share_of_ten_percent_refuses_the_demos_orphan(cli, demo):
    """The demo's PBX has 3 managed users and the plan orphans 1 of them: 33%, more than "10%" allows."""
    cfg = demo / "adsync.yaml"
    set_config(demo, "max_orphans: 5", 'max_orphans: "10%"')
    code, out, err = cli("plan", "-c", cfg, "--json")
    assert code == 1
    assert safety_diagnostics(out) == [
        "the plan would orphan 1 of 3 managed PBX users, more than safety.max_orphans allows (0)."
    ]
    set_config(demo, 'max_orphans: "10%"', 'max_orphans: "34%"')
    code, out, err = cli("plan", "-c", cfg, "--json")
    assert code == 0 and safety_diagnostics(out) == [], err


def test_the_default_limits_apply_when_the_configuration_names_none(cli, demo):
    set_config(demo, "safety:\n  max_orphans: 5\n  min_source_ratio: 0.5\n", "")
    assert load_config(demo / "adsync.yaml").safety == Safety(0.10, 0.5)
    code, out, _ = cli("plan", "-c", demo / "adsync.yaml", "--json")
    assert code == 1 and "safety.max_orphans allows (0)" in safety_diagnostics(out)[0]


def test_apply_refuses_a_saved_plan_that_the_safety_valve_refused(cli, tmp_path):
    """The CLI saves no refused plan, but the Python API can: apply must refuse it all the same."""
    case = copy_case("r13_safety", tmp_path)
    config = load_config(case / "adsync.yaml")
    result = pipeline.make_plan(config)
    assert result.refused and result.plan.changes  # refused, yet it holds orphan actions
    save_plan(case / "refused.plan.json", result.plan)
    pbx = (case / "pbx.yaml").read_bytes()
    code, out, err = cli("apply", "-c", case / "adsync.yaml", case / "refused.plan.json")
    assert code == 1 and "the safety valve refused this plan" in err, err
    assert (case / "pbx.yaml").read_bytes() == pbx
    assert not (case / "states" / "audit.jsonl").exists()
    overridden = pipeline.make_plan(config, allow_mass_orphan=True)  # the override is what makes it applicable
    save_plan(case / "allowed.plan.json", overridden.plan)
    code, _, err = cli("apply", "-c", case / "adsync.yaml", case / "allowed.plan.json")
    assert code == 0, err


# -- plan.ttl -------------------------------------------------------------------------------------------


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize(("ttl", "expected"), [(None, timedelta(hours=24)), ("2h", timedelta(hours=2))])
def test_expires_at_is_created_at_plus_plan_ttl(cli, demo, ttl, expected):
    if ttl:
        set_config(demo, "ttl: 24h", f"ttl: {ttl}")
    code, _, err = cli("plan", "-c", demo / "adsync.yaml", "-o", demo / "p.plan.json")
    assert code == 0, err
    plan = json.loads((demo / "p.plan.json").read_text())
    assert _time(plan["expires_at"]) - _time(plan["created_at"]) == expected


# -- staleness: numbers alone ---------------------------------------------------------------------------


def _plan_then_edit_pbx(cli, demo, edit) -> tuple[int, str, bytes]:
    cfg = demo / "adsync.yaml"
    assert cli("refresh", "-c", cfg)[0] == 0
    assert cli("plan", "-c", cfg, "--no-refresh", "-o", demo / "p.plan.json")[0] == 0
    pbx = json.loads((demo / "pbx.yaml").read_text())
    edit(pbx)
    (demo / "pbx.yaml").write_text(json.dumps(pbx))
    edited = (demo / "pbx.yaml").read_bytes()
    code, _, err = cli("apply", "-c", cfg, demo / "p.plan.json")
    return code, err, edited


def _number(pbx: dict, number: str) -> dict:
    return next(n for n in pbx["numbers"] if n["number"] == number)


def test_a_number_taken_from_a_user_makes_the_plan_stale(cli, demo):
    """Anna Schröder (PBX user 4) loses her external number on the PBX; no name changes."""

    def release(pbx):
        _number(pbx, "+4970222797821").update(owner=None, service=None)

    code, err, edited = _plan_then_edit_pbx(cli, demo, release)
    assert code == 1 and "stale" in err and "PBX user 4 (21) changed: external_numbers" in err, err
    assert (demo / "pbx.yaml").read_bytes() == edited


def test_a_number_given_to_a_user_makes_the_plan_stale(cli, demo):
    def assign(pbx):
        _number(pbx, "+4970222797815").update(owner=4, service="standard")

    code, err, edited = _plan_then_edit_pbx(cli, demo, assign)
    assert code == 1 and "PBX user 4 (21) changed: external_numbers" in err, err
    assert (demo / "pbx.yaml").read_bytes() == edited


def test_a_number_added_to_the_inventory_alone_makes_the_plan_stale(cli, demo):
    def add(pbx):
        pbx["numbers"].append({"number": "+4930123456789", "owner": None, "service": None, "type": "external"})

    code, err, edited = _plan_then_edit_pbx(cli, demo, add)
    assert code == 1 and "stale" in err and "1 number(s) changed owner or were added/removed: +4930123456789" in err
    assert (demo / "pbx.yaml").read_bytes() == edited


# -- the golden files cannot be rewritten in CI ---------------------------------------------------------


def test_update_golden_fails_in_ci(tmp_path, monkeypatch):
    golden = tmp_path / "expected.txt"
    golden.write_text("old\n")
    monkeypatch.setenv("UPDATE_GOLDEN", "1")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="UPDATE_GOLDEN is set in CI"):
        check_golden(golden, "new\n")
    assert golden.read_text() == "old\n"


def test_update_golden_rewrites_locally_and_a_difference_fails_otherwise(tmp_path, monkeypatch):
    golden = tmp_path / "expected.txt"
    golden.write_text("old\n")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("UPDATE_GOLDEN", raising=False)
    with pytest.raises(AssertionError, match="differs"):
        check_golden(golden, "new\n")
    monkeypatch.setenv("UPDATE_GOLDEN", "1")
    with pytest.warns(UserWarning, match="review the diff"):
        check_golden(golden, "new\n")
    assert golden.read_text() == "new\n"


def test_property_tests_are_derandomised_exactly_in_ci():
    """tests/conftest.py loads the hypothesis profile "ci" (fixed seed) when env CI is set, else "dev"."""
    import os

    from hypothesis import settings

    assert settings.default.derandomize is bool(os.environ.get("CI"))
