"""The state snapshot (states/pbx.yaml), its fingerprint, the lock, and the audit log."""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import logging
import os
import socket
import stat
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from adsync_plan import schemas
from adsync_plan.errors import InputError, LockError
from adsync_plan.files import SNAPSHOT, parse_as, read_bytes, write_document, yaml_line_finder
from adsync_plan.model import PbxGroup, PbxNumber, PbxState, PhoneUser
from adsync_plan.snapshot_check import surely_valid

FORMAT_VERSION = 1
REFRESH_HINT = "move it away and run `adsync-plan refresh` to read the PBX into a new snapshot"
log = logging.getLogger(__name__)


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical(state: PbxState) -> dict:
    """The content a fingerprint covers: users (shape + admin flag), the number inventory, and the groups
    (only when the PBX has any: a PBX without groups keeps the fingerprint it had before groups existed)."""
    content = {
        "users": {i: {**u.to_dict(), "is_admin": i in state.admins} for i, u in state.users.items()},
        "numbers": {n: info.to_dict() for n, info in state.numbers.items()},
    }
    if state.groups:
        content["groups"] = {i: g.to_dict() for i, g in state.groups.items()}
    return content


CANONICAL_KEYS = ("users", "numbers", "groups")


def fingerprint(state: PbxState) -> str:
    return _digest(canonical(state))


def _digest(content: dict) -> str:
    return "sha256:" + hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass
class Snapshot:
    state: PbxState
    bindings: dict[str, str] = field(default_factory=dict)
    lineage: str = field(default_factory=lambda: str(uuid.uuid4()))
    serial: int = 0
    pbx: dict = field(default_factory=dict)
    fingerprint: str = ""
    group_bindings: dict[str, str] = field(default_factory=dict)  # desired group key -> PBX group id

    def __post_init__(self):
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.state)


def state_from_canonical(data: dict) -> PbxState:
    users = {i: PhoneUser.from_dict(u) for i, u in data["users"].items()}
    admins = frozenset(i for i, u in data["users"].items() if u.get("is_admin"))
    numbers = {n: PbxNumber(v["type"], v.get("owner"), v.get("service")) for n, v in data["numbers"].items()}
    groups = {i: PbxGroup.from_dict(g) for i, g in data.get("groups", {}).items()}
    return PbxState(users=users, admins=admins, numbers=numbers, groups=groups)


def load_snapshot(path: Path) -> Snapshot:
    raw = read_bytes(path, "the state snapshot")
    data, tree = parse_as(raw, path, "the state snapshot", SNAPSHOT, REFRESH_HINT, _remake(path))
    if not surely_valid(data):  # the usual snapshot passes this fast check; the schema decides on any other
        schemas.validate(data, "state", str(path), yaml_line_finder(tree))
    # the file holds the canonical content itself: its digest is the fingerprint of the state it describes
    digest = _digest({k: data[k] for k in CANONICAL_KEYS if k in data})
    if digest != data["fingerprint"]:
        raise InputError(
            f"{path}: the fingerprint does not match the content; the file was edited by hand: {_remake(path)}."
        )
    return Snapshot(
        state=state_from_canonical(data),
        bindings=dict(data.get("bindings", {})),
        lineage=data["lineage"],
        serial=data["serial"],
        pbx=data.get("pbx", {}),
        fingerprint=digest,
        group_bindings=dict(data.get("group_bindings", {})),
    )


def _remake(path: Path) -> str:
    """The way out for a snapshot that was changed: refresh alone reads the same file (for its bindings)."""
    return (
        f"restore it from git (git checkout -- {path}), or {REFRESH_HINT} (the users' bindings are then found "
        "again by e-mail)"
    )


def save_snapshot(
    path: Path,
    state: PbxState,
    bindings: dict,
    pbx: dict,
    previous: Snapshot | None,
    group_bindings: dict | None = None,
) -> Snapshot:
    """Write the snapshot; the serial grows only when the content or the bindings changed. `group_bindings`
    default to the previous snapshot's (only apply and recovery bind groups)."""
    bindings = {s: i for s, i in bindings.items() if i in state.users}
    if group_bindings is None:
        group_bindings = previous.group_bindings if previous is not None else {}
    group_bindings = {k: i for k, i in group_bindings.items() if i in state.groups}
    snap = Snapshot(state=state, bindings=bindings, pbx=pbx, group_bindings=group_bindings)
    if previous is not None:
        snap.lineage = previous.lineage
        same = (
            previous.fingerprint == snap.fingerprint
            and previous.bindings == bindings
            and previous.group_bindings == group_bindings
        )
        snap.serial = previous.serial if same else previous.serial + 1
    else:
        snap.serial = 1
    doc = {
        "format_version": FORMAT_VERSION,
        "lineage": snap.lineage,
        "serial": snap.serial,
        "fingerprint": snap.fingerprint,
        "pbx": pbx,
        **canonical(state),
        "bindings": bindings,
    }
    if group_bindings:  # only then: a project without groups keeps its snapshot's bytes
        doc["group_bindings"] = dict(sorted(group_bindings.items()))
    write_document(path, doc)
    return snap


