"""`--redact` (issue 10 item 6, issue 14 item 3): no e-mail address (any Unicode local part) and no phone
number (any separator) survives in the text or Markdown plan, accounts that are e-mail addresses included;
counts stay readable; `--redact=names` replaces names too. A property test generates the addresses and
numbers; it is derandomized in CI so that a run is repeatable."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from adsync_plan import cli, output
from adsync_plan.model import Action, Diagnostic, PhoneUser, Plan

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo"
PLACEHOLDER = re.compile(r"<(?:email|number|name):[0-9a-f]{8}>")
SEPARATORS = re.compile(r"[\s./()\-]")


def plan_with(email: str, number: str, account_is_mail: bool = False) -> Plan:
    """A plan in which the address and the number stand wherever a plan can carry them."""
    account = email.lower() if account_is_mail else "jdoe"
    user = PhoneUser("31", "Jürgen", "Müller", email, "user", "31", ("31",), (number,), (number,))
    before = PhoneUser("31", "Jürgen", "Müller", "old@example.com", "user", "31", ("31",))
    changes = (
        Action(f"user.{account}", "create", None, None, user),
        Action(f"user.{account}", "update", "7", before, user, ("email", "external_numbers")),
    )
    source = {"dn": f"CN=Jürgen Müller ({email}),OU=Staff,DC=example,DC=com", "attribute": "mail"}
    diagnostics = (
        Diagnostic("error", "DUPLICATE_EMAIL", f"user.{account}", f"the e-mail address '{email}' is shared.", source),
        Diagnostic("error", "NO_INTERNAL_NUMBER", "user.x", f"no phone value ({number}, 31) gives a number.", source),
        Diagnostic("error", "INVALID_EXTERNAL_NUMBER", "user.y", f"invalid external phone number {number}: no."),
        Diagnostic("error", "LOGIN_ID_COLLISION", "user.z", f"login ID {number} is already used by PBX user 2."),
        Diagnostic("error", "LICENSE_LIMIT", "user.w", "no user licence left (40 licences, 5 PBX users)."),
        Diagnostic("warning", "INVALID_EXTERNAL_NUMBER", f"user.{account}", f"{number} dropped (mail {email})."),
    )
    summary = {"create": 1, "update": 1, "orphan": 0, "unchanged": 0, "held": 5, "protected": 0}
    return Plan("id", "t0", "t1", "0", "c", "d", {}, changes, diagnostics, (), summary)


RENDERER = MarkdownIt("gfm-like")


def rendered_markdown(markdown: str) -> str:
    """What a reviewer reads: the Markdown rendered, tags and invisible joiners gone."""
    html = RENDERER.render(markdown)
    return re.sub(r"<[^>]+>", "", html).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def outputs(plan: Plan, redactor) -> dict[str, str]:
    return {
        "text": output.plan_text(plan, redactor),
        "detailed": output.plan_text(plan, redactor, detailed=True),
        "markdown": rendered_markdown(output.plan_markdown(plan, redactor)).replace("\u2060", ""),
    }


def assert_no_leak(text: str, email: str, number: str) -> None:
    local = email.rpartition("@")[0]
    assert email.lower() not in text.lower()
    assert local.lower() + "@" not in text.lower()
    # a placeholder right after a letter, a digit or a sign is what is left of a partly matched address
    assert not re.search(r"(?<!user\.)(?<![\s'\"(<\[])<email:", text), text
    digits = re.sub(r"\D", "", number)
    squashed = SEPARATORS.sub("", PLACEHOLDER.sub(" | ", text))
    assert digits not in squashed, text


LETTERS = st.characters(categories=("Ll", "Lu", "Nd"))
ATOM = st.text(LETTERS, min_size=1, max_size=8)
emails = st.builds(
    lambda first, rest, domain, tld: first + "".join(sep + part for sep, part in rest) + "@" + domain + "." + tld,
    ATOM,
    st.lists(st.tuples(st.sampled_from([".", "'", "+", "-", "_"]), ATOM), max_size=3),
    st.text(st.characters(categories=("Ll", "Lu")), min_size=1, max_size=10),
    st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz"), min_size=2, max_size=6),
)
GROUP = st.text(st.sampled_from("0123456789"), min_size=2, max_size=5)
numbers = st.builds(
    lambda prefix, area, paren, groups, seps: (
        prefix + (f"({area})" if paren else area) + "".join(s + g for s, g in zip(seps, groups, strict=False))
    ),
    st.sampled_from(["", "+49 ", "+49", "+1 ", "0"]),
    st.text(st.sampled_from("0123456789"), min_size=3, max_size=5),
    st.booleans(),
    st.lists(GROUP, min_size=1, max_size=3),
    st.lists(st.sampled_from([" ", "-", ".", "/", " / ", ""]), min_size=3, max_size=3),
).filter(lambda n: len(re.sub(r"\D", "", n)) >= 6)


@settings(
    max_examples=100,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)
@given(email=emails, number=numbers, account_is_mail=st.booleans())
@example(email="jürgen.müller@example.com", number="0711.555.1234", account_is_mail=True)
@example(email="o'brien@example.com", number="+49 (711) 555-1234", account_is_mail=False)
@example(email="Ünal.Çelik+pbx@exämple.de", number="(0711) 555 12 34", account_is_mail=True)
@example(email="a-b_c@example.com", number="0711/555-1234", account_is_mail=True)
def test_no_address_or_number_survives_redaction(email, number, account_is_mail):
    plan = plan_with(email, number, account_is_mail)
    for kind, text in outputs(plan, output.Redactor(True)).items():
        assert_no_leak(text, email, number), kind


@pytest.mark.parametrize(
    "email, number", [("jürgen.müller@example.com", "0711.555.1234"), ("o'brien@example.com", "+49 (711) 555-1234")]
)
def test_the_check_can_fail_without_redaction(email, number):
    text = outputs(plan_with(email, number, True), output.Redactor(False))["markdown"]
    with pytest.raises(AssertionError):
        assert_no_leak(text, email, number)


def test_counts_stay_readable_and_placeholders_are_stable():
    redact = output.Redactor(True)
    assert redact.text("no user licence left (40 licences, 5 PBX users).") == (
        "no user licence left (40 licences, 5 PBX users)."
    )
    kept = "the plan would orphan 35 of 50 managed PBX users; PBX user 17; group 12; 2026-11-27T10:00:00Z"
    assert redact.text(kept) == kept
    assert redact.text("0711.555.1234") == redact.text("0711 555 1234") == redact("external_numbers", "07115551234")
    obrien = redact("email", "O'Brien@Example.com")
    assert redact.text("'o'brien@example.com'") == f"'{obrien}'"
    assert redact.address("user.jürgen@example.com") == "user." + redact("email", "Jürgen@Example.com")


def test_redact_names_replaces_names_in_fields_messages_and_accounts(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "demo"
    shutil.copytree(DEMO, folder, ignore=shutil.ignore_patterns("make_demo.py", "states", "plans", "__pycache__"))
    monkeypatch.chdir(folder)
    assert cli.run(["plan", "-o", "plans/p.plan.json"]) == 0
    capsys.readouterr()
    names = ("Anton", "Brandt", "Schröder", "Gegangen", "Doppel Zwei", "abrandt", "Kein Vorname", "Sprechstelle")
    assert cli.run(["show", "plans/p.plan.json", "--markdown", "--redact"]) == 0
    contacts_only = capsys.readouterr().out
    assert all(name in contacts_only for name in names)  # --redact keeps names
    assert "@" not in contacts_only.replace("\\@", "")
    for args in (["--markdown"], [], ["--json"]):
        assert cli.run(["show", "plans/p.plan.json", *args, "--redact=names"]) == 0
        redacted = capsys.readouterr().out
        assert [name for name in names if name in redacted] == []
        assert "<name:" in redacted.replace("\\", "")
    doc = json.loads(redacted)
    assert doc["summary"]["create"] == 35  # the document is still a plan


def test_plan_redacts_too(tmp_path, monkeypatch, capsys):
    """`plan --redact` prints what `show --redact` prints: a pipeline can post it without saving the plan."""
    folder = tmp_path / "demo"
    shutil.copytree(DEMO, folder, ignore=shutil.ignore_patterns("make_demo.py", "states", "plans", "__pycache__"))
    monkeypatch.chdir(folder)
    assert cli.run(["plan", "--markdown", "--redact"]) == 0
    out = capsys.readouterr().out
    assert "Anton" in out and "anton.brandt" not in out.replace("\\", "")


def test_accounts_that_are_addresses_are_redacted_in_every_heading(tmp_path, monkeypatch, capsys):
    """With `attributes.account: mail` every address is `user.<e-mail address>`: in the changes, the
    attention block, the held users, the JSON."""
    folder = tmp_path / "demo"
    shutil.copytree(DEMO, folder, ignore=shutil.ignore_patterns("make_demo.py", "states", "plans", "__pycache__"))
    with (folder / "adsync.yaml").open("a") as config:
        config.write("attributes:\n  account: mail\n")
    monkeypatch.chdir(folder)
    assert cli.run(["plan", "-o", "plans/p.plan.json"]) == 0
    assert "user.anton.brandt@example.com" in capsys.readouterr().out  # the check below can fail
    for args in ([], ["--markdown"], ["--json"], ["--detailed"]):
        assert cli.run(["show", "plans/p.plan.json", "--redact", *args]) == 0
        out = capsys.readouterr().out.replace("\\", "").replace("\u2060", "")
        assert "@example.com" not in out, args
        assert "user.<email:" in out
