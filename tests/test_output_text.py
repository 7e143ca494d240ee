"""The plan a reviewer approves at a glance (issue 14 items 1 and 2): one line per change, the risky ones
first under "Needs attention", held users once under their own heading; `--detailed` for the full form.
The demo plan against golden files (regenerate with UPDATE_GOLDEN=1 and review the diff)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from adsync_plan import cli, output
from adsync_plan.model import Action, Diagnostic, PhoneUser, Plan

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "examples" / "demo"
GOLDEN = HERE / "golden"
# `plan` of the demo printed 414 lines before the compact form (issue 14); the compact one must fit a third
LINES_BEFORE = 414


@pytest.fixture
def demo(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "demo"
    shutil.copytree(DEMO, folder, ignore=shutil.ignore_patterns("make_demo.py", "states", "plans", "__pycache__"))
    monkeypatch.chdir(folder)
    return folder


def run(capsys, *args) -> tuple[int, str, str]:
    code = cli.run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_demo_plan_text_compact_and_detailed_match_the_golden_files(demo, capsys):
    code, compact, err = run(capsys, "plan", "-o", "plans/demo.plan.json")
    assert code == 0, err
    check_golden("demo_plan.txt", compact)
    code, detailed, _ = run(capsys, "show", "plans/demo.plan.json", "--detailed")
    assert code == 0
    check_golden("demo_plan_detailed.txt", detailed)
    assert run(capsys, "plan", "--detailed")[1] == detailed.replace(
        "Held: 11 users the directory must fix:",
        "Held: 11 users the directory must fix (7 held by the directory rules, 4 by the PBX rules):",
    )
    assert len(compact.splitlines()) * 3 <= LINES_BEFORE, len(compact.splitlines())
    assert len(detailed.splitlines()) >= LINES_BEFORE  # the full form is all still there


def test_a_create_is_one_line_without_empty_lists_or_repeated_numbers(demo, capsys):
    out = run(capsys, "plan")[1]
    lines = out.splitlines()
    assert "  + user.abrandt  Anton Brandt <anton.brandt@example.com>  44, +4970222797844" in lines
    assert "  + user.fvogel  Frieda Vogel <frieda.vogel@example.com>  43, +4970222797843, fax +49702227978439" in lines
    assert "[]" not in out and "fax_numbers" not in out.replace("fax_numbers: + ", "")
    # an update shows only its changed fields
    assert "  ~ user.jmueller (PBX user 3)  external_numbers: + +4970222797820; role: user -> admin" in lines


def test_needs_attention_comes_first_and_names_every_administrator(demo, capsys):
    out = run(capsys, "plan")[1]
    lines = out.splitlines()
    block = lines[lines.index("Needs attention:") + 1 : lines.index("") if "" in lines else None]
    assert block == [
        "  ~ user.aschroeder (Anna Schröder-Alt, PBX user 4) becomes administrator",
        "  ~ user.jmueller (Jürgen Müller, PBX user 3) becomes administrator",
        "  ! pbx_user.67 (Gustav Gegangen, PBX user 5) will be orphaned: no counterpart in the directory's scope",
    ]
    assert lines.index("Needs attention:") < lines.index(output.text.LEGEND)


def _plan(changes, diagnostics=(), **summary) -> Plan:
    counts = {"create": 0, "update": 0, "orphan": 0, "unchanged": 0, "held": 0, "protected": 0} | summary
    return Plan("id", "t0", "t1", "0", "c", "d", {}, tuple(changes), tuple(diagnostics), (), counts)


def test_attention_lists_grants_revokes_orphans_then_moving_numbers():
    ann = PhoneUser("30", "Ann", "Admin", "ann@example.com", "admin", "30", ("30",))
    bob_before = PhoneUser("31", "Bob", "Boss", "bob@example.com", "admin", "31", ("31",), ("+4970222797831",))
    bob_after = bob_before.changed(role="user", external_numbers=())
    old = PhoneUser("32", "Olga", "Old", "olga@example.com", "user", "32", ("32", "33"))
    new = PhoneUser("34", "Nina", "New", "nina@example.com", "user", "34", ("34", "33"), ("+4970222797831",))
    plan = _plan(
        [
            Action("pbx_user.32", "orphan", "9", old, old.changed(last_name="-Old", internal_numbers=("32",))),
            Action("user.bob", "update", "8", bob_before, bob_after, ("external_numbers", "role")),
            Action("user.ann", "create", None, None, ann),
            Action("user.nina", "create", None, None, new),
        ]
    )
    assert [a.line() for a in output.text.attention(plan)] == [
        "~ user.bob (Bob Boss, PBX user 8) loses administrator",
        "+ user.ann (Ann Admin) is created as administrator",
        "! pbx_user.32 (Olga Old, PBX user 9) will be orphaned: no counterpart in the directory's scope",
        "~ number +4970222797831 moves from user.bob to user.nina",
        "~ number 33 moves from pbx_user.32 to user.nina",
    ]
    text = output.plan_text(plan)
    assert text.startswith("Needs attention:\n  ~ user.bob (Bob Boss, PBX user 8) loses administrator\n")
    assert "  + user.ann  Ann Admin <ann@example.com>  30  administrator" in text.splitlines()


HELD = (
    Diagnostic("error", "MISSING_EMAIL", "user.a", "CN=A has no mail.", {"dn": "CN=A", "attribute": "mail"}),
    Diagnostic("error", "MISSING_FIRST_NAME", "user.a", "CN=A has no givenName.", {"dn": "CN=A"}),
    Diagnostic("error", "LICENSE_LIMIT", "user.b", "no user licence left (40 licences, 5 PBX users)."),
)


def test_held_users_are_reported_once_under_their_own_heading_not_as_errors():
    text = output.plan_text(_plan([], HELD, held=2), held_by=(1, 1))
    assert text.splitlines() == [
        "Held: 2 users the directory must fix (1 held by the directory rules, 1 by the PBX rules):",
        "  user.a  MISSING_EMAIL, MISSING_FIRST_NAME: CN=A has no mail. CN=A has no givenName.",
        "  user.b  LICENSE_LIMIT: no user licence left (40 licences, 5 PBX users).",
        "",
        "No changes. 2 users are held: user.a, user.b.",
    ]
    assert "error" not in text.lower()


def test_no_changes_with_only_held_users_says_so_and_exits_0(demo, capsys):
    assert run(capsys, "plan", "-o", "plans/p.plan.json")[0] == 0
    assert run(capsys, "apply", "plans/p.plan.json")[0] == 0
    code, out, _ = run(capsys, "plan", "--detailed-exitcode")
    assert code == 0
    held = "user.deins, user.dzwei, user.fnummer, user.kvorname, user.nruf, ..."
    assert out.splitlines()[-1] == f"No changes. 11 users are held: {held}."
    assert "Held: 11 users the directory must fix (7 held by the directory rules, 4 by the PBX rules):" in out
    for address in re.findall(r"^  (user\.\w+)  ", out, re.M):
        assert out.count(f"{address} ") == 1 or address in held  # once; the summary names the first five


def test_render_and_plan_agree_on_the_words(demo, capsys):
    code, out, _ = run(capsys, "render")
    assert code == 0
    assert out.endswith(": 41 users; 7 held by the directory rules (`plan` adds the PBX rules).\n")
    out = run(capsys, "plan", "--desired", "states/desired.yaml")[1]
    assert "(7 held by the directory rules, 4 by the PBX rules)" in out


def test_no_changes_and_nobody_held():
    assert output.summary_line(_plan([])) == "No changes. The PBX matches the directory."
