"""Safe output for reviewers (issue 10 item 6): whatever a directory or a PBX holds, the pull-request comment
renders it as plain text. Checked through two real CommonMark/GFM renderers: markdown-it-py with tables, HTML
and linkify on, and cmark-gfm (GitHub's own, through cmarkgfm) with its extensions, for plans built here and
for a hostile LDIF entry through the CLI. Mentions and issue references, which GitHub adds after rendering,
are checked in the rendered text with GitHub's patterns."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options
from markdown_it import MarkdownIt

from adsync_plan import cli, output
from adsync_plan.model import Action, Diagnostic, PhoneUser, Plan

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo"

# what a hostile directory entry or PBX user may hold
LINK_AND_MENTION = "[click](https://evil.example) @org/admins"
HOSTILE = [
    "a`b<img src=https://evil.example/x.png>|x|y`",
    LINK_AND_MENTION,
    "<script>alert(1)</script><b>bold</b>",
    "*strong* _em_ ~~gone~~ **very**",
    "see #12 and org/repo#34 and GH-56, cc @octocat",
    "<https://auto.example> https://bare.example www.evil.example evil.com x@evil.example",
    "![img](https://evil.example/i.png) [ref]: https://evil.example",
    "$x^2$ &lt;b&gt; &#64;team \\| back\\slash",
    "line\nbreak | with\r\n| --- |\u202eright-to-left\x1b[31m",
]

# GitHub links @user, @org/team and #123 in text nodes after rendering, wherever no link or code protects them
MENTION = re.compile(r"(?<![\w`/])@[a-z0-9]", re.I)
REFERENCE = re.compile(r"(?:(?<![\w/.])#\d|\bGH-\d)", re.I)
# the tags our own layout uses; anything else is HTML that came from a value
OWN_TAGS = {
    "h3",
    "h4",
    "p",
    "strong",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "details",
    "summary",
    "ul",
    "li",
    "sub",
    "blockquote",
    "br",
}


class _Html(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def assert_renders_safely(markdown: str) -> str:
    """No raw HTML, link, image, emphasis, mention or reference from a value; every table row keeps its
    columns. Returns the rendered text."""
    md = MarkdownIt("gfm-like")  # CommonMark + tables, strikethrough, linkify, raw HTML on
    tokens = md.parse(markdown)
    seen = [t for t in tokens for t in [t, *(t.children or [])]]
    assert not [t.type for t in seen if t.type in ("link_open", "image", "em_open", "s_open")]
    assert not [t.content for t in seen if t.type.startswith("html") and not _own_html(t.content)]
    assert not [t for t in seen if t.type == "code_inline" or t.type == "fence"]
    for t in seen:
        if t.type == "strong_open":  # only the summary line is bold
            assert markdown.count("**") == 2
    _assert_tables_keep_columns(tokens)
    # and GitHub's own renderer, cmark-gfm with its extensions (tables, autolinks, strikethrough), raw HTML on
    github = cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)
    for html in (md.render(markdown), github):
        parsed = _Html()
        parsed.feed(html)
        assert set(parsed.tags) <= OWN_TAGS, set(parsed.tags) - OWN_TAGS
        text = "".join(parsed.text)
        assert not MENTION.search(text), MENTION.search(text)
        assert not REFERENCE.search(text), REFERENCE.search(text)
    return text


def _own_html(content: str) -> bool:
    own = re.compile(r"</?details>|<summary>[^<>]*</summary>|<sub>[^<>]*</sub>|</?sub>")
    return all(own.fullmatch(line.strip()) for line in content.strip().splitlines())


def _assert_tables_keep_columns(tokens) -> None:
    width, cells = None, 0
    for t in tokens:
        if t.type == "tr_open":
            cells = 0
        elif t.type in ("th_open", "td_open"):
            cells += 1
        elif t.type == "tr_close":
            width = cells if width is None else width
            assert cells == width
        elif t.type == "table_close":
            width = None


def _row_cells(markdown: str) -> list[int]:
    """How many cells each table row has, by GFM's rule: a pipe not escaped by a backslash."""
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    return [len(re.findall(r"(?<!\\)\|", row)) - 1 for row in rows]


