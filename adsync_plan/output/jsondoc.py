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
        doc["diagnostics"] = [redact.diagnostic(d).to_dict() for d in plan.diagnostics]
        if "targets" in doc:
            doc["targets"]["addresses"] = [redact.address(a) for a in doc["targets"]["addresses"]]
        if plan.refresh_only is not None:
            doc["refresh_only"]["pbx_changes"] = refresh_only_changes(plan, redact)
    return json.dumps(doc, indent=2, ensure_ascii=False)
