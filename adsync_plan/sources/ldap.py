"""source.type ldap: Active Directory (or any LDAP server with AD's attribute names) read with ldap3.

The only module that imports ldap3. One read is:

1. connect over LDAPS, or ldap:// upgraded with StartTLS, verifying the certificate (ca_file, else the system
   store); a simple bind over plain LDAP only with `allow_insecure: true`, and then with a warning;
2. read the rootDSE: is it Active Directory (then users are `sAMAccountType` user accounts, no contacts or
   computers), which domain controller answered, and (with `global_catalog`) is it a global catalog;
3. check that base_dn and every configured scope group and mapped group (pbx_groups.map) exist (a typo would
   otherwise empty the scope, or a PBX group);
4. with nested groups, find every group nested (at any depth) in each of those groups through the matching
   rule LDAP_MATCHING_RULE_IN_CHAIN, so that a user's direct `memberOf` tells every configured group it
   belongs to; each group's objectSid tells whose primary group (`primaryGroupID`, which memberOf never
   lists) it is. Batched: a few searches for all configured groups (distinguishedName, then memberOf to
   tell which hold a group), and an in-chain search for each that does; none per user;
5. one paged search (RFC 2696, always) for the users under base_dn, asking only for the mapped attributes
   (and objectSid and primaryGroupID).

Any failure on the way raises SourceError: a half-read directory would orphan the users not yet read.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import ssl
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import ldap3
from ldap3.core import exceptions as lexc
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from adsync_plan.config import Scope, secret_from_env
from adsync_plan.errors import ConfigError, SourceError
from adsync_plan.model import NO_PROGRESS, Directory, DirectoryUser, Progress, normalise_dn
from adsync_plan.sources import group_keys, is_mapped_key
from adsync_plan.sources.ad import (
    GUID_ATTRIBUTES,
    SAM_NORMAL_USER_ACCOUNT,
    attribute_map,
    diagnostic_names,
    primary_group_sid,
    requested_attributes,
    rid,
    similar_dn,
    to_directory_user,
)

log = logging.getLogger(__name__)

_BLANKS_AROUND_COMMA = re.compile(r"\s*(?<!\\),\s*")
IN_CHAIN = "1.2.840.113556.1.4.1941"  # LDAP_MATCHING_RULE_IN_CHAIN
PAGED_RESULTS = "1.2.840.113556.1.4.319"  # RFC 2696 simple paged results
# Active Directory's user accounts: no contact (a person without an account), no computer (whose class derives
# from user), no trust or managed service account. One indexed attribute, as AD's own tools search.
AD_USER_FILTER = f"(sAMAccountType={SAM_NORMAL_USER_ACCOUNT})"
# Another server with AD's attribute names has no sAMAccountType, and maybe no class contact (a filter naming
# an unknown class matches nothing on OpenLDAP): persons but computers.
USER_FILTER = "(&(objectClass=person)(!(objectClass=computer)))"
ACTIVE_DIRECTORY = "1.2.840.113556.1.4.800"  # LDAP_CAP_ACTIVE_DIRECTORY_OID in the rootDSE's capabilities
ROOT_DSE_ATTRIBUTES = ["supportedCapabilities", "dnsHostName", "isGlobalCatalogReady"]
# A user's primary group is named by its RID in primaryGroupID, in the user's own domain: a domain controller
# holds only its own domain, so the RID tells the group; a global catalog holds all, so the user's objectSid
# (its domain's SID and its own RID) tells the domain.
PRIMARY_GROUP_ATTRIBUTES = ["primaryGroupID"]
FOREST_PRIMARY_GROUP_ATTRIBUTES = ["objectSid", "primaryGroupID"]
BINARY_ATTRIBUTES = GUID_ATTRIBUTES | {"objectsid"}
GROUP_FILTER = "(objectClass=group)"
NO_ATTRIBUTES = ["1.1"]  # RFC 4511: return no attributes, only DNs
SUGGESTION_CANDIDATES = 2000  # groups compared with a scope group that does not exist, at most
TERMS_PER_SEARCH = 100  # configured groups per batched search: a filter of a few KB, far below AD's limits
DEFAULT_PAGE_SIZE = 500
LEAN_DECODING_TESTED = frozenset({"2.9.1"})  # ldap3 versions _decode_entries_lean is proven against
DEFAULT_TIMEOUT = 30.0
LDAP_PORT, LDAPS_PORT = 389, 636
GC_PORT, GC_TLS_PORT = 3268, 3269  # a global catalog: the partial replica of every domain of the forest
FOREST = ""  # on a global catalog, a subtree search under the empty DN spans every domain of the forest
# LDAP result codes this module turns into sentences
INVALID_CREDENTIALS, NO_SUCH_OBJECT, INVALID_DN_SYNTAX = 49, 32, 34
STRONGER_AUTH_REQUIRED, CONFIDENTIALITY_REQUIRED = 8, 13


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect, from the `source:` settings (no secret in here)."""

    url: str
    host: str
    port: int
    use_ssl: bool
    start_tls: bool
    allow_insecure: bool
    ca_file: str | None
    server_name: str | None
    timeout: float
    global_catalog: bool = False

    @property
    def encrypted(self) -> bool:
        return self.use_ssl or self.start_tls


