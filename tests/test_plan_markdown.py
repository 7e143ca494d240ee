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
from tests.conftest import check_golden, golden_update_requested

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
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d\\?:\d\d\\?:\d\dZ", "TIME", markdown)


def test_demo_markdown_matches_the_golden_file(demo_plan, capsys):
    markdown = normalise(show(capsys, str(demo_plan), "--markdown"))
    check_golden(GOLDEN, markdown)


README = HERE.parent / "README.md"
README_BLOCK = re.compile(r"(<!-- demo-plan-markdown: [^\n]*-->\n)(.*?)(<!-- end demo-plan-markdown -->)", re.S)


def test_the_readme_shows_the_golden_comment():
    """The README's example comment is the golden file, as GitHub renders it; UPDATE_GOLDEN=1 rewrites it."""
    readme = README.read_text()
    if golden_update_requested():  # never in CI
        readme = README_BLOCK.sub(lambda m: m.group(1) + GOLDEN.read_text() + "\n" + m.group(3), readme)
        README.write_text(readme)
    match = README_BLOCK.search(readme)
    assert match is not None
    assert match.group(2) == GOLDEN.read_text() + "\n"


def test_markdown_structure(demo_plan, capsys):
    """Summary table, then "Needs attention" (open), then the changes (a group of many folded), then the
    held users (folded)."""
    markdown = show(capsys, str(demo_plan), "--markdown")
    lines = markdown.splitlines()
    assert lines[:3] == ["### adsync-plan", "", "**Plan\\: 35 to create, 2 to update, 1 to orphan; 11 held\\.**"]
    assert "| 35 | 2 | 1 | 0 | 11 | 0 |" in lines
    order = ["| to create |", "#### Needs attention", "#### Changes", "<summary>35 to create</summary>"]
    order += ["2 to update:", "1 to orphan:", "#### Held\\: 11 users the directory must fix"]
    order += ["<summary>Held users (11)</summary>", "<sub>plan "]
    positions = [next(i for i, line in enumerate(lines) if line.startswith(o)) for o in order]
    assert positions == sorted(positions)
    attention = lines[positions[1] + 2 : positions[2] - 1]
    assert attention == [
        "- \\~ user\\.aschroeder \\(Anna Schröder-Alt, PBX user 4\\) becomes administrator",
        "- \\~ user\\.jmueller \\(Jürgen Müller, PBX user 3\\) becomes administrator",
        "- \\! pbx\\_user\\.67 \\(Gustav Gegangen, PBX user 5\\) will be orphaned\\: no counterpart in the "
        "directory's scope",
    ]
    assert markdown.count("<details>") == markdown.count("</details>") == 2  # the 35 creates, the held users
    held = [line for line in lines if line.startswith("| user\\.")]
    assert len(held) == 11
    assert held[0].startswith("| user\\.deins | DUPLICATE\\_EMAIL | the e-mail address 'vertrieb\\@\u2060example")


def demo_secrets() -> tuple[set[str], set[str]]:
    """Every e-mail address and every number of the demo (directory values as normalised, and the PBX)."""
    emails = set(re.findall(r"[\w.+-]+@[\w.-]+\.\w+", (DEMO / "directory.ldif").read_text()))
    pbx = json.loads((DEMO / "pbx.yaml").read_text())
    emails |= {u["email"] for u in pbx["users"]}
    numbers = {n["number"] for n in pbx["numbers"]} | {u["login_id"] for u in pbx["users"]}
    numbers |= {"110", "+497111234567", "+49702227978219", "+49702227978439", "+49702227978329", "+49702227978549"}
    return emails, numbers


def leaks(text: str, emails: set[str], numbers: set[str]) -> list[str]:
    text = text.replace("40 licences", "COUNT licences")  # a count, not the number 40
    found = [e for e in emails if e.lower() in text.lower()]
    tokens = set(re.findall(r"(?<![\w-])\+?\d+(?![\w-])", text))
    return found + sorted(tokens & numbers)


