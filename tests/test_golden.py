"""The golden cases (tests/cases/<rule>/): plan against expected_plan.json, apply against expected_pbx.yaml,
then plan again and find nothing to do. Regenerate with UPDATE_GOLDEN=1 and review the diff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import CASES, check_golden, copy_case

CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "adsync.yaml").exists())
VOLATILE = ("plan_id", "created_at", "expires_at", "tool_version", "config_sha256", "desired_sha256")


def normalise(plan: dict) -> dict:
    plan = {k: v for k, v in plan.items() if k not in VOLATILE}
    plan["base_state"] = {"fingerprint": plan["base_state"]["fingerprint"]}
    return plan


def plan_and_apply(cli, case: Path, extra=()) -> dict:
    code, out, err = cli("plan", "-c", case / "adsync.yaml", "-o", case / "p.plan.json", "--json", *extra)
    assert code == 0, err
    plan = json.loads(out)
    code, out, err = cli("apply", "-c", case / "adsync.yaml", case / "p.plan.json")
    assert code == 0, err
    return plan


@pytest.mark.parametrize("name", CASE_NAMES)
def test_golden_case(name, cli, tmp_path):
    case = copy_case(name, tmp_path)
    extra = ("--allow-mass-orphan",) if name == "r13_safety" else ()
    plan = plan_and_apply(cli, case, extra)
    expected = CASES / name
    check_golden(expected / "expected_plan.json", json.dumps(normalise(plan), indent=1, ensure_ascii=False) + "\n")
    check_golden(expected / "expected_pbx.yaml", (case / "pbx.yaml").read_text(encoding="utf-8"))
    code, out, err = cli("plan", "-c", case / "adsync.yaml", "--detailed-exitcode")
    assert code == 0, f"a second plan right after apply still has changes:\n{out}"
    assert "No changes." in out


@pytest.mark.parametrize("name", CASE_NAMES)
def test_the_case_ldif_is_written_from_the_case_data(name):
    """Samba and the Graph tenant are seeded from the case's data (tests/cases/make_cases.py), the ldif
    source reads the committed file: the two must be the same directory, or "ldap == ldif" proves nothing."""
    from tests import ldifgen
    from tests.cases.make_cases import case_entries

    written = ldifgen.document([ldifgen.entry(dn, attrs) for dn, attrs in case_entries(name)])
    assert (CASES / name / "directory.ldif").read_text(encoding="utf-8") == written
