"""The Python API and the only wiring: render(), refresh(), make_plan(), apply(), sync().

Stages never call each other; this module hands each one the output of the last.
"""

from __future__ import annotations

import itertools
import json
import logging
import socket
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from adsync_plan import __version__, background, diff, interrupts, journal, parallel, sources, state
from adsync_plan.config import Config
from adsync_plan.desired import DesiredState, desired_sha256, read_desired, write_desired
from adsync_plan.errors import AdsyncError, InputError, Interrupted, PbxError, PlanRefused
from adsync_plan.interrupts import Deferred
from adsync_plan.journal import Journal, replay
from adsync_plan.model import NO_PROGRESS, OVERRIDE_MASS_ORPHAN, Diagnostic, Directory, Plan, Progress
from adsync_plan.planfile import check_before_apply, load_plan, save_plan, signing_key
from adsync_plan.providers import make_provider
from adsync_plan.providers.base import short_external_numbers
from adsync_plan.rules import invariants
from adsync_plan.rules.directory import recheck, render_users
from adsync_plan.rules.pbx import Decisions, reconcile
from adsync_plan.schemas import guess_name
from adsync_plan.state import (
    Lock,
    Snapshot,
    append_audit,
    applied_plan_ids,
    check_writable,
    describe_changes,
    fingerprint,
    iso,
    load_snapshot,
    now_utc,
    save_snapshot,
)
from adsync_plan.steps import is_group_step, plan_steps, run_group_step, run_step
from adsync_plan.verify import VerificationFailed, checkpoints, verify_group, verify_user

log = logging.getLogger(__name__)

DEFAULT_PARALLELISM = 4  # pbx.parallelism
# From a snapshot this large (about 4,000 users), plan reads the directory in a child process meanwhile.
CHILD_FROM_SNAPSHOT_BYTES = 2_000_000
CHUNK = 5_000  # directory users per message from the child


# -- render -----------------------------------------------------------------------------------------------


def render(config: Config, progress: Progress = NO_PROGRESS) -> DesiredState:
    return render_directory(read_directory(config, progress), config)


def read_directory(config: Config, progress: Progress = NO_PROGRESS, stream: bool = False) -> Directory:
    return sources.read_directory(config.source, config.scope, config.attributes, config.base_dir, progress, stream)


def render_directory(directory: Directory, config: Config) -> DesiredState:
    state = DesiredState(render_users(directory, config), dict(directory.attributes), dict(directory.origin))
    rendered = state.rendered
    log.info(
        "rendered %d desired users, %d held, %d out of scope",
        len(rendered.desired),
        len(rendered.held),
        rendered.out_of_scope,
    )
    return state


def render_to_file(config: Config, out: Path | None, progress: Progress = NO_PROGRESS) -> tuple[DesiredState, Path]:
    state = render(config, progress)
    path = out or config.desired_path
    state.sha256 = write_desired(path, state, config.sha256)
    return state, path


# -- refresh ----------------------------------------------------------------------------------------------


def _previous_snapshot(config: Config) -> Snapshot | None:
    return load_snapshot(config.snapshot_path) if config.snapshot_path.exists() else None


def read_pbx(config: Config, previous: Snapshot | None, progress: Progress = NO_PROGRESS) -> Snapshot:
    """The live PBX as a snapshot (in memory), carrying the bindings and lineage of the previous one."""
    with make_provider(config.pbx, config.base_dir, config.licenses) as provider:
        state = provider.read(progress)
        describe = provider.describe()
    snap = Snapshot(state=state, bindings=dict(previous.bindings) if previous else {}, pbx=describe)
    if previous:
        snap.lineage, snap.serial = previous.lineage, previous.serial
        snap.group_bindings = dict(previous.group_bindings)
    return snap


def refresh(config: Config, progress: Progress = NO_PROGRESS) -> Snapshot:
    with state_lock(config, None, "refresh"):  # an apply's bindings are never overwritten by an older read
        previous = _previous_snapshot(config)
        live = read_pbx(config, previous, progress)
        return save_snapshot(config.snapshot_path, live.state, live.bindings, live.pbx, previous)


# -- the lock and recovery --------------------------------------------------------------------------------


@contextmanager
def state_lock(config: Config, plan_id: str | None, operation: str):
    """Every command that writes states/ holds this lock; the first thing it does is recover from the
    journal a run killed before it could write its snapshot and audit."""
    with Lock(config.state_dir, plan_id, operation, config.lock_timeout) as lock:
        recover(config)
        yield lock


def recover(config: Config) -> dict | None:
    """With the lock held, a journal is a dead run's: bind the users it created (found on the PBX by login
    ID), write the snapshot and an audit record `recovered`, remove the journal. None when there is none."""
    entries = journal.read(config.state_dir)
    if entries is None:
        return None
    head = journal.header(entries)
    # we hold the lock, so its run lost it: crashed, or force-unlocked while alive (then leave it be)
    if head.get("host") == socket.gethostname() and state.alive_here(head.get("host"), head.get("pid")):
        log.warning(
            "%s belongs to a run that is still alive (pid %s); left alone",
            journal.path_in(config.state_dir),
            head.get("pid"),
        )
        return None
    previous = _previous_snapshot(config)
    try:
        live = read_pbx(config, previous)
    except AdsyncError as err:
        raise PbxError(
            f"{journal.path_in(config.state_dir)}: a run of plan {head.get('plan_id', '?')} was killed before it "
            f"finished, and the PBX cannot be read to recover from its journal ({err}). Nothing was changed; run "
            "the command again when the PBX answers."
        ) from None
    found, missing = journal.found_bindings(entries, live.state)
    groups_found = journal.found_group_bindings(entries, live.state)
    group_bindings = {**live.group_bindings, **groups_found}
    save_snapshot(config.snapshot_path, live.state, {**live.bindings, **found}, live.pbx, previous, group_bindings)
    record = {
        "plan_id": head.get("plan_id"),
        "run_id": head.get("run_id"),
        "result": "recovered",
        "steps_started": sum(1 for e in entries if "step" in e),
        "created_found": len([e for e in entries if e.get("kind") == "create"]) - len(missing),
        "created_missing": missing[:100],
    }
    if groups_found:
        record["groups_found"] = len(groups_found)
    if not audited(config.state_dir, head.get("run_id")):  # killed between its audit and removing the journal
        append_audit(config.state_dir, record)
    journal.path_in(config.state_dir).unlink(missing_ok=True)
    log.warning(
        "recovered from the journal of a killed apply of plan %s: %d step(s) were started, %d new user(s) found "
        "on the PBX and bound; run plan again to converge",
        record["plan_id"],
        record["steps_started"],
        record["created_found"],
    )
    return record


