"""Load adsync.yaml once, at the door: yaml-rs (ruamel.yaml for an error's line) -> jsonschema -> frozen
dataclasses."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from adsync_plan import schemas
from adsync_plan.errors import ConfigError
from adsync_plan.files import CONFIG, parse_yaml_fast, plain, refuse_other_kind, yaml_line_finder
from adsync_plan.model import GROUP_NAME_MAX, normalise_dn


@dataclass(frozen=True)
class Block:
    external_prefix: str
    internal_prefix: str = ""


@dataclass(frozen=True)
class Scope:
    admin_groups: tuple[str, ...]
    user_groups: tuple[str, ...]
    nested_groups: bool = True
    include_disabled: bool = False
    # directory groups of pbx_groups.map: a source resolves membership of these as of scope groups (nested
    # when nested_groups), but membership in them alone puts nobody in scope
    mapped_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroupMap:
    directory_group: str
    name: str
    numbers: tuple[str, ...] = ()


@dataclass(frozen=True)
class PbxGroups:
    shared_numbers: str = "hold"  # hold (R-duplicate number holds the users) | group
    shared_name: str = "Shared {number}"
    map: tuple[GroupMap, ...] = ()


@dataclass(frozen=True)
class Numbering:
    country: str = "DE"
    trunk_prefix: str | None = None
    internal_length: tuple[int, int] = (2, 6)
    blocks: tuple[Block, ...] = ()
    reserved_extra: tuple[str, ...] = ()
    login_id: str = "{internal}"


@dataclass(frozen=True)
class Safety:
    max_orphans: int | float = 0.10  # an int is a count, a float a share of managed PBX users
    min_source_ratio: float = 0.5


@dataclass(frozen=True)
class Config:
    path: Path
    base_dir: Path
    sha256: str
    source: Mapping  # the validated `source:` section; its `type` picks the source module
    scope: Scope
    numbering: Numbering
    pbx: Mapping  # the validated `pbx:` section; its `type` picks the provider
    on_invalid_number: str = "hold_user"
    attributes: Mapping = None
    licenses: int | None = None
    protect_logins: frozenset[str] = frozenset()
    ownership: str = "all"
    safety: Safety = Safety()
    plan_ttl: timedelta = timedelta(hours=24)
    state_dir: Path = Path("states")
    lock_timeout: float = 10.0
    signing_key_env: str | None = None  # plan.signing_key_env: plans are signed with this secret
    pbx_groups: PbxGroups = PbxGroups()

    def resolve(self, relative: str) -> Path:
        """A path from the configuration, relative to the configuration's folder."""
        return (self.base_dir / relative).resolve()

    @property
    def desired_path(self) -> Path:
        return self.state_dir / "desired.yaml"

    @property
    def snapshot_path(self) -> Path:
        return self.state_dir / "pbx.yaml"


CONFIG_HINT = "pass the configuration (adsync.yaml) with -c FILE"
_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    return timedelta(seconds=int(text[:-1]) * _DURATION[text[-1]])


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw_bytes = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: configuration file not found; create one with `adsync-plan init` or pass -c FILE."
        ) from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the configuration: {err.strerror}.") from None
    data, tree = _parse_yaml(path, raw_bytes)
    try:
        schemas.validate(data, "config", str(path), lines=yaml_line_finder(tree))
    except ConfigError:
        # say it from ruamel.yaml's tree: it remembers how a number was written ("0001", not 1)
        schemas.validate(tree.parsed(), "config", str(path), lines=yaml_line_finder(tree))
        raise
    return _build(path, data, hashlib.sha256(raw_bytes).hexdigest())


def _parse_yaml(path: Path, raw: bytes):
    try:
        data, tree = parse_yaml_fast(raw, path, "the configuration", ConfigError)
    except ConfigError:
        refuse_other_kind(raw, None, path, CONFIG, CONFIG_HINT, ConfigError)  # an LDIF file is no YAML: name it
        raise
    refuse_other_kind(raw, data, path, CONFIG, CONFIG_HINT, ConfigError)
    if data is None:
        raise ConfigError(f"{path}: the configuration is empty; see `adsync-plan init` for an example.")
    return data, tree


