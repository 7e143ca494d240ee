"""Entra ID (Microsoft Graph v1.0) -> Directory: users and their memberships of the scope groups and the mapped
groups of pbx_groups.map (SPEC 4).

The only module that imports msal. A token comes from the client-credentials flow (client secret or
certificate); every Graph page is one GET with requests, `$select` of exactly the properties needed and
`$top=page_size`, following `@odata.nextLink` verbatim. 429, 503 and 504 are retried after `Retry-After`
(seconds, fractional allowed) or a bounded exponential backoff; any page that still fails ends the whole read
with a SourceError, so a partial directory (which would orphan users) never leaves this module.

Hard-won details (shared/reference/entra-graph-msal-notes.md):
- `instance_discovery=False`, or msal asks login.microsoftonline.com about any other authority host;
- our own requests.Session is msal's `http_client`, with the CA file pinned so that REQUESTS_CA_BUNDLE in the
  environment cannot silently replace it, and a timeout on every request (msal's default is none);
- a plain HTTPAdapter: urllib3 must not retry 429s itself (it crashes on a fractional Retry-After).
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

import msal
import orjson
import requests

from adsync_plan.config import Scope, secret_from_env
from adsync_plan.errors import ConfigError, SourceError
from adsync_plan.model import NO_PROGRESS, Directory, DirectoryUser, Progress
from adsync_plan.sources import ad, group_keys

log = logging.getLogger(__name__)

DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_GRAPH_URL = "https://graph.microsoft.com"
CONFIG = "the configuration"

# normalised field -> Graph user properties, in the order values are taken (SPEC 4)
DEFAULT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "source_id": ("id",),
    "account": ("onPremisesSamAccountName", "userPrincipalName"),
    "first_name": ("givenName",),
    "last_name": ("surname",),
    "email": ("mail",),
    "phones": ("businessPhones",),
    "faxes": ("faxNumber",),
    "enabled": ("accountEnabled",),
}
UPN = "userPrincipalName"
USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"
GUEST = "guest"  # userType of an invited external account (B2B); members are "Member"

# What is retried, as the Microsoft Graph SDKs' RetryHandler does: throttling and transient unavailability.
RETRY_STATUSES = frozenset({429, 503, 504})
MAX_ATTEMPTS = 6
BACKOFF_FIRST = 1.0  # seconds; doubled per attempt
BACKOFF_CAP = 32.0
RETRY_AFTER_CAP = 300.0  # a longer Retry-After is obeyed only up to this many seconds per wait


def read_directory(
    settings: Mapping,
    scope: Scope,
    attributes: Mapping,
    base_dir: Path,
    progress: Progress = NO_PROGRESS,
) -> Directory:
    attrs = attribute_map(settings, attributes)
    groups = scope_groups(scope)
    include_guests = bool(settings.get("include_guests"))
    with GraphClient(settings, base_dir) as graph:
        raw_users = read_users(graph, attrs, settings.get("page_size", 999), progress, include_guests)
        members = read_memberships(graph, groups, scope.nested_groups, settings.get("page_size", 999), progress)
    users = tuple(to_directory_user(raw, attrs, members.get(str(raw.get("id", "")).lower(), ())) for raw in raw_users)
    log.info(
        "Read %d users and %d groups (scope and mapped) from Entra ID tenant %s.",
        len(users),
        len(groups),
        graph.tenant_id,
    )
    return Directory(
        users=users,
        attributes=ad.diagnostic_names(attrs),
        origin={"type": "azure", "tenant_id": settings["tenant_id"], "graph_url": graph.graph_url},
    )


# --- mapping (pure) ---------------------------------------------------------------------------------------


def attribute_map(settings: Mapping, overrides: Mapping) -> dict[str, tuple[str, ...]]:
    """The Graph properties per field: SPEC 4, `account_from`, then the `attributes:` overrides."""
    defaults = dict(DEFAULT_ATTRIBUTES)
    if settings.get("account_from") == UPN:
        defaults["account"] = (UPN,)
    return ad.attribute_map(overrides, defaults)


def select_list(attrs: Mapping[str, Sequence[str]], include_guests: bool = False) -> list[str]:
    """Exactly the properties to `$select`: every mapped one, plus id and userPrincipalName (entry name), and
    userType unless guests are kept."""
    names = [
        "id",
        *(name for names in attrs.values() for name in names),
        UPN,
        *([] if include_guests else ["userType"]),
    ]
    return list(dict.fromkeys(names))


def to_directory_user(raw: Mapping, attrs: Mapping[str, Sequence[str]], groups) -> DirectoryUser:
    """One Graph user -> DirectoryUser. `groups` are the lower-cased configured group ids (scope and mapped)
    the user is in."""
    source_id = _first(raw, attrs["source_id"])
    if not source_id:
        upn = _first(raw, (UPN,))
        who = f"a user ({upn}) without" if upn else "a user without"
        raise SourceError(f"Graph returned {who} {attrs['source_id'][0]}; it cannot be bound to a PBX user.")
    enabled = _first_raw(raw, attrs["enabled"])
    return DirectoryUser(
        source_id=source_id.lower(),
        dn=_first(raw, (UPN,)) or source_id,
        account=_account(raw, attrs["account"]),
        first_name=_first(raw, attrs["first_name"]),
        last_name=_first(raw, attrs["last_name"]),
        email=_first(raw, attrs["email"]),
        phones=tuple(_values(raw, attrs["phones"])),
        faxes=tuple(_values(raw, attrs["faxes"])),
        groups=frozenset(groups),
        enabled=_truthy(raw, attrs["enabled"], enabled),
    )


def _values(raw: Mapping, names: Sequence[str]) -> list[str]:
    """Every non-empty value of the properties, in order; collections (businessPhones) are flattened. Text
    and numbers (an extension property may be an Integer) are values; anything else is an error naming the
    user and the property, never its Python rendering."""
    out = []
    for name in names:
        value = raw.get(name)
        for item in value if isinstance(value, list) else (value,):
            kind = type(item)
            if kind is str:
                text = item.strip()
            elif item is None:
                continue
            elif kind is int or kind is float:
                text = str(item)
            else:
                raise SourceError(_not_text(raw, name, item))
            if text:
                out.append(text)
    return out


def _not_text(raw: Mapping, name: str, item, expected: str = "text") -> str:
    kinds = {bool: "a true/false value", dict: "an object", list: "a list inside a list"}
    return (
        f"Graph returned user {_who(raw)} with {kinds.get(type(item), type(item).__name__)} in {name}, where "
        f"{expected} was expected; check the property mapped to it (attributes:)."
    )


def _who(raw: Mapping) -> str:
    """A user as messages name it: the object id (and the userPrincipalName when it is text)."""
    gid, upn = raw.get("id"), raw.get(UPN)
    name = gid if isinstance(gid, str) and gid.isprintable() else "without a usable id"
    return f"{name} ({upn})" if isinstance(upn, str) and upn.isprintable() else name


def _first(raw: Mapping, names: Sequence[str]) -> str | None:
    values = _values(raw, names)
    return values[0] if values else None


def _first_raw(raw: Mapping, names: Sequence[str]):
    for name in names:
        if raw.get(name) is not None:
            return raw[name]
    return None


def _account(raw: Mapping, names: Sequence[str]) -> str | None:
    """The first property that has a value; a userPrincipalName gives its local part (before the @)."""
    for name in names:
        value = _first(raw, (name,))
        if value:
            return value.rsplit("@", 1)[0] if name == UPN else value
    return None


def _truthy(raw: Mapping, names: Sequence[str], value) -> bool:
    """accountEnabled is a JSON boolean; an absent value counts as enabled, as for AD."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no")
    if isinstance(value, dict | list):
        raise SourceError(_not_text(raw, names[0], value, "true or false"))
    return True if value is None else bool(value)


