"""How `plan --no-refresh` scales: N users in an LDIF directory and a PBX snapshot, against the floor.

    python benchmarks/plan_scale.py [--sizes 1000,10000,100000] [--workdir DIR] [--repeat 3] [--groups 1000x100]

For each N it generates a directory and a matching PBX (about 2% of users changed, 1% new, 1% gone),
then times, each in a fresh process and the best of --repeat runs (this machine's speed varies by 10%
from run to run):
- plan: `adsync-plan plan --no-refresh -o plan.json` end to end (render from the LDIF, load the snapshot,
  rules, diff, write the plan). At this size plan reads the directory in a second process.
- floor: only parsing the same LDIF, loading the same snapshot and plan file, and writing the plan file
  again, with the same libraries, in one process.
It prints wall time, peak memory and the ratio plan/floor, and the growth from one size to the next. The
plan's memory is measured in a run of its own: the largest sum of the proportional set sizes of its
processes. Targets at 100,000 on 2 cores: under 60 s, under 2 GiB, ratio under 2, and 100,000 at most 12
times 10,000.

--groups GxM (issue 16) adds G directory groups of M users each, mapped to STARFACE groups with a number
each (pbx_groups.map), and the PBX has them already, bound (as after an earlier apply): the 1% new users join
their groups, the 1% gone leave them. It then times plan without and with the groups in --repeat pairs, back
to back, and prints the best times and the median of the pairs' differences. Target: within 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PREFIX = "+4970222"
FIRST = 200000  # six-digit extensions 200000...: none starts with a reserved number

FLOOR = """
import gc, sys, orjson
gc.disable()  # as the CLI does
from pathlib import Path
from adsync_plan.sources.ldif import parse_ldif
from adsync_plan.files import read_document, render_document
folder = Path(sys.argv[1])
entries = list(parse_ldif((folder / "directory.ldif").read_text(encoding="utf-8")))
snapshot, _ = read_document(folder / "states" / "pbx.yaml", "snapshot")
plan, _ = read_document(folder / "plan.json", "plan")
(folder / "floor.out").write_bytes(render_document(plan))
print(len(entries), len(snapshot["users"]))
"""


GROUP_FIRST = 800000  # the groups' internal numbers
USERS_GROUP = "CN=PBX-Users,OU=Groups,DC=example,DC=com"


def team(g: int) -> str:
    return f"CN=Team{g},OU=Groups,DC=example,DC=com"


def ldif_user(n: int, ext: int, last: str, groups: tuple[int, int] = (0, 0)) -> str:
    from tests import ldifgen

    count, size = groups
    member_of = [USERS_GROUP] + ([team(n // size)] if size and n // size < count else [])
    return ldifgen.user(
        n,
        f"User {n}",
        sAMAccountName=f"user{n}",
        givenName="Jürgen",
        sn=last,
        mail=f"user{n}@example.com",
        telephoneNumber=f"{PREFIX}{ext}",
        otherTelephone=[str(ext + 400000)] if n % 10 == 0 else None,
        memberOf=member_of,
    )[1]


def generate(folder: Path, n: int, groups: tuple[int, int] = (0, 0)) -> None:
    """Directory of n users; the PBX holds the first 99% (1% new), 1% extra (gone) and 2% changed; and
    `groups` (count, size) mapped groups, on the PBX already."""
    from adsync_plan.model import PbxGroup, PbxNumber, PbxState, PhoneUser
    from adsync_plan.state import save_snapshot
    from tests import ldifgen

    folder.mkdir(parents=True, exist_ok=True)
    count, size = groups
    parts = [ldif_user(i, FIRST + i, "Müller", groups) for i in range(n)]
    parts += [ldifgen.group(f"Team{g}", [], n=g + 10)[1] for g in range(count)]
    (folder / "directory.ldif").write_text(ldifgen.document(parts), encoding="utf-8")
    users, numbers, bindings = {}, {}, {}
    present = int(n * 0.99)
    gone = n // 100
    for i in range(n + gone):
        ext = str(FIRST + i)
        numbers[ext] = PbxNumber("internal")
        numbers[PREFIX + ext] = PbxNumber("external")
        if i % 10 == 0:
            numbers[str(FIRST + i + 400000)] = PbxNumber("internal")
    for i in list(range(present)) + list(range(n, n + gone)):
        ext = str(FIRST + i)
        pbx_id = str(i + 1)
        internal = [ext] + ([str(FIRST + i + 400000)] if i % 10 == 0 and i < n else [])
        users[pbx_id] = PhoneUser(
            login_id=ext,
            first_name="Jürgen",
            last_name="Mueller" if i % 50 == 1 else "Müller",  # 2% changed
            email=f"user{i}@example.com",
            role="user",
            primary_internal_number=ext,
            internal_numbers=tuple(sorted(internal)),
            external_numbers=(PREFIX + ext,),
        )
        for number in internal + [PREFIX + ext]:
            numbers[number] = PbxNumber(numbers[number].type, pbx_id, "standard")
        if i < n:
            bindings[str(ldifgen.guid(i))] = pbx_id
    pbx_groups, group_bindings = {}, {}
    for g in range(count):  # as an earlier apply left them: the users present then (the gone ones too)
        gid, number = str(n + gone + 1 + g), str(GROUP_FIRST + g)
        members = [str(i + 1) for i in range(g * size, (g + 1) * size) if i < present or i >= n]
        numbers[number] = PbxNumber("internal", f"group:{gid}", "standard")
        pbx_groups[gid] = PbxGroup(f"Team {g}", tuple(sorted(members)), (number,))
        group_bindings[f"map:{team(g).lower()}"] = gid
    state = PbxState(users=users, admins=frozenset(), numbers=numbers, groups=pbx_groups)
    snapshot = folder / "states" / "pbx.yaml"
    save_snapshot(snapshot, state, bindings, {"type": "file"}, None, group_bindings)
    config = {
        "version": 1,
        "source": {"type": "ldif", "path": "directory.ldif"},
        "scope": {"admin_groups": [], "user_groups": ["CN=PBX-Users,OU=Groups,DC=example,DC=com"]},
        "numbering": {"country": "DE", "blocks": [{"external_prefix": PREFIX, "internal_prefix": ""}]},
        "pbx": {"type": "file", "path": "pbx.yaml", "licenses": None},
        "safety": {"max_orphans": "5%", "min_source_ratio": 0.5},
    }
    if count:
        config["pbx_groups"] = {
            "map": [
                {"directory_group": team(g), "name": f"Team {g}", "numbers": [str(GROUP_FIRST + g)]}
                for g in range(count)
            ]
        }
    (folder / "adsync.yaml").write_text(json.dumps(config, indent=1))
    (folder / "pbx.yaml").write_text('{"format_version": 1, "users": [], "numbers": []}')


def measure(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of one fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def peak_memory(argv: list[str], cwd: Path) -> float:
    """Peak memory (MiB) of a process and the processes it starts, in a run of its own (sampling slows it):
    the largest sum of their proportional set sizes (a shared page counts once), every 50 ms."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, sum(_pss_kib(pid) for pid in _tree(proc.pid)))
        time.sleep(0.05)
    return peak / 1024