def audited(state_dir: Path, run_id: str | None) -> bool:
    """Whether the last audit record is the run's own (its journal outlived the record by a moment)."""
    path = state_dir / "audit.jsonl"
    if run_id is None or not path.exists():
        return False
    with open(path, "rb") as fh:
        fh.seek(max(0, fh.seek(0, 2) - 65536))
        lines = fh.read().splitlines()
    try:
        return bool(lines) and json.loads(lines[-1]).get("run_id") == run_id
    except ValueError:
        return False


def force_unlock(config: Config, lock_id: str, force: bool = False) -> tuple[dict, dict | None]:
    """Remove the lock (state.force_unlock says when it may), then recover from a dead run's journal."""
    info = state.force_unlock(config.state_dir, lock_id, force)
    with Lock(config.state_dir, None, "force-unlock", config.lock_timeout):
        return info, recover(config)


# -- plan -------------------------------------------------------------------------------------------------


@dataclass
class PlanResult:
    plan: Plan
    refused: list[str] = field(default_factory=list)
    decisions: Decisions | None = None
    desired: DesiredState | None = None
    snapshot: Snapshot | None = None


def make_plan(
    config: Config,
    desired_path: Path | None = None,
    refresh_pbx: bool = True,
    allow_mass_orphan: bool = False,
    progress: Progress = NO_PROGRESS,
    rendered: DesiredState | None = None,
    targets: tuple[str, ...] = (),
) -> PlanResult:
    """Plan from `rendered` (already rendered), else the desired state at `desired_path`, else the source.
    With `targets` (addresses, `--target`), only those users' changes are planned."""
    if rendered is None and desired_path is None:
        return _plan_from_source(config, refresh_pbx, allow_mass_orphan, progress, targets)
    desired = rendered if rendered is not None else _read_desired(desired_path, config)
    desired.sha256 = desired.sha256 or desired_sha256(desired, config.sha256)
    snapshot = _snapshot_for_plan(config, refresh_pbx, progress)
    return _plan(config, desired, snapshot, desired_path, allow_mass_orphan, targets=targets)


def _read_desired(path: Path, config: Config) -> DesiredState:
    """A desired state from a file is input, not truth: the rules that need no directory run again."""
    desired = read_desired(path)
    desired.rendered = recheck(desired.rendered, config, desired.attributes)
    return desired


def _plan_from_source(
    config: Config, refresh_pbx: bool, allow_mass_orphan: bool, progress: Progress, targets: tuple[str, ...] = ()
) -> PlanResult:
    """At scale, a child process reads the directory while this one reads the PBX (or its snapshot): the reads
    overlap, on two cores or as two network waits. Then a fork of this process works ahead while it
    reconciles: it names the fields of the likely changes and computes the desired state's digest."""
    if not (background.available and _snapshot_size(config) >= CHILD_FROM_SNAPSHOT_BYTES):
        desired = render(config, progress)
        desired.sha256 = desired_sha256(desired, config.sha256)
        snapshot = _snapshot_for_plan(config, refresh_pbx, progress)
        return _plan(config, desired, snapshot, None, allow_mass_orphan, targets=targets)
    with background.Forked(lambda: _read_streaming(config, progress)) as child:
        try:
            snapshot = _snapshot_for_plan(config, refresh_pbx, NO_PROGRESS)  # one progress bar: the child's
        except AdsyncError:
            for _ in _streamed_directory(child).users:  # a directory error is reported first, as without the child
                pass
            raise
        desired = render_directory(_streamed_directory(child), config)
    with background.Forked(lambda: _ahead(desired, snapshot, config)) as ahead:
        # one stream of answers: _plan asks for the likely fields (at the diff) before the digest (at the end)
        return _plan(
            config, desired, snapshot, None, allow_mass_orphan, digest=ahead.next, likely=ahead.next, targets=targets
        )


def _read_streaming(config: Config, progress: Progress):
    """The child's answers: the directory without users, its users in chunks as they are read, then an empty
    chunk."""
    directory = read_directory(config, progress, stream=True)
    yield replace(directory, users=())
    reading = iter(directory.users)
    while chunk := tuple(itertools.islice(reading, CHUNK)):
        yield chunk
    yield ()


def _ahead(desired: DesiredState, snapshot: Snapshot, config: Config):
    """The fork's answers, in the order `_plan` asks for them: the fields of the likely changes (its costly
    part, deepdiff), then the digest of the desired state."""
    yield diff.likely_fields(desired.rendered, snapshot.state, snapshot.bindings, config.ownership == "all")
    yield desired_sha256(desired, config.sha256)


def _streamed_directory(child: background.Forked) -> Directory:
    """The directory whose users arrive in chunks: the rules check one chunk while the child reads the next."""
    return replace(child.next(), users=(user for chunk in iter(child.next, ()) for user in chunk))


def _snapshot_size(config: Config) -> int:
    try:
        return config.snapshot_path.stat().st_size
    except OSError:
        return 0


