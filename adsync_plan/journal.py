"""The apply journal (states/.adsync.journal): what a run was about to do, for the run after a kill -9.

Apply writes one JSON line per PBX write before it makes it: a header (run, plan, pid, host, the bindings
the plan found by e-mail), then the step (number, kind, user, PBX user id, and for a create the login ID
and the directory user's source id). A run that finishes, fails or is interrupted writes its snapshot and
audit and removes the journal. A journal found by the next run that takes the lock is a dead run's: the
PBX is read, the journaled creates found there by login ID are bound to their directory users, and the
snapshot and an audit record `recovered` are written.

Durability, and what it costs: only a create needs the journal to be recovered (every other change is
read back from the PBX by the next plan; a created user without its line would be an orphan forever). A line
matters only once the PBX has made its change durable. A STARFACE makes each request durable as it answers:
each line is handed to the kernel before its request (a kill -9 loses nothing the kernel holds), and a
create's line is also fsynced (power loss). The file PBX writes nothing until its flush: its journal is
written in blocks and fsynced once, just before that flush, so a crash before it leaves a PBX file that
nothing happened to and a journal that may be short; a crash after it finds every line on disk. With
orjson, this keeps the journal within a few percent of an apply without it (benchmarks/apply_journal.py).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from dataclasses import replace
from pathlib import Path

import orjson

from adsync_plan.model import PbxAccount, PbxGroup, PbxNumber, PbxState

NAME = ".adsync.journal"


def path_in(state_dir: Path) -> Path:
    return state_dir / NAME


class Journal:
    """Appends the lines of one run. `pbx_buffered`: the PBX writes nothing before its flush (see above)."""

    def __init__(self, state_dir: Path, plan_id: str, run_id: str, pbx_buffered: bool):
        self.path = path_in(state_dir)
        self.plan_id, self.run_id, self.pbx_buffered = plan_id, run_id, pbx_buffered
        self._fh = None
        self._lock = threading.Lock()  # parallel apply: one line at a time

    def __enter__(self) -> Journal:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")  # noqa: SIM115 - closed in __exit__
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def start(self, new_bindings: dict[str, str]) -> None:
        """The header: on disk before anything else, whatever the PBX (one fsync per apply)."""
        self._fh.write(
            orjson.dumps(
                {
                    "run_id": self.run_id,
                    "plan_id": self.plan_id,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "bindings": new_bindings,
                }
            )
            + b"\n"
        )
        self.sync()

    def step(self, number: int, step, action, user_id: str | None) -> None:
        entry = {"step": number, "kind": step.kind, "user": action.address, "pbx_user_id": user_id}
        if step.kind == "create":
            entry.update(login_id=action.after.login_id, source_id=action.source_id)
        elif step.kind == "group_create":  # found again by its name, bound by its key
            entry.update(name=action.after.name, key=action.key)
        self._write(entry, durable=step.kind in ("create", "group_create"))

    def sync(self) -> None:
        """Make every line so far durable (before a buffered PBX writes its changes)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def remove(self) -> None:
        self.__exit__()
        self.path.unlink(missing_ok=True)

    def _write(self, entry: dict, durable: bool) -> None:
        with self._lock:
            self._append(orjson.dumps(entry) + b"\n", durable)

    def _append(self, line: bytes, durable: bool) -> None:
        self._fh.write(line)
        if self.pbx_buffered:
            return  # all made durable by sync() before the PBX's flush
        if durable:
            self.sync()
        else:
            self._fh.flush()


def read(state_dir: Path) -> list[dict] | None:
    """The journal's entries, None when there is none. A line cut short by the crash is skipped."""
    try:
        text = path_in(state_dir).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def header(entries: list[dict]) -> dict:
    return next((e for e in entries if "run_id" in e), {})