def _tree(pid: int) -> list[int]:
    """pid and its descendants (Linux /proc)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass  # it ended meanwhile
    return pids


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def groups_cost(without: Path, folder: Path, plan: list[str], repeat: int) -> str:
    """Issue 16's goal: plan with the groups against plan of the same directory without them. The two run
    back to back, `repeat` pairs: this machine's speed drifts by 30% over minutes, more than the difference
    sought, and a pair shares the drift. Prints the best of each and the median of the pairs' ratios."""
    n = int(without.name[1:])
    if not (without / "adsync.yaml").exists():
        generate(without, n)
    pairs = [(measure(plan, without)[0], measure(plan, folder)[0]) for _ in range(repeat)]
    ratios = sorted(b / a for a, b in pairs)
    median = ratios[len(ratios) // 2] if len(ratios) % 2 else sum(ratios[len(ratios) // 2 - 1 :][:2]) / 2
    best_a, best_b = min(a for a, _ in pairs), min(b for _, b in pairs)
    return (
        f"N={n}: plan without groups {best_a:.2f} s, with {folder.name.split('-')[1]} {best_b:.2f} s (best of "
        f"{repeat}); pairs: {', '.join(f'{r - 1:+.0%}' for r in ratios)}; median {median - 1:+.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best time counts")
    parser.add_argument("--groups", default="", help="GxM: G mapped groups of M users each (issue 16)")
    args = parser.parse_args()
    groups = tuple(int(x) for x in args.groups.split("x")) if args.groups else (0, 0)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="adsync-bench-"))
    rows, previous = [], None
    print(f"{'N':>8} {'plan s':>8} {'plan MiB':>9} {'floor s':>8} {'floor MiB':>9} {'ratio':>6} {'growth':>7}")
    for n in (int(s) for s in args.sizes.split(",")):
        folder = work / (f"n{n}-g{groups[0]}x{groups[1]}" if groups[0] else f"n{n}")
        if not (folder / "adsync.yaml").exists():
            generate(folder, n, groups)
        plan = [sys.executable, "-m", "adsync_plan", "plan", "--no-refresh", "-o", "plan.json"]
        floor = [sys.executable, "-c", FLOOR, str(folder)]
        plan_s, floor_s, floor_mb = float("inf"), float("inf"), 0.0
        for _ in range(args.repeat):  # alternated, so that a slow spell of the machine slows both
            plan_s = min(plan_s, measure(plan, folder)[0])
            floor_run = measure(floor, folder)
            floor_s, floor_mb = min(floor_s, floor_run[0]), max(floor_mb, floor_run[1])
        plan_mb = peak_memory(plan, folder)  # two processes at scale (the directory is read in a child)
        growth = f"{plan_s / previous:.1f}x" if previous else "-"
        ratio = plan_s / floor_s
        print(f"{n:>8} {plan_s:>8.2f} {plan_mb:>9.0f} {floor_s:>8.2f} {floor_mb:>9.0f} {ratio:>6.2f} {growth:>7}")
        summary = json.loads((folder / "plan.json").read_text())["summary"]
        rows.append(
            {
                "n": n,
                "plan_s": plan_s,
                "plan_mib": plan_mb,
                "floor_s": floor_s,
                "floor_mib": floor_mb,
                "summary": summary,
            }
        )
        previous = plan_s
        if groups[0]:
            print(groups_cost(work / f"n{n}", folder, plan, args.repeat))
    for row in rows:
        print(f"N={row['n']}: plan summary {row['summary']}")
    print(f"(files in {work})")


if __name__ == "__main__":
    main()
