"""The plan as a pull-request comment: the summary table, then what needs attention (never folded), then
the changes (folded per group when there are many), then the held users (folded).

Every value from the directory or the PBX goes through `md`; the comment fits GitHub's 65,536 characters at
any size, because each part has a budget and only the lines shown are ever built."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from adsync_plan.model import Plan
from adsync_plan.output.escape import md
from adsync_plan.output.redact import Redactor
from adsync_plan.output.text import (
    HELD_GROUPS,
    attention,
    change_line,
    finding_count,
    finding_line,
    findings,
    group_change_line,
    group_summary,
    held_count,
    held_groups,
    held_heading,
    iter_held,
    refresh_only_text,
    summary_line,
    targeted_line,
)

# GitHub refuses comments over 65,536 characters; GitLab notes allow more, but nobody reads that much.
MARKDOWN_LIMIT = 60_000
# characters for each part, so that no part crowds out another however large the plan
ATTENTION_BUDGET = 10_000
CHANGES_BUDGET = 24_000  # shared by the groups of changes, each listed while it lasts
HELD_BUDGET = 14_000
NOTES_BUDGET = 3_000  # warnings, and again the notes (one per protected user can be thousands)
UNFOLDED = 10  # a group of at most this many changes is shown open
GROUPS = (("create", "to create"), ("update", "to update"), ("orphan", "to orphan"))
MORE = "- ... and {} more; see `adsync-plan show PLANFILE`"


def plan_markdown(plan: Plan, redact: Redactor | None = None, held_by: tuple[int, int] | None = None) -> str:
    redact = redact or Redactor(False)
    if plan.refresh_only is not None:
        return _refresh_only(plan, redact)
    lines = _summary(plan, redact)
    lines += _attention(plan, redact)
    lines += _findings(plan, redact)
    lines += _changes(plan, redact)
    lines += _held(plan, redact, held_by)
    groups = held_groups(plan, redact)
    if groups:
        lines += [f"#### {md(HELD_GROUPS)}", ""] + [f"- {md(finding_line(d))}" for d in groups] + [""]
    lines += _notes(plan, redact)
    text = "\n".join(lines)
    if len(text) > MARKDOWN_LIMIT:  # the budgets keep well below; this only guards a future part
        cut = text.rfind("\n</details>\n", 0, MARKDOWN_LIMIT)
        cut = cut + len("\n</details>\n") if cut > 0 else MARKDOWN_LIMIT
        text = text[:cut] + "\n_The rest of this plan is too long for a comment; see `adsync-plan show PLANFILE`._\n"
    return (
        text + "\n" + f"<sub>plan {md(plan.plan_id)}, made {md(plan.created_at)}, expires {md(plan.expires_at)}</sub>"
    )


def _refresh_only(plan: Plan, redact: Redactor) -> str:
    text = refresh_only_text(plan, redact).splitlines()
    if len(text) == 1:
        return f"### adsync-plan\n\n{md(text[0])}\n"
    items = [f"- {md(line.strip())}" for line in text[1:-2]]
    return "\n".join(["### adsync-plan", "", md(text[0]), "", *items, "", f"**{md(text[-1])}**", ""])


def _summary(plan: Plan, redact: Redactor) -> list[str]:
    s = plan.summary
    lines = ["### adsync-plan", ""]
    if any(True for _ in findings(plan, "error")):
        lines += ["> [!CAUTION]", "> The safety valve (R13) refused this plan; it cannot be applied.", ""]
    if plan.overrides:
        made_with = ", ".join(f"--{md(o)}" for o in plan.overrides)
        lines += ["> [!WARNING]", f"> Made with {made_with}: a safety limit was overridden.", ""]
    if plan.targets:
        lines += ["> [!NOTE]", f"> {md(targeted_line(plan, redact))}", ""]
    lines += [
        f"**{md(summary_line(plan, redact))}**",
        "",
        "| to create | to update | to orphan | unchanged | held | protected |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {s['create']} | {s['update']} | {s['orphan']} | {s.get('unchanged', 0)} | {s.get('held', 0)} "
        f"| {s.get('protected', 0)} |",
        "",
    ]
    if group_summary(s):
        lines += [
            "| groups to create | groups to update | groups to orphan | groups held |",
            "| ---: | ---: | ---: | ---: |",
            f"| {s['group_create']} | {s['group_update']} | {s['group_orphan']} | {s.get('group_held', 0)} |",
            "",
        ]
    return lines


def _attention(plan: Plan, redact: Redactor) -> list[str]:
    notes = attention(plan, redact)
    if not notes:
        return []
    lines = ["#### Needs attention", ""]
    lines += _bounded((f"- {md(n.line())}" for n in notes), len(notes), ATTENTION_BUDGET, MORE)
    return lines + [""]


def _findings(plan: Plan, redact: Redactor) -> list[str]:
    lines = []
    refused = list(findings(plan, "error", redact))
    if refused:
        lines += ["#### Refused", ""] + [f"- {md(d.message)}" for d in refused] + [""]
    warnings = finding_count(plan, "warning")
    if warnings:
        lines += ["#### Warnings", ""]
        shown = (f"- {md(finding_line(d))}" for d in findings(plan, "warning", redact))
        lines += _bounded(shown, warnings, NOTES_BUDGET, MORE) + [""]
    return lines


def _changes(plan: Plan, redact: Redactor) -> list[str]:
    if not (plan.changes or plan.group_changes):
        return []
    lines, budget = ["#### Changes", ""], CHANGES_BUDGET
    for kind, label in GROUPS:
        group = [a for a in plan.changes if a.action == kind]
        if not group:
            continue
        items = _bounded((f"- {md(change_line(a, redact))}" for a in group), len(group), budget // 3, MORE)
        if len(group) <= UNFOLDED:
            lines += [f"{len(group)} {label}:", ""] + items + [""]
        else:
            lines += ["<details>", f"<summary>{len(group)} {label}</summary>", ""] + items + ["", "</details>", ""]
    if plan.group_changes:  # PBX groups (pbx_groups): few, shown open
        groups = plan.group_changes
        items = _bounded((f"- {md(group_change_line(g, redact))}" for g in groups), len(groups), budget // 3, MORE)
        lines += [f"{len(groups)} group {'change' if len(groups) == 1 else 'changes'}:", ""] + items + [""]
    return lines


def _held(plan: Plan, redact: Redactor, held_by: tuple[int, int] | None) -> list[str]:
    count = held_count(plan)
    if not count:
        return []
    heading = held_heading(count, held_by)
    lines = [
        f"#### {md(heading)}",
        "",
        "Nothing changes for these users until their directory entries are fixed.",
        "",
        "<details>",
        f"<summary>Held users ({count})</summary>",
        "",
        "| user | rule | reason | fix in |",
        "| --- | --- | --- | --- |",
    ]
    rows = (
        f"| {md(h.address)} | {md(', '.join(h.codes))} | {md(' '.join(h.reasons))} | {_fix_in(h.diagnostics)} |"
        for h in iter_held(plan, redact)
    )
    lines += _bounded(rows, count, HELD_BUDGET, "| ... | | {} more; see `adsync-plan show PLANFILE` | |")
    return lines + ["", "</details>", ""]


def _fix_in(diagnostics: Iterable) -> str:
    """The directory entry and its attribute to fix, once each: `CN=...,DC=com (mail)`."""
    places = []
    for d in diagnostics:
        source = d.source or {}
        place = " ".join(
            filter(None, (source.get("dn"), f"({source['attribute']})" if source.get("attribute") else ""))
        )
        if place and place not in places:
            places.append(place)
    return "; ".join(md(p) for p in places)


def _notes(plan: Plan, redact: Redactor) -> list[str]:
    notes = finding_count(plan, "info")
    if not notes:
        return []
    lines = ["<details>", f"<summary>Notes ({notes})</summary>", ""]
    lines += _bounded((f"- {md(finding_line(d))}" for d in findings(plan, "info", redact)), notes, NOTES_BUDGET, MORE)
    return lines + ["", "</details>", ""]


def _bounded(lines: Iterator[str], total: int, budget: int, more: str) -> list[str]:
    """The first of `total` lines that fit into `budget` characters, then `more` with how many were left
    out. Lazy: only the lines shown are made, however long the plan."""
    out, used = [], 0
    for line in lines:
        used += len(line) + 1
        if used > budget:
            return out + [more.format(total - len(out))]
        out.append(line)
    return out
