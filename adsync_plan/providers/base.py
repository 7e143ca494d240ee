"""A PBX provider: reads the PBX into a PbxState and carries out single changes. Nothing else touches it.

Every write method makes exactly one change and raises `PbxError` with a sentence naming the user and what
the PBX refused. There is deliberately no way to delete a user.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from pathlib import Path

from adsync_plan.model import EXTERNAL, NO_PROGRESS, SHAPE_FIELDS, PbxGroup, PbxNumber, PbxState, PhoneUser, Progress

MIN_E164_DIGITS = 8  # fewer digits after "+" than any real number with its country code (Niue's are 7 at most)


def short_external_numbers(numbers: Mapping[str, PbxNumber]) -> list[str]:
    """A sentence per external number that reads as implausibly short: usually a line whose settings lack the
    number block, or an E.164 reading that went wrong (plan and doctor warn)."""
    return [
        f"The external number {n} reads as implausibly short ({len(n) - 1} digits); check its country and area "
        "code in the line's settings."
        for n, info in sorted(numbers.items())
        if info.type == EXTERNAL and n.startswith("+") and len(n) - 1 < MIN_E164_DIGITS
    ]


class Provider(ABC):
    """Subclasses are built as `Provider(settings, base_dir, licenses)`; `settings` is the validated
    `pbx:` section of the configuration, `base_dir` the configuration's folder (for relative paths),
    `licenses` the licence count (None: unlimited)."""

    # True when writes stay in memory until flush() (the file PBX); False when each call is durable on the
    # PBX as soon as it returns. The apply journal makes its lines durable accordingly (journal.py).
    buffered = False
    parallel_safe = False  # apply may call its writes from several threads at once (parallel.py)

    def __init__(self, settings: Mapping, base_dir: Path, licenses: int | None = None):
        self.settings = settings
        self.base_dir = base_dir
        self.licenses = licenses

    def describe(self) -> dict:
        """What the snapshot records as `pbx:` (no secrets)."""
        return {"type": self.settings["type"]}

    @abstractmethod
    def read(self, progress: Progress = NO_PROGRESS) -> PbxState:
        """The whole PBX: users with their numbers and admin flag, and the number inventory."""

    @abstractmethod
    def create_user(self, user: PhoneUser) -> str:
        """Create the account (login ID, names, e-mail; no numbers, no permissions); return its new id."""

    @abstractmethod
    def update_user(self, user_id: str, changes: Mapping[str, str]) -> None:
        """Change some of login_id, first_name, last_name, email."""

    @abstractmethod
    def set_admin(self, user_id: str, admin: bool) -> None:
        """Grant or revoke the administrator permission."""

    @abstractmethod
    def assign_number(self, user_id: str, number: str, service: str) -> None:
        """Assign an inventory number to the user with a call service ("standard" or "fax")."""

    @abstractmethod
    def release_number(self, user_id: str, number: str) -> None:
        """Remove the user's assignment of the number (the number stays in the inventory)."""

    def change_service(self, user_id: str, number: str, service: str) -> None:
        """Change the call service of a number the user keeps. This default releases and assigns it again;
        a provider whose PBX can change it in place (one request, the number never free) overrides it."""
        self.release_number(user_id, number)
        self.assign_number(user_id, number, service)

    # -- groups (issue 16). A group's id is its PBX account id; its numbers are owned `group:<id>` in the
    # inventory. Each method makes one change and raises PbxError naming the group and what was refused.

    def read_group(self, group_id: str) -> PbxGroup:
        """One group as the PBX has it now (members as PBX user ids); apply verifies groups with it. This
        default reads the whole PBX; providers override it with a cheaper read."""
        return self.read().groups[group_id]

    def create_group(self, name: str) -> str:
        """Create an empty group (no members, no numbers) named `name`; return its new id."""
        raise NotImplementedError

    def rename_group(self, group_id: str, name: str) -> None:
        """Change the group's name (the orphan mark `-` of a group no longer desired)."""
        raise NotImplementedError

    def set_group_members(self, group_id: str, member_ids: Collection[str]) -> None:
        """Make exactly these PBX user ids the group's members."""
        raise NotImplementedError

    def assign_group_number(self, group_id: str, number: str) -> None:
        """Give the group a free inventory number (service standard)."""
        raise NotImplementedError

    def release_group_number(self, group_id: str, number: str) -> None:
        """Remove the group's assignment of the number (the number stays in the inventory)."""
        raise NotImplementedError

    @abstractmethod
    def set_primary_internal_number(self, user_id: str, number: str | None) -> None:
        """Make an internal number the user already owns its primary internal number."""

    def read_user(self, user_id: str, fields: Collection[str] = SHAPE_FIELDS) -> dict:
        """One user as the PBX has it now, in `PhoneUser.to_dict()` form: at least `fields`, more where they
        come in the same read (a fixed, small number of requests; apply verifies each user with it). This
        default reads the whole PBX; providers override it with a cheaper read."""
        return self.read().users[user_id].to_dict()

    def profile(self) -> dict:
        """What `doctor` reports, as data (see StarfaceProvider.profile for the keys). This default, for a
        PBX without sign-in or mappings, reports the number inventory only."""
        numbers: dict[str, dict[str, int]] = {}
        for info in self.read().numbers.values():
            entry = numbers.setdefault(info.type.upper(), {"total": 0, "users": 0})
            entry["total"] += 1
            entry["users"] += info.owner is not None and ":" not in info.owner
        return {
            "pbx": f"The {self.settings['type']} PBX",
            "sign_in": "no credentials (a file on disk)",
            "version": None,
            "services": [],
            "permissions": [],
            "numbers": dict(sorted(numbers.items())),
            "examples": [],
            "system_users": [],
            "assumptions": [],
            "warnings": [],
            "problems": [],
        }

    def flush(self) -> None:
        """Make every change so far durable (a no-op where each call already is)."""

    def close(self) -> None:
        """Release connections and sessions."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
