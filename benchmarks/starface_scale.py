"""Requests and time of the STARFACE provider against the local test server (tests/servers/starface.py).

    python benchmarks/starface_scale.py [--sizes 1000,10000] [--actions 200] [--version 6|10] [--no-verify]

Refresh: requests and seconds to read a PBX of N users (each with an internal and an external number).
Apply: requests per action kind, the steps run as the core's apply runs them (SPEC 8), and with verification
on (the default) each user read back at its checkpoints as apply does:
  create  = create_user + assign internal + assign external + set primary internal number
  update  = update_user (names / e-mail) + one number added + one removed
  orphan  = update_user (last name "-...") + release of every number but the primary internal one
--version 10 runs against the test server's STARFACE 10 mode (OAuth); --no-verify leaves the reads out.

    python benchmarks/starface_scale.py --parallel [--actions 1000] [--latency 0.02] [--parallelism 1,4,8]

Parallel apply: seconds to apply N creates, N updates and N orphans (as above) through the core's apply runner
(pipeline._run_steps: SPEC 8 phases, verification on) at each parallelism, every request taking --latency
seconds on the test server, which refuses what a real PBX would (a number assigned twice, a login ID twice).
Run from the repository root (it imports tests.servers.starface).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adsync_plan import pipeline  # noqa: E402
from adsync_plan.model import NO_PROGRESS, Action, PhoneUser  # noqa: E402
from adsync_plan.steps import plan_steps, run_step  # noqa: E402
from adsync_plan.verify import checkpoints, verify_user  # noqa: E402
from tests.servers.starface import CLIENT_SECRET_ENV, PASSWORD_ENV, StarfaceServer, provider_for, seed_scale  # noqa: E402


def measure_refresh(size: int, base: Path, version: str, repeat: int = 3) -> tuple[int, float]:
    with StarfaceServer(version=version) as srv:
        seed_scale(srv, size)
        os.environ[PASSWORD_ENV], os.environ[CLIENT_SECRET_ENV] = srv.password, srv.client_secret
        times, requests = [], set()
        for _ in range(repeat):
            srv.reset_counts()
            with provider_for(srv, base) as prov:
                started = time.perf_counter()
                state = prov.read()
                times.append(time.perf_counter() - started)
            requests.add(srv.total_requests - srv.counts["DELETE /login"])
            assert len(state.users) == size
        assert len(requests) == 1
        return requests.pop(), statistics.median(times)


def planned_actions(state, spare: list[str], actions: int) -> dict[str, list[Action]]:
    """kind -> the actions of the benchmark: creates with new numbers, updates that add a number and drop the
    external one, orphans that keep only their primary internal number."""
    ids = sorted(state.users, key=int)
    creates = [
        Action(
            f"user.new{i}",
            "create",
            None,
            None,
            PhoneUser(
                spare[i],
                f"New{i}",
                "User",
                f"new{i}@example.com",
                primary_internal_number=spare[i],
                internal_numbers=(spare[i],),
                external_numbers=(f"+49702228{i:05d}",),
            ),
        )
        for i in range(actions)
    ]
    updates = []
    for i, uid in enumerate(ids[:actions]):
        before = state.users[uid]
        after = before.changed(
            last_name=f"Renamed{i}",
            email=f"renamed{i}@example.com",
            internal_numbers=tuple(sorted((*before.internal_numbers, spare[actions + i]))),
            external_numbers=(),
        )
        updates.append(Action(f"user.u{i}", "update", uid, before, after))
    orphans = []
    for uid in ids[actions : 2 * actions]:
        before = state.users[uid]
        keep = (before.primary_internal_number,)
        after = before.changed(last_name="-" + before.last_name, internal_numbers=keep, external_numbers=())
        orphans.append(Action(f"pbx_user.{before.login_id}", "orphan", uid, before, after))
    return {"create": creates, "update": updates, "orphan": orphans}


def seeded(srv: StarfaceServer, size: int, actions: int) -> list[str]:
    """Seed `size` users, 2 * `actions` spare internal numbers and `actions` external ones; the spare ones."""
    seed_scale(srv, size)
    spare = [str(9_000_000 + i) for i in range(actions * 2)]
    for number in spare:
        srv.add_internal(number)
    for i in range(actions):
        srv.add_external(f"28{i:05d}")
    os.environ[PASSWORD_ENV], os.environ[CLIENT_SECRET_ENV] = srv.password, srv.client_secret
    return spare


def measure_parallel(actions: int, base: Path, latency: float, parallelism: int) -> dict[str, float]:
    """kind -> seconds to apply `actions` actions of that kind through the core's runner at `parallelism`."""
    with StarfaceServer() as srv:
        spare = seeded(srv, 2 * actions, actions)
        with provider_for(srv, base) as prov:
            planned = planned_actions(prov.read(), spare, actions)
            srv.latency = latency  # the reads above at full speed: only apply is measured
            seconds = {}
            for kind, changes in planned.items():
                plan = SimpleNamespace(changes=tuple(changes))
                result = pipeline.ApplyResult(plan)
                started = time.perf_counter()
                error = pipeline._run_steps(plan, prov, {}, result, NO_PROGRESS, None, workers=parallelism)
                seconds[kind] = time.perf_counter() - started
                if error is not None or result.not_done:
                    raise SystemExit(f"{kind} at parallelism {parallelism} failed: {error}")
        srv.check_consistency()
        assert not srv.errors, srv.errors
        return seconds


