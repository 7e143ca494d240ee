"""The core's golden cases (tests/cases/<name>/) with a real Active Directory as the source.

For each case a Samba AD DC is seeded with exactly the users and groups of the case's directory.ldif (its
objectGUIDs included), from the data that file is written from (tests/cases/make_cases.py), not through the
project's LDIF parser, so that a parser bug cannot cancel out; then:
1. `render` with `source.type: ldap` gives the same desired state as `render` with the LDIF;
2. a full `plan` then `apply` against the case's file PBX gives the golden plan and PBX file, and a second
   plan finds nothing to do.
A case whose LDIF Active Directory itself could not hold (two users with one sAMAccountName, a user without
one) is skipped with that reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.cases.make_cases import case_entries
from tests.conftest import CASES, copy_case
from tests.servers import samba

pytestmark = pytest.mark.filterwarnings("ignore:ssl.match_hostname:DeprecationWarning")
PASSWORD_ENV = "ADSYNC_TEST_LDAP_PASSWORD"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "adsync.yaml").exists())
PLAN_VOLATILE = ("plan_id", "created_at", "expires_at", "tool_version", "config_sha256", "desired_sha256")
DESIRED_VOLATILE = ("generated_at", "source", "config_sha256")
MASS_ORPHAN_CASES = {"r13_safety"}


def load_yaml(path: Path):
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def users_base_dn(entries, fallback: str) -> str:
    """The deepest container holding every person entry (e.g. OU=Staff,DC=example,DC=com)."""
    parents = [
        dn.split(",", 1)[1].split(",")
        for dn, entry in entries
        if "person" in {str(c).lower() for c in entry.get("objectClass", [])}
    ]
    if not parents:
        return fallback
    common: list[str] = []
    for parts in zip(*(list(reversed(p)) for p in parents), strict=False):
        if len({part.strip().lower() for part in parts}) != 1:
            break
        common.insert(0, parts[0].strip())
    return ",".join(common) or fallback


def ldap_config(case: Path, domain: samba.SambaDomain, base_dn: str) -> Path:
    config = load_yaml(case / "adsync.yaml")
    config["source"] = {
        "type": "ldap",
        "url": domain.ldaps_url,
        "bind_dn": domain.reader_dn,
        "password_env": PASSWORD_ENV,
        "base_dn": base_dn,
        "ca_file": str(domain.ca_file),
        "tls_server_name": domain.server_name,
        "page_size": 2,  # tiny pages, so that even these small directories are read in several pages
    }
    path = case / "adsync-ldap.yaml"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is YAML
    return path


def comparable_desired(path: Path) -> dict:
    return {k: v for k, v in load_yaml(path).items() if k not in DESIRED_VOLATILE}


def comparable_plan(plan: dict) -> dict:
    plan = {k: v for k, v in plan.items() if k not in PLAN_VOLATILE}
    plan["base_state"] = {"fingerprint": plan["base_state"]["fingerprint"]}
    return plan


@pytest.fixture
def case_domain(request, tmp_path, monkeypatch):
    """(case folder, Samba domain seeded with the case's LDIF)."""
    name = request.param
    case = copy_case(name, tmp_path)
    config = load_yaml(case / "adsync.yaml")
    groups = [*config["scope"].get("admin_groups", ()), *config["scope"].get("user_groups", ())]
    try:
        domain = samba.start_domain_from_entries(case_entries(name), groups)
    except samba.UnsupportedDirectory as err:
        pytest.skip(f"Active Directory cannot hold this case's directory: {err}")
    except samba.Unavailable as err:
        if os.environ.get("ADSYNC_REQUIRE_LDAP_SERVERS") == "1":
            pytest.fail(f"ADSYNC_REQUIRE_LDAP_SERVERS=1 but Samba is unavailable: {err}")
        pytest.skip(f"Samba AD DC unavailable: {err}")
    monkeypatch.setenv(PASSWORD_ENV, samba.READER_PASSWORD)
    yield case, domain
    domain.stop()


@pytest.mark.parametrize("case_domain", CASE_NAMES, indirect=True)
def test_golden_case_with_samba_as_the_source(case_domain, cli):
    case, domain = case_domain
    name = case.name
    ldap_yaml = ldap_config(case, domain, users_base_dn(case_entries(name), samba.domain_dn(domain.realm)))

    code, _, err = cli("render", "-c", case / "adsync.yaml", "-o", case / "desired-ldif.yaml")
    assert code == 0, err
    code, _, err = cli("render", "-c", ldap_yaml, "-o", case / "desired-ldap.yaml")
    assert code == 0, err
    assert comparable_desired(case / "desired-ldap.yaml") == comparable_desired(case / "desired-ldif.yaml")
    assert load_yaml(case / "desired-ldap.yaml")["source"]["type"] == "ldap"

    extra = ("--allow-mass-orphan",) if name in MASS_ORPHAN_CASES else ()
    code, out, err = cli("plan", "-c", ldap_yaml, "-o", case / "p.plan.json", "--json", *extra)
    assert code == 0, err
    plan = json.loads(out)
    code, _, err = cli("apply", "-c", ldap_yaml, case / "p.plan.json")
    assert code == 0, err
    expected = CASES / name
    assert comparable_plan(plan) == json.loads((expected / "expected_plan.json").read_text(encoding="utf-8"))
    assert (case / "pbx.yaml").read_text(encoding="utf-8") == (expected / "expected_pbx.yaml").read_text(
        encoding="utf-8"
    )
    code, out, err = cli("plan", "-c", ldap_yaml, "--detailed-exitcode")
    assert code == 0, f"a second plan right after apply still has changes:\n{out}{err}"