def describe_changes(old: PbxState, new: PbxState, limit: int = 20) -> list[str]:
    """What differs between two PBX states, as short lines: which users, which fields."""
    lines = []
    for pbx_id in sorted(set(old.users) | set(new.users), key=lambda i: (len(i), i)):
        before, after = old.users.get(pbx_id), new.users.get(pbx_id)
        if before is None:
            lines.append(f"PBX user {pbx_id} ({after.login_id}) was added")
        elif after is None:
            lines.append(f"PBX user {pbx_id} ({before.login_id}) was removed")
        elif before != after or ((pbx_id in old.admins) != (pbx_id in new.admins)):
            fields = [f for f in before.to_dict() if getattr(before, f) != getattr(after, f)]
            if (pbx_id in old.admins) != (pbx_id in new.admins) and "role" not in fields:
                fields.append("administrator permission")
            lines.append(f"PBX user {pbx_id} ({after.login_id}) changed: {', '.join(fields)}")
    for gid in sorted(set(old.groups) | set(new.groups), key=lambda i: (len(i), i)):
        before, after = old.groups.get(gid), new.groups.get(gid)
        if before != after:
            what = "was added" if before is None else "was removed" if after is None else "changed"
            lines.append(f"PBX group {gid} ({(after or before).name}) {what}")
    changed_numbers = [n for n in set(old.numbers) | set(new.numbers) if old.numbers.get(n) != new.numbers.get(n)]
    if changed_numbers:
        lines.append(
            f"{len(changed_numbers)} number(s) changed owner or were added/removed: "
            + ", ".join(sorted(changed_numbers)[:10])
            + (" ..." if len(changed_numbers) > 10 else "")
        )
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return lines


# -- the lock -------------------------------------------------------------------------------------------


LOCK_NAME = ".adsync.lock"
BROKEN = "broken"  # the id force-unlock takes for a lock file that has none