def scope_groups(scope: Scope) -> dict[str, str]:
    """Lower-cased group object id -> the configuration key that names it (for messages): the scope groups
    and the mapped groups of pbx_groups.map, each read once."""
    out: dict[str, str] = {}
    for gid, key in group_keys(scope).items():
        try:
            uuid.UUID(gid)
        except ValueError:
            raise ConfigError(
                f"{key}: {gid!r} is not an Entra ID group object id; an azure source needs the group's "
                "object id (a GUID, shown in the Entra admin center), not a name or DN."
            ) from None
        out.setdefault(gid.lower(), key)
    return out


# --- reading (I/O) ----------------------------------------------------------------------------------------


def read_users(graph: GraphClient, attrs, page_size: int, progress: Progress, include_guests: bool) -> list[dict]:
    """Every user of the tenant; guests (userType Guest, invited from elsewhere) only with include_guests."""
    params = {"$select": ",".join(select_list(attrs, include_guests)), "$top": str(page_size)}
    users: list[dict] = []
    guests = 0
    progress.start("Reading users from Entra ID", None)
    try:
        for number, page in enumerate(graph.pages("/v1.0/users", params, "the users"), 1):
            if not all(isinstance(user, dict) for user in page):
                raise SourceError(
                    f"Graph answered page {number} of the users with an item that is not a user object; the "
                    "read was stopped so that no partial directory is used."
                )
            for user in page:
                if include_guests or str(user.get("userType") or "").lower() != GUEST:
                    users.append(user)
                else:
                    guests += 1
            progress.advance(len(page))
    finally:
        progress.done()
    if guests:
        log.info("Left out %d guest accounts (userType Guest); source.include_guests: true keeps them.", guests)
    return users