def read_directory(
    settings: Mapping,
    scope: Scope,
    attributes: Mapping,
    base_dir: Path,
    progress: Progress = NO_PROGRESS,
) -> Directory:
    endpoint = endpoint_from(settings, base_dir)
    attrs = attribute_map(attributes)
    base_dn = settings["base_dn"]
    bind_dn = settings.get("bind_dn")
    password = (
        secret_from_env("the configuration", "source.password_env", settings.get("password_env")) if bind_dn else None
    )
    page_size = int(settings.get("page_size", DEFAULT_PAGE_SIZE))
    with _connected(endpoint, bind_dn, password) as conn:
        reader = _Reader(conn, endpoint, page_size)
        root_dse = reader.root_dse()
        check_global_catalog(endpoint, root_dse)
        user_filter = user_filter_for(root_dse)
        search_base = reader.require_entry(tidy_dn(base_dn), "The base DN (source.base_dn)")
        groups = scope_groups(reader, scope)
        wanted = requested_attributes(attrs) + groups.primary_attributes()
        users = reader.users(search_base, user_filter, wanted, attrs, groups, progress)
    log.info("Read %d users from %s under %s.", len(users), endpoint.url, base_dn)
    users.sort(key=lambda user: user.dn.lower())  # the server's order is arbitrary; output must not be
    return Directory(
        users=tuple(users),
        attributes=diagnostic_names(attrs),
        origin={"type": "ldap", "url": endpoint.url, "base_dn": base_dn, **answered_by(endpoint, root_dse)},
    )


def check_global_catalog(endpoint: Endpoint, root_dse: Mapping[str, list]) -> None:
    """With source.global_catalog, the server must say it is a global catalog (AD's rootDSE does)."""
    ready = root_dse.get("isglobalcatalogready")
    if endpoint.global_catalog and (not ready or ready[0].upper() != "TRUE"):
        said = f"isGlobalCatalogReady is {ready[0]}" if ready else "its rootDSE has no isGlobalCatalogReady"
        raise SourceError(
            f"The LDAP server at {endpoint.url} (port {endpoint.port}) is no global catalog ({said}) but "
            "source.global_catalog is true; point source.url at a global catalog of the forest, or set "
            "source.global_catalog: false for a single domain."
        )


def answered_by(endpoint: Endpoint, root_dse: Mapping[str, list]) -> dict[str, str]:
    """Which domain controller and port answered (explain shows it): behind one DNS name there are many."""
    host = root_dse.get("dnshostname")
    out = {"server": host[0] if host else endpoint.host, "port": str(endpoint.port)}
    if endpoint.global_catalog:
        out["global_catalog"] = "true"
    return out


def user_filter_for(root_dse: Mapping[str, list]) -> str:
    """Active Directory's own test for user accounts where the server says it is AD, else the classes'."""
    return AD_USER_FILTER if ACTIVE_DIRECTORY in root_dse.get("supportedcapabilities", ()) else USER_FILTER


# --- settings -------------------------------------------------------------------------------------------


