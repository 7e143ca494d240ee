"""The PBX providers, by the `pbx.type` that selects them (a dict registry, imported lazily)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

from adsync_plan.providers.base import Provider

PROVIDERS = {
    "file": "adsync_plan.providers.file:FileProvider",
    "starface": "adsync_plan.providers.starface:StarfaceProvider",
}


def make_provider(settings: Mapping, base_dir: Path, licenses: int | None) -> Provider:
    module, _, name = PROVIDERS[settings["type"]].partition(":")
    return getattr(importlib.import_module(module), name)(settings, base_dir, licenses)
