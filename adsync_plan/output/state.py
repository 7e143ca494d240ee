"""`state list` and `state show`: bindings and the PBX users they point to, one value per column or line."""

from __future__ import annotations

from adsync_plan.output.escape import clean

UNKNOWN = "-"  # an address the desired state does not know, or a PBX user gone from the snapshot


def state_list_text(bindings) -> str:
    """One line per binding: address, source id, PBX user id, login; columns aligned."""
    if not bindings:
        return "No bindings in the state snapshot."
    rows = [
        (clean(b.address or UNKNOWN), clean(b.source_id), clean(b.pbx_user_id), clean(b.login_id or UNKNOWN))
        for b in bindings
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in rows
    )


def state_show_text(binding, user: dict | None) -> str:
    """The binding, then the PBX user's fields as the snapshot has them."""
    lines = [
        f"address:     {clean(binding.address or UNKNOWN)}",
        f"source_id:   {clean(binding.source_id)}",
        f"pbx_user_id: {clean(binding.pbx_user_id)}",
    ]
    if user is None:
        return "\n".join([*lines, "pbx_user:    (not in the snapshot)"])
    lines.append("pbx_user:")
    for key, value in user.items():
        if isinstance(value, list | tuple):
            shown = ", ".join(clean(v) for v in value) or UNKNOWN
        else:
            shown = UNKNOWN if value is None else str(value).lower() if isinstance(value, bool) else clean(value)
        lines.append(f"  {key}: {shown}")
    return "\n".join(lines)
