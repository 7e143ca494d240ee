"""A PBX provider: reads the PBX into a PbxState and carries out single changes. Nothing else touches it.

Every write method makes exactly one change and raises `PbxError` with a sentence naming the user and what
the PBX refused. There is deliberately no way to delete a user.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

from adsync_plan.model import NO_PROGRESS, PbxState, PhoneUser, Progress


class Provider(ABC):
    """Subclasses are built as `Provider(settings, base_dir, licenses)`; `settings` is the validated
    `pbx:` section of the configuration, `base_dir` the configuration's folder (for relative paths),
    `licenses` the licence count (None: unlimited)."""

    # True when writes stay in memory until flush() (the file PBX); False when each call is durable on the
    # PBX as soon as it returns. The apply journal makes its lines durable accordingly (journal.py).
    buffered = False

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

    @abstractmethod
    def set_primary_internal_number(self, user_id: str, number: str | None) -> None:
        """Make an internal number the user already owns its primary internal number."""

    def flush(self) -> None:
        """Make every change so far durable (a no-op where each call already is)."""

    def close(self) -> None:
        """Release connections and sessions."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
