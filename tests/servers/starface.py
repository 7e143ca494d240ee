"""A local STARFACE PBX for the tests: the part of the REST API (`/rest`, STARFACE 6.7) the provider uses.

It speaks the same JSON shapes and status codes as STARFACE's API description (see
shared/reference/starface-rest-api-notes.md) and enforces what a real PBX enforces: single-use login nonces,
token expiry (401), unique digit-only login IDs, passwords of at least 8 characters where given, a number with
at most one owner, only numbers from its inventory, and its licence count. Where the real PBX's behaviour is
unverified (the status of a duplicate login, of a licence overflow), it answers 400 with
`{"code": 400, "message": ...}`, as the notes suggest.

Groups (`/groups`, `/groups/{id}`; user and group ids share one account id space): a name that is non-empty, at
most GROUP_NAME_MAX characters and unique (case-insensitive; no public source gives STARFACE's own limit, the
6.7 API description has no maxLength), members that are existing users, numbers that are free or already the
group's (a group's number cannot go to a user either). Refusals are 400 with a plain string body, as on the
number endpoints. Whether a PUT with a partial `assignableUsers` list adds to or replaces the members is
unverified; this server refuses (400) any PUT that leaves out a current member or a current number of the
group, the one case where the two readings differ, so a client that sends partial lists fails here instead of
on a real PBX. Entries it does list are applied as sent (assigned true: member or the group's number; false:
not). DELETE /groups/{id} exists, as on the PBX; `counts["DELETE /groups/{id}"]` shows whether it was called.

Beyond the PBX it counts requests per endpoint (`counts["POST /users"]`) and injects faults: a 500, a dropped
connection, a slow answer or a body that is not JSON, on the k-th request (optionally only the k-th request to
one method and path), before or after the request took effect.

Its API login (`login`/`password`) is a credential only: it is not listed in /users, so a seeded PBX shows
exactly the users a test put there (as the file PBX does).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import re
import secrets
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import orjson

from tests.servers.threaded import ThreadedServer

# Plausible names; the real PBX's names are unverified, which is why the provider looks them up by name.
DEFAULT_PERMISSIONS = [
    (1, "login_perm", "Login"),
    (3, "callman_perm", "Callmanager"),
    (4, "redirect_perm", "Redirect"),
    (5, "group_redirect_perm", "Group redirect"),
    (6, "calllist_perm", "Call lists"),
    (7, "address_perm", "Addressbook"),
    (8, "voice_perm", "Voicemail"),
    (9, "setting_perm", "Preferences"),
    (11, "admin_perm", "Administration"),
    (25, "admin_user_perm", "Administration of users"),
]
DEFAULT_CALL_SERVICES = [
    (1, "standard_call", "Standard Call"),
    (2, "conference_room", "Conference Room"),
    (3, "software_fax", "Software Fax"),
    (4, "fax2mail", "Software Fax2Mail"),
]
SERVICE_BY_KIND = {"standard": 1, "fax": 3}
GROUP_NAME_MAX = 64  # the contract's limit (issue 16); a copy, as this server keeps its own implementations
TOKEN_TTL = 4 * 3600.0
ACCESS_TTL = 300.0  # STARFACE 10's access tokens
REFRESH_TTL = 6 * 3600.0
TOKEN_PATH = "/auth/realms/pbx/oauth2/token"
CLIENT_ID = "rest-client-headless"
_NUM = re.compile(r"/\d+(?=/|$)")


@dataclass
class Fault:
    """Fire once, on the k-th request that matches (method and path template, when given)."""

    k: int
    kind: str  # "500" | "drop" | "slow" | "garbage"
    method: str | None = None
    path: str | None = None  # a template such as "/users" or "/users/{id}/phonenumberconfig"
    after: bool = False  # let the request take effect first, then fail the answer
    delay: float = 2.0  # for "slow"
    seen: int = 0
    fired: bool = False

    def matches(self, method: str, template: str) -> bool:
        if self.fired or (self.method and self.method != method) or (self.path and self.path != template):
            return False
        self.seen += 1
        if self.seen == self.k:
            self.fired = True
            return True
        return False


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that gave up (timeout, failed TLS handshake) is part of the tests, not an error."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError)):
            super().handle_error(request, client_address)


class ApiError(Exception):
    def __init__(self, status: int, message: str, plain: bool = False):
        super().__init__(message)
        self.status, self.message, self.plain = status, message, plain


@dataclass
class Pbx:
    """The PBX's data. Every access holds `lock`."""

    users: dict[int, dict] = field(default_factory=dict)
    passwords: dict[int, str] = field(default_factory=dict)
    numbers: dict[int, dict] = field(default_factory=dict)
    groups: dict[int, dict] = field(default_factory=dict)
    primary: dict[int, int] = field(default_factory=dict)  # user id -> phone number id
    permissions: dict[int, dict] = field(default_factory=dict)
    grants: dict[int, set[int]] = field(default_factory=dict)  # permission id -> user ids
    services: dict[int, dict] = field(default_factory=dict)
    licenses: int | None = None
    ids: itertools.count = field(default_factory=lambda: itertools.count(100))