def _plan(
    config: Config,
    desired: DesiredState,
    snapshot: Snapshot,
    desired_path: Path | None,
    allow_mass_orphan: bool,
    digest: Callable[[], str] | None = None,
    targets: tuple[str, ...] = (),
    likely: Callable[[], dict] | None = None,
) -> PlanResult:
    """Rules that need the PBX, the diff, the safety valve: the plan. `digest` supplies the desired state's
    sha256, and `likely` the fields of the likely changes (diff.likely_fields), when they are computed
    elsewhere meanwhile."""
    decisions = reconcile(
        desired.rendered.desired,
        desired.rendered.held,
        snapshot.state,
        snapshot.bindings,
        config,
        desired.attributes,
        desired.rendered.groups,
        snapshot.group_bindings,
    )
    name_fields = diff.known_fields(likely(), background.parallel_map) if likely else background.parallel_map
    actions, unchanged = diff.actions(decisions, snapshot.state, name_fields)
    group_actions = diff.group_actions(decisions, snapshot.state)
    invariants.refuse_own_plan(
        actions, snapshot.state, snapshot.bindings, config, group_actions, snapshot.group_bindings
    )
    targeted = _Targeted.of(targets, desired, snapshot, decisions, actions) if targets else None
    if targeted:
        actions = targeted.actions(actions, snapshot, config)
        group_actions = []  # a targeted plan plans users only
    diagnostics = [d for h in desired.rendered.held for d in h.diagnostics] + desired.rendered.warnings
    diagnostics += [d for found in decisions.held.values() for d in found] + decisions.diagnostics
    diagnostics += [d for found in decisions.group_held.values() for d in found]
    diagnostics += _pbx_warnings(snapshot.state)
    if targeted:
        diagnostics = [d for d in diagnostics if targeted.keeps(d.address)]
    if desired_path is not None and desired.config_sha256 not in ("", config.sha256):
        diagnostics.append(
            Diagnostic(
                "warning",
                "STALE_DESIRED_STATE",
                "plan",
                f"{desired_path} was rendered with another version of {config.path.name}; this plan does not show the "
                "configuration's changes. Run `adsync-plan render` and commit the desired state.",
            )
        )
    # the safety valve counts group orphans with user orphans, and bound groups with managed users
    orphan_count = sum(1 for a in actions if a.action == "orphan")
    group_orphans = sum(1 for a in group_actions if a.action == "orphan")
    problems = diff.safety_problems(
        orphan_count + group_orphans,
        decisions,
        snapshot.bindings,
        {u.source_id for u in desired.rendered.desired.values()},
        config.safety,
        in_scope=len(desired.rendered.desired) + len(desired.rendered.held),
    )
    overrides, refused = [], []
    for problem in problems:
        severity = "warning" if allow_mass_orphan else "error"
        diagnostics.append(Diagnostic(severity, "SAFETY_THRESHOLD", "plan", problem + "."))
        (overrides if allow_mass_orphan else refused).append(problem)
    if overrides:
        overrides = [OVERRIDE_MASS_ORPHAN]
    held_count = len(desired.rendered.held) + len(decisions.held)
    if targeted:
        held_count, unchanged = targeted.counts(actions, diagnostics)
    summary = {
        "create": sum(1 for a in actions if a.action == "create"),
        "update": sum(1 for a in actions if a.action == "update"),
        "orphan": orphan_count,
        "unchanged": unchanged,
        "held": held_count,
        "protected": len(decisions.protected) if not targeted else targeted.protected(decisions),
    }
    if group_actions or decisions.group_managed or desired.rendered.groups:  # only then: plans keep their bytes
        for kind in ("create", "update", "orphan"):
            summary[f"group_{kind}"] = sum(1 for a in group_actions if a.action == kind)
        summary["group_held"] = len(decisions.group_held) if not targeted else 0
    if digest is not None:
        desired.sha256 = digest()
    created = now_utc()
    plan = Plan(
        plan_id=str(uuid.uuid4()),
        created_at=iso(created),
        expires_at=iso(created + config.plan_ttl),
        tool_version=__version__,
        config_sha256=config.sha256,
        desired_sha256=desired.sha256,
        base_state={
            "lineage": snapshot.lineage,
            "serial": snapshot.serial,
            "fingerprint": snapshot.fingerprint,
        },
        changes=tuple(actions),
        diagnostics=tuple(sorted(diagnostics, key=_diagnostic_order)),
        overrides=tuple(overrides),
        summary=summary,
        bindings=targeted.bindings(decisions) if targeted else diff.bindings(decisions),
        targets=targeted.record() if targeted else None,
        group_changes=tuple(group_actions),
    )
    return PlanResult(plan, refused, decisions, desired, snapshot)