def read_memberships(
    graph: GraphClient, groups: Mapping[str, str], nested: bool, page_size: int, progress: Progress
) -> dict[str, set[str]]:
    """User id (lower case) -> the configured group ids (scope and mapped) it belongs to, transitively when
    `nested`: one paged read per group, none per user."""
    relation = "transitiveMembers" if nested else "members"
    members: dict[str, set[str]] = {}
    others: Counter = Counter()  # members that are no users: devices, contacts, service principals
    progress.start("Reading group members from Entra ID", len(groups))
    try:
        for gid, key in groups.items():
            path = f"/v1.0/groups/{quote(gid)}/{relation}"
            what = f"the members of group {gid} ({key})"
            pages = graph.pages(path, {"$select": "id", "$top": str(page_size)}, what, group=(gid, key))
            for number, page in enumerate(pages, 1):
                if not all(isinstance(item, dict) for item in page):
                    raise SourceError(
                        f"Graph answered page {number} of {what} with an item that is not an object; the read "
                        "was stopped so that no partial directory is used."
                    )
                for item in page:
                    kind = item.get("@odata.type", USER_TYPE)
                    if kind == USER_TYPE and item.get("id"):
                        members.setdefault(str(item["id"]).lower(), set()).add(gid)
                    elif kind != GROUP_TYPE:
                        others[kind.rsplit(".", 1)[-1]] += 1
            progress.advance(1)
    finally:
        progress.done()
    if others:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(others.items()))
        log.info("Skipped members of the groups that are no users: %s.", kinds)
    return members


