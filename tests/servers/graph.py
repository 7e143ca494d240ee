"""A local Entra ID + Microsoft Graph v1.0 server for the azure source's tests and benchmark.

HTTPS on 127.0.0.1 with a test CA made by trustme, in a thread. It speaks what the real msal and the source
ask for, with the shapes and status codes Entra ID and Graph use (see
shared/reference/entra-graph-msal-notes.md):

- `GET /{tenant}/v2.0/.well-known/openid-configuration` (400 invalid_tenant for an unknown tenant)
- `POST /{tenant}/oauth2/v2.0/token`: client credentials with a client secret or a JWT client assertion,
  which is verified (registered certificate thumbprint, signature, audience, issuer, expiry)
- `GET /v1.0/users` with `$select` (unknown properties are a 400, as in Graph), `$top` (1..999) and
  `@odata.nextLink` paging with an opaque `$skiptoken`
- `GET /v1.0/groups/{id}/transitiveMembers` and `/members`, paged (404 for an unknown group)

Faults are injected per endpoint and page (`fail(...)`): 429 / 503 with or without `Retry-After`, a 500 for
good, or a page that is not JSON. The server counts requests per endpoint, records every `$select` it was
asked for, and keeps a log of (time, endpoint, page, status) so tests can check that Retry-After was obeyed.
Nothing in the source code knows this server exists: it only sees configurable URLs and a CA file.
"""

from __future__ import annotations

import base64
import secrets
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import jwt
import orjson
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.servers.threaded import ThreadedServer

TENANT_ID = "8b1b5a1e-3c1f-4d5e-9a40-6e2f0c7d9a11"
CLIENT_ID = "2f6d1c9a-7e54-4b8f-a1d2-93c0e5b7f6a4"
CLIENT_SECRET = "Xq9~s3cr3t.V4lue_never-logged"

USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"
# The user properties this server knows (a subset of microsoft.graph.user); anything else in $select is a 400.
USER_PROPERTIES = frozenset(
    {
        "id",
        "userPrincipalName",
        "displayName",
        "givenName",
        "surname",
        "mail",
        "onPremisesSamAccountName",
        "onPremisesDistinguishedName",
        "businessPhones",
        "mobilePhone",
        "faxNumber",
        "accountEnabled",
        "jobTitle",
        "officeLocation",
        "employeeId",
        "userType",
    }
)
DEFAULT_SELECT = (
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "surname",
    "userPrincipalName",
)


@dataclass
class Fault:
    """An injected answer: `times` requests (None: for good) to `endpoint` (page `page`, or any) get it."""

    endpoint: str
    status: int
    page: int | None = None
    times: int | None = 1
    retry_after: str | None = None
    body: bytes | None = None
    content_type: str = "application/json"


@dataclass
class Hit:
    at: float
    endpoint: str
    page: int | None
    status: int


def graph_user(n: int, **overrides) -> dict:
    """A deterministic Graph user (the properties this server knows), number `n`."""
    user = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"graph-user-{n}")),
        "userPrincipalName": f"user{n:06d}@contoso.example",
        "displayName": f"First{n} Last{n}",
        "givenName": f"First{n}",
        "surname": f"Last{n}",
        "mail": f"user{n:06d}@contoso.example",
        "onPremisesSamAccountName": f"user{n:06d}",
        "onPremisesDistinguishedName": f"CN=First{n} Last{n},OU=Staff,DC=contoso,DC=example",
        "businessPhones": [f"+49 7022 2797{n % 10000:04d}"],
        "mobilePhone": "+49 170 1234567",
        "faxNumber": None,
        "accountEnabled": True,
        "jobTitle": "Clerk",
        "officeLocation": "HQ",
        "employeeId": str(n),
        "userType": "Member",
    }
    user.update(overrides)
    return user


def group_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"graph-group-{name}"))