def endpoint_from(settings: Mapping, base_dir: Path) -> Endpoint:
    url = settings["url"]
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname or port == -1:
        raise ConfigError(f"The source.url {url!r} is not an ldap:// or ldaps:// URL with a host name and port.")
    use_ssl = parts.scheme == "ldaps"
    start_tls = bool(settings.get("start_tls")) and not use_ssl
    global_catalog = bool(settings.get("global_catalog"))
    if global_catalog and port in (LDAP_PORT, LDAPS_PORT):
        raise ConfigError(
            f"The source.url {url!r} names port {port}, a domain controller's own, but source.global_catalog is "
            f"true; leave the port out (the global catalog's is {GC_TLS_PORT} for ldaps://, {GC_PORT} for "
            "ldap://) or name the one it listens on."
        )
    ca_file = settings.get("ca_file")
    if ca_file:
        ca_file = str((Path(base_dir) / ca_file).resolve())
        if not Path(ca_file).is_file():
            raise ConfigError(f"The CA file {ca_file} named by source.ca_file does not exist.")
        try:
            ssl.create_default_context(cafile=ca_file)
        except ssl.SSLError:
            raise ConfigError(
                f"The CA file {ca_file} named by source.ca_file holds no PEM certificate; name the CA's PEM."
            ) from None
    return Endpoint(
        url=url,
        host=parts.hostname,
        port=port or _default_port(use_ssl, global_catalog),
        use_ssl=use_ssl,
        start_tls=start_tls,
        allow_insecure=bool(settings.get("allow_insecure")),
        ca_file=ca_file,
        server_name=settings.get("tls_server_name"),
        timeout=float(settings.get("timeout", DEFAULT_TIMEOUT)),
        global_catalog=global_catalog,
    )


def _default_port(use_ssl: bool, global_catalog: bool) -> int:
    if global_catalog:
        return GC_TLS_PORT if use_ssl else GC_PORT
    return LDAPS_PORT if use_ssl else LDAP_PORT


# --- connection -----------------------------------------------------------------------------------------


def _tls(endpoint: Endpoint) -> ldap3.Tls:
    """Verify the chain (ca_file, else the system store) and the name (the URL's host or tls_server_name)."""
    return ldap3.Tls(
        validate=ssl.CERT_REQUIRED,
        ca_certs_file=endpoint.ca_file,
        valid_names=[endpoint.server_name] if endpoint.server_name else None,
        sni=endpoint.server_name or endpoint.host,
    )


def _connection(endpoint: Endpoint, bind_dn: str | None, password: str | None) -> ldap3.Connection:
    server = ldap3.Server(
        endpoint.host,
        port=endpoint.port,
        use_ssl=endpoint.use_ssl,
        tls=_tls(endpoint),
        get_info=ldap3.NONE,  # no schema read: faster, and raw values are decoded here anyway
        connect_timeout=endpoint.timeout,
    )
    return ldap3.Connection(
        server,
        user=bind_dn,
        password=password,
        authentication=ldap3.SIMPLE if bind_dn else ldap3.ANONYMOUS,
        read_only=True,
        receive_timeout=math.ceil(endpoint.timeout),  # ldap3 packs it as a whole number of seconds
        auto_referrals=False,
        raise_exceptions=False,
        return_empty_attributes=False,
    )


def lean_decoding_applies() -> bool:
    """_decode_entries_lean indexes ldap3's decoded messages as ldap3 2.9 lays them out: only with a version
    the tests ran it against (tests/test_ldap_source.py proves both paths read the same); any other version
    gets ldap3's own decoding, slower but right."""
    return ldap3.__version__ in LEAN_DECODING_TESTED


def _decode_entries_lean(conn: ldap3.Connection) -> None:
    """Decode search result entries to just `dn` and `raw_attributes` (name -> list of bytes).

    ldap3 turns every entry into three forms (raw, formatted per schema, case-insensitive dicts); that
    formatting was half of the client's time in a 10,000-user read (benchmarks/ldap_scale.py). This module
    uses only the raw values, so it skips the rest. The payload layout is that of ldap3's fast BER decoder
    (ldap3.utils.asn1.decode_message_fast, which ldap3's own *_fast functions index the same way); any other
    message, and an entry with ranged values (`member;range=0-1499`), goes through ldap3 unchanged."""
    original = conn.strategy.decode_response_fast

    def decode(message):
        if message["protocolOp"] != 4:  # not a searchResEntry
            return original(message)
        dn, attributes = message["payload"][0][3], message["payload"][1][3]
        raw = {bytes(a[3][0][3]).decode("utf-8", "replace"): [bytes(v[3]) for v in a[3][1][3]] for a in attributes}
        if any(";range=" in name for name in raw):  # AD's ranged values: ldap3's auto_range needs its form
            return original(message)
        return {
            "type": "searchResEntry",
            # LDAP strings are UTF-8; a DN that is not stays recognisable here and is refused by the mapper
            "dn": bytes(dn).decode("utf-8", "surrogateescape"),
            "raw_attributes": raw,
            "attributes": {},
        }

    conn.strategy.decode_response_fast = decode


