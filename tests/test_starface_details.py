"""Smaller points from the public evidence: a new user's initial password meets a typical policy, an e-mail
address is written in the directory's exact case, Italian numbers keep their leading zero in E.164, and an
implausibly short external number is a warning in plan (and doctor)."""

from __future__ import annotations

import json

import pytest

from adsync_plan.model import PhoneUser
from adsync_plan.providers.starface import StarfaceProvider, e164
from tests.conftest import copy_case
from tests.servers.starface import CLIENT_SECRET_ENV, PASSWORD_ENV, StarfaceServer, provider_for
from tests.test_golden import plan_and_apply
from tests.test_starface_golden import on_starface


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, StarfaceServer().password)
    monkeypatch.setenv(CLIENT_SECRET_ENV, StarfaceServer().client_secret)
    monkeypatch.setattr(StarfaceProvider, "backoff", 0.01)


def test_initial_passwords_meet_a_typical_policy(tmp_path):
    with StarfaceServer() as srv, provider_for(srv, tmp_path) as prov:
        srv.password_policy = True  # refuses a create whose password is not 16+ with all four classes
        for n in range(60):
            prov.create_user(PhoneUser(str(100 + n), "New", "User", f"u{n}@example.com"))
        assert len(srv.data.passwords) == 60 and len(set(srv.data.passwords.values())) == 60


@pytest.mark.parametrize("version", ["6", "10"])
def test_an_e_mail_address_gets_the_directorys_exact_case(cli, tmp_path, version):
    with StarfaceServer(version=version) as srv:
        case = copy_case("update_matched", tmp_path)
        on_starface(case, srv)
        assert srv.data.users[20]["email"] == "max.muster@example.com"  # matches, but only case-insensitively
        plan = plan_and_apply(cli, case)
        assert "email" in plan["changes"][0]["fields"]
        assert srv.data.users[20]["email"] == "MAX.muster@example.com"  # what the PBX's AD login compares


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"nationalPrefix": "39", "localPrefix": "06", "number": "6982"}, "+39066982"),  # Rome keeps its 0
        ({"nationalPrefix": "39", "localPrefix": "02", "number": "72001234"}, "+390272001234"),
        ({"nationalPrefix": "49", "localPrefix": "07022", "number": "2797830"}, "+4970222797830"),
        ({"nationalPrefix": "0043", "localPrefix": "01", "number": "5338711"}, "+4315338711"),
    ],
)
def test_external_numbers_in_e164(fields, expected):
    assert e164({"type": "EXTERNAL", "exitCode": "00", **fields}) == expected


def test_an_italian_number_is_read_and_assigned_as_e164(tmp_path):
    with StarfaceServer() as srv, provider_for(srv, tmp_path) as prov:
        uid = srv.add_user("30", "Gia", "Rossi", "gia@example.it")
        srv.add_external("+390272001234", national="39", local="02")
        assert "+390272001234" in prov.read().numbers
        prov.assign_number(str(uid), "+390272001234", "standard")
        assert srv.owner("+390272001234") == (uid, 1)


def test_an_implausibly_short_external_number_is_a_plan_warning(cli, tmp_path):
    with StarfaceServer() as srv:
        case = copy_case("update_matched", tmp_path)
        on_starface(case, srv)
        srv.add_external("+4970222")  # the line's area code is set, the subscriber block is not
        code, out, err = cli("plan", "-c", case / "adsync.yaml", "--json")
        assert code == 0, err
    found = [d for d in json.loads(out)["diagnostics"] if d["code"] == "SHORT_EXTERNAL_NUMBER"]
    assert [d["severity"] for d in found] == ["warning"]
    assert "+4970222 reads as implausibly short (7 digits)" in found[0]["message"]
