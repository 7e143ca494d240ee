"""Signing in to a STARFACE 10 and later (OAuth 2 password grant of the headless REST client) and choosing
between it and the legacy nonce login (`pbx.auth`), against the test server's 10.x mode."""

from __future__ import annotations

import logging
import time

import pytest
import requests

from adsync_plan.errors import PbxError
from tests.servers.starface import CLIENT_SECRET_ENV, PASSWORD_ENV, TOKEN_PATH, StarfaceServer, provider_for


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, StarfaceServer().password)
    monkeypatch.setenv(CLIENT_SECRET_ENV, StarfaceServer().client_secret)


@pytest.fixture
def pbx10():
    with StarfaceServer(version="10") as srv:
        srv.add_user("30", "Jane", "Doe", "jane@example.com", user_id=17)
        yield srv
        assert srv.errors == []


def spy_requests(monkeypatch) -> list[tuple[str, str, dict, object]]:
    """Every request the provider's session sends: (method, url, headers, body)."""
    seen = []
    original = requests.Session.request

    def spy(self, method, url, **kw):
        seen.append((method, url, dict(self.headers) | dict(kw.get("headers") or {}), kw.get("data")))
        return original(self, method, url, **kw)

    monkeypatch.setattr(requests.Session, "request", spy)
    return seen


def test_auto_signs_in_with_oauth_found_through_discovery(pbx10, tmp_path, env, monkeypatch):
    seen = spy_requests(monkeypatch)
    with provider_for(pbx10, tmp_path) as prov:
        state = prov.read()
    assert state.users["17"].login_id == "30"
    assert pbx10.counts["GET /.well-known/openid-configuration"] == 1  # redirected into the realm
    assert pbx10.counts["token password"] == 1 and "GET /login" not in pbx10.counts
    token_request = next(data for method, url, _, data in seen if url.endswith(TOKEN_PATH))
    assert token_request == {
        "grant_type": "password",
        "username": "0001",
        "password": pbx10.password,
        "client_id": "rest-client-headless",
        "scope": "login",
        "client_secret": pbx10.client_secret,
    }
    rest = [h for _, url, h, _ in seen if "/rest/" in url]
    assert len(rest) == 7  # the six bulk reads and GET /groups (the PBX has no groups)
    assert all(h["Authorization"].startswith("Bearer ") and h["X-Version"] == "2" for h in rest)
    assert all("authToken" not in h for h in rest)


def test_without_discovery_the_realm_default_token_endpoint(tmp_path, env):
    with StarfaceServer(version="10", discovery=False) as srv, provider_for(srv, tmp_path) as prov:
        prov.read()
        assert srv.counts["token password"] == 1


def test_token_url_overrides_discovery(tmp_path, env):
    with StarfaceServer(version="10") as srv:
        with provider_for(srv, tmp_path, token_url=srv.url + TOKEN_PATH) as prov:
            prov.read()
        assert "GET /.well-known/openid-configuration" not in srv.counts and srv.counts["token password"] == 1


def test_a_cloud_pbx_gets_its_edge_node_as_resource(tmp_path, env, monkeypatch):
    seen = spy_requests(monkeypatch)
    with StarfaceServer(version="10", edge_node="en-4711") as srv, provider_for(srv, tmp_path) as prov:
        prov.read()
        assert srv.counts["token password"] == 1
    assert next(d for _, url, _, d in seen if url.endswith(TOKEN_PATH))["resource"] == "edgenode://en-4711"


def test_the_client_secret_goes_as_http_basic_when_the_form_field_is_refused(tmp_path, env, monkeypatch):
    seen = spy_requests(monkeypatch)
    with StarfaceServer(version="10", client_auth="basic") as srv, provider_for(srv, tmp_path) as prov:
        prov.read()
        srv.advance_clock(400)  # the access token expired on the PBX: 401, a new sign-in, Basic at once
        prov.read()
        assert srv.counts["token password"] == 3  # form refused, Basic; then Basic only
    forms = [d for _, url, _, d in seen if url.endswith(TOKEN_PATH)]
    assert "client_secret" in forms[0] and all("client_secret" not in f for f in forms[1:])


def test_the_access_token_is_refreshed_before_it_expires(tmp_path, env):
    with StarfaceServer(version="10") as srv:
        srv.token_ttl = 2.0  # the server enforces it; 300 s on a real STARFACE 10
        with provider_for(srv, tmp_path) as prov:
            prov.read()
            time.sleep(1.7)  # within the last quarter of the lifetime: refreshed before the next request
            prov.read()
            time.sleep(2.5)  # the refreshed token expired too: refreshed again (the refresh token lives 6 h)
            prov.read()
        assert srv.counts["token password"] == 1 and srv.counts["token refresh_token"] == 2
        assert srv.counts["GET /users"] == 3  # no request was refused and repeated