class _connected:
    """Context manager: an open, TLS-protected, bound connection; always unbound at the end."""

    def __init__(self, endpoint: Endpoint, bind_dn: str | None, password: str | None):
        self.endpoint, self.bind_dn, self.password = endpoint, bind_dn, password
        self.conn: ldap3.Connection | None = None

    def __enter__(self) -> ldap3.Connection:
        ep = self.endpoint
        if not ep.encrypted:
            if self.bind_dn and not ep.allow_insecure:
                raise SourceError(
                    f"Refusing to send the bind password for {self.bind_dn} unencrypted to {ep.url}; "
                    "use ldaps://, set start_tls: true, or (not recommended) allow_insecure: true."
                )
            log.warning(
                "The connection to %s is not encrypted (allow_insecure: true): the bind password and "
                "every user's data cross the network in clear text.",
                ep.url,
            )
        self.conn = _connection(ep, self.bind_dn, self.password)
        if lean_decoding_applies():
            _decode_entries_lean(self.conn)
        self.password = None
        try:
            self._open_and_bind()
        except BaseException:
            self._close()
            raise
        return self.conn

    def _open_and_bind(self) -> None:
        ep, conn = self.endpoint, self.conn
        try:
            conn.open()
            if ep.start_tls and not conn.start_tls():
                raise SourceError(
                    f"The LDAP server at {ep.url} refused StartTLS ({_result_text(conn)}); "
                    "use ldaps:// or enable TLS on the server."
                )
            if not conn.bind():
                raise _bind_error(ep, self.bind_dn, conn)
        except (lexc.LDAPException, OSError) as err:  # ldap3 re-raises ssl and socket errors as they are
            raise _connect_error(ep, err) from None

    def __exit__(self, *exc) -> None:
        self._close()

    def _close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(lexc.LDAPException, OSError):  # the server went away already
                self.conn.unbind()


def _result_text(conn: ldap3.Connection) -> str:
    result = conn.result or {}
    return result.get("description") or "no answer"


def _bind_error(ep: Endpoint, bind_dn: str | None, conn: ldap3.Connection) -> SourceError:
    code = (conn.result or {}).get("result")
    who = bind_dn or "anonymous"
    if code == INVALID_CREDENTIALS:
        return SourceError(
            f"The LDAP server at {ep.url} rejected the bind as {who}: wrong password or unknown account; "
            "check source.bind_dn and the password in the variable named by source.password_env."
        )
    if code in (STRONGER_AUTH_REQUIRED, CONFIDENTIALITY_REQUIRED):
        return SourceError(
            f"The LDAP server at {ep.url} refuses a simple bind without encryption; "
            "use ldaps:// or set start_tls: true."
        )
    return SourceError(f"The LDAP server at {ep.url} refused the bind as {who} ({_result_text(conn)}).")


def _connect_error(ep: Endpoint, err: BaseException) -> SourceError:
    """One sentence for what went wrong while connecting; ldap3's own text (which may quote the whole
    certificate) is only inspected, never shown."""
    text = str(err).lower()
    if "timed out" in text or isinstance(err, lexc.LDAPResponseTimeoutError):
        return SourceError(
            f"The LDAP server at {ep.url} did not answer within {ep.timeout:g} s (source.timeout); "
            "check source.url and that the server is running."
        )
    if isinstance(err, lexc.LDAPCertificateError) or "certificate" in text:
        trust = f"the CA in {ep.ca_file}" if ep.ca_file else "the system's trusted CAs"
        return SourceError(
            f"The TLS certificate of the LDAP server at {ep.url} could not be verified against {trust} "
            f"for the name {ep.server_name or ep.host}; set source.ca_file to the CA that signed it, or "
            "source.tls_server_name to the name in the certificate."
        )
    if any(word in text for word in ("ssl", "tls", "handshake")):
        return SourceError(
            f"The TLS handshake with the LDAP server at {ep.url} failed; check that the port speaks "
            "LDAPS (ldaps://, usually 636) or StartTLS (ldap:// with start_tls: true, usually 389)."
        )
    if isinstance(err, lexc.LDAPCommunicationError):
        return SourceError(
            f"Cannot reach the LDAP server at {ep.url} (connection refused or closed); "
            "check source.url and that the server is running and reachable."
        )
    return SourceError(f"The LDAP connection to {ep.url} failed ({type(err).__name__}).")