@dataclass
class _Targeted:
    """`plan --target`: the addresses planned, and how many users the whole plan would consider."""

    given: tuple[str, ...]
    addresses: set[str]
    total: int

    @classmethod
    def of(cls, targets, desired: DesiredState, snapshot: Snapshot, decisions: Decisions, actions) -> _Targeted:
        rendered = desired.rendered
        considered = {f"user.{account}" for account in rendered.desired} | {h.address for h in rendered.held}
        considered |= {a.address for a in actions if a.action == "orphan"}
        by_login = {u.login_id: i for i, u in snapshot.state.users.items()}
        by_pbx_id = {pbx_id: f"user.{account}" for account, (_, pbx_id, _) in decisions.matches.items()}
        by_pbx_id |= {pbx_id: f"user.{account}" for account, pbx_id in decisions.protected.items()}
        addresses = set()
        for target in targets:
            address = target.lower() if target.startswith(("user.", "pbx_user.")) else f"user.{target.lower()}"
            if address.startswith("pbx_user.") and address not in considered:
                address = by_pbx_id.get(by_login.get(target[len("pbx_user.") :]), address)
            if address not in considered:
                raise InputError(
                    f"--target {target}: no user in scope or PBX user to orphan has this address; write "
                    "user.<account> or pbx_user.<login ID> (`adsync-plan explain` tells what happens to a user)."
                )
            addresses.add(address)
        return cls(tuple(targets), addresses, len(considered))

    def actions(self, actions, snapshot: Snapshot, config: Config) -> list:
        """The targeted changes, refused when they need a change left out (a number or login ID set free)."""
        kept = [a for a in actions if a.address in self.addresses]
        found = invariants.violations(kept, snapshot.state, snapshot.bindings, config, allow_mass_orphan=True)
        if found:
            raise PlanRefused(
                f"the targeted plan needs changes of users it leaves out ({'; '.join(found[:5])}); add their "
                "addresses with --target, or plan without --target. Nothing was planned."
            )
        return kept

    def keeps(self, address: str) -> bool:
        """A diagnostic of a user outside the targets is left out; the plan's own (R13, the PBX) stay."""
        return not address.startswith(("user.", "pbx_user.")) or address in self.addresses

    def counts(self, actions, diagnostics) -> tuple[int, int]:
        """held and unchanged among the targets."""
        held = {d.address for d in diagnostics if d.severity == "error" and d.address in self.addresses}
        changed = {a.address for a in actions}
        return len(held), len(self.addresses - held - changed)

    def protected(self, decisions: Decisions) -> int:
        return sum(1 for account in decisions.protected if f"user.{account}" in self.addresses)

    def bindings(self, decisions: Decisions) -> dict[str, str]:
        return {
            user.source_id: pbx_id
            for account, (user, pbx_id, _) in decisions.matches.items()
            if f"user.{account}" in self.addresses
        }

    def record(self) -> dict:
        return {"addresses": sorted(self.addresses), "considered": len(self.addresses), "of": self.total}


def plan_refresh_only(config: Config, progress: Progress = NO_PROGRESS) -> Plan:
    """`plan --refresh-only`: what changed on the PBX since the committed snapshot, as a plan without changes.
    Its base state is the PBX as read now, so its apply (stale if the PBX changed again) only writes the
    snapshot; the directory is not read."""
    previous = _previous_snapshot(config)
    if previous is None:
        raise InputError(
            f"{config.snapshot_path}: no committed snapshot to compare the PBX with; run `adsync-plan refresh` to "
            "write the first one."
        )
    live = _with_journal(config, read_pbx(config, previous, progress))
    changed = [] if live.fingerprint == previous.fingerprint else describe_changes(previous.state, live.state, 200)
    created = now_utc()
    return Plan(
        plan_id=str(uuid.uuid4()),
        created_at=iso(created),
        expires_at=iso(created + config.plan_ttl),
        tool_version=__version__,
        config_sha256=config.sha256,
        desired_sha256="",
        base_state={"lineage": previous.lineage, "serial": previous.serial, "fingerprint": live.fingerprint},
        changes=(),
        diagnostics=tuple(_pbx_warnings(live.state)),
        overrides=(),
        summary={"create": 0, "update": 0, "orphan": 0, "unchanged": len(live.state.users), "held": 0, "protected": 0},
        bindings={},
        refresh_only={"since_serial": previous.serial, "pbx_changes": changed},
    )


def _pbx_warnings(state) -> list[Diagnostic]:
    """What looks wrong in the PBX itself (doctor says the same): implausibly short external numbers."""
    return [
        Diagnostic("warning", "SHORT_EXTERNAL_NUMBER", "pbx", text) for text in short_external_numbers(state.numbers)
    ]


def _diagnostic_order(d: Diagnostic):
    return ({"error": 0, "warning": 1, "info": 2}[d.severity], d.address, d.code, d.message)


def _snapshot_for_plan(config: Config, refresh_pbx: bool, progress: Progress) -> Snapshot:
    previous = _previous_snapshot(config)
    if refresh_pbx:
        return _with_journal(config, read_pbx(config, previous, progress))
    if previous is None:
        raise InputError(
            f"{config.snapshot_path}: no state snapshot to plan against; run `adsync-plan refresh` first "
            "(or plan without --no-refresh)."
        )
    return previous


def _with_journal(config: Config, snapshot: Snapshot) -> Snapshot:
    """A killed apply's journal binds, in this plan already, the users it created (found on the live PBX):
    plan takes no lock and writes no state, so the next apply, refresh or sync records them."""
    entries = journal.read(config.state_dir)
    found = journal.found_bindings(entries, snapshot.state)[0] if entries else {}
    found = {s: i for s, i in found.items() if snapshot.bindings.get(s) != i}
    if entries:
        snapshot.group_bindings.update(journal.found_group_bindings(entries, snapshot.state))
    if found:
        log.warning(
            "%s: a killed apply left a journal; the %d user(s) it created are bound in this plan, and the next "
            "apply, refresh or sync records them",
            journal.path_in(config.state_dir),
            len(found),
        )
        snapshot.bindings.update(found)
    return snapshot


# -- apply ------------------------------------------------------------------------------------------------


@dataclass
class ApplyResult:
    plan: Plan
    done: list[str] = field(default_factory=list)
    not_done: list[str] = field(default_factory=list)
    snapshot: Snapshot | None = None
    steps: list = field(default_factory=list)  # (step, action, PBX user id) of each step done, in order


def apply(
    config: Config,
    plan_path: Path,
    progress: Progress = NO_PROGRESS,
    on_step: Callable[[str], None] | None = None,
    locked: bool = False,
) -> ApplyResult:
    """Carry out exactly the saved plan, after checking it may still be applied."""
    plan = load_plan(plan_path)
    check_writable(config.state_dir)  # before the lock and the first PBX write
    if locked:
        return _apply_locked(config, plan, plan_path, progress, on_step)
    with state_lock(config, plan.plan_id, "apply"):
        return _apply_locked(config, plan, plan_path, progress, on_step)


