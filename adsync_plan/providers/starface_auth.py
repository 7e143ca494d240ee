"""How the STARFACE provider signs in: one small class per method, chosen by `pbx.auth`.

- `NonceSignIn`: the legacy login of STARFACE 6.4.2.12 to 9 (GET /rest/login for a nonce, POST the secret,
  send the token in the header `authToken`; valid 4 h).
- `OAuthSignIn`: STARFACE 10 and later (Keycloak, realm `pbx`): the password grant of the headless REST client
  at the token endpoint, `Authorization: Bearer <access token>`; the access token (300 s) is refreshed with
  the refresh token before it expires.

Both answer `headers()` (signing in or refreshing first when needed), `forget()` (after a 401 from /rest: sign
in afresh next time) and `sign_out()`. The provider never knows which one signed in. Neither logs a token, a
password or the client secret: they are held in `Secret` objects whose repr shows nothing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from base64 import b64encode
from collections.abc import Callable
from urllib.parse import urlsplit

import orjson
import requests

from adsync_plan.config import secret_from_env
from adsync_plan.errors import PbxError

log = logging.getLogger(__name__)

DEFAULT_CLIENT_ID = "rest-client-headless"
DEFAULT_SCOPE = "login"
DISCOVERY = "/.well-known/openid-configuration"
TOKEN_PATH = "/auth/realms/pbx/oauth2/token"
OAUTH_NEEDS = (
    "a STARFACE 10 or later signs REST clients in with OAuth: set pbx.client_secret_env to the environment "
    "variable holding the REST client secret (admin UI: Server -> Status -> REST-API) or pbx.auth: oauth"
)
NONCE_NEEDS = (
    "a STARFACE before version 10 knows only the nonce login: set pbx.auth: nonce (or remove pbx.client_secret_env)"
)


class Secret:
    """Holds a password or token so that no repr, log line or traceback local can show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


def choose_method(settings) -> str:
    """`pbx.auth`: oauth, nonce, or auto (OAuth when a client secret is configured, else the nonce login)."""
    auth = settings.get("auth", "auto")
    if auth == "auto":
        return "oauth" if settings.get("client_secret_env") else "nonce"
    return auth


def make_sign_in(conn) -> NonceSignIn | OAuthSignIn:
    """`conn` is the provider: its session, url, settings, timeout, retry pause and JSON reader."""
    return OAuthSignIn(conn) if choose_method(conn.settings) == "oauth" else NonceSignIn(conn)


class _SignIn:
    method = ""

    def __init__(self, conn):
        self.conn = conn
        self.settings = conn.settings
        self._password: Secret | None = None

    def password(self) -> str:
        if self._password is None:
            key, env = "pbx.password_env", self.settings["password_env"]
            self._password = Secret(secret_from_env("the configuration", key, env))
        return self._password.reveal()

    def _with_retries(self, request: Callable[[], requests.Response], what: str) -> requests.Response:
        """A sign-in request, repeated on 5xx and connection errors (it changes nothing on the PBX)."""
        conn, attempt = self.conn, 0
        while True:
            try:
                resp = request()
            except requests.exceptions.SSLError as err:
                raise conn._tls_error(err) from None
            except requests.RequestException as err:  # no answer, or one cut off (ChunkedEncodingError)
                if attempt < conn.retries:
                    attempt = conn._pause(attempt, "POST", what, type(err).__name__)
                    continue
                raise PbxError(
                    f"Cannot log in to the STARFACE PBX at {conn.url}: {conn._transport_cause(err)}."
                ) from None
            if resp.status_code >= 500 and attempt < conn.retries:
                attempt = conn._pause(attempt, "POST", what, f"HTTP {resp.status_code}")
                continue
            return resp

    def _other_needs(self) -> str:
        """Which method was tried and why, and what the other one needs."""
        mode = self.settings.get("auth", "auto")
        if mode == "auto":
            why = "pbx.client_secret_env is set" if self.method == "oauth" else "pbx.client_secret_env is not set"
            why = f"pbx.auth is auto and {why}"
        else:
            why = f"pbx.auth is {mode}"
        name = "OAuth" if self.method == "oauth" else "the nonce login"
        return f"{name} was tried because {why}; {OAUTH_NEEDS if self.method == 'nonce' else NONCE_NEEDS}"