# --- reading --------------------------------------------------------------------------------------------


class _Missing(SourceError):
    """The entry searched for does not exist."""


class _Reader:
    """Searches on one bound connection; every failure becomes a SourceError."""

    def __init__(self, conn: ldap3.Connection, endpoint: Endpoint, page_size: int):
        self.conn, self.endpoint, self.page_size = conn, endpoint, page_size

    def require_entry(self, dn: str, what: str, key: str = "") -> str:
        """The entry's DN as the server spells it; a clear error when it does not exist (naming the
        configuration key that names it, if given)."""
        return self.required_entry(dn, what, NO_ATTRIBUTES, key)["dn"]

    def required_entry(self, dn: str, what: str, attributes: list[str], key: str = "") -> dict:
        """The entry (a searchResEntry response with `attributes`); a clear error when it does not exist."""
        if not self._search(dn, "(objectClass=*)", ldap3.BASE, attributes):
            if (self.conn.result or {}).get("result") in (NO_SUCH_OBJECT, INVALID_DN_SYNTAX):
                named = f" ({key})" if key else ""
                raise _Missing(
                    f"{what} {dn}{named} does not exist on the LDAP server at {self.endpoint.url}; check the DN."
                )
            raise self._search_error(dn)
        entries = [e for e in self.conn.response if e.get("type") == "searchResEntry"]
        entry = entries[0] if entries else {"dn": dn, "raw_attributes": {}}
        if not _is_utf8(entry["dn"]):
            raise SourceError(f"{what} {dn} has a name on the LDAP server at {self.endpoint.url} that is not UTF-8.")
        return entry

    def root_dse(self) -> dict[str, list]:
        """The server's rootDSE (RFC 4512 5.1), attribute names lower case; empty if the server hides it."""
        if not self._search("", "(objectClass=*)", ldap3.BASE, ROOT_DSE_ATTRIBUTES):
            return {}
        entries = [e for e in self.conn.response if e.get("type") == "searchResEntry"]
        return _entry("", entries[0]["raw_attributes"]) if entries else {}

    def similar_group(self, dn: str) -> str | None:
        """A group that the missing group `dn` was probably meant to be: one whose CN begins like dn's, in the
        same domain, chosen by ad.similar_dn. None when there is none, or the search fails."""
        try:
            value = parse_dn(dn)[0][1]
        except (lexc.LDAPInvalidDnError, IndexError):
            return None
        prefix = escape_filter_chars(value[:3])
        found: dict[str, str] = {}
        try:
            for page in self.pages(domain_of(dn), f"(&{GROUP_FILTER}(cn={prefix}*))", NO_ATTRIBUTES):
                found.update((normalise_dn(r["dn"]), r["dn"]) for r in page)
                if len(found) >= SUGGESTION_CANDIDATES:
                    break
        except SourceError:
            return None
        best = similar_dn(normalise_dn(dn), found)
        return found[best] if best else None

    def pages(self, base: str, search_filter: str, attributes: list[str]) -> Iterator[list[dict]]:
        """Every page of a paged subtree search (RFC 2696), as lists of searchResEntry responses."""
        cookie = None
        while True:
            if not self._search(base, search_filter, ldap3.SUBTREE, attributes, cookie):
                raise self._search_error(base)
            yield [e for e in self.conn.response if e.get("type") == "searchResEntry"]
            cookie = self._cookie()
            if not cookie:
                return

    def _cookie(self) -> bytes | None:
        control = (self.conn.result.get("controls") or {}).get(PAGED_RESULTS)
        return control["value"]["cookie"] if control else None

    def _search(self, base, search_filter, scope, attributes, cookie=None) -> bool:
        """One search (one page when paged); True when the server answered success. (ldap3's own return
        value is False for a successful search that found nothing.)"""
        paging = {} if scope == ldap3.BASE else {"paged_size": self.page_size, "paged_cookie": cookie}
        try:
            # paged_criticality: a server that cannot page must fail, not silently truncate;
            # AD has no aliases to dereference
            self.conn.search(
                base, search_filter, scope, attributes=attributes, paged_criticality=True,
                dereference_aliases=ldap3.DEREF_NEVER, **paging,
            )  # fmt: skip
        except (lexc.LDAPCommunicationError, OSError) as err:
            raise SourceError(
                f"The LDAP server at {self.endpoint.url} stopped answering during the directory read "
                f"({type(err).__name__}); nothing was used from the partial read, try again."
            ) from None
        except lexc.LDAPException as err:
            raise SourceError(
                f"The LDAP search under {base} on {self.endpoint.url} failed ({type(err).__name__}); "
                "nothing was used from the partial read."
            ) from None
        return (self.conn.result or {}).get("result") == 0

    def _search_error(self, base: str) -> SourceError:
        result = self.conn.result or {}
        if result.get("result") == NO_SUCH_OBJECT:
            return SourceError(f"{base} does not exist on the LDAP server at {self.endpoint.url}; check the DN.")
        return SourceError(
            f"The LDAP search under {base} on {self.endpoint.url} failed ({_result_text(self.conn)}); "
            "nothing was used from the partial read."
        )

    def users(self, base_dn, user_filter, wanted, attrs, groups: ScopeGroups, progress) -> list[DirectoryUser]:
        """All users under base_dn. Pages are mapped on a helper thread while this one waits for the
        server's next page (ssl reads release the GIL), which hides most of the mapping time."""
        mapper = _PageMapper(attrs, groups)
        progress.start("Reading the directory (LDAP)")
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="adsync-ldap-map") as pool:
                mapped = []
                for page in self.pages(base_dn, user_filter, wanted):
                    if page:  # Samba ends with an empty page
                        mapped.append(pool.submit(mapper.map, page))
                        progress.advance(len(page))
                return [user for future in mapped for user in future.result()]
        finally:
            progress.done()


