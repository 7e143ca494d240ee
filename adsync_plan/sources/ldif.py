"""The ldif source: an RFC 2849 LDIF export (ldifde, ldapsearch -L) read as an Active Directory.

Users are the entries with objectClass person that are neither contact nor computer (ad.NOT_USERS); group
membership comes from the users' memberOf values and the group entries' member values, the users' primary
group from primaryGroupID and the groups' objectSid, and nested groups are resolved through the group entries
in the file. A user's groups are every group it is in (with nested groups, at any depth), so the mapped groups
of pbx_groups.map among them; a scope or mapped group the file does not name is refused.

The reader follows RFC 2849 strictly, because a file it misreads silently loses users: every record starts
with exactly one `dn:` and records are separated by an empty line; a line without a colon, an attribute
description that is not one, a folded line where none may be, a CR or NUL inside a line, invalid base64, a
change record other than `changetype: add` and a DN that is not UTF-8 are errors naming the file and the
line. Deliberate choices where the RFC leaves room or a file in the wild departs from it:

- `version: 1` may be absent (ldifde writes none); any other version is refused;
- entries (`dn:` then attributes) and `changetype: add` records may share a file: both describe an entry
  the same way (RFC 2849 keeps a file to one kind; nothing is misread when it does not);
- a value written as is may hold UTF-8 (RFC 2849 wants base64 for non-ASCII; OpenLDAP and python-ldap read
  it as text, and so does this reader);
- URL values (`attr:< file:///...`) are refused: an export must not make this tool read other files (the
  RFC's own security considerations);
- a base64 value that is not UTF-8 is kept as bytes (binary attributes such as objectSid or jpegPhoto are
  legitimate): it is an error, naming its line, only when the tool reads it as text (a mapped attribute,
  objectClass, member, memberOf).
"""

from __future__ import annotations

import binascii
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

from adsync_plan.config import Scope
from adsync_plan.errors import InputError, SourceError
from adsync_plan.model import NO_PROGRESS, Directory, DirectoryUser, Progress, normalise_dn
from adsync_plan.sources import ad, group_keys, is_mapped_key

log = logging.getLogger(__name__)

# AttributeDescription of RFC 2849 (from RFC 2251): a name or a numeric OID, then ;options. The RFC's
# ldap-oid allows only one dot, an evident slip (RFC 4512's numericoid, which it stands for, allows any).
_DESCRIPTION = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*)(?:;[A-Za-z0-9-]+)*\Z")
_CONTROL = re.compile(r"([0-9]+(?:\.[0-9]+)*)(?: +(?:true|false))?(?::(?:[:<]? *.*)?)?\Z", re.IGNORECASE)


class Binary(bytes):
    """A base64 value that is not UTF-8, with the line it was read from (`line`): an error only if read as text."""

    line: int


def read_directory(
    settings: Mapping, scope: Scope, attributes: Mapping, base_dir: Path, progress: Progress = NO_PROGRESS
) -> Directory:
    directory = stream_directory(settings, scope, attributes, base_dir, progress)
    return replace(directory, users=tuple(directory.users))


def stream_directory(
    settings: Mapping, scope: Scope, attributes: Mapping, base_dir: Path, progress: Progress = NO_PROGRESS
) -> Directory:
    """The file is parsed and its groups resolved at once (so that an error of its form or of its groups, and
    a scope group that is not in it, is raised here); `users` is an iterator that maps each user entry as it
    is read (raising an error of a user's values when it comes to it), so that a process reading the
    directory for another can send the first users while it maps the rest."""
    path = (base_dir / settings["path"]).resolve()
    text = read_text(path)
    progress.start("Reading the LDIF directory")
    records = list(_parse(text, str(path)))
    groups = _Groups(records, str(path))
    groups.require(scope)
    attrs = ad.attribute_map(attributes)
    return Directory(
        users=_users(records, groups, attrs, scope.nested_groups, path, progress),
        attributes=ad.diagnostic_names(attrs),
        origin={"type": "ldif", "path": str(settings["path"])},
    )


