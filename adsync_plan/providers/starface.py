"""The STARFACE provider: reads and changes a STARFACE PBX through its REST API (`/rest`, STARFACE 6.4.2.12+).

The only module that makes HTTP requests to the PBX. Facts about the API, with sources and how sure each is,
are in shared/reference/starface-rest-api-notes.md; what this module assumes beyond them is said where it
matters:

- Signing in (nonce login before STARFACE 10, OAuth from 10 on) is providers/starface_auth.py's; this
  module only asks it for headers, and tells it when the PBX answered 401.
- Refresh costs a fixed number of requests whatever the user count: /users, /phonenumbers, /accounts,
  /callservices, /permissions and /permissions/{id}/users per administrator permission, plus the sign-in.
  The call service of a user's number is read from `PhoneNumber.assignedServiceId` (the id of the service
  it is assigned with); were a PBX to leave that empty for user numbers, the per-user read
  GET /users/{id}/phonenumberconfig/phonenumbers would cost one request per user.
- External numbers are written as E.164 from the PhoneNumber fields: `nationalPrefix` is the country code
  ("49"), `localPrefix` the area code (with or without its trunk prefix, "07022" or "7022"), `number` the
  subscriber number after it ("2797830"); `exitCode` ("00") only matters for dialling and is ignored; in
  Italy (+39) the area code keeps its leading zero. This
  matches the four fields of `AssignableNumber` (countryCode, localAreaCode, extension, exitCode); it is
  unverified on a real PBX.
- A new user gets a random initial password that nobody knows and that meets a typical policy (16+
  characters, upper and lower case, digit, special character; the API requires one to be set at creation
  on a real PBX's UI, and an account must not be left without one); users sign in after an administrator or
  the user's own password reset, or through Active Directory login.
- Requests per change: create = POST /users + GET /users?searchTerm=<login> (its id; the full list only if
  the search misses); field update = GET + PUT /users/{id} (the full user goes back); one request per number
  assigned or released, per call-service change (in place, PUT of the assignment) and per administrator
  permission granted or revoked; primary number = GET + PUT of the whole PhoneNumberConfig (never a null).
  The API would take several assignments in one POST, but the provider contract is one change per call.
  Verified apply reads a user back with read_user(): one GET per part the plan changed (user, permissions,
  number assignments, number configuration).
- Reads (GET) are retried with backoff on 5xx and connection errors; writes never are. A create whose
  answer is lost is never repeated: the login ID is looked up instead, and the user found is taken as the
  one just created when its e-mail address matches.
- Groups (issue 16): refresh adds GET /groups and one GET /groups/{id} per group (the list items carry no
  members; the API has no bulk read of them), run `pbx.parallelism` at a time; a group's numbers are those
  /phonenumbers lists with its `assignedGroupAccountId`. Each group write is GET /groups/{id} + PUT /groups
  of the whole Group with one change (the full `assignableUsers`/`assignableNumbers` lists as read, one flag
  or the name changed: whether the PBX reads a partial list as "add" or "replace" is unverified); a create
  is POST /groups (204, no id) + GET /groups?searchTerm=<name> with an exact-name match (the full list if
  the search misses). `AssignableNumber.id` is taken to be the PhoneNumber id, with the number's fields
  (extension, countryCode, localAreaCode) as the fallback. Group writes are safe in parallel for different
  groups, not for one group (each PUT carries the whole group: two at once would lose one change), so one
  group's steps must run one after the other, as one user's do.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import orjson
import requests
import urllib3

from adsync_plan.errors import PbxError
from adsync_plan.model import (
    EXTERNAL,
    INTERNAL,
    NO_PROGRESS,
    ROLE_ADMIN,
    ROLE_USER,
    SERVICE_FAX,
    SERVICE_STANDARD,
    SHAPE_FIELDS,
    PbxAccount,
    PbxGroup,
    PbxNumber,
    PbxState,
    Progress,
)
from adsync_plan.providers.base import Provider, short_external_numbers
from adsync_plan.providers.starface_auth import login_secret, make_sign_in  # noqa: F401 - login_secret re-exported

log = logging.getLogger(__name__)

ADMIN_PERMISSIONS = ("admin_perm", "administration", "administrator")  # the default: the first the PBX has
# Call services by preference: fax numbers get Software Fax2Mail (faxes e-mailed) as the vendor's own AD module
# configures them, else Software Fax (web UI only).
SERVICE_NAMES = {
    "standard": ("standard_call", "standard", "standard call"),
    "fax": ("software fax2mail", "software_fax2mail", "fax2mail", "software_fax", "software fax", "fax"),
}
SYSTEM_NAME = re.compile(r"\b(api|system|service|starface|admin|administrator|test|rest|fax|noreply)\b", re.I)
# PhoneUser field -> STARFACE User field
USER_FIELDS = {"login_id": "login", "first_name": "firstName", "last_name": "familyName", "email": "email"}
FIELD_WORDS = {
    "login_id": "login ID",
    "first_name": "first name",
    "last_name": "last name",
    "email": "e-mail address",
}


class _Unanswered(PbxError):
    """A request whose outcome is unknown: the connection broke, it timed out, or the PBX answered 5xx."""


class StarfaceProvider(Provider):
    backoff = 0.5  # seconds before the first retry of a read; doubled for each further one
    # parallel apply: each request is independent; the session, the sign-in and the lazily loaded inventory
    # are guarded by `_lock` (the rest is read-only during apply, or one dict item set per created user)
    parallel_safe = True
    POOL = 32  # connections kept per host: at least the largest pbx.parallelism, so none is discarded

    def __init__(self, settings: Mapping, base_dir: Path, licenses: int | None = None):
        super().__init__(settings, base_dir, licenses)
        self.url = settings["url"].rstrip("/")
        self.timeout = float(settings.get("timeout", 30))
        self.retries = int(settings.get("retries", 3))
        self._session: requests.Session | None = None
        self._lock = threading.RLock()
        self._auth = make_sign_in(self)  # nonce login or OAuth; nothing else here knows which
        self._number_ids: dict[str, int] | None = None  # "30" / "+4970222797830" -> PhoneNumber id
        self._numbers_by_id: dict[int, tuple[str, str]] = {}  # PhoneNumber id -> (number, internal|external)
        self._services: list[dict] | None = None
        self._permissions: list[dict] | None = None
        self._admin_ids: tuple[int, ...] | None = None  # the permissions that make an administrator
        self._names: dict[str, str] = {}  # PBX user id -> "login ID 30 (Jane Doe)", for messages
        self._group_names: dict[str, str] = {}  # PBX group id -> its name, for messages

    @property
    def pbx(self) -> str:
        """How messages name the PBX."""
        return f"The STARFACE PBX at {self.url}"

    def describe(self) -> dict:
        return {"type": "starface", "url": self.url}

    # ---- reading ---------------------------------------------------------------------------------------
    def read(self, progress: Progress = NO_PROGRESS) -> PbxState:
        progress.start("Reading the STARFACE PBX", total=7)
        users = self._get_list("/users", progress)
        phone_numbers = self._get_list("/phonenumbers", progress)
        accounts = self._get_list("/accounts", progress)
        self._services = self._get_list("/callservices", progress)
        self._permissions = self._get_list("/permissions", progress)
        admins = set()  # holding any of the administrator permissions makes an administrator (protected)
        for pid in self._admin_permissions():
            admins |= {str(u.get("id")) for u in self._get_list(f"/permissions/{pid}/users")}
        progress.advance()
        group_items = self._get_list("/groups", progress)
        progress.done()
        if problems := self.mapping_problems():  # refuse before a plan that apply could not carry out
            raise PbxError(problems[0])
        numbers = self._inventory(phone_numbers)
        primary = {
            str(a.get("accountId")): a.get("primaryInternalPhoneNumber") or None
            for a in accounts
            if a.get("type") == "USER"
        }
        result = [self._account(u, admins, primary) for u in users]
        self._names = {acc.id: f"login ID {acc.login_id} ({acc.first_name} {acc.last_name})" for acc in result}
        groups = self._read_groups(group_items, numbers, progress)
        log.debug("read %d users, %d numbers, %d groups from %s", len(result), len(numbers), len(groups), self.url)
        return replace(PbxState.from_parts(result, numbers), groups=groups)

    # ---- groups ----------------------------------------------------------------------------------------
    def _read_groups(self, items: list[dict], numbers: Mapping[str, PbxNumber], progress: Progress) -> dict:
        """Each listed group with its members (one GET /groups/{id} each, `pbx.parallelism` at a time) and
        its numbers (the inventory's, owned `group:<id>`). A group gone between the list and its read is left
        out, as if the list had come a moment later."""
        owned: dict[str, list[str]] = {}
        for number, info in numbers.items():
            if info.owner and info.owner.startswith("group:"):
                owned.setdefault(info.owner.removeprefix("group:"), []).append(number)
        ids = [str(item.get("id")) for item in items]
        if not ids:
            return {}
        progress.start("Reading the members of the STARFACE groups", total=len(ids))
        workers = max(1, min(int(self.settings.get("parallelism", 4)), self.POOL, len(ids)))
        with ThreadPoolExecutor(workers) as pool:
            details = list(pool.map(lambda gid: self._group_or_none(gid, progress), ids))
        progress.done()
        groups = {}
        for gid, group in zip(ids, details, strict=True):
            if group is None:
                continue
            self._group_names[gid] = str(group.get("name") or "")
            groups[gid] = PbxGroup(
                name=self._group_names[gid],
                members=_members(group),
                numbers=tuple(sorted(owned.get(gid, ()))),
            )
        return groups

    def _group_or_none(self, gid: str, progress: Progress = NO_PROGRESS) -> dict | None:
        path = f"/groups/{int(gid)}"
        resp = self._call("GET", path, read=True)
        progress.advance()
        if resp.status_code == 404:
            log.info("group %s was deleted on the PBX while it was read; left out", gid)
            return None
        data = self._json(self._checked(resp, "read", self._group_who(gid), "GET", path), "GET", path)
        if not isinstance(data, dict):
            raise PbxError(f"{self.pbx} answered GET /rest{path} with JSON that is not an object.")
        return data

    def _group(self, gid: str) -> dict:
        group = self._group_or_none(gid)
        if group is None:
            raise PbxError(f"{self.pbx} no longer has {self._group_who(gid)}; run refresh and plan again.")
        self._group_names[str(gid)] = str(group.get("name") or "")
        return group

    def _group_who(self, gid: str, name: str | None = None) -> str:
        name = name if name is not None else self._group_names.get(str(gid))
        return f"the group {name!r} (id {gid})" if name else f"the group {gid}"

    def read_group(self, group_id: str) -> PbxGroup:
        """One request: the group's name, its members and its numbers, as GET /groups/{id} has them."""
        group = self._group(group_id)
        numbers = (self._assignable_text(e) for e in group.get("assignableNumbers") or () if e.get("assigned"))
        return PbxGroup(
            name=str(group.get("name") or ""),
            members=_members(group),
            numbers=tuple(sorted(n for n in numbers if n)),
        )

    def _assignable_text(self, entry: Mapping) -> str | None:
        """An AssignableNumber as the inventory writes it: from its own fields (extension; for an external one
        + countryCode + localAreaCode, as a PhoneNumber's), else by its id taken as the PhoneNumber id."""
        if entry.get("extension"):
            if entry.get("intern"):
                return str(entry["extension"])
            fields = {"number": entry["extension"], "nationalPrefix": entry.get("countryCode")}
            return e164({**fields, "localPrefix": entry.get("localAreaCode"), "id": entry.get("id")})
        self._load_inventory()
        known = self._numbers_by_id.get(entry.get("id"))
        return known[0] if known else None

    def create_group(self, name: str) -> str:
        who = f"the new group {name!r}"
        body = {"name": name, "chatGroup": False, "voicemail": False, "assignableNumbers": [], "assignableUsers": []}
        try:
            resp = self._call("POST", "/groups", body=body)
            cause = f"HTTP {resp.status_code}"
        except _Unanswered as err:
            resp, cause = None, str(err)
        if resp is not None and 400 <= resp.status_code < 500:
            raise self._refused(resp, "create", who, "POST", "/groups")
        found = self._find_group(name)
        if resp is not None and 200 <= resp.status_code < 300:
            if found is None:
                raise PbxError(
                    f"{self.pbx} confirmed the creation of {who} but lists no group with that name; check the "
                    "PBX's groups before running apply again."
                )
        elif found is None:
            raise PbxError(
                f"{self.pbx} did not confirm the creation of {who} ({cause}) and has no group with that name, "
                "so nothing was created; run plan and apply again."
            )
        else:
            group = self._group(str(found))
            if _members(group) or any(e.get("assigned") for e in group.get("assignableNumbers") or ()):
                raise PbxError(
                    f"{self.pbx} did not confirm the creation of {who} ({cause}), and a group {found} with that "
                    "name has members or numbers, so it is not the one just made; check that group on the PBX."
                )
            log.warning("The PBX did not confirm the creation of %s (%s), but it exists now; carrying on.", who, cause)
        self._group_names[str(found)] = name
        return str(found)

    def _find_group(self, name: str) -> int | None:
        """The id of the one group named exactly `name`: a search first, the full list if the search does not
        find it; two groups of that name are ambiguous (the PBX should not allow them) and refused."""
        for params in ({"searchTerm": name}, None):
            ids = sorted(
                {item.get("id") for item in self._get_list("/groups", params=params) if item.get("groupname") == name}
            )
            if len(ids) > 1:
                raise PbxError(
                    f"{self.pbx} has {len(ids)} groups named {name!r} (ids {', '.join(map(str, ids))}); rename "
                    "all but one on the PBX, then run plan again."
                )
            if ids:
                return ids[0]
        return None

    def rename_group(self, group_id: str, name: str) -> None:
        group = self._group(group_id)
        who = self._group_who(group_id)
        self._put_group({**group, "name": name}, f"rename to {name!r}", who)
        self._group_names[str(group_id)] = name

    def set_group_members(self, group_id: str, member_ids: Collection[str]) -> None:
        """Flip `assigned` on the group's assignableUsers so that exactly `member_ids` are members; a member
        the PBX does not offer is added as an entry of its own, for the PBX to accept or refuse."""
        group = self._group(group_id)
        wanted = {int(uid) for uid in member_ids}
        users = [{**u, "assigned": u.get("id") in wanted} for u in group.get("assignableUsers") or ()]
        listed = {u.get("id") for u in users}
        users += [{"id": uid, "assigned": True} for uid in sorted(wanted - listed)]
        members = ", ".join(map(str, sorted(wanted))) or "none"
        doing = f"set the members (PBX user ids {members}) of"
        self._put_group({**group, "assignableUsers": users}, doing, self._group_who(group_id))

    def assign_group_number(self, group_id: str, number: str) -> None:
        group = self._group(group_id)
        nid = self._number_id(number)
        entries, found = self._number_entries(group, number, True)
        if not found:  # not offered: owned by someone else, or unknown to the group; the PBX says which
            entries.append({"id": nid, "assigned": True})
        doing = f"assign the number {number} to"
        self._put_group({**group, "assignableNumbers": entries}, doing, self._group_who(group_id))

    def release_group_number(self, group_id: str, number: str) -> None:
        group = self._group(group_id)
        self._number_id(number)  # a number outside the inventory is refused as for users
        entries, found = self._number_entries(group, number, False)
        if not found:
            raise PbxError(
                f"{self.pbx} does not list the number {number} as one of {self._group_who(group_id)}; "
                "run refresh and plan again."
            )
        doing = f"remove the number {number} from"
        self._put_group({**group, "assignableNumbers": entries}, doing, self._group_who(group_id))

    def _number_entries(self, group: Mapping, number: str, assigned: bool) -> tuple[list[dict], bool]:
        """The group's assignableNumbers with the entry of `number` set to `assigned` (a release only touches
        an entry the group has), and whether there was such an entry."""
        entries, found = [], False
        for entry in group.get("assignableNumbers") or ():
            if self._assignable_text(entry) == number and (assigned or entry.get("assigned")):
                entry, found = {**entry, "assigned": assigned}, True
            entries.append(entry)
        return entries, found

    def _put_group(self, body: dict, doing: str, who: str) -> None:
        self._write("PUT", "/groups", body, doing, who)

    def _get_list(self, path: str, progress: Progress = NO_PROGRESS, params: dict | None = None) -> list[dict]:
        resp = self._call("GET", path, params=params, read=True)
        if resp.status_code != 200:
            raise PbxError(
                f"{self.pbx} answered GET /rest{path} with HTTP {resp.status_code} "
                f"({_message(resp)}); check that login ID {self.settings['login_id']} has the administrator "
                "permission on the PBX."
            )
        data = self._json(resp, "GET", path)
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise PbxError(
                f"{self.pbx} answered GET /rest{path} with JSON that is not a list of "
                "objects; check that pbx.url points to a STARFACE PBX (version 6.4.2.12 or later)."
            )
        progress.advance()
        return data

    def _account(self, user: dict, admins: set[str], primary: dict) -> PbxAccount:
        uid = str(user.get("id"))
        return PbxAccount(
            id=uid,
            login_id=str(user.get("login") or ""),
            first_name=user.get("firstName") or "",
            last_name=user.get("familyName") or "",
            email=user.get("email") or "",
            is_admin=uid in admins,
            primary_internal_number=primary.get(uid),
        )

    def _inventory(self, phone_numbers: list[dict]) -> dict[str, PbxNumber]:
        """Internal and external numbers (other types, e.g. RESERVED or NT, are not assignable to users)."""
        fax_ids = self._fax_service_ids()
        numbers: dict[str, PbxNumber] = {}
        self._number_ids, self._numbers_by_id = {}, {}
        for pn in phone_numbers:
            kind = {"INTERNAL": INTERNAL, "EXTERNAL": EXTERNAL}.get(pn.get("type"))
            if kind is None or not pn.get("number"):
                continue
            text = pn["number"] if kind == INTERNAL else e164(pn)
            if text in numbers:
                log.warning(
                    "The PBX lists the number %s twice (ids %s, %s); keeping the first.",
                    text,
                    self._number_ids[text],
                    pn.get("id"),
                )
                continue
            owner, service = _owner(pn, fax_ids)
            numbers[text] = PbxNumber(type=kind, owner=owner, service=service)
            self._number_ids[text] = pn["id"]
            self._numbers_by_id[pn["id"]] = (text, kind)
        return numbers

    def _fax_service_ids(self) -> set[int]:
        """Every service whose name or label says fax (Software Fax, Fax2Mail, ...) and the configured one."""
        ids = {s.get("serviceId") for s in self._services or () if "fax" in _service_text(s)}
        configured = self.settings.get("call_services", {}).get("fax")
        if configured is not None:
            ids |= {s.get("serviceId") for s in self._services or () if _is_named(s, configured)}
        return ids

    def _admin_permissions(self) -> tuple[int, ...]:
        """The ids of pbx.admin_permissions (names or ids), else of the first default name the PBX has."""
        if self._admin_ids is not None:
            return self._admin_ids
        if self._permissions is None:
            self._permissions = self._get_list("/permissions")
        configured = self.settings.get("admin_permissions")
        if configured is None and self.settings.get("admin_permission"):
            configured = [self.settings["admin_permission"]]  # the older single-name setting
        if configured:
            found = [self._permission_id(wanted) for wanted in configured]
        else:
            ids = (self._permission_id(name, quiet=True) for name in ADMIN_PERMISSIONS)
            default = next((pid for pid in ids if pid is not None), None)
            found = [default if default is not None else self._permission_id(ADMIN_PERMISSIONS)]
        self._admin_ids = tuple(found)
        return self._admin_ids

    def _permission_id(self, wanted, quiet: bool = False) -> int | None:
        ids = sorted({p["id"] for p in self._permissions or () if _is_permission(p, wanted)})
        if len(ids) > 1:
            raise PbxError(
                f"{self.pbx} has {len(ids)} permissions named {wanted!r} (ids {', '.join(map(str, ids))}); "
                "set pbx.admin_permissions in the configuration to the ids of the ones that make an administrator."
            )
        if ids:
            return ids[0]
        if quiet:
            return None
        names = " or ".join(wanted) if isinstance(wanted, tuple) else repr(wanted)
        have = ", ".join(f"{p.get('id')} {p.get('permission')}" for p in self._permissions or ()) or "none"
        raise PbxError(
            f"{self.pbx} has no permission {names} (it has: {have}); set pbx.admin_permissions in the "
            "configuration to the names or ids of the permissions that make an administrator."
        )

    def read_user(self, user_id: str, fields: Collection[str] = SHAPE_FIELDS) -> dict:
        """One request per part the fields need: the user (names, e-mail, login ID), its permissions (role),
        its number assignments (numbers and their services), its number configuration (primary number)."""
        uid, wanted, out = int(user_id), set(fields), {}
        if wanted & set(USER_FIELDS):
            user = self._get_one(f"/users/{uid}", user_id)
            out |= {field: str(user.get(key) or "") for field, key in USER_FIELDS.items()}
        if "role" in wanted:
            admin = set(self._admin_permissions())
            held = {p.get("id") for p in self._get_list(f"/permissions/users/{uid}")}
            out["role"] = ROLE_ADMIN if held & admin else ROLE_USER
        if wanted & {"internal_numbers", "external_numbers", "fax_numbers"}:
            out |= self._user_numbers(uid)
        if "primary_internal_number" in wanted:
            config = self._get_one(f"/users/{uid}/phonenumberconfig", user_id)
            primary = self._numbers_by_id.get(config.get("primaryInternalNumberId"))
            out["primary_internal_number"] = primary[0] if primary else None
        return out

    def _user_numbers(self, uid: int) -> dict[str, list[str]]:
        self._load_inventory()
        fax_ids = self._fax_service_ids()
        out: dict[str, list[str]] = {"internal_numbers": [], "external_numbers": [], "fax_numbers": []}
        for assignment in self._get_list(f"/users/{uid}/phonenumberconfig/phonenumbers"):
            number, kind = self._numbers_by_id.get(assignment.get("phoneNumberId"), (None, None))
            if number is None:
                number, kind = f"PhoneNumber id {assignment.get('phoneNumberId')}", INTERNAL  # not in the inventory
            out["fax_numbers" if assignment.get("serviceId") in fax_ids else f"{kind}_numbers"].append(number)
        return {kind: sorted(numbers) for kind, numbers in out.items()}

    def _get_one(self, path: str, user_id: str) -> dict:
        resp = self._call("GET", path, read=True)
        if resp.status_code == 404:
            raise PbxError(f"{self.pbx} no longer has {self._who(user_id)}; run refresh and plan again.")
        data = self._json(self._checked(resp, "read", self._who(user_id), "GET", path), "GET", path)
        if not isinstance(data, dict):
            raise PbxError(f"{self.pbx} answered GET /rest{path} with JSON that is not an object.")
        return data

    # ---- doctor ----------------------------------------------------------------------------------------
    def profile(self) -> dict:
        """What doctor reports: a read-only first contact (GETs only), as data; output.py prints it."""
        users = self._get_list("/users")
        phone_numbers = self._get_list("/phonenumbers")
        self._services = self._get_list("/callservices")
        self._permissions = self._get_list("/permissions")
        problems = self.mapping_problems()
        numbers = self._inventory(phone_numbers)
        externals = sorted((pn for pn in phone_numbers if pn.get("type") == "EXTERNAL"), key=lambda pn: pn.get("id"))
        return {
            "pbx": self.pbx,
            "sign_in": self._auth.describe(),
            "version": self._version(),
            "services": self._mapped_services(),
            "permissions": self._mapped_permissions(),
            "numbers": _inventory_counts(phone_numbers),
            "examples": [{"fields": _number_fields(pn), "e164": e164(pn)} for pn in externals[:3]],
            "system_users": [found for u in users if (found := self._system_user(u))],
            "assumptions": self._assumptions(phone_numbers, problems),
            "warnings": short_external_numbers(numbers),
            "problems": problems,
        }

    def _version(self) -> str | None:
        resp = self._call("GET", "/server/version", read=True)  # "Server/Version" in the current API's sections
        data = _json_or_none(resp) if resp.status_code == 200 else None
        if isinstance(data, dict):
            data = data.get("version") or data.get("productVersion")
        return str(data) if isinstance(data, str | int | float) and data else None

    def _safe(self, find) -> int | tuple | None:
        try:
            return find()
        except PbxError:
            return None

    def _mapped_services(self) -> list[dict]:
        used = {self._safe(lambda: self._service_id("standard")): "standard numbers"}
        used[self._safe(lambda: self._service_id("fax"))] = "fax numbers"
        fax = self._fax_service_ids()
        return [
            {
                "id": s.get("serviceId"),
                "name": s.get("serviceName"),
                "label": s.get("label"),
                "mapped_to": used.get(s.get("serviceId")) or ("read as fax" if s.get("serviceId") in fax else ""),
            }
            for s in self._services or ()
        ]

    def _mapped_permissions(self) -> list[dict]:
        admin = set(self._safe(self._admin_permissions) or ())
        return [
            {
                "id": p.get("id"),
                "name": p.get("permission"),
                "description": p.get("description"),
                "mapped_to": "administrator" if p.get("id") in admin else "",
            }
            for p in self._permissions or ()
        ]

    def _system_user(self, user: dict) -> dict | None:
        """A user that looks like a system or API account: the tool's own login, no e-mail, a technical name."""
        login, name = str(user.get("login") or ""), f"{user.get('firstName') or ''} {user.get('familyName') or ''}"
        why = []
        if login == self.settings["login_id"]:
            why.append("the login ID adsync-plan signs in with")
        if SYSTEM_NAME.search(name):
            why.append("a technical name")
        if not user.get("email"):
            why.append("no e-mail address")
        if not why:
            return None
        return {"id": user.get("id"), "login": login, "name": name.strip(), "why": ", ".join(why)}

    def _assumptions(self, phone_numbers: list[dict], problems: list[str]) -> list[str]:
        found = []
        user_numbers = [pn for pn in phone_numbers if pn.get("assignedUserAccountId") is not None]
        blind = sum(1 for pn in user_numbers if pn.get("assignedServiceId") is None)
        if blind:
            found.append(
                f"{blind} of {len(user_numbers)} user numbers have no assignedServiceId; their call service is "
                "taken as standard (a fax number among them would read as a phone number)."
            )
        if not any(_is_named(s, "software fax2mail") or _is_named(s, "fax2mail") for s in self._services or ()):
            found.append("The PBX has no Software Fax2Mail call service; fax numbers get Software Fax (web UI only).")
        if "admin_permissions" not in self.settings and "admin_permission" not in self.settings:
            found.append(
                "Administrators are taken to be the holders of the permission marked administrator above; the "
                "vendor's PowerShell module grants ids 11, 25-30, 32 and 36: set pbx.admin_permissions if your "
                "PBX's administrators hold more."
            )
        if any(pn.get("type") == "EXTERNAL" for pn in phone_numbers):
            found.append(
                "External numbers are read as + nationalPrefix + localPrefix (without its leading 0) + number; "
                "check the examples above against the numbers you know."
            )
        return found

    # ---- writing ---------------------------------------------------------------------------------------
    def create_user(self, user) -> str:
        who = f"the new user {user.first_name} {user.last_name} (login ID {user.login_id})"
        body = {
            "login": user.login_id,
            "firstName": user.first_name,
            "familyName": user.last_name,
            "email": user.email,
            "language": "default",
            "password": initial_password(),
            "missedCallReport": False,
            "faxCoverPage": False,
            "faxEmailJournal": False,
        }
        try:
            resp = self._call("POST", "/users", body=body)
            cause = f"HTTP {resp.status_code}"
        except _Unanswered as err:
            resp, cause = None, str(err)
        if resp is not None and 400 <= resp.status_code < 500:
            raise self._refused(resp, "create", who, "POST", "/users")
        found = self._find_login(user.login_id)
        if resp is not None and resp.status_code == 201:
            if found is None:
                raise PbxError(
                    f"{self.pbx} confirmed the creation of {who} but lists no user with that "
                    "login ID; check the PBX's user list before running apply again."
                )
        elif found is None:
            raise PbxError(
                f"{self.pbx} did not confirm the creation of {who} ({cause}) and has no user "
                "with that login ID, so nothing was created; run plan and apply again."
            )
        elif (found.get("email") or "").lower() != user.email.lower():
            raise PbxError(
                f"{self.pbx} did not confirm the creation of {who} ({cause}), and the login ID now belongs "
                f"to user {found.get('id')} with another e-mail address; check that user on the PBX."
            )
        else:
            log.warning("The PBX did not confirm the creation of %s (%s), but it exists now; carrying on.", who, cause)
        uid = str(found["id"])
        self._names[uid] = f"login ID {user.login_id} ({user.first_name} {user.last_name})"
        return uid

    def _find_login(self, login: str) -> dict | None:
        """The user with this login ID: a search first, the full list if the search does not find it."""
        for params in ({"searchTerm": login}, None):
            for item in self._get_list("/users", params=params):
                if str(item.get("login")) == login:
                    return item
        return None

    def update_user(self, user_id: str, changes: Mapping[str, str]) -> None:
        who = self._who(user_id)
        path = f"/users/{int(user_id)}"
        resp = self._call("GET", path, read=True)
        if resp.status_code == 404:
            raise PbxError(f"{self.pbx} no longer has {who}; run refresh and plan again.")
        current = self._json(self._checked(resp, "read", who, "GET", path), "GET", path)
        body = dict(current)  # the full user: fields this tool does not manage are sent back unchanged
        body.pop("password", None)  # empty when fetched; left out, the password stays as it is
        for key, value in changes.items():
            body[USER_FIELDS[key]] = value
        what = " and ".join(FIELD_WORDS[key] for key in sorted(changes))
        self._write("PUT", path, body, f"change the {what} of", who)
        if "login_id" in changes and user_id in self._names:
            self._names[user_id] = self._names[user_id].replace(
                f"login ID {current.get('login')}", f"login ID {changes['login_id']}", 1
            )

    def set_admin(self, user_id: str, admin: bool) -> None:
        """Grant or revoke every administrator permission: one request per permission (a fixed, small number),
        each touching only that permission, so the user's other permissions stay as they are."""
        names = {p.get("id"): p.get("permission") for p in self._permissions or ()}
        for pid in self._admin_permissions():
            which = f"the administrator permission {names.get(pid)} ({pid})"
            doing = f"grant {which} to" if admin else f"revoke {which} of"
            params = {"granted": str(admin).lower()}
            self._write("PUT", f"/permissions/{pid}/users", [int(user_id)], doing, self._who(user_id), params=params)

    def assign_number(self, user_id: str, number: str, service: str) -> None:
        who = self._who(user_id)
        body = [
            {
                "accountId": int(user_id),
                "phoneNumberId": self._number_id(number),
                "serviceId": self._service_id(service),
            }
        ]
        path = f"/users/{int(user_id)}/phonenumberconfig/phonenumbers"
        self._write("POST", path, body, f"assign the number {number} ({service}) to", who)

    def release_number(self, user_id: str, number: str) -> None:
        path = f"/users/{int(user_id)}/phonenumberconfig/phonenumbers/{self._number_id(number)}"
        self._write("DELETE", path, None, f"remove the number {number} from", self._who(user_id))

    def change_service(self, user_id: str, number: str, service: str) -> None:
        """In place, as STARFACE's own client does (updateUserPhoneNumberServiceId): the number is never free."""
        body = [
            {
                "accountId": int(user_id),
                "phoneNumberId": self._number_id(number),
                "serviceId": self._service_id(service),
            }
        ]
        path = f"/users/{int(user_id)}/phonenumberconfig/phonenumbers"
        self._write("PUT", path, body, f"make the number {number} a {service} number of", self._who(user_id))

    def set_primary_internal_number(self, user_id: str, number: str | None) -> None:
        """Read the user's PhoneNumberConfig and write it back whole with the one field changed (no public
        source shows a partial body or a null accepted; STARFACE's PHP client carries a TODO about it). Never
        sends null: a primary number goes when its number is released, so None only checks that it is gone."""
        who, path = self._who(user_id), f"/users/{int(user_id)}/phonenumberconfig"
        config = self._get_one(path, user_id)
        if number is None:
            if config.get("primaryInternalNumberId") is not None:
                current = self._numbers_by_id.get(config["primaryInternalNumberId"], ("?",))[0]
                raise PbxError(
                    f"{self.pbx} still has {current} as the primary internal number of {who}, and the API cannot "
                    "clear it; release that number from the user on the PBX, then run plan again."
                )
            return
        body = {k: v for k, v in config.items() if v is not None}  # whole, without nulls
        body["primaryInternalNumberId"] = self._number_id(number)
        self._write("PUT", path, body, f"make {number} the primary internal number of", who)

    def _write(self, method: str, path: str, body, doing: str, who: str, params: dict | None = None) -> None:
        try:
            resp = self._call(method, path, body=body, params=params)
        except _Unanswered as err:
            raise PbxError(
                f"{self.pbx} did not confirm that it could {doing} {who} ({err}); "
                "the next refresh shows whether it did, so run plan and apply again."
            ) from None
        self._checked(resp, doing, who, method, path)

    def _checked(self, resp: requests.Response, doing: str, who: str, method: str, path: str) -> requests.Response:
        if 200 <= resp.status_code < 300:
            return resp
        raise self._refused(resp, doing, who, method, path)

    def _refused(self, resp: requests.Response, doing: str, who: str, method: str, path: str) -> PbxError:
        return PbxError(
            f"{self.pbx} refused to {doing} {who}: {_message(resp)} (HTTP {resp.status_code} "
            f"on {method} /rest{path}); fix the cause on the PBX or in the directory, then run plan again."
        )

    def _who(self, user_id: str) -> str:
        name = self._names.get(str(user_id))
        return f"user {user_id}, {name}" if name else f"user {user_id}"

    def _load_inventory(self) -> None:
        """The number inventory, when no read() loaded it yet (a provider used for writes only)."""
        with self._lock:
            self._load_inventory_once()

    def _load_inventory_once(self) -> None:
        if self._number_ids is None:
            self._services = self._services or self._get_list("/callservices")
            self._inventory(self._get_list("/phonenumbers"))

    def _number_id(self, number: str) -> int:
        self._load_inventory()
        try:
            return self._number_ids[number]
        except KeyError:
            raise PbxError(
                f"The number {number} is not in the inventory of the STARFACE PBX at {self.url}; "
                "run refresh and plan again."
            ) from None

    def _service_id(self, kind: str) -> int:
        """The call service for standard or fax numbers: pbx.call_services.<kind> (a name or an id), else the
        first of SERVICE_NAMES[kind] the PBX has (fax: Software Fax2Mail before Software Fax). Two services
        answering to the chosen name are ambiguous: the configuration must then give the id."""
        if self._services is None:
            self._services = self._get_list("/callservices")
        configured = self.settings.get("call_services", {}).get(kind)
        wanted = (configured,) if configured is not None else SERVICE_NAMES[kind]
        for name in wanted:
            ids = sorted({s["serviceId"] for s in self._services if _is_named(s, name)})
            if len(ids) == 1:
                return ids[0]
            if ids:
                raise PbxError(
                    f"{self.pbx} has {len(ids)} call services named {name!r} (ids {', '.join(map(str, ids))}); "
                    f"set pbx.call_services.{kind} in the configuration to the id of the one for {kind} numbers."
                )
        have = ", ".join(f"{s.get('serviceId')} {s.get('serviceName')}" for s in self._services) or "none"
        raise PbxError(
            f"{self.pbx} has no call service {' or '.join(map(repr, wanted))} (it has: {have}); "
            f"set pbx.call_services.{kind} in the configuration to the name or id of its {kind} call service."
        )

    def mapping_problems(self) -> list[str]:
        """Each mapping apply needs (standard and fax call service, administrator permissions) that is missing
        or ambiguous on this PBX, as the sentence plan and doctor both say."""
        problems = []
        for find in (lambda: self._service_id("standard"), lambda: self._service_id("fax"), self._admin_permissions):
            try:
                find()
            except PbxError as err:
                problems.append(str(err))
        return problems

    # ---- the session -----------------------------------------------------------------------------------
    def close(self) -> None:
        if self._session is None:
            return
        try:
            self._auth.sign_out()
        except (requests.RequestException, PbxError) as err:
            log.debug("sign-out from %s failed: %s", self.url, type(err).__name__)
        self._session.close()
        self._session = None

    def _call(self, method: str, path: str, body=None, params=None, read: bool = False) -> requests.Response:
        """One request with the token; a new login and one repeat on 401; reads retried on 5xx and
        connection errors. Returns the response (any status below 500, or a 5xx when retries ran out);
        raises `_Unanswered` when no answer came."""
        attempt, relogged = 0, False
        while True:
            try:
                resp = self._send(method, path, body, params)
            except requests.exceptions.SSLError as err:
                raise self._tls_error(err) from None
            except requests.RequestException as err:  # no answer, or one cut off (ChunkedEncodingError)
                if read and attempt < self.retries:
                    attempt = self._pause(attempt, method, path, type(err).__name__)
                    continue
                if read:
                    raise PbxError(
                        f"{self.pbx} did not answer {method} /rest{path} ({self._transport_cause(err)}) after "
                        f"{attempt + 1} attempts; try again later or check the PBX."
                    ) from None
                raise _Unanswered(self._transport_cause(err)) from None
            if resp.status_code == 401 and not relogged:
                # The token expired (4 h) or was revoked; the request was not carried out, so repeat it once.
                log.debug("%s /rest%s answered 401; logging in again", method, path)
                with self._lock:
                    self._auth.forget()
                relogged = True
                continue
            if resp.status_code >= 500 and read and attempt < self.retries:
                attempt = self._pause(attempt, method, path, f"HTTP {resp.status_code}")
                continue
            if resp.status_code == 401:
                raise PbxError(
                    f"{self.pbx} refused {method} /rest{path} for login ID {self.settings['login_id']} "
                    f"even after a new login ({_message(resp)}); give that user the administrator permission "
                    "on the PBX."
                )
            if resp.status_code >= 500 and read:
                raise PbxError(
                    f"{self.pbx} answered {method} /rest{path} with HTTP {resp.status_code} "
                    f"({_message(resp)}) {self.retries + 1} times; try again later or check the PBX's logs."
                )
            if resp.status_code >= 500:
                raise _Unanswered(f"HTTP {resp.status_code}: {_message(resp)}")
            return resp

    def _pause(self, attempt: int, method: str, path: str, why: str) -> int:
        delay = self.backoff * (2**attempt)
        log.info("%s /rest%s failed (%s); retrying in %.1f s", method, path, why, delay)
        time.sleep(delay)
        return attempt + 1

    def _send(self, method: str, path: str, body, params, auth: bool = True) -> requests.Response:
        with self._lock:  # one sign-in, however many threads find no token
            session = self._open()
            headers = self._auth.headers() if auth else {}
        started = time.perf_counter()
        resp = session.request(
            method,
            f"{self.url}/rest{path}",
            data=orjson.dumps(body) if body is not None else None,
            params=params,
            headers=headers,
            timeout=self.timeout,
        )
        log.debug("%s /rest%s -> %d (%.3f s)", method, path, resp.status_code, time.perf_counter() - started)
        return resp

    def _open(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            session.headers.update({"X-Version": "2", "Content-Type": "application/json", "Accept": "application/json"})
            session.verify = self._verify()
            # requests reads the proxy variables (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE) again for every
            # request, about 1 ms each: minutes of a large apply. They have one answer for one PBX: read once.
            found = session.merge_environment_settings(f"{self.url}/rest", {}, None, session.verify, None)
            session.proxies, session.verify, session.trust_env = found["proxies"], found["verify"], False
            adapter = requests.adapters.HTTPAdapter(pool_maxsize=self.POOL)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._session = session
        return self._session

    def _verify(self) -> bool | str:
        ca_file = self.settings.get("ca_file")
        if ca_file:
            path = (self.base_dir / ca_file).resolve()
            if not path.is_file():
                raise PbxError(f"pbx.ca_file: the CA certificate file {path} does not exist; fix the path.")
            return str(path)
        if self.settings.get("verify_tls", True) is False:
            log.warning("TLS certificate verification for the PBX at %s is off (pbx.verify_tls: false).", self.url)
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # said once above, not per request
            return False
        return True

    def _json(self, resp: requests.Response, method: str, path: str):
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            snippet = resp.text[:60].strip().replace("\n", " ") or "an empty body"
            raise PbxError(
                f"{self.pbx} answered {method} /rest{path} with something that is not JSON "
                f"({snippet!r}); check that pbx.url points to the PBX itself, not to a proxy or a web page."
            ) from None

    def _tls_error(self, err: Exception) -> PbxError:
        reason = "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(err) else "TLS handshake failed"
        return PbxError(
            f"The TLS certificate of the STARFACE PBX at {self.url} could not be verified ({reason}); set "
            "pbx.ca_file to the certificate of the CA that signed it."
        )

    def _transport_cause(self, err: Exception) -> str:
        if isinstance(err, requests.Timeout):
            return f"no answer within {self.timeout:g} s (pbx.timeout)"
        text = str(err)
        if "Connection refused" in text:
            return "the connection was refused; check pbx.url and that the PBX is running"
        if "Name or service not known" in text or "nodename nor servname" in text:
            return "the host name does not resolve; check pbx.url"
        if "RemoteDisconnected" in text or "Connection aborted" in text or "reset" in text:
            return "the connection was closed without an answer"
        return "the network connection failed; check pbx.url and the network"


PASSWORD_CLASSES = ("ABCDEFGHJKLMNPQRSTUVWXYZ", "abcdefghijkmnopqrstuvwxyz", "23456789", "!#%+-.:=?@_")


def initial_password(length: int = 24) -> str:
    """A random password nobody knows that meets a typical policy: upper and lower case, a digit and a special
    character, 16 characters or more (a PBX with such a policy would refuse a create otherwise)."""
    alphabet = "".join(PASSWORD_CLASSES)
    chars = [secrets.choice(group) for group in PASSWORD_CLASSES]
    chars += [secrets.choice(alphabet) for _ in range(length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


# Countries whose national numbers keep their leading zero in E.164 (no trunk prefix): Italy, San Marino,
# Vatican City (+39 06 ... for Rome).
KEEPS_LEADING_ZERO = frozenset({"39", "378", "379"})


def e164(pn: Mapping) -> str:
    """An EXTERNAL PhoneNumber as E.164: "+" country code (nationalPrefix) + area code without its trunk
    prefix (localPrefix; Italy's leading zero stays) + subscriber number (number). A number already written
    with "+" or "00" is kept."""
    number = "".join(ch for ch in str(pn.get("number") or "") if ch.isdigit())
    raw = str(pn.get("number") or "").strip()
    if raw.startswith("+"):
        return "+" + number
    if raw.startswith("00"):
        return "+" + number[2:]
    country = "".join(ch for ch in str(pn.get("nationalPrefix") or "") if ch.isdigit()).removeprefix("00")
    area = "".join(ch for ch in str(pn.get("localPrefix") or "") if ch.isdigit())
    if country not in KEEPS_LEADING_ZERO:
        area = area.lstrip("0")  # the trunk prefix: "07022" is +49 7022
    if not country:
        log.warning("External number %s (id %s) has no country code; kept as the PBX writes it.", raw, pn.get("id"))
        return raw
    return f"+{country}{area}{number}"


def _owner(pn: Mapping, fax_ids: set[int]) -> tuple[str | None, str | None]:
    """(owner, service) of a PhoneNumber: a user id, or group:/module:/service: for non-user owners. An
    owned number's service is fax when assigned with a fax call service, else standard (as the file PBX)."""
    service_id = pn.get("assignedServiceId")
    if pn.get("assignedUserAccountId") is not None:
        owner = str(pn["assignedUserAccountId"])
    elif pn.get("assignedGroupAccountId") is not None:
        owner = f"group:{pn['assignedGroupAccountId']}"
    elif pn.get("assignedModuleInstanceId") is not None:
        owner = f"module:{pn['assignedModuleInstanceId']}"
    elif service_id is not None:
        owner = f"service:{service_id}"  # e.g. a conference room: a service that owns the number itself
    else:
        return None, None
    return owner, SERVICE_FAX if service_id in fax_ids else SERVICE_STANDARD


def _members(group: Mapping) -> tuple[str, ...]:
    """The PBX user ids of a Group's assignableUsers marked assigned, sorted."""
    return tuple(sorted(str(u.get("id")) for u in group.get("assignableUsers") or () if u.get("assigned")))


def _service_names(service: Mapping) -> set[str]:
    return {str(service.get("serviceName") or "").lower(), str(service.get("label") or "").lower()}


def _json_or_none(resp: requests.Response):
    try:
        return orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return None


def _inventory_counts(phone_numbers: list[dict]) -> dict[str, dict[str, int]]:
    """PhoneNumber type -> how many, and how many of them are assigned to a user."""
    out: dict[str, dict[str, int]] = {}
    for pn in phone_numbers:
        entry = out.setdefault(str(pn.get("type")), {"total": 0, "users": 0})
        entry["total"] += 1
        entry["users"] += pn.get("assignedUserAccountId") is not None
    return dict(sorted(out.items()))


def _number_fields(pn: Mapping) -> str:
    keys = ("exitCode", "nationalPrefix", "localPrefix", "number")
    return ", ".join(f"{k} {pn.get(k)!s}" for k in keys if pn.get(k) not in (None, ""))


def _is_permission(permission: Mapping, wanted) -> bool:
    if isinstance(wanted, int):
        return permission.get("id") == wanted
    return str(permission.get("permission", "")).lower() == str(wanted).lower()


def _is_named(service: Mapping, wanted) -> bool:
    """A call service by id (an int) or by name or label (case-insensitive)."""
    if isinstance(wanted, int):
        return service.get("serviceId") == wanted
    return str(wanted).lower() in _service_names(service)


def _service_text(service: Mapping) -> str:
    return " ".join(_service_names(service))


def _message(resp: requests.Response) -> str:
    """The PBX's own words: {"code", "message"} JSON, a JSON string, or plain text."""
    try:
        data = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        data = resp.text
    if isinstance(data, dict):
        data = data.get("message") or data.get("error") or ""
    text = " ".join(str(data).split())[:200].rstrip(".")
    if text[:2].istitle():  # "The login ID ..." reads as part of our sentence: "refused ...: the login ID ..."
        text = text[0].lower() + text[1:]
    return text or resp.reason or "no reason given"