class _PageMapper:
    """Search result entries -> DirectoryUsers (through the shared AD mapping)."""

    def __init__(self, attrs: Mapping, groups: ScopeGroups):
        self.attrs, self.aliases, self.primary, self.by_sid = attrs, groups.aliases, groups.primary, groups.by_sid
        self.interned: dict[str, str] = {}  # group DN as read -> one lower-case string shared by all members
        # the source id may be binary (objectSid, an octet string): shown in hex, never an error
        self.binary_ok = frozenset(name.lower() for name in attrs["source_id"])

    def map(self, page: list[dict]) -> list[DirectoryUser]:
        users = []
        for response in page:
            dn = response["dn"]
            if not dn.isascii() and not _is_utf8(dn):
                raise SourceError(
                    f"The LDAP server sent an entry whose DN is not UTF-8 text ({shown(dn)}); LDAP strings are "
                    "UTF-8: correct the entry's name in the directory."
                )
            entry = _entry(dn, response["raw_attributes"], self.binary_ok)
            groups = _groups(entry.get("memberof", ()), self.aliases, self.interned)
            if self.primary:
                groups |= _primary_groups(entry, self.primary, self.by_sid)
            users.append(to_directory_user(dn, entry, self.attrs, groups))
        return users


def _primary_groups(entry: Mapping[str, list], primary: Mapping, by_sid: bool) -> frozenset[str]:
    """What the user's primary group implies: AD lists it in neither memberOf nor the group's member."""
    group_id = entry.get("primarygroupid")
    if not group_id:
        return frozenset()
    if not by_sid:
        return primary.get(group_id[0], frozenset())
    sid = entry.get("objectsid")
    return primary.get(primary_group_sid(sid[0], group_id[0]), frozenset()) if sid else frozenset()