def main_parallel(args) -> None:
    levels = [int(p) for p in args.parallelism.split(",")]
    print(f"apply of {args.actions} actions of each kind, {1000 * args.latency:.0f} ms per request, verification on")
    print(f"{'parallelism':>11} {'create s':>9} {'update s':>9} {'orphan s':>9} {'total s':>8} {'speed-up':>8}")
    first = None
    with tempfile.TemporaryDirectory() as tmp:
        for level in levels:
            seconds = measure_parallel(args.actions, Path(tmp), args.latency, level)
            total = sum(seconds.values())
            first = first or total
            cells = " ".join(f"{seconds[k]:>9.1f}" for k in ("create", "update", "orphan"))
            print(f"{level:>11} {cells} {total:>8.1f} {first / total:>7.1f}x", flush=True)


def measure_apply(
    size: int, actions: int, base: Path, version: str, verify: bool = True
) -> dict[str, tuple[float, float]]:
    """kind -> (requests per action, milliseconds per action), the steps run as apply runs them (steps.py,
    SPEC 8 order) and, with `verify`, each user read back at its checkpoints as apply does (verify.py)."""
    with StarfaceServer(version=version) as srv:
        spare = seeded(srv, size, actions)
        with provider_for(srv, base) as prov:
            state = prov.read()
            results = {}

            def timed(kind: str, planned: list[Action]) -> None:
                steps = plan_steps(tuple(planned))
                points = checkpoints(steps) if verify else {}
                user_ids = {i: a.pbx_user_id for i, a in enumerate(planned)}
                srv.reset_counts()
                started = time.perf_counter()
                for n, step in enumerate(steps):
                    new_id = run_step(step, planned[step.index], prov, user_ids[step.index])
                    user_ids[step.index] = new_id or user_ids[step.index]
                    if n in points:
                        verify_user(prov, planned[step.index], user_ids[step.index], points[n])
                elapsed = time.perf_counter() - started
                results[kind] = (srv.total_requests / actions, 1000 * elapsed / actions)

            for kind, planned in planned_actions(state, spare, actions).items():
                timed(kind, planned)
        srv.check_consistency()
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--actions", type=int, default=200)
    parser.add_argument("--version", default="6", choices=["6", "10"], help="10: the 10.x mode (OAuth)")
    parser.add_argument("--no-verify", action="store_true", help="apply without reading users back")
    parser.add_argument("--parallel", action="store_true", help="time parallel apply instead (see above)")
    parser.add_argument("--latency", type=float, default=0.02, help="--parallel: seconds per request")
    parser.add_argument("--parallelism", default="1,4,8", help="--parallel: the levels to compare")
    args = parser.parse_args()
    if args.parallel:
        if "--actions" not in sys.argv:
            args.actions = 1000
        main_parallel(args)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        print(f"refresh (median of 3, sign-in included in the requests; STARFACE {args.version} mode)")
        print(f"{'users':>8} {'requests':>9} {'seconds':>8}")
        for size in sizes:
            requests, seconds = measure_refresh(size, base, args.version)
            print(f"{size:>8} {requests:>9} {seconds:>8.3f}")
        size = sizes[-1]
        verify = "off" if args.no_verify else "on"
        print(f"\napply on a PBX of {size} users ({args.actions} actions of each kind), verification {verify}")
        print(f"{'action':>8} {'requests/action':>16} {'ms/action':>10}")
        for kind, (per_action, ms) in measure_apply(size, args.actions, base, args.version, not args.no_verify).items():
            print(f"{kind:>8} {per_action:>16.2f} {ms:>10.2f}")


if __name__ == "__main__":
    main()
