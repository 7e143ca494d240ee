"""The directory sources, by the `source.type` that selects them (a dict registry, imported lazily).

Each module has `read_directory(settings, scope, attributes, base_dir, progress) -> Directory`:
`settings` is the validated `source:` section, `scope` the `Scope` of the configuration (groups to resolve),
`attributes` the configuration's attribute overrides. A read either returns every user or raises
`SourceError`: never a partial directory, which would orphan users.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

from adsync_plan.config import Scope
from adsync_plan.model import NO_PROGRESS, Directory, Progress

SOURCES = {
    "ldif": "adsync_plan.sources.ldif",
    "ldap": "adsync_plan.sources.ldap",
    "azure": "adsync_plan.sources.azure",
}


def read_directory(
    settings: Mapping,
    scope: Scope,
    attributes: Mapping,
    base_dir: Path,
    progress: Progress = NO_PROGRESS,
    stream: bool = False,
) -> Directory:
    """With `stream`, `users` may be an iterator (read once) that the source fills as it reads."""
    module = importlib.import_module(SOURCES[settings["type"]])
    read = getattr(module, "stream_directory", module.read_directory) if stream else module.read_directory
    return read(settings, scope, attributes or {}, base_dir, progress)
