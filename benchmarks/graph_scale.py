"""How long the azure source takes, and how many requests it makes, to read a large Entra ID tenant.

The local Graph server of the tests (tests/servers/graph.py) runs in a child process, so that it does not
share the source's interpreter lock; the source reads every user and the transitive members of one scope
group that holds all of them, exactly as `render` would. Run from the repository root:

    python benchmarks/graph_scale.py                 # 10,000 and 50,000 users, $top=999
    python benchmarks/graph_scale.py 100000 --page-size 500

Prints, per size: wall time of read_directory, users per second, requests per endpoint, and peak RSS.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adsync_plan.config import Scope  # noqa: E402
from adsync_plan.sources import azure  # noqa: E402
from tests.servers.graph import CLIENT_SECRET, GraphServer, graph_user, group_id  # noqa: E402


def serve(users: int, conn) -> None:
    """Child process: a Graph server with `users` users, all in one scope group; answers "counts"/"stop"."""
    with GraphServer() as server:
        server.users = [graph_user(n) for n in range(users)]
        server.add_group(group_id("staff"), [u["id"] for u in server.users])
        conn.send(server.source_settings())
        while (command := conn.recv()) != "stop":
            if command == "counts":
                conn.send(dict(server.counts))
            elif command == "reset":
                server.reset_counts()
                conn.send(True)


def measure(users: int, page_size: int, rounds: int) -> dict:
    parent, child = mp.Pipe()
    process = mp.Process(target=serve, args=(users, child), daemon=True)
    process.start()
    try:
        settings = parent.recv() | {"page_size": page_size}
        scope = Scope(admin_groups=(), user_groups=(group_id("staff"),))
        times = []
        for _ in range(rounds):
            parent.send("reset")
            parent.recv()
            started = time.perf_counter()
            directory = azure.read_directory(settings, scope, {}, ROOT)
            times.append(time.perf_counter() - started)
            assert len(directory.users) == users and all(u.groups for u in directory.users)
        parent.send("counts")
        counts = parent.recv()
        parent.send("stop")
    finally:
        process.join(timeout=10)
    return {"users": users, "best": min(times), "times": times, "counts": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 50_000])
    parser.add_argument("--page-size", type=int, default=999)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ["GRAPH_TEST_SECRET"] = CLIENT_SECRET
    print(f"page size {args.page_size}, best of {args.rounds} rounds, server in a child process")
    print(f"{'users':>8} {'seconds':>8} {'users/s':>9}  requests (last round)")
    for size in args.sizes:
        result = measure(size, args.page_size, args.rounds)
        counts = result["counts"]
        requests = {k: v for k, v in sorted(counts.items()) if ":" not in k}
        total = sum(requests.values())
        print(
            f"{size:>8} {result['best']:>8.2f} {size / result['best']:>9.0f}  {total} total: "
            + ", ".join(f"{k} {v}" for k, v in requests.items())
            + f"   (rounds: {', '.join(f'{t:.2f}' for t in result['times'])} s)"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the reading process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
