"""Mutation testing of the safety core with mutmut 3: does a fast subset of the tests notice when the code that
decides what may change is broken?

    python benchmarks/mutation.py            # ends with: mutants: K killed, S survived, T total

Mutated (the functions named in FUNCTIONS): the safety valve and R9's orphan marking (diff.py), plan
applicability (planfile.py: expiry, replay, the valve's refusal, project and configuration), staleness
(pipeline.py's _refuse_if_stale), matching, protection and ownership (rules/pbx.py), the invariants every plan
is checked against (rules/invariants.py), the fingerprint, the snapshot's fingerprint check and the lock
(state.py), and the apply journal (journal.py). The tests run are TESTS (a few minutes alone); mutmut runs,
for each mutant, only those of them that call the mutated function.

mutmut is not a project dependency (with textual and libcst it is ~25 MB, and it needs a newer click than the
project pins): install it beside the project without touching the project's environment, e.g.

    python -m venv --system-site-packages /tmp/mutvenv && /tmp/mutvenv/bin/pip install mutmut==3.8.1
    /tmp/mutvenv/bin/python benchmarks/mutation.py

After adding tests for survivors, or after the code changed, `benchmarks/mutation.py --again` keeps the last
run's verdicts where mutmut may (a killed mutant of a function whose code is unchanged), runs every other
mutant against the checkout's current code and tests, and prints the same final line for all mutants.

The work happens in a copy of the repository under the system's temporary folder, never in the checkout. A
survivor that is equivalent (no test could tell it from the original) is listed with its reason in
benchmarks/mutation-survivors.md; any other survivor is printed as a gap to close with a test. Not run in CI.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SURVIVORS = ROOT / "benchmarks" / "mutation-survivors.md"
# one work folder per checkout: two worktrees may run this at once on one machine
WORK = Path(tempfile.gettempdir()) / f"adsync-plan-mutation-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]}"

MODULES = [
    "adsync_plan/diff.py",
    "adsync_plan/planfile.py",
    "adsync_plan/pipeline.py",
    "adsync_plan/rules/pbx.py",
    "adsync_plan/rules/invariants.py",
    "adsync_plan/state.py",
    "adsync_plan/journal.py",
]
# mutmut's names: module.x_function, or module.xǁClassǁmethod, then __mutmut_N
FUNCTIONS = [
    "adsync_plan.diff.x_safety_problems__mutmut_*",
    "adsync_plan.diff.x_orphaned__mutmut_*",
    "adsync_plan.planfile.x_check_applicable__mutmut_*",
    "adsync_plan.planfile.x_check_before_apply__mutmut_*",
    "adsync_plan.pipeline.x__refuse_if_stale__mutmut_*",
    "adsync_plan.rules.pbx.xǁReconcilerǁ__init____mutmut_*",
    "adsync_plan.rules.pbx.xǁReconcilerǁ_email_index__mutmut_*",
    "adsync_plan.rules.pbx.xǁReconcilerǁmatch__mutmut_*",
    "adsync_plan.rules.pbx.xǁReconcilerǁis_protected__mutmut_*",
    "adsync_plan.rules.pbx.xǁReconcilerǁ_orphans__mutmut_*",
    "adsync_plan.state.x_canonical__mutmut_*",
    "adsync_plan.state.x_fingerprint__mutmut_*",
    "adsync_plan.state.x__digest__mutmut_*",
    "adsync_plan.state.x_load_snapshot__mutmut_*",
    "adsync_plan.rules.invariants.*__mutmut_*",
    "adsync_plan.state.xǁLockǁ*__mutmut_*",
    "adsync_plan.state.x__create__mutmut_*",
    "adsync_plan.state.x__create_exclusive__mutmut_*",
    "adsync_plan.state.x_alive_here__mutmut_*",
    "adsync_plan.state.x_inspect_lock__mutmut_*",
    "adsync_plan.state.x_force_unlock__mutmut_*",
    "adsync_plan.state.x__remove_broken__mutmut_*",
    "adsync_plan.journal.*__mutmut_*",
]
TESTS = [
    "tests/test_promises.py",
    "tests/test_safety_core.py",
    "tests/test_journal_replay.py",  # the journal's group parts: writing, reading, finding, replaying
    "tests/test_rules.py",
    "tests/test_invariants.py",
    "tests/test_groups.py",  # the group parts of the invariants and of the journal (property test included)
    "tests/test_starface_groups.py",
    "tests/test_lifecycle.py::test_stale_plan_is_refused_and_says_what_changed",
    "tests/test_lifecycle.py::test_expired_plan_is_refused",
    "tests/test_lifecycle.py::test_reapplying_a_plan_is_refused",
    "tests/test_lifecycle.py::test_second_apply_waits_for_the_lock_then_fails_with_the_holder",
    "tests/test_lifecycle.py::test_lock_released_by_the_holder_lets_the_waiter_through",
    "tests/test_lifecycle.py::test_force_unlock_removes_a_crashed_runs_lock",
    "tests/test_lifecycle.py::test_plan_apply_then_plan_again_is_empty",
    "tests/test_bad_input.py::test_hand_edited_snapshot_is_refused",
    "tests/test_bad_input.py::test_a_damaged_plan_or_snapshot_says_how_to_make_it_again_not_how_to_edit_it",
    "tests/test_cli_ops.py::test_sync_and_apply_refuse_a_held_lock_until_force_unlock",
    "tests/test_interrupt_locks.py::test_a_broken_lock_file_is_named_by_apply_and_removed_by_force_unlock",
    "tests/test_interrupt_locks.py::test_the_lock_of_a_dead_run_on_this_host_is_taken_over_after_saying_so",
    "tests/test_interrupt_locks.py::test_the_lock_of_another_host_still_needs_force_unlock",
    "tests/test_interrupt_locks.py::test_a_run_removes_only_its_own_lock",
    "tests/test_interrupt.py::test_when_the_pbx_cannot_be_read_after_apply_the_snapshot_adds_the_steps_done",
    "tests/test_interrupt.py::test_replay_carries_a_service_change_over",
    "tests/test_plan_integrity.py::test_a_dropped_safety_refusal_is_refused",
    "tests/test_plan_integrity.py::test_a_plan_of_another_configuration_is_refused",
    "tests/test_plan_integrity.py::test_a_plan_of_another_project_is_refused_as_such",
    "tests/test_plan_integrity.py::test_a_plan_made_before_the_first_snapshot_still_applies_after_a_refresh",
    # the journal is tested in process (test_safety_core.py): test_interrupt.py's kill -9 tests run a child
    # process, which mutmut cannot see, and cost 15 s each
]
COPIED = ["adsync_plan", "tests", "schemas", "examples", "pyproject.toml", "README.md"]
KILLED = {"killed", "timeout", "caught by type check"}
NOT_RUN = "not checked"


def setup_cfg() -> str:
    def lines(values):
        return "".join(f"\n    {v}" for v in values)

    return (
        "[mutmut]\n"
        "source_paths = adsync_plan\n"
        f"only_mutate ={lines(MODULES)}\n"
        "also_copy =\n    schemas\n    examples\n    README.md\n"
        f"pytest_add_cli_args_test_selection ={lines(TESTS)}\n"
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -q\n"
        "mutate_only_covered_lines = false\n"
        "use_git_change_detection = false\n"
    )


def _ignored(folder: str):
    """What not to copy: caches, and the demo's own runs (examples/); the golden cases' states/ folders are
    their PBX snapshots, which the group cases need (copied without them, those tests fail in mutmut's run)."""
    if folder == "examples":
        return shutil.ignore_patterns("__pycache__", "states", "plans")
    return shutil.ignore_patterns("__pycache__")


def prepare() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, WORK / name, ignore=_ignored(name))
        else:
            shutil.copy2(source, WORK / name)
    text = (WORK / "pyproject.toml").read_text()
    (WORK / "pyproject.toml").write_text(re.sub(r"\n\[tool\.mutmut\][^\[]*", "\n", text))  # setup.cfg rules
    (WORK / "setup.cfg").write_text(setup_cfg())


