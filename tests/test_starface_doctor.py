"""`adsync-plan doctor`: a read-only first contact that says how it signed in, what the PBX has and what the
tool maps it to; a missing or ambiguous mapping fails doctor (exit 1) and plan with the same sentence."""

from __future__ import annotations

import pytest

from adsync_plan.output import md
from adsync_plan.providers.starface import StarfaceProvider
from tests.conftest import ROOT, copy_case
from tests.servers.starface import CLIENT_SECRET_ENV, PASSWORD_ENV, StarfaceServer
from tests.test_golden import check_golden
from tests.test_starface_golden import on_starface

GOLDEN = ROOT / "tests" / "golden" / "doctor_report.md"


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, StarfaceServer().password)
    monkeypatch.setenv(CLIENT_SECRET_ENV, StarfaceServer().client_secret)
    monkeypatch.setattr(StarfaceProvider, "backoff", 0.01)


def doctor_case(srv: StarfaceServer, tmp_path):
    case = copy_case("update_matched", tmp_path)
    on_starface(case, srv)
    srv.add_user("99", "REST", "API", "", user_id=90)  # a technical account without an e-mail address
    srv.add_external("+4970222")  # a number that reads as implausibly short
    return case


def writes(srv: StarfaceServer) -> int:
    return sum(c for k, c in srv.counts.items() if k.split()[0] in ("POST", "PUT", "DELETE") and "/login" not in k)


def test_doctor_on_a_starface_10_prints_the_mapping(cli, tmp_path):
    with StarfaceServer(version="10") as srv:
        case, url = doctor_case(srv, tmp_path), srv.url
        code, out, err = cli("doctor", "-c", case / "adsync.yaml")
        assert code == 0, err
        assert writes(srv) == srv.counts["POST /auth/realms/pbx/oauth2/token"]  # read-only but for the sign-in
    assert f"The STARFACE PBX at {url}: signed in with OAuth (STARFACE 10 and later)" in out
    assert "token endpoint" in out and "from the discovery document" in out
    assert "Version: 10.0.2.6." in out
    for line in (
        "1 standard_call (Standard Call) -> standard numbers",
        "3 software_fax (Software Fax) -> read as fax",
        "4 fax2mail (Software Fax2Mail) -> fax numbers",
        "11 admin_perm (Administration) -> administrator",
        "EXTERNAL: ",
        "read exitCode 00, nationalPrefix 49, localPrefix 07022, number 2797810 as +4970222797810",
        "1 login ID 0001 Admin STARFACE: the login ID adsync-plan signs in with, a technical name",
        "90 login ID 99 REST API: a technical name, no e-mail address",
        "The external number +4970222 reads as implausibly short (7 digits)",
        "Every mapping apply needs was found.",
    ):
        assert line in out, out


def test_doctor_markdown_report_is_a_golden_file(cli, tmp_path):
    with StarfaceServer(version="10") as srv:
        case, url = doctor_case(srv, tmp_path), srv.url
        code, out, err = cli("doctor", "-c", case / "adsync.yaml", "--markdown")
    assert code == 0, err
    out = out.replace(md(url), md("https://pbx.example.com"))  # the server's port differs per run
    check_golden(GOLDEN, out.encode())


def test_doctor_with_the_nonce_login_and_no_version(cli, tmp_path):
    with StarfaceServer() as srv:
        case = doctor_case(srv, tmp_path)
        code, out, err = cli("doctor", "-c", case / "adsync.yaml")
    assert code == 0, err
    assert "signed in with the nonce login (STARFACE before 10) as login ID 0001" in out
    assert "Version: not told by the API." in out


@pytest.mark.parametrize(
    "break_it, sentence",
    [
        (
            lambda srv: [srv.data.services.pop(sid) for sid in (3, 4)],
            "has no call service 'software fax2mail' or 'software_fax2mail' or 'fax2mail' or 'software_fax' or "
            "'software fax' or 'fax' (it has: 1 standard_call, 2 conference_room); set pbx.call_services.fax in the "
            "configuration to the name or id of its fax call service.",
        ),
        (
            lambda srv: srv.data.services.update(
                {5: {"serviceId": 5, "serviceName": "fax_mail", "label": "Software Fax2Mail"}}
            ),
            "has 2 call services named 'software fax2mail' (ids 4, 5); set pbx.call_services.fax in the "
            "configuration to the id of the one for fax numbers.",
        ),
    ],
)
def test_a_missing_or_ambiguous_mapping_fails_doctor_and_plan_with_one_sentence(cli, tmp_path, break_it, sentence):
    with StarfaceServer() as srv:
        case = doctor_case(srv, tmp_path)
        break_it(srv)
        code, out, err = cli("doctor", "-c", case / "adsync.yaml")
        assert code == 1 and sentence in " ".join(out.split()), out
        code, out, err = cli("plan", "-c", case / "adsync.yaml")
        assert code == 1 and sentence in " ".join(err.split()), err
        assert writes(srv) == 0


def test_doctor_on_the_file_pbx_reports_its_inventory(cli, demo):
    code, out, err = cli("doctor", "-c", demo / "adsync.yaml")
    assert code == 0, err
    assert (
        "signed in with no credentials (a file on disk)" in out
        and "INTERNAL: " in out
        and "Every mapping apply needs was found." in out
    )


def test_the_new_pbx_keys_validate(cli, tmp_path):
    with StarfaceServer(version="10") as srv:
        case = doctor_case(srv, tmp_path)
        config = case / "adsync.yaml"
        text = config.read_text().replace(
            '"type": "starface",',
            '"type": "starface", "auth": "oauth", "client_id": "rest-client-headless", "scope": "login", '
            '"admin_permissions": ["admin_perm", 25], "call_services": {"fax": 4, "standard": "Standard Call"},',
        )
        config.write_text(text)
        assert cli("validate", "-c", config)[0] == 0
        code, out, err = cli("doctor", "-c", config)
    assert code == 0, err
    assert "25 admin_user_perm (Administration of users) -> administrator" in out
