"""What `pip install .` ships: every package of the source tree (pyproject.toml lists them by hand)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_of_the_tree_is_installed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    in_tree = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "adsync_plan").rglob("__init__.py")}
    assert in_tree - listed == set(), "a package a plain install would leave out (pyproject.toml: packages)"
