"""`show --markdown` and `--redact`: the pull-request comment of the demo against a golden file, and no
e-mail address or number of the demo left in redacted Markdown, JSON or text."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from adsync_plan import cli, output
from adsync_plan.model import Action, Diagnostic, PhoneUser, Plan
from tests.conftest import check_golden

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "examples" / "demo"
GOLDEN = HERE / "golden" / "demo_plan.md"


@pytest.fixture
def demo_plan(tmp_path, monkeypatch, capsys) -> Path:
    folder = tmp_path / "demo"
    shutil.copytree(DEMO, folder, ignore=shutil.ignore_patterns("make_demo.py", "states", "plans", "__pycache__"))
    monkeypatch.chdir(folder)
    assert cli.run(["plan", "-o", "plans/demo.plan.json"]) == 0
    capsys.readouterr()
    return folder / "plans" / "demo.plan.json"


def show(capsys, *args) -> str:
    assert cli.run(["show", *args]) == 0
    return capsys.readouterr().out


def normalise(markdown: str) -> str:
    """The plan id and the timestamps change with every plan."""
    markdown = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "PLAN-ID", markdown)
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "TIME", markdown)


def test_demo_markdown_matches_the_golden_file(demo_plan, capsys):
    markdown = normalise(show(capsys, str(demo_plan), "--markdown"))
    check_golden(GOLDEN, markdown)


def test_markdown_structure(demo_plan, capsys):
    markdown = show(capsys, str(demo_plan), "--markdown")
    lines = markdown.splitlines()
    assert lines[:3] == ["### adsync-plan", "", "**Plan: 35 to create, 2 to update, 1 to orphan; 11 held.**"]
    assert "| 35 | 2 | 1 | 0 | 11 | 0 |" in lines
    assert "#### Held users (11)" in lines
    assert markdown.count("<details>") == markdown.count("</details>") == 38
    assert markdown.count("```diff") == 38
    held = [line for line in lines if line.startswith("| `user.")]
    assert len(held) == 11
    assert held[0].startswith("| `user.deins` | `DUPLICATE_EMAIL` | the e-mail address 'vertrieb@example.com'")


def demo_secrets() -> tuple[set[str], set[str]]:
    """Every e-mail address and every number of the demo (directory values as normalised, and the PBX)."""
    emails = set(re.findall(r"[\w.+-]+@[\w.-]+\.\w+", (DEMO / "directory.ldif").read_text()))
    pbx = json.loads((DEMO / "pbx.yaml").read_text())
    emails |= {u["email"] for u in pbx["users"]}
    numbers = {n["number"] for n in pbx["numbers"]} | {u["login_id"] for u in pbx["users"]}
    numbers |= {"110", "+497111234567", "+49702227978219", "+49702227978439", "+49702227978329", "+49702227978549"}
    return emails, numbers


def leaks(text: str, emails: set[str], numbers: set[str]) -> list[str]:
    found = [e for e in emails if e.lower() in text.lower()]
    tokens = set(re.findall(r"(?<![\w-])\+?\d+(?![\w-])", text))
    return found + sorted(tokens & numbers)


def test_redacted_markdown_has_no_email_or_number(demo_plan, capsys):
    emails, numbers = demo_secrets()
    plain = show(capsys, str(demo_plan), "--markdown")
    assert leaks(plain, emails, numbers)  # the check can fail: unredacted, they are there
    redacted = show(capsys, str(demo_plan), "--markdown", "--redact")
    # counts (summary line and table, held heading) and the plan id line are not personal data
    counts = ("**Plan: ", "| 35 |", "#### Held users (", "<sub>")
    body = "\n".join(line for line in redacted.splitlines() if not line.startswith(counts))
    assert leaks(body, emails, numbers) == []
    assert "pbx_user.&lt;number:" in redacted  # the orphan's address names its login ID
    assert "&lt;email:" in redacted  # the DUPLICATE_EMAIL message, escaped for Markdown


def test_redacted_json_and_text_have_no_email_or_number(demo_plan, capsys):
    emails, numbers = demo_secrets()
    doc = json.loads(show(capsys, str(demo_plan), "--json", "--redact"))
    for key in ("summary", "plan_id", "created_at", "expires_at", "base_state", "bindings"):
        doc.pop(key)
    strings = []

    def collect(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k not in ("pbx_user_id", "source_id"):
                    collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)
        elif isinstance(node, str):
            strings.append(node)

    collect(doc)
    assert leaks("\n".join(strings), emails, numbers) == []
    text = show(capsys, str(demo_plan), "--redact")
    assert leaks("\n".join(text.splitlines()[:-1]), emails, numbers) == []


def test_placeholders_are_stable_across_fields_and_messages():
    redact = output.Redactor(True)
    in_field = redact("external_numbers", ["+4970222797820"])[0]
    assert redact.text("number +49 7022 27978-20 is taken") == f"number {in_field} is taken"
    assert redact.text("Mail Max.Muster@Example.com.") == f"Mail {redact('email', 'max.muster@example.com')}."
    assert redact.address("pbx_user.20") == f"pbx_user.{redact('login_id', '20')}"
    kept = "plan 5f0c1b7e-aaaa-bbbb-cccc-0123456789ab at 2026-11-27T10:00:00Z, PBX user 7"
    assert redact.text(kept) == kept


def test_markdown_of_a_long_plan_stays_under_the_comment_limit():
    user = PhoneUser("20", "A" * 40, "B" * 40, "a@example.com", primary_internal_number="20")
    changes = tuple(Action(f"user.u{i:05d}", "create", None, None, user) for i in range(3000))
    plan = Plan(
        "id",
        "t0",
        "t1",
        "0",
        "c",
        "d",
        {},
        changes,
        (Diagnostic("error", "SAFETY_THRESHOLD", "plan", "too many | orphans."),)
        + tuple(Diagnostic("error", "LICENSE_LIMIT", f"user.h{i:05d}", "no licence.") for i in range(1000)),
        ("allow-mass-orphan",),
        {"create": 3000, "update": 0, "orphan": 0, "held": 0},
    )
    markdown = output.plan_markdown(plan)
    assert len(markdown) < 65_536
    assert "> The safety valve (R13) refused this plan; it cannot be applied." in markdown
    assert "> Made with `--allow-mass-orphan`: a safety limit was overridden." in markdown
    assert "- too many \\| orphans." in markdown
    assert markdown.count("<details>") == markdown.count("</details>")
    assert re.search(r"^\| \.\.\. \| \| \d+ more; see `adsync-plan show PLANFILE` \| \|$", markdown, re.M)
    assert re.search(r"^<summary>\.\.\. and \d+ more changes</summary>$", markdown, re.M)
    assert re.search(r"^- \.\.\. and \d+ more; see `adsync-plan show PLANFILE`$", markdown, re.M)
    assert '```diff\n+ login_id: "20"' in markdown  # the first changes in full
    assert markdown.endswith("<sub>plan id, made t0, expires t1</sub>")


def test_thousands_of_warnings_and_notes_never_crowd_out_the_changes():
    user = PhoneUser("20", "A", "B", "a@example.com", primary_internal_number="20")
    changes = tuple(Action(f"user.u{i:05d}", "create", None, None, user) for i in range(500))
    notes = tuple(
        Diagnostic(severity, code, f"user.n{i:05d}", "a sentence of about sixty characters, as the rules write them.")
        for i in range(2000)
        for severity, code in (("warning", "INVALID_EXTERNAL_NUMBER"), ("info", "PROTECTED_USER"))
    )
    summary = {"create": 500, "update": 0, "orphan": 0, "unchanged": 0, "held": 0, "protected": 2000}
    plan = Plan("id", "t0", "t1", "0", "c", "d", {}, changes, notes, (), summary)
    markdown = output.plan_markdown(plan)
    assert len(markdown) < 65_536 and "#### Changes" in markdown and "more changes</summary>" in markdown
    assert markdown.count("- ... and ") == 3  # warnings, notes and the listed changes are each cut short
    assert markdown.count("<details>") == markdown.count("</details>")
    assert markdown.endswith("<sub>plan id, made t0, expires t1</sub>")
