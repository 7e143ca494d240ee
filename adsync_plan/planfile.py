"""Plan files (SPEC 9.4): save, load (validated), and the checks apply makes before it changes anything.

A saved plan carries the digest of its own content, and optionally an HMAC of that digest: apply trusts no
plan file, it re-computes both and refuses a plan edited after it was made.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import orjson

from adsync_plan import schemas
from adsync_plan.config import Config, secret_from_env
from adsync_plan.errors import ConfigError, PlanRefused
from adsync_plan.files import PLAN, parse_as, read_bytes, write_document
from adsync_plan.model import Action, Diagnostic, GroupAction, Plan

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DIGEST = "digest"
SIGNATURE = "signature"
SIGNATURE_PREFIX = "hmac-sha256:"
MIN_KEY_BYTES = 16
MADE_BY = "a plan is what `adsync-plan plan -o FILE` writes"
REMAKE = "make a new plan with `adsync-plan plan -o FILE`"


def to_document(plan: Plan) -> dict:
    doc = {
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
    if plan.group_changes:  # only then: a plan without group changes keeps its bytes (and its digest)
        doc["group_changes"] = [a.to_dict() for a in plan.group_changes]
    if plan.targets is not None:  # only in a targeted plan: other plans keep their exact bytes
        doc["targets"] = dict(plan.targets)
    if plan.refresh_only is not None:
        doc["refresh_only"] = dict(plan.refresh_only)
    return doc


def content_digest(doc: dict) -> str:
    """sha256 of everything in the plan but the digest and the signature themselves: changes, base state,
    bindings, overrides, digests of configuration and desired state, expiry, diagnostics, summary."""
    body = {k: v for k, v in doc.items() if k not in (DIGEST, SIGNATURE)}
    return "sha256:" + hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def sign(key: bytes, digest: str) -> str:
    return SIGNATURE_PREFIX + hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def save_plan(path: Path, plan: Plan, key: bytes | None = None) -> Plan:
    """Write the plan with its digest (and, given a key, its signature); returns the plan as saved."""
    doc = to_document(plan)
    doc[DIGEST] = content_digest(doc)
    if key:
        doc[SIGNATURE] = sign(key, doc[DIGEST])
    write_document(path, doc)
    return replace(plan, digest=doc[DIGEST], signature=doc.get(SIGNATURE, ""))


def load_plan(path: Path) -> Plan:
    """Read a plan file: it must be a plan (not another file of the project), valid, and unedited."""
    data, _ = parse_as(read_bytes(path, "the plan file"), path, "the plan file", PLAN, MADE_BY, REMAKE)
    schemas.validate(data, "plan", str(path))
    _check_digest(data, path)
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
        targets=data.get("targets"),
        refresh_only=data.get("refresh_only"),
        group_changes=tuple(GroupAction.from_dict(a) for a in data.get("group_changes", ())),
        digest=data[DIGEST],
        signature=data.get(SIGNATURE, ""),
    )


def _check_digest(data: dict, path: Path) -> None:
    if DIGEST not in data:
        raise PlanRefused(f"{path}: the plan has no digest of its content, so it cannot be trusted; make a new plan.")
    try:
        digest = content_digest(data)
    except (orjson.JSONEncodeError, TypeError):  # e.g. an integer beyond 64 bits, written into a YAML plan
        digest = None
    if not hmac.compare_digest(str(data[DIGEST]).encode(), (digest or "").encode()):  # bytes: any text compares
        raise PlanRefused(f"{path}: the plan was changed after it was made; make a new plan.")


# -- signing --------------------------------------------------------------------------------------------


def signing_key(config: Config, needed: bool) -> bytes | None:
    """The secret plans are signed with, when the configuration asks for signed plans. Without it, `plan`
    (needed=False: a review job has no secrets) writes an unsigned plan that apply will refuse."""
    env = config.signing_key_env
    if not env:
        return None
    if not needed and not os.environ.get(env):
        log.warning(
            "%s is not set, so this plan is not signed (plan.signing_key_env in %s); apply will refuse it",
            env,
            config.path,
        )
        return None
    key = secret_from_env(config.path, "plan.signing_key_env", env).encode("utf-8", "surrogateescape")
    if len(key) < MIN_KEY_BYTES:  # a short secret is guessed from one signed plan: refuse it (never shown)
        raise ConfigError(
            f"The secret in {env} (plan.signing_key_env in {config.path}) is shorter than {MIN_KEY_BYTES} "
            "characters, too short to sign plans with; make a long random one, e.g. `openssl rand -hex 32`."
        )
    return key


def _check_signature(plan: Plan, path: Path, config: Config) -> None:
    key = signing_key(config, needed=True)
    if key is None:
        return
    env = config.signing_key_env
    if not plan.signature:
        raise PlanRefused(
            f"{path}: the plan is not signed, but {config.path} asks for signed plans (plan.signing_key_env); "
            f"make a new plan where {env} is set."
        )
    if not hmac.compare_digest(plan.signature.encode(), sign(key, plan.digest).encode()):
        raise PlanRefused(
            f"{path}: the plan's signature is wrong (not made with the secret in {env}, or the plan was edited); "
            "make a new plan."
        )


# -- the checks before apply ----------------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def check_before_apply(
    plan: Plan, path: Path, config: Config, now: datetime, applied: set[str], lineage: str | None
) -> None:
    """Everything apply checks in a plan file before it reads the PBX: signature, project, configuration,
    then `check_applicable`. `lineage` is the project's snapshot's (None before the first snapshot)."""
    _check_signature(plan, path, config)
    planned_lineage = plan.base_state.get("lineage")
    # serial 0: the plan was made before any snapshot was saved, so its lineage was never written anywhere
    if lineage and plan.base_state.get("serial") and planned_lineage != lineage:
        raise PlanRefused(
            f"{path}: the plan was made for another project (state lineage {planned_lineage}; this project's "
            f"{config.snapshot_path} has {lineage}); apply it in its own project, or make a new plan here."
        )
    if plan.config_sha256 != config.sha256:
        raise PlanRefused(
            f"{path}: the plan was made with another configuration than {config.path} (its sha256 differs); "
            "make a new plan with this configuration."
        )
    check_applicable(plan, path, now, applied)


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