def _apply_locked(config, plan: Plan, plan_path: Path, progress, on_step) -> ApplyResult:
    previous = _previous_snapshot(config)
    check_before_apply(
        plan, plan_path, config, now_utc(), applied_plan_ids(config.state_dir), previous and previous.lineage
    )
    result = ApplyResult(plan)
    with make_provider(config.pbx, config.base_dir, config.licenses) as provider:
        live = provider.read(progress)
        _refuse_if_stale(plan, plan_path, live, previous)
        invariants.refuse_unsound_plan(
            plan,
            plan_path,
            live,
            previous.bindings if previous else None,
            config,
            previous.group_bindings if previous else None,
        )
        bindings = {**(previous.bindings if previous else {}), **plan.bindings}
        run_id = str(uuid.uuid4())
        # from the first step to the last file written, Ctrl-C and SIGTERM wait: the step in flight finishes
        known = previous.bindings if previous else {}
        with Deferred() as stop, Journal(config.state_dir, plan.plan_id, run_id, provider.buffered) as ahead:
            ahead.start({s: i for s, i in plan.bindings.items() if known.get(s) != i})
            workers = parallelism(config, provider)
            group_bindings = dict(previous.group_bindings) if previous else {}
            names = [g.name for g in live.groups.values()]  # a swap's temporary name avoids them all
            error = _run_steps(
                plan, provider, bindings, result, progress, on_step, stop, ahead, workers, group_bindings, names
            )
            ahead.sync()  # durable before a buffered PBX writes what the journal announced
            provider.flush()
            interrupts.test_hook("flushed")
            final = _state_after_steps(provider, live, result)
            result.snapshot = save_snapshot(
                config.snapshot_path, final, bindings, provider.describe(), previous, group_bindings
            )
            append_audit(config.state_dir, _apply_record(plan, run_id, result, error, stop))
            interrupts.test_hook("audited")
            ahead.remove()
    if _interrupted(stop, result, error):
        raise Interrupted(
            f"{stop.signal_name} stopped apply after {len(result.done)} of {len(result.done) + len(result.not_done)} "
            f"steps; {len(result.not_done)} were not started. The snapshot, the new users' bindings and the audit "
            "record are written; run plan again to converge."
        )
    if error:
        raise PbxError(
            f"apply stopped after {len(result.done)} of {len(result.done) + len(result.not_done)} steps: {error} "
            "What was done is in the snapshot; run plan again to converge."
        )
    return result


def _apply_record(plan: Plan, run_id: str, result: ApplyResult, error, stop: Deferred) -> dict:
    interrupted = _interrupted(stop, result, error)
    return {
        "plan_id": plan.plan_id,
        "plan_digest": plan.digest,
        "run_id": run_id,
        "result": "interrupted" if interrupted else _audit_result(error),
        "steps_done": len(result.done),
        "steps_not_done": len(result.not_done),
        "summary": dict(plan.summary),
        "error": str(error) if error else stop.signal_name if interrupted else None,
    }


def _interrupted(stop: Deferred, result: ApplyResult, error) -> bool:
    """A signal stopped steps from starting (one after the last step changes nothing: the plan is applied)."""
    return stop.requested and bool(result.not_done) and error is None


def _state_after_steps(provider, live, result: ApplyResult):
    """The PBX as it is now; if it does not answer, the state before the steps plus the steps done."""
    try:
        return provider.read()
    except AdsyncError as err:
        log.warning(
            "could not read the PBX after apply (%s); the snapshot adds the steps done to the state before", err
        )
        return replay(live, result.steps)


def _audit_result(error: Exception | None) -> str:
    if error is None:
        return "applied"
    return "verification_failed" if isinstance(error, VerificationFailed) else "failed"


def _refuse_if_stale(plan: Plan, plan_path: Path, live, previous: Snapshot | None) -> None:
    live_fp = fingerprint(live)
    if live_fp == plan.base_state["fingerprint"]:
        return
    if previous is not None and previous.fingerprint == plan.base_state["fingerprint"]:
        changes = describe_changes(previous.state, live)
    else:
        changes = [
            f"{a.address} (PBX user {a.pbx_user_id}) differs from the plan's 'before'"
            for a in plan.changes
            if a.pbx_user_id and live.users.get(a.pbx_user_id) != a.before
        ]
        changes += [
            f"{a.address} (PBX group {a.pbx_group_id}) changed"
            for a in plan.group_changes
            if a.pbx_group_id and (g := live.groups.get(a.pbx_group_id)) is not None and g.name != a.before.name
        ]
        changes = changes or ["the PBX differs from the state the plan was made against"]
    raise PlanRefused(
        f"{plan_path}: the plan is stale: the PBX changed since it was made ("
        + "; ".join(changes)
        + "). Nothing was changed; make a new plan."
    )


def parallelism(config: Config, provider) -> int:
    """Users whose steps run at a time (pbx.parallelism, default 4); 1 for a PBX that is not safe under
    threads (the file PBX: in memory until its flush, where threads would gain nothing anyway)."""
    wanted = int(config.pbx.get("parallelism", DEFAULT_PARALLELISM))
    return wanted if provider.parallel_safe else 1