def _entry(dn: str, raw: Mapping[str, list[bytes]], binary_ok: frozenset[str] = frozenset()) -> dict[str, list]:
    """Lower-case keys, text values decoded as UTF-8 (LDAP's string encoding); GUIDs and SIDs stay bytes. A
    value that is not UTF-8 is an error naming the entry and the attribute, unless it is a source id (kept as
    bytes)."""
    entry = {}
    for name, values in raw.items():
        key = name.lower()
        if key in BINARY_ATTRIBUTES:
            entry[key] = list(values)
            continue
        try:
            entry[key] = [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            if key not in binary_ok:
                raise _not_text(dn, name, values) from None
            entry[key] = [_text_or_bytes(v) for v in values]
    return entry


def _text_or_bytes(value: bytes) -> str | bytes:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def _not_text(dn: str, name: str, values: list[bytes]) -> SourceError:
    value = next(v for v in values if isinstance(_text_or_bytes(v), bytes))
    data = value[:16].hex(" ") + (" ..." if len(value) > 16 else "")
    return SourceError(
        f"The LDAP entry {shown(dn)} has a {name} value that is not UTF-8 text (bytes {data}); LDAP strings are "
        f"UTF-8: correct the value in the directory, or map another attribute than {name} (attributes:)."
    )


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(text: str) -> str:
    """A DN or value as a message shows it: as it is, or quoted with escapes if it is not printable text."""
    return text if text.isprintable() and _is_utf8(text) else ascii(text)


def _groups(member_of, aliases: Mapping[str, frozenset[str]], interned: dict[str, str]) -> frozenset[str]:
    """A user's direct groups plus, through `aliases`, every configured scope group they lead to."""
    out = set()
    for dn in member_of:
        key = interned.get(dn)
        if key is None:
            key = interned[dn] = sys.intern(dn.lower())
        out.add(key)
        out.update(aliases.get(key, ()))
    return frozenset(out)


# --- scope ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScopeGroups:
    """What membership in a group implies for the configured groups (scope and mapped), by the two ways AD
    records membership.

    aliases: group DN (lower case, as the server spells it) -> the configured groups (normalised, as the
    configuration spells them) that membership in it implies;
    primary: the same for the users whose primary group it is, by the group's objectSid on a global catalog
    (by_sid), else by its RID as primaryGroupID writes it ("513")."""

    aliases: dict[str, frozenset[str]]
    primary: dict[bytes | str, frozenset[str]]
    by_sid: bool = False

    def primary_attributes(self) -> list[str]:
        if not self.primary:
            return []
        return FOREST_PRIMARY_GROUP_ATTRIBUTES if self.by_sid else PRIMARY_GROUP_ATTRIBUTES


def scope_groups(reader: _Reader, scope: Scope) -> ScopeGroups:
    """A configured group (scope group or mapped group) implies itself; with nested groups, so does every
    group nested in it at any depth, found with LDAP_MATCHING_RULE_IN_CHAIN. Mapping to the configuration's
    spelling lets the rules compare lower-cased strings even when the server writes the DN differently
    (spaces, escapes).

    The searches are per group, never per user, and batched where AD allows: a few searches find every
    configured group, a few more tell which of them hold a group at all; only those need an in-chain search
    (on Samba one costs a fifth of a second, and a thousand mapped groups are a plausible configuration)."""
    keys = group_keys(scope)
    entries = _configured_entries(reader, keys)
    inner = _with_member_groups(reader, [e["dn"] for e in entries.values()]) if scope.nested_groups else set()
    aliases: dict[str, set[str]] = {}
    sids: dict[str, bytes] = {}  # group DN, lower case -> objectSid (a server other than AD has none)
    for configured, actual in entries.items():
        members = {actual["dn"]: _sid(actual)}
        if actual["dn"].lower() in inner:
            members.update(nested_groups(reader, actual["dn"], _base_of(reader, actual["dn"])))
        for dn, sid in members.items():
            aliases.setdefault(dn.lower(), set()).add(normalise_dn(configured))
            if sid:
                sids[dn.lower()] = sid
    frozen = {dn: frozenset(names) for dn, names in aliases.items()}
    by_sid = reader.endpoint.global_catalog
    primary = {sid if by_sid else str(rid(sid)): frozen[dn] | {sys.intern(dn)} for dn, sid in sids.items()}
    return ScopeGroups(frozen, primary, by_sid)


def _configured_entries(reader: _Reader, keys: Mapping[str, str]) -> dict[str, dict]:
    """configured group -> its entry (with objectSid). Batched searches on distinguishedName find the groups
    as AD writes them; any other (another server, another spelling, no group at all) is read on its own, and
    one that does not exist is refused, naming its key, with the group most likely meant."""
    found = _groups_named(reader, [tidy_dn(configured) for configured in keys])
    entries = {}
    for configured, key in keys.items():
        entry = found.get(normalise_dn(tidy_dn(configured)))
        if entry is None:
            what = "The mapped group" if is_mapped_key(key) else "The scope group"
            try:
                entry = reader.required_entry(tidy_dn(configured), what, ["objectSid"], key)
            except _Missing as err:
                similar = reader.similar_group(tidy_dn(configured))
                raise SourceError(f"{err} Did you mean {similar}?" if similar else str(err)) from None
        entries[configured] = entry
    return entries


def _groups_named(reader: _Reader, dns: list[str]) -> dict[str, dict]:
    """Normalised DN -> entry of the groups among `dns` that one search per TERMS_PER_SEARCH finds."""
    found = {}
    try:
        for base, chunk in _batches(reader, dns):
            terms = "".join(f"(distinguishedName={escape_filter_chars(dn)})" for dn in chunk)
            for page in reader.pages(base, f"(&{GROUP_FILTER}(|{terms}))", ["objectSid"]):
                found.update((normalise_dn(r["dn"]), r) for r in page if _is_utf8(r["dn"]))
    except SourceError as err:  # a server that refuses the filter: each group is read on its own instead
        log.debug("Batched group search failed (%s); reading the groups one by one.", err)
    return found


def _with_member_groups(reader: _Reader, dns: list[str]) -> set[str]:
    """The groups among `dns` (as the server spells them) that hold a group as a direct member, lower case:
    only those can have nested groups. A batch whose answer names none of its groups (a DN spelled otherwise
    in memberOf) counts as all of them holding groups: an in-chain search too many, never one too few."""
    out: set[str] = set()
    for base, chunk in _batches(reader, dns):
        wanted = {normalise_dn(dn): dn.lower() for dn in chunk}
        terms = "".join(f"(memberOf={escape_filter_chars(dn)})" for dn in chunk)
        try:
            for page in reader.pages(base, f"(&{GROUP_FILTER}(|{terms}))", ["memberOf"]):
                for response in page:
                    parents = {wanted[p] for p in map(normalise_dn, _texts(response, "memberof")) if p in wanted}
                    out.update(parents or wanted.values())
        except SourceError as err:  # a server that refuses the filter: every group gets its in-chain search
            log.debug("Batched search for member groups failed (%s); searching nested groups of each.", err)
            out.update(wanted.values())
    return out


def _batches(reader: _Reader, dns: list[str]) -> Iterator[tuple[str, list[str]]]:
    """(search base, up to TERMS_PER_SEARCH DNs under it) for `dns`, in order."""
    by_base: dict[str, list[str]] = {}
    for dn in dns:
        by_base.setdefault(_base_of(reader, dn), []).append(dn)
    for base, group in by_base.items():
        for start in range(0, len(group), TERMS_PER_SEARCH):
            yield base, group[start : start + TERMS_PER_SEARCH]


def _base_of(reader: _Reader, dn: str) -> str:
    """Where groups related to `dn` are searched: its domain; on a global catalog, the whole forest."""
    return FOREST if reader.endpoint.global_catalog else domain_of(dn)


def _texts(response: dict, name: str) -> list[str]:
    values = next((v for k, v in response["raw_attributes"].items() if k.lower() == name), ())
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values]


