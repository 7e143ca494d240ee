"""Helpers for tests of plan files and of refusals: make a plan, change it, check a refusal changed nothing."""

from __future__ import annotations

import hashlib
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


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def refused(cli, demo: Path, *args) -> str:
    """Run a command that must be refused: exit 1, one sentence, no traceback, nothing changed."""
    before = tree_digest(demo)
    code, out, err = cli(*args)
    assert code == 1, (out, err)
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err  # one sentence, on one line, the last
    assert "Traceback" not in err + out and "This is a bug" not in err, err
    assert tree_digest(demo) == before
    return errors[0]


def make_plan(cli, demo: Path, *extra, name: str = "p.plan.json") -> Path:
    path = demo / name
    code, _, err = cli("plan", "-c", demo / "adsync.yaml", "-o", path, *extra)
    assert code == 0, err
    return path
