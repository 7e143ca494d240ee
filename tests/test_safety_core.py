"""Gaps found by mutation testing of the safety core (benchmarks/mutation.py): the snapshot's identity and
fingerprint check, the lock's life cycle, who counts as its live holder and force-unlock's answers, the
journal's recovery and replay, the invariants' refusal, and the exact edge of a plan's expiry."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from adsync_plan import journal, pipeline, state
from adsync_plan.config import load_config
from adsync_plan.errors import InputError, LockError, PlanRefused
from adsync_plan.model import GroupAction, PbxAccount, PbxGroup, PbxNumber, PbxState
from adsync_plan.planfile import check_applicable, check_before_apply, load_plan, parse_time
from adsync_plan.rules.invariants import _listed
from adsync_plan.state import Lock, alive_here, force_unlock, load_snapshot, read_lock
from adsync_plan.steps import Step
from tests.conftest import copy_case
from tests.plans import edit_plan
from tests.test_lifecycle import dead_pid
from tests.test_plan_integrity import KEY_ENV, make_plan, signed  # noqa: F401 (signed: a fixture)

# -- the snapshot ---------------------------------------------------------------------------------------


def refreshed(cli, demo):
    assert cli("refresh", "-c", demo / "adsync.yaml")[0] == 0
    path = demo / "states" / "pbx.yaml"
    return path, json.loads(path.read_text())


def test_a_loaded_snapshot_keeps_the_files_lineage_serial_pbx_and_bindings(cli, demo):
    cfg = demo / "adsync.yaml"
    assert cli("plan", "-c", cfg, "-o", demo / "p.plan.json")[0] == 0
    assert cli("apply", "-c", cfg, demo / "p.plan.json")[0] == 0
    path = demo / "states" / "pbx.yaml"
    doc = json.loads(path.read_text())
    snap = load_snapshot(path)
    assert (snap.lineage, snap.serial, snap.pbx, snap.bindings) == (
        doc["lineage"],
        doc["serial"],
        doc["pbx"],
        doc["bindings"],
    )
    assert snap.pbx  # the provider's description, kept
    assert snap.fingerprint == doc["fingerprint"] and len(snap.bindings) == 37


def test_a_snapshot_without_its_pbx_description_loads_with_an_empty_one(cli, demo):
    path, doc = refreshed(cli, demo)
    del doc["pbx"]  # not covered by the fingerprint, and optional in the schema
    path.write_text(json.dumps(doc))
    assert load_snapshot(path).pbx == {}


def test_a_hand_edited_snapshot_is_refused_with_the_fix(cli, demo):
    path, doc = refreshed(cli, demo)
    doc["users"]["3"]["last_name"] = "Mueller"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError) as err:
        load_snapshot(path)
    assert str(err.value) == (
        f"{path}: the fingerprint does not match the content; the file was edited by hand: restore it from git "
        f"(git checkout -- {path}), or move it away and run `adsync-plan refresh` to read the PBX into a new "
        "snapshot (the users' bindings are then found again by e-mail)."
    )


def test_a_snapshot_that_is_no_yaml_names_the_file_as_the_state_snapshot(tmp_path):
    path = tmp_path / "pbx.yaml"
    path.write_text("")
    with pytest.raises(InputError, match="the state snapshot is empty"):
        load_snapshot(path)


def test_a_snapshot_that_cannot_be_read_or_is_another_file_says_so_with_the_way_out(tmp_path):
    folder = tmp_path / "pbx.yaml"
    folder.mkdir()
    with pytest.raises(InputError) as err:
        load_snapshot(folder)
    assert str(err.value) == f"{folder}: cannot read the state snapshot: Is a directory."
    plan = tmp_path / "p.plan.json"
    plan.write_text(json.dumps({"plan_id": "x", "changes": []}))
    with pytest.raises(InputError) as err:
        load_snapshot(plan)
    assert str(err.value) == (
        f"{plan}: this is a plan, not a state snapshot (states/pbx.yaml); move it away and run "
        "`adsync-plan refresh` to read the PBX into a new snapshot."
    )


# -- the lock -------------------------------------------------------------------------------------------


def test_the_lock_creates_missing_folders_and_holds_who_and_what(tmp_path):
    state_dir = tmp_path / "deep" / "er" / "states"
    with Lock(state_dir, "plan-1", "apply", timeout=0) as lock:
        info = read_lock(state_dir / ".adsync.lock")
        assert info == lock.info and info["plan_id"] == "plan-1" and info["operation"] == "apply"
    assert not (state_dir / ".adsync.lock").exists()


def test_a_lock_removed_by_force_unlock_while_held_ends_quietly(tmp_path, caplog):
    with Lock(tmp_path, None, "sync", timeout=0) as lock:
        assert force_unlock(tmp_path, lock.info["id"], force=True)["operation"] == "sync"  # its holder is alive
    assert not (tmp_path / ".adsync.lock").exists()  # and leaving raised nothing
    assert caplog.messages == [
        f"{tmp_path / '.adsync.lock'}: the lock is no longer this run's (force-unlock?); it is left as it is"
    ]


def test_the_lock_is_written_beside_its_place_under_a_name_the_clean_up_knows(tmp_path, monkeypatch):
    """Written to a temporary file in the state folder, named .adsync.lock.*.tmp (what a run killed meanwhile
    leaves is found as a *.tmp file there), then linked into place."""
    linked, link = [], os.link

    def spy(source, target):
        linked.append((Path(source), Path(target)))
        assert json.loads(Path(source).read_text()) == json.loads(json.dumps(lock_info))  # complete before linking
        link(source, target)

    monkeypatch.setattr(os, "link", spy)
    lock = Lock(tmp_path, "p", "apply", timeout=0)
    lock_info = lock.info
    with lock:
        [(source, target)] = linked
        assert target == tmp_path / ".adsync.lock" and source.parent == tmp_path
        assert source.name.startswith(".adsync.lock.") and source.name.endswith(".tmp")
        assert not source.exists()


def test_force_unlock_without_a_lock(tmp_path):
    with pytest.raises(LockError) as err:
        force_unlock(tmp_path, "any")
    assert str(err.value) == f"{tmp_path / '.adsync.lock'}: there is no lock to remove."


def test_force_unlock_of_an_unreadable_lock_names_no_id_and_keeps_it(tmp_path):
    path = tmp_path / ".adsync.lock"
    path.write_text("not json")
    with pytest.raises(LockError) as err:
        force_unlock(tmp_path, "abc")
    assert str(err.value) == (
        f"{path} is not JSON, so not a lock file adsync-plan wrote; it has no id. "
        "Run `adsync-plan force-unlock broken` to remove it."
    )
    assert path.exists()


def test_a_lock_that_vanishes_between_two_looks_is_taken_on_the_next_try(tmp_path, monkeypatch):
    """Another program removed the lock file after this run failed to create it and before it looked at it:
    nothing to take over, so the run tries again (0.2 s later) and takes the lock then."""
    create, tries = state._create, []

    def create_after_a_race(path, info):
        tries.append(path)
        return create(path, info) if len(tries) > 1 else False  # the first time: someone else's file, gone at once

    monkeypatch.setattr(state, "_create", create_after_a_race)
    with Lock(tmp_path, "p", "apply", timeout=30) as lock:
        assert len(tries) == 2 and read_lock(lock.path) == lock.info


def test_the_lock_of_a_dead_run_is_taken_over_saying_whose_it_was(tmp_path, caplog):
    dead = {"id": "old-run", "who": "ci", "host": socket.gethostname(), "pid": dead_pid(), "plan_id": "p-7"}
    (tmp_path / ".adsync.lock").write_text(json.dumps({**dead, "operation": "apply", "since": "t"}))
    with Lock(tmp_path, "p-8", "sync", timeout=0) as lock:
        assert read_lock(lock.path)["id"] == lock.info["id"]
    (tmp_path / ".adsync.lock").write_text(json.dumps({**dead, "plan_id": None, "operation": "sync", "since": "t"}))
    with Lock(tmp_path, None, "sync", timeout=0):
        pass
    assert caplog.messages == [
        f"{tmp_path / '.adsync.lock'}: the run that held the lock (id old-run, apply of plan p-7, pid {dead['pid']} "
        "on this host) is gone; taking the lock over",
        f"{tmp_path / '.adsync.lock'}: the run that held the lock (id old-run, sync of plan -, pid {dead['pid']} "
        "on this host) is gone; taking the lock over",
    ]


def test_without_hard_links_the_lock_is_created_exclusively(tmp_path, monkeypatch):
    def no_links(source, target):
        raise OSError(1, "Operation not permitted")  # e.g. a file system without hard links

    monkeypatch.setattr(os, "link", no_links)
    with Lock(tmp_path, "p", "apply", timeout=0) as lock:
        assert json.loads(lock.path.read_text()) == lock.info and lock.path.stat().st_mode & 0o777 == 0o644
        assert os.listdir(tmp_path) == [".adsync.lock"]  # its temporary file removed
        with pytest.raises(LockError, match="another run holds the lock"):
            Lock(tmp_path, "q", "apply", timeout=0).__enter__()
        assert read_lock(lock.path) == lock.info
    assert not lock.path.exists()


def test_force_unlock_refuses_a_live_holder_on_this_host_without_force(tmp_path):
    with Lock(tmp_path, "plan-9", "apply", timeout=0) as lock:
        info = lock.info
        with pytest.raises(LockError) as err:
            force_unlock(tmp_path, info["id"])  # its holder, this test, is running
        assert str(err.value) == (
            f"{tmp_path / '.adsync.lock'}: the lock {info['id']} is held by pid {os.getpid()} on this host (apply "
            f"by {info['who']} since {info['since']}), which is still running; nothing was removed. "
            "Wait for it, or stop it; add --force only if that process is not adsync-plan."
        )
        assert read_lock(lock.path) == info


def test_force_unlock_in_a_folder_that_does_not_exist(tmp_path):
    with pytest.raises(LockError) as err:
        force_unlock(tmp_path / "states", "any")
    assert str(err.value) == f"{tmp_path / 'states' / '.adsync.lock'}: there is no lock to remove."


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("symlink", "is a symbolic link (to {target}), not a lock file adsync-plan wrote"),
        ("dangling symlink", "is a dangling symbolic link (to {target}), not a lock file adsync-plan wrote"),
        ("folder", "is a folder, not a lock file"),
        ("not UTF-8", "is not JSON, so not a lock file adsync-plan wrote"),
        ("a list", "has no lock id, so it is not a lock file adsync-plan wrote"),
        ("a number as id", "has no lock id, so it is not a lock file adsync-plan wrote"),
    ],
)
def test_every_kind_of_broken_lock_is_named_and_kept_without_the_broken_id(tmp_path, kind, problem):
    path, target = tmp_path / ".adsync.lock", tmp_path / "elsewhere.json"
    if kind == "symlink":
        target.write_text(json.dumps({"id": "x"}))
        path.symlink_to(target)
    elif kind == "dangling symlink":
        path.symlink_to(target)
    elif kind == "folder":
        path.mkdir()
    else:
        path.write_bytes({"not UTF-8": b'\xff\xfe{"id"', "a list": b'["id"]', "a number as id": b'{"id": 5}'}[kind])
    with pytest.raises(LockError) as err:
        force_unlock(tmp_path, "abc")
    problem = problem.format(target=target)
    assert str(err.value) == f"{path} {problem}; it has no id. Run `adsync-plan force-unlock broken` to remove it."
    assert path.is_symlink() or path.exists()


def test_a_journal_line_cut_short_or_not_utf8_is_skipped_and_the_rest_read(tmp_path):
    head = {"run_id": "r", "plan_id": "p", "pid": 1, "host": "h", "bindings": {}}
    lines = [json.dumps(head).encode(), b'{"step": 1, "kind": "cre', b'{"step": 2, "kind": "update"}', b"\xff\xfe[1]"]
    journal.path_in(tmp_path).write_bytes(b"\n".join(lines) + b"\n")
    assert journal.read(tmp_path) == [head, {"step": 2, "kind": "update"}]
    assert journal.read(tmp_path / "none") is None


def test_force_unlock_broken_removes_an_empty_lock_and_says_what_it_was(tmp_path):
    (tmp_path / ".adsync.lock").write_text("")
    assert force_unlock(tmp_path, "broken") == {
        "id": "broken",
        "who": "?",
        "host": "?",
        "since": "?",
        "problem": "is empty (a run crashed while creating it)",
    }
    assert not (tmp_path / ".adsync.lock").exists()


def test_force_unlock_broken_keeps_a_lock_folder_with_files_in_it(tmp_path):
    (tmp_path / ".adsync.lock").mkdir()
    (tmp_path / ".adsync.lock" / "notes.txt").write_text("mine")
    with pytest.raises(LockError) as err:
        force_unlock(tmp_path, "broken")
    assert str(err.value) == (
        f"{tmp_path / '.adsync.lock'} is a folder with files in it, not a lock file; nothing was removed. Look at "
        "what is in it, then remove it by hand."
    )
    assert (tmp_path / ".adsync.lock" / "notes.txt").read_text() == "mine"


def test_which_lock_holders_count_as_alive(monkeypatch):
    here = socket.gethostname()
    assert alive_here("another-host", 123) is True  # another host's process cannot be asked: assumed running
    assert alive_here(here, os.getpid()) is True
    assert alive_here(here, 1) is True  # init: a pid of 1 is a real process
    assert alive_here(here, dead_pid()) is False
    for pid in (0, -1, "123", None):  # no process: 0 and -1 would address a whole process group
        assert alive_here(here, pid) is False

    def not_permitted(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", not_permitted)
    assert alive_here(here, 4242) is True  # another user's process: running


def test_asking_whether_a_holder_lives_sends_it_no_signal():
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert alive_here(socket.gethostname(), child.pid) is True
        time.sleep(0.1)
        assert child.poll() is None  # signal 0 only checks; any other signal would have ended `sleep`
    finally:
        child.kill()
        child.wait()


# -- the journal ----------------------------------------------------------------------------------------


def test_journaled_creates_are_bound_when_the_pbx_has_them_and_named_when_not():
    live = PbxState.from_parts(
        [PbxAccount("7", "30", "Ada", "Muster", "ada@example.com"), PbxAccount("8", "31", "Bo", "B", "bo@x.de")], {}
    )
    entries = [
        {"kind": "create", "user": "user.ada", "login_id": "30", "source_id": "s-ada"},
        {"kind": "create", "user": "user.cy", "login_id": "32", "source_id": "s-cy"},  # never made
        {"kind": "create", "login_id": "33", "source_id": "s-dee"},  # never made, its address cut off
        {"kind": "create", "user": "user.cut", "login_id": "34"},  # a line without its source id: no create of ours
        {"kind": "update", "user": "user.bo", "pbx_user_id": "8", "source_id": "s-bo"},  # not a create
    ]
    assert journal.found_bindings(entries, live) == ({"s-ada": "7"}, ["user.cy", "?"])  # no header: nothing else bound


def test_a_create_line_is_made_durable_before_its_request_the_others_only_handed_to_the_kernel(tmp_path, monkeypatch):
    """A STARFACE makes each request durable as it answers: the journal of a create must survive a power loss
    (fsync); an update's is read back from the PBX by the next plan (flush only). A buffered PBX (the file)
    gets one fsync before its flush instead (test above: the lines are there)."""
    synced = []
    monkeypatch.setattr(journal.os, "fsync", lambda fd: synced.append(fd))
    create = SimpleNamespace(address="user.ada", after=SimpleNamespace(login_id="30"), source_id="s-ada")
    with journal.Journal(tmp_path, "plan-1", "run-1", pbx_buffered=False) as ahead:
        ahead.start({})
        assert len(synced) == 1  # the header, whatever the PBX
        ahead.step(1, Step(0, "update", ({"last_name": "B"},), ""), create, "7")
        assert len(synced) == 1 and len(journal.read(tmp_path)) == 2  # flushed, not fsynced
        ahead.step(2, Step(1, "create", (), ""), create, None)
        assert len(synced) == 2 and journal.read(tmp_path)[-1]["login_id"] == "30"
    with journal.Journal(tmp_path, "plan-2", "run-2", pbx_buffered=True) as ahead:
        ahead.start({})
        ahead.step(1, Step(0, "create", (), ""), create, None)
        assert len(synced) == 3  # the header only: the rest waits for sync() before the PBX's flush
        ahead.sync()
        assert len(synced) == 4


def test_replaying_the_release_of_a_users_primary_number_clears_the_primary():
    before = PbxState.from_parts(
        [PbxAccount("7", "30", "Ada", "Muster", "ada@example.com", False, "30")],
        {"30": PbxNumber("internal", "7", "standard"), "31": PbxNumber("internal", "7", "standard")},
    )
    after = journal.replay(before, [(Step(0, "release", ("30",), "user.ada: release 30"), None, "7")])
    assert after.numbers["30"] == PbxNumber("internal") and after.numbers["31"] == PbxNumber(
        "internal", "7", "standard"
    )
    assert after.users["7"].primary_internal_number is None and after.users["7"].login_id == "30"
    kept = journal.replay(before, [(Step(0, "release", ("31",), "user.ada: release 31"), None, "7")])
    assert kept.users["7"].primary_internal_number == "30"


def open_files() -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the folder listing's own descriptor, closed meanwhile
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
    return found


def test_the_journal_of_an_apply_names_the_run_and_every_create_and_recovers_it_in_process(cli, demo, monkeypatch):
    """What a kill -9 after the PBX flush leaves behind (test_interrupt.py kills a real process; this runs in
    process, fast enough for the mutation run): the journal as it stood before its removal, the snapshot from
    before the apply, and a holder that is gone. The next command binds every created user found on the PBX."""
    cfg = demo / "adsync.yaml"
    assert cli("refresh", "-c", cfg)[0] == 0
    before = (demo / "states" / "pbx.yaml").read_bytes()
    assert cli("plan", "-c", cfg, "-o", demo / "p.plan.json")[0] == 0
    kept = []
    remove = journal.Journal.remove

    def keep_then_remove(self):
        kept.append(self.path.read_bytes())
        remove(self)

    monkeypatch.setattr(journal.Journal, "remove", keep_then_remove)
    assert cli("apply", "-c", cfg, demo / "p.plan.json")[0] == 0
    monkeypatch.undo()
    plan = json.loads((demo / "p.plan.json").read_text())
    entries = [json.loads(line) for line in kept[0].splitlines()]
    head = entries[0]
    assert (head["plan_id"], head["pid"], head["host"]) == (plan["plan_id"], os.getpid(), socket.gethostname())
    assert head["run_id"] and isinstance(head["bindings"], dict)
    creates = [e for e in entries if e.get("kind") == "create"]
    planned = {c["address"]: c for c in plan["changes"] if c["action"] == "create"}
    assert len(creates) == len(planned) == 35
    for entry in creates:
        change = planned[entry["user"]]
        assert (entry["login_id"], entry["source_id"]) == (change["after"]["login_id"], change["source_id"])
        assert entry["pbx_user_id"] is None and isinstance(entry["step"], int)  # written before the request
    others = [e for e in entries[1:] if e["kind"] != "create"]
    assert others and all(e["pbx_user_id"] and "login_id" not in e and "source_id" not in e for e in others)
    # the state a kill -9 right after the PBX's flush leaves: journal kept, snapshot and audit not yet written
    (demo / "states" / "pbx.yaml").write_bytes(before)
    (demo / "states" / "audit.jsonl").unlink()
    head["pid"] = dead_pid()
    lines = [json.dumps(head)] + [json.dumps(e) for e in entries[1:]]
    journal.path_in(demo / "states").write_text("\n".join(lines) + "\n")
    code, _, err = cli("refresh", "-c", cfg)
    assert code == 0 and "recovered from the journal" in err, err
    assert not journal.path_in(demo / "states").exists()
    assert len(load_snapshot(demo / "states" / "pbx.yaml").bindings) == 37  # 2 by e-mail, 35 created and found
    record = json.loads((demo / "states" / "audit.jsonl").read_text())
    assert (record["result"], record["plan_id"], record["run_id"]) == ("recovered", plan["plan_id"], head["run_id"])
    assert (record["created_found"], record["created_missing"]) == (35, [])
    assert record["steps_started"] == len(entries) - 1
    assert not [f for f in open_files() if f.endswith(journal.NAME)]  # the apply closed its journal


# -- the invariants' refusal ----------------------------------------------------------------------------


def test_a_refusal_names_the_first_five_violations_and_counts_the_rest():
    assert _listed([f"v{i}" for i in range(5)]) == "v0; v1; v2; v3; v4"
    assert _listed([f"v{i}" for i in range(7)]) == "v0; v1; v2; v3; v4; and 2 more"
    assert _listed(["v0"]) == "v0"


def test_a_plan_of_another_configuration_is_refused_with_the_way_out(demo, saved_plan):
    cfg = demo / "adsync.yaml"
    cfg.write_text(cfg.read_text().replace("licenses: 40", "licenses: 39"))
    config = load_config(cfg)
    with pytest.raises(PlanRefused) as err:
        check_before_apply(load_plan(saved_plan), saved_plan, config, parse_time("2000-01-01T00:00:00Z"), set(), None)
    assert str(err.value) == (
        f"{saved_plan}: the plan was made with another configuration than {config.path} (its sha256 differs); "
        "make a new plan with this configuration."
    )


def test_a_signed_plan_passes_and_an_unsigned_one_is_refused_naming_the_file(cli, signed):  # noqa: F811
    path = make_plan(cli, signed)
    plan, config, now = load_plan(path), load_config(signed / "adsync.yaml"), parse_time("2000-01-01T00:00:00Z")
    check_before_apply(plan, path, config, now, set(), None)
    edit_plan(path, lambda doc: doc.pop("signature"), reseal=True)
    with pytest.raises(PlanRefused) as err:
        check_before_apply(load_plan(path), path, config, now, set(), None)
    assert str(err.value) == (
        f"{path}: the plan is not signed, but {config.path} asks for signed plans (plan.signing_key_env); make a "
        f"new plan where {KEY_ENV} is set."
    )


def stale_setup(cli, demo, saved_plan):
    assert cli("refresh", "-c", demo / "adsync.yaml")[0] == 0  # the PBX as the plan saw it
    snapshot = load_snapshot(demo / "states" / "pbx.yaml")
    plan = load_plan(saved_plan)
    assert snapshot.fingerprint == plan.base_state["fingerprint"]
    return plan, snapshot


def with_user(live, pbx_id: str, **changes):
    return replace(live, users={**live.users, pbx_id: replace(live.users[pbx_id], **changes)})


def test_a_stale_plan_without_the_snapshot_it_was_made_on_names_the_changed_users(cli, demo, saved_plan):
    plan, snapshot = stale_setup(cli, demo, saved_plan)
    targets = [a for a in plan.changes if a.pbx_user_id]
    first, second = targets[0], targets[1]
    live = with_user(with_user(snapshot.state, first.pbx_user_id, last_name="Hand"), second.pbx_user_id, email="x@y")
    for previous in (None, replace(snapshot, fingerprint="sha256:other")):  # none, or of another state
        with pytest.raises(PlanRefused) as err:
            pipeline._refuse_if_stale(plan, saved_plan, live, previous)
        assert str(err.value) == (
            f"{saved_plan}: the plan is stale: the PBX changed since it was made ({first.address} (PBX user "
            f"{first.pbx_user_id}) differs from the plan's 'before'; {second.address} (PBX user "
            f"{second.pbx_user_id}) differs from the plan's 'before'). Nothing was changed; make a new plan."
        )
    pipeline._refuse_if_stale(plan, saved_plan, snapshot.state, None)  # unchanged: not stale


def test_a_stale_plan_whose_users_are_unchanged_still_says_the_pbx_differs(cli, demo, saved_plan):
    plan, snapshot = stale_setup(cli, demo, saved_plan)
    targeted = {a.pbx_user_id for a in plan.changes}
    bystander = next(i for i in snapshot.state.users if i not in targeted)
    live = with_user(snapshot.state, bystander, last_name="Hand")
    with pytest.raises(PlanRefused) as err:
        pipeline._refuse_if_stale(plan, saved_plan, live, None)
    assert str(err.value) == (
        f"{saved_plan}: the plan is stale: the PBX changed since it was made (the PBX differs from the state the "
        "plan was made against). Nothing was changed; make a new plan."
    )


def test_a_stale_plan_names_the_groups_renamed_on_the_pbx_and_no_other(cli, demo, saved_plan):
    plan, snapshot = stale_setup(cli, demo, saved_plan)
    renamed, kept, gone = PbxGroup("Sales"), PbxGroup("Support"), PbxGroup("Old")
    live = replace(snapshot.state, groups={"70": PbxGroup("Sales by hand"), "71": kept})  # 72 was deleted
    plan = replace(
        plan,
        changes=(),
        group_changes=(
            GroupAction("group.sales", "update", "70", "map:sales", renamed, renamed),
            GroupAction("group.support", "update", "71", "map:support", kept, kept),
            GroupAction("group.old", "orphan", "72", "map:old", gone, gone),
            GroupAction("group.new", "create", None, "map:new", None, PbxGroup("New")),
        ),
    )
    with pytest.raises(PlanRefused) as err:
        pipeline._refuse_if_stale(plan, saved_plan, live, None)
    assert str(err.value) == (
        f"{saved_plan}: the plan is stale: the PBX changed since it was made (group.sales (PBX group 70) "
        "changed). Nothing was changed; make a new plan."
    )


# -- expiry ---------------------------------------------------------------------------------------------


@pytest.fixture
def saved_plan(cli, demo):
    assert cli("plan", "-c", demo / "adsync.yaml", "-o", demo / "p.plan.json")[0] == 0
    return demo / "p.plan.json"


def test_a_plan_has_expired_at_the_second_of_expires_at(saved_plan):
    plan = load_plan(saved_plan)
    expires = parse_time(plan.expires_at)
    check_applicable(plan, saved_plan, expires - timedelta(seconds=1), set())
    with pytest.raises(PlanRefused, match="expired at"):
        check_applicable(plan, saved_plan, expires, set())


def test_an_expiry_that_is_no_time_is_refused_with_a_sentence(cli, demo, saved_plan):
    # the schema's shape, but no time; resealed, so that the expiry check is the one that speaks
    edit_plan(saved_plan, lambda doc: doc.update(expires_at="2026-13-45T99:99:99Z"), reseal=True)
    code, _, err = cli("apply", "-c", demo / "adsync.yaml", saved_plan)
    assert code == 1
    assert f"{saved_plan}: expires_at '2026-13-45T99:99:99Z' is no valid time; make a new plan." in err


# -- protection of administrators (R10) -----------------------------------------------------------------

JMUELLER_DN_B64 = "Q049SsO8cmdlbiBNw7xsbGVyLE9VPVN0YWZmLERDPWV4YW1wbGUsREM9Y29t"


def applied_demo(cli, demo) -> None:
    """The demo applied once: Jürgen Müller (PBX user 3, login 20) is now a PBX administrator, bound to his
    directory entry, which is in PBX-Admins."""
    cfg = demo / "adsync.yaml"
    assert cli("plan", "-c", cfg, "-o", demo / "p.plan.json")[0] == 0
    assert cli("apply", "-c", cfg, demo / "p.plan.json")[0] == 0
    pbx = json.loads((demo / "pbx.yaml").read_text())
    assert next(u for u in pbx["users"] if u["id"] == 3)["is_admin"] is True


def edit_ldif(demo, old: str, new: str) -> None:
    path = demo / "directory.ldif"
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new), encoding="utf-8")


def plan_json(cli, demo) -> dict:
    code, out, err = cli("plan", "-c", demo / "adsync.yaml", "--json")
    assert code == 0, err
    return json.loads(out)


def test_an_administrator_this_tool_bound_as_one_is_managed(cli, demo):
    applied_demo(cli, demo)
    edit_ldif(demo, "sn:: TcO8bGxlcg==", "sn: Mueller-Neu")
    plan = plan_json(cli, demo)
    [change] = [c for c in plan["changes"] if c["address"] == "user.jmueller"]
    assert change["action"] == "update" and change["fields"] == ["last_name"]
    assert change["after"]["last_name"] == "Mueller-Neu" and change["after"]["role"] == "admin"


def test_an_administrator_whose_directory_user_left_the_admin_group_is_protected(cli, demo):
    applied_demo(cli, demo)
    edit_ldif(demo, f"member:: {JMUELLER_DN_B64}\n", "")
    edit_ldif(
        demo,
        "member: CN=Vertrieb,OU=Groups,DC=example,DC=com\n",
        f"member: CN=Vertrieb,OU=Groups,DC=example,DC=com\nmember:: {JMUELLER_DN_B64}\n",
    )
    edit_ldif(demo, "sn:: TcO8bGxlcg==", "sn: Mueller-Neu")
    plan = plan_json(cli, demo)
    assert not [c for c in plan["changes"] if c["pbx_user_id"] == "3" or c["address"] == "user.jmueller"]
    assert ("PROTECTED_USER", "user.jmueller") in {(d["code"], d["address"]) for d in plan["diagnostics"]}


def test_an_administrator_listed_in_protect_logins_is_protected_even_when_bound_as_one(cli, demo):
    applied_demo(cli, demo)
    cfg = demo / "adsync.yaml"
    cfg.write_text(cfg.read_text().replace('logins: ["0001", "90"]', 'logins: ["0001", "90", "20"]'))
    edit_ldif(demo, "sn:: TcO8bGxlcg==", "sn: Mueller-Neu")
    plan = plan_json(cli, demo)
    assert not [c for c in plan["changes"] if c["pbx_user_id"] == "3" or c["address"] == "user.jmueller"]
    assert ("PROTECTED_USER", "user.jmueller") in {(d["code"], d["address"]) for d in plan["diagnostics"]}


# -- R9 and the fingerprint -----------------------------------------------------------------------------


def test_an_orphan_keeps_only_its_primary_internal_number_and_is_marked_once():
    from adsync_plan.diff import orphaned
    from adsync_plan.model import PhoneUser

    user = PhoneUser.from_dict(
        {
            "login_id": "30",
            "first_name": "Gustav",
            "last_name": "Gegangen",
            "email": "g@example.com",
            "role": "user",
            "primary_internal_number": "30",
            "internal_numbers": ["30", "31"],
            "external_numbers": ["+4970222797830"],
            "fax_numbers": ["+4970222797899"],
        }
    )
    after = orphaned(user)
    assert (after.last_name, after.internal_numbers, after.external_numbers, after.fax_numbers) == (
        "-Gegangen",
        ("30",),
        (),
        (),
    )
    assert orphaned(after) == after  # the mark is put once
    assert (after.login_id, after.first_name, after.email, after.primary_internal_number) == (
        "30",
        "Gustav",
        "g@example.com",
        "30",
    )


def test_the_snapshot_records_administrators_and_its_fingerprint_is_the_sha256_of_its_content(cli, demo):
    import hashlib

    _, doc = refreshed(cli, demo)
    assert {i: u["is_admin"] for i, u in doc["users"].items()} == {
        "1": True,
        "2": False,
        "3": False,
        "4": False,
        "5": False,
    }
    # computed here with the standard library (compact, key-sorted JSON in UTF-8), not with the code's helper
    content = json.dumps(
        {"users": doc["users"], "numbers": doc["numbers"]}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert doc["fingerprint"] == "sha256:" + hashlib.sha256(content.encode("utf-8")).hexdigest()


def test_a_snapshot_breaking_the_schema_names_the_file_the_line_and_the_key(tmp_path):
    path = tmp_path / "pbx.yaml"
    path.write_text(
        "format_version: 1\nlineage: l\nserial: 1\nfingerprint: sha256:0\nusers: {}\nnumbers: {}\nbindings: {}\n"
    )  # hand-written YAML, so the line can be named
    with pytest.raises(InputError) as err:
        load_snapshot(path)
    assert str(err.value).startswith(f"{path}:4: fingerprint: 'sha256:0' has the wrong form")


# -- matching: bindings first, e-mail only among users not bound to someone present ------------------------

NEWCOMER = """
dn: CN=Neu Ling,OU=Staff,DC=example,DC=com
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: user
cn: Neu Ling
objectGUID:: AAECAwQFBgcICQoLDA0ODw==
userAccountControl: 512
sAMAccountName: aling
givenName: Neu
sn: Ling
mail: juergen.mueller@example.com
telephoneNumber: 15
"""


def test_a_binding_survives_an_e_mail_change_and_the_old_address_matches_no_newcomer(cli, demo):
    """Jürgen Müller (bound to PBX user 3) gets a new address; a newcomer gets his old one. The binding keeps
    Jürgen on PBX user 3 (SPEC 7), and the newcomer cannot take PBX user 3 by e-mail: it is created. (Its
    account, aling, is matched before jmueller, so a wrong e-mail match could not hide behind his claim.)"""
    applied_demo(cli, demo)
    cfg = demo / "adsync.yaml"
    cfg.write_text(cfg.read_text().replace("licenses: 40", "licenses: 41"))  # room for the newcomer
    edit_ldif(demo, "mail: juergen.mueller@example.com\n", "mail: juergen.neu@example.com\n")
    (demo / "directory.ldif").write_text((demo / "directory.ldif").read_text(encoding="utf-8") + NEWCOMER)
    edit_ldif(
        demo,
        "member: CN=Paul Becker,OU=Staff,DC=example,DC=com\n",
        "member: CN=Paul Becker,OU=Staff,DC=example,DC=com\nmember: CN=Neu Ling,OU=Staff,DC=example,DC=com\n",
    )
    plan = plan_json(cli, demo)
    changes = {c["address"]: c for c in plan["changes"]}
    assert changes["user.jmueller"]["action"] == "update" and changes["user.jmueller"]["pbx_user_id"] == "3"
    assert changes["user.jmueller"]["fields"] == ["email"]
    assert changes["user.aling"]["action"] == "create" and changes["user.aling"]["pbx_user_id"] is None
    assert [c["address"] for c in plan["changes"] if c["pbx_user_id"] == "3"] == ["user.jmueller"]
    assert plan["summary"]["orphan"] == 0


def add_pbx_users(demo, *users: dict) -> None:
    path = demo / "pbx.yaml"
    pbx = json.loads(path.read_text())
    for user in users:
        pbx["users"].append({"is_admin": False, "last_name": "Hand", "primary_internal_number": None, **user})
    path.write_text(json.dumps(pbx))


def test_e_mail_matching_skips_bound_users_and_takes_the_lowest_id(cli, demo):
    """After the first apply PBX users 3 and 4 are bound; Gustav (PBX user 5, unbound) comes back to the
    directory, and a hand-made PBX user 99 shares his address: he is matched by e-mail to 5, the lowest id."""
    applied_demo(cli, demo)
    add_pbx_users(demo, {"id": 99, "login_id": "19", "first_name": "Gustav", "email": "gustav.gegangen@example.com"})
    cfg = demo / "adsync.yaml"
    cfg.write_text(cfg.read_text().replace("licenses: 40", "licenses: 42").replace("max_orphans: 5", "max_orphans: 9"))
    returning = NEWCOMER.replace("mail: juergen.mueller@example.com", "mail: gustav.gegangen@example.com")
    (demo / "directory.ldif").write_text((demo / "directory.ldif").read_text(encoding="utf-8") + returning)
    edit_ldif(
        demo,
        "member: CN=Paul Becker,OU=Staff,DC=example,DC=com\n",
        "member: CN=Paul Becker,OU=Staff,DC=example,DC=com\nmember: CN=Neu Ling,OU=Staff,DC=example,DC=com\n",
    )
    plan = plan_json(cli, demo)
    changes = {c["address"]: c for c in plan["changes"]}
    assert changes["user.aling"]["action"] == "update" and changes["user.aling"]["pbx_user_id"] == "5"


def test_orphans_come_in_the_order_of_their_numeric_ids(cli, demo):
    add_pbx_users(
        demo,
        {"id": 9, "login_id": "18", "first_name": "Neun", "email": "neun@example.com"},
        {"id": 10, "login_id": "19", "first_name": "Zehn", "email": "zehn@example.com"},
    )
    cfg = demo / "adsync.yaml"
    cfg.write_text(cfg.read_text().replace("max_orphans: 5", "max_orphans: 9"))
    plan = plan_json(cli, demo)
    assert [c["pbx_user_id"] for c in plan["changes"] if c["action"] == "orphan"] == ["5", "9", "10"]


def test_protected_user_diagnostics_say_how_the_user_was_matched(cli, demo, tmp_path):
    applied_demo(cli, demo)
    cfg = demo / "adsync.yaml"
    cfg.write_text(cfg.read_text().replace('logins: ["0001", "90"]', 'logins: ["0001", "90", "20"]'))
    [found] = [d for d in plan_json(cli, demo)["diagnostics"] if d["code"] == "PROTECTED_USER"]
    assert "matches protected PBX user 3 (login 20, by binding); it is never changed." in found["message"]
    case = copy_case("r10_protected", tmp_path)
    code, out, err = cli("plan", "-c", case / "adsync.yaml", "--json")
    messages = [d["message"] for d in json.loads(out)["diagnostics"] if d["code"] == "PROTECTED_USER"]
    assert messages and all(", by e-mail); it is never changed." in m for m in messages), messages


def test_a_pbx_user_without_e_mail_is_matched_by_no_directory_user_without_one(cli, demo):
    """A held directory user without an address (R1) must not claim the PBX user without one: that PBX user has
    no counterpart, so it is orphaned."""
    add_pbx_users(demo, {"id": 9, "login_id": "18", "first_name": "Ohne", "email": ""})
    cfg = demo / "adsync.yaml"
    cfg.write_text(cfg.read_text().replace("max_orphans: 5", "max_orphans: 9"))
    no_mail = NEWCOMER.replace("mail: juergen.mueller@example.com\n", "")
    (demo / "directory.ldif").write_text((demo / "directory.ldif").read_text(encoding="utf-8") + no_mail)
    edit_ldif(
        demo,
        "member: CN=Paul Becker,OU=Staff,DC=example,DC=com\n",
        "member: CN=Paul Becker,OU=Staff,DC=example,DC=com\nmember: CN=Neu Ling,OU=Staff,DC=example,DC=com\n",
    )
    plan = plan_json(cli, demo)
    assert ("MISSING_EMAIL", "user.aling") in {(d["code"], d["address"]) for d in plan["diagnostics"]}
    assert "9" in [c["pbx_user_id"] for c in plan["changes"] if c["action"] == "orphan"]
