"""How `refresh` scales on a hand-written YAML file PBX (not the JSON-compatible YAML the tool writes).

    python benchmarks/yaml_scale.py [--users 100000] [--workdir DIR] [--repeat 1]

It writes a file PBX of N users as a person or another tool would write YAML: block style at the top,
one flow mapping per user and per number, comments, unquoted keys. Then it times, each in a fresh process:
- refresh: `adsync-plan refresh` end to end (parse, validate, build the snapshot, write it);
- ruamel round trip: parsing the same file with ruamel.yaml's round-trip loader alone (what refresh used
  for any YAML that is not JSON); skipped with --no-ruamel (it takes minutes at 100,000 users).
It prints wall time and peak memory (the process's maximum resident set size). Targets at 100,000 users:
refresh under 30 s and under 1 GiB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST = 200000
PREFIX = "+4970222"

CONFIG = """\
version: 1
source: {type: ldif, path: directory.ldif}
scope: {admin_groups: [], user_groups: ["CN=PBX-Users,OU=Groups,DC=example,DC=com"]}
numbering:
  country: DE
  blocks: [{external_prefix: "+4970222", internal_prefix: ""}]
pbx: {type: file, path: pbx.yaml}
"""

RUAMEL = """
import sys
from ruamel.yaml import YAML
YAML(typ="rt").load(open(sys.argv[1], encoding="utf-8"))
"""


def write_pbx(path: Path, n: int) -> None:
    lines = ["# the PBX of a test company, written by hand", "format_version: 1", "users:"]
    for i in range(n):
        ext = FIRST + i
        admin = "true" if i == 0 else "false"
        lines.append(
            f"  - {{id: {i + 1}, login_id: '{ext}', first_name: Jürgen, last_name: Müller {i},"
            f" email: user{i}@example.com, is_admin: {admin}, primary_internal_number: '{ext}'}}"
        )
    lines.append("numbers:")
    for i in range(n):
        ext = FIRST + i
        lines.append(f"  - {{number: '{ext}', type: internal, owner: {i + 1}, service: standard}}")
        lines.append(f"  - {{number: '{PREFIX}{ext}', type: external, owner: {i + 1}}}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def timed(args: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS in MiB of one child process (GNU time's maximum resident set size)."""
    start = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/env", "python3", "-c", _MEASURE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's code, whatever is installed
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return elapsed, float(proc.stdout.strip().splitlines()[-1]) / 1024


# Runs the command as a child and prints its peak RSS in KiB (ru_maxrss of the waited-for children).
_MEASURE = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-ruamel", action="store_true", help="skip the round-trip parse (minutes at 100,000)")
    args = parser.parse_args()
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="adsync-yaml-"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adsync.yaml").write_text(CONFIG, encoding="utf-8")
    (folder / "directory.ldif").write_text("version: 1\n", encoding="utf-8")  # refresh does not read it
    write_pbx(folder / "pbx.yaml", args.users)
    size = (folder / "pbx.yaml").stat().st_size / 2**20
    print(f"hand-written file PBX: {args.users:,} users, {size:.1f} MiB, in {folder}", flush=True)
    refresh = [sys.executable, "-m", "adsync_plan", "refresh", "-c", "adsync.yaml"]
    runs = [timed(refresh, folder) for _ in range(args.repeat)]
    best = min(runs)
    print(f"refresh:            {best[0]:7.2f} s  {max(r[1] for r in runs):7.0f} MiB")
    if not args.no_ruamel:
        secs, mib = timed([sys.executable, "-c", RUAMEL, "pbx.yaml"], folder)
        print(f"ruamel round trip:  {secs:7.2f} s  {mib:7.0f} MiB  (parse only)")


if __name__ == "__main__":
    main()
