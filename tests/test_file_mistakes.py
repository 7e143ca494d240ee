"""No user mistake is "a bug" (issue 10, item 7): odd YAML keys in any file the tool reads, an audit log that
cannot be read or written, a state folder that cannot be written, a PBX file id no PBX has. Each ends in one
sentence, exit 1, and nothing changed: a file that cannot be written is found before the first PBX write."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.plans import make_plan, refused


@contextlib.contextmanager
def read_only(path: Path):
    """Make `path` unwritable for this process: by its mode, or (as root, whom modes do not stop) with the
    immutable attribute. Skips the test where neither is possible."""
    mode = path.stat().st_mode
    path.chmod(mode & ~0o222)
    immutable = False
    if _writable(path):
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            path.chmod(mode)
            pytest.skip("cannot make a file read-only for this user here")
        immutable = True
    try:
        yield path
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(mode)


def _writable(path: Path) -> bool:
    try:
        if path.is_dir():
            (path / ".probe").touch()
            (path / ".probe").unlink()
        else:
            with open(path, "ab"):
                pass
        return True
    except OSError:
        return False


# -- YAML keys that are mappings or lists ---------------------------------------------------------------

COMPLEX_KEYS = [
    ("adsync.yaml", None, "? [a, b]\n: 1\n", "the configuration has a key that is a list"),
    ("adsync.yaml", None, "{x: 1}: 2\n", "the configuration has a key that is a mapping"),
    ("pbx.yaml", "format_version: 1\nusers:\n  - {id: 1, [x]: 2}\nnumbers: []\n", None, "a key that is a list"),
    ("states/pbx.yaml", "format_version: 1\n? {a: 1}\n: 2\n", None, "the state snapshot has a key that is a mapping"),
    ("states/desired.yaml", "format_version: 1\nusers:\n  {jdoe: 1}: x\n", None, "desired state has a key that is"),
]


@pytest.mark.parametrize(("name", "text", "append", "message"), COMPLEX_KEYS)
def test_a_yaml_key_that_is_a_mapping_or_a_list(cli, demo, name, text, append, message):
    cfg = demo / "adsync.yaml"
    assert cli("render", "-c", cfg)[0] == 0 and cli("refresh", "-c", cfg)[0] == 0
    path = demo / name
    path.write_text(path.read_text() + append if append else text)
    line = (path.read_text().splitlines().index(append.splitlines()[0]) + 1) if append else None
    command = ["plan", "-c", cfg] + (["--no-refresh"] if name.startswith("states/") else [])
    if name == "states/desired.yaml":
        command += ["--desired", path]
    err = refused(cli, demo, *command)
    assert message in err and f"{path}:" in err
    if line:
        assert f"{path}:{line}:" in err


# -- the audit log --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bad", "what"), [(b"[1]\n", "[1]"), (b"\xff\xfe{}\n", "invalid UTF-8")], ids=["list", "utf8"])
def test_an_audit_line_that_cannot_be_read_stops_apply_with_its_number(cli, demo, bad, what):
    path = make_plan(cli, demo)
    audit = demo / "states" / "audit.jsonl"
    audit.parent.mkdir()
    good = json.dumps({"plan_id": "x", "result": "failed"}).encode() + b"\n"
    audit.write_bytes(good + bad + good)
    err = refused(cli, demo, "apply", "-c", demo / "adsync.yaml", path)
    assert f"{audit}:2: this line of the audit log is not a JSON object" in err, what
    assert "restore the file from git" in err


def test_an_audit_log_that_cannot_be_appended_to_is_found_before_the_first_pbx_write(cli, demo):
    """Seen on main: the PBX and the snapshot changed, then no audit record was written."""
    path = make_plan(cli, demo)
    audit = demo / "states" / "audit.jsonl"
    audit.parent.mkdir()
    audit.write_text(json.dumps({"plan_id": "x", "result": "failed"}) + "\n")
    with read_only(audit):
        err = refused(cli, demo, "apply", "-c", demo / "adsync.yaml", path)
    assert f"{audit}: the audit log cannot be appended to" in err and "Nothing was changed" in err
    assert cli("apply", "-c", demo / "adsync.yaml", path)[0] == 0  # writable again: the same plan applies


def test_an_audit_log_that_is_a_folder(cli, demo):
    path = make_plan(cli, demo)
    (demo / "states" / "audit.jsonl").mkdir(parents=True)
    err = refused(cli, demo, "apply", "-c", demo / "adsync.yaml", path)
    assert "audit.jsonl" in err and ("cannot be appended to" in err or "cannot read the audit log" in err)


@pytest.mark.parametrize("command", ["apply", "sync"])
def test_a_read_only_state_folder_is_found_before_the_first_pbx_write(cli, demo, command):
    path = make_plan(cli, demo)
    states = demo / "states"
    states.mkdir()
    args = ["apply", "-c", demo / "adsync.yaml", path] if command == "apply" else ["sync", "-c", demo / "adsync.yaml"]
    with read_only(states):
        err = refused(cli, demo, *(args + (["--yes"] if command == "sync" else [])))
    assert f"{states}: the state folder is not writable" in err and "nothing was changed" in err


# -- a PBX file id no PBX has ---------------------------------------------------------------------------


def test_a_pbx_file_user_id_of_ten_to_the_thirty_is_refused_at_read(cli, demo):
    """Seen on main: apply ran every step, then crashed writing the PBX file."""
    path = make_plan(cli, demo)
    pbx = demo / "pbx.yaml"
    data = json.loads(pbx.read_text())
    old = data["users"][0]["id"]
    data["users"][0]["id"] = 10**30
    for number in data["numbers"]:
        if number["owner"] == old:
            number["owner"] = 10**30
    pbx.write_text(json.dumps(data))
    for args in (("plan", "-c", demo / "adsync.yaml"), ("apply", "-c", demo / "adsync.yaml", path)):
        err = refused(cli, demo, *args)
        assert f"{pbx}: users.0.id:" in err and "maximum" in err
