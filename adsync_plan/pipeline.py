"""The Python API and the only wiring: render(), refresh(), make_plan(), apply(), sync().

Stages never call each other; this module hands each one the output of the last.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from adsync_plan import __version__, background, diff, sources
from adsync_plan.config import Config
from adsync_plan.desired import DesiredState, desired_sha256, read_desired, write_desired
from adsync_plan.errors import AdsyncError, InputError, PbxError, PlanRefused
from adsync_plan.model import NO_PROGRESS, Diagnostic, Directory, Plan, Progress
from adsync_plan.planfile import check_applicable, load_plan, save_plan
from adsync_plan.providers import make_provider
from adsync_plan.providers.base import short_external_numbers
from adsync_plan.rules.directory import render_users
from adsync_plan.rules.pbx import Decisions, reconcile
from adsync_plan.state import (
    Lock,
    Snapshot,
    append_audit,
    applied_plan_ids,
    describe_changes,
    fingerprint,
    iso,
    load_snapshot,
    now_utc,
    save_snapshot,
)
from adsync_plan.steps import plan_steps, run_step
from adsync_plan.verify import VerificationFailed, checkpoints, verify_user

log = logging.getLogger(__name__)
OVERRIDE_MASS_ORPHAN = "allow-mass-orphan"
# From a snapshot this large (about 4,000 users), plan reads the directory in a child process meanwhile.
CHILD_FROM_SNAPSHOT_BYTES = 2_000_000
CHUNK = 5_000  # directory users per message from the child


# -- render -----------------------------------------------------------------------------------------------


def render(config: Config, progress: Progress = NO_PROGRESS) -> DesiredState:
    return render_directory(read_directory(config, progress), config)


def read_directory(config: Config, progress: Progress = NO_PROGRESS, stream: bool = False) -> Directory:
    return sources.read_directory(config.source, config.scope, config.attributes, config.base_dir, progress, stream)


def render_directory(directory: Directory, config: Config) -> DesiredState:
    state = _desired_state(directory, config)
    rendered = state.rendered
    log.info(
        "rendered %d desired users, %d held, %d out of scope",
        len(rendered.desired),
        len(rendered.held),
        rendered.out_of_scope,
    )
    return state


def _desired_state(directory: Directory, config: Config) -> DesiredState:
    return DesiredState(render_users(directory, config), dict(directory.attributes), dict(directory.origin))


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
    return snap


def refresh(config: Config, progress: Progress = NO_PROGRESS) -> Snapshot:
    previous = _previous_snapshot(config)
    live = read_pbx(config, previous, progress)
    return save_snapshot(config.snapshot_path, live.state, live.bindings, live.pbx, previous)


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
) -> PlanResult:
    """Plan from `rendered` (already rendered), else the desired state at `desired_path`, else the source."""
    if rendered is None and desired_path is None:
        return _plan_from_source(config, refresh_pbx, allow_mass_orphan, progress)
    desired = rendered if rendered is not None else read_desired(desired_path)
    desired.sha256 = desired.sha256 or desired_sha256(desired, config.sha256)
    snapshot = _snapshot_for_plan(config, refresh_pbx, progress)
    return _plan(config, desired, snapshot, desired_path, allow_mass_orphan)


def _plan_from_source(config: Config, refresh_pbx: bool, allow_mass_orphan: bool, progress: Progress) -> PlanResult:
    """At scale, a child process reads the directory while this one reads the PBX (or its snapshot), then
    computes the desired state's digest while this one plans: the reads overlap, on two cores or as two
    network waits."""
    if not (background.available and _snapshot_size(config) >= CHILD_FROM_SNAPSHOT_BYTES):
        desired = render(config, progress)
        desired.sha256 = desired_sha256(desired, config.sha256)
        return _plan(config, desired, _snapshot_for_plan(config, refresh_pbx, progress), None, allow_mass_orphan)
    with background.Forked(lambda: _read_then_digest(config, progress)) as child:
        try:
            snapshot = _snapshot_for_plan(config, refresh_pbx, NO_PROGRESS)  # one progress bar: the child's
        except AdsyncError:
            for _ in _streamed_directory(child).users:  # a directory error is reported first, as without the child
                pass
            raise
        desired = render_directory(_streamed_directory(child), config)
        return _plan(config, desired, snapshot, None, allow_mass_orphan, digest=child.next)


def _read_then_digest(config: Config, progress: Progress):
    """The child's answers: the directory without users, its users in chunks as they are read, an empty
    chunk, then the digest of the desired state."""
    directory = read_directory(config, progress, stream=True)
    yield replace(directory, users=())
    users, reading = [], iter(directory.users)
    while chunk := tuple(itertools.islice(reading, CHUNK)):
        users += chunk
        yield chunk
    yield ()
    yield desired_sha256(_desired_state(replace(directory, users=users), config), config.sha256)  # as the parent's


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
) -> PlanResult:
    """Rules that need the PBX, the diff, the safety valve: the plan. `digest` supplies the desired state's
    sha256 when it is computed elsewhere meanwhile."""
    decisions = reconcile(
        desired.rendered.desired,
        desired.rendered.held,
        snapshot.state,
        snapshot.bindings,
        config,
        desired.attributes,
    )
    actions, unchanged = diff.actions(decisions, snapshot.state, background.parallel_map)
    diagnostics = [d for h in desired.rendered.held for d in h.diagnostics]
    diagnostics += [d for found in decisions.held.values() for d in found] + decisions.diagnostics
    diagnostics += _pbx_warnings(snapshot.state)
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
    orphan_count = sum(1 for a in actions if a.action == "orphan")
    problems = diff.safety_problems(
        orphan_count,
        decisions,
        snapshot.bindings,
        {u.source_id for u in desired.rendered.desired.values()},
        config.safety,
    )
    overrides, refused = [], []
    for problem in problems:
        severity = "warning" if allow_mass_orphan else "error"
        diagnostics.append(Diagnostic(severity, "SAFETY_THRESHOLD", "plan", problem + "."))
        (overrides if allow_mass_orphan else refused).append(problem)
    if overrides:
        overrides = [OVERRIDE_MASS_ORPHAN]
    held_count = len(desired.rendered.held) + len(decisions.held)
    summary = {
        "create": sum(1 for a in actions if a.action == "create"),
        "update": sum(1 for a in actions if a.action == "update"),
        "orphan": orphan_count,
        "unchanged": unchanged,
        "held": held_count,
        "protected": len(decisions.protected),
    }
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
        bindings=diff.bindings(decisions),
    )
    return PlanResult(plan, refused, decisions, desired, snapshot)


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
        return read_pbx(config, previous, progress)
    if previous is None:
        raise InputError(
            f"{config.snapshot_path}: no state snapshot to plan against; run `adsync-plan refresh` first "
            "(or plan without --no-refresh)."
        )
    return previous


# -- apply ------------------------------------------------------------------------------------------------


@dataclass
class ApplyResult:
    plan: Plan
    done: list[str] = field(default_factory=list)
    not_done: list[str] = field(default_factory=list)
    snapshot: Snapshot | None = None


def apply(
    config: Config,
    plan_path: Path,
    progress: Progress = NO_PROGRESS,
    on_step: Callable[[str], None] | None = None,
    locked: bool = False,
) -> ApplyResult:
    """Carry out exactly the saved plan, after checking it may still be applied."""
    plan = load_plan(plan_path)
    if locked:
        return _apply_locked(config, plan, plan_path, progress, on_step)
    with Lock(config.state_dir, plan.plan_id, "apply", config.lock_timeout):
        return _apply_locked(config, plan, plan_path, progress, on_step)


def _apply_locked(config, plan: Plan, plan_path: Path, progress, on_step) -> ApplyResult:
    check_applicable(plan, plan_path, now_utc(), applied_plan_ids(config.state_dir))
    previous = _previous_snapshot(config)
    result = ApplyResult(plan)
    with make_provider(config.pbx, config.base_dir, config.licenses) as provider:
        live = provider.read(progress)
        _refuse_if_stale(plan, plan_path, live, previous)
        bindings = {**(previous.bindings if previous else {}), **plan.bindings}
        error = _run_steps(plan, provider, bindings, result, progress, on_step)
        provider.flush()
        try:
            final = provider.read()
        except AdsyncError as err:
            log.warning("could not read the PBX after apply (%s); the snapshot keeps its last content", err)
            final = previous.state if previous else live
    result.snapshot = save_snapshot(config.snapshot_path, final, bindings, provider.describe(), previous)
    append_audit(
        config.state_dir,
        {
            "plan_id": plan.plan_id,
            "result": _audit_result(error),
            "steps_done": len(result.done),
            "steps_not_done": len(result.not_done),
            "summary": dict(plan.summary),
            "error": str(error) if error else None,
        },
    )
    if error:
        raise PbxError(
            f"apply stopped after {len(result.done)} of {len(result.done) + len(result.not_done)} steps: {error} "
            "What was done is in the snapshot; run plan again to converge."
        )
    return result


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
        ] or ["the PBX differs from the state the plan was made against"]
    raise PlanRefused(
        f"{plan_path}: the plan is stale: the PBX changed since it was made ("
        + "; ".join(changes)
        + "). Nothing was changed; make a new plan."
    )


def _run_steps(plan: Plan, provider, bindings: dict, result: ApplyResult, progress, on_step) -> Exception | None:
    steps = plan_steps(plan.changes)
    points = checkpoints(steps)
    ids = {i: a.pbx_user_id for i, a in enumerate(plan.changes)}
    progress.start("Applying the plan", len(steps))
    error = None
    for n, step in enumerate(steps):
        action = plan.changes[step.index]
        try:
            new_id = run_step(step, action, provider, ids[step.index])
        except Exception as err:  # noqa: BLE001 - whatever stopped it, the snapshot and audit must be written
            if not isinstance(err, AdsyncError):
                log.debug("unexpected error in %s", step.text, exc_info=True)
                err = PbxError(f"{step.text}: {type(err).__name__}: {err}")
            error = err
            result.not_done = [s.text for s in steps[n:]]
            log.error("%s: failed: %s", step.text, err)
            break
        if new_id is not None:
            ids[step.index] = new_id
            if action.source_id:
                bindings[action.source_id] = new_id  # bound at once: a failure later never loses it
        result.done.append(step.text)
        log.info("%s: done", step.text)
        if on_step:
            on_step(step.text)
        progress.advance()
        if n in points and (error := _verified(action, provider, ids[step.index], points[n], steps[n + 1 :], result)):
            break
    progress.done()
    return error


def _verified(action, provider, user_id: str, fields, rest: list, result: ApplyResult) -> Exception | None:
    """At a user's checkpoint: read it back; a difference (or a failed read) stops the apply here."""
    try:
        verify_user(provider, action, user_id, fields)
    except AdsyncError as err:
        result.not_done = [s.text for s in rest]
        log.error("verification failed: %s", err)
        return err
    return None


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
    with Lock(config.state_dir, None, "sync", config.lock_timeout):
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
        save_plan(result.plan_path, planned.plan)
        log.info("saved the plan to %s; applying it", result.plan_path)
        result.applied = apply(config, result.plan_path, progress, on_step, locked=True)
        return result