def read_text(path: Path) -> str:
    """The file as text: UTF-8 (a byte order mark is dropped); any other encoding is one sentence."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: the LDIF file named by source.path does not exist.") from None
    except IsADirectoryError:
        raise InputError(f"{path}: source.path names a folder, not an LDIF file.") from None
    except OSError as err:
        raise InputError(f"{path}: the LDIF file cannot be read ({err.strerror}).") from None
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or data[:4] == b"\x00\x00\xfe\xff":
        raise InputError(f"{path}: the LDIF file is UTF-16 or UTF-32 (ldifde -u writes UTF-16); export it as UTF-8.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise InputError(
            f"{path}:{line}: the LDIF file is not UTF-8 (byte {err.start}, {data[err.start]:#04x}); export it as UTF-8."
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


# --- users and groups -------------------------------------------------------------------------------------


def _users(records, groups: _Groups, attrs, nested: bool, path: Path, progress: Progress) -> Iterator[DirectoryUser]:
    direct_of = groups.direct_of
    closure_cache: dict[str, frozenset[str]] = {}
    shared: dict[frozenset[str], frozenset[str]] = {}  # one object per distinct set of groups: less memory,
    count = 0  # and cheaper to send to another process
    to_user = ad.to_directory_user
    for (dn, entry, line), classes in zip(records, groups.classes, strict=True):
        if not _is_person(classes, entry):
            continue
        direct = direct_of.get(normalise_dn(dn), set()) | _primary_group(entry, *groups.sids)
        all_groups = set(direct)
        if nested:
            for group in direct:
                all_groups |= _ancestors(group, groups.parents, closure_cache)
        found = frozenset(all_groups)
        try:
            user = to_user(dn, entry, attrs, shared.setdefault(found, found))
        except UnicodeDecodeError:
            raise _not_text(str(path), dn, entry, attrs, line) from None
        except SourceError as err:  # e.g. no objectGUID: say where
            raise InputError(f"{path}:{line}: {str(err).replace(dn, shown(dn), 1)}") from None
        yield user
        count += 1
    progress.advance(count)
    progress.done()
    log.info("read %d users from %s", count, path)


def _not_text(filename: str, dn: str, entry, attrs, line: int) -> InputError:
    """The error for a mapped attribute whose value is bytes that are not UTF-8."""
    for field, names in attrs.items():
        for name in names if field != "source_id" else ():  # a source id may be binary (shown in hex)
            for value in entry.get(name.lower()) or ():
                if isinstance(value, bytes):
                    try:
                        value.decode("utf-8")
                    except UnicodeDecodeError:
                        return _binary_error(filename, dn, name, value, getattr(value, "line", line))
    return InputError(f"{filename}:{line}: a value of {shown(dn)} is not UTF-8 text.")  # pragma: no cover - defensive


def _binary_error(filename: str, dn: str, name: str, value: bytes, line: int) -> InputError:
    data = value[:16].hex(" ") + (" ..." if len(value) > 16 else "")
    return InputError(
        f"{filename}:{line}: {name}: the base64 value of {shown(dn)} is not UTF-8 text (bytes {data}); "
        "correct the value in the directory or in the export."
    )


def shown(text: str) -> str:
    """A DN or value as a message shows it: as it is, or quoted with escapes if it holds control characters."""
    return text if text.isprintable() else repr(text)


def _is_person(classes: set[str], entry) -> bool:
    """A user account, as the ldap source's filter reads them: contacts and computers are persons too."""
    return (
        "person" in classes
        and not classes & ad.NOT_USERS
        and ad.is_user_account_type(_text_values(entry, "samaccounttype"))
    )


def _text_values(entry, name) -> list[str]:
    """Values of an attribute read as numbers or flags: a binary value cannot be one, and reads as no match."""
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in entry.get(name, ())]


def _is_group(classes: set[str]) -> bool:
    return "group" in classes or "groupofnames" in classes