class StarfaceServer(ThreadedServer):
    """Start with `with StarfaceServer(...) as pbx:`; `pbx.url` is the base URL (without /rest)."""

    def __init__(
        self,
        login: str = "0001",
        password: str = "Adm1n-secret",
        licenses: int | None = None,
        tls: ssl.SSLContext | None = None,
        login_type: str = "Internal",
        version: str = "6",
        client_secret: str = "Cl1ent-secret",
        client_auth: str = "form",
        edge_node: str | None = None,
        discovery: bool = True,
        latency: float = 0.0,
    ):
        """`version` "10" is a STARFACE 10: the nonce login is refused; OAuth at the token endpoint (found
        through the discovery document unless `discovery` is False), the client secret accepted only as
        `client_auth` says ("form" or "basic"), `resource=edgenode://<edge_node>` required when set."""
        self.login, self.password, self.login_type = login, password, login_type
        self.version, self.client_secret, self.client_auth = version, client_secret, client_auth
        self.edge_node, self.discovery = edge_node, discovery
        self.latency = latency  # seconds each request takes before it is handled (a real PBX: 0.02 to 0.05)
        self.api_right = True  # the API user holds "API access with Password Grant"
        self.refresh_tokens: dict[str, float] = {}  # refresh token -> expiry
        self.refresh_ttl = REFRESH_TTL
        self.issued: list[str] = []  # every token handed out, for the tests that look for leaks
        # misbehaviour for the verified-apply tests: body fields accepted (2xx) but silently not stored, e.g.
        # "familyName" (POST/PUT /users) or "primaryInternalNumberId" (PUT .../phonenumberconfig)
        self.ignored: set[str] = set()
        self.product_version = "10.0.2.6" if version == "10" else None  # GET /rest/server/version (None: 404)
        self.pnc_bodies: list[dict] = []  # bodies of PUT /users/{id}/phonenumberconfig, as sent
        self.password_policy = False  # True: 16+ characters with upper, lower, digit and special character
        self.data = Pbx(licenses=licenses)
        for pid, name, desc in DEFAULT_PERMISSIONS:
            self.data.permissions[pid] = {"id": pid, "permission": name, "description": desc}
            self.data.grants[pid] = set()
        for sid, name, label in DEFAULT_CALL_SERVICES:
            self.data.services[sid] = {"serviceId": sid, "serviceName": name, "label": label}
        self.lock = threading.RLock()
        self.counts: Counter[str] = Counter()
        self.faults: list[Fault] = []
        self.errors: list[str] = []  # exceptions inside the emulator (bugs), answered as 500
        self.nonces: set[str] = set()
        self.tokens: dict[str, float] = {}  # token -> expiry (server clock)
        self.token_ttl = ACCESS_TTL if version == "10" else TOKEN_TTL  # settable: tests use 2 s
        self.clock_offset = 0.0
        self.tls = tls

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> StarfaceServer:
        handler = type("Handler", (_Handler,), {"pbx": self})
        httpd = _QuietServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        if self.tls:
            httpd.socket = self.tls.wrap_socket(httpd.socket, server_side=True)
        return self.serve(httpd)

    @property
    def oauth(self) -> bool:
        return self.version == "10"

    def settings(self) -> dict:
        """The `pbx:` keys that sign in to this server (the caller sets PASSWORD_ENV and CLIENT_SECRET_ENV)."""
        out = {"type": "starface", "url": self.url, "login_id": self.login, "password_env": PASSWORD_ENV}
        if self.oauth:
            out["client_secret_env"] = CLIENT_SECRET_ENV
        return out

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    # ---- test controls -----------------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() + self.clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the server's clock on: tokens older than `token_ttl` then answer 401."""
        self.clock_offset += seconds

    def fail(self, k: int, kind: str = "500", method: str | None = None, path: str | None = None, **kw) -> Fault:
        fault = Fault(k, kind, method, path, **kw)
        with self.lock:
            self.faults.append(fault)
        return fault

    def reset_counts(self) -> None:
        with self.lock:
            self.counts.clear()

    @property
    def total_requests(self) -> int:
        return sum(c for key, c in self.counts.items() if not key.startswith("token "))  # those count grant types

    # ---- seeding -----------------------------------------------------------------------------------------
    def add_user(
        self,
        login: str,
        first: str,
        last: str,
        email: str,
        user_id: int | None = None,
        password: str | None = None,
        **extra,
    ) -> int:
        with self.lock:
            uid = user_id if user_id is not None else self._next_id()
            self.data.users[uid] = _user(uid, login, first, last, email, **extra)
            if password:
                self.data.passwords[uid] = password
            return uid

    def add_internal(self, number: str) -> int:
        return self._add_number({"type": "INTERNAL", "number": number})

    def add_external(
        self, number: str, block_id: int = 1, national: str = "49", local: str = "7022", exit_code: str = "00"
    ) -> int:
        """An external number of a line's number block: `number` is the subscriber part after the area code.
        Pass a whole E.164 number ("+4970222797830") to have it split with `local` as the area code."""
        if number.startswith("+"):
            rest = number[1 + len(national) :]
            if not number[1:].startswith(national) or not rest.startswith(local):
                raise ValueError(f"{number} does not start with +{national}{local}")
            number = rest[len(local) :]
        return self._add_number(
            {
                "type": "EXTERNAL",
                "number": number,
                "numberBlockId": block_id,
                "exitCode": exit_code,
                "nationalPrefix": national,
                # as a line's settings write it: with the trunk prefix 0 (Italy: the 0 is part of the number)
                "localPrefix": local if national == "39" else "0" + local,
            }
        )

    def add_number_of_type(self, number: str, type_: str) -> int:
        return self._add_number({"type": type_, "number": number})

    def add_group(
        self,
        name: str,
        numbers: tuple[int, ...] = (),
        members: tuple[int, ...] = (),
        group_id: int | None = None,
        declared: bool = True,
    ) -> int:
        """A group with numbers (PhoneNumber ids) and members (user ids). `declared` False: a group only known
        as the owner of a number in a PBX file without a `groups` list; export_pbx_file leaves it out."""
        with self.lock:
            gid = group_id if group_id is not None else self._next_id()
            # an undeclared group may share its id with a user: older PBX files (the demo's) have such owners
            if gid in self.data.groups or (declared and gid in self.data.users):
                raise ValueError(f"account id {gid} is taken")
            missing = [uid for uid in members if uid not in self.data.users]
            if missing:
                raise ValueError(f"group {name!r}: no user {missing[0]}")
            self.data.groups[gid] = _group(gid, name, members, declared)
            for nid in numbers:
                self._owner_free(nid)
                self._give_group(gid, nid)
            return gid

    def give_to_module(self, number_id: int, module: str) -> None:
        with self.lock:
            self._owner_free(number_id)
            self.data.numbers[number_id]["assignedModuleInstanceId"] = module

    def give_to_service(self, number_id: int, service_id: int = 2) -> None:
        with self.lock:
            self._owner_free(number_id)
            self.data.numbers[number_id]["assignedServiceId"] = service_id

    def assign(self, user_id: int, number_id: int, kind: str = "standard") -> None:
        with self.lock:
            self._assign(user_id, number_id, SERVICE_BY_KIND[kind])

    def set_primary(self, user_id: int, number_id: int) -> None:
        with self.lock:
            self.data.primary[user_id] = number_id

    def grant(self, user_id: int, permission: str = "admin_perm") -> None:
        with self.lock:
            pid = next(p["id"] for p in self.data.permissions.values() if p["permission"] == permission)
            self.data.grants[pid].add(user_id)

    # ---- inspection --------------------------------------------------------------------------------------
    def number_id(self, text: str) -> int:
        """The id of a number given as the provider shows it: internal digits or E.164."""
        with self.lock:
            for nid, n in self.data.numbers.items():
                if n["number"] == text or _e164(n) == text:
                    return nid
        raise KeyError(text)

    def owner(self, text: str) -> tuple[int | None, int | None]:
        """(user id, call service id) of a number."""
        with self.lock:
            n = self.data.numbers[self.number_id(text)]
            return n["assignedUserAccountId"], n["assignedServiceId"]

    def user_ids_by_login(self, login: str) -> list[int]:
        with self.lock:
            return [uid for uid, u in self.data.users.items() if u["login"] == login]

    def admins(self) -> set[int]:
        with self.lock:
            pid = next(p["id"] for p in self.data.permissions.values() if p["permission"] == "admin_perm")
            return set(self.data.grants[pid])

    def group_members(self, gid: int) -> set[int]:
        with self.lock:
            return set(self.data.groups[gid]["members"])

    def group_numbers(self, gid: int) -> set[str]:
        """The numbers a group owns, as the provider shows them (internal digits or E.164)."""
        with self.lock:
            return {_e164(n) for n in self.data.numbers.values() if n["assignedGroupAccountId"] == gid}

    def check_consistency(self) -> None:
        """What a real PBX guarantees; raises AssertionError when the emulator's data broke it."""
        with self.lock:
            self._check_groups()
            logins = Counter(u["login"] for u in self.data.users.values())
            assert all(c == 1 for c in logins.values()), f"duplicate logins: {logins.most_common(3)}"
            for nid, n in self.data.numbers.items():
                owners = [
                    n.get(k) for k in ("assignedUserAccountId", "assignedGroupAccountId", "assignedModuleInstanceId")
                ]
                assert sum(o is not None for o in owners) <= 1, f"number {nid} has several owners"
                uid = n["assignedUserAccountId"]
                assert uid is None or uid in self.data.users, f"number {nid} owned by a missing user"
            for uid, nid in self.data.primary.items():
                assert self.data.numbers[nid]["assignedUserAccountId"] == uid, f"primary {nid} not owned by {uid}"
            if self.data.licenses is not None:
                assert len(self.data.users) <= self.data.licenses

    def _check_groups(self) -> None:
        d = self.data
        both = {gid for gid, g in d.groups.items() if g["declared"]} & d.users.keys()
        assert not both, f"ids both user and group: {both}"
        names = Counter(g["name"].lower() for g in d.groups.values())
        assert all(c == 1 for c in names.values()), f"duplicate group names: {names.most_common(3)}"
        for gid, g in d.groups.items():
            assert g["name"].strip() and len(g["name"]) <= GROUP_NAME_MAX, f"group {gid} has the name {g['name']!r}"
            assert g["members"] <= d.users.keys(), f"group {gid} has missing members {g['members'] - d.users.keys()}"
        for nid, n in d.numbers.items():
            gid = n["assignedGroupAccountId"]
            assert gid is None or gid in d.groups, f"number {nid} owned by a missing group {gid}"
            assert gid is None or n["type"] in ("INTERNAL", "EXTERNAL"), f"group number {nid} is {n['type']}"

    # ---- internals shared with the handler ---------------------------------------------------------------
    def _give_group(self, gid: int, nid: int) -> None:
        self.data.numbers[nid].update(assignedGroupAccountId=gid, assignedServiceId=SERVICE_BY_KIND["standard"])

    def _next_id(self) -> int:
        while True:
            candidate = next(self.data.ids)
            if candidate not in self.data.users and candidate not in self.data.groups:
                return candidate

    def _add_number(self, fields: dict) -> int:
        with self.lock:
            nid = 1000 + len(self.data.numbers)
            base = {
                "id": nid,
                "numberBlockId": None,
                "exitCode": None,
                "nationalPrefix": None,
                "localPrefix": None,
                "assignedUserAccountId": None,
                "assignedGroupAccountId": None,
                "assignedServiceId": None,
                "assignedModuleInstanceId": None,
            }
            self.data.numbers[nid] = {**base, **fields}
            return nid

    def _owner_free(self, nid: int) -> dict:
        n = self.data.numbers.get(nid)
        if n is None:
            raise ApiError(400, f"The phone number {nid} does not exist.", plain=True)
        if any(
            n[k] is not None
            for k in (
                "assignedUserAccountId",
                "assignedGroupAccountId",
                "assignedModuleInstanceId",
                "assignedServiceId",
            )
        ):
            raise ApiError(400, f"The phone number {n['number']} is already assigned.", plain=True)
        return n

    def _assign(self, uid: int, nid: int, sid: int) -> None:
        if uid not in self.data.users:
            raise ApiError(404, f"A user with the id {uid} was not found.")
        if sid not in self.data.services:
            raise ApiError(400, f"The call service {sid} does not exist.", plain=True)
        n = self.data.numbers.get(nid)
        if n is not None and n["assignedUserAccountId"] == uid:
            n["assignedServiceId"] = sid  # already the user's: a new rule only
            return
        self._owner_free(nid)
        n.update(assignedUserAccountId=uid, assignedServiceId=sid)