class NonceSignIn(_SignIn):
    """The legacy login: a nonce, a SHA-512 (Internal) or base64 (ActiveDirectory) secret, a 4-hour token."""

    method = "nonce"

    def __init__(self, conn):
        super().__init__(conn)
        self._token: Secret | None = None

    def headers(self) -> dict[str, str]:
        if self._token is None:
            self._token = Secret(self._login())
            log.debug("signed in to %s as login ID %s (nonce login)", self.conn.url, self.settings["login_id"])
        return {"authToken": self._token.reveal()}

    def forget(self) -> None:
        self._token = None

    def describe(self) -> str:
        return f"the nonce login (STARFACE before 10) as login ID {self.settings['login_id']}"

    def sign_out(self) -> None:
        if self._token is not None:
            self.conn._send("DELETE", "/login", None, None)
            self._token = None

    def _login(self) -> str:
        conn = self.conn

        def handshake() -> requests.Response:
            resp = conn._send("GET", "/login", None, None, auth=False)
            if resp.status_code != 200:
                return resp
            return conn._send("POST", "/login", self._body(conn._json(resp, "GET", "/login")), None, auth=False)

        resp = self._with_retries(handshake, "/rest/login")
        if 400 <= resp.status_code < 500:
            raise PbxError(
                f"{conn.pbx} refused the nonce login of login ID {self.settings['login_id']} "
                f"(HTTP {resp.status_code}): the login ID or the password (from the environment variable "
                f"{self.settings['password_env']}) is wrong, the account is locked, or the PBX no longer "
                f"offers this login; {self._other_needs()}."
            )
        token = conn._json(resp, "POST", "/login").get("token") if resp.status_code == 200 else None
        if not token:
            raise PbxError(
                f"{conn.pbx} answered the login with HTTP {resp.status_code} and no token; "
                "check that pbx.url points to a STARFACE PBX (version 6.4.2.12 or later)."
            )
        return token

    def _body(self, template) -> dict:
        conn = self.conn
        if not isinstance(template, dict) or not template.get("nonce"):
            raise PbxError(
                f"{conn.pbx} answered GET /rest/login without a nonce; check that pbx.url "
                "points to a STARFACE PBX (version 6.4.2.12 or later)."
            )
        login_type = template.get("loginType") or self.settings.get("login_type", "Internal")
        if login_type == "ActiveDirectory" and urlsplit(conn.url).scheme != "https":
            raise PbxError(
                f"{conn.pbx} asks for an Active Directory login, whose secret is the password merely "
                "base64-encoded; it is not sent over plain http. Use an https:// pbx.url."
            )
        login, nonce = self.settings["login_id"], template["nonce"]
        return {
            "loginType": login_type,
            "nonce": nonce,
            "secret": login_secret(login_type, login, nonce, self.password()),
        }


