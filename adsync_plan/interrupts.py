"""Ctrl-C and SIGTERM: stop where it is safe, never in the middle of a PBX request or a file write.

Outside apply's steps a stop signal raises KeyboardInterrupt, so every `with` block unwinds: the lock is
released and a half-written temporary file is removed (the real files are replaced atomically, never
truncated). During apply's steps and its clean-up, `Deferred` only notes the signal: the step in flight
finishes, no new step starts, and the clean-up writes the snapshot, the bindings and the audit record. A
second signal within GRACE seconds of the first is ignored (an impatient double Ctrl-C); a later one stops
at once, which is still safe: every file is written atomically and the journal lets the next run recover.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE = 5.0  # seconds during which a second Ctrl-C does not cut the clean-up short
SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}
_owner_pid: int | None = None


def install() -> None:
    """Make SIGTERM stop the command as Ctrl-C does (by default it kills it without any clean-up)."""
    global _owner_pid
    if threading.current_thread() is threading.main_thread():
        _owner_pid = os.getpid()
        signal.signal(signal.SIGTERM, _raise_interrupt)


def _raise_interrupt(signum, frame) -> None:
    if os.getpid() != _owner_pid:  # a forked child (plan's directory reader): die as by default
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt


class Deferred:
    """While active (in the main thread), a stop signal sets `signal_name` instead of stopping at once."""

    def __init__(self, grace: float = GRACE):
        self.grace = grace
        self.signal_name: str | None = None
        self._first = 0.0
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __enter__(self) -> Deferred:
        if threading.current_thread() is threading.main_thread():
            # a signal ignored by whoever started us (nohup, `cmd &` in a script) stays ignored
            wanted = [s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]
            self._previous = {s: signal.signal(s, self._on_signal) for s in wanted}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        if self.signal_name is None:
            self.signal_name, self._first = SIGNAL_NAMES.get(signum, f"signal {signum}"), time.monotonic()
            log.warning(
                "%s: stopping after the step in flight, then writing the snapshot and the audit", self.signal_name
            )
            return
        if time.monotonic() - self._first < self.grace:
            log.warning(
                "still writing the snapshot and the audit; signal again after %.0f s to stop at once", self.grace
            )
            return
        raise KeyboardInterrupt


_TEST_SIGNAL = os.environ.get("ADSYNC_PLAN_TEST_SIGNAL", "")  # read once: test_hook runs at every step


def test_hook(point: str) -> None:
    """For the interruption tests only: ADSYNC_PLAN_TEST_SIGNAL=SIG@POINT (e.g. INT@step:3, KILL@flushed)
    makes the process send itself SIG when it reaches POINT, so a test interrupts a real run exactly there."""
    if _TEST_SIGNAL:
        name, _, at = _TEST_SIGNAL.partition("@")
        if at == point:
            os.kill(os.getpid(), getattr(signal, f"SIG{name}"))
