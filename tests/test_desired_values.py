"""What reaches the PBX is clean (issue 10, item 4): control characters, bidirectional overrides, values of
invisible characters only and overlong values hold the user with INVALID_VALUE naming the attribute; two
entries with one source id are both held (DUPLICATE_SOURCE_ID)."""

from __future__ import annotations

import base64
import json

import pytest

from adsync_plan.rules.values import value_problem
from tests.test_bad_input import replace_in, tree_digest

JUNK = [
    ("Schröder\nadmin", "control character U+000A"),
    ("Schröder\r", "control character U+000D"),
    ("Schr\x00öder", "control character U+0000"),
    ("Schr\x1böder", "control character U+001B"),
    ("Schr\x85öder", "control character U+0085"),  # C1 (next line)
    ("Schr\x7föder", "control character U+007F"),
    ("x" * 10_000_000, "more than the PBX stores (255)"),
    ("\u200b\u200c\u200d", "only invisible characters"),
    ("\u3164", "only invisible characters"),  # Hangul filler: a letter that prints as nothing
    ("   ", "only invisible characters"),
    ("\u202eredröhcS", "bidirectional override U+202E"),
    ("Schröder\u2066", "bidirectional override U+2066"),
]
CLEAN = ["Schröder", "Zoë", "O'Brien-Müller", "García Márquez", "李", "Jean\u00a0Pierre", "x" * 255, "👩\u200d💻 Ada"]


@pytest.mark.parametrize(("value", "reason"), JUNK, ids=range(len(JUNK)))
def test_junk_values_are_named(value, reason):
    assert reason in value_problem("last_name", value)


@pytest.mark.parametrize("value", CLEAN)
def test_clean_values_pass(value):
    assert value_problem("first_name", value) is None


def test_email_length_limit_is_254():
    assert value_problem("email", "a" * 244 + "@example.d") is None  # 254
    assert "(254)" in value_problem("email", "a" * 245 + "@example.d")


def b64(value: str) -> str:
    return base64.b64encode(value.encode("utf-8")).decode("ascii")


ANNA_SN = "sn:: U2NocsO2ZGVy"  # Schröder, in the demo's directory.ldif
ANNA_MAIL = "mail: anna.schroeder@example.com"


@pytest.mark.parametrize(
    ("old", "new", "attribute"),
    [
        (ANNA_SN, "sn:: " + b64("Schröder\nX"), "sn"),
        (ANNA_SN, "sn:: " + b64("Schr\x00öder"), "sn"),
        (ANNA_SN, "sn:: " + b64("\u200b\u200b"), "sn"),
        (ANNA_SN, "sn:: " + b64("\u202eredröhcS"), "sn"),
        (ANNA_SN, "sn: " + "S" * 300, "sn"),
        ("givenName: Anna", "givenName:: " + b64("An\rna"), "givenName"),
        (ANNA_MAIL, "mail: " + "a" * 250 + "@example.com", "mail"),
        (ANNA_MAIL, "mail:: " + b64("anna.schroeder@example.com\nBcc: x@example.org"), "mail"),
    ],
    ids=["newline", "nul", "zero-width", "rlo", "300", "cr-given", "long-mail", "mail-newline"],
)
def test_junk_from_the_directory_holds_the_user_and_reaches_no_pbx(cli, demo, old, new, attribute):
    replace_in(demo / "directory.ldif", old, new)
    pbx_before = tree_digest(demo)["pbx.yaml"]
    code, out, err = cli("plan", "-c", demo / "adsync.yaml", "--json", "--allow-mass-orphan")
    assert code == 0, err
    plan = json.loads(out)
    found = [d for d in plan["diagnostics"] if d["address"] == "user.aschroeder" and d["code"] == "INVALID_VALUE"]
    assert found and found[0]["source"]["attribute"] == attribute, plan["diagnostics"]
    assert found[0]["severity"] == "error"
    assert len(found[0]["message"]) < 400  # the 10 MB value is described, not repeated
    assert "user.aschroeder" not in {c["address"] for c in plan["changes"]}
    assert tree_digest(demo)["pbx.yaml"] == pbx_before


def test_two_entries_with_one_source_id_are_both_held(cli, demo):
    ldif = (demo / "directory.ldif").read_text(encoding="utf-8")
    guid_of_anna = "objectGUID:: 4LPpuJ0XwlSR/9Sytys9RQ=="
    guid_of_bjoern = "objectGUID:: CC1V7oUbdl2c11/bbuPWpA=="
    assert guid_of_anna in ldif and guid_of_bjoern in ldif
    replace_in(demo / "directory.ldif", guid_of_bjoern, guid_of_anna)
    code, out, err = cli("plan", "-c", demo / "adsync.yaml", "--json", "--allow-mass-orphan")
    assert code == 0, err
    plan = json.loads(out)
    held = {d["address"] for d in plan["diagnostics"] if d["code"] == "DUPLICATE_SOURCE_ID"}
    assert held == {"user.aschroeder", "user.bkuehn"}
    assert not held & {c["address"] for c in plan["changes"]}