def _build(path: Path, data, digest: str) -> Config:
    base_dir = path.resolve().parent
    num = data.get("numbering", {})
    scope = data["scope"]
    safety = data.get("safety", {})
    state = data.get("state", {})
    groups = data.get("pbx_groups", {})
    mapped = tuple(
        GroupMap(m["directory_group"], m["name"], tuple(m.get("numbers", ()))) for m in groups.get("map", ())
    )
    config = Config(
        path=path,
        base_dir=base_dir,
        sha256=digest,
        source=plain(data["source"]),
        scope=Scope(
            admin_groups=tuple(scope["admin_groups"]),
            user_groups=tuple(scope["user_groups"]),
            nested_groups=scope.get("nested_groups", True),
            include_disabled=scope.get("include_disabled", False),
            mapped_groups=tuple(m.directory_group for m in mapped),  # by index: messages name map.N
        ),
        numbering=Numbering(
            country=num.get("country", "DE"),
            trunk_prefix=num.get("trunk_prefix") or None,
            internal_length=tuple(num.get("internal_length", (2, 6))),
            blocks=tuple(Block(b["external_prefix"], b.get("internal_prefix", "")) for b in num.get("blocks", ())),
            reserved_extra=tuple(num.get("reserved_extra", ())),
            login_id=num.get("login_id", "{internal}"),
        ),
        pbx=plain(data["pbx"]),
        on_invalid_number=data.get("rules", {}).get("on_invalid_number", "hold_user"),
        attributes=plain(data.get("attributes", {})),
        licenses=data["pbx"].get("licenses"),
        protect_logins=frozenset(data.get("protect", {}).get("logins", ())),
        ownership=data.get("ownership", "all"),
        safety=Safety(_max_orphans(safety.get("max_orphans", "10%")), safety.get("min_source_ratio", 0.5)),
        plan_ttl=parse_duration(data.get("plan", {}).get("ttl", "24h")),
        state_dir=(base_dir / state.get("dir", "states")).resolve(),
        lock_timeout=parse_duration(state.get("lock_timeout", "10s")).total_seconds(),
        signing_key_env=data.get("plan", {}).get("signing_key_env"),
        pbx_groups=PbxGroups(
            shared_numbers=groups.get("shared_numbers", "hold"),
            shared_name=groups.get("shared_name", "Shared {number}"),
            map=mapped,
        ),
    )
    _check_meaning(config)
    return config


def _max_orphans(value) -> int | float:
    if isinstance(value, str):
        return float(value.rstrip("%")) / 100
    return int(value)


def _check_meaning(config: Config) -> None:
    """What the schema cannot say: secrets must be set, groups must not be empty together."""
    if not config.scope.admin_groups and not config.scope.user_groups:
        raise ConfigError(
            f"{config.path}: scope: name at least one group in admin_groups or user_groups; "
            "otherwise no user is in scope."
        )
    src = config.source
    if src["type"] == "azure" and not (src.get("client_secret_env") or src.get("certificate_file")):
        raise ConfigError(f"{config.path}: source: an azure source needs client_secret_env or certificate_file.")
    if (
        src["type"] == "ldap"
        and src["url"].startswith("ldap://")
        and not (src.get("start_tls") or src.get("allow_insecure"))
    ):
        raise ConfigError(
            f"{config.path}: source.url: plain ldap:// would send the password unencrypted; use ldaps://, "
            "set start_tls: true, or (not recommended) allow_insecure: true."
        )
    for key, section in (("source", src), ("pbx", config.pbx)):
        for name in ("path", "ca_file", "certificate_file"):
            if section.get(name) and not config.resolve(section[name]).is_file():
                raise ConfigError(
                    f"{config.path}: {key}.{name}: the file {config.resolve(section[name])} does not exist."
                )
    _check_group_names(config)
    for prefix in config.numbering.reserved_extra:
        if not re.fullmatch(r"[0-9xX]+", prefix):
            raise ConfigError(f"{config.path}: numbering.reserved_extra: {prefix!r} is not a digit pattern.")


def secret_from_env(config_path: Path | str, key: str, env_name: str | None) -> str:
    """The value of the environment variable the configuration names; never logged, never echoed."""
    if not env_name:
        raise ConfigError(f"{config_path}: {key}: name the environment variable that holds the secret.")
    value = os.environ.get(env_name)
    if not value:
        raise ConfigError(
            f"The environment variable {env_name} (named by {key} in {config_path}) is not set; "
            "export it before running adsync-plan."
        )
    return value


def _check_group_names(config: Config) -> None:
    """pbx_groups.map: a name fits the PBX (GROUP_NAME_MAX) and is unique (case-insensitive, as on the PBX),
    and a directory group is mapped once (it is the key that binds the PBX group)."""
    names: dict[str, int] = {}
    groups: dict[str, int] = {}
    for n, entry in enumerate(config.pbx_groups.map):
        if len(entry.name) > GROUP_NAME_MAX:
            raise ConfigError(
                f"{config.path}: pbx_groups.map.{n}.name: {entry.name!r} has {len(entry.name)} characters; a STARFACE "
                f"group name has at most {GROUP_NAME_MAX}. Choose a shorter name."
            )
        other = names.setdefault(entry.name.lower(), n)
        if other != n:
            raise ConfigError(
                f"{config.path}: pbx_groups.map.{n}.name: the group name {entry.name!r} is also pbx_groups.map.{other}"
                ".name (names are unique on the PBX, whatever the case); give each group its own name."
            )
        other = groups.setdefault(normalise_dn(entry.directory_group), n)
        if other != n:
            raise ConfigError(
                f"{config.path}: pbx_groups.map.{n}.directory_group: {entry.directory_group!r} is mapped already by "
                f"pbx_groups.map.{other}; map a directory group to one PBX group."
            )