def _sid(response: dict) -> bytes | None:
    values = next((v for k, v in response["raw_attributes"].items() if k.lower() == "objectsid"), None)
    return bytes(values[0]) if values else None


def nested_groups(reader: _Reader, group_dn: str, base: str | None = None) -> dict[str, bytes | None]:
    """Every group inside `group_dn`, at any depth, with its objectSid: searched under `base`, by default the
    group's domain (its DC= suffix); on a global catalog, the whole forest."""
    chain = f"(memberOf:{IN_CHAIN}:={escape_filter_chars(group_dn)})"
    found = {}
    base = domain_of(group_dn) if base is None else base
    for page in reader.pages(base, f"(&{GROUP_FILTER}{chain})", ["objectSid"]):
        found.update((response["dn"], _sid(response)) for response in page)
    return found


def tidy_dn(dn: str) -> str:
    """Without blanks around the separating commas (RFC 2253 allowed them; ldap3 and RFC 4514 do not)."""
    return _BLANKS_AROUND_COMMA.sub(",", dn.strip())


def domain_of(dn: str) -> str:
    """The trailing DC= components of a DN (its domain's naming context), or the DN itself if it has none."""
    try:
        parts = parse_dn(dn)
    except lexc.LDAPInvalidDnError:
        return dn
    tail = []
    for attr, value, _sep in reversed(parts):
        if attr.lower() != "dc":
            break
        tail.insert(0, f"{attr}={value}")
    return ",".join(tail) if tail else dn
