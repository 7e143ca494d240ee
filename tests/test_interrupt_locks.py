"""Locks that tell the truth: every command that writes states/ takes the lock, a run removes only its own,
a dead holder's lock on this host is taken over, every broken lock file gets a sentence, and state files
keep their mode and their symbolic links."""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest

from adsync_plan.state import Lock
from tests.test_lifecycle import dead_pid


@pytest.fixture
def project(demo):
    (demo / "adsync.yaml").write_text((demo / "adsync.yaml").read_text() + "state:\n  lock_timeout: 1s\n")
    return demo


def lock_path(folder):
    return folder / "states" / ".adsync.lock"


def write_lock(folder, **info) -> dict:
    lock = {"id": "dead-run", "who": "ci", "host": socket.gethostname(), "pid": dead_pid(), "plan_id": "p"}
    lock.update(info)
    (folder / "states").mkdir(exist_ok=True)
    lock_path(folder).write_text(json.dumps(lock))
    return lock


def make_broken(folder, kind: str) -> None:
    (folder / "states").mkdir(exist_ok=True)
    path = lock_path(folder)
    if kind == "empty":
        path.write_text("")
    elif kind == "not JSON":
        path.write_text("{half a lock")
    elif kind == "folder":
        path.mkdir()
    elif kind == "symlink":
        (folder / "elsewhere.txt").write_text(json.dumps({"id": "x"}))
        path.symlink_to(folder / "elsewhere.txt")
    elif kind == "dangling symlink":
        path.symlink_to(folder / "gone.txt")


@pytest.mark.parametrize("kind", ["empty", "not JSON", "folder", "symlink", "dangling symlink"])
def test_a_broken_lock_file_is_named_by_apply_and_removed_by_force_unlock(cli, project, kind):
    cfg = project / "adsync.yaml"
    assert cli("plan", "-c", cfg, "-o", project / "p.plan.json")[0] == 0
    make_broken(project, kind)
    code, _, err = cli("apply", "-c", cfg, project / "p.plan.json")
    assert code == 1 and "so no run can take the lock" in err and "force-unlock broken" in err, err
    code, _, err = cli("force-unlock", "-c", cfg, "some-id")
    assert code == 1 and "it has no id" in err and os.path.lexists(lock_path(project))
    code, out, err = cli("force-unlock", "-c", cfg, "broken")
    assert code == 0 and "Removed the broken lock file" in out, err
    assert not os.path.lexists(lock_path(project))
    if kind == "symlink":
        assert (project / "elsewhere.txt").exists()  # the link is removed, never what it points to
    code, _, err = cli("apply", "-c", cfg, project / "p.plan.json")
    assert code == 0, err


def test_a_lock_folder_with_files_in_it_is_left_alone_with_a_sentence(cli, project):
    lock_path(project).parent.mkdir()
    lock_path(project).mkdir()
    (lock_path(project) / "keep.txt").write_text("x")
    code, _, err = cli("force-unlock", "-c", project / "adsync.yaml", "broken")
    assert code == 1 and "is a folder with files in it" in err and (lock_path(project) / "keep.txt").exists()


def test_the_lock_of_a_dead_run_on_this_host_is_taken_over_after_saying_so(cli, project):
    cfg = project / "adsync.yaml"
    cli("plan", "-c", cfg, "-o", project / "p.plan.json")
    write_lock(project)
    code, _, err = cli("apply", "-c", cfg, project / "p.plan.json")
    assert code == 0, err
    assert "the run that held the lock (id dead-run" in err and "taking the lock over" in err
    assert not lock_path(project).exists()


def test_the_lock_of_another_host_still_needs_force_unlock(cli, project):
    cfg = project / "adsync.yaml"
    cli("plan", "-c", cfg, "-o", project / "p.plan.json")
    write_lock(project, host="another-host.example.com")
    code, _, err = cli("apply", "-c", cfg, project / "p.plan.json")
    assert code == 1 and "another run holds the lock (id dead-run" in err and "another-host" in err
    code, out, err = cli("force-unlock", "-c", cfg, "dead-run")
    assert code == 0, err
    assert cli("apply", "-c", cfg, project / "p.plan.json")[0] == 0


def test_a_run_removes_only_its_own_lock(project):
    mine = Lock(project / "states", "mine", "apply", timeout=0).__enter__()
    other = write_lock(project, id="someone-elses", pid=os.getpid())  # force-unlocked, and another run took it
    mine.__exit__(None, None, None)
    assert json.loads(lock_path(project).read_text())["id"] == other["id"]


def test_refresh_takes_the_lock(cli, project):
    cfg = project / "adsync.yaml"
    with Lock(project / "states", "running", "apply", timeout=0):
        code, _, err = cli("refresh", "-c", cfg)
    assert code == 1 and "another run holds the lock" in err
    assert not (project / "states" / "pbx.yaml").exists()
    assert cli("refresh", "-c", cfg)[0] == 0


def test_sync_takes_the_lock(cli, project):
    with Lock(project / "states", "running", "apply", timeout=0):
        code, _, err = cli("sync", "-c", project / "adsync.yaml", "--yes")
    assert code == 1 and "another run holds the lock" in err
    assert json.loads((project / "pbx.yaml").read_text())["users"][-1]["id"] < 10  # nothing created


def test_state_files_keep_their_mode(cli, project):
    cfg = project / "adsync.yaml"
    assert cli("refresh", "-c", cfg)[0] == 0
    snapshot, pbx = project / "states" / "pbx.yaml", project / "pbx.yaml"
    snapshot.chmod(0o644)
    pbx.chmod(0o640)
    cli("plan", "-c", cfg, "-o", project / "p.plan.json")
    assert cli("apply", "-c", cfg, project / "p.plan.json")[0] == 0
    assert stat.S_IMODE(snapshot.stat().st_mode) == 0o644
    assert stat.S_IMODE(pbx.stat().st_mode) == 0o640


def test_a_state_file_that_is_a_symlink_is_written_through(cli, project):
    cfg = project / "adsync.yaml"
    (project / "states").mkdir()
    (project / "committed").mkdir()
    (project / "states" / "pbx.yaml").symlink_to(project / "committed" / "pbx.yaml")
    assert cli("refresh", "-c", cfg)[0] == 0
    assert (project / "states" / "pbx.yaml").is_symlink()
    assert json.loads((project / "committed" / "pbx.yaml").read_text())["serial"] == 1


def test_a_state_file_linked_into_a_missing_folder_is_refused_with_a_sentence(cli, project):
    (project / "states").mkdir()
    (project / "states" / "pbx.yaml").symlink_to(project / "nowhere" / "pbx.yaml")
    code, _, err = cli("refresh", "-c", project / "adsync.yaml")
    assert code == 1 and "is a symbolic link to" in err and "whose folder does not exist" in err
    assert (project / "states" / "pbx.yaml").is_symlink() and not lock_path(project).exists()
