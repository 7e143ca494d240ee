"""Helpers for tests that need a plan file changed after `plan` wrote it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from adsync_plan.planfile import DIGEST, SIGNATURE, content_digest


def edit_plan(path: Path, change: Callable[[dict], object], reseal: bool = False) -> dict:
    """Apply `change` to the plan document. With `reseal`, write a digest that matches the new content (as a
    bug of ours, or someone who read the code, would): what only a signature can then tell apart."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    change(doc)
    if reseal:
        doc.pop(SIGNATURE, None)
        doc[DIGEST] = content_digest(doc)
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return doc
