"""The ldif source: an RFC 2849 LDIF export (ldifde, ldapsearch -L) read as an Active Directory.

Users are the entries with objectClass person that are neither contact nor computer (ad.NOT_USERS); group
membership comes from the users' memberOf values and the group entries' member values, and nested groups are
resolved through the group entries in the file.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

from adsync_plan.config import Scope
from adsync_plan.errors import InputError
from adsync_plan.model import NO_PROGRESS, Directory, DirectoryUser, Progress, normalise_dn
from adsync_plan.sources import ad

log = logging.getLogger(__name__)


def read_directory(
    settings: Mapping, scope: Scope, attributes: Mapping, base_dir: Path, progress: Progress = NO_PROGRESS
) -> Directory:
    directory = stream_directory(settings, scope, attributes, base_dir, progress)
    return replace(directory, users=tuple(directory.users))


def stream_directory(
    settings: Mapping, scope: Scope, attributes: Mapping, base_dir: Path, progress: Progress = NO_PROGRESS
) -> Directory:
    """The file is parsed at once; `users` is an iterator that maps each user entry as it is read, so that a
    process reading the directory for another can send the first users while it maps the rest."""
    path = (base_dir / settings["path"]).resolve()
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: the LDIF file named by source.path does not exist.") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: the LDIF file is not UTF-8 (byte {err.start}); export it as UTF-8.") from None
    progress.start("Reading the LDIF directory")
    entries = list(parse_ldif(text, str(path)))
    attrs = ad.attribute_map(attributes)
    return Directory(
        users=_users(entries, attrs, scope.nested_groups, path, progress),
        attributes=ad.diagnostic_names(attrs),
        origin={"type": "ldif", "path": str(settings["path"])},
    )


def _users(entries, attrs, nested: bool, path: Path, progress: Progress) -> Iterator[DirectoryUser]:
    classes = [_object_classes(entry) for _, entry in entries]
    groups = {normalise_dn(dn): entry for (dn, entry), cls in zip(entries, classes, strict=True) if _is_group(cls)}
    parents = _group_parents(groups)
    direct_of = _direct_memberships(entries, groups)
    sids = _group_sids(groups)
    closure_cache: dict[str, frozenset[str]] = {}
    shared: dict[frozenset[str], frozenset[str]] = {}  # one object per distinct set of groups: less memory,
    count = 0  # and cheaper to send to another process
    for (dn, entry), cls in zip(entries, classes, strict=True):
        if not _is_person(cls, entry):
            continue
        direct = direct_of.get(normalise_dn(dn), set()) | _primary_group(entry, *sids)
        all_groups = set(direct)
        if nested:
            for group in direct:
                all_groups |= _ancestors(group, parents, closure_cache)
        groups = frozenset(all_groups)
        yield ad.to_directory_user(dn, entry, attrs, shared.setdefault(groups, groups))
        count += 1
    progress.advance(count)
    progress.done()
    log.info("read %d users from %s", count, path)


def _object_classes(entry) -> set[str]:
    return {v.lower() for v in _values(entry, "objectclass")}


def _is_person(classes: set[str], entry) -> bool:
    """A user account, as the ldap source's filter reads them: contacts and computers are persons too."""
    return (
        "person" in classes and not classes & ad.NOT_USERS and ad.is_user_account_type(_values(entry, "samaccounttype"))
    )


def _is_group(classes: set[str]) -> bool:
    return "group" in classes or "groupofnames" in classes


def _values(entry, name) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in entry.get(name, ())]


def _direct_memberships(entries, groups) -> dict[str, set[str]]:
    """member DN -> its direct groups, from memberOf on the members and member on the groups."""
    direct: dict[str, set[str]] = {}
    normalised: dict[str, str] = {}  # memberOf as written -> normalised: the same few groups on every user
    for dn, entry in entries:
        member_of = _values(entry, "memberof")
        if member_of:
            mine = direct.setdefault(normalise_dn(dn), set())
            for group in member_of:
                if group not in normalised:
                    normalised[group] = normalise_dn(group)
                mine.add(normalised[group])
    for group_dn, entry in groups.items():
        for member in _values(entry, "member"):
            direct.setdefault(normalise_dn(member), set()).add(group_dn)
    return direct


