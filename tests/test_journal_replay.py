"""The apply journal's group parts, with plain data and in process (fast enough for benchmarks/mutation.py):
what a group create writes to the journal and how durably, reading the journal whatever the locale, finding
journaled groups again on the PBX, and replaying the group steps done when the PBX does not answer after
apply."""

from __future__ import annotations

import contextlib
import locale
import os
import sys
from dataclasses import replace

import pytest

from adsync_plan import journal
from adsync_plan.model import GroupAction, PbxAccount, PbxGroup, PbxNumber, PbxState
from adsync_plan.steps import Step

KEY = "map:cn=vertrieb,ou=groups,dc=example,dc=com"


def group_create(name: str) -> tuple[Step, GroupAction]:
    """A group create as apply journals it: the step and its plan action (no PBX group id before the request)."""
    action = GroupAction("group." + name.lower().replace(" ", "_"), "create", None, KEY, None, PbxGroup(name))
    return Step(0, "group_create", (name,), f"{action.address}: create group {name}"), action


def test_a_group_create_line_is_made_durable_with_the_name_and_key_recovery_binds_it_by(tmp_path, monkeypatch):
    """A created group without its line would be an orphan forever, as a created user: its line is fsynced
    before the request, and names the group (found again by name) and its binding key (bound by it)."""
    synced, fsync = [], os.fsync
    monkeypatch.setattr(journal.os, "fsync", lambda fd: (synced.append(fd), fsync(fd)))
    step, action = group_create("Vertrieb")
    with journal.Journal(tmp_path, "plan-1", "run-1", pbx_buffered=False) as ahead:
        ahead.start({})
        ahead.step(3, step, action, None)
        assert len(synced) == 2  # the header's fsync, then the group create's
    assert journal.read(tmp_path)[-1] == {
        "step": 3,
        "kind": "group_create",
        "user": "group.vertrieb",
        "pbx_user_id": None,
        "name": "Vertrieb",
        "key": KEY,
    }


@contextlib.contextmanager
def ascii_locale():
    """The C locale set after start-up: its encoding is ASCII (as a server's ISO-8859-15 or Windows' cp1252
    locale, it is not UTF-8; those locales are not installed here)."""
    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, before)


def test_a_journal_is_read_as_utf8_whatever_the_locale_so_a_group_with_an_umlaut_is_found_again(tmp_path):
    if sys.flags.utf8_mode:
        pytest.skip("Python's UTF-8 mode reads every file as UTF-8: no other locale encoding to read it with")
    step, action = group_create("Vertrieb Süd")
    with journal.Journal(tmp_path, "plan-1", "run-1", pbx_buffered=False) as ahead:
        ahead.start({})
        ahead.step(1, step, action, None)
    live = replace(PbxState.from_parts([], {}), groups={"50": PbxGroup("Vertrieb Süd")})
    with ascii_locale():
        assert locale.getpreferredencoding(False) != "UTF-8"  # the test would prove nothing otherwise
        entries = journal.read(tmp_path)
    assert entries[-1]["name"] == "Vertrieb Süd"
    assert journal.found_group_bindings(entries, live) == {KEY: "50"}


def test_journaled_group_creates_are_found_by_name_and_a_line_without_key_or_name_binds_nothing():
    """Found by name whatever its case (the PBX keeps names unique that way). A group create line without its
    key or with no name (another version's journal, or edited by hand) binds nothing and stops nothing: the
    recovery of the others goes on."""
    live = replace(PbxState.from_parts([], {}), groups={"50": PbxGroup("Vertrieb"), "60": PbxGroup("Support")})
    entries = [
        {"run_id": "r", "plan_id": "p", "bindings": {}},
        {"step": 1, "kind": "group_create", "key": "map:support", "name": "SUPPORT"},
        {"step": 2, "kind": "group_create", "name": "Vertrieb"},  # no key: nothing to bind it by
        {"step": 3, "kind": "group_create", "key": "map:vertrieb", "name": None},  # no name to find it by
        {"step": 4, "kind": "group_create", "key": "map:marketing", "name": "Marketing"},  # never made
        {"step": 5, "kind": "group_rename", "key": "map:other", "name": "Vertrieb"},  # not a create
    ]
    assert journal.found_group_bindings(entries, live) == {"map:support": "60"}


def test_replaying_group_steps_releases_renames_creates_and_assigns_as_the_pbx_did():
    """The snapshot written when the PBX does not answer after apply: the state before plus the group steps
    done, each with its PBX group id. The numbers go with the inventory: released ones are free (of their
    type), assigned ones owned by the group with the standard service, and every group lists what it owns."""
    before = replace(
        PbxState.from_parts(
            [PbxAccount("7", "30", "Ada", "Muster", "ada@example.com", False, "30")],
            {
                "30": PbxNumber("internal", "7", "standard"),
                "40": PbxNumber("internal", "group:50", "standard"),
                "+4970222797840": PbxNumber("external", "group:50", "standard"),
                "+4970222797841": PbxNumber("external"),
            },
        ),
        groups={"50": PbxGroup("Vertrieb", ("7",), ("+4970222797840", "40"))},
    )
    after = PbxGroup("Support", ("user.ada",), ("+4970222797841",))
    support = GroupAction("group.support", "create", None, KEY, None, after, member_ids={"user.ada": "7"})
    done = [
        (Step(1, "group_release", ("40",), "group.vertrieb: remove number 40"), None, "50"),
        (Step(1, "group_rename", ("Sales",), "group.vertrieb: rename to Sales"), None, "50"),
        (Step(0, "group_create", ("Support",), "group.support: create group Support"), support, "51"),
        (Step(0, "group_assign", ("+4970222797841",), "group.support: assign +4970222797841"), support, "51"),
        (Step(0, "group_members", (("user.ada",),), "group.support: members user.ada"), support, "51"),
    ]
    after = journal.replay(before, done)
    assert after.numbers == {
        "30": PbxNumber("internal", "7", "standard"),
        "40": PbxNumber("internal"),
        "+4970222797840": PbxNumber("external", "group:50", "standard"),
        "+4970222797841": PbxNumber("external", "group:51", "standard"),
    }
    assert after.groups == {
        "50": PbxGroup("Sales", ("7",), ("+4970222797840",)),  # renamed: members and other numbers kept
        "51": PbxGroup("Support", ("7",), ("+4970222797841",)),
    }
    assert after.users == before.users  # group steps leave the users as they were
