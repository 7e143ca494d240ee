"""Run one piece of work in a forked child process while the caller does another.

`plan` makes two independent reads, the directory and the PBX (or its snapshot), that each take seconds at
100,000 users. Reading one in a child overlaps them: on the second core when they compute, or as two
network waits when they don't. The child's answers come back pickled through a pipe, in order.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable, Iterator, Sequence

from adsync_plan.errors import AdsyncError

available = hasattr(os, "fork")


class Forked:
    """`work()` yields answers in a forked child; each `next()` waits for the next one, or raises the
    child's error."""

    def __init__(self, work: Callable[[], Iterator]):
        context = multiprocessing.get_context("fork")
        self._answers, answer = context.Pipe(duplex=False)
        _widen(answer)
        self._child = context.Process(target=_run, args=(work, answer), daemon=True)
        self._child.start()
        answer.close()  # the child holds its own end; EOF then means the child died

    def next(self):
        try:
            kind, value = self._answers.recv()
        except EOFError:
            self._child.join()
            raise AdsyncError(
                f"a child process of adsync-plan stopped unexpectedly (exit code {self._child.exitcode}; "
                "-9 is often the system ending it for lack of memory); nothing was changed, run it again."
            ) from None
        if kind == "error":
            raise value
        if kind == "crash":
            raise RuntimeError(f"a child process of adsync-plan failed:\n{value}")
        return value

    def __enter__(self) -> Forked:
        return self

    def __exit__(self, *exc) -> None:
        self._answers.close()
        if self._child.is_alive():
            self._child.terminate()  # the caller failed first and no longer needs the answers
        self._child.join()


PIPE_BYTES = 1 << 20  # Linux's default limit for an unprivileged process (/proc/sys/fs/pipe-max-size)


def _widen(connection) -> None:
    """Let the child write a chunk or two ahead of the parent's reading: with the default 64 KiB pipe each
    send of ~800 KB waits until the parent reads it all, so any hitch of one process stalls the other."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or a lower limit: the default works, slower
        fcntl.fcntl(connection.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _run(work: Callable[[], Iterator], answer) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops this child
    try:
        for value in work():
            answer.send(("ok", value))
    except AdsyncError as err:
        answer.send(("error", err))  # a sentence for the user, raised again in the parent
    except BaseException:  # noqa: BLE001 - a bug: the parent shows the child's traceback
        answer.send(("crash", traceback.format_exc()))
    answer.close()


def parallel_map(fn: Callable, items: Sequence, at_least: int = 1000) -> list:
    """[fn(x) for x in items], the second half computed in a forked child when there are enough items to
    be worth it: for pure, CPU-bound work on two cores. `fn`'s results must pickle."""
    if not available or len(items) < at_least:
        return [fn(x) for x in items]
    half = len(items) // 2

    def second_half():
        yield [fn(x) for x in items[half:]]

    with Forked(second_half) as child:
        first = [fn(x) for x in items[:half]]
        return first + child.next()