def _group_sids(groups) -> tuple[dict[bytes, str], dict[int, set[str]]]:
    """objectSid -> group DN, and RID -> group DNs, of the groups whose export has their objectSid."""
    by_sid: dict[bytes, str] = {}
    by_rid: dict[int, set[str]] = {}
    for group_dn, entry in groups.items():
        sid = ad.sid_bytes(entry["objectsid"][0]) if entry.get("objectsid") else None
        if sid:
            by_sid[sid] = group_dn
            by_rid.setdefault(ad.rid(sid), set()).add(group_dn)
    return by_sid, by_rid


def _primary_group(entry, by_sid, by_rid) -> set[str]:
    """The user's primary group (primaryGroupID, Domain Users unless changed), which AD lists in neither the
    user's memberOf nor the group's member. Matched in the user's own domain when the export has the user's
    objectSid, else by the RID alone (an export of one domain)."""
    values = _values(entry, "primarygroupid")
    if not values or not by_sid:
        return set()
    user_sid = ad.sid_bytes(entry["objectsid"][0]) if entry.get("objectsid") else None
    if user_sid:
        group = by_sid.get(ad.primary_group_sid(user_sid, values[0]))
        return {group} if group else set()
    return by_rid.get(int(values[0]), set()) if values[0].strip().isdigit() else set()


def _group_parents(groups) -> dict[str, set[str]]:
    parents: dict[str, set[str]] = {}
    for group_dn, entry in groups.items():
        for parent in _values(entry, "memberof"):
            parents.setdefault(group_dn, set()).add(normalise_dn(parent))
        for member in map(normalise_dn, _values(entry, "member")):
            if member in groups:
                parents.setdefault(member, set()).add(group_dn)
    return parents


def _ancestors(group: str, parents, cache) -> frozenset[str]:
    """Every group that contains `group`, transitively; cycles (which AD allows) end the walk."""
    if group in cache:
        return cache[group]
    seen, todo = set(), [group]
    while todo:
        for parent in parents.get(todo.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    cache[group] = frozenset(seen)
    return cache[group]


def parse_ldif(text: str, filename: str = "<ldif>") -> Iterator[tuple[str, dict[str, list]]]:
    """Yield (dn, {attribute lower case: [values]}) per record. Base64 values stay bytes unless UTF-8."""
    dn, entry = None, {}
    for lineno, line in _logical_lines(text):
        if line is None:  # blank line: end of record
            if dn is not None:
                yield dn, entry
            dn, entry = None, {}
            continue
        name, value = _attribute(line, filename, lineno)
        if dn is None:
            if name == "version" and not entry:
                continue
            if name != "dn":
                raise InputError(f"{filename}:{lineno}: a record must start with 'dn:', found {name!r}.")
            dn = _as_text(value, filename, lineno)
            continue
        if name in ("changetype", "control"):
            if name == "changetype" and str(value).lower() != "add":
                raise InputError(f"{filename}:{lineno}: only plain records or 'changetype: add' are supported.")
            continue
        entry.setdefault(name.split(";", 1)[0].lower(), []).append(value)
    if dn is not None:
        yield dn, entry


def _logical_lines(text: str) -> Iterator[tuple[int, str | None]]:
    """Join continuation lines (a line starting with one space), drop comments; None marks a blank line."""
    current, current_no = None, 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        if raw.startswith(" ") and current is not None:
            current += raw[1:]
            continue
        if current is not None:
            yield current_no, current
            current = None
        if raw.startswith("#"):
            continue
        if not raw.strip():
            yield lineno, None
            continue
        current, current_no = raw, lineno
    if current is not None:
        yield current_no, current


def _attribute(line: str, filename: str, lineno: int) -> tuple[str, str | bytes]:
    name, sep, rest = line.partition(":")
    if not sep or not name or " " in name:
        raise InputError(f"{filename}:{lineno}: expected 'attribute: value', found {line[:60]!r}.")
    if rest.startswith(":"):
        try:
            raw = base64.b64decode(rest[1:].strip(), validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"{filename}:{lineno}: the base64 value of {name} is not valid base64.") from None
        try:
            return name, raw if name.lower() in ad.GUID_ATTRIBUTES else raw.decode("utf-8")
        except UnicodeDecodeError:
            return name, raw
    if rest.startswith("<"):
        raise InputError(f"{filename}:{lineno}: URL values ({name}:<) are not supported; inline the value.")
    return name, rest[1:] if rest.startswith(" ") else rest


def _as_text(value, filename, lineno) -> str:
    if isinstance(value, bytes):
        raise InputError(f"{filename}:{lineno}: the DN is not UTF-8 text.")
    return value.strip()
