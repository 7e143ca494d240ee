"""Ctrl-C, SIGTERM and kill -9 of a real `adsync-plan` process: the step in flight finishes, nothing is
half-written, the snapshot keeps every binding, the audit says what happened, and a killed run is recovered
from its journal by the next command that takes the lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from adsync_plan import interrupts, providers
from adsync_plan.errors import PbxError
from adsync_plan.interrupts import Deferred
from adsync_plan.model import NO_PROGRESS
from adsync_plan.planfile import load_plan
from adsync_plan.providers.file import FileProvider
from adsync_plan.providers.starface import StarfaceProvider
from adsync_plan.steps import plan_steps
from tests.servers.starface import PASSWORD_ENV, StarfaceServer, seed_from_pbx_file

ROOT = Path(__file__).resolve().parent.parent
HOOK = "ADSYNC_PLAN_TEST_SIGNAL"


def command(*args, **env) -> list:
    return [sys.executable, "-m", "adsync_plan", *map(str, args)]


def environment(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), PASSWORD_ENV: StarfaceServer().password, **extra}


def run(*args, **extra) -> subprocess.CompletedProcess:
    """`adsync-plan ARGS` in its own process (so it can be signalled and killed)."""
    return subprocess.run(command(*args), capture_output=True, text=True, env=environment(**extra), timeout=120)


def audit(folder: Path) -> list[dict]:
    path = folder / "states" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def leftovers(folder: Path) -> list[str]:
    """Lock, journal and temporary files: none may remain after a command ends, however it ended."""
    names = [p.name for p in (folder / "states").iterdir()] + [p.name for p in folder.iterdir()]
    return [n for n in names if n.endswith(".tmp") or n in (".adsync.lock", ".adsync.journal")]


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def converge(cli, folder: Path, users: int, bindings: int) -> None:
    """plan and apply again, then nothing is left to do: no duplicate, no lost binding."""
    cfg = folder / "adsync.yaml"
    code, _, err = cli("plan", "-c", cfg, "-o", folder / "again.plan.json")
    assert code == 0, err
    code, _, err = cli("apply", "-c", cfg, folder / "again.plan.json")
    assert code == 0, err
    code, out, err = cli("plan", "-c", cfg, "--detailed-exitcode")
    assert code == 0 and "No changes." in out, out + err
    snapshot = json.loads((folder / "states" / "pbx.yaml").read_text())
    logins = [u["login_id"] for u in snapshot["users"].values()]
    assert len(logins) == len(set(logins)) == users
    assert len(snapshot["bindings"]) == bindings


@pytest.mark.parametrize("sig", ["INT", "TERM"])
def test_a_stop_signal_during_apply_finishes_the_step_then_writes_snapshot_bindings_and_audit(cli, demo, sig):
    cfg = demo / "adsync.yaml"
    cli("plan", "-c", cfg, "-o", demo / "p.plan.json")
    steps = plan_steps(load_plan(demo / "p.plan.json").changes)
    created = sum(1 for s in steps[:20] if s.kind == "create")
    assert len(steps) == 156 and 0 < created < 35
    done = run("apply", "-c", cfg, demo / "p.plan.json", **{HOOK: f"{sig}@step:20"})
    assert done.returncode == 130, done.stderr
    said = error_line(done.stderr)
    assert "stopped apply after 20 of 156 steps; 136 were not started" in said
    assert "run plan again to converge" in said and "Traceback" not in done.stderr
    record = audit(demo)[-1]
    assert len(audit(demo)) == 1
    assert record["result"] == "interrupted" and record["steps_done"] == 20 and record["steps_not_done"] == 136
    assert leftovers(demo) == []
    snapshot = json.loads((demo / "states" / "pbx.yaml").read_text())
    assert len(snapshot["bindings"]) == 2 + created  # matched by e-mail, and every user created so far
    assert len(json.loads((demo / "pbx.yaml").read_text())["users"]) == 5 + created  # the PBX file was flushed
    converge(cli, demo, users=40, bindings=37)


def test_kill_9_after_the_pbx_was_written_is_recovered_by_the_next_command(cli, demo):
    cfg = demo / "adsync.yaml"
    cli("plan", "-c", cfg, "-o", demo / "p.plan.json")
    killed = run("apply", "-c", cfg, demo / "p.plan.json", **{HOOK: "KILL@flushed"})
    assert killed.returncode == -signal.SIGKILL
    assert (demo / "states" / ".adsync.journal").exists() and (demo / "states" / ".adsync.lock").exists()
    assert len(json.loads((demo / "pbx.yaml").read_text())["users"]) == 40  # on the PBX, bound nowhere yet
    code, _, err = cli("refresh", "-c", cfg)
    assert code == 0, err
    assert "is gone; taking the lock over" in err and "recovered from the journal" in err
    assert leftovers(demo) == []
    assert [r["result"] for r in audit(demo)] == ["recovered"]
    snapshot = json.loads((demo / "states" / "pbx.yaml").read_text())
    assert len(snapshot["bindings"]) == 37  # every created user bound to its directory user
    converge(cli, demo, users=40, bindings=37)
    assert [r["result"] for r in audit(demo)] == ["recovered", "applied"]  # one record per apply


def test_kill_9_before_the_file_pbx_was_written_recovers_nothing_and_loses_nothing(cli, demo):
    cfg = demo / "adsync.yaml"
    cli("plan", "-c", cfg, "-o", demo / "p.plan.json")
    pbx = (demo / "pbx.yaml").read_bytes()
    killed = run("apply", "-c", cfg, demo / "p.plan.json", **{HOOK: "KILL@step:60"})
    assert killed.returncode == -signal.SIGKILL
    assert (demo / "pbx.yaml").read_bytes() == pbx  # the file PBX writes at its flush only
    # the file PBX changed nothing, so its journal need not be on disk yet (it is fsynced before the flush)
    assert (demo / "states" / ".adsync.journal").exists()
    code, out, err = cli("force-unlock", "-c", cfg, "any-id")  # the dead run's lock, recovered on the way
    assert code == 1 and "the lock's id is" in err
    lock = json.loads((demo / "states" / ".adsync.lock").read_text())
    code, out, err = cli("force-unlock", "-c", cfg, lock["id"])
    assert code == 0 and "Recovered the killed apply" in out and "0 new user(s) bound" in out, out + err
    record = audit(demo)[-1]
    assert record["result"] == "recovered" and record["created_found"] == 0
    converge(cli, demo, users=40, bindings=37)


def test_a_second_ctrl_c_is_ignored_for_a_few_seconds_then_stops_at_once(monkeypatch):
    now = [1000.0]  # the grace is measured on this clock, moved by the test: a slow machine cannot cross it
    monkeypatch.setattr(interrupts, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    with Deferred() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert stop.requested and stop.signal_name == "Ctrl-C (SIGINT)"
        now[0] += interrupts.GRACE - 0.1
        os.kill(os.getpid(), signal.SIGTERM)  # within the grace: ignored
        time.sleep(0.01)
        now[0] += 0.2
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


# -- against the STARFACE test server: a real signal while a request is in flight -------------------------


@pytest.fixture
def starface_demo(demo, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, StarfaceServer().password)
    monkeypatch.setattr(StarfaceProvider, "backoff", 0.01)
    with StarfaceServer(licenses=40) as srv:
        seed_from_pbx_file(srv, json.loads((demo / "pbx.yaml").read_text(encoding="utf-8")))
        config = (demo / "adsync.yaml").read_text()
        starface = f"  type: starface\n  url: {srv.url}\n  login_id: '{srv.login}'\n  password_env: {PASSWORD_ENV}\n"
        (demo / "adsync.yaml").write_text(config.replace("  type: file\n  path: pbx.yaml\n", starface))
        (demo / "pbx.yaml").unlink()
        yield demo, srv


def signal_during(srv: StarfaceServer, fault, args: list, sig: int, folder: Path) -> subprocess.CompletedProcess:
    """Start `adsync-plan ARGS`, send it `sig` while the server holds the faulty request (a "slow" fault with
    hold=True: held until released, so the signal arrives while it is in flight however slowly this machine
    runs), release the answer `fault.delay` s later, wait."""
    assert fault.kind == "slow" and fault.hold
    proc = subprocess.Popen(
        command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment()
    )
    deadline = time.monotonic() + 60
    while not fault.fired and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fault.fired, proc.communicate()
    proc.send_signal(sig)
    time.sleep(fault.delay)  # the command takes the signal in while the request is still in flight
    fault.release()
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_ctrl_c_while_a_create_is_in_flight_lets_it_finish_and_binds_the_user(cli, starface_demo):
    demo, srv = starface_demo
    cfg = demo / "adsync.yaml"
    assert cli("plan", "-c", cfg, "-o", demo / "p.plan.json")[0] == 0
    users_before = len(srv.data.users)
    fault = srv.fail(3, "slow", method="POST", path="/users", after=True, delay=1.5, hold=True)
    # one step at a time, so "no fourth" holds (test_parallel_apply.py: the same with users side by side)
    apply = ["apply", "-c", cfg, demo / "p.plan.json", "--parallelism", "1"]
    done = signal_during(srv, fault, apply, signal.SIGINT, demo)
    assert done.returncode == 130, done.stderr
    assert "run plan again to converge" in error_line(done.stderr)
    assert len(srv.data.users) == users_before + 3  # the third create was answered, not cut off; no fourth
    snapshot = json.loads((demo / "states" / "pbx.yaml").read_text())
    assert len(snapshot["users"]) == users_before + 3 and len(snapshot["bindings"]) == 2 + 3
    assert audit(demo)[-1]["result"] == "interrupted" and leftovers(demo) == []
    converge(cli, demo, users=40, bindings=37)
    srv.check_consistency()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("args", [["refresh"], ["plan", "-o", "p.plan.json"], ["sync", "--yes"]])
def test_refresh_plan_and_sync_stopped_end_with_a_sentence_and_leave_nothing_behind(starface_demo, args, sig):
    demo, srv = starface_demo
    (demo / "states").mkdir(exist_ok=True)
    fault = srv.fail(1, "slow", method="GET", path="/users", delay=1.5, hold=True)
    done = signal_during(srv, fault, [args[0], "-c", demo / "adsync.yaml", *args[1:]], sig, demo)
    assert done.returncode == 130, done.stderr
    assert "stopped by Ctrl-C or SIGTERM before it finished" in error_line(done.stderr)
    assert "Traceback" not in done.stderr
    assert leftovers(demo) == [] and not (demo / "p.plan.json").exists()
    assert not (demo / "states" / "pbx.yaml").exists() and audit(demo) == []


class UnreadableAfterApply(FileProvider):
    """The file PBX, which stops answering reads after the first (as a PBX that goes away mid-apply)."""

    reads = 0

    def read(self, progress=NO_PROGRESS):
        UnreadableAfterApply.reads += 1
        if UnreadableAfterApply.reads > 1:
            raise PbxError("the PBX did not answer.")
        return super().read(progress)


def test_when_the_pbx_cannot_be_read_after_apply_the_snapshot_adds_the_steps_done(cli, demo, monkeypatch):
    cfg = demo / "adsync.yaml"
    assert cli("plan", "-c", cfg, "-o", demo / "p.plan.json")[0] == 0
    monkeypatch.setitem(providers.PROVIDERS, "file", "tests.test_interrupt:UnreadableAfterApply")
    UnreadableAfterApply.reads = 0
    code, _, err = cli("apply", "-c", cfg, demo / "p.plan.json")
    assert code == 0 and "could not read the PBX after apply" in err, err
    replayed = json.loads((demo / "states" / "pbx.yaml").read_text())
    assert len(replayed["bindings"]) == 37  # no created user's binding lost
    monkeypatch.undo()
    assert cli("refresh", "-c", cfg)[0] == 0
    read_back = json.loads((demo / "states" / "pbx.yaml").read_text())
    # every kind of step (release, create, update, admin, assign, primary) replayed as the PBX carried it out
    assert (replayed["users"], replayed["numbers"]) == (read_back["users"], read_back["numbers"])
    assert read_back["fingerprint"] == replayed["fingerprint"] and read_back["serial"] == replayed["serial"]


def test_kill_9_between_the_audit_and_removing_the_journal_writes_no_second_record(cli, demo):
    cfg = demo / "adsync.yaml"
    cli("plan", "-c", cfg, "-o", demo / "p.plan.json")
    killed = run("apply", "-c", cfg, demo / "p.plan.json", **{HOOK: "KILL@audited"})
    assert killed.returncode == -signal.SIGKILL and (demo / "states" / ".adsync.journal").exists()
    assert [r["result"] for r in audit(demo)] == ["applied"]
    code, _, err = cli("refresh", "-c", cfg)
    assert code == 0, err
    assert [r["result"] for r in audit(demo)] == ["applied"] and leftovers(demo) == []
    assert len(json.loads((demo / "states" / "pbx.yaml").read_text())["bindings"]) == 37
    assert cli("plan", "-c", cfg, "--detailed-exitcode")[0] == 0


def test_a_journal_that_cannot_be_recovered_yet_is_kept_with_a_sentence(cli, demo):
    cfg = demo / "adsync.yaml"
    cli("plan", "-c", cfg, "-o", demo / "p.plan.json")
    assert run("apply", "-c", cfg, demo / "p.plan.json", **{HOOK: "KILL@flushed"}).returncode == -signal.SIGKILL
    pbx = (demo / "pbx.yaml").read_bytes()
    (demo / "pbx.yaml").write_text("{broken")  # the PBX does not answer sensibly
    code, _, err = cli("refresh", "-c", cfg)
    assert code == 1 and "was killed before it finished, and the PBX cannot be read" in err, err
    assert "Nothing was changed" in err and (demo / "states" / ".adsync.journal").exists()
    assert not (demo / "states" / ".adsync.lock").exists() and audit(demo) == []
    (demo / "pbx.yaml").write_bytes(pbx)
    code, _, err = cli("refresh", "-c", cfg)
    assert code == 0 and [r["result"] for r in audit(demo)] == ["recovered"], err
    assert len(json.loads((demo / "states" / "pbx.yaml").read_text())["bindings"]) == 37


def test_replay_carries_a_service_change_over():
    """A fax number whose call service changed in place is replayed with its owner and the new service."""
    from adsync_plan.journal import replay
    from adsync_plan.model import PbxAccount, PbxNumber, PbxState
    from adsync_plan.steps import Step

    before = PbxState.from_parts(
        [PbxAccount("7", "30", "Ada", "Muster", "ada@example.com", False, "30")],
        {"30": PbxNumber("internal", "7", "standard"), "+4970222797899": PbxNumber("external", "7", "standard")},
    )
    step = Step(0, "service", ("+4970222797899", "fax"), "user.ada: make +4970222797899 fax")
    after = replay(before, [(step, None, "7")])
    assert after.numbers["+4970222797899"] == PbxNumber("external", "7", "fax")
    assert after.users["7"].fax_numbers == ("+4970222797899",) and after.users["7"].external_numbers == ()