class _Groups:
    """The group structure of the file: group entries, who is directly in which group, and group nesting."""

    def __init__(self, records: list, filename: str):
        self.records, self.filename = records, filename
        self.classes = [{v.lower() for v in self._texts(record, "objectclass")} for record in records]
        self.entries: dict[str, tuple] = {}  # normalised group DN -> its record
        for record, classes in zip(records, self.classes, strict=True):
            if _is_group(classes):
                key = normalise_dn(record[0])
                if key in self.entries:
                    first = self.entries[key][2]
                    raise InputError(
                        f"{filename}:{record[2]}: the group {shown(record[0])} appears a second time (first at line "
                        f"{first}); a directory has one entry per DN, and one of the two member lists would be "
                        "lost: remove the duplicate from the export."
                    )
                self.entries[key] = record
        self.member_of: dict[str, str] = {}  # memberOf value as written -> normalised: the same few groups
        self.members: set[str] = set()  # every member value of a group entry, normalised
        self.direct_of = self._direct_memberships()
        self.parents = self._group_parents()
        self.sids = _group_sids(self.entries)

    def _texts(self, record: tuple, name: str) -> list[str]:
        """The values of attribute `name` (lower case) of a record, which must all be text."""
        dn, entry, line = record
        values = entry.get(name, ())
        for value in values:
            if type(value) is not str:
                raise _binary_error(self.filename, dn, name, value, getattr(value, "line", line))
        return values

    def _direct_memberships(self) -> dict[str, set[str]]:
        """member DN -> its direct groups, from memberOf on the members and member on the groups."""
        direct: dict[str, set[str]] = {}
        normalised = self.member_of
        for record in self.records:
            member_of = self._texts(record, "memberof")
            if member_of:
                dn = record[0]
                mine = direct.setdefault(normalise_dn(dn), set())
                for group in member_of:
                    if group not in normalised:
                        normalised[group] = normalise_dn(group)
                    mine.add(normalised[group])
        for group_dn, record in self.entries.items():
            for member in self._texts(record, "member"):
                key = normalise_dn(member)
                self.members.add(key)
                direct.setdefault(key, set()).add(group_dn)
        return direct

    def _group_parents(self) -> dict[str, set[str]]:
        parents: dict[str, set[str]] = {}
        for group_dn, (_, entry, _) in self.entries.items():
            for parent in entry.get("memberof", ()):
                parents.setdefault(group_dn, set()).add(normalise_dn(parent))
            for member in map(normalise_dn, entry.get("member", ())):
                if member in self.entries:
                    parents.setdefault(member, set()).add(group_dn)
        return parents

    def require(self, scope: Scope) -> None:
        """Every configured scope group and mapped group is in the file: as a group entry, or named by a
        memberOf or member value (an export of users only has no group entries). A DN found nowhere is a typo
        that would silently leave its members out of scope (or out of their PBX group)."""
        referenced = set(self.member_of.values())
        for dn, key in group_keys(scope).items():
            wanted = normalise_dn(dn)
            if wanted not in self.entries and wanted not in referenced and wanted not in self.members:
                raise InputError(self._missing(dn, wanted, key, referenced))

    def _missing(self, dn: str, wanted: str, key: str, referenced: set[str]) -> str:
        kind = "mapped group" if is_mapped_key(key) else "scope group"
        where = f"{self.filename}: the {kind} {dn} ({key})"
        for (entry_dn, _, line), classes in zip(self.records, self.classes, strict=True):
            if normalise_dn(entry_dn) == wanted:
                kinds = ", ".join(sorted(classes)) or "none"
                return f"{where} is an entry at line {line} that is not a group (objectClass {kinds}); name a group."
        spelling = {key: record[0] for key, record in self.entries.items()}
        for written, normalised in self.member_of.items():
            spelling.setdefault(normalised, written)
        close = ad.similar_dn(wanted, spelling)
        hint = f" Did you mean {shown(spelling[close])}?" if close else ""
        return (
            f"{where} is not in the LDIF file: no group entry has this DN and no memberOf or member value names "
            f"it; check the DN in the configuration.{hint}"
        )


def _group_sids(entries) -> tuple[dict[bytes, str], dict[int, set[str]]]:
    """objectSid -> group DN, and RID -> group DNs, of the groups whose export has their objectSid."""
    by_sid: dict[bytes, str] = {}
    by_rid: dict[int, set[str]] = {}
    for group_dn, (_, entry, _) in entries.items():
        sid = ad.sid_bytes(entry["objectsid"][0]) if entry.get("objectsid") else None
        if sid:
            by_sid[sid] = group_dn
            by_rid.setdefault(ad.rid(sid), set()).add(group_dn)
    return by_sid, by_rid


def _primary_group(entry, by_sid, by_rid) -> set[str]:
    """The user's primary group (primaryGroupID, Domain Users unless changed), which AD lists in neither the
    user's memberOf nor the group's member. Matched in the user's own domain when the export has the user's
    objectSid, else by the RID alone (an export of one domain)."""
    values = _text_values(entry, "primarygroupid")
    if not values or not by_sid:
        return set()
    user_sid = ad.sid_bytes(entry["objectsid"][0]) if entry.get("objectsid") else None
    if user_sid:
        group = by_sid.get(ad.primary_group_sid(user_sid, values[0]))
        return {group} if group else set()
    return by_rid.get(int(values[0]), set()) if values[0].strip().isdigit() else set()


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


# --- RFC 2849 ---------------------------------------------------------------------------------------------


def parse_ldif(text: str, filename: str = "<ldif>") -> Iterator[tuple[str, dict[str, list]]]:
    """Yield (dn, {attribute lower case, options dropped: [values]}) per record. Base64 values are text when
    they are UTF-8; otherwise, and always for GUID attributes, bytes."""
    for dn, entry, _ in _parse(text, filename):
        yield dn, entry


