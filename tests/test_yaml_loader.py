"""The fast YAML loader (yaml-rs) reads the same data as ruamel.yaml, and errors keep their line numbers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from adsync_plan import files
from adsync_plan.config import load_config
from adsync_plan.errors import InputError
from adsync_plan.providers.file import FileProvider

ROOT = Path(__file__).resolve().parent.parent
YAML_FILES = sorted(
    p
    for pattern in ("*.yaml", "*.yml")
    for p in ROOT.rglob(pattern)
    if ".git" not in p.parts and "plans" not in p.parts
)


def ruamel_data(raw: bytes):
    return files.plain(YAML(typ="rt").load(raw.decode("utf-8")))


def test_there_are_yaml_files_to_compare():
    assert len(YAML_FILES) > 20  # configurations, file PBXs, templates, golden cases


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_of_the_project_reads_the_same(path: Path):
    raw = path.read_bytes()
    fast = files._fast_yaml(raw)
    try:
        expected = ruamel_data(raw)
    except YAMLError:  # a template with placeholders: ruamel says where, so yaml-rs must hand it over
        assert fast is files._SLOW
        return
    if isinstance(expected, dict):
        assert fast is not files._SLOW, "a mapping must take the fast path"
        assert fast == expected
    else:
        assert fast is files._SLOW  # a top-level list or an empty file: ruamel.yaml decides


# YAML 1.1 and 1.2 differ here (yes/on are booleans in 1.1, 0o17 is octal in 1.2 only, 017 is octal in 1.1).
SCALARS = [
    "yes", "no", "on", "off", "Yes", "ON", "y", "n", "true", "True", "TRUE", "tRUE", "false",
    "null", "Null", "NULL", "~", "", "0o17", "017", "0017", "0001", "09", "0x1f", "0b101", "+12", "-0", "1_000",
    "1e3", "1E3", ".5", "+.5", "0.", "1.", ".inf", "-.inf", "12:30", "1,000", "0o8",
    "2002-12-14", "2001-12-14t21:59:43.10-05:00", "'0001'", '"\\u00e9"', "'it''s'", "!!str 12", "!!int \"12\"",
    "Jürgen", "+49 (7022) 27978-30", "a # comment", "'#not a comment'", "12345678901234567890123",
]  # fmt: skip


@pytest.mark.parametrize("scalar", SCALARS)
def test_scalars_read_as_ruamel_reads_them(scalar: str):
    flow = scalar if scalar and "#" not in scalar else "x"  # a comment ends a flow collection's line
    raw = f"plain: {scalar}\nlisted: [{flow}]\nnested: {{k: {flow}}}\n".encode()
    expected = ruamel_data(raw)
    if scalar.startswith("!!str"):
        expected["plain"] = "12"  # ruamel's round trip keeps the tag as a TaggedScalar; plain() does not unwrap it
        expected["listed"] = ["12"]
        expected["nested"] = {"k": "12"}
    assert files._fast_yaml(raw) == expected


def test_not_a_number_is_not_a_number_in_both():
    raw = b"a: .nan\n"
    assert math.isnan(files._fast_yaml(raw)["a"]) and math.isnan(ruamel_data(raw)["a"])


def test_keys_become_strings_as_with_ruamel():
    raw = b"1: a\n2.5: b\nnull: c\nx: {3: d}\n"
    assert files._fast_yaml(raw) == ruamel_data(raw) == {"1": "a", "2.5": "b", "None": "c", "x": {"3": "d"}}


@pytest.mark.parametrize(
    "raw",
    [
        b"%YAML 1.1\n---\na: yes\n",  # a directive changes what scalars mean
        b"a: 1\n---\nb: 2\n",  # two documents
        b"? [1, 2]\n: a\n",  # a key that is a list
        b"a: 1\na: 2\n",  # a duplicate key: ruamel says where
        b"a: b: c\n",  # a syntax error: ruamel says where
        b"- 1\n- 2\n",  # not a mapping
    ],
)
def test_what_only_ruamel_can_say_goes_to_ruamel(raw: bytes):
    assert files._fast_yaml(raw) is files._SLOW


def test_a_yaml_11_document_reads_as_ruamel_reads_it(tmp_path: Path):
    raw = b"%YAML 1.1\n---\na: yes\n"
    data, _ = files.parse_document(raw, tmp_path / "f.yaml", "the file")
    assert data == ruamel_data(raw) == {"a": True}


def test_a_syntax_error_still_names_its_line(tmp_path: Path):
    raw = b"format_version: 1\nusers:\n  - {id: 1, login_id: '10'\nnumbers: []\n"
    with pytest.raises(InputError, match=r"f\.yaml:4: the PBX file is not valid YAML"):
        files.parse_document(raw, tmp_path / "f.yaml", "the PBX file")


def test_a_duplicate_key_names_its_line(tmp_path: Path):
    raw = b"format_version: 1\nusers: []\nnumbers: []\nusers: []\n"
    with pytest.raises(InputError, match=r"f\.yaml:4"):
        files.parse_document(raw, tmp_path / "f.yaml", "the PBX file")


def test_a_schema_error_in_a_hand_written_pbx_file_names_its_line(tmp_path: Path):
    (tmp_path / "pbx.yaml").write_text(
        "# written by hand\n"
        "format_version: 1\n"
        "users:\n"
        "  - {id: 1, login_id: '10', first_name: A, last_name: B, email: a@example.com}\n"
        "  - {id: 2, login_id: 11, first_name: C, last_name: D, email: c@example.com}\n"
        "numbers: []\n",
        encoding="utf-8",
    )
    with pytest.raises(InputError, match=r"pbx\.yaml:5: users\.1\.login_id"):
        FileProvider({"path": "pbx.yaml"}, tmp_path).read()


def test_the_round_trip_parse_runs_only_for_an_error(tmp_path: Path, monkeypatch):
    calls = []
    real = files.parse_yaml
    monkeypatch.setattr(files, "parse_yaml", lambda *a, **k: calls.append(a) or real(*a, **k))
    (tmp_path / "pbx.yaml").write_text(
        "format_version: 1\nusers:\n  - {id: 1, login_id: '10', first_name: A, last_name: B, email: a@b.de}\n"
        "numbers:\n  - {number: '10', type: internal, owner: 1}\n",
        encoding="utf-8",
    )
    state = FileProvider({"path": "pbx.yaml"}, tmp_path).read()
    assert list(state.users) == ["1"] and state.users["1"].internal_numbers == ("10",)
    assert calls == []


def test_a_valid_configuration_takes_the_fast_path(tmp_path: Path, monkeypatch):
    """A configuration with a thousand mapped groups took 0.4 s of every command in the round-trip parser;
    that parse now runs only when an error needs a line (tests/test_bad_input.py keeps the lines)."""
    calls = []
    monkeypatch.setattr(files, "YAML", lambda *a, **k: calls.append(a) or YAML(*a, **k))
    for name in ("directory.ldif", "pbx.yaml"):
        (tmp_path / name).write_text("", encoding="utf-8")
    (tmp_path / "adsync.yaml").write_text(
        "version: 1  # comments are fine\n"
        "source: {type: ldif, path: directory.ldif}\n"
        "scope: {admin_groups: [], user_groups: ['CN=Staff,DC=example,DC=com']}\n"
        "pbx: {type: file, path: pbx.yaml}\n"
        "pbx_groups:\n  map:\n    - {directory_group: 'CN=Sales,DC=example,DC=com', name: Sales}\n",
        encoding="utf-8",
    )
    config = load_config(tmp_path / "adsync.yaml")
    assert config.pbx_groups.map[0].name == "Sales" and config.source == {"type": "ldif", "path": "directory.ldif"}
    assert calls == []