class GraphServer(ThreadedServer):
    """One tenant, one registered application (a client secret and, optionally, a certificate)."""

    def __init__(
        self,
        tenant_id: str = TENANT_ID,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        expires_in: int = 3599,
    ) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.expires_in = expires_in
        self.ca = trustme.CA()
        self._server_cert = self.ca.issue_cert("127.0.0.1")
        self._dir = tempfile.TemporaryDirectory(prefix="graph-server-")
        self.ca_file = Path(self._dir.name) / "graph-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.client_certificate: x509.Certificate | None = None
        self.users: list[dict] = []
        self.groups: dict[str, list[str]] = {}  # group id -> direct member ids (users or groups)
        self.kinds: dict[str, str] = {}  # member id -> its @odata.type when it is neither user nor group
        self.faults: list[Fault] = []
        self.counts: Counter = Counter()
        self.selects: list[list[str]] = []
        self.hits: list[Hit] = []
        self.foreign_links = 0  # page requests whose URL was not exactly an issued nextLink
        self._tokens: dict[str, float] = {}
        self._cursors: dict[str, tuple[str, int]] = {}  # skiptoken -> (issued path, offset)
        self._lock = threading.Lock()
        self._closures: dict[str, list[tuple[str, str]]] = {}

    # --- life cycle -------------------------------------------------------------------------------

    def start(self) -> GraphServer:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server_cert.configure_cert(context)
        # the handshake happens in the handler thread, so a slow client never blocks the accept loop
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        httpd.graph = self
        return self.serve(httpd)

    def stop(self) -> None:
        super().stop()
        self._dir.cleanup()

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def source_settings(self, **overrides) -> dict:
        """A `source:` section pointing at this server (the secret comes from GRAPH_TEST_SECRET)."""
        settings = {
            "type": "azure",
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "client_secret_env": "GRAPH_TEST_SECRET",
            "authority_host": self.base_url,
            "graph_url": self.base_url,
            "ca_file": str(self.ca_file),
            "timeout": 10,
        }
        settings.update(overrides)
        return {k: v for k, v in settings.items() if v is not None}

    # --- data and faults --------------------------------------------------------------------------

    def register_certificate(self, cert: x509.Certificate) -> None:
        self.client_certificate = cert

    def add_group(self, gid: str, members: list[str]) -> str:
        self.groups[gid.lower()] = [m.lower() for m in members]
        self._closures.clear()
        return gid

    def fail(self, endpoint: str, status: int, **kwargs) -> Fault:
        fault = Fault(endpoint, status, **kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.selects.clear()
            self.hits.clear()

    # --- helpers used by the handler ---------------------------------------------------------------

    def _take_fault(self, endpoint: str, page: int | None) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.endpoint == endpoint and fault.page in (None, page) and fault.times != 0:
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _record(self, endpoint: str, page: int | None, status: int) -> None:
        with self._lock:
            self.counts[endpoint] += 1
            self.counts[f"{endpoint}:{status}"] += 1
            self.hits.append(Hit(time.monotonic(), endpoint, page, status))

    def _issue_token(self) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.time() + self.expires_in
        return token

    def _token_valid(self, token: str) -> bool:
        with self._lock:
            return self._tokens.get(token, 0) > time.time()

    def _transitive(self, gid: str) -> list[tuple[str, str]]:
        """(type, id) of every member of `gid`, nested groups flattened (cycles tolerated); cached per group,
        since every page of a large group asks for it."""
        with self._lock:
            if gid not in self._closures:
                self._closures[gid] = self._flatten(gid)
            return self._closures[gid]

    def _flatten(self, gid: str) -> list[tuple[str, str]]:
        seen, out, todo = {gid}, [], deque(self.groups[gid])
        while todo:
            member = todo.popleft()
            if member in seen:
                continue
            seen.add(member)
            if member in self.groups:
                out.append((GROUP_TYPE, member))
                todo.extend(self.groups[member])
            else:
                out.append((self.kinds.get(member, USER_TYPE), member))
        return out

    def _direct(self, gid: str) -> list[tuple[str, str]]:
        return [(GROUP_TYPE if m in self.groups else self.kinds.get(m, USER_TYPE), m) for m in self.groups[gid]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that refuses our certificate or hangs up is expected in tests: no stderr noise."""
        if not isinstance(sys.exc_info()[1], ssl.SSLError | ConnectionError):
            super().handle_error(request, client_address)


def _error(code: str, message: str) -> dict:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "request-id": str(uuid.uuid4())},
        }
    }


def _aad_error(error: str, code: int, description: str) -> dict:
    trace = str(uuid.uuid4())
    return {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {uuid.uuid4()} "
        f"Timestamp: {time.strftime('%Y-%m-%d %H:%M:%SZ')}",
        "error_codes": [code],
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ"),
        "trace_id": trace,
        "correlation_id": str(uuid.uuid4()),
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Graph: one TLS handshake per run, not per page
    # headers and body leave in one segment: without this, Nagle's algorithm and the client's delayed ACK
    # add ~40 ms to every response, which would dominate the benchmark
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args) -> None:  # quiet: tests assert on counts, not on stderr
        pass

    @property
    def graph(self) -> GraphServer:
        return self.server.graph

    # --- plumbing ---------------------------------------------------------------------------------

    def _send(self, status: int, body, content_type="application/json", headers=None) -> None:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, endpoint: str, page: int | None, status: int, body, **kwargs) -> None:
        self.graph._record(endpoint, page, status)
        self._send(status, body, **kwargs)

    def _faulted(self, endpoint: str, page: int | None) -> bool:
        fault = self.graph._take_fault(endpoint, page)
        if fault is None:
            return False
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        body = fault.body
        if body is None:
            code = {429: "TooManyRequests", 503: "serviceNotAvailable"}.get(fault.status, "generalException")
            body = _error(code, "Please retry again later." if fault.status in (429, 503) else "Boom.")
        self._answer(endpoint, page, fault.status, body, content_type=fault.content_type, headers=headers)
        return True

    # --- routes -----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return self._discovery(parts[0])
        if parts[:1] != ["v1.0"]:
            return self._send(404, _error("BadRequest", f"Unsupported path {url.path}."))
        if not self._authorised():
            return
        if parts[1:] == ["users"]:
            return self._page("users", query, url, self.graph.users, self._project_users)
        if len(parts) == 4 and parts[1] == "groups" and parts[3] in ("transitiveMembers", "members"):
            return self._members(parts[2].lower(), parts[3], query, url)
        self._send(404, _error("BadRequest", f"Unsupported path {url.path}."))

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        length = int(self.headers.get("Content-Length", 0))
        form = {k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if parts[1:] == ["oauth2", "v2.0", "token"]:
            return self._token(parts[0], form)
        self._send(404, _error("BadRequest", f"Unsupported path {url.path}."))

    # --- Entra ID ---------------------------------------------------------------------------------

    def _discovery(self, tenant: str) -> None:
        if self._faulted("discovery", None):
            return
        if tenant != self.graph.tenant_id:
            body = _aad_error(
                "invalid_tenant",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID.",
            )
            return self._answer("discovery", None, 400, body)
        base = f"{self.graph.base_url}/{tenant}"
        self._answer(
            "discovery",
            None,
            200,
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "jwks_uri": f"{self.graph.base_url}/{tenant}/discovery/v2.0/keys",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "response_modes_supported": ["query", "fragment", "form_post"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "127.0.0.1",
                "msgraph_host": f"127.0.0.1:{self.graph.port}",
            },
        )

    def _token(self, tenant: str, form: dict) -> None:
        if self._faulted("token", None):
            return
        graph = self.graph
        if tenant != graph.tenant_id:
            body = _aad_error("invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
            return self._answer("token", None, 400, body)
        if form.get("grant_type") != "client_credentials":
            return self._answer("token", None, 400, _aad_error("unsupported_grant_type", 70003, "Unsupported grant."))
        if form.get("client_id") != graph.client_id:
            body = _aad_error(
                "unauthorized_client",
                700016,
                f"Application with identifier '{form.get('client_id')}' was not found in the directory.",
            )
            return self._answer("token", None, 400, body)
        if not form.get("scope", "").endswith("/.default"):  # client credentials need a /.default scope
            body = _aad_error("invalid_scope", 1002012, "The provided value for scope is not valid.")
            return self._answer("token", None, 400, body)
        problem = self._client_problem(form)
        if problem:
            return self._answer("token", None, 401, problem)
        token = graph._issue_token()
        self._answer(
            "token",
            None,
            200,
            {
                "token_type": "Bearer",
                "expires_in": graph.expires_in,
                "ext_expires_in": graph.expires_in,
                "access_token": token,
            },
        )

    def _client_problem(self, form: dict) -> dict | None:
        graph = self.graph
        if "client_secret" in form:
            if secrets.compare_digest(form["client_secret"], graph.client_secret):
                return None
            return _aad_error("invalid_client", 7000215, "Invalid client secret provided.")
        assertion = form.get("client_assertion")
        if assertion and form.get("client_assertion_type", "").endswith("jwt-bearer"):
            return self._assertion_problem(assertion)
        return _aad_error("invalid_client", 7000218, "The request body must contain client_assertion.")

    def _assertion_problem(self, assertion: str) -> dict | None:
        """Verify the JWT as Entra does: registered certificate, signature, audience, issuer, expiry."""
        graph = self.graph
        cert = graph.client_certificate
        bad = _aad_error("invalid_client", 700027, "Client assertion failed signature validation.")
        if cert is None:
            return bad
        header = jwt.get_unverified_header(assertion)
        sha256 = _b64url(cert.fingerprint(hashes.SHA256()))
        sha1 = _b64url(cert.fingerprint(hashes.SHA1()))
        if header.get("x5t#S256", "").rstrip("=") != sha256 and header.get("x5t", "").rstrip("=") != sha1:
            return bad
        try:
            claims = jwt.decode(
                assertion,
                cert.public_key(),
                algorithms=["PS256", "RS256"],
                audience=f"{graph.base_url}/{graph.tenant_id}/oauth2/v2.0/token",
                issuer=graph.client_id,
                options={"require": ["exp", "iss", "sub", "aud"]},
            )
        except jwt.PyJWTError:
            return bad
        return None if claims.get("sub") == graph.client_id else bad

    # --- Graph --------------------------------------------------------------------------------------

    def _authorised(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and self.graph._token_valid(auth[7:]):
            return True
        body = _error("InvalidAuthenticationToken", "Access token has expired or is not yet valid.")
        self._answer("unauthorised", None, 401, body)
        return False

    def _members(self, gid: str, kind: str, query: dict, url) -> None:
        endpoint = "transitive" if kind == "transitiveMembers" else "members"
        if gid not in self.graph.groups:
            body = _error(
                "Request_ResourceNotFound",
                f"Resource '{gid}' does not exist or one of its queried reference-property objects are not present.",
            )
            return self._answer(endpoint, None, 404, body)
        members = self.graph._transitive(gid) if kind == "transitiveMembers" else self.graph._direct(gid)
        self._page(endpoint, query, url, members, self._project_members)

    def _page(self, endpoint: str, query: dict, url, items: list, project) -> None:
        select = [s for s in query.get("$select", "").split(",") if s]
        try:
            top = int(query.get("$top", "100"))
        except ValueError:
            top = 0
        if not 1 <= top <= 999:
            body = _error("Request_UnsupportedQuery", f"Invalid page size specified: '{top}'.")
            return self._answer(endpoint, None, 400, body)
        offset = 0
        if "$skiptoken" in query:
            cursor = self.graph._cursors.get(query["$skiptoken"])
            if cursor is None:
                return self._answer(endpoint, None, 400, _error("Request_BadRequest", "Bad skiptoken."))
            issued, offset = cursor
            if issued != self.path:
                with self.graph._lock:
                    self.graph.foreign_links += 1
        page = offset // top
        if self._faulted(endpoint, page):
            return
        if endpoint == "users":
            unknown = [s for s in select if s not in USER_PROPERTIES]
            if unknown:
                body = _error(
                    "Request_BadRequest",
                    f"Could not find a property named '{unknown[0]}' on type 'microsoft.graph.user'.",
                )
                return self._answer(endpoint, page, 400, body)
            with self.graph._lock:
                self.graph.selects.append(select)
        chunk = items[offset : offset + top]
        body = {
            "@odata.context": f"{self.graph.base_url}/v1.0/$metadata#{endpoint}",
            "value": project(chunk, select),
        }
        if offset + top < len(items):
            body["@odata.nextLink"] = self._next_link(url.path, select, top, offset + top)
        self._answer(endpoint, page, 200, body)

    def _next_link(self, path: str, select: list[str], top: int, offset: int) -> str:
        query = f"$top={top}"
        if select:
            query = f"$select={quote(','.join(select), safe=',')}&{query}"
        # the skiptoken is registered with the very path it was issued in, to catch clients that rebuild
        # the link instead of following it verbatim
        token = secrets.token_urlsafe(12)
        issued = f"{path}?{query}&$skiptoken={token}"
        with self.graph._lock:
            self.graph._cursors[token] = (issued, offset)
        return f"{self.graph.base_url}{issued}"

    @staticmethod
    def _project_users(users: list[dict], select: list[str]) -> list[dict]:
        keys = select or DEFAULT_SELECT
        return [{k: u.get(k) for k in keys} for u in users]

    @staticmethod
    def _project_members(members: list[tuple[str, str]], select: list[str]) -> list[dict]:
        return [{"@odata.type": kind, "id": mid} for kind, mid in members]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def rsa_client_certificate(ca: trustme.CA, directory: Path, password: bytes | None = None) -> dict:
    """An RSA client certificate (Entra needs RSA for PS256/RS256) as PEM and PFX files in `directory`.

    Returns {"cert": x509.Certificate, "pem": path, "pfx": path, "key_pem": the unencrypted key text}.
    The PEM file holds the key (encrypted with `password` when given) and the certificate; the PFX is
    protected with the same password.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    leaf = ca.issue_cert("client.adsync-plan.example", key_type=trustme.KeyType.RSA)
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    pem_path = directory / "client.pem"
    pem_path.write_bytes(key_pem + cert.public_bytes(serialization.Encoding.PEM))
    pfx_path = directory / "client.pfx"
    pfx_path.write_bytes(pkcs12.serialize_key_and_certificates(b"client", key, cert, None, encryption))
    plain = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {"cert": cert, "pem": pem_path, "pfx": pfx_path, "key_pem": plain.decode()}