def _parse(text: str, filename: str) -> Iterator[tuple[str, dict[str, list], int]]:
    """(dn, entry, line of the dn) per record. The text is cut at empty lines into records, each unfolded
    and stripped of comments at once; the number of a physical line is worked out only for an error."""
    text = _check_characters(text, filename)
    folded_out_of_place = ("\n\n" + text).find("\n\n ")  # the position of its space in `text`
    if folded_out_of_place >= 0:
        line = text.count("\n", 0, folded_out_of_place) + 1
        raise InputError(
            f"{filename}:{line}: a line that begins with a space continues the line before it, but here it "
            "follows an empty line (or begins the file); remove the leading space, or the empty line."
        )
    parser = _RecordParser(filename)
    start = 1
    for chunk in text.split("\n\n"):
        here = start
        start += chunk.count("\n") + 2
        if not chunk or chunk == "\n":
            continue
        body = chunk.lstrip("\n")
        here += len(chunk) - len(body)
        record = parser.record(body.rstrip("\n"), here)
        if record is not None:
            yield record


def _check_characters(text: str, filename: str) -> str:
    """Lines end with LF or CR LF (SEP); no CR or NUL elsewhere: those must be base64-encoded."""
    if "\r" in text:
        if text.count("\r") != text.count("\r\n"):
            lone = next(i for i, c in enumerate(text) if c == "\r" and text[i + 1 : i + 2] != "\n")
            raise InputError(_character_error(text, lone, filename, "a carriage return (CR)"))
        text = text.replace("\r\n", "\n")
    if "\0" in text:
        raise InputError(_character_error(text, text.index("\0"), filename, "a NUL character"))
    return text


def _character_error(text: str, at: int, filename: str, what: str) -> str:
    begin = text.rfind("\n", 0, at) + 1
    while text[begin : begin + 1] == " " and begin:  # a continuation: its attribute is on the line it continues
        begin = text.rfind("\n", 0, begin - 1) + 1
    name, colon, _ = text[begin:at].replace("\n ", "").partition(":")
    attribute = f"{name}: " if colon and _DESCRIPTION.match(name) else ""
    return (
        f"{filename}:{text.count(chr(10), 0, at) + 1}: {attribute}{what} inside a line; lines end with LF or "
        "CR LF, and a value holding this character must be base64-encoded (attr:: ...)."
    )


