"""Plan files (SPEC 9.4): save, load (validated), and the checks apply makes before it changes anything."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from adsync_plan import schemas
from adsync_plan.errors import PlanRefused
from adsync_plan.files import read_document, write_document
from adsync_plan.model import Action, Diagnostic, Plan

FORMAT_VERSION = 1


def to_document(plan: Plan) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "plan_id": plan.plan_id,
        "created_at": plan.created_at,
        "expires_at": plan.expires_at,
        "tool_version": plan.tool_version,
        "config_sha256": plan.config_sha256,
        "desired_sha256": plan.desired_sha256,
        "base_state": dict(plan.base_state),
        "changes": [a.to_dict() for a in plan.changes],
        "diagnostics": [d.to_dict() for d in plan.diagnostics],
        "overrides": list(plan.overrides),
        "summary": dict(plan.summary),
        "bindings": dict(plan.bindings),
    }


def save_plan(path: Path, plan: Plan) -> None:
    write_document(path, to_document(plan))


def load_plan(path: Path) -> Plan:
    data, _ = read_document(path, "the plan file")
    schemas.validate(data, "plan", str(path))
    return Plan(
        plan_id=data["plan_id"],
        created_at=data["created_at"],
        expires_at=data["expires_at"],
        tool_version=data["tool_version"],
        config_sha256=data["config_sha256"],
        desired_sha256=data["desired_sha256"],
        base_state=data["base_state"],
        changes=tuple(Action.from_dict(a) for a in data["changes"]),
        diagnostics=tuple(Diagnostic.from_dict(d) for d in data["diagnostics"]),
        overrides=tuple(data["overrides"]),
        summary=data["summary"],
        bindings=data["bindings"],
    )


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def check_applicable(plan: Plan, path: Path, now: datetime, applied: set[str]) -> None:
    """Refuse a plan that expired, was applied already, or was refused by the safety valve."""
    if plan.plan_id in applied:
        raise PlanRefused(f"{path}: plan {plan.plan_id} was applied already (states/audit.jsonl); make a new plan.")
    try:
        expires = parse_time(plan.expires_at)
    except ValueError:
        raise PlanRefused(f"{path}: expires_at {plan.expires_at!r} is no valid time; make a new plan.") from None
    if now >= expires:
        raise PlanRefused(f"{path}: plan {plan.plan_id} expired at {plan.expires_at} (plan.ttl); make a new plan.")
    if any(d.code == "SAFETY_THRESHOLD" and d.severity == "error" for d in plan.diagnostics):
        raise PlanRefused(f"{path}: the safety valve refused this plan; make a new one with --allow-mass-orphan.")
