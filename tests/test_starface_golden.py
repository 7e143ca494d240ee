"""The core's golden cases again, with a STARFACE (the local REST server, seeded from the case's pbx.yaml) in
place of the file PBX: the same plans, the same end state, and nothing left to do afterwards. Then an apply
interrupted at every request in turn, each followed by a new plan and apply that converge, and a stale plan
refused against the live PBX."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adsync_plan.providers.starface import StarfaceProvider
from tests.conftest import CASES, copy_case
from tests.servers.starface import (
    CLIENT_SECRET_ENV,
    PASSWORD_ENV,
    StarfaceServer,
    export_pbx_file,
    seed_from_pbx_file,
)
from tests.test_golden import CASE_NAMES, normalise, plan_and_apply


def on_starface(case: Path, srv: StarfaceServer) -> None:
    """Seed the server from the case's PBX file and point the case's configuration at the server."""
    seed_from_pbx_file(srv, json.loads((case / "pbx.yaml").read_text(encoding="utf-8")))
    config = json.loads((case / "adsync.yaml").read_text(encoding="utf-8"))
    # one step at a time: the expected files hold the PBX ids of a sequential apply (test_parallel_apply.py
    # compares parallel applies with these files, created users' ids aside)
    config["pbx"] = {**srv.settings(), "licenses": config["pbx"].get("licenses"), "timeout": 5, "parallelism": 1}
    (case / "adsync.yaml").write_text(json.dumps(config, indent=1), encoding="utf-8")
    (case / "pbx.yaml").unlink()  # nothing may read the file PBX any more


@pytest.fixture(params=["6", "10"], ids=["nonce-login", "starface10-oauth"])
def version(request) -> str:
    """Every test of this module runs against a STARFACE before 10 (nonce login) and a 10.x (OAuth only)."""
    return request.param


def sign_ins(srv: StarfaceServer) -> int:
    return srv.counts["token password"] if srv.oauth else srv.counts["POST /login"]


def licences(case: Path) -> int | None:
    return json.loads((case / "adsync.yaml").read_text(encoding="utf-8"))["pbx"].get("licenses")


@pytest.fixture(autouse=True)
def password(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, StarfaceServer().password)
    monkeypatch.setenv(CLIENT_SECRET_ENV, StarfaceServer().client_secret)
    monkeypatch.setattr(StarfaceProvider, "backoff", 0.01)  # retries of reads without the real pause


@pytest.mark.parametrize("name", CASE_NAMES)
def test_golden_case_on_starface(name, cli, tmp_path, version):
    case = copy_case(name, tmp_path)
    with StarfaceServer(licenses=licences(case), version=version) as srv:
        on_starface(case, srv)
        extra = ("--allow-mass-orphan",) if name == "r13_safety" else ()
        plan = plan_and_apply(cli, case, extra)
        assert normalise(plan) == json.loads((CASES / name / "expected_plan.json").read_text(encoding="utf-8"))
        assert export_pbx_file(srv) == json.loads((CASES / name / "expected_pbx.yaml").read_text(encoding="utf-8"))
        code, out, err = cli("plan", "-c", case / "adsync.yaml", "--detailed-exitcode")
        assert code == 0 and "No changes." in out, out + err
        assert srv.errors == [] and "DELETE /users/{id}" not in srv.counts
        assert sign_ins(srv) >= 3  # plan, apply and the second plan each signed in
        assert ("POST /login" in srv.counts) == (not srv.oauth)
        srv.check_consistency()


def write_counts(srv: StarfaceServer) -> int:
    return sum(
        c
        for key, c in srv.counts.items()
        if key.split()[0] in ("POST", "PUT", "DELETE") and "/login" not in key and "oauth2" not in key
    )


def apply_requests(name: str, cli, tmp_path: Path, version: str) -> int:
    """How many requests the apply of the case's plan makes, uninterrupted."""
    case = copy_case(name, tmp_path / "clean")
    with StarfaceServer(licenses=licences(case), version=version) as srv:
        on_starface(case, srv)
        code, _, err = cli("plan", "-c", case / "adsync.yaml", "-o", case / "p.plan.json")
        assert code == 0, err
        srv.reset_counts()
        code, _, err = cli("apply", "-c", case / "adsync.yaml", case / "p.plan.json")
        assert code == 0, err
        return srv.total_requests


# create with admin role and fax number; update; orphan with a fax number released
@pytest.mark.parametrize("name", ["create_basic", "update_matched", "r9_orphan"])
@pytest.mark.parametrize("kind, after", [("500", False), ("drop", True)])
def test_a_fault_at_every_request_of_an_apply_then_a_new_plan_converges(name, kind, after, cli, tmp_path, version):
    steps = apply_requests(name, cli, tmp_path, version)
    expected = json.loads((CASES / name / "expected_pbx.yaml").read_text(encoding="utf-8"))
    stopped = 0
    for k in range(1, steps + 1):
        case = copy_case(name, tmp_path / str(k))
        with StarfaceServer(licenses=licences(case), version=version) as srv:
            on_starface(case, srv)
            code, _, err = cli("plan", "-c", case / "adsync.yaml", "-o", case / "p.plan.json")
            assert code == 0, err
            srv.fail(k, kind, after=after)  # counted from here: the k-th request of the apply
            code, out, err = cli("apply", "-c", case / "adsync.yaml", case / "p.plan.json")
            if code != 0:
                stopped += 1
                assert "apply stopped after" in err and "run plan again" in err, err
            code, out, err = cli("plan", "-c", case / "adsync.yaml", "-o", case / "q.plan.json")
            assert code == 0, err
            code, out, err = cli("apply", "-c", case / "adsync.yaml", case / "q.plan.json")
            assert code == 0, f"fault at request {k}: {err}"
            code, out, err = cli("plan", "-c", case / "adsync.yaml", "--detailed-exitcode")
            assert code == 0 and "No changes." in out, f"fault at request {k}: {out}"
            srv.check_consistency()  # among others: every login ID once, so no duplicate user
            assert export_pbx_file(srv) == expected, f"fault at request {k}"  # no lost number, no extra user
            assert srv.errors == [] and "DELETE /users/{id}" not in srv.counts
    assert stopped >= 1  # the faults did interrupt applies


def test_a_stale_plan_is_refused_against_the_live_pbx(cli, tmp_path, version):
    case = copy_case("r9_orphan", tmp_path)
    with StarfaceServer(licenses=licences(case), version=version) as srv:
        on_starface(case, srv)
        code, _, err = cli("plan", "-c", case / "adsync.yaml", "-o", case / "p.plan.json")
        assert code == 0, err
        srv.data.users[20]["familyName"] = "Changed-By-Hand"  # someone edits the PBX after the plan was made
        before = export_pbx_file(srv)
        srv.reset_counts()
        code, out, err = cli("apply", "-c", case / "adsync.yaml", case / "p.plan.json")
        assert code == 1
        assert "stale" in err and "20" in err, err
        assert write_counts(srv) == 0 and export_pbx_file(srv) == before  # nothing was changed