def test_expired_token_on_the_pbx_means_a_new_sign_in(pbx10, tmp_path, env):
    with provider_for(pbx10, tmp_path) as prov:
        prov.read()
        pbx10.advance_clock(7 * 3600)  # access and refresh token expired
        prov.read()
    assert pbx10.counts["token password"] == 2 and pbx10.counts["GET /users"] == 3


def test_a_refused_refresh_falls_back_to_the_password_grant(tmp_path, env):
    with StarfaceServer(version="10") as srv:
        srv.token_ttl, srv.refresh_ttl = 2.0, 1.0
        with provider_for(srv, tmp_path) as prov:
            prov.read()
            time.sleep(1.7)
            prov.read()
        assert srv.counts["token refresh_token"] == 1 and srv.counts["token password"] == 2
        assert srv.counts["GET /users"] == 2


def test_server_enforces_bearer_tokens_and_their_expiry(pbx10):
    form = {"grant_type": "password", "username": "0001", "password": pbx10.password}
    form |= {"client_id": "rest-client-headless", "client_secret": pbx10.client_secret, "scope": "login"}
    token = requests.post(pbx10.url + TOKEN_PATH, data=form, timeout=5).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert requests.get(pbx10.url + "/rest/users", headers=bearer, timeout=5).status_code == 200
    assert requests.get(pbx10.url + "/rest/users", headers={"authToken": token}, timeout=5).status_code == 401
    pbx10.advance_clock(301)
    assert requests.get(pbx10.url + "/rest/users", headers=bearer, timeout=5).status_code == 401
    assert requests.get(pbx10.url + "/rest/login", timeout=5).status_code == 403  # no nonce login on 10.x


def test_a_401_from_the_token_endpoint_names_both_usual_causes(pbx10, tmp_path, env):
    pbx10.api_right = False
    with provider_for(pbx10, tmp_path) as prov, pytest.raises(PbxError) as err:
        prov.read()
    assert str(err.value) == (
        f"The STARFACE PBX at {pbx10.url} refused the OAuth sign-in of login ID 0001 at {pbx10.url}{TOKEN_PATH} "
        '(HTTP 401): usually the user lacks the right "API access with Password Grant" or the client secret (from '
        f"{CLIENT_SECRET_ENV}) is wrong, else the login ID or password; OAuth was tried because pbx.auth is auto "
        "and pbx.client_secret_env is set; a STARFACE before version 10 knows only the nonce login: set "
        "pbx.auth: nonce (or remove pbx.client_secret_env)."
    )
    assert "GET /users" not in pbx10.counts


def test_auto_without_a_client_secret_tries_the_nonce_login_and_says_what_oauth_needs(pbx10, tmp_path, env):
    with provider_for(pbx10, tmp_path, client_secret_env=None) as prov, pytest.raises(PbxError) as err:
        prov.read()
    text = str(err.value)
    assert "refused the nonce login of login ID 0001 (HTTP 403)" in text
    assert "the nonce login was tried because pbx.auth is auto and pbx.client_secret_env is not set" in text
    assert "set pbx.client_secret_env to the environment variable holding the REST client secret" in text
    assert pbx10.counts["GET /login"] == 1 and "token password" not in pbx10.counts


def test_auth_nonce_wins_over_a_configured_client_secret(tmp_path, env):
    with StarfaceServer() as srv:
        with provider_for(srv, tmp_path, auth="nonce", client_secret_env=CLIENT_SECRET_ENV) as prov:
            prov.read()
        assert srv.counts["POST /login"] == 1 and "GET /.well-known/openid-configuration" not in srv.counts


def test_auth_oauth_against_a_pbx_without_it_says_so(tmp_path, env):
    with (
        StarfaceServer() as srv,
        provider_for(srv, tmp_path, auth="oauth", client_secret_env=CLIENT_SECRET_ENV) as prov,
        pytest.raises(PbxError) as err,
    ):
        prov.read()
    assert "answered the OAuth password grant" in str(err.value) and "pbx.auth is oauth" in str(err.value)
    assert "set pbx.auth: nonce" in str(err.value)


def test_no_token_password_or_client_secret_in_logs_or_errors(pbx10, tmp_path, env, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's included
    pbx10.token_ttl = 2.0
    errors = []
    with provider_for(pbx10, tmp_path) as prov:
        prov.read()
        time.sleep(1.7)
        prov.read()  # refreshed
        assert "<secret>" in repr(vars(prov._auth))
        assert all(t not in repr(vars(prov._auth)) for t in pbx10.issued)
    monkeypatch.setenv(CLIENT_SECRET_ENV, "Wrong-" + pbx10.client_secret)
    with provider_for(pbx10, tmp_path) as prov:
        try:
            prov.read()
        except PbxError as err:
            errors.append(err)
    assert len(errors) == 1 and pbx10.counts["token refresh_token"] == 1
    text = caplog.text + " ".join(str(e) + repr(e) for e in errors)
    assert TOKEN_PATH in caplog.text  # the log did record the sign-in
    for secret in (pbx10.password, pbx10.client_secret, *pbx10.issued):
        assert secret not in text