class GraphClient:
    """Authenticated, retrying GETs of Graph pages; owns the HTTP session and the msal application."""

    def __init__(self, settings: Mapping, base_dir: Path) -> None:
        self.tenant_id = settings["tenant_id"]
        self.client_id = settings["client_id"]
        self.authority_host = settings.get("authority_host", DEFAULT_AUTHORITY_HOST).rstrip("/")
        self.graph_url = settings.get("graph_url", DEFAULT_GRAPH_URL).rstrip("/")
        self._settings = settings
        self._base_dir = base_dir
        self._secret_env = settings.get("client_secret_env")
        self._credential = self._load_credential()
        self._secret = self._credential if isinstance(self._credential, str) else None
        self._app: msal.ConfidentialClientApplication | None = None
        self.session = _Session(verify=_ca_file(settings, base_dir), timeout=float(settings.get("timeout", 30)))

    def __enter__(self) -> GraphClient:
        return self

    def __exit__(self, *exc) -> None:
        self.session.close()

    # --- token --------------------------------------------------------------------------------------------

    def _load_credential(self) -> str | dict:
        if self._settings.get("certificate_file"):
            return load_certificate(self._settings, self._base_dir)
        return secret_from_env(CONFIG, "source.client_secret_env", self._secret_env)

    def _application(self) -> msal.ConfidentialClientApplication:
        """Built on first use: its constructor already fetches the tenant's OpenID configuration."""
        if self._app is None:
            authority = f"{self.authority_host}/{self.tenant_id}"
            try:
                self._app = msal.ConfidentialClientApplication(
                    self.client_id,
                    client_credential=self._credential,
                    authority=authority,
                    instance_discovery=False,
                    azure_region=False,
                    http_client=self.session,
                    token_cache=msal.TokenCache(),
                )
            except ValueError as err:
                raise self._authority_error(err) from None
            except requests.RequestException as err:
                raise self._network_error(err, self.authority_host) from None
        return self._app

    def token(self) -> str:
        """An access token for Graph; msal's cache returns the same one until shortly before it expires."""
        app = self._application()
        try:
            result = app.acquire_token_for_client(scopes=[f"{self.graph_url}/.default"])
        except requests.RequestException as err:
            raise self._network_error(err, self.authority_host) from None
        except (ValueError, msal.exceptions.MsalServiceError) as err:
            raise SourceError(
                self._scrub(
                    f"The Entra ID token endpoint at {self.authority_host} answered with an error "
                    f"({type(err).__name__}: {err}); try again later."
                )
            ) from None
        if "access_token" in result:
            return result["access_token"]
        raise SourceError(self._token_error(result))

    def renew_token(self) -> None:
        """Graph said 401 to a cached token: forget it so the next call gets a fresh one."""
        if self._app is not None:
            self._app.remove_tokens_for_client()

    def _token_error(self, result: Mapping) -> str:
        error = result.get("error", "unknown_error")
        codes = result.get("error_codes") or []
        code = f"AADSTS{codes[0]}" if codes else error
        where = f"application {self.client_id} in tenant {self.tenant_id}"
        if error == "invalid_client":
            fix = (
                f"check the client secret in the environment variable {self._secret_env}"
                if self._secret is not None
                else "check that this certificate is registered for the application"
            )
            return f"Entra ID rejected the credentials of {where} (invalid_client, {code}); {fix}."
        if error == "unauthorized_client":
            return (
                f"Entra ID does not know {where} (unauthorized_client, {code}); check source.client_id and "
                "source.tenant_id."
            )
        if error == "invalid_tenant":
            return self._unknown_tenant()
        description = str(result.get("error_description", "")).split(" Trace ID:")[0].strip()
        detail = description if description.startswith(code) else f"{code}: {description}"
        return self._scrub(f"Entra ID refused a token for {where} ({error}, {detail}).")

    def _authority_error(self, err: ValueError) -> SourceError:
        if "Unable to get authority configuration" in str(err):
            return SourceError(self._unknown_tenant())
        return SourceError(f"source.authority_host: {self.authority_host} is not a usable Entra ID authority ({err}).")

    def _unknown_tenant(self) -> str:
        return (
            f"Entra ID at {self.authority_host} does not know the tenant {self.tenant_id}; check "
            "source.tenant_id (the directory id of your tenant) and source.authority_host."
        )

    def _network_error(self, err: requests.RequestException, host: str) -> SourceError:
        if isinstance(err, requests.exceptions.SSLError):
            return SourceError(
                f"The TLS certificate of {host} could not be verified; if a private CA or a TLS-inspecting "
                "proxy is in the way, set source.ca_file to its CA certificate."
            )
        if isinstance(err, requests.Timeout):
            return SourceError(
                f"{host} did not answer within {self.session.timeout} s; check the network or raise source.timeout."
            )
        return SourceError(
            f"Cannot connect to {host} ({type(err).__name__}); check the network and the URL in the configuration."
        )

    def _scrub(self, text: str) -> str:
        """Belt and braces: no message leaves this module with the client secret in it."""
        return text.replace(self._secret, "***") if self._secret else text

    # --- pages --------------------------------------------------------------------------------------------

    def pages(self, path: str, params: Mapping, what: str, group=None) -> Iterator[list[dict]]:
        """Every page's `value`, following `@odata.nextLink` verbatim until it is absent."""
        url, query, number = f"{self.graph_url}{path}", dict(params), 1
        while url:
            body = self._get(url, query, what, number, group)
            value = body.get("value")
            if not isinstance(value, list):
                raise SourceError(
                    f"Graph answered page {number} of {what} without a list of values; the read was stopped "
                    "so that no partial directory is used."
                )
            log.debug("Graph: page %d of %s: %d items.", number, what, len(value))
            yield value
            url, query, number = self._next_link(body.get("@odata.nextLink"), what), None, number + 1

    def _next_link(self, link, what: str) -> str | None:
        """The nextLink as it is, after checking that it stays on the Graph host (it will carry our token)."""
        if not link:
            return None
        ours, theirs = urlsplit(self.graph_url), urlsplit(str(link))
        if (theirs.scheme, theirs.netloc.lower()) != (ours.scheme, ours.netloc.lower()):
            raise SourceError(
                f"Graph sent a next-page link for {what} to another host ({theirs.netloc}); refusing to send "
                "the access token there."
            )
        return str(link)

    def _get(self, url: str, params, what: str, number: int, group) -> dict:
        renewed = False
        for attempt in range(1, MAX_ATTEMPTS + 1):
            headers = {"Authorization": f"Bearer {self.token()}", "Accept": "application/json"}
            try:
                response = self.session.get(url, params=params, headers=headers)
            except requests.exceptions.SSLError as err:
                raise self._network_error(err, urlsplit(url).netloc) from None
            except requests.RequestException as err:
                if attempt == MAX_ATTEMPTS:
                    raise self._network_error(err, urlsplit(url).netloc) from None
                self._wait(backoff(attempt), f"{type(err).__name__}", what, number, attempt)
                continue
            status = response.status_code
            if status == 401 and not renewed and attempt < MAX_ATTEMPTS:
                renewed = True
                self.renew_token()
                continue
            if status in RETRY_STATUSES and attempt < MAX_ATTEMPTS:
                delay = retry_after(response.headers.get("Retry-After"))
                self._wait(backoff(attempt) if delay is None else delay, f"HTTP {status}", what, number, attempt)
                continue
            if status != 200:
                raise SourceError(self._graph_error(response, what, number, group, attempt))
            return self._json(response, what, number)
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, delay: float, reason: str, what: str, number: int, attempt: int) -> None:
        log.warning(
            "Graph: %s on page %d of %s; retrying in %.2f s (attempt %d of %d).",
            reason,
            number,
            what,
            delay,
            attempt + 1,
            MAX_ATTEMPTS,
        )
        time.sleep(delay)

    @staticmethod
    def _json(response: requests.Response, what: str, number: int) -> dict:
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            _locate_undecodable(response.content, what, number)
            body = None
        if not isinstance(body, dict):
            kind = response.headers.get("Content-Type", "no content type")
            raise SourceError(
                f"Graph answered page {number} of {what} with something that is not JSON ({kind}); the read "
                "was stopped so that no partial directory is used."
            )
        return body

    def _graph_error(self, response: requests.Response, what: str, number: int, group, attempts: int) -> str:
        status = response.status_code
        code, message = _graph_error_parts(response)
        if status == 404 and group is not None:
            gid, key = group
            return (
                f"The group {gid} named in {key} does not exist in Entra ID tenant {self.tenant_id} "
                f"(Graph: {code}); correct the group object id in the configuration."
            )
        if status == 403:
            return (
                f"Graph refused to read {what} (403 {code}); grant the application the Microsoft Graph "
                "application permissions User.Read.All and GroupMember.Read.All, with admin consent."
            )
        if status == 401:
            return (
                f"Graph did not accept the access token for {what} (401 {code}); check the application's permissions."
            )
        tried = f" after {attempts} attempts" if status in RETRY_STATUSES else ""
        detail = f": {message}" if message else ""
        return self._scrub(
            f"Graph failed to return page {number} of {what}{tried} (HTTP {status} {code}{detail}); the read "
            "was stopped so that no partial directory is used."
        )


