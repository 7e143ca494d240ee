"""Values from the directory or the PBX are data, never markup: `clean` for a terminal, `md` for Markdown.

A directory entry can be written by anyone who may edit their own phone number; the pull-request comment is
what reviewers approve from. So every such value goes through `md`, which makes it plain text for a
CommonMark/GFM renderer and for GitHub's own post-processing (mentions, issue references, autolinks)."""

from __future__ import annotations

import re

# C0 and C1 controls (newline, CR, ESC for terminal colours, NUL, ...), line and paragraph separators, and
# the bidirectional controls that make text read differently from how it is stored ("Trojan Source")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# Every ASCII punctuation character may be backslash-escaped in CommonMark; these can start markup:
# code spans, emphasis and strikethrough, links and images, HTML and autolinks, entities, table cells,
# headings, GitHub math, and (`:` and `.`) the scheme and the domain of a bare URL that linkify would link.
_MARKUP = re.compile(r"([\\`*_~\[\]()<>!|#&:.@{}$^])")
# At the start of a line (a list item's text), these begin a nested list or a heading underline.
_LEADING = re.compile(r"^([-+=])")
# GitHub links @user, @org/team, #123, GH-123 and bare URLs in the rendered text itself, where backslashes
# no longer exist: an invisible WORD JOINER breaks each pattern without changing what a reviewer reads.
_JOINER = "\u2060"
_GITHUB_PATTERNS = re.compile(r"(@)|(#)(?=\d)|\b(GH-)(?=\d)|(:)(?=//)|\b(www)(?=\.)", re.I)


def clean(text) -> str:
    """Control and bidirectional characters shown as escapes (`\\n`, `\\x1b`, `\\u202e`), so a value can
    neither forge a line of the plan nor colour or reorder a terminal."""
    text = str(text)
    return text if text.isprintable() else _CONTROL.sub(_visible, text)  # the common case, fast


def _visible(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def md(text) -> str:
    """The one escaping function for Markdown: any value becomes inline text that renders as itself, in a
    paragraph, a list item or a table cell alike."""
    text = clean(text)
    text = _GITHUB_PATTERNS.sub(lambda m: m.group() + _JOINER, text)
    text = _LEADING.sub(r"\\\1", _MARKUP.sub(r"\\\1", text))
    # leading blanks would turn a list item's text into an indented code block
    return _JOINER + text if text[:1].isspace() else text
