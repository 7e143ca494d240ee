"""What the apply journal costs: `adsync-plan apply` of N creates on the file PBX, with and without it.

    python benchmarks/apply_journal.py [--users 5000] [--repeat 9] [--workdir DIR]

It generates a directory of N users and an empty file PBX with their numbers in its inventory, makes the
plan once (N creates: each a create, two number assignments and a primary number, 4N steps), then applies
that plan to fresh copies, each in a fresh process, alternating with and without the journal, and prints the
median and best wall and CPU times of --repeat runs each (the median resists this shared machine's noise).
Without the journal, the runner replaces `pipeline.Journal` by one that writes nothing.
Target (issue 11): with the journal at most 15% slower.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.plan_scale import FIRST, PREFIX, ldif_user  # noqa: E402

RUNNER = """
import sys
from adsync_plan import cli, pipeline

class NoJournal:
    def __init__(self, *args): pass
    def __enter__(self): return self
    def __exit__(self, *exc): pass
    def start(self, *args): pass
    def step(self, *args): pass
    def sync(self): pass
    def remove(self): pass

if sys.argv[1] == "without":
    pipeline.Journal = NoJournal
cli.main(sys.argv[2:])
"""


def generate(folder: Path, n: int) -> None:
    from tests import ldifgen

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "directory.ldif").write_text(
        ldifgen.document([ldif_user(i, FIRST + i, "Müller") for i in range(n)]), encoding="utf-8"
    )
    numbers = []
    for i in range(n):
        numbers.append({"number": str(FIRST + i), "type": "internal", "owner": None, "service": None})
        numbers.append({"number": PREFIX + str(FIRST + i), "type": "external", "owner": None, "service": None})
        if i % 10 == 0:
            numbers.append({"number": str(FIRST + i + 400000), "type": "internal", "owner": None, "service": None})
    (folder / "pbx.yaml").write_text(json.dumps({"format_version": 1, "users": [], "numbers": numbers}))
    config = {
        "version": 1,
        "source": {"type": "ldif", "path": "directory.ldif"},
        "scope": {"admin_groups": [], "user_groups": ["CN=PBX-Users,OU=Groups,DC=example,DC=com"]},
        "numbering": {"country": "DE", "blocks": [{"external_prefix": PREFIX, "internal_prefix": ""}]},
        "pbx": {"type": "file", "path": "pbx.yaml", "licenses": None},
    }
    (folder / "adsync.yaml").write_text(json.dumps(config, indent=1))
    run(["plan", "-o", "plan.json"], folder, [sys.executable, "-m", "adsync_plan"])  # the plan, once


def run(args: list[str], cwd: Path, prefix: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    proc = subprocess.Popen(prefix + args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def apply_once(template: Path, work: Path, journal: str) -> tuple[float, float]:
    folder = work / f"apply-{journal}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(template, folder)
    return run(["apply", "plan.json"], folder, [sys.executable, "-c", RUNNER, journal])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=9, help="runs of each")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="adsync-journal-"))
    template = work / f"n{args.users}"
    if not (template / "plan.json").exists():
        generate(template, args.users)
    summary = json.loads((template / "plan.json").read_text())["summary"]
    times = {"with": [], "without": []}
    for _ in range(args.repeat):  # alternated, so that a slow spell of the machine slows both
        for journal in ("without", "with"):
            times[journal].append(apply_once(template, work, journal))
    print(f"apply of {summary['create']} creates on the file PBX ({args.repeat} runs each, fresh process each):")
    ratios = []
    for label, i in (("wall", 0), ("CPU", 1)):
        median = {k: statistics.median(t[i] for t in v) for k, v in times.items()}
        best = {k: min(t[i] for t in v) for k, v in times.items()}
        ratios.append(median["with"] / median["without"])
        print(
            f"  {label:>4} median: without journal {median['without']:.2f} s, with {median['with']:.2f} s "
            f"({100 * (ratios[-1] - 1):+.1f}%); best: {best['without']:.2f} s and {best['with']:.2f} s"
        )
    print("  target: at most +15% (median wall time):", "met" if ratios[0] <= 1.15 else "NOT met")


if __name__ == "__main__":
    main()
