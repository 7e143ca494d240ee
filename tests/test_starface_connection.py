"""Connecting to a STARFACE: TLS with a private CA, a certificate that does not verify, a wrong password, an
unreachable PBX, a missing password variable; and the password never shows in logs or errors."""

from __future__ import annotations

import hashlib
import logging
import ssl

import pytest
import trustme

from adsync_plan.errors import ConfigError, PbxError
from adsync_plan.model import PhoneUser
from adsync_plan.providers.starface import StarfaceProvider
from tests.servers.http_proxy import HttpProxy
from tests.servers.starface import PASSWORD_ENV, StarfaceServer, provider_for


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def https_server(ca):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with StarfaceServer(tls=context) as srv:
        yield srv


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, StarfaceServer().password)


def test_https_with_the_private_ca_in_ca_file(https_server, ca, tmp_path, env):
    ca.cert_pem.write_to_path(str(tmp_path / "pbx-ca.pem"))
    with provider_for(https_server, tmp_path, ca_file="pbx-ca.pem") as prov:  # relative to the config folder
        assert prov.read().users == {}
    assert https_server.url.startswith("https://") and https_server.counts["GET /users"] == 1


def test_a_certificate_that_does_not_verify(https_server, tmp_path, env):
    with provider_for(https_server, tmp_path) as prov, pytest.raises(PbxError) as err:
        prov.read()  # the system trust store does not know the test CA
    message = str(err.value)
    assert message == (
        f"The TLS certificate of the STARFACE PBX at {https_server.url} could not be verified (certificate "
        "verify failed); set pbx.ca_file to the certificate of the CA that signed it."
    )
    assert https_server.total_requests == 0  # nothing was sent over an unverified connection


def test_verification_can_be_switched_off_explicitly(https_server, tmp_path, env, caplog):
    with provider_for(https_server, tmp_path, verify_tls=False) as prov:
        prov.read()
    assert "verification for the PBX" in caplog.text and "is off" in caplog.text


def test_a_missing_ca_file(https_server, tmp_path, env):
    with provider_for(https_server, tmp_path, ca_file="nope.pem") as prov, pytest.raises(PbxError) as err:
        prov.read()
    assert "pbx.ca_file" in str(err.value) and "nope.pem" in str(err.value)


def test_a_wrong_password(tmp_path, monkeypatch):
    with StarfaceServer() as srv:
        monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
        url = srv.url
        with provider_for(srv, tmp_path) as prov, pytest.raises(PbxError) as err:
            prov.read()
    assert str(err.value) == (
        f"The STARFACE PBX at {url} refused the nonce login of login ID 0001 (HTTP 400): the login ID or the "
        f"password (from the environment variable {PASSWORD_ENV}) is wrong, the account is locked, or the PBX no "
        "longer offers this login; the nonce login was tried because pbx.auth is auto and pbx.client_secret_env "
        "is not set; a STARFACE 10 or later signs REST clients in with OAuth: set pbx.client_secret_env to the "
        "environment variable holding the REST client secret (admin UI: Server -> Status -> REST-API) or "
        "pbx.auth: oauth."
    )
    assert srv.counts["POST /login"] == 1  # a refused login is not repeated (the PBX may lock the account)


def test_an_unreachable_pbx(tmp_path, env, closed_port):
    port = closed_port  # bound, never listening
    settings = {"type": "starface", "url": f"http://127.0.0.1:{port}", "login_id": "0001"}
    prov = StarfaceProvider({**settings, "password_env": PASSWORD_ENV, "retries": 1}, tmp_path)
    prov.backoff = 0.01
    with prov, pytest.raises(PbxError) as err:
        prov.read()
    assert str(err.value) == (
        f"Cannot log in to the STARFACE PBX at http://127.0.0.1:{port}: the connection was refused; check "
        "pbx.url and that the PBX is running."
    )


def test_the_password_variable_is_not_set(tmp_path, monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with StarfaceServer() as srv, provider_for(srv, tmp_path) as prov, pytest.raises(ConfigError) as err:
        prov.read()
    assert PASSWORD_ENV in str(err.value) and "pbx.password_env" in str(err.value)


def test_the_password_never_appears_in_logs_or_errors(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's included
    with StarfaceServer() as srv:
        srv.add_internal("30")
        monkeypatch.setenv(PASSWORD_ENV, srv.password)
        errors = []
        with provider_for(srv, tmp_path) as prov:
            prov.read()
            uid = prov.create_user(PhoneUser("30", "Jane", "Doe", "jane@example.com"))
            prov.update_user(uid, {"last_name": "Smith"})
            srv.advance_clock(5 * 3600)
            prov.assign_number(uid, "30", "standard")  # after a new login
            tokens = list(srv.issued)
            for call in (
                lambda: prov.assign_number("99", "30", "standard"),
                lambda: prov.release_number("99", "30"),
            ):
                try:
                    call()
                except PbxError as err:
                    errors.append(err)
            assert repr(prov._auth._password) == "<secret>" and srv.password not in repr(vars(prov))
            assert srv.password not in repr(vars(prov._auth)) and tokens[-1] not in repr(vars(prov._auth))
        monkeypatch.setenv(PASSWORD_ENV, "Wrong-" + srv.password)
        with provider_for(srv, tmp_path) as prov:
            try:
                prov.read()
            except PbxError as err:
                errors.append(err)
        user_password = srv.data.passwords[int(uid)]
    assert len(errors) == 3
    hashed = hashlib.sha512(srv.password.encode()).hexdigest()  # as good as the password for this API
    text = caplog.text + " ".join(str(e) + repr(e) for e in errors)
    assert "POST /rest/login" in caplog.text  # the log did record the login
    for secret in (srv.password, hashed, user_password, *tokens):
        assert secret not in text


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture
def no_proxy_settings(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_the_proxy_of_the_environment_is_used_and_no_proxy_respected(tmp_path, env, no_proxy_settings, monkeypatch):
    """HTTP_PROXY and NO_PROXY work as for any requests-based tool, although they are read once (below)."""
    with StarfaceServer() as srv, HttpProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        with provider_for(srv, tmp_path) as prov:
            prov.read()
        assert len(proxy.relayed) == srv.total_requests > 0
        assert all(url.startswith(f"{srv.url}/rest/") for url in proxy.relayed)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        relayed = len(proxy.relayed)
        with provider_for(srv, tmp_path) as prov:
            prov.read()
        assert len(proxy.relayed) == relayed


def test_the_proxy_settings_are_read_once_not_per_request(tmp_path, env, no_proxy_settings, monkeypatch):
    """requests reads the proxy variables for every request (1 ms, with a large environment): 100,000
    requests of a first sync would spend minutes on it. One PBX has one answer."""
    import requests.sessions

    reads = []
    real = requests.sessions.get_environ_proxies
    monkeypatch.setattr(requests.sessions, "get_environ_proxies", lambda *a, **k: reads.append(a) or real(*a, **k))
    with StarfaceServer() as srv, provider_for(srv, tmp_path) as prov:
        prov.read()
        prov.read()
    assert srv.total_requests > 10 and len(reads) == 1
