"""The directory sources, by the `source.type` that selects them (a dict registry, imported lazily).

Each module has `read_directory(settings, scope, attributes, base_dir, progress) -> Directory`:
`settings` is the validated `source:` section, `scope` the `Scope` of the configuration (groups to resolve),
`attributes` the configuration's attribute overrides. A read either returns every user or raises
`SourceError`: never a partial directory, which would orphan users.

The groups a source resolves are the scope groups and the mapped groups of `pbx_groups.map`
(`scope.mapped_groups`): each user's `groups` names every one of them the user belongs to (transitively with
nested groups) in its lowered form; a configured group the directory does not have is refused. Membership in
a mapped group alone puts nobody in scope: the rules decide scope by admin_groups and user_groups only.
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


def group_keys(scope: Scope) -> dict[str, str]:
    """Every configured group a source resolves -> the configuration key that names it (for messages): the
    scope groups (admin_groups first), then the mapped groups, `pbx_groups.map.N.directory_group`.

    N counts scope.mapped_groups, which config.py builds from pbx_groups.map in order: it is the map's own
    index as long as no directory group is mapped twice before it (config.py drops repeats)."""
    keys = {group: "scope.admin_groups" for group in scope.admin_groups}
    for group in scope.user_groups:
        keys.setdefault(group, "scope.user_groups")
    for n, group in enumerate(scope.mapped_groups):
        keys.setdefault(group, f"pbx_groups.map.{n}.directory_group")
    return keys


def is_mapped_key(key: str) -> bool:
    """A key of group_keys that names a mapped group (not a scope group): messages call it so."""
    return key.startswith("pbx_groups.")


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
