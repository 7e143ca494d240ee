"""The `doctor` report (a PBX's profile as the provider returns it): for a terminal, and as Markdown to
attach when asking for help. Every value from the PBX goes through `clean` or `md`."""

from __future__ import annotations

from adsync_plan.output.escape import clean, md


def doctor_text(profile: dict) -> str:
    """The doctor report for a terminal."""
    lines = [clean(f"{profile['pbx']}: signed in with {profile['sign_in']}.")]
    lines.append(clean(f"Version: {profile['version'] or 'not told by the API'}."))
    for title, rows in _doctor_sections(profile):
        lines += ["", f"{title}:"] + [f"  {clean(row)}" for row in rows or ["none"]]
    lines += ["", _doctor_verdict(profile)]
    return "\n".join(lines)


def doctor_markdown(profile: dict) -> str:
    """The doctor report as Markdown, to attach when asking for help (no secrets: there are none in it)."""
    lines = ["## adsync-plan doctor", "", f"- **PBX:** {md(profile['pbx'])}"]
    lines.append(f"- **Signed in with:** {md(profile['sign_in'])}")
    lines.append(f"- **Version:** {md(profile['version'] or 'not told by the API')}")
    lines.append(f"- **Verdict:** {md(_doctor_verdict(profile))}")
    tables = {
        "Call services": (("Id", "Name", "Label", "adsync-plan uses it for"), "services", ("id", "name", "label")),
        "Permissions": (
            ("Id", "Name", "Description", "adsync-plan uses it for"),
            "permissions",
            ("id", "name", "description"),
        ),
    }
    for title, (head, key, cols) in tables.items():
        lines += ["", f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += [
            "| " + " | ".join(md(str(row[c] if row[c] is not None else "")) for c in (*cols, "mapped_to")) + " |"
            for row in profile[key]
        ]
    for title, rows in _doctor_sections(profile)[2:]:
        lines += ["", f"### {title}", ""] + [f"- {md(row)}" for row in rows or ["none"]]
    return "\n".join(lines) + "\n"


def _doctor_sections(profile: dict) -> list[tuple[str, list[str]]]:
    services = [f"{s['id']} {s['name']} ({s['label']}){_mapped(s)}" for s in profile["services"]]
    permissions = [f"{p['id']} {p['name']} ({p['description']}){_mapped(p)}" for p in profile["permissions"]]
    numbers = [f"{kind}: {n['total']} ({n['users']} assigned to users)" for kind, n in profile["numbers"].items()]
    numbers += [f"read {e['fields']} as {e['e164']}" for e in profile["examples"]]
    system = [f"{u['id']} login ID {u['login']} {u['name']}: {u['why']}" for u in profile["system_users"]]
    return [
        ("Call services", services),
        ("Permissions", permissions),
        ("Numbers", numbers),
        ("Users that look like system or API users", system),
        ("Assumptions not confirmed", profile["assumptions"]),
        ("Warnings", profile["warnings"]),
        ("Problems (apply cannot run until they are fixed)", profile["problems"]),
    ]


def _mapped(row: dict) -> str:
    return f" -> {row['mapped_to']}" if row["mapped_to"] else ""


def _doctor_verdict(profile: dict) -> str:
    if profile["problems"]:
        return f"{len(profile['problems'])} mapping(s) missing or ambiguous: plan and apply refuse until fixed."
    return "Every mapping apply needs was found."