def _run_steps(
    plan: Plan,
    provider,
    bindings: dict,
    result: ApplyResult,
    progress,
    on_step,
    stop=None,
    ahead=None,
    workers=1,
    group_bindings: dict | None = None,
    group_names=(),
) -> Exception | None:
    """The plan's steps in order, each announced in the journal `ahead` first; stops before a step when
    `stop` was requested, and at the first failure. With `workers` > 1 the users' steps run as in
    parallel.py, the groups' steps serially before (releases) and after (the rest) them."""
    steps = plan_steps(plan.changes, plan.group_changes, group_names)
    progress.start("Applying the plan", len(steps))
    group_bindings = {} if group_bindings is None else group_bindings
    run = _Serial(plan, provider, bindings, group_bindings, result, steps, progress, on_step, stop, ahead)
    users = [n for n, s in enumerate(steps) if not is_group_step(s)]
    if workers > 1 and users:
        first = [n for n, s in enumerate(steps) if s.kind == "group_release"]
        last = [n for n, s in enumerate(steps) if is_group_step(s) and s.kind != "group_release"]
        error = run.serial(first)
        if error is not None or run.halted():
            result.not_done += [steps[n].text for n in users + last]
        else:
            user_steps = [steps[n] for n in users]
            error = parallel.run_steps(
                plan, provider, bindings, result, progress, on_step, stop, ahead, user_steps, workers
            )
            if error is not None or result.not_done:
                result.not_done += [steps[n].text for n in last]
            else:
                error = run.serial(last)
    else:
        error = run.serial(range(len(steps)))
    progress.done()
    return error


class _Serial:
    """Steps one after the other: every step of a sequential apply, the group steps of a parallel one."""

    def __init__(self, plan: Plan, provider, bindings, group_bindings, result, steps, progress, on_step, stop, ahead):
        self.provider, self.result, self.steps = provider, result, steps
        self.bindings, self.group_bindings = bindings, group_bindings  # filled as users and groups are created
        self.progress, self.on_step, self.stop, self.ahead = progress, on_step, stop, ahead
        self.actions = (*plan.changes, *plan.group_changes)  # a step's index counts in this order
        self.ids = {i: a.pbx_user_id for i, a in enumerate(plan.changes)}
        self.ids.update({len(plan.changes) + j: g.pbx_group_id for j, g in enumerate(plan.group_changes)})
        self.points = checkpoints(steps)
        self._created: dict[str, str] | None = None

    def halted(self) -> bool:
        return self.stop is not None and self.stop.requested

    def member_id(self, address: str) -> str | None:
        """The PBX id of a user this apply created (sequentially or in parallel: both record it in result)."""
        if self._created is None:
            self._created = {a.address: i for step, a, i in self.result.steps if step.kind == "create"}
        return self._created.get(address)

    def serial(self, positions) -> Exception | None:
        positions = list(positions)
        for k, n in enumerate(positions):
            step = self.steps[n]
            if self.halted():
                self.result.not_done = [self.steps[m].text for m in positions[k:]]
                log.warning("%s: not started (%s)", step.text, self.stop.signal_name)
                return None
            error, done = self._one(n, step)
            if error is not None:  # a failed step is not done; a step whose verification failed is
                self.result.not_done = [self.steps[m].text for m in positions[k + (1 if done else 0) :]]
                return error
        return None

    def _one(self, n: int, step) -> tuple[Exception | None, bool]:
        """Run one step: (the error that stops the apply or None, whether the step itself was done)."""
        action, group = self.actions[step.index], is_group_step(step)
        if self.ahead is not None:
            self.ahead.step(n + 1, step, action, self.ids[step.index])
        try:
            if group:
                new_id = run_group_step(step, action, self.provider, self.ids[step.index], self.member_id)
            else:
                new_id = run_step(step, action, self.provider, self.ids[step.index])
        except Exception as err:  # noqa: BLE001 - whatever stopped it, the snapshot and audit must be written
            if not isinstance(err, AdsyncError):
                log.debug("unexpected error in %s", step.text, exc_info=True)
                err = PbxError(f"{step.text}: {type(err).__name__}: {err}")
            log.error("%s: failed: %s", step.text, err)
            return err, False
        if new_id is not None:
            self.ids[step.index] = new_id
            if group:
                self.group_bindings[action.key] = new_id  # bound at once, as a user
            elif action.source_id:
                self.bindings[action.source_id] = new_id  # bound at once: a failure later never loses it
        self.result.done.append(step.text)
        self.result.steps.append((step, action, self.ids[step.index]))
        log.info("%s: done", step.text)
        if self.on_step:
            self.on_step(step.text)
        self.progress.advance()
        if n in self.points:
            try:
                if group:
                    verify_group(self.provider, action, self.ids[step.index], self.member_id)
                else:
                    verify_user(self.provider, action, self.ids[step.index], self.points[n])
            except AdsyncError as err:
                log.error("verification failed: %s", err)
                return err, True
        interrupts.test_hook(f"step:{n + 1}")
        return None, True


# -- doctor -----------------------------------------------------------------------------------------------


def doctor(config: Config) -> dict:
    """The PBX's profile from a read-only first contact (see Provider.profile)."""
    with make_provider(config.pbx, config.base_dir, config.licenses) as provider:
        return provider.profile()


# -- explain and sync -------------------------------------------------------------------------------------


def plan_with_directory(
    config: Config, refresh_pbx: bool = True, progress: Progress = NO_PROGRESS
) -> tuple[Directory, PlanResult]:
    """A plan, and the raw directory it was rendered from (for `explain`: entries, attributes, scope)."""
    directory = read_directory(config, progress)
    return directory, make_plan(
        config, None, refresh_pbx, False, progress, rendered=render_directory(directory, config)
    )


@dataclass
class SyncResult:
    planned: PlanResult
    plan_path: Path | None = None
    applied: ApplyResult | None = None


