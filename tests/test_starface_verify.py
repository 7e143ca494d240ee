"""Verified apply: each user is read back after its steps and compared with the plan's `after`; a PBX that
accepts a change but does not store it stops the apply at that user (audit: verification_failed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adsync_plan.providers.file import FileProvider
from adsync_plan.providers.starface import StarfaceProvider
from tests.conftest import CASES, copy_case
from tests.servers.starface import CLIENT_SECRET_ENV, PASSWORD_ENV, StarfaceServer, export_pbx_file, provider_for
from tests.test_starface_golden import licences, on_starface
from tests.test_starface_provider import seed_office


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, StarfaceServer().password)
    monkeypatch.setenv(CLIENT_SECRET_ENV, StarfaceServer().client_secret)
    monkeypatch.setattr(StarfaceProvider, "backoff", 0.01)


def apply_case(name: str, cli, tmp_path: Path, srv: StarfaceServer, ignored: set[str]):
    case = copy_case(name, tmp_path)
    on_starface(case, srv)
    code, _, err = cli("plan", "-c", case / "adsync.yaml", "-o", case / "p.plan.json")
    assert code == 0, err
    srv.ignored = ignored  # from now on the PBX answers 2xx but does not store these fields
    code, out, err = cli("apply", "-c", case / "adsync.yaml", case / "p.plan.json")
    audit = [json.loads(line) for line in (case / "states" / "audit.jsonl").read_text().splitlines()]
    return code, err, audit[-1]


def test_an_ignored_last_name_stops_the_apply_at_that_user(cli, tmp_path):
    with StarfaceServer() as srv:
        code, err, audit = apply_case("update_matched", cli, tmp_path, srv, {"familyName"})
        assert code == 1
        assert (
            "user.mmuster (PBX user 20) does not read back as planned: the PBX shows last name 'Muster' instead "
            "of 'Mustermann'; it may ignore or rewrite these fields, so apply stopped at this user; check the user "
            "on the PBX."
        ) in " ".join(err.split())
        assert audit["result"] == "verification_failed" and audit["steps_not_done"] > 0
        assert srv.owner("31") == (None, None)  # its number assignments, later steps, were not made


def test_an_ignored_e_mail_address_stops_before_the_next_user_is_created(cli, tmp_path):
    with StarfaceServer(version="10") as srv:
        code, err, audit = apply_case("create_basic", cli, tmp_path, srv, {"email"})
        assert code == 1 and "e-mail address none instead of 'aschulz@example.com'" in err, err
        assert audit["result"] == "verification_failed"
        assert srv.counts["POST /users"] == 1  # the first create only: jmueller and zoe were not touched


def test_an_ignored_primary_number_is_caught_after_the_users_last_step(cli, tmp_path):
    with StarfaceServer() as srv:
        code, err, audit = apply_case("create_basic", cli, tmp_path, srv, {"primaryInternalNumberId"})
        assert code == 1 and "primary internal number none instead of '11'" in err, err
        assert audit["result"] == "verification_failed" and audit["steps_not_done"] > 0


@pytest.mark.parametrize("name", ["create_basic", "update_matched", "r9_orphan"])
def test_a_faithful_pbx_passes_verification_with_few_reads_per_user(name, cli, tmp_path):
    with StarfaceServer(licenses=licences(copy_case(name, tmp_path / "x"))) as srv:
        code, err, audit = apply_case(name, cli, tmp_path, srv, set())
        assert code == 0 and audit["result"] == "applied", err
        assert export_pbx_file(srv) == json.loads((CASES / name / "expected_pbx.yaml").read_text(encoding="utf-8"))
        plan = json.loads((tmp_path / name / "p.plan.json").read_text())
        reads = sum(
            srv.counts[k] for k in srv.counts if k.startswith("GET /users/{id}") or k == "GET /permissions/users/{id}"
        )
        reads -= srv.counts["GET /users/{id}"] - sum(
            1 for c in plan["changes"] if c["action"] == "update"
        )  # minus update's own GET
        assert 0 < reads <= 4 * len(plan["changes"])  # a fixed number per user: user, permissions, numbers, primary


def test_read_user_matches_the_full_read_and_reads_only_what_it_needs(tmp_path):
    with StarfaceServer() as srv, provider_for(srv, tmp_path) as prov:
        seed_office(srv)
        state = prov.read()
        for uid, user in state.users.items():
            assert prov.read_user(uid) == user.to_dict()
        srv.reset_counts()
        assert prov.read_user("17", ["last_name"])["last_name"] == "Doe"
        assert srv.total_requests == 1
        srv.reset_counts()
        assert prov.read_user("17")["fax_numbers"] == ["+4970222797899"]
        assert srv.total_requests == 4


def test_file_provider_read_user_matches_its_full_read(tmp_path):
    case = copy_case("update_matched", tmp_path)
    settings = json.loads((case / "adsync.yaml").read_text())["pbx"]
    prov = FileProvider(settings, case)
    state = prov.read()
    prov.assign_number("20", "31", "fax")
    for uid, user in prov.read().users.items():
        assert prov.read_user(uid) == user.to_dict()
    assert "31" in prov.read_user("20")["fax_numbers"] and state.users["20"] != prov.read().users["20"]