class Lock:
    """states/.adsync.lock: who, host, pid, plan id and since when. It appears complete or not at all (written
    to a temporary file, then linked into place), a run removes only its own, and the lock of a run that
    died on this host (its pid is gone) is taken over after saying so."""

    def __init__(self, state_dir: Path, plan_id: str | None, operation: str, timeout: float):
        self.path = state_dir / LOCK_NAME
        self.info = {
            "id": str(uuid.uuid4()),
            "who": _user(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "plan_id": plan_id,
            "operation": operation,
            "since": iso(now_utc()),
        }
        self.timeout = timeout

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.timeout
        while not self._take():
            if time.monotonic() >= deadline:
                raise LockError(_held_message(self.path))
            time.sleep(0.2)
        return self

    def _take(self) -> bool:
        with _guarded(self.path.parent):
            if _create(self.path, self.info):
                return True
            info, problem = inspect_lock(self.path)
            if problem or not info or alive_here(info.get("host"), info.get("pid")):
                return False
            if info.get("host") != socket.gethostname():
                return False  # another host's lock: only force-unlock may remove it
            log.warning(
                "%s: the run that held the lock (id %s, %s of plan %s, pid %s on this host) is gone; taking the "
                "lock over",
                self.path,
                info.get("id"),
                info.get("operation"),
                info.get("plan_id") or "-",
                info.get("pid"),
            )
            self.path.unlink()
            return _create(self.path, self.info)

    def __exit__(self, *exc):
        with _guarded(self.path.parent):
            info, _ = inspect_lock(self.path)
            if info and info.get("id") == self.info["id"]:
                self.path.unlink()
            else:
                log.warning("%s: the lock is no longer this run's (force-unlock?); it is left as it is", self.path)


@contextmanager
def _guarded(folder: Path):
    """An advisory lock on the state folder: taking over, releasing and force-unlocking the lock file never
    interleave between processes."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _create(path: Path, info: dict) -> bool:
    """Write the lock beside its place, then link it there: link fails when anything (even a dangling
    symlink) is there already, and the lock never exists half-written."""
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh, indent=1)
        os.chmod(tmp, 0o644)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: create exclusively, then write (not atomic)
        return _create_exclusive(path, info)
    finally:
        os.unlink(tmp)


def _create_exclusive(path: Path, info: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump(info, fh, indent=1)
    return True


def alive_here(host, pid) -> bool:
    """Whether `pid` is a running process on this host (a lock or journal of another host counts as alive)."""
    if host != socket.gethostname():
        return True
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def inspect_lock(path: Path) -> tuple[dict | None, str | None]:
    """(the lock's content, None), or (None, what is wrong with the file), or (None, None) when there is none."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None, None
    if stat.S_ISLNK(mode):
        target = os.readlink(path)
        dangling = "" if path.exists() else "dangling "
        return None, f"is a {dangling}symbolic link (to {target}), not a lock file adsync-plan wrote"
    if stat.S_ISDIR(mode):
        return None, "is a folder, not a lock file"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        return None, f"cannot be read ({err.strerror})"
    if not text.strip():
        return None, "is empty (a run crashed while creating it)"
    try:
        info = json.loads(text)
    except ValueError:
        return None, "is not JSON, so not a lock file adsync-plan wrote"
    if not isinstance(info, dict) or not isinstance(info.get("id"), str):
        return None, "has no lock id, so it is not a lock file adsync-plan wrote"
    return info, None


def read_lock(path: Path) -> dict:
    return inspect_lock(path)[0] or {}


def _held_message(path: Path) -> str:
    info, problem = inspect_lock(path)
    if problem:
        return (
            f"{path} {problem}, so no run can take the lock. If no adsync-plan run is going on, remove it with "
            f"`adsync-plan force-unlock {BROKEN}`."
        )
    info = info or {}
    return (
        f"{path}: another run holds the lock (id {info.get('id', '?')}, {info.get('operation', '?')} "
        f"of plan {info.get('plan_id') or '-'} by {info.get('who', '?')} on {info.get('host', '?')}, "
        f"pid {info.get('pid', '?')}, since {info.get('since', '?')}). Wait for it to finish; if it crashed, "
        f"run `adsync-plan force-unlock {info.get('id', 'LOCK_ID')}`."
    )


def force_unlock(state_dir: Path, lock_id: str, force: bool = False) -> dict:
    """Remove the lock with this id; a live holder on this host only with `force`. A broken lock file (empty,
    not JSON, a folder, a symlink) has no id: it is removed when `lock_id` is "broken"."""
    path = state_dir / LOCK_NAME
    if not state_dir.is_dir():
        raise LockError(f"{path}: there is no lock to remove.")
    with _guarded(state_dir):
        info, problem = inspect_lock(path)
        if problem:
            return _remove_broken(path, problem, lock_id)
        if info is None:
            raise LockError(f"{path}: there is no lock to remove.")
        if info.get("id") != lock_id:
            raise LockError(f"{path}: the lock's id is {info.get('id')}, not {lock_id}; nothing was removed.")
        if info.get("host") == socket.gethostname() and alive_here(info.get("host"), info.get("pid")) and not force:
            raise LockError(
                f"{path}: the lock {lock_id} is held by pid {info.get('pid')} on this host ({info.get('operation')} "
                f"by {info.get('who')} since {info.get('since')}), which is still running; nothing was removed. "
                "Wait for it, or stop it; add --force only if that process is not adsync-plan."
            )
        path.unlink()
        return info


def _remove_broken(path: Path, problem: str, lock_id: str) -> dict:
    if lock_id != BROKEN:
        raise LockError(f"{path} {problem}; it has no id. Run `adsync-plan force-unlock {BROKEN}` to remove it.")
    if path.is_dir() and not path.is_symlink():
        try:
            path.rmdir()
        except OSError:
            raise LockError(
                f"{path} is a folder with files in it, not a lock file; nothing was removed. Look at what is in "
                "it, then remove it by hand."
            ) from None
    else:
        path.unlink()  # a symlink: the link itself, never what it points to
    return {"id": BROKEN, "who": "?", "host": "?", "since": "?", "problem": problem}


# -- the audit log --------------------------------------------------------------------------------------

AUDIT_LOG = "audit.jsonl"


def append_audit(state_dir: Path, record: dict) -> None:
    """One JSON line per apply, appended and fsynced: the file is append-only."""
    line = json.dumps({"at": iso(now_utc()), "who": _user(), "host": socket.gethostname(), **record}) + "\n"
    path = state_dir / AUDIT_LOG
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        raise InputError(
            f"{path}: cannot append the audit record: {err.strerror}; check the file and its folder."
        ) from None


def check_writable(state_dir: Path) -> None:
    """Before apply changes the PBX: the state folder takes the snapshot and the lock, and the audit log
    takes a line. Found now, not after the last PBX write (it would leave changes without an audit record).
    A real write is tried: permissions alone do not tell (root, read-only mounts)."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".adsync-probe.", dir=state_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InputError(
            f"{state_dir}: the state folder is not writable ({err.strerror}); apply writes the snapshot, the "
            "lock and the audit log there. Make it writable; nothing was changed."
        ) from None
    audit = state_dir / AUDIT_LOG
    if os.path.lexists(audit):
        try:
            with open(audit, "ab"):  # opened to append, nothing written: the file stays as it is
                pass
        except OSError as err:
            raise InputError(
                f"{audit}: the audit log cannot be appended to ({err.strerror}); make it a writable file. "
                "Nothing was changed."
            ) from None


def applied_plan_ids(state_dir: Path) -> set[str]:
    """The ids of the plans applied already. Every line must be read: a line that cannot be is an error
    with its number, since a plan in it could be applied twice."""
    path = state_dir / AUDIT_LOG
    if not path.exists():
        return set()
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read the audit log: {err.strerror}.") from None
    ids = set()
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        record = _audit_record(line)
        if record is None:
            raise InputError(
                f"{path}:{number}: this line of the audit log is not a JSON object as apply writes it; "
                "restore the file from git (apply needs every line to refuse a plan applied already)."
            )
        if record.get("result") == "applied":
            ids.add(str(record.get("plan_id")))
    return ids


def _audit_record(line: bytes) -> dict | None:
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None
