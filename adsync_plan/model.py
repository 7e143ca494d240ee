"""The data that flows through the pipeline: plain frozen dataclasses, no I/O.

The same `PhoneUser` shape (SPEC 5.4) stands on both sides of the diff: a desired user rendered from the
directory and an actual user read from the PBX.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

ROLE_USER = "user"
ROLE_ADMIN = "admin"
SERVICE_STANDARD = "standard"
SERVICE_FAX = "fax"
INTERNAL = "internal"
# The override a plan records when it was made with --allow-mass-orphan (R13); apply honours it.
OVERRIDE_MASS_ORPHAN = "allow-mass-orphan"
EXTERNAL = "external"
# The longest group name a STARFACE takes (issue 16); longer names are an error of the configuration.
GROUP_NAME_MAX = 64
GROUP_ACTIONS = ("create", "update", "orphan")
GROUP_FIELDS = ("name", "members", "numbers")

# The fields a PBX user update sets (role and numbers have calls of their own).
EDITABLE_FIELDS = ("login_id", "first_name", "last_name", "email")
# The fields of the comparable shape, in the order people read them.
SHAPE_FIELDS = (
    "login_id",
    "first_name",
    "last_name",
    "email",
    "role",
    "primary_internal_number",
    "internal_numbers",
    "external_numbers",
    "fax_numbers",
)


def normalise_dn(dn: str) -> str:
    """Lower case, no blanks around the separating commas: the form group DNs are compared in."""
    dn = dn.lower().strip()
    return ",".join(part.strip() for part in dn.split(",")) if ", " in dn or " ," in dn else dn


@dataclass(frozen=True, slots=True)
class DirectoryUser:
    """One user as a source read it, attributes normalised (SPEC 4); values are raw strings.

    `groups` holds lower-cased group identifiers (DNs for AD and LDIF, object ids for Entra ID) and contains
    at least every configured scope group the user belongs to: transitively when nested groups are on.
    `phones` keeps the SPEC 4 order: the single-valued telephoneNumber first, then otherTelephone.
    """

    source_id: str
    dn: str
    account: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phones: tuple[str, ...] = ()
    faxes: tuple[str, ...] = ()
    groups: frozenset[str] = frozenset()
    enabled: bool = True

    def __reduce__(self):  # pickled as one tuple (from the process that reads the directory): 2x faster
        return (
            DirectoryUser,
            (
                self.source_id,
                self.dn,
                self.account,
                self.first_name,
                self.last_name,
                self.email,
                self.phones,
                self.faxes,
                self.groups,
                self.enabled,
            ),
        )


@dataclass(frozen=True)
class Directory:
    """What a source returns: every user it read, plus how to name its attributes in diagnostics."""

    users: Iterable[DirectoryUser]  # a tuple; an iterator, read once, when it streams from another process
    # normalised field (account, first_name, ..., phones, faxes) -> source attribute name(s), for messages
    attributes: Mapping[str, str]
    # what the desired state records as its source, e.g. {"type": "ldif", "path": "directory.ldif"}
    origin: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class PhoneUser:
    """The comparable shape of SPEC 5.4. Number lists are sorted tuples, numbers normalised."""

    login_id: str
    first_name: str
    last_name: str
    email: str
    role: str = ROLE_USER
    primary_internal_number: str | None = None
    internal_numbers: tuple[str, ...] = ()
    external_numbers: tuple[str, ...] = ()
    fax_numbers: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "login_id": self.login_id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
            "role": self.role,
            "primary_internal_number": self.primary_internal_number,
            "internal_numbers": list(self.internal_numbers),
            "external_numbers": list(self.external_numbers),
            "fax_numbers": list(self.fax_numbers),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> PhoneUser:
        return cls(
            login_id=data["login_id"],
            first_name=data["first_name"],
            last_name=data["last_name"],
            email=data["email"],
            role=data.get("role", ROLE_USER),
            primary_internal_number=data.get("primary_internal_number"),
            internal_numbers=tuple(sorted(data.get("internal_numbers", ()))),
            external_numbers=tuple(sorted(data.get("external_numbers", ()))),
            fax_numbers=tuple(sorted(data.get("fax_numbers", ()))),
        )

    def numbers(self) -> set[str]:
        return {*self.internal_numbers, *self.external_numbers, *self.fax_numbers}

    def changed(self, **values) -> PhoneUser:
        return replace(self, **values)


@dataclass(frozen=True, slots=True)
class PbxAccount:
    """A PBX user as a provider reads it, before its numbers are attached from the inventory."""

    id: str
    login_id: str
    first_name: str
    last_name: str
    email: str
    is_admin: bool = False
    primary_internal_number: str | None = None


@dataclass(frozen=True, slots=True)
class PbxNumber:
    """One number of the PBX's inventory. `owner` is a PBX user id, a non-user owner such as "group:5",
    or None when free; `service` is the call service it is assigned with (standard or fax)."""

    type: str
    owner: str | None = None
    service: str | None = None

    def to_dict(self) -> dict:
        return {"type": self.type, "owner": self.owner, "service": self.service}


@dataclass(frozen=True, slots=True)
class PbxGroup:
    """A STARFACE group (a hunt group), the same shape on both sides of the diff, as PhoneUser is.

    `members` are accounts in the desired state and PBX user ids in a PbxState; `numbers` are normalised
    numbers the group owns (in a PbxState: the inventory's numbers whose owner is `group:<id>`). Both sorted.
    """

    name: str
    members: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"name": self.name, "members": list(self.members), "numbers": list(self.numbers)}

    @classmethod
    def from_dict(cls, data: Mapping) -> PbxGroup:
        return cls(
            name=data["name"],
            members=tuple(sorted(data.get("members", ()))),
            numbers=tuple(sorted(data.get("numbers", ()))),
        )


@dataclass(frozen=True)
class PbxState:
    """The PBX as read: users keyed by PBX user id (shape + admin flag), the number inventory, and the
    groups keyed by PBX group id (their numbers are also in the inventory, owned by `group:<id>`)."""

    users: Mapping[str, PhoneUser]
    admins: frozenset[str]
    numbers: Mapping[str, PbxNumber]
    groups: Mapping[str, PbxGroup] = field(default_factory=dict)

    @classmethod
    def from_parts(cls, accounts: Iterable[PbxAccount], numbers: Mapping[str, PbxNumber]) -> PbxState:
        """Attach each account's numbers (by owner and service) to build the comparable shapes."""
        owned: dict[str, dict[str, list[str]]] = {}
        for number, info in numbers.items():
            if info.owner is None:
                continue
            kind = "fax_numbers" if info.service == SERVICE_FAX else f"{info.type}_numbers"
            owned.setdefault(info.owner, {}).setdefault(kind, []).append(number)
        users, admins = {}, set()
        for acc in accounts:
            mine = owned.get(acc.id, {})
            users[acc.id] = PhoneUser(
                login_id=acc.login_id,
                first_name=acc.first_name,
                last_name=acc.last_name,
                email=acc.email,
                role=ROLE_ADMIN if acc.is_admin else ROLE_USER,
                primary_internal_number=acc.primary_internal_number,
                internal_numbers=tuple(sorted(mine.get("internal_numbers", ()))),
                external_numbers=tuple(sorted(mine.get("external_numbers", ()))),
                fax_numbers=tuple(sorted(mine.get("fax_numbers", ()))),
            )
            if acc.is_admin:
                admins.add(acc.id)
        return cls(users=users, admins=frozenset(admins), numbers=dict(numbers))


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A finding with a stable code. `source` names the directory entry and attribute at fault."""

    severity: str  # error | warning | info
    code: str
    address: str
    message: str
    source: Mapping[str, str] | None = None

    def to_dict(self) -> dict:
        out = {"severity": self.severity, "code": self.code, "address": self.address, "message": self.message}
        if self.source:
            out["source"] = dict(self.source)
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> Diagnostic:
        return cls(data["severity"], data["code"], data["address"], data["message"], data.get("source"))


@dataclass(frozen=True, slots=True)
class Action:
    """One change of one PBX user. `before`/`after` are 5.4 shapes (None where the user does not exist)."""

    address: str
    action: str  # create | update | orphan
    pbx_user_id: str | None
    before: PhoneUser | None
    after: PhoneUser
    fields: tuple[str, ...] = ()
    source_id: str | None = None

    def to_dict(self) -> dict:
        out = {
            "address": self.address,
            "action": self.action,
            "pbx_user_id": self.pbx_user_id,
            "before": self.before.to_dict() if self.before else None,
            "after": self.after.to_dict(),
        }
        if self.action != "create":
            out["fields"] = list(self.fields)
        if self.source_id:
            out["source_id"] = self.source_id
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> Action:
        before = data.get("before")
        return cls(
            address=data["address"],
            action=data["action"],
            pbx_user_id=data.get("pbx_user_id"),
            before=PhoneUser.from_dict(before) if before else None,
            after=PhoneUser.from_dict(data["after"]),
            fields=tuple(data.get("fields", ())),
            source_id=data.get("source_id"),
        )


@dataclass(frozen=True, slots=True)
class GroupAction:
    """One change of one PBX group (address `group.<name>`). `before`/`after` are PbxGroups whose members are
    addresses (`user.<account>`, or `pbx_user.<login>` for a PBX user no directory user stands for), so a
    reviewer reads names, not ids; `member_ids` resolves the addresses of members that exist on the PBX
    already (a member created by the same plan is resolved at apply). `key` is the group's binding key
    (`shared:<number>` or `map:<directory group>`)."""

    address: str
    action: str  # create | update | orphan
    pbx_group_id: str | None
    key: str
    before: PbxGroup | None
    after: PbxGroup
    fields: tuple[str, ...] = ()
    member_ids: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {
            "address": self.address,
            "action": self.action,
            "pbx_group_id": self.pbx_group_id,
            "key": self.key,
            "before": self.before.to_dict() if self.before else None,
            "after": self.after.to_dict(),
        }
        if self.action != "create":
            out["fields"] = list(self.fields)
        if self.member_ids:
            out["member_ids"] = dict(sorted(self.member_ids.items()))
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> GroupAction:
        before = data.get("before")
        return cls(
            address=data["address"],
            action=data["action"],
            pbx_group_id=data.get("pbx_group_id"),
            key=data["key"],
            before=PbxGroup.from_dict(before) if before else None,
            after=PbxGroup.from_dict(data["after"]),
            fields=tuple(data.get("fields", ())),
            member_ids=dict(data.get("member_ids", {})),
        )


@dataclass(frozen=True)
class Plan:
    """A saved plan (SPEC 9.4). `bindings` are the source id -> PBX user id links the apply records."""

    plan_id: str
    created_at: str
    expires_at: str
    tool_version: str
    config_sha256: str
    desired_sha256: str
    base_state: Mapping[str, object]
    changes: tuple[Action, ...]
    diagnostics: tuple[Diagnostic, ...]
    overrides: tuple[str, ...]
    summary: Mapping[str, int]
    bindings: Mapping[str, str] = field(default_factory=dict)
    targets: Mapping[str, object] | None = None  # `plan --target`: addresses, considered, of (all users)
    refresh_only: Mapping[str, object] | None = None  # `plan --refresh-only`: what changed on the PBX
    format_version: int = 1
    digest: str = ""  # of the saved file's content (planfile.content_digest); set when a plan file is read
    signature: str = ""  # HMAC of the digest, when the plan was signed (plan.signing_key_env)
    group_changes: tuple[GroupAction, ...] = ()  # in apply order: orphans, updates, creates

    @property
    def has_changes(self) -> bool:
        return bool(self.changes or self.group_changes)


class Progress(Protocol):
    """How long-running stages report progress; `output` provides the terminal and plain-log versions."""

    def start(self, label: str, total: int | None = None) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def done(self) -> None: ...


class NullProgress:
    def start(self, label: str, total: int | None = None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def done(self) -> None:
        pass


NO_PROGRESS = NullProgress()