def _user(uid: int, login: str, first: str, last: str, email: str, **extra) -> dict:
    user = {
        "id": uid,
        "login": login,
        "firstName": first,
        "familyName": last,
        "email": email,
        "language": "default",
        "namespace": None,
        "personId": f"person-{uid}",
        "faxHeader": "",
        "faxCallerId": "",
        "faxCoverPage": False,
        "faxEmailJournal": False,
        "missedCallReport": False,
    }
    user.update(extra)
    return user


def _group(gid: int, name: str, members=(), declared: bool = True) -> dict:
    """The server's record of a group; `members` and `declared` are internal (GET builds the API's Group)."""
    return {
        "id": gid,
        "name": name,
        "groupId": f"group-{gid}",
        "chatGroup": False,
        "voicemail": False,
        "members": set(members),
        "declared": declared,
    }


def _e164(n: dict) -> str:
    if n["type"] != "EXTERNAL":
        return n["number"]
    area = n["localPrefix"] if n["nationalPrefix"] == "39" else n["localPrefix"].lstrip("0")  # Italy keeps its 0
    return "+" + n["nationalPrefix"] + area + n["number"]


class _Handler(BaseHTTPRequestHandler):
    """One request: route, check the token, run the operation under the lock, answer JSON."""

    pbx: StarfaceServer  # set on the subclass made per server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stalls

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        template = _NUM.sub("/{id}", path.removeprefix("/rest"))
        pbx = self.pbx
        if pbx.latency:
            time.sleep(pbx.latency)  # outside the lock: concurrent requests wait side by side, as on a PBX
        with pbx.lock:
            pbx.counts[f"{method} {template}"] += 1
            fired = [f for f in pbx.faults if f.matches(method, template)]  # each fault counts every request
            fault = fired[0] if fired else None
        if fault and not fault.after and self._fault(fault):
            return
        try:
            status, body = self._route(method, path, parse_qs(parts.query), raw)
        except ApiError as err:
            status, body = (
                err.status,
                (err.message if err.plain else {"code": err.status, "message": err.message}),
            )
        except Exception as err:  # a bug in the emulator: answer 500 and keep it for the test to see
            pbx.errors.append(repr(err))
            status, body = 500, {"code": 500, "message": "Unexpected error."}
        if fault and fault.after and self._fault(fault):
            return
        self._send(status, body, location=getattr(self, "redirect", None))
        self.redirect = None

    def _fault(self, fault: Fault) -> bool:
        """Carry out a fault; True when it replaced the answer."""
        if fault.kind == "slow":
            time.sleep(fault.delay)
            return False
        if fault.kind == "drop":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return True
        if fault.kind == "garbage":
            self._send(200, None, raw=b"<html><body>Bad Gateway</body></html>", ctype="text/html")
            return True
        self._send(500, {"code": 500, "message": "Unexpected error."})
        return True

    def _send(
        self, status: int, body, raw: bytes | None = None, ctype: str = "application/json", location: str | None = None
    ) -> None:
        data = raw if raw is not None else (b"" if body is None else orjson.dumps(body))
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        if data:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _route(self, method: str, path: str, query: dict, raw: bytes):
        segs = path.split("/")[1:]
        if segs and segs[0] in (".well-known", "auth"):
            return self._keycloak(method, path, raw)
        if not segs or segs[0] != "rest":
            raise ApiError(404, f"{path} was not found.")
        segs = segs[1:]
        if segs == ["login"]:
            return self._login(method, raw)
        self._authorise()
        body = orjson.loads(raw) if raw else None
        ops = _Operations(self.pbx, query, body)
        op = ops.find(method, segs)
        with self.pbx.lock:
            return op()

    def _authorise(self) -> None:
        pbx = self.pbx
        bearer = self.headers.get("Authorization") or ""
        token = bearer.removeprefix("Bearer ") if pbx.oauth else self.headers.get("authToken")
        with pbx.lock:
            expiry = pbx.tokens.get(token or "")
            if expiry is None or expiry < pbx.now():
                pbx.tokens.pop(token or "", None)
                raise ApiError(401, "The authToken is missing, invalid or expired.")

    def _login(self, method: str, raw: bytes):
        pbx = self.pbx
        if pbx.oauth:  # what a 10.x answers here is unknown; any 4xx reads as a refused login
            raise ApiError(403, "The login with a nonce is not available on this PBX; sign in with OAuth.")
        with pbx.lock:
            if method == "GET":
                nonce = secrets.token_hex(13)
                pbx.nonces.add(nonce)
                return 200, {"loginType": pbx.login_type, "nonce": nonce, "secret": None}
            if method == "DELETE":
                pbx.tokens.pop(self.headers.get("authToken") or "", None)
                return 204, None
            if method != "POST":
                raise ApiError(404, "Not found.")
            try:
                login = orjson.loads(raw)
                nonce, secret = login["nonce"], login["secret"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise ApiError(400, "Invalid login.") from None
            if nonce not in pbx.nonces:
                raise ApiError(400, "Invalid login: unknown or already used nonce.")
            pbx.nonces.discard(nonce)  # single use, whatever the outcome
            if not secrets.compare_digest(str(secret), _secret(pbx.login_type, pbx.login, pbx.password, nonce)):
                raise ApiError(400, "Invalid login.")
            token = secrets.token_urlsafe(24)
            pbx.tokens[token] = pbx.now() + pbx.token_ttl
            pbx.issued.append(token)
            return 200, {"token": token}

    # -- STARFACE 10: the Keycloak realm `pbx`
    def _keycloak(self, method: str, path: str, raw: bytes):
        pbx = self.pbx
        if not pbx.oauth:
            raise ApiError(404, f"{path} was not found.")
        if method == "GET" and path == "/.well-known/openid-configuration" and pbx.discovery:
            self.redirect = "/auth/realms/pbx/.well-known/openid-configuration"  # as the PBX does
            return 302, None
        if method == "GET" and path == "/auth/realms/pbx/.well-known/openid-configuration" and pbx.discovery:
            doc = {"issuer": f"{pbx.url}/auth/realms/pbx", "token_endpoint": pbx.url + TOKEN_PATH}
            if pbx.edge_node:
                doc["edgeNodeId"] = pbx.edge_node
            return 200, doc
        if method == "POST" and path == TOKEN_PATH:
            form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8")).items()}
            with pbx.lock:
                pbx.counts[f"token {form.get('grant_type')}"] += 1
                return self._grant(form)
        raise ApiError(404, f"{path} was not found.")

    def _grant(self, form: dict):
        pbx = self.pbx
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = self.headers.get("Authorization") or ""
        if basic.startswith("Basic "):
            client_id, _, secret = base64.b64decode(basic[6:]).decode("utf-8").partition(":")
        by_form = "client_secret" in form
        if client_id != CLIENT_ID or secret != pbx.client_secret or by_form != (pbx.client_auth == "form"):
            return 401, {
                "error": "unauthorized_client",
                "error_description": "Invalid client or Invalid client credentials",
            }
        if pbx.edge_node and form.get("resource") != f"edgenode://{pbx.edge_node}":
            return 400, {"error": "invalid_request", "error_description": "Missing or wrong resource"}
        grant = form.get("grant_type")
        if grant == "password":
            if form.get("username") != pbx.login or form.get("password") != pbx.password or not pbx.api_right:
                return 401, {"error": "invalid_grant", "error_description": "Invalid user credentials"}
            if "login" not in (form.get("scope") or "").split():
                return 400, {"error": "invalid_scope", "error_description": "Invalid scopes: " + str(form.get("scope"))}
        elif grant == "refresh_token":
            expiry = pbx.refresh_tokens.pop(form.get("refresh_token") or "", None)  # single use: rotated
            if expiry is None or expiry < pbx.now():
                return 400, {"error": "invalid_grant", "error_description": "Token is not active"}
        else:
            return 400, {"error": "unsupported_grant_type", "error_description": "Unsupported grant_type"}
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        pbx.tokens[access] = pbx.now() + pbx.token_ttl
        pbx.refresh_tokens[refresh] = pbx.now() + pbx.refresh_ttl
        pbx.issued += [access, refresh]
        return 200, {
            "access_token": access,
            "expires_in": pbx.token_ttl,
            "refresh_expires_in": pbx.refresh_ttl,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "scope": "login",
        }


def _secret(login_type: str, login: str, password: str, nonce: str) -> str:
    """The secret this server expects, written from the vendor's formula (shared/reference/
    starface-rest-api-notes.md, step 2), on purpose not from the provider's code, so that one mistake cannot
    sit in both. The known-answer test (tests/test_starface_provider.py) checks it against values made by
    hand with sha512sum and base64 in a shell.

    Internal:        loginId ":" hex(sha512(loginId nonce hex(sha512(password))))   (UTF-8, lower-case hex)
    ActiveDirectory: base64(loginId nonce password)
    """
    import base64

    def sha512_hex(text: str) -> str:
        digest = hashlib.new("sha512")
        digest.update(bytes(text, "utf-8"))
        return digest.digest().hex()

    if login_type == "ActiveDirectory":
        return str(base64.standard_b64encode(bytes(f"{login}{nonce}{password}", "utf-8")), "ascii")
    return f"{login}:{sha512_hex(f'{login}{nonce}{sha512_hex(password)}')}"


class _Operations:
    """The REST operations, each a method returning (status, body); run under the server's lock."""

    def __init__(self, server: StarfaceServer, query: dict, body):
        self.server, self.d, self.query, self.body = server, server.data, query, body

    def find(self, method: str, segs: list[str]):
        s, n = segs, len(segs)
        routes = [
            (n == 1 and s[0] == "users", {"GET": self.list_users, "POST": self.create_user}),
            (n == 2 and s[0] == "users" and s[1] == "me", {"GET": lambda: (200, {})}),
            (
                n == 2 and s[0] == "users",
                {"GET": self.get_user, "PUT": self.put_user, "DELETE": self.delete_user},
            ),
            (
                n == 3 and s[0] == "users" and s[2] == "phonenumberconfig",
                {"GET": self.get_pnc, "PUT": self.put_pnc},
            ),
            (
                n == 4 and s[0] == "users" and s[3] == "phonenumbers",
                {"GET": self.list_assignments, "POST": self.add_assignments, "PUT": self.put_assignments},
            ),
            (n == 5 and s[0] == "users" and s[4] == "delete", {"POST": self.delete_assignments}),
            (n == 5 and s[0] == "users" and s[3] == "phonenumbers", {"DELETE": self.delete_assignment}),
            (n == 1 and s[0] == "accounts", {"GET": self.accounts}),
            (n == 1 and s[0] == "phonenumbers", {"GET": self.list_numbers}),
            (n == 2 and s[0] == "phonenumbers", {"GET": self.get_number}),
            (n == 1 and s[0] == "permissions", {"GET": lambda: (200, list(self.d.permissions.values()))}),
            (
                n == 3 and s[0] == "permissions" and s[1] == "users",
                {"GET": self.user_perms, "PUT": self.put_user_perms},
            ),
            (
                n == 3 and s[0] == "permissions" and s[2] == "users",
                {"GET": self.perm_users, "PUT": self.put_perm_users},
            ),
            (n == 1 and s[0] == "callservices", {"GET": lambda: (200, list(self.d.services.values()))}),
            (n == 1 and s[0] == "groups", {"GET": self.list_groups, "POST": self.create_group, "PUT": self.put_group}),
            (n == 2 and s[0] == "groups", {"GET": self.get_group, "DELETE": self.delete_group}),
            (n == 2 and s == ["server", "version"], {"GET": self.server_version}),
        ]
        for matched, methods in routes:
            if matched:
                if method not in methods:
                    raise ApiError(405, f"{method} is not allowed here.")
                self.segs = segs
                return methods[method]
        raise ApiError(404, f"/{'/'.join(segs)} was not found.")

    # -- helpers
    def _int(self, i: int) -> int:
        try:
            return int(self.segs[i])
        except ValueError:
            raise ApiError(404, f"{self.segs[i]} is not an id.") from None

    def _uid(self) -> int:
        uid = self._int(1) if self.segs[0] == "users" else self._int(2)
        if uid not in self.d.users:
            raise ApiError(404, f"A User with the given userId {uid} was not found.")
        return uid

    def _check_user_body(self, uid: int | None) -> dict:
        b = self.body
        if isinstance(b, dict) and self.server.ignored & b.keys():  # a PBX ignoring fields it accepts
            old = self.d.users.get(uid, _user(0, "", "", "", ""))
            b = {**b, **{k: old[k] for k in self.server.ignored & b.keys() if k in old}}
        if not isinstance(b, dict):
            raise ApiError(400, "The body must be a User object.")
        for key in ("email", "familyName", "firstName", "language", "login"):
            if not isinstance(b.get(key), str):
                raise ApiError(400, f"The field {key} is required.")
        login = b["login"]
        if not login.isdigit() or not login.isascii():
            raise ApiError(400, f"The login ID {login!r} may contain only the digits 0-9.")
        if any(u["login"] == login and u["id"] != uid for u in self.d.users.values()) or login == self.server.login:
            raise ApiError(400, f"The login ID {login} is already in use.")
        if b.get("password") and len(b["password"]) < 8:
            raise ApiError(400, "The password must be at least 8 characters long.")
        if b.get("password") and self.server.password_policy and not _strong(b["password"]):
            raise ApiError(400, "The password does not meet the password policy.")
        return b

    # -- users
    def list_users(self):
        term = (self.query.get("searchTerm") or [""])[0].lower()
        users = self.d.users.values()
        if term:
            users = [
                u
                for u in users
                if any(term in str(u[k]).lower() for k in ("login", "firstName", "familyName", "email"))
            ]
        return 200, [{**u, "password": ""} for u in users]

    def create_user(self):
        b = self._check_user_body(None)
        if self.d.licenses is not None and len(self.d.users) >= self.d.licenses:
            raise ApiError(400, f"No free user licence: all {self.d.licenses} licences are in use.")
        uid = self.server._next_id()
        named = ("id", "login", "firstName", "familyName", "email")
        known = {k: v for k, v in b.items() if k in _user(0, "", "", "", "") and k not in named}
        self.d.users[uid] = _user(uid, b["login"], b["firstName"], b["familyName"], b["email"], **known)
        if b.get("password"):
            self.d.passwords[uid] = b["password"]
        return 201, None

    def get_user(self):
        return 200, {**self.d.users[self._uid()], "password": ""}

    def put_user(self):
        uid = self._uid()
        b = self._check_user_body(uid)
        known = {k: v for k, v in b.items() if k in self.d.users[uid] and k != "id"}
        self.d.users[uid].update(known)
        if b.get("password"):
            self.d.passwords[uid] = b["password"]
        return 204, None

    def delete_user(self):
        uid = self._uid()
        del self.d.users[uid]
        for n in self.d.numbers.values():
            if n["assignedUserAccountId"] == uid:
                n.update(assignedUserAccountId=None, assignedServiceId=None)
        self.d.primary.pop(uid, None)
        for holders in self.d.grants.values():
            holders.discard(uid)
        for g in self.d.groups.values():
            g["members"].discard(uid)
        return 204, None

    def accounts(self):
        out = []
        for uid, u in self.d.users.items():
            nid = self.d.primary.get(uid)
            pin = self.d.numbers[nid]["number"] if nid is not None else ""
            out.append(_account(uid, "USER", u["firstName"], u["familyName"], pin))
        for gid, g in self.d.groups.items():
            pin = next(
                (
                    n["number"]
                    for n in self.d.numbers.values()
                    if n["assignedGroupAccountId"] == gid and n["type"] == "INTERNAL"
                ),
                "",
            )
            out.append(_account(gid, "GROUP", g["name"], "", pin))
        return 200, out

    # -- numbers
    def list_numbers(self):
        numbers = self.d.numbers.values()
        kind = (self.query.get("type") or [None])[0]
        assigned = (self.query.get("assigned") or [None])[0]
        if kind:
            numbers = [n for n in numbers if n["type"] == kind.upper()]
        if assigned in ("true", "false"):
            want = assigned == "true"
            numbers = [n for n in numbers if _is_assigned(n) == want]
        return 200, list(numbers)

    def get_number(self):
        n = self.d.numbers.get(self._int(1))
        if n is None:
            raise ApiError(404, "A PhoneNumber with the given phoneNumberId was not found.")
        return 200, n

    def get_pnc(self):
        uid = self._uid()
        return 200, self._pnc(uid)

    def _pnc(self, uid: int) -> dict:
        mine = [n for n in self.d.numbers.values() if n["assignedUserAccountId"] == uid]
        return {
            "primaryInternalNumberId": self.d.primary.get(uid),
            "primaryExternalNumberId": next((n["id"] for n in mine if n["type"] == "EXTERNAL"), None),
            "signalingNumberId": None,
            "possibleSignalnumbers": mine,
        }

    def put_pnc(self):
        uid = self._uid()
        b = self.body if isinstance(self.body, dict) else {}
        self.server.pnc_bodies.append(b)
        if "primaryInternalNumberId" in b and "primaryInternalNumberId" not in self.server.ignored:
            nid = b["primaryInternalNumberId"]
            if nid is None:  # no public source shows null accepted: this PBX fails as an unchecked Java server would
                raise ApiError(500, "java.lang.NullPointerException", plain=True)
            else:
                n = self.d.numbers.get(nid)
                if n is None or n["type"] != "INTERNAL" or n["assignedUserAccountId"] != uid:
                    raise ApiError(500, f"The phone number {nid} is not an internal number of this user.", plain=True)
                self.d.primary[uid] = nid
        return 200, self._pnc(uid)

    def list_assignments(self):
        uid = self._uid()
        mine = [n for n in self.d.numbers.values() if n["assignedUserAccountId"] == uid]
        return 200, [{"accountId": uid, "phoneNumberId": n["id"], "serviceId": n["assignedServiceId"]} for n in mine]

    def _assignments(self) -> list[dict]:
        b = self.body
        ok = isinstance(b, list) and all(
            isinstance(a, dict) and all(isinstance(a.get(k), int) for k in ("accountId", "phoneNumberId", "serviceId"))
            for a in b
        )
        if not ok:
            raise ApiError(400, "Request error: a list of PhoneNumberAssignment objects is required.", plain=True)
        return b

    def add_assignments(self):
        uid = self._uid()
        items = self._assignments()
        for a in items:  # check all before changing any: a refused request changes nothing
            if a["accountId"] != uid:
                raise ApiError(400, f"Request error: accountId {a['accountId']} is not the user {uid}.", plain=True)
            n = self.d.numbers.get(a["phoneNumberId"])
            if n is None:
                raise ApiError(400, f"Request error: the phone number {a['phoneNumberId']} does not exist.", plain=True)
            if a["serviceId"] not in self.d.services:
                raise ApiError(400, f"Request error: the call service {a['serviceId']} does not exist.", plain=True)
            if n["assignedUserAccountId"] != uid and _is_assigned(n):
                raise ApiError(400, f"Request error: the phone number {n['number']} is already assigned.", plain=True)
        for a in items:
            self.server._assign(uid, a["phoneNumberId"], a["serviceId"])
        return 200, items

    def put_assignments(self):
        """Changes the call service of numbers the user already has (STARFACE's updateUserPhoneNumberServiceId)."""
        uid = self._uid()
        items = self._assignments()
        for a in items:
            n = self.d.numbers.get(a["phoneNumberId"])
            if a["accountId"] != uid or n is None or n["assignedUserAccountId"] != uid:
                raise ApiError(
                    400, f"Request error: the phone number {a['phoneNumberId']} is not the user's.", plain=True
                )
            if a["serviceId"] not in self.d.services:
                raise ApiError(400, f"Request error: the call service {a['serviceId']} does not exist.", plain=True)
        for a in items:
            if "serviceId" not in self.server.ignored:
                self.d.numbers[a["phoneNumberId"]]["assignedServiceId"] = a["serviceId"]
        return 200, items

    def _unassign(self, uid: int, nid: int) -> None:
        n = self.d.numbers.get(nid)
        if n is None or n["assignedUserAccountId"] != uid:
            raise ApiError(
                400,
                f"Unexpected error: the phone number {nid} is not assigned to the user {uid}.",
                plain=True,
            )
        n.update(assignedUserAccountId=None, assignedServiceId=None)
        if self.d.primary.get(uid) == nid:
            del self.d.primary[uid]

    def delete_assignment(self):
        self._unassign(self._uid(), self._int(4))
        return 204, None

    def delete_assignments(self):
        uid = self._uid()
        for a in self._assignments():
            self._unassign(uid, a["phoneNumberId"])
        return 204, None

    # -- permissions
    def _pid(self) -> int:
        pid = self._int(1)
        if pid not in self.d.permissions:
            raise ApiError(404, f"A Permission with the given permissionId {pid} was not found.")
        return pid

    def user_perms(self):
        uid = self._uid()
        return 200, [self.d.permissions[p] for p, holders in self.d.grants.items() if uid in holders]

    def put_user_perms(self):
        uid = self._uid()
        wanted = self.body if isinstance(self.body, list) else []
        for pid, holders in self.d.grants.items():  # replaces the whole set
            (holders.add if pid in wanted else holders.discard)(uid)
        return 200, None

    def perm_users(self):
        pid = self._pid()
        return 200, [{**self.d.users[u], "password": ""} for u in sorted(self.d.grants[pid]) if u in self.d.users]

    def put_perm_users(self):
        pid = self._pid()
        granted = (self.query.get("granted") or [""])[0]
        if granted not in ("true", "false") or not isinstance(self.body, list):
            raise ApiError(400, "granted=true|false and a list of user ids are required.")
        for uid in self.body:
            if uid not in self.d.users:
                raise ApiError(404, f"A User with the given userId {uid} was not found.")
        for uid in self.body:
            (self.d.grants[pid].add if granted == "true" else self.d.grants[pid].discard)(uid)
        return 200, None

    def server_version(self):
        if self.server.product_version is None:  # not in the 6.7 API description
            raise ApiError(404, "/server/version was not found.")
        return 200, {"version": self.server.product_version}

    # -- groups
    def list_groups(self):
        term = (self.query.get("searchTerm") or [""])[0].lower()
        items = [self._group_item(g) for g in self.d.groups.values()]
        if term:
            keys = ("groupname", "groupinternalnumber", "groupexternalnumber")
            items = [i for i in items if any(term in i[k].lower() for k in keys)]
        return 200, items

    def _group_item(self, g: dict) -> dict:
        mine = sorted((n for n in self.d.numbers.values() if n["assignedGroupAccountId"] == g["id"]), key=_id)
        first = {kind: next((_e164(n) for n in mine if n["type"] == kind), "") for kind in ("INTERNAL", "EXTERNAL")}
        return {
            "id": g["id"],
            "groupname": g["name"],
            "groupinternalnumber": first["INTERNAL"],
            "groupexternalnumber": first["EXTERNAL"],
        }

    def _gid(self) -> int:
        gid = self._int(1)
        if gid not in self.d.groups:
            raise ApiError(404, f"A Group with the given groupId {gid} was not found.")
        return gid

    def get_group(self):
        g = self.d.groups[self._gid()]
        users = [
            {"id": uid, "firstname": u["firstName"], "lastname": u["familyName"], "assigned": uid in g["members"]}
            for uid, u in sorted(self.d.users.items())
        ]
        offered = (  # as the UI: numbers nobody else owns, and the group's own
            n
            for n in sorted(self.d.numbers.values(), key=_id)
            if n["type"] in ("INTERNAL", "EXTERNAL") and (n["assignedGroupAccountId"] == g["id"] or not _is_assigned(n))
        )
        numbers = [_assignable_number(n, n["assignedGroupAccountId"] == g["id"]) for n in offered]
        public = {k: g[k] for k in ("id", "name", "groupId", "chatGroup", "voicemail")}
        return 200, {**public, "assignableNumbers": numbers, "assignableUsers": users}

    def create_group(self):
        b = self._group_body()
        self._check_group_name(b.get("name"), None)
        members, numbers = self._group_changes(b, None)
        gid = self.server._next_id()
        self.d.groups[gid] = _group(gid, b["name"])
        self.d.groups[gid].update({k: b[k] for k in ("chatGroup", "voicemail") if isinstance(b.get(k), bool)})
        self._apply_group(gid, members, numbers)
        return 204, None

    def put_group(self):
        b = self._group_body()
        gid = b.get("id")
        if not isinstance(gid, int) or isinstance(gid, bool):
            raise ApiError(400, "Request error: the group's id is required.", plain=True)
        if gid not in self.d.groups:
            raise ApiError(404, f"A Group with the given groupId {gid} was not found.")
        self._check_group_name(b.get("name"), gid)
        members, numbers = self._group_changes(b, gid)  # everything checked before anything changes
        g = self.d.groups[gid]
        g["name"] = b["name"]
        g.update({k: b[k] for k in ("chatGroup", "voicemail") if isinstance(b.get(k), bool)})
        self._apply_group(gid, members, numbers)
        return 204, None

    def delete_group(self):
        gid = self._gid()
        for n in self.d.numbers.values():
            if n["assignedGroupAccountId"] == gid:
                n.update(assignedGroupAccountId=None, assignedServiceId=None)
        del self.d.groups[gid]
        return 204, None

    def _group_body(self) -> dict:
        if not isinstance(self.body, dict):
            raise ApiError(400, "Request error: the body must be a Group object.", plain=True)
        return self.body

    def _check_group_name(self, name, gid: int | None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "The group name must not be empty.", plain=True)
        if len(name) > GROUP_NAME_MAX:
            raise ApiError(400, f"The group name {name!r} is longer than {GROUP_NAME_MAX} characters.", plain=True)
        taken = next((g for g in self.d.groups.values() if g["name"].lower() == name.lower() and g["id"] != gid), None)
        if taken is not None:
            raise ApiError(400, f"The group name {name!r} is already used by the group {taken['id']}.", plain=True)

    def _group_changes(self, b: dict, gid: int | None) -> tuple[set[int], dict[int, bool]]:
        """The members after the request, and the numbers it assigns (True) or releases (False); refuses
        (400) before any change: an entry that is not {id: int, assigned: bool}, a member or number of the
        group left out of its list, an unknown user, or a number that is not free."""
        users = self._entries(b, "assignableUsers")
        numbers = self._entries(b, "assignableNumbers")
        g = self.d.groups.get(gid) if gid is not None else None
        mine = {nid for nid, n in self.d.numbers.items() if gid is not None and n["assignedGroupAccountId"] == gid}
        for what, current, listed in (("member", g["members"] if g else set(), users), ("number", mine, numbers)):
            left_out = sorted(current - listed.keys())
            if left_out:
                raise ApiError(
                    400,
                    f"Request error: the {what} {left_out[0]} of the group is missing from its assignable"
                    f"{'Users' if what == 'member' else 'Numbers'}; send the whole list.",
                    plain=True,
                )
        for uid, assigned in users.items():
            if assigned and uid not in self.d.users:
                raise ApiError(400, f"Request error: the user {uid} does not exist.", plain=True)
        for nid, assigned in numbers.items():
            n = self.d.numbers.get(nid)
            if assigned and n is None:
                raise ApiError(400, f"Request error: the phone number {nid} does not exist.", plain=True)
            if assigned and nid not in mine and (_is_assigned(n) or n["type"] not in ("INTERNAL", "EXTERNAL")):
                raise ApiError(400, f"Request error: the phone number {n['number']} is already assigned.", plain=True)
        members = {uid for uid, assigned in users.items() if assigned}
        changes = {nid: assigned for nid, assigned in numbers.items() if assigned or nid in mine}
        return members, changes

    def _entries(self, b: dict, key: str) -> dict[int, bool]:
        entries = b.get(key) or []
        ok = isinstance(entries, list) and all(
            isinstance(e, dict)
            and isinstance(e.get("id"), int)
            and not isinstance(e.get("id"), bool)
            and isinstance(e.get("assigned"), bool)
            for e in entries
        )
        if not ok:
            raise ApiError(400, f"Request error: {key} must be a list of {{id, assigned}} objects.", plain=True)
        return {e["id"]: e["assigned"] for e in entries}

    def _apply_group(self, gid: int, members: set[int], numbers: dict[int, bool]) -> None:
        self.d.groups[gid]["members"] = members
        for nid, assigned in numbers.items():
            if assigned:
                self.server._give_group(gid, nid)
            else:
                self.d.numbers[nid].update(assignedGroupAccountId=None, assignedServiceId=None)


def _id(n: dict) -> int:
    return n["id"]


def _assignable_number(n: dict, assigned: bool) -> dict:
    """A PhoneNumber as Group.assignableNumbers shows it (id: the PhoneNumber's id, an assumption)."""
    intern = n["type"] == "INTERNAL"
    return {
        "id": n["id"],
        "assigned": assigned,
        "intern": intern,
        "countryCode": None if intern else n["nationalPrefix"],
        "localAreaCode": None if intern else n["localPrefix"],
        "extension": n["number"],
        "exitCode": None if intern else n["exitCode"],
    }


def _strong(password: str) -> bool:
    """A typical password policy: 16 characters or more, upper and lower case, a digit, a special character."""
    tests = (str.isupper, str.islower, str.isdigit, lambda c: not c.isalnum())
    return len(password) >= 16 and all(any(test(c) for c in password) for test in tests)


def _account(aid: int, kind: str, first: str, last: str, pin: str) -> dict:
    return {
        "accountId": aid,
        "type": kind,
        "firstname": first,
        "lastname": last,
        "displayInformation": f"{first} {last}".strip(),
        "federationname": "",
        "local": True,
        "primaryInternalPhoneNumber": pin,
    }


def _is_assigned(n: dict) -> bool:
    return any(
        n[k] is not None
        for k in (
            "assignedUserAccountId",
            "assignedGroupAccountId",
            "assignedModuleInstanceId",
            "assignedServiceId",
        )
    )


def seed_scale(server: StarfaceServer, count: int, block_id: int = 1) -> None:
    """`count` users, each with an internal number (primary) and an external number; a few admins."""
    with server.lock:
        for i in range(count):
            ext = str(10000 + i)
            uid = server.add_user(str(ext), f"First{i}", f"Last{i}", f"user{i}@example.com")
            nid = server.add_internal(ext)
            server.assign(uid, nid)
            server.set_primary(uid, nid)
            server.assign(uid, server.add_external(f"27{i:05d}", block_id=block_id))
            if i % 500 == 0:
                server.grant(uid)


PASSWORD_ENV = "ADSYNC_TEST_PBX_PASSWORD"
CLIENT_SECRET_ENV = "ADSYNC_TEST_PBX_CLIENT_SECRET"


def provider_for(server: StarfaceServer, base_dir, **settings):
    """A StarfaceProvider pointed at the server; the caller sets PASSWORD_ENV (and for a 10.x server
    CLIENT_SECRET_ENV) with monkeypatch.setenv."""
    from adsync_plan.providers.starface import StarfaceProvider

    config = server.settings()
    config.update(settings)
    provider = StarfaceProvider(config, base_dir, None)
    provider.backoff = 0.01  # keep retry tests fast
    return provider


def seed_from_pbx_file(server: StarfaceServer, document: dict) -> None:
    """Load an embedded-PBX document (SPEC 9.5) with the same user and group ids, owners, services, admins and
    group members. A number owned `group:<id>` of a group the document does not list makes an undeclared group
    (named "Group <id>"), which export_pbx_file leaves out again."""
    with server.lock:
        for user in document["users"]:
            uid = server.add_user(user["login_id"], user["first_name"], user["last_name"], user["email"], user["id"])
            if user.get("is_admin"):
                server.grant(uid)
        for group in document.get("groups") or ():
            server.add_group(group["name"], members=tuple(group.get("members") or ()), group_id=group["id"])
        ids = {}
        for entry in document["numbers"]:
            number = entry["number"]
            ids[number] = server.add_internal(number) if entry["type"] == "internal" else server.add_external(number)
            owner = entry.get("owner")
            if owner is None:
                continue
            owner = str(owner)
            if owner.startswith("group:"):
                gid = int(owner.split(":")[1])
                if gid not in server.data.groups:
                    server.add_group(f"Group {gid}", group_id=gid, declared=False)
                server._owner_free(ids[number])
                server._give_group(gid, ids[number])
            elif owner.startswith("module:"):
                server.give_to_module(ids[number], owner.split(":", 1)[1])
            elif owner.startswith("service:"):
                server.give_to_service(ids[number], int(owner.split(":")[1]))
            else:
                server.assign(int(owner), ids[number], entry.get("service") or "standard")
        for user in document["users"]:
            if user.get("primary_internal_number"):
                server.set_primary(user["id"], ids[user["primary_internal_number"]])
        # a new user or group gets max(all user and group ids) + 1, as in the file PBX
        taken = [u["id"] for u in document["users"]] + list(server.data.groups)
        server.data.ids = itertools.count(max(taken + [0]) + 1)


def export_pbx_file(server: StarfaceServer) -> dict:
    """The server's content as an embedded-PBX document (SPEC 9.5), sorted as the file provider writes it."""
    with server.lock:
        kinds = {sid: "fax" if "fax" in s["serviceName"] else "standard" for sid, s in server.data.services.items()}
        d = server.data
        admins = server.admins()
        users = []
        for uid in sorted(d.users):
            u, nid = d.users[uid], d.primary.get(uid)
            users.append(
                {
                    "id": uid,
                    "login_id": u["login"],
                    "first_name": u["firstName"],
                    "last_name": u["familyName"],
                    "email": u["email"],
                    "is_admin": uid in admins,
                    "primary_internal_number": d.numbers[nid]["number"] if nid is not None else None,
                }
            )
        numbers = []
        for n in d.numbers.values():
            owner, service = None, None
            if n["assignedUserAccountId"] is not None:
                owner, service = n["assignedUserAccountId"], kinds.get(n["assignedServiceId"], "standard")
            elif n["assignedGroupAccountId"] is not None:
                owner, service = f"group:{n['assignedGroupAccountId']}", "standard"
            kind = "internal" if n["type"] == "INTERNAL" else "external"
            numbers.append({"number": _e164(n), "type": kind, "owner": owner, "service": service})
        numbers.sort(key=lambda e: (e["type"], e["number"]))
        out = {"format_version": 1, "users": users, "numbers": numbers}
        groups = [
            {"id": gid, "name": g["name"], "members": sorted(g["members"])}
            for gid, g in sorted(d.groups.items())
            if g["declared"]
        ]
        if groups:  # the file PBX's `groups` list is optional: absent when the PBX has none
            out["groups"] = groups
        return out
