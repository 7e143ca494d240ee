"""README.md's configuration reference is generated from the schema: it fails here when it is out of date."""

from __future__ import annotations

import json

from adsync_plan import docs, schemas


def test_readme_configuration_reference_is_up_to_date():
    current = docs.README.read_text(encoding="utf-8")
    reference = docs.config_reference(json.loads(schemas.schema_text("config")))
    assert docs.render_readme(current, reference) == current, "run `python -m adsync_plan.docs`"
    assert docs.main(["--check"]) == 0


def test_reference_lists_every_key_of_the_schema():
    schema = json.loads(schemas.schema_text("config"))
    reference = docs.config_reference(schema)
    for name in schema["properties"]:
        assert f"#### `{name}`" in reference
    for variant in ("ldap", "azure", "pbx_starface", "pbx_file", "ldif"):
        for key in schema["$defs"][variant]["properties"]:
            if key not in ("type", "licenses"):
                section = "pbx" if variant.startswith("pbx") else "source"
                assert f"| `{section}.{key}` |" in reference
    assert "| `numbering.blocks[].external_prefix` |" in reference


def test_a_changed_schema_makes_the_check_fail():
    schema = json.loads(schemas.schema_text("config"))
    schema["properties"]["ownership"]["description"] = "Changed."
    current = docs.README.read_text(encoding="utf-8")
    assert docs.render_readme(current, docs.config_reference(schema)) != current
