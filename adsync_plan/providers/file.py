"""The embedded PBX (`pbx.type: file`, SPEC 9.5): a whole PBX in one file, refusing what a STARFACE refuses.

Changes are made in memory and written atomically by `flush()`, which apply calls after its last step, also
when a step failed: what was done before a failure is on disk, as it would be on a real PBX.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from pathlib import Path

from adsync_plan import schemas
from adsync_plan.errors import InputError, PbxError
from adsync_plan.files import read_document, write_document, yaml_line_finder
from adsync_plan.model import (
    EDITABLE_FIELDS,
    GROUP_NAME_MAX,
    NO_PROGRESS,
    SERVICE_FAX,
    SERVICE_STANDARD,
    SHAPE_FIELDS,
    PbxAccount,
    PbxGroup,
    PbxNumber,
    PbxState,
    PhoneUser,
    Progress,
)
from adsync_plan.providers.base import Provider


class FileProvider(Provider):
    buffered = True  # nothing is on disk before flush()

    def __init__(self, settings: Mapping, base_dir: Path, licenses: int | None = None):
        super().__init__(settings, base_dir, licenses)
        self.path = (base_dir / settings["path"]).resolve()
        self.users: dict[str, dict] = {}
        self.numbers: dict[str, dict] = {}
        self.logins: dict[str, str] = {}  # login ID -> user id
        self.owned: dict[str, set[str]] = {}  # user id -> numbers it owns (read_user without a scan)
        self.groups: dict[str, dict] = {}  # group id -> {"name", "members": [user ids]}; ids shared with users
        self._loaded = False
        self._dirty = False
        self._next_id = 1

    def describe(self) -> dict:
        return {"type": "file", "path": str(self.settings["path"])}

    # -- reading ----------------------------------------------------------------------------------------

    def _load(self) -> None:
        if self._loaded:
            return
        data, tree = read_document(self.path, "the PBX file")
        schemas.validate(data, "pbx-file", str(self.path), yaml_line_finder(tree))
        for n, user in enumerate(data["users"]):
            self._check_new_user(str(user["id"]), user["login_id"], where=f"users.{n}")
            self.logins[user["login_id"]] = str(user["id"])
            self.users[str(user["id"])] = {
                "is_admin": False,
                "primary_internal_number": None,
                **user,
                "id": str(user["id"]),
            }
        for n, group in enumerate(data.get("groups", ())):
            self._load_group(group, f"groups.{n}")
        for n, entry in enumerate(data["numbers"]):
            self._load_number(entry, f"numbers.{n}")
        self._next_id = next_id(self.users, self.groups, self.numbers)
        self._loaded = True

    def _load_group(self, group: dict, where: str) -> None:
        group_id = str(group["id"])
        if group_id in self.users or group_id in self.groups:
            raise InputError(f"{self.path}: {where}.id: id {group_id} appears twice; user and group ids are unique.")
        try:
            self._check_group_name(group["name"], None)
        except PbxError as err:
            raise InputError(f"{self.path}: {where}.name: {err}") from None
        for member in map(str, group.get("members", ())):
            if member not in self.users:
                raise InputError(f"{self.path}: {where}.members: user {member} does not exist.")
        self.groups[group_id] = {"name": group["name"], "members": sorted(map(str, group.get("members", ())))}

    def _check_new_user(self, user_id: str, login_id: str, where: str) -> None:
        if user_id in self.users:
            raise InputError(f"{self.path}: {where}.id: user id {user_id} appears twice; ids must be unique.")
        if login_id in self.logins:
            raise InputError(f"{self.path}: {where}.login_id: login ID {login_id} appears twice; it must be unique.")

    def _load_number(self, entry: dict, where: str) -> None:
        number = entry["number"]
        if number in self.numbers:
            raise InputError(f"{self.path}: {where}: number {number} appears twice in the inventory.")
        owner = entry.get("owner")
        owner = None if owner is None else str(owner)
        if owner is not None and ":" not in owner and owner not in self.users:
            raise InputError(f"{self.path}: {where}.owner: user {owner} does not exist.")
        service = entry.get("service") or ("standard" if owner else None)
        self.numbers[number] = {"type": entry["type"], "owner": owner, "service": service}
        if owner is not None:
            self.owned.setdefault(owner, set()).add(number)

    def read(self, progress: Progress = NO_PROGRESS) -> PbxState:
        self._load()
        progress.start("Reading the PBX file", len(self.users))
        accounts = [
            PbxAccount(
                id=u["id"],
                login_id=u["login_id"],
                first_name=u["first_name"],
                last_name=u["last_name"],
                email=u["email"],
                is_admin=bool(u.get("is_admin")),
                primary_internal_number=u.get("primary_internal_number"),
            )
            for u in self.users.values()
        ]
        numbers = {n: PbxNumber(v["type"], v["owner"], v["service"]) for n, v in self.numbers.items()}
        progress.advance(len(accounts))
        progress.done()
        state = PbxState.from_parts(accounts, numbers)
        return replace(state, groups={gid: self.read_group(gid) for gid in self.groups}) if self.groups else state

    def read_group(self, group_id: str) -> PbxGroup:
        group = self._group(group_id)
        return PbxGroup(
            group["name"], tuple(sorted(group["members"])), tuple(sorted(self.owned.get(f"group:{group_id}", ())))
        )

    def read_user(self, user_id: str, fields: Collection[str] = SHAPE_FIELDS) -> dict:
        u = self._user(user_id)
        mine: dict[str, list[str]] = {"internal_numbers": [], "external_numbers": [], "fax_numbers": []}
        for number in self.owned.get(user_id, ()):
            entry = self.numbers[number]
            mine["fax_numbers" if entry["service"] == SERVICE_FAX else f"{entry['type']}_numbers"].append(number)
        return {
            **{f: u[f] for f in EDITABLE_FIELDS},
            "role": "admin" if u.get("is_admin") else "user",
            "primary_internal_number": u.get("primary_internal_number"),
            **{kind: sorted(numbers) for kind, numbers in mine.items()},
        }

    # -- writing ----------------------------------------------------------------------------------------

    def _user(self, user_id: str) -> dict:
        self._load()
        if user_id not in self.users:
            raise PbxError(f"PBX user {user_id} does not exist on the PBX.")
        return self.users[user_id]

    def _login_taken(self, login_id: str, by: str | None) -> None:
        if not login_id.isdigit():
            raise PbxError(f"the PBX refused login ID {login_id!r}: login IDs are digits only.")
        holder = self.logins.get(login_id)
        if holder is not None and holder != by:
            raise PbxError(f"the PBX refused login ID {login_id}: it belongs to PBX user {holder}.")

    def create_user(self, user: PhoneUser) -> str:
        self._load()
        if self.licenses is not None and len(self.users) >= self.licenses:
            raise PbxError(f"the PBX refused to create {user.login_id}: all {self.licenses} user licences are used.")
        self._login_taken(user.login_id, None)
        new_id, self._next_id = str(self._next_id), self._next_id + 1  # counted once at load: creates stay O(1)
        self.users[new_id] = {
            "id": new_id,
            "login_id": user.login_id,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "email": user.email,
            "is_admin": False,
            "primary_internal_number": None,
        }
        self.logins[user.login_id] = new_id
        self._dirty = True
        return new_id

    def update_user(self, user_id: str, changes: Mapping[str, str]) -> None:
        record = self._user(user_id)
        if "login_id" in changes:
            self._login_taken(changes["login_id"], user_id)
            del self.logins[record["login_id"]]
            self.logins[changes["login_id"]] = user_id
        record.update({k: v for k, v in changes.items() if k in EDITABLE_FIELDS})
        self._dirty = True

    def set_admin(self, user_id: str, admin: bool) -> None:
        self._user(user_id)["is_admin"] = admin
        self._dirty = True

    def assign_number(self, user_id: str, number: str, service: str) -> None:
        self._user(user_id)
        entry = self.numbers.get(number)
        if entry is None:
            raise PbxError(f"the PBX refused number {number} for user {user_id}: it is not in the PBX's inventory.")
        if entry["owner"] not in (None, user_id):
            raise PbxError(f"the PBX refused number {number} for user {user_id}: it belongs to {entry['owner']}.")
        entry.update(owner=user_id, service=service)
        self.owned.setdefault(user_id, set()).add(number)
        self._dirty = True

    def change_service(self, user_id: str, number: str, service: str) -> None:
        entry = self.numbers.get(number)
        if entry is None or entry["owner"] != user_id:
            raise PbxError(f"the PBX refused to change the service of number {number}: user {user_id} does not own it.")
        entry["service"] = service
        self._dirty = True

    def release_number(self, user_id: str, number: str) -> None:
        record = self._user(user_id)
        entry = self.numbers.get(number)
        if entry is None or entry["owner"] != user_id:
            raise PbxError(f"the PBX refused to release number {number}: user {user_id} does not own it.")
        entry.update(owner=None, service=None)
        self.owned.get(user_id, set()).discard(number)
        if record.get("primary_internal_number") == number:
            record["primary_internal_number"] = None
        self._dirty = True

    def set_primary_internal_number(self, user_id: str, number: str | None) -> None:
        record = self._user(user_id)
        if number is not None:
            entry = self.numbers.get(number)
            if entry is None or entry["owner"] != user_id or entry["type"] != "internal":
                raise PbxError(
                    f"the PBX refused primary number {number} for user {user_id}: the user does not own that "
                    "internal number."
                )
        record["primary_internal_number"] = number
        self._dirty = True

    # -- groups ---------------------------------------------------------------------------------------

    def _group(self, group_id: str) -> dict:
        self._load()
        if group_id not in self.groups:
            raise PbxError(f"PBX group {group_id} does not exist on the PBX.")
        return self.groups[group_id]

    def _check_group_name(self, name: str, group_id: str | None) -> None:
        if not name or len(name) > GROUP_NAME_MAX:
            raise PbxError(f"the PBX refused the group name {name!r}: a name has 1 to {GROUP_NAME_MAX} characters.")
        for other, group in self.groups.items():
            if other != group_id and group["name"].lower() == name.lower():
                raise PbxError(f"the PBX refused the group name {name!r}: PBX group {other} has it.")

    def create_group(self, name: str) -> str:
        self._load()
        self._check_group_name(name, None)
        new_id, self._next_id = str(self._next_id), self._next_id + 1
        self.groups[new_id] = {"name": name, "members": []}
        self._dirty = True
        return new_id

    def rename_group(self, group_id: str, name: str) -> None:
        group = self._group(group_id)
        self._check_group_name(name, group_id)
        group["name"] = name
        self._dirty = True

    def set_group_members(self, group_id: str, member_ids: Collection[str]) -> None:
        group = self._group(group_id)
        missing = sorted(m for m in member_ids if m not in self.users)
        if missing:
            raise PbxError(
                f"the PBX refused the members of group {group_id} ({group['name']}): no user {', '.join(missing)}."
            )
        group["members"] = sorted(set(member_ids))
        self._dirty = True

    def assign_group_number(self, group_id: str, number: str) -> None:
        group = self._group(group_id)
        owner = f"group:{group_id}"
        entry = self.numbers.get(number)
        if entry is None:
            raise PbxError(f"the PBX refused number {number} for group {group['name']}: it is not in the inventory.")
        if entry["owner"] not in (None, owner):
            raise PbxError(
                f"the PBX refused number {number} for group {group['name']}: it belongs to {entry['owner']}."
            )
        entry.update(owner=owner, service=SERVICE_STANDARD)
        self.owned.setdefault(owner, set()).add(number)
        self._dirty = True

    def release_group_number(self, group_id: str, number: str) -> None:
        group = self._group(group_id)
        owner = f"group:{group_id}"
        entry = self.numbers.get(number)
        if entry is None or entry["owner"] != owner:
            raise PbxError(f"the PBX refused to release number {number}: group {group['name']} does not own it.")
        entry.update(owner=None, service=None)
        self.owned[owner].discard(number)
        self._dirty = True

    def flush(self) -> None:
        if self._dirty:
            write_document(self.path, self.document())
            self._dirty = False

    def document(self) -> dict:
        users = [{**u, "id": int(u["id"])} for u in sorted(self.users.values(), key=lambda u: int(u["id"]))]
        numbers = [
            {"number": n, "type": v["type"], "owner": _owner_out(v["owner"]), "service": v["service"]}
            for n, v in sorted(self.numbers.items(), key=lambda item: (item[1]["type"], item[0]))
        ]
        doc = {"format_version": 1, "users": users, "numbers": numbers}
        if self.groups:  # only then: a PBX file without groups keeps its bytes
            doc["groups"] = [
                {"id": int(gid), "name": g["name"], "members": sorted(int(m) for m in g["members"])}
                for gid, g in sorted(self.groups.items(), key=lambda item: int(item[0]))
            ]
        return doc


def _owner_out(owner: str | None):
    return int(owner) if owner is not None and owner.isdigit() else owner


def next_id(users, groups, numbers) -> int:
    """Users and groups share one id space, as on a STARFACE: a new one gets max(all ids) + 1, counting a group
    the inventory names as an owner (`group:7`) even when the file does not list it."""
    owners = (v["owner"].removeprefix("group:") for v in numbers.values() if (v["owner"] or "").startswith("group:"))
    ids = (*users, *groups, *owners)
    return max((int(i) for i in ids if i.isdigit()), default=0) + 1
