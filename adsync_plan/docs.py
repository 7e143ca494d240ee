"""The configuration reference in README.md, generated from schemas/config.schema.json so it cannot drift.

python -m adsync_plan.docs            rewrite the section between the markers in README.md
python -m adsync_plan.docs --check    exit 1 when README.md is out of date (the tests do the same)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from adsync_plan import schemas

BEGIN = "<!-- BEGIN CONFIG REFERENCE: generated from schemas/config.schema.json by `python -m adsync_plan.docs` -->"
END = "<!-- END CONFIG REFERENCE -->"
README = Path(__file__).resolve().parent.parent / "README.md"


def config_reference(schema: dict) -> str:
    """Markdown: one table per top-level section, one row per key (dotted path), variants per type."""
    lines = []
    required = set(schema.get("required", ()))
    for name, prop in schema["properties"].items():
        need = " (required)" if name in required else ""
        lines += [f"#### `{name}`{need}", ""]
        if prop.get("description"):
            lines += [prop["description"], ""]
        rows = _rows(name, prop) if "properties" in prop else [(name, _type(prop), _default(prop), "")]
        if rows:
            lines += _table(rows)
        for variant, ref in _variants(prop):
            lines += [f"With `{name}.type: {variant}`:", ""]
            lines += _table(_rows(name, _resolve(ref, schema), skip=("type", "licenses")))
    return "\n".join(lines).rstrip() + "\n"


def _variants(prop: dict) -> list[tuple[str, str]]:
    """The if/then branches of `source` and `pbx`: (type value, $ref of its keys)."""
    out = []
    for branch in prop.get("allOf", ()):
        value = branch.get("if", {}).get("properties", {}).get("type", {}).get("const")
        ref = branch.get("then", {}).get("$ref")
        if value and ref:
            out.append((value, ref))
    return out


def _resolve(ref: str, schema: dict) -> dict:
    node = schema
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _rows(path: str, prop: dict, skip: tuple[str, ...] = ()) -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every key below `prop`, depth first."""
    rows = []
    required = set(prop.get("required", ()))
    for name, sub in prop.get("properties", {}).items():
        if name in skip or sub is True:
            continue
        key = f"{path}.{name}"
        items = sub.get("items", {})
        described = sub.get("description", "") + (" Required." if name in required else "")
        rows.append((key, _type(sub), _default(sub), described.strip()))
        if sub.get("type") == "object":
            rows += _rows(key, sub)
        elif isinstance(items, dict) and items.get("type") == "object":
            rows += _rows(f"{key}[]", items)
    return rows


def _type(prop: dict) -> str:
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "oneOf" in prop:
        return " or ".join(_type(p) for p in prop["oneOf"])
    kind = prop.get("type", "any")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array" and isinstance(prop.get("items"), dict):
        inner = prop["items"]
        kind = f"list of {'objects' if inner.get('type') == 'object' else _type(inner)}"
    if prop.get("pattern"):
        kind += f" matching `{prop['pattern']}`"
    return kind


def _default(prop: dict) -> str:
    return f"`{json.dumps(prop['default'], ensure_ascii=False)}`" if "default" in prop else ""


def _table(rows) -> list[str]:
    out = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    out += [f"| `{key}` | {kind} | {default} | {_cell(text)} |" for key, kind, default, text in rows]
    return out + [""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_readme(readme: str, reference: str) -> str:
    """The README with the generated section replaced (the markers must be there)."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no section between {BEGIN!r} and {END!r}")
    return readme[: start + len(BEGIN)] + "\n\n" + reference + "\n" + readme[end:]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    current = README.read_text(encoding="utf-8")
    wanted = render_readme(current, config_reference(json.loads(schemas.schema_text("config"))))
    if "--check" in argv:
        if wanted != current:
            print("README.md: the configuration reference is out of date; run `python -m adsync_plan.docs`.")
            return 1
        return 0
    if wanted != current:
        README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
