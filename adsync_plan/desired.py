"""The desired state file (states/desired.yaml): write it deterministically, read it back validated."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from adsync_plan import schemas
from adsync_plan.files import DESIRED, parse_as, read_bytes, render_document, write_atomic, yaml_line_finder
from adsync_plan.model import Diagnostic, PhoneUser
from adsync_plan.rules.directory import DesiredUser, HeldUser, Rendered
from adsync_plan.rules.groups import DesiredGroup

FORMAT_VERSION = 1


@dataclass
class DesiredState:
    rendered: Rendered
    attributes: dict
    source: dict
    sha256: str = ""
    config_sha256: str = ""  # of the configuration it was rendered with


def to_document(state: DesiredState, config_sha256: str) -> dict:
    """No timestamp: rendering the same directory with the same configuration gives identical bytes, so a
    git diff of desired.yaml shows only real changes."""
    users = {
        account: {"source_id": u.source_id, "dn": u.dn, **u.user.to_dict()}
        for account, u in state.rendered.desired.items()
    }
    held = [
        {
            "address": h.address,
            "account": h.account,
            "source_id": h.source_id,
            "dn": h.dn,
            "email": h.email,
            "diagnostics": [d.to_dict() for d in h.diagnostics],
        }
        for h in state.rendered.held
    ]
    doc = {
        "format_version": FORMAT_VERSION,
        "source": dict(state.source),
        "config_sha256": config_sha256,
        "attributes": dict(state.attributes),
        "users": users,
        "held": held,
    }
    if state.rendered.groups:  # only then, as warnings: a desired state without groups keeps its bytes
        doc["groups"] = {name: g.to_dict() for name, g in sorted(state.rendered.groups.items())}
    if state.rendered.warnings:  # only then: a desired state without any keeps its bytes
        doc["warnings"] = [d.to_dict() for d in state.rendered.warnings]
    return doc


def write_desired(path: Path, state: DesiredState, config_sha256: str) -> str:
    data = render_document(to_document(state, config_sha256))
    write_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def desired_sha256(state: DesiredState, config_sha256: str) -> str:
    """The digest of the desired state `render` would write (the same bytes), without formatting them."""
    return hashlib.sha256(render_document(to_document(state, config_sha256))).hexdigest()


def read_desired(path: Path) -> DesiredState:
    raw = read_bytes(path, "the desired state")
    data, tree = parse_as(
        raw, path, "the desired state", DESIRED, "give --desired a file written by `adsync-plan render`"
    )
    schemas.validate(data, "desired", str(path), yaml_line_finder(tree))
    desired = {
        account: DesiredUser(account, u["source_id"], u["dn"], PhoneUser.from_dict(u))
        for account, u in data["users"].items()
    }
    held = [
        HeldUser(
            h["address"],
            h.get("account"),
            h["source_id"],
            h["dn"],
            h.get("email"),
            tuple(Diagnostic.from_dict(d) for d in h["diagnostics"]),
        )
        for h in data["held"]
    ]
    digest = hashlib.sha256(raw).hexdigest()  # of the very bytes parsed
    return DesiredState(
        Rendered(
            desired,
            held,
            warnings=[Diagnostic.from_dict(d) for d in data.get("warnings", ())],
            groups={name: DesiredGroup.from_dict(name, g) for name, g in data.get("groups", {}).items()},
        ),
        data.get("attributes", {}),
        data.get("source", {}),
        digest,
        data.get("config_sha256", ""),
    )
