"""`state list` and `state show`: bindings and the PBX users they point to, one value per column or line."""

from __future__ import annotations

from adsync_plan.output.escape import clean

UNKNOWN = "-"  # an address the desired state does not know, or a PBX user gone from the snapshot


def state_list_text(bindings, group_bindings=()) -> str:
    """One line per binding: address, source id, PBX user id, login; then one per group binding: address,
    key, PBX group id. Columns aligned within each block."""
    if not bindings and not group_bindings:
        return "No bindings in the state snapshot."
    users = [
        (clean(b.address or UNKNOWN), clean(b.source_id), clean(b.pbx_user_id), clean(b.login_id or UNKNOWN))
        for b in bindings
    ]
    groups = [(clean(b.address), clean(b.key), clean(b.pbx_group_id)) for b in group_bindings]
    return "\n".join(_aligned(users) + _aligned(groups))


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """Every column but the last padded to its widest cell, two spaces apart."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]) for row in rows]


def state_show_text(binding, user: dict | None) -> str:
    """The binding, then the PBX user's (or PBX group's) fields as the snapshot has them."""
    if hasattr(binding, "pbx_group_id"):
        return _group_show_text(binding, user)
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


def _group_show_text(binding, group: dict) -> str:
    lines = [
        f"address:      {clean(binding.address)}",
        f"key:          {clean(binding.key)}",
        f"pbx_group_id: {clean(binding.pbx_group_id)}",
        "pbx_group:",
        f"  name: {clean(group['name'])}",
    ]
    lines += [f"  {key}: {', '.join(clean(v) for v in group[key]) or UNKNOWN}" for key in ("members", "numbers")]
    return "\n".join(lines)
