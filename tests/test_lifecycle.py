"""The CLI end to end on the demo: render, plan, show, apply, and every way apply refuses or fails."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest

from adsync_plan import pipeline, providers, state
from adsync_plan.config import load_config
from adsync_plan.errors import PbxError
from adsync_plan.providers.file import FileProvider
from adsync_plan.state import Lock, read_lock
from tests.plans import edit_plan


def test_render_twice_gives_identical_bytes(cli, demo):
    assert cli("render", "-c", demo / "adsync.yaml")[0] == 0
    first = (demo / "states" / "desired.yaml").read_bytes()
    code, out, _ = cli("render", "-c", demo / "adsync.yaml")
    assert code == 0 and "held" in out
    assert (demo / "states" / "desired.yaml").read_bytes() == first
    doc = json.loads(first)
    assert doc["users"]["jmueller"]["first_name"] == "Jürgen"
    assert {h["address"] for h in doc["held"]} >= {"user.deins", "user.dzwei", "user.kvorname"}


def test_plan_apply_then_plan_again_is_empty(cli, demo):
    cfg = demo / "adsync.yaml"
    code, out, err = cli("plan", "-c", cfg, "-o", demo / "p.plan.json", "--detailed-exitcode")
    assert code == 2, err
    assert out.rstrip().endswith("Plan: 35 to create, 2 to update, 1 to orphan; 11 held.")
    before = (demo / "pbx.yaml").read_bytes()
    code, out, err = cli("show", demo / "p.plan.json")
    assert code == 0 and "+ user.bkuehn" in out and "! pbx_user.67" in out and "~ user.jmueller" in out
    assert (demo / "pbx.yaml").read_bytes() == before  # plan and show never write to the PBX
    code, out, err = cli("apply", "-c", cfg, demo / "p.plan.json")
    assert code == 0, err
    assert "Apply complete" in out
    code, out, err = cli("plan", "-c", cfg, "--detailed-exitcode")
    assert code == 0 and "No changes." in out
    code, out, err = cli("plan", "-c", cfg, "--no-refresh", "--detailed-exitcode")
    assert code == 0, err
    audit = [json.loads(line) for line in (demo / "states" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["result"] == "applied" and audit[-1]["steps_not_done"] == 0
    snapshot = json.loads((demo / "states" / "pbx.yaml").read_text())
    assert snapshot["serial"] == 1 and snapshot["fingerprint"].startswith("sha256:")
    assert len(snapshot["bindings"]) == 37  # 35 created + 2 matched by e-mail


def test_reapplying_a_plan_is_refused(cli, demo):
    cfg = demo / "adsync.yaml"
    cli("plan", "-c", cfg, "-o", demo / "p.plan.json")
    assert cli("apply", "-c", cfg, demo / "p.plan.json")[0] == 0
    pbx = (demo / "pbx.yaml").read_bytes()
    code, _, err = cli("apply", "-c", cfg, demo / "p.plan.json")
    assert code == 1 and "was applied already" in err
    assert (demo / "pbx.yaml").read_bytes() == pbx


def test_stale_plan_is_refused_and_says_what_changed(cli, demo):
    cfg = demo / "adsync.yaml"
    assert cli("refresh", "-c", cfg)[0] == 0
    cli("plan", "-c", cfg, "--no-refresh", "-o", demo / "p.plan.json")
    pbx = json.loads((demo / "pbx.yaml").read_text())
    pbx["users"][2]["last_name"] = "Geändert"  # someone edits Jürgen Müller on the PBX
    (demo / "pbx.yaml").write_text(json.dumps(pbx))
    edited = (demo / "pbx.yaml").read_bytes()
    code, _, err = cli("apply", "-c", cfg, demo / "p.plan.json")
    assert code == 1
    assert "stale" in err and "PBX user 3 (20) changed: last_name" in err
    assert (demo / "pbx.yaml").read_bytes() == edited


def test_expired_plan_is_refused(cli, demo):
    cfg = demo / "adsync.yaml"
    cli("plan", "-c", cfg, "-o", demo / "p.plan.json")
    edit_plan(demo / "p.plan.json", lambda plan: plan.update(expires_at="2020-01-01T00:00:00Z"), reseal=True)
    code, _, err = cli("apply", "-c", cfg, demo / "p.plan.json")
    assert code == 1 and "expired at 2020-01-01T00:00:00Z" in err


def test_second_apply_waits_for_the_lock_then_fails_with_the_holder(cli, demo):
    cfg = demo / "adsync.yaml"
    text = (demo / "adsync.yaml").read_text() + "state:\n  lock_timeout: 1s\n"
    (demo / "adsync.yaml").write_text(text)
    cli("plan", "-c", cfg, "-o", demo / "p.plan.json")
    with Lock(demo / "states", "other-plan", "apply", timeout=1) as held:
        code, _, err = cli("apply", "-c", cfg, demo / "p.plan.json")
    assert code == 1
    assert held.info["id"] in err and "other-plan" in err and f"pid {os.getpid()}" in err
    assert "force-unlock" in err


def test_lock_released_by_the_holder_lets_the_waiter_through(cli, demo, monkeypatch):
    """Told by what the lock file says, not by the time it took: while another run holds the lock, apply
    waits and changes nothing; once it is released, apply takes the lock in its own name and applies."""
    cfg = demo / "adsync.yaml"
    cfg.write_text(cfg.read_text() + "state:\n  lock_timeout: 120s\n")  # far beyond a loaded machine's pace
    assert cli("plan", "-c", cfg, "-o", demo / "p.plan.json")[0] == 0
    plan_id = json.loads((demo / "p.plan.json").read_text())["plan_id"]
    holder = Lock(demo / "states", "other", "apply", timeout=1).__enter__()
    waiting = threading.Event()

    def sleep(seconds):  # the waiter found the lock taken and waits its turn
        waiting.set()
        time.sleep(min(seconds, 0.05))

    monkeypatch.setattr(state, "time", SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    seen, outcome = [], {}

    def first_step(_text):
        if not seen:
            seen.append(read_lock(holder.path))

    def waiter():
        try:
            outcome["result"] = pipeline.apply(load_config(cfg), demo / "p.plan.json", on_step=first_step)
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = err

    pbx = (demo / "pbx.yaml").read_bytes()
    thread = threading.Thread(target=waiter)
    thread.start()
    try:
        assert waiting.wait(60), "apply did not wait for the lock"
        assert read_lock(holder.path)["id"] == holder.info["id"]  # still the holder's
        assert (demo / "pbx.yaml").read_bytes() == pbx and not (demo / "states" / "audit.jsonl").exists()
    finally:
        holder.__exit__(None, None, None)
        thread.join(120)
    assert "error" not in outcome, outcome
    assert seen[0]["id"] != holder.info["id"]  # while applying, the lock was the waiter's own
    assert (seen[0]["plan_id"], seen[0]["operation"], seen[0]["pid"]) == (plan_id, "apply", os.getpid())
    assert not holder.path.exists()  # and released at the end
    assert (demo / "pbx.yaml").read_bytes() != pbx


def dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_force_unlock_removes_a_crashed_runs_lock(cli, demo):
    cfg = demo / "adsync.yaml"
    lock = Lock(demo / "states", "crashed", "apply", timeout=0).__enter__()
    code, _, err = cli("force-unlock", "-c", cfg, "not-the-id")
    assert code == 1 and lock.path.exists()
    code, _, err = cli("force-unlock", "-c", cfg, lock.info["id"])  # its holder (this process) is alive
    assert code == 1 and "still running" in err and "--force" in err and lock.path.exists()
    lock.path.write_text(json.dumps({**lock.info, "pid": dead_pid()}))  # the holder crashed
    code, out, _ = cli("force-unlock", "-c", cfg, lock.info["id"])
    assert code == 0 and not lock.path.exists()


def test_force_unlock_with_force_removes_a_live_holders_lock(cli, demo):
    lock = Lock(demo / "states", "alive", "apply", timeout=0).__enter__()
    code, out, err = cli("force-unlock", "-c", demo / "adsync.yaml", lock.info["id"], "--force")
    assert code == 0 and not lock.path.exists(), err


class FailingFileProvider(FileProvider):
    """The file PBX, failing on its k-th write (K set by the test)."""

    K = 0

    def _count(self):
        FailingFileProvider.calls += 1
        if FailingFileProvider.calls == self.K:
            raise PbxError(f"injected failure on write {self.K}.")

    def create_user(self, user):
        self._count()
        return super().create_user(user)

    def update_user(self, user_id, changes):
        self._count()
        super().update_user(user_id, changes)

    def set_admin(self, user_id, admin):
        self._count()
        super().set_admin(user_id, admin)

    def assign_number(self, user_id, number, service):
        self._count()
        super().assign_number(user_id, number, service)

    def release_number(self, user_id, number):
        self._count()
        super().release_number(user_id, number)

    def set_primary_internal_number(self, user_id, number):
        self._count()
        super().set_primary_internal_number(user_id, number)


@pytest.mark.parametrize("k", [1, 2, 3, 6, 40, 90, 155])
def test_apply_interrupted_midway_then_replanned_converges(cli, demo, monkeypatch, k):
    monkeypatch.setitem(providers.PROVIDERS, "file", "tests.test_lifecycle:FailingFileProvider")
    FailingFileProvider.K, FailingFileProvider.calls = k, 0
    cfg = demo / "adsync.yaml"
    cli("plan", "-c", cfg, "-o", demo / "p1.plan.json")
    code, _, err = cli("apply", "-c", cfg, demo / "p1.plan.json")
    assert code == 1 and f"apply stopped after {k - 1} of 156 steps" in err and "injected failure" in err
    audit = json.loads((demo / "states" / "audit.jsonl").read_text().splitlines()[-1])
    assert audit["result"] == "failed" and audit["steps_done"] == k - 1
    FailingFileProvider.K = -1  # no more failures
    code, out, err = cli("plan", "-c", cfg, "-o", demo / "p2.plan.json")
    assert code == 0, err
    assert cli("apply", "-c", cfg, demo / "p2.plan.json")[0] == 0
    assert cli("plan", "-c", cfg, "--detailed-exitcode")[0] == 0
    pbx = json.loads((demo / "pbx.yaml").read_text())
    emails = [u["email"] for u in pbx["users"]]
    assert len(emails) == len(set(emails)) == 40  # no duplicate users: 5 before + 35 created
    snapshot = json.loads((demo / "states" / "pbx.yaml").read_text())
    assert len(snapshot["bindings"]) == 37  # no lost binding


def test_json_and_markdown_outputs(cli, demo):
    cfg = demo / "adsync.yaml"
    code, out, _ = cli("plan", "-c", cfg, "--json")
    plan = json.loads(out)
    assert plan["format_version"] == 1 and plan["summary"]["create"] == 35
    assert [c["action"] for c in plan["changes"]][:3] == ["orphan", "update", "update"]  # apply order
    code, out, _ = cli("plan", "-c", cfg, "--markdown")
    assert out.startswith("### adsync-plan") and "<details>" in out
    code, _, err = cli("plan", "-c", cfg, "--markdown", "--json")
    assert code == 64


def test_a_desired_state_rendered_with_another_configuration_is_flagged(cli, demo):
    cfg = demo / "adsync.yaml"
    assert cli("render", "-c", cfg)[0] == 0
    assert cli("refresh", "-c", cfg)[0] == 0
    desired = demo / "states" / "desired.yaml"
    code, out, _ = cli("plan", "-c", cfg, "--desired", desired, "--no-refresh", "--json")
    assert "STALE_DESIRED_STATE" not in out
    cfg.write_text(cfg.read_text().replace("licenses: 40", "licenses: 41"))
    code, out, _ = cli("plan", "-c", cfg, "--desired", desired, "--no-refresh", "--json")
    assert code == 0
    stale = [d for d in json.loads(out)["diagnostics"] if d["code"] == "STALE_DESIRED_STATE"]
    assert stale and stale[0]["severity"] == "warning" and "adsync-plan render" in stale[0]["message"]