def test_redacted_markdown_has_no_email_or_number(demo_plan, capsys):
    emails, numbers = demo_secrets()
    plain = show(capsys, str(demo_plan), "--markdown")
    assert leaks(plain, emails, numbers)  # the check can fail: unredacted, they are there
    redacted = show(capsys, str(demo_plan), "--markdown", "--redact")
    # counts (summary line and table, held heading) and the plan id line are not personal data
    counts = ("**Plan\\: ", "| 35 |", "#### Held\\: ", "<summary>", "<sub>")
    body = "\n".join(line for line in redacted.splitlines() if not line.startswith(counts))
    assert leaks(body.replace("\\", ""), emails, numbers) == []
    assert "pbx\\_user\\.\\<number\\:" in redacted  # the orphan's address names its login ID
    assert "\\<email\\:" in redacted  # the DUPLICATE_EMAIL message, escaped for Markdown
    assert "\\(40 licences, 5 PBX users\\)" in redacted  # counts stay readable


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
    counts = [line for line in text.splitlines()[:-1] if not line.startswith("Held: ")]  # "Held: 11 users"
    assert leaks("\n".join(counts), emails, numbers) == []


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
    assert "> Made with --allow-mass-orphan: a safety limit was overridden." in markdown
    assert "- too many \\| orphans\\." in markdown
    assert markdown.count("<details>") == markdown.count("</details>")
    assert re.search(r"^\| \.\.\. \| \| \d+ more; see `adsync-plan show PLANFILE` \| \|$", markdown, re.M)
    assert "<summary>3000 to create</summary>" in markdown
    assert re.search(r"^- \.\.\. and \d+ more; see `adsync-plan show PLANFILE`$", markdown, re.M)
    assert "- \\+ user\\.u00000  " + "A" * 40 in markdown  # the first changes in full
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
    assert len(markdown) < 65_536 and "#### Changes" in markdown and "<summary>500 to create</summary>" in markdown
    assert markdown.count("- ... and ") == 3  # warnings, notes and the listed changes are each cut short
    assert markdown.count("<details>") == markdown.count("</details>")
    assert markdown.endswith("<sub>plan id, made t0, expires t1</sub>")


def big_plan(n: int) -> Plan:
    """A plan of n users of every kind: creates, administrator grants, orphans whose numbers move, held
    users, warnings and notes."""
    changes, diagnostics = [], []
    for i in range(n):
        number = f"{1000 + i}"
        user = PhoneUser(number, "Vorname", f"Nachname{i}", f"u{i}@example.com", "user", number, (number,))
        if i % 10 == 0:
            before = user.changed(internal_numbers=(), primary_internal_number=None)
            changes.append(Action(f"pbx_user.{i}", "orphan", str(i), user, user.changed(last_name=f"-N{i}")))
            changes.append(Action(f"user.m{i}", "update", str(n + i), before, user.changed(role="admin")))
        else:
            changes.append(Action(f"user.u{i}", "create", None, None, user))
        diagnostics.append(Diagnostic("error", "LICENSE_LIMIT", f"user.h{i}", "no user licence left (9 licences)."))
    diagnostics += [Diagnostic("warning", "INVALID_EXTERNAL_NUMBER", f"user.w{i}", "dropped.") for i in range(n // 10)]
    diagnostics += [Diagnostic("info", "PROTECTED_USER", f"user.p{i}", "protected.") for i in range(n // 10)]
    summary = {"create": n - n // 10, "update": n // 10, "orphan": n // 10, "unchanged": 0, "held": n, "protected": 0}
    return Plan("id", "t0", "t1", "0", "c", "d", {}, tuple(changes), tuple(diagnostics), (), summary)


@pytest.mark.parametrize("redact", [False, True])
def test_a_100000_user_plan_fits_one_comment(redact):
    import time

    plan = big_plan(100_000)
    start = time.process_time()  # CPU time: a loaded machine stretches wall time, not this
    markdown = output.plan_markdown(plan, output.Redactor(redact))
    elapsed = time.process_time() - start
    assert len(markdown) < 65_536
    for part in ("#### Needs attention", "#### Changes", "#### Held\\: 100000 users", "<summary>Notes (10000)"):
        assert part in markdown
    # every part is cut short with a count of what is left out, none crowds out another
    assert markdown.count("- ... and ") >= 5 and "| ... | | " in markdown
    assert markdown.count("<details>") == markdown.count("</details>")
    assert elapsed < 20, elapsed