class OAuthSignIn(_SignIn):
    """STARFACE 10+: the OAuth 2 password grant of the headless REST client, then refresh tokens."""

    method = "oauth"

    def __init__(self, conn):
        super().__init__(conn)
        self._access: Secret | None = None
        self._refresh: Secret | None = None
        self._refresh_at = 0.0  # monotonic time from which the access token is refreshed
        self._endpoint: tuple[str, str | None] | None = None  # (token URL, edge node id)
        self._basic = False  # the client secret goes as HTTP Basic (after the PBX refused it as a form field)
        self._client_secret: Secret | None = None
        self._source = ""  # where the token endpoint came from, for doctor

    def headers(self) -> dict[str, str]:
        if self._access is not None and time.monotonic() >= self._refresh_at:
            self._refreshed()
        if self._access is None:
            self._token({"grant_type": "password", "username": self.settings["login_id"], "password": self.password()})
            log.debug("signed in to %s as login ID %s (OAuth)", self.conn.url, self.settings["login_id"])
        return {"Authorization": f"Bearer {self._access.reveal()}"}

    def forget(self) -> None:
        self._access = self._refresh = None

    def describe(self) -> str:
        url, edge = self.endpoint()
        client = self.settings.get("client_id", DEFAULT_CLIENT_ID)
        text = f"OAuth (STARFACE 10 and later) as login ID {self.settings['login_id']}, client {client}, "
        text += f"token endpoint {url} ({self._source})"
        return text + (f", edge node {edge}" if edge else "")

    def sign_out(self) -> None:
        self.forget()  # the tokens expire on their own; Keycloak's logout endpoint is not needed

    def _refreshed(self) -> None:
        """Exchange the refresh token; when the PBX refuses it (expired, revoked), sign in afresh."""
        refresh, self._access = self._refresh, None
        if refresh is None:
            return
        try:
            self._token({"grant_type": "refresh_token", "refresh_token": refresh.reveal()})
            log.debug("refreshed the access token for %s", self.conn.url)
        except PbxError as err:
            log.debug("the refresh of the access token was refused (%s); signing in again", type(err).__name__)
            self._refresh = None

    def _token(self, grant: dict) -> None:
        url, edge = self.endpoint()
        form = {**grant, "client_id": self.settings.get("client_id", DEFAULT_CLIENT_ID)}
        if grant["grant_type"] == "password":
            form["scope"] = self.settings.get("scope", DEFAULT_SCOPE)
        if edge:
            form["resource"] = f"edgenode://{edge}"  # a cloud PBX: every token request names its edge node
        resp = self._post(url, form)
        if resp.status_code == 401 and self._secret() and not self._basic:
            log.info("the PBX refused the client secret as a form field; sending it as HTTP Basic")
            self._basic = True
            resp = self._post(url, form)
        self._accept(resp, url, grant["grant_type"])

    def _post(self, url: str, form: dict) -> requests.Response:
        conn, secret = self.conn, self._secret()
        session = conn._open()
        auth = None
        if secret and self._basic:
            auth = (form["client_id"], secret)
        elif secret:
            form = {**form, "client_secret": secret}
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}

        def post() -> requests.Response:
            resp = session.post(url, data=form, auth=auth, headers=headers, timeout=conn.timeout, verify=session.verify)
            log.debug("POST %s -> %d", urlsplit(url).path, resp.status_code)
            return resp

        return self._with_retries(post, urlsplit(url).path)

    def _accept(self, resp: requests.Response, url: str, grant_type: str) -> None:
        conn = self.conn
        if resp.status_code == 401:
            raise PbxError(
                f"{conn.pbx} refused the OAuth sign-in of login ID {self.settings['login_id']} at {url} (HTTP 401): "
                'usually the user lacks the right "API access with Password Grant" or the client secret (from '
                f"{self.settings.get('client_secret_env') or 'pbx.client_secret_env, not set'}) is wrong, else the "
                f"login ID or password; {self._other_needs()}."
            )
        data = _json_or_none(resp)
        token = data.get("access_token") if isinstance(data, dict) and resp.status_code == 200 else None
        if not token:
            why = (data.get("error_description") or data.get("error")) if isinstance(data, dict) else None
            raise PbxError(
                f"{conn.pbx} answered the OAuth {grant_type} grant at {url} with HTTP {resp.status_code} "
                f"({why or 'no access token'}); check pbx.client_id, pbx.scope and pbx.token_url; "
                f"{self._other_needs()}."
            )
        self._access = Secret(token)
        self._refresh = Secret(data["refresh_token"]) if data.get("refresh_token") else None
        lifetime = float(data.get("expires_in") or 300)
        self._refresh_at = time.monotonic() + lifetime - min(30.0, lifetime / 4)

    def _secret(self) -> str | None:
        env = self.settings.get("client_secret_env")
        if not env:
            return None
        if self._client_secret is None:
            self._client_secret = Secret(secret_from_env("the configuration", "pbx.client_secret_env", env))
        return self._client_secret.reveal()

    def endpoint(self) -> tuple[str, str | None]:
        """(token URL, edge node id): pbx.token_url, else the discovery document, else the realm's default."""
        if self._endpoint is None:
            self._endpoint = self._discover()
        return self._endpoint

    def _discover(self) -> tuple[str, str | None]:
        conn = self.conn
        if self.settings.get("token_url"):
            self._source = "pbx.token_url"
            return self.settings["token_url"], None
        session = conn._open()
        doc = None
        try:
            resp = session.get(conn.url + DISCOVERY, timeout=conn.timeout, verify=session.verify)
            doc = _json_or_none(resp) if resp.status_code == 200 else None
        except requests.exceptions.SSLError as err:
            raise conn._tls_error(err) from None
        except requests.RequestException as err:
            log.info("no discovery document at %s (%s)", conn.url + DISCOVERY, type(err).__name__)
        if isinstance(doc, dict) and doc.get("token_endpoint"):
            self._source = "from the discovery document"
            return str(doc["token_endpoint"]), (str(doc["edgeNodeId"]) if doc.get("edgeNodeId") else None)
        log.info("no usable discovery document at %s; using %s", conn.url + DISCOVERY, TOKEN_PATH)
        self._source = "the realm's default: the PBX has no discovery document"
        return conn.url + TOKEN_PATH, None


def _json_or_none(resp: requests.Response):
    try:
        return orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return None


def login_secret(login_type: str, login: str, nonce: str, password: str) -> str:
    """The secret of the STARFACE REST login (Internal: SHA-512, lower-case hex; ActiveDirectory: base64)."""
    if login_type == "ActiveDirectory":
        return b64encode((login + nonce + password).encode("utf-8")).decode("ascii")
    inner = hashlib.sha512(password.encode("utf-8")).hexdigest()
    return login + ":" + hashlib.sha512((login + nonce + inner).encode("utf-8")).hexdigest()