def found_bindings(entries: list[dict], live: PbxState) -> tuple[dict[str, str], list[str]]:
    """source id -> PBX user id for the journaled creates that exist on the PBX (by login ID), and the
    addresses of those that do not (the run died before the PBX made them)."""
    by_login = {u.login_id: i for i, u in live.users.items()}
    found, missing = dict(header(entries).get("bindings") or {}), []
    found = {s: i for s, i in found.items() if i in live.users}
    for entry in entries:
        if entry.get("kind") != "create" or not entry.get("source_id"):
            continue
        pbx_id = by_login.get(entry.get("login_id"))
        if pbx_id is None:
            missing.append(entry.get("user", "?"))
        else:
            found[entry["source_id"]] = pbx_id
    return found, missing


def found_group_bindings(entries: list[dict], live: PbxState) -> dict[str, str]:
    """group key -> PBX group id for the journaled group creates the PBX has (by name, case-insensitive, as
    the PBX keeps names unique)."""
    by_name = {g.name.lower(): i for i, g in live.groups.items()}
    found = {}
    for entry in entries:
        if entry.get("kind") == "group_create" and entry.get("key") and isinstance(entry.get("name"), str):
            gid = by_name.get(entry["name"].lower())
            if gid is not None:
                found[entry["key"]] = gid
    return found


def replay(state: PbxState, done: list) -> PbxState:
    """The last known state plus the steps done: (step, action, PBX user id) in order. For a snapshot when
    the PBX does not answer after an interrupted apply, so no created user (and its binding) is lost."""
    accounts = {i: _account(i, u, i in state.admins) for i, u in state.users.items()}
    numbers, groups = dict(state.numbers), dict(state.groups)
    created = {action.address: user_id for step, action, user_id in done if step.kind == "create"}
    for step, action, user_id in done:
        if step.kind == "create":
            after = action.after
            accounts[user_id] = PbxAccount(user_id, after.login_id, after.first_name, after.last_name, after.email)
        elif step.kind == "update":
            accounts[user_id] = replace(accounts[user_id], **step.args[0])
        elif step.kind == "admin":
            accounts[user_id] = replace(accounts[user_id], is_admin=step.args[0])
        elif step.kind == "release":
            numbers[step.args[0]] = PbxNumber(numbers[step.args[0]].type)
            if accounts[user_id].primary_internal_number == step.args[0]:
                accounts[user_id] = replace(accounts[user_id], primary_internal_number=None)
        elif step.kind in ("assign", "service"):  # a service change keeps the owner, with the new service
            number, service = step.args
            numbers[number] = PbxNumber(numbers[number].type, user_id, service)
        elif step.kind == "primary":
            accounts[user_id] = replace(accounts[user_id], primary_internal_number=step.args[0])
        elif step.kind == "group_members":  # the addresses as apply resolved them
            members = (action.member_ids.get(a) or created.get(a) for a in step.args[0])
            groups[user_id] = replace(groups[user_id], members=tuple(sorted(m for m in members if m)))
        else:
            _replay_group(step, user_id, groups, numbers)
    rebuilt = PbxState.from_parts(accounts.values(), numbers)
    for gid, group in groups.items():  # a group's numbers are the inventory's
        owned = tuple(sorted(n for n, info in numbers.items() if info.owner == f"group:{gid}"))
        groups[gid] = PbxGroup(group.name, group.members, owned)
    return replace(rebuilt, groups=groups)


def _replay_group(step, group_id: str, groups: dict, numbers: dict) -> None:
    """A group step done: its creation, name or numbers."""
    if step.kind == "group_create":
        groups[group_id] = PbxGroup(step.args[0])
    elif step.kind == "group_rename":
        groups[group_id] = replace(groups[group_id], name=step.args[0])
    elif step.kind == "group_release":
        numbers[step.args[0]] = PbxNumber(numbers[step.args[0]].type)
    elif step.kind == "group_assign":
        numbers[step.args[0]] = PbxNumber(numbers[step.args[0]].type, f"group:{group_id}", "standard")


def _account(pbx_id: str, user, is_admin: bool) -> PbxAccount:
    return PbxAccount(
        pbx_id, user.login_id, user.first_name, user.last_name, user.email, is_admin, user.primary_internal_number
    )