def sync(
    config: Config,
    apply_changes: bool,
    allow_mass_orphan: bool = False,
    progress: Progress = NO_PROGRESS,
    on_step: Callable[[str], None] | None = None,
) -> SyncResult:
    """Plan from the source and the live PBX and, when `apply_changes`, save the plan under plans/ and apply
    it at once. The state lock is held for the whole run, so no apply can slip in between plan and apply."""
    check_writable(config.state_dir)  # before the lock, and before anything is planned
    with state_lock(config, None, "sync"):
        planned = make_plan(config, None, True, allow_mass_orphan, progress)
        result = SyncResult(planned)
        if planned.refused or not apply_changes:
            return result
        if not planned.plan.has_changes:
            # nothing to apply; still record the PBX as it is now and the users matched by e-mail, as an
            # apply would, so the committed snapshot stays current
            live, previous = planned.snapshot, _previous_snapshot(config)
            bindings = {**live.bindings, **planned.plan.bindings}
            save_snapshot(config.snapshot_path, live.state, bindings, live.pbx, previous)
            return result
        stamp = planned.plan.created_at.replace("-", "").replace(":", "")
        result.plan_path = config.base_dir / "plans" / f"sync-{stamp}.plan.json"
        save_plan(result.plan_path, planned.plan, signing_key(config, needed=True))
        log.info("saved the plan to %s; applying it", result.plan_path)
        result.applied = apply(config, result.plan_path, progress, on_step, locked=True)
        return result


# -- state list / show / rm, import -----------------------------------------------------------------------


@dataclass
class Binding:
    """One binding of the snapshot, with the address the desired state gives it (None when unknown)."""

    address: str | None
    source_id: str
    pbx_user_id: str
    login_id: str | None


def _committed_snapshot(config: Config) -> Snapshot:
    if not config.snapshot_path.exists():
        raise InputError(f"{config.snapshot_path}: no state snapshot yet; run `adsync-plan refresh` first.")
    return load_snapshot(config.snapshot_path)


def _accounts_by_source_id(config: Config) -> dict[str, str]:
    """source id -> account, from the desired state when there is one (state commands work without it)."""
    return _desired_names(config)[0]


def _desired_names(config: Config) -> tuple[dict[str, str], dict[str, str]]:
    """source id -> account and group binding key -> group name, from the desired state when there is one."""
    if not config.desired_path.exists():
        return {}, {}
    rendered = read_desired(config.desired_path).rendered
    accounts = {u.source_id: account for account, u in rendered.desired.items()}
    return accounts, {group.key: name for name, group in rendered.groups.items()}


def _bindings(snap: Snapshot, accounts: dict[str, str]) -> list[Binding]:
    users = snap.state.users
    return [
        Binding(
            f"user.{accounts[sid]}" if sid in accounts else None,
            sid,
            pbx_id,
            users[pbx_id].login_id if pbx_id in users else None,
        )
        for sid, pbx_id in snap.bindings.items()
    ]


def state_list(config: Config) -> tuple[list[Binding], list[GroupBinding]]:
    """Every binding of the committed snapshot, by address (unknown ones last), then PBX user id; then the
    group bindings by address. PBX groups the tool did not make have no binding and are not listed."""
    snap = _committed_snapshot(config)
    accounts, group_names = _desired_names(config)
    bindings = _bindings(snap, accounts)
    users = sorted(bindings, key=lambda b: (b.address is None, b.address or "", len(b.pbx_user_id), b.pbx_user_id))
    return users, _group_bindings(snap, group_names)


def _find_binding(snap: Snapshot, accounts: dict[str, str], address: str, path: Path) -> Binding:
    """ADDRESS as user.<account>, pbx_user.<login>, a source id or a PBX user id; an error sentence otherwise."""
    by_pbx_id = {pbx_id: sid for sid, pbx_id in snap.bindings.items()}
    if address.startswith("user."):
        wanted = address[len("user.") :].lower()
        sid = next((s for s, account in accounts.items() if account == wanted), None)
    elif address.startswith("pbx_user."):
        login = address[len("pbx_user.") :]
        sid = by_pbx_id.get(next((i for i, u in snap.state.users.items() if u.login_id == login), None))
    else:
        sid = address if address in snap.bindings else by_pbx_id.get(address)
    if sid is None or sid not in snap.bindings:
        raise InputError(
            f"{address}: no binding in {path} has this address; `adsync-plan state list` shows them "
            "(write user.<account>, pbx_user.<login>, a source id or a PBX user id)."
        )
    return next(b for b in _bindings(snap, accounts) if b.source_id == sid)


def state_show(config: Config, address: str) -> tuple[Binding, dict | None] | tuple[GroupBinding, dict]:
    """The binding and its PBX user as the snapshot has it (5.4 shape and is_admin; None if gone); for a
    group address, the group binding and its PBX group (members as addresses)."""
    snap = _committed_snapshot(config)
    if is_group_address(address):
        return _group_show(snap, *_desired_names(config), address, config.snapshot_path)
    binding = _find_binding(snap, _accounts_by_source_id(config), address, config.snapshot_path)
    user = snap.state.users.get(binding.pbx_user_id)
    shown = {**user.to_dict(), "is_admin": binding.pbx_user_id in snap.state.admins} if user else None
    return binding, shown


# -- the same for group bindings (issue 16) ---------------------------------------------------------------


@dataclass
class GroupBinding:
    """One group binding of the snapshot: its address (`group.<name>`, the desired group's name, else the PBX
    group's: the address a plan gives it), its key (what the group is for) and the PBX group id."""

    address: str
    key: str
    pbx_group_id: str


def is_group_address(address: str) -> bool:
    return address.startswith(("group.", "shared:", "map:"))


def _group_bindings(snap: Snapshot, names: dict[str, str]) -> list[GroupBinding]:
    groups = snap.state.groups  # a binding always points to a group of the snapshot (save_snapshot drops others)
    found = [
        GroupBinding(f"group.{names.get(key) or groups[gid].name}", key, gid)
        for key, gid in snap.group_bindings.items()
        if gid in groups
    ]
    return sorted(found, key=lambda b: (b.address, b.key))


