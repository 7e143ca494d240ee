"""Requests and time of the STARFACE provider against the local test server (tests/servers/starface.py).

    python benchmarks/starface_scale.py [--sizes 1000,10000] [--actions 200]

Refresh: requests and seconds to read a PBX of N users (each with an internal and an external number).
Apply: requests per action kind, as the core's apply calls the provider (SPEC 8):
  create  = create_user + assign internal + assign external + set primary internal number
  update  = update_user (names / e-mail) + one number added + one removed
  orphan  = update_user (last name "-...") + release of every number but the primary internal one
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adsync_plan.model import PhoneUser  # noqa: E402
from tests.servers.starface import PASSWORD_ENV, StarfaceServer, provider_for, seed_scale  # noqa: E402


def measure_refresh(size: int, base: Path, repeat: int = 3) -> tuple[int, float]:
    with StarfaceServer() as srv:
        seed_scale(srv, size)
        os.environ[PASSWORD_ENV] = srv.password
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


def measure_apply(size: int, actions: int, base: Path) -> dict[str, tuple[float, float]]:
    """kind -> (requests per action, milliseconds per action)."""
    with StarfaceServer() as srv:
        seed_scale(srv, size)
        spare = [(srv.add_internal(str(9_000_000 + i)), str(9_000_000 + i)) for i in range(actions * 2)]
        spare_ext = [srv.add_external(f"28{i:05d}") for i in range(actions)]
        os.environ[PASSWORD_ENV] = srv.password
        with provider_for(srv, base) as prov:
            state = prov.read()
            ids = sorted(state.users, key=int)
            results = {}

            def timed(kind, fn):
                srv.reset_counts()
                started = time.perf_counter()
                for i in range(actions):
                    fn(i)
                elapsed = time.perf_counter() - started
                results[kind] = (srv.total_requests / actions, 1000 * elapsed / actions)

            def create(i):
                internal = spare[i][1]
                uid = prov.create_user(PhoneUser(internal, f"New{i}", "User", f"new{i}@example.com"))
                prov.assign_number(uid, internal, "standard")
                prov.assign_number(uid, f"+49702228{i:05d}", "standard")
                prov.set_primary_internal_number(uid, internal)

            def update(i):
                uid = ids[i]
                prov.update_user(uid, {"last_name": f"Renamed{i}", "email": f"renamed{i}@example.com"})
                prov.assign_number(uid, spare[actions + i][1], "standard")
                prov.release_number(uid, state.users[uid].external_numbers[0])

            def orphan(i):
                uid = ids[actions + i]
                user = state.users[uid]
                prov.update_user(uid, {"last_name": "-" + user.last_name})
                for number in sorted(user.numbers() - {user.primary_internal_number}):
                    prov.release_number(uid, number)

            assert spare_ext
            timed("create", create)
            timed("update", update)
            timed("orphan", orphan)
        srv.check_consistency()
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--actions", type=int, default=200)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        print("refresh (median of 3, login included in the requests)")
        print(f"{'users':>8} {'requests':>9} {'seconds':>8}")
        for size in sizes:
            requests, seconds = measure_refresh(size, base)
            print(f"{size:>8} {requests:>9} {seconds:>8.3f}")
        size = sizes[-1]
        print(f"\napply on a PBX of {size} users ({args.actions} actions of each kind)")
        print(f"{'action':>8} {'requests/action':>16} {'ms/action':>10}")
        for kind, (per_action, ms) in measure_apply(size, args.actions, base).items():
            print(f"{kind:>8} {per_action:>16.2f} {ms:>10.2f}")


if __name__ == "__main__":
    main()
