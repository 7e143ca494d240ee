"""The plan as JSON (`--json`): the plan file's own document, redacted on request."""

from __future__ import annotations

import json

from adsync_plan.model import Plan
from adsync_plan.output.redact import Redactor
from adsync_plan.output.text import refresh_only_changes
from adsync_plan.planfile import to_document


def plan_json(plan: Plan, redact: Redactor | None = None) -> str:
    doc = to_document(plan)
    if redact and redact.enabled:
        for change in doc["changes"]:
            change["address"] = redact.address(change["address"])
            for side in ("before", "after"):
                if change[side]:
                    change[side] = {k: redact(k, v) for k, v in change[side].items()}
        for change in doc.get("group_changes", ()):
            change["address"] = redact.address(change["address"])
            change["member_ids"] = {redact.address(a): i for a, i in change.get("member_ids", {}).items()}
            for side in ("before", "after"):
                if change[side]:
                    group = change[side]
                    group.update(
                        name=redact.text(group["name"]),
                        members=[redact.address(m) for m in group["members"]],
                        numbers=redact("external_numbers", group["numbers"]),
                    )
        doc["diagnostics"] = [redact.diagnostic(d).to_dict() for d in plan.diagnostics]
        if "targets" in doc:
            doc["targets"]["addresses"] = [redact.address(a) for a in doc["targets"]["addresses"]]
        if plan.refresh_only is not None:
            doc["refresh_only"]["pbx_changes"] = refresh_only_changes(plan, redact)
    return json.dumps(doc, indent=2, ensure_ascii=False)