def _find_group_binding(snap: Snapshot, names: dict[str, str], address: str, path: Path) -> GroupBinding:
    """ADDRESS as group.<name> (exact, else the only one whatever the case) or a binding key; one sentence
    otherwise: for a PBX group the tool did not make, or with a "did you mean"."""
    bindings = _group_bindings(snap, names)
    found = [b for b in bindings if address in (b.address, b.key)]
    found = found or [b for b in bindings if b.address.lower() == address.lower()]
    if len(found) == 1:
        return found[0]
    unbound = next((i for i, g in snap.state.groups.items() if f"group.{g.name}" == address), None)
    if unbound is not None:
        raise InputError(
            f"{address}: PBX group {unbound} has this name but no binding in {path}: adsync-plan did not make it "
            "and never touches it."
        )
    # compare names, not addresses: the shared `group.` would make any two look alike
    guess = guess_name(address.removeprefix("group."), [b.address.removeprefix("group.") for b in bindings])
    raise InputError(
        f"{address}: no group binding in {path} has this address"
        + (f" (did you mean group.{guess}?)" if guess else "")
        + "; `adsync-plan state list` shows them."
    )


def _group_show(
    snap: Snapshot, accounts: dict[str, str], names: dict[str, str], address: str, path: Path
) -> tuple[GroupBinding, dict]:
    """The group binding and its PBX group, members as user.<account> where the binding and the desired state
    know the account, else pbx_user.<login> (as plans name them)."""
    binding = _find_group_binding(snap, names, address, path)
    group = snap.state.groups[binding.pbx_group_id]
    account_of = {pbx_id: accounts[sid] for sid, pbx_id in snap.bindings.items() if sid in accounts}
    members = sorted(
        f"user.{account_of[i]}" if i in account_of else diff.pbx_user_address(snap.state, i) for i in group.members
    )
    return binding, {"name": group.name, "members": members, "numbers": list(group.numbers)}


def state_rm(config: Config, address: str) -> Binding:
    """Forget one binding (the PBX user is not touched): under the lock, written atomically, audited."""
    if is_group_address(address):
        raise InputError(
            f"{address}: `state rm` forgets user bindings only; a group binding stays while the group is desired, "
            "and a group taken out of pbx_groups is orphaned by the next plan (never deleted)."
        )
    accounts = _accounts_by_source_id(config)
    with state_lock(config, None, "state rm"):
        snap = _committed_snapshot(config)
        binding = _find_binding(snap, accounts, address, config.snapshot_path)
        bindings = {s: i for s, i in snap.bindings.items() if s != binding.source_id}
        _save_bindings(config, snap, bindings, "state rm", "binding removed", binding)
    return binding


def import_user(config: Config, account: str, pbx_user_id: str) -> Binding:
    """Bind a directory user (from the desired state) to an existing PBX user by hand. Refused, with one
    sentence and nothing written, for an unknown account or id, a protected user, or a taken binding."""
    account = account.lower().removeprefix("user.")
    if not config.desired_path.exists():
        raise InputError(f"{config.desired_path}: no desired state yet; run `adsync-plan render` first.")
    desired = read_desired(config.desired_path).rendered.desired
    user = desired.get(account)
    if user is None:
        raise InputError(
            f"{account}: no such user in the desired state {config.desired_path} (held users cannot be "
            "imported); check the account with `adsync-plan explain` or run `adsync-plan render`."
        )
    accounts = {u.source_id: a for a, u in desired.items()}
    with state_lock(config, None, "import"):
        snap = _committed_snapshot(config)
        _check_importable(config, snap, accounts, user, pbx_user_id)
        binding = Binding(f"user.{account}", user.source_id, pbx_user_id, snap.state.users[pbx_user_id].login_id)
        _save_bindings(config, snap, {**snap.bindings, user.source_id: pbx_user_id}, "import", "imported", binding)
    return binding


def _check_importable(config: Config, snap: Snapshot, accounts: dict[str, str], user, pbx_user_id: str) -> None:
    pbx_user = snap.state.users.get(pbx_user_id)
    where = config.snapshot_path
    if pbx_user is None:
        raise InputError(
            f"{pbx_user_id}: no PBX user has this id in {where}; `adsync-plan refresh` reads the PBX again, "
            "and the id is the key under users: there."
        )
    if pbx_user_id in snap.state.admins or pbx_user.login_id in config.protect_logins:
        raise InputError(
            f"PBX user {pbx_user_id} (login {pbx_user.login_id}) is protected (an administrator or listed in "
            "protect.logins) and is never managed; import another PBX user."
        )
    owner = next((s for s, i in snap.bindings.items() if i == pbx_user_id), None)
    if owner is not None and owner != user.source_id:
        who = f"user.{accounts[owner]}" if owner in accounts else f"source id {owner}"
        raise InputError(
            f"PBX user {pbx_user_id} (login {pbx_user.login_id}) is bound to {who} already; "
            f"run `adsync-plan state rm {pbx_user_id}` first if that binding is wrong."
        )
    bound = snap.bindings.get(user.source_id)
    if bound is not None:
        what = "this PBX user" if bound == pbx_user_id else f"PBX user {bound}"
        raise InputError(
            f"{user.address} is bound to {what} already; run `adsync-plan state rm {user.address}` first to "
            "bind it anew."
        )


def _save_bindings(config: Config, snap: Snapshot, bindings: dict, operation: str, result: str, b: Binding) -> None:
    """Write the snapshot with new bindings (atomic) and record it in the audit log (not as an apply)."""
    save_snapshot(config.snapshot_path, snap.state, bindings, snap.pbx, snap)
    record = {"operation": operation, "result": result, "address": b.address, "source_id": b.source_id}
    append_audit(config.state_dir, {**record, "pbx_user_id": b.pbx_user_id})