def _locate_undecodable(content: bytes, what: str, number: int) -> None:
    """A page orjson refused may be JSON whose text is not valid Unicode (bytes that are not UTF-8, or a lone
    surrogate escape such as \\ud800): then name the object and the property that hold it."""
    try:
        body = json.loads(content.decode("utf-8", "surrogateescape"))
    except (ValueError, RecursionError):
        return
    items = body.get("value") if isinstance(body, dict) else None
    for item in items if isinstance(items, list) else ():
        for name, value in item.items() if isinstance(item, dict) else ():
            if any(not _is_unicode(text) for text in (name, *(value if isinstance(value, list) else (value,)))):
                raise SourceError(
                    f"Graph answered page {number} of {what} with object {_who(item)} whose {_printable(name)} "
                    "is not valid Unicode text; the read was stopped so that no partial directory is used: "
                    "correct the value in Entra ID."
                )


def _is_unicode(value) -> bool:
    if not isinstance(value, str):
        return True  # numbers and the like decode; objects are refused where they are used
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(name: str) -> str:
    return name if _is_unicode(name) and name.isprintable() else ascii(name)


def _graph_error_parts(response: requests.Response) -> tuple[str, str]:
    try:
        error = orjson.loads(response.content).get("error", {})
        return str(error.get("code", "")), str(error.get("message", "")).strip().rstrip(".")
    except (orjson.JSONDecodeError, AttributeError):
        return response.reason or "", ""


def retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: a number (Graph sends e.g. "2.128") or an HTTP date; None if absent or odd."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def backoff(attempt: int) -> float:
    """Exponential backoff when the server gives no Retry-After: 1, 2, 4, ... seconds, capped."""
    return min(BACKOFF_FIRST * 2 ** (attempt - 1), BACKOFF_CAP)


# --- HTTP and credentials -----------------------------------------------------------------------------------


class _Session(requests.Session):
    """A Session with a timeout on every request and, when set, a CA file the environment cannot override.

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace a Session's `verify` (psf/requests#3829); msal
    calls `.get`/`.post` without `verify`, so the pin has to live here. Proxies from the environment still
    apply.
    """

    def __init__(self, verify: str | None, timeout: float) -> None:
        super().__init__()
        self.pinned_verify = verify
        self.timeout = timeout
        # a plain adapter: retries are ours (urllib3's own 429 retry breaks on a fractional Retry-After)
        self.mount("https://", requests.adapters.HTTPAdapter())
        self.mount("http://", requests.adapters.HTTPAdapter())

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, **kwargs)

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if self.pinned_verify:
            settings["verify"] = self.pinned_verify
        return settings


def _ca_file(settings: Mapping, base_dir: Path) -> str | None:
    """The configured CA file as an absolute path (relative to the configuration's folder), checked early:
    requests would otherwise fail on it with an OSError at the first request."""
    if not settings.get("ca_file"):
        return None
    path = (base_dir / settings["ca_file"]).resolve()
    if not path.is_file():
        raise ConfigError(f"source.ca_file: {path} does not exist; name the PEM file of the CA to trust.")
    return str(path)


def load_certificate(settings: Mapping, base_dir: Path) -> dict:
    """certificate_file (PEM with key and certificate, or PFX) -> msal's credential dict.

    The key is loaded here, not by msal, so that a wrong password, a missing key or a non-RSA key (Entra signs
    client assertions with PS256/RS256 only) is one clear sentence.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12

    path = (base_dir / settings["certificate_file"]).resolve()
    password_env = settings.get("certificate_password_env")
    password = secret_from_env(CONFIG, "source.certificate_password_env", password_env) if password_env else None
    secret = password.encode() if password else None
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"source.certificate_file: cannot read {path} ({err.strerror}).") from None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(_pem_block(data, b"PRIVATE KEY"), secret)
            cert = x509.load_pem_x509_certificate(_pem_block(data, b"CERTIFICATE"))
        else:
            key, cert, _ = pkcs12.load_key_and_certificates(data, secret)
    except (ValueError, TypeError) as err:
        hint = (
            f"check the password in {password_env}"
            if password_env
            else "if the key is encrypted, name the variable holding its password in source.certificate_password_env"
        )
        raise ConfigError(
            f"source.certificate_file: {path} could not be read as a PEM or PFX certificate with its private "
            f"key ({_first_line(err)}); {hint}."
        ) from None
    if key is None or cert is None:
        raise ConfigError(f"source.certificate_file: {path} must hold both the certificate and its private key.")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(
            f"source.certificate_file: {path} has a {type(key).__name__.removeprefix('_')} key; Entra ID "
            "needs an RSA key for certificate credentials."
        )
    return {
        "private_key": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        "public_certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
    }


def _pem_block(data: bytes, label: bytes) -> bytes:
    """The first PEM block whose label ends with `label` (PRIVATE KEY matches RSA/ENCRYPTED PRIVATE KEY)."""
    for block in data.split(b"-----BEGIN ")[1:]:
        name = block.split(b"-----", 1)[0]
        if name.endswith(label):
            return b"-----BEGIN " + block.split(b"-----END", 1)[0] + b"-----END " + name + b"-----\n"
    raise ValueError(f"no {label.decode().lower()} in the PEM file")


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0].rstrip(".")
