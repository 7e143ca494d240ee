"""Parallel apply (`apply --parallelism N`, `pbx.parallelism`): the steps of SPEC 8 in a thread pool.

The order that matters is kept. The three phases of SPEC 8 (releases; creates, field updates and
administrator changes; assignments, call-service changes and primary numbers) run one after the other, so
every release precedes every assignment and a user's create precedes its own assignments. Within a phase the
steps of different users run concurrently, one user's steps in their plan order in one thread. Login IDs
are the one thing two users' account steps can contend for (one user takes the login ID another gives up):
those users' account steps run one after the other, in plan order, after the others of their phase.

A failure (or Ctrl-C) stops new steps; the steps in flight finish. The journal announces each step before
it starts (its writes are serialised), a created user's id is bound before its assignments (a later phase),
and each user is verified at its checkpoints as in a sequential apply.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from adsync_plan import interrupts
from adsync_plan.errors import AdsyncError, PbxError
from adsync_plan.steps import run_step
from adsync_plan.verify import checkpoints, verify_user

log = logging.getLogger(__name__)

PHASE = {"release": 0, "create": 1, "update": 1, "admin": 1, "assign": 2, "service": 2, "primary": 2}


def phases(steps, actions) -> list[list[list[int]]]:
    """The step positions as phases, each a list of chains (one user's steps, in order) that may run
    concurrently; the chains of users contending for a login ID are merged into one, in plan order."""
    contended = _login_contenders(actions)
    result = []
    for phase in range(3):
        chains: dict[int, list[int]] = {}
        serial: list[int] = []
        for n, step in enumerate(steps):
            if PHASE[step.kind] != phase:
                continue
            if phase == 1 and step.index in contended:
                serial.append(n)
            else:
                chains.setdefault(step.index, []).append(n)
        result.append([*chains.values(), *([serial] if serial else [])])
    return result


def _login_contenders(actions) -> set[int]:
    """Plan positions of the actions whose new login ID another action gives up, and of those giving it up."""
    given_up = {a.before.login_id: i for i, a in enumerate(actions) if a.before and a.before.login_id}
    taken = {}
    for i, action in enumerate(actions):
        login = action.after.login_id
        if action.before is None or action.before.login_id != login:
            taken[login] = i
    found = set()
    for login, i in taken.items():
        if login in given_up and given_up[login] != i:
            found.update((i, given_up[login]))
    return found


class _Run:
    """The shared state of one parallel apply; every change to it holds `lock`."""

    def __init__(self, plan, provider, bindings, result, progress, on_step, stop, ahead, steps):
        self.plan, self.provider, self.bindings, self.result = plan, provider, bindings, result
        self.progress, self.on_step, self.stop, self.ahead, self.steps = progress, on_step, stop, ahead, steps
        self.points = checkpoints(steps)
        self.ids = {i: a.pbx_user_id for i, a in enumerate(plan.changes)}
        self.done: set[int] = set()
        self.error: Exception | None = None
        self.lock = threading.Lock()

    def halted(self) -> bool:
        return self.error is not None or (self.stop is not None and self.stop.requested)

    def chain(self, positions: list[int]) -> None:
        for n in positions:
            step = self.steps[n]
            action = self.plan.changes[step.index]
            with self.lock:
                if self.halted():
                    return
                user_id = self.ids[step.index]
                if self.ahead is not None:
                    self.ahead.step(n + 1, step, action, user_id)
            try:
                new_id = run_step(step, action, self.provider, user_id)
            except Exception as err:  # noqa: BLE001 - whatever stopped it, the snapshot and audit must be written
                self._failed(step, err)
                return
            count = self._succeeded(n, step, action, new_id)
            if n in self.points and not self._verified(action, self.ids[step.index], self.points[n]):
                return
            interrupts.test_hook(f"step:{count}")  # the count-th step done, as progress counts them

    def _failed(self, step, err: Exception) -> None:
        if not isinstance(err, AdsyncError):
            log.debug("unexpected error in %s", step.text, exc_info=True)
            err = PbxError(f"{step.text}: {type(err).__name__}: {err}")
        log.error("%s: failed: %s", step.text, err)
        with self.lock:
            self.error = self.error or err

    def _succeeded(self, n: int, step, action, new_id: str | None) -> int:
        """Record a step done; returns how many are done now."""
        with self.lock:
            if new_id is not None:
                self.ids[step.index] = new_id
                if action.source_id:
                    self.bindings[action.source_id] = new_id  # bound at once: a failure later never loses it
            self.done.add(n)
            self.result.done.append(step.text)
            self.result.steps.append((step, action, self.ids[step.index]))
            log.info("%s: done", step.text)
            if self.on_step:
                self.on_step(step.text)
            self.progress.advance()
            return len(self.done)

    def _verified(self, action, user_id: str, fields) -> bool:
        try:
            verify_user(self.provider, action, user_id, fields)
        except AdsyncError as err:
            log.error("verification failed: %s", err)
            with self.lock:
                self.error = self.error or err
            return False
        return True


def run_steps(plan, provider, bindings, result, progress, on_step, stop, ahead, steps, workers: int):
    """The steps (`plan_steps(plan.changes)`) with up to `workers` users at a time; returns the error that
    stopped them, if any. `result.not_done` lists the steps not done, in plan order."""
    run = _Run(plan, provider, bindings, result, progress, on_step, stop, ahead, steps)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="apply") as pool:
        for phase in phases(steps, plan.changes):
            if run.halted():
                break
            # longest chains first, so the last users of a phase do not leave the other threads idle
            finished, left = threading.Event(), [len(phase)]

            def one_done(_future, finished=finished, left=left) -> None:
                with run.lock:
                    left[0] -= 1
                    if left[0] == 0:
                        finished.set()

            futures = [pool.submit(run.chain, chain) for chain in sorted(phase, key=len, reverse=True)]
            for future in futures:
                future.add_done_callback(one_done)
            # in short waits on one event (not on 100,000 futures): the main thread runs Python often, so a
            # Ctrl-C is noted at once (a signal handler runs only there) and the workers see it before their
            # next step
            while phase and not finished.wait(0.1):
                pass
            for future in futures:
                future.result()  # a bug in the runner itself surfaces here
    result.not_done = [s.text for n, s in enumerate(steps) if n not in run.done]
    if run.stop is not None and run.stop.requested and result.not_done:
        log.warning("%d steps not started (%s)", len(result.not_done), run.stop.signal_name)
    return run.error