def hostile_plan() -> Plan:
    changes, diagnostics = [], []
    for i, value in enumerate(HOSTILE):
        user = PhoneUser(f"{20 + i}", value, value, f"{value}@x.example", value, f"{20 + i}", (value,), (value,))
        before = PhoneUser(f"{20 + i}", "A", "B", "a@example.com")
        changes.append(Action(f"user.{value}", "create", None, None, user))
        changes.append(Action(f"user.u{i}", "update", str(i), before, user, ("first_name", "external_numbers")))
        changes.append(Action(f"pbx_user.{value}", "orphan", str(i), user, user, ("last_name",)))
        source = {"dn": f"CN={value},OU=Staff", "attribute": value}
        diagnostics.append(Diagnostic("error", "NO_INTERNAL_NUMBER", f"user.{value}", f"no value ({value})", source))
        diagnostics.append(Diagnostic("warning", "INVALID_EXTERNAL_NUMBER", f"user.{value}", value, source))
        diagnostics.append(Diagnostic("info", "PROTECTED_USER", f"user.{value}", value))
    summary = {"create": len(HOSTILE), "update": len(HOSTILE), "orphan": len(HOSTILE), "held": len(HOSTILE)}
    summary |= {"unchanged": 0, "protected": 0}
    return Plan("id", "t0", "t1", "0", "c", "d", {}, tuple(changes), tuple(diagnostics), (), summary)


def test_hostile_values_render_as_plain_text():
    markdown = output.plan_markdown(hostile_plan())
    text = assert_renders_safely(markdown)
    widths = set(_row_cells(markdown))
    assert len(widths) <= 2  # the summary table and the held users' table, each row as wide as its header
    # the values are all there to read, as text (invisible joiners aside)
    visible = text.replace("\u2060", "")
    assert LINK_AND_MENTION in visible
    assert "a`b<img src=https://evil.example/x.png>|x|y`" in visible


def test_hostile_values_are_escaped_when_redacted_too():
    assert_renders_safely(output.plan_markdown(hostile_plan(), output.Redactor(True)))


def test_control_characters_never_reach_a_terminal():
    text = output.plan_text(hostile_plan())
    assert "\x1b" not in text and "\u202e" not in text and "\r" not in text
    assert "line\nbreak" not in text and "line\\nbreak" in text


@pytest.mark.parametrize("value", ["", "plain", *HOSTILE])
def test_the_escaping_function_gives_back_the_value_as_text(value):
    md = MarkdownIt("gfm-like")
    rendered = md.render(f"- {output.md(value)}\n")
    parsed = _Html()
    parsed.feed(rendered)
    assert parsed.tags == ["ul", "li"]
    assert "".join(parsed.text).strip().replace("\u2060", "") == output.clean(value).strip()


def test_a_hostile_ldif_entry_through_the_cli(tmp_path, monkeypatch, capsys):
    """The cases of issue 10 as seen: a backtick in the account, raw HTML and pipes, a phone value that
    rendered a live link and a mention."""
    folder = tmp_path / "demo"
    shutil.copytree(DEMO, folder, ignore=shutil.ignore_patterns("make_demo.py", "states", "plans", "__pycache__"))
    hostile = [
        ("evil`<img src=https://evil.example/x.png>|x|y", "+49 7022 27978-60", "Eve", "evil1@example.com"),
        ("mallory", LINK_AND_MENTION, "Mal <b>lory</b> | @org/admins", "mallory@example.com"),
    ]
    entries = []
    for i, (account, phone, given, mail) in enumerate(hostile):
        entries.append(
            f"\ndn: CN=Hostile {i},OU=Staff,DC=example,DC=com\nobjectClass: person\nobjectClass: user\n"
            f"objectGUID: 00000000-0000-0000-0000-00000000000{i}\nsAMAccountName: {account}\n"
            f"givenName: {given}\nsn: Hostile\nmail: {mail}\ntelephoneNumber: {phone}\n"
            f"memberOf: CN=PBX-Users,OU=Groups,DC=example,DC=com\n"
        )
    with (folder / "directory.ldif").open("a") as ldif:
        ldif.write("".join(entries))
    monkeypatch.chdir(folder)
    assert cli.run(["plan", "-o", "plans/p.plan.json"]) == 0
    capsys.readouterr()
    assert cli.run(["show", "plans/p.plan.json", "--markdown"]) == 0
    markdown = capsys.readouterr().out
    assert "mallory" in markdown and "evil" in markdown  # both users are in the comment
    text = assert_renders_safely(markdown)
    assert LINK_AND_MENTION in text.replace("\u2060", "")