def refresh_tests() -> list[str]:
    """--again: copy the checkout's code and tests over the last run's, and name the mutants to run: those not
    killed, and those of functions whose code changed (mutmut forgets their verdicts itself, function by
    function). A killed mutant of an unchanged function stays killed: a test added can only kill more."""
    if not (WORK / "mutants").is_dir():
        sys.exit(f"no earlier run in {WORK}: run without --again")
    for name in COPIED:
        source, target = ROOT / name, WORK / name
        if source.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, ignore=_ignored(name))
        else:
            shutil.copy2(source, target)
    text = (WORK / "pyproject.toml").read_text()
    (WORK / "pyproject.toml").write_text(re.sub(r"\n\[tool\.mutmut\][^\[]*", "\n", text))
    (WORK / "setup.cfg").write_text(setup_cfg())
    mutmut("run", "--max-children", "1", "adsync_plan.diff.x_orphaned__mutmut_1")  # regenerates changed files
    return sorted(name for name, status in results().items() if selected(name) and status not in KILLED)


def mutmut(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    # CI=1: hypothesis with a fixed seed (tests/conftest.py), so a mutant's verdict does not depend on luck;
    # fewer examples keep each run short
    env = {**os.environ, "CI": "1", "HYPOTHESIS_EXAMPLES": os.environ.get("HYPOTHESIS_EXAMPLES", "150")}
    env.pop("PYTHONPATH", None)  # the copy in mutants/ must be the code imported, not the checkout
    return subprocess.run(
        [sys.executable, "-m", "mutmut", *args], cwd=WORK, env=env, text=True, capture_output=capture, check=False
    )


def results() -> dict[str, str]:
    done = mutmut("results", "--all", "true", capture=True)
    found = {}
    for line in done.stdout.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if "__mutmut_" in name:
            found[name] = status
    return found


def selected(name: str) -> bool:
    import fnmatch

    return any(fnmatch.fnmatch(name, pattern) for pattern in FUNCTIONS)


def known_equivalent() -> set[str]:
    if not SURVIVORS.exists():
        return set()
    return set(re.findall(r"`(adsync_plan\.[^`]+__mutmut_\d+)`", SURVIVORS.read_text(encoding="utf-8")))


def main() -> int:
    try:
        import mutmut as _  # noqa: F401
    except ImportError:
        print(__doc__, file=sys.stderr)
        print("mutmut is not installed for this Python; see above.", file=sys.stderr)
        return 1
    max_children = os.environ.get("MUTATION_CHILDREN", str(os.cpu_count() or 2))
    if "--again" in sys.argv[1:]:
        again = refresh_tests()
        if again:
            mutmut("run", "--max-children", max_children, *again)
    else:
        prepare()
        mutmut("run", "--max-children", max_children, *FUNCTIONS)
    found = {name: status for name, status in results().items() if selected(name)}
    killed = sum(1 for status in found.values() if status in KILLED)
    not_run = sum(1 for status in found.values() if status == NOT_RUN)
    survivors = sorted(name for name, status in found.items() if status not in KILLED and status != NOT_RUN)
    equivalent = known_equivalent()
    for name in survivors:
        verdict = "equivalent (benchmarks/mutation-survivors.md)" if name in equivalent else "NOT EXPLAINED"
        print(f"survived: {name} [{found[name]}] {verdict}")
    unexplained = [name for name in survivors if name not in equivalent]
    if unexplained:
        print(f"{len(unexplained)} survivor(s) not explained; see them with: cd {WORK} && python -m mutmut show NAME")
    if not_run:  # the run was stopped before their turn: neither killed nor survived
        print(f"{not_run} mutant(s) not run yet; run again with --again to finish")
    print(
        f"mutants: {killed} killed, {len(survivors)} survived, {len(found)} total"
        + (f" ({not_run} not run)" if not_run else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