class _RecordParser:
    """One record (the text between empty lines) at a time; remembers what the file's first record was."""

    def __init__(self, filename: str):
        self.filename = filename
        self.first = True  # no record yet: a version line may come
        self.keys: dict[str, str] = {}  # attribute description as written -> entry key (lower case, no options)

    def record(self, body: str, start: int) -> tuple[str, dict[str, list], int] | None:
        text = body.replace("\n ", "") if "\n " in body else body
        lines = text.split("\n")
        # where the logical lines are: one per physical line unless folded or commented (then _line counts)
        self.body, self.start, self.skip, self.plain = body, start, 0, text is body
        if text[:1] == "#" or "\n#" in text:
            lines = [line for line in lines if line[:1] != "#"]
            if not lines:
                return None  # comments only
            self.plain = False
        if self.first:
            self.first = False
            name, colon, value = lines[0].partition(":")
            if colon and name.lower() == "version":
                self._version(value.lstrip(" "), 0)
                del lines[0]
                self.skip = 1
                if not lines:
                    return None
        return self._record(lines)

    def _record(self, lines: list[str]) -> tuple[str, dict[str, list], int]:
        name, colon, value = lines[0].partition(":")
        if not colon or name.lower() != "dn":
            if not colon:
                self._no_colon(lines[0], 0)
            raise self._error(0, f"a record must start with 'dn:', found {name!r}.")
        dn = self._dn(value, 0)
        dn_line = self.start + self.skip if self.plain else self._line(0)
        first = 1
        second = lines[1] if len(lines) > 1 else ""
        if second[:1] in ("c", "C"):  # control: or changetype: (ldif-change-record)
            first = self._change(lines)
        if first >= len(lines):
            raise self._error(0, f"the record for {shown(dn)} has no attributes.")
        entry: dict[str, list] = {}
        keys = self.keys
        attributes = iter(lines)
        for _ in range(first):
            next(attributes)
        for index, line in enumerate(attributes, first):
            name, colon, value = line.partition(":")
            key = keys.get(name) if colon else None
            if key is None:
                key = self._key(name, colon, line, index)
            mark = value[:1]
            if mark == " ":
                value = value.lstrip(" ")
            elif mark == ":":
                value = self._base64(name, key, value, index)
            elif mark == "<":
                raise self._error(
                    index,
                    f"{name}: URL values ({name}:<) are not read: an export must not make this tool read other "
                    f"files; write the value itself ({name}:: followed by its base64).",
                )
            values = entry.get(key)
            if values is None:
                entry[key] = [value]
            else:
                values.append(value)
        return dn, entry, dn_line

    def _key(self, name: str, colon: str, line: str, index: int) -> str:
        """The entry key of an attribute description seen for the first time (or an error)."""
        if not colon:
            self._no_colon(line, index)
        if name.split(";", 1)[0].lower() == "dn":
            raise self._error(
                index,
                f"a second 'dn:' in the record that began at line {self._line(0)}; records must be separated "
                "by an empty line (a line of spaces only is not empty: it continues the line before it).",
            )
        if not _DESCRIPTION.match(name):
            raise self._error(
                index,
                f"{name[:60]!r} is not an attribute description (a name of letters, digits and '-' that starts "
                "with a letter, or an OID, then any ;options).",
            )
        key = self.keys[name] = name.split(";", 1)[0].lower()
        return key

    def _no_colon(self, line: str, index: int):
        raise self._error(
            index,
            f"expected 'attribute: value', found {line[:60]!r}; a line without a colon is allowed only as the "
            "continuation of a folded line, which begins with one space.",
        )

    def _base64(self, name: str, key: str, value: str, index: int) -> str | bytes:
        encoded = value[1:].lstrip(" ")
        try:
            if len(encoded) % 4:  # RFC 2045 base64 is padded (strict_mode lets "Rm9v=" pass)
                raise binascii.Error("its length is not a multiple of 4")
            raw = binascii.a2b_base64(encoded, strict_mode=True)
        except ValueError as err:  # binascii.Error, or a character that is not ASCII
            reason = str(err).rstrip(".") if isinstance(err, binascii.Error) else "a character that is not ASCII"
            raise self._error(index, f"the base64 value of {name} is not valid base64 ({reason}).") from None
        if key in ad.GUID_ATTRIBUTES:
            return raw
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            binary = Binary(raw)
            binary.line = self._line(index)
            return binary

    def _dn(self, value: str, index: int) -> str:
        if value[:1] == ":":
            dn = self._base64("dn", "dn", value, index)
            if isinstance(dn, bytes):
                raise self._error(index, "dn: the base64 DN is not UTF-8 text; a DN must be (RFC 2849 note 7).")
            return dn.strip()
        if value[:1] == "<":
            raise self._error(index, "dn: a DN cannot be a URL (dn:<).")
        return value.strip()

    def _version(self, value: str, index: int) -> None:
        if value != "1":
            raise self._error(index, f"version: {value[:20]!r} is not supported; RFC 2849 LDIF is 'version: 1'.")

    def _change(self, lines: list[str]) -> int:
        """Where the attributes of a record begin: after its controls and `changetype: add` (the only change
        that describes an entry), if it is a change record. Without a changetype, lines named control are
        attributes of that name."""
        index = 1
        while index < len(lines) and lines[index].partition(":")[0].lower() == "control":
            index += 1
        if index == len(lines):
            return 1
        name, colon, value = lines[index].partition(":")
        if not colon or name.lower() != "changetype":
            return 1
        for control in range(1, index):
            spec = lines[control].partition(":")[2].lstrip(" ")
            if not _CONTROL.match(spec):
                raise self._error(control, f"control: {spec[:60]!r} is not '<OID> [true|false] [value]'.")
        kind = value.lstrip(" ")
        if kind.lower() != "add":
            raise self._error(
                index,
                f"changetype: {shown(kind[:20])} makes this a change record, which does not describe an entry; "
                "source.path needs an export of entries (plain records, or changetype: add).",
            )
        return index + 1

    def _line(self, index: int) -> int:
        """The physical line of the record's logical line `index` (after unfolding and dropping comments)."""
        index += self.skip
        if self.plain:
            return self.start + index
        logical = -1
        for offset, raw in enumerate(self.body.split("\n")):
            if raw[:1] in (" ", "#"):
                continue  # a continuation, or a comment (whose continuations are skipped the same way)
            logical += 1
            if logical == index:
                return self.start + offset
        return self.start  # pragma: no cover - every index given is of a logical line

    def _error(self, index: int, message: str) -> InputError:
        return InputError(f"{self.filename}:{self._line(index)}: {message}")
