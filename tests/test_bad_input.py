"""Bad input of every kind gives one clear sentence (file, key or line, what is wrong), no traceback, and
changes nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.plans import edit_plan


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


CONFIG_ERRORS = [
    (
        "source:\n  type: ldif",
        "source:\n  type: ldiff",
        "adsync.yaml:5: source.type: 'ldiff' is not one of: ldap, azure, ldif",
    ),
    ("ownership: all", "ownership: everyone", "adsync.yaml:25: ownership: 'everyone' is not one of: all, bound"),
    ("  licenses: 40", "  licenses: many", "adsync.yaml:22: pbx.licenses: 'many' should be a whole number or null."),
    (
        "  nested_groups: true",
        "  nested_groups: true\n  nestedgroups: true",
        "adsync.yaml:11: scope.nestedgroups: unknown key 'nestedgroups'; did you mean 'nested_groups'?",
    ),
    ("  ttl: 24h", "  ttl: tomorrow", "plan.ttl: 'tomorrow' has the wrong form (write a duration as a number"),
    (
        'logins: ["0001", "90"]',
        'logins: [0001, "90"]',
        'adsync.yaml:24: protect.logins.0: 1 should be text; put it in quotes: "0001" keeps its leading zeros.',
    ),
    (
        "  max_orphans: 5",
        "  max_orphans: 10 %",
        "adsync.yaml:27: safety.max_orphans: '10 %' has the wrong form (write a percentage as \"10%\", with no space",
    ),
    ("version: 1", "version: 1\nsource: [", "the configuration is not valid YAML"),
    ("  path: directory.ldif", "  path: missing.ldif", "source.path: the file"),
    ('  admin_groups: ["CN=PBX-Admins,OU=Groups,DC=example,DC=com"]', "  admin_groups: []", None),
]


@pytest.mark.parametrize(("old", "new", "message"), CONFIG_ERRORS)
def test_configuration_errors_name_file_line_and_key(cli, demo, old, new, message):
    replace_in(demo / "adsync.yaml", old, new)
    if message is None:  # admin groups may be empty as long as user groups are not
        assert cli("validate", "-c", demo / "adsync.yaml")[0] == 0
        return
    before = tree_digest(demo)
    for command in ("validate", "plan"):
        code, out, err = cli(command, "-c", demo / "adsync.yaml")
        assert code == 1
        assert message in err, err
        assert "Traceback" not in err + out and err.count("\n") == 1
    assert tree_digest(demo) == before


def test_every_configuration_problem_is_reported_at_once_with_its_line(cli, demo):
    replace_in(demo / "adsync.yaml", "ownership: all", "ownership: everyone\nownershp: all")
    replace_in(demo / "adsync.yaml", "  licenses: 40", "  licenses: [40]")
    replace_in(demo / "adsync.yaml", "  ttl: 24h", "  tll: 24h")
    code, out, err = cli("validate", "-c", demo / "adsync.yaml")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 4, err
    assert lines[0].endswith("adsync.yaml:22: pbx.licenses: [40] should be a whole number or null.")
    assert lines[1].endswith("adsync.yaml:25: ownership: 'everyone' is not one of: all, bound.")
    assert lines[2].endswith("adsync.yaml:26: ownershp: unknown key 'ownershp'; did you mean 'ownership'?")
    assert lines[3].endswith("adsync.yaml:31: plan.tll: unknown key 'tll'; did you mean 'ttl'?")
    assert "Traceback" not in err + out and "['" not in err


def test_no_group_at_all_is_refused(cli, demo):
    replace_in(demo / "adsync.yaml", '["CN=PBX-Admins,OU=Groups,DC=example,DC=com"]', "[]")
    replace_in(demo / "adsync.yaml", '["CN=PBX-Users,OU=Groups,DC=example,DC=com"]', "[]")
    code, _, err = cli("validate", "-c", demo / "adsync.yaml")
    assert code == 1 and "name at least one group in admin_groups or user_groups" in err


def test_missing_configuration_file(cli, tmp_path):
    code, _, err = cli("plan", "-c", tmp_path / "nope.yaml")
    assert code == 1 and "configuration file not found" in err and "adsync-plan init" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dn: CN=a\nno colon here\n", "directory.ldif:2: expected 'attribute: value'"),
        ("objectClass: user\n", "directory.ldif:1: a record must start with 'dn:'"),
        ("dn: CN=a\ncn:: ###\n", "directory.ldif:2: the base64 value of cn is not valid base64"),
    ],
)
def test_malformed_ldif(cli, demo, text, message):
    (demo / "directory.ldif").write_text(text)
    before = tree_digest(demo)
    code, out, err = cli("plan", "-c", demo / "adsync.yaml")
    assert code == 1 and message in err and "Traceback" not in err
    assert tree_digest(demo) == before


def test_ldif_not_utf8(cli, demo):
    (demo / "directory.ldif").write_bytes("dn: CN=M\xfcller\n".encode("latin-1"))
    code, _, err = cli("render", "-c", demo / "adsync.yaml")
    assert code == 1 and "is not UTF-8" in err


def test_garbage_phone_numbers_hold_the_user_with_a_sentence(cli, demo):
    replace_in(demo / "directory.ldif", "telephoneNumber: +49 7022 27978-22", "telephoneNumber: ☎ ruf mich an")
    code, out, _ = cli("plan", "-c", demo / "adsync.yaml", "--json")
    assert code == 0
    found = [d for d in json.loads(out)["diagnostics"] if d["address"] == "user.bkuehn"]
    assert any("'☎ ruf mich an' is not a phone number" in d["message"] for d in found)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["users"][0].update(login_id="abc"), "pbx.yaml: users.0.login_id: 'abc' has the wrong form"),
        (lambda d: d["users"].append(dict(d["users"][1], id=99)), "login ID 90 appears twice"),
        (lambda d: d["numbers"][0].update(owner=999), "numbers.0.owner: user 999 does not exist"),
        (lambda d: d["users"][0].pop("email"), "users.0: 'email' is required but missing"),
    ],
)
def test_broken_pbx_file(cli, demo, mutate, message):
    data = json.loads((demo / "pbx.yaml").read_text())
    mutate(data)
    (demo / "pbx.yaml").write_text(json.dumps(data))
    before = tree_digest(demo)
    code, _, err = cli("plan", "-c", demo / "adsync.yaml")
    assert code == 1 and message in err, err
    assert tree_digest(demo) == before


def test_hand_written_yaml_pbx_file_with_a_syntax_error_names_the_line(cli, demo):
    (demo / "pbx.yaml").write_text("format_version: 1\nusers:\n  - id: 1\n    login_id: [\n")
    code, _, err = cli("plan", "-c", demo / "adsync.yaml")
    assert code == 1 and "pbx.yaml:" in err and "not valid YAML" in err


def test_hand_edited_snapshot_is_refused(cli, demo):
    assert cli("refresh", "-c", demo / "adsync.yaml")[0] == 0
    replace_in(demo / "states" / "pbx.yaml", '"Müller"', '"Mueller"')
    code, _, err = cli("plan", "-c", demo / "adsync.yaml", "--no-refresh")
    assert code == 1 and "the fingerprint does not match" in err and "refresh" in err


def test_the_way_out_of_a_hand_edited_snapshot_leads_out(cli, demo):
    """Every command that reads the snapshot refuses it alike and leaves it as it is; the way out it names
    (move it away, refresh) works, and the users' bindings are found again by e-mail: nothing is created
    twice."""
    cfg, snapshot = demo / "adsync.yaml", demo / "states" / "pbx.yaml"
    assert cli("plan", "-c", cfg, "-o", demo / "p.plan.json")[0] == 0
    assert cli("apply", "-c", cfg, demo / "p.plan.json")[0] == 0
    doc = json.loads(snapshot.read_text())
    doc["users"][next(iter(doc["users"]))]["last_name"] = "Hand"
    snapshot.write_text(json.dumps(doc))
    edited = snapshot.read_bytes()
    for command in (("refresh",), ("plan", "--no-refresh"), ("plan",)):
        code, _, err = cli(*command, "-c", cfg)
        assert (code, err.strip().splitlines()[-1]) == (
            1,
            f"Error: {snapshot}: the fingerprint does not match the content; the file was edited by hand: "
            f"restore it from git (git checkout -- {snapshot}), or move it away and run `adsync-plan refresh` to "
            "read the PBX into a new snapshot (the users' bindings are then found again by e-mail).",
        ), command
    assert snapshot.read_bytes() == edited
    snapshot.rename(demo / "edited.yaml")
    assert cli("refresh", "-c", cfg)[0] == 0
    code, out, err = cli("plan", "-c", cfg, "--json")
    assert code == 0, err
    assert json.loads(out)["changes"] == []


def test_plan_without_snapshot_and_no_refresh(cli, demo):
    code, _, err = cli("plan", "-c", demo / "adsync.yaml", "--no-refresh")
    assert code == 1 and "no state snapshot" in err and "adsync-plan refresh" in err


REMADE_PLAN = "make a new plan with `adsync-plan plan -o FILE`."
REMADE_SNAPSHOT = (
    "restore it from git (git checkout -- {path}), or move it away and run `adsync-plan refresh` to read the PBX "
    "into a new snapshot (the users' bindings are then found again by e-mail)."
)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda raw: raw[:500], "{what} is not valid YAML (found unexpected end of stream)"),  # a copy cut short
        (lambda raw: b"", "{what} is empty"),  # a full disk when it was written
        (lambda raw: b"\xff" + raw, "{what} is not UTF-8 text"),  # garbled in transfer
    ],
    ids=["cut short", "empty", "not UTF-8"],
)
def test_a_damaged_plan_or_snapshot_says_how_to_make_it_again_not_how_to_edit_it(cli, demo, damage, problem):
    """Files only the tool writes are never mended by hand (their digest would not match): "fix the syntax" or
    "save it as UTF-8" would send the administrator the wrong way."""
    cfg, snapshot, plan = demo / "adsync.yaml", demo / "states" / "pbx.yaml", demo / "p.plan.json"
    assert cli("plan", "-c", cfg, "-o", plan)[0] == 0
    assert cli("refresh", "-c", cfg)[0] == 0
    plan.write_bytes(damage(plan.read_bytes()))
    code, _, err = cli("apply", "-c", cfg, plan)
    said = err.strip().splitlines()[-1]
    assert code == 1 and said.startswith(f"Error: {plan}")
    assert said.endswith(problem.format(what="the plan file") + "; it was cut short or changed: " + REMADE_PLAN)
    snapshot.write_bytes(damage(snapshot.read_bytes()))
    code, _, err = cli("plan", "-c", cfg, "--no-refresh")
    said = err.strip().splitlines()[-1]
    assert code == 1 and said.startswith(f"Error: {snapshot}")
    assert said.endswith(
        problem.format(what="the state snapshot")
        + "; it was cut short or changed: "
        + REMADE_SNAPSHOT.format(path=snapshot)
    )


def test_broken_plan_file(cli, demo):
    (demo / "p.plan.json").write_text('{"format_version": 1, "plan_id": 7}')
    code, _, err = cli("apply", "-c", demo / "adsync.yaml", demo / "p.plan.json")
    assert code == 1 and "p.plan.json" in err and "'created_at' is required but missing" in err
    code, _, err = cli("show", demo / "missing.plan.json")
    assert code == 1 and "missing.plan.json: the plan file not found" in err


def test_desired_state_with_a_broken_field(cli, demo):
    assert cli("render", "-c", demo / "adsync.yaml")[0] == 0
    assert cli("refresh", "-c", demo / "adsync.yaml")[0] == 0
    replace_in(demo / "states" / "desired.yaml", '"role":"user"', '"role":"boss"')
    code, _, err = cli("plan", "-c", demo / "adsync.yaml", "--desired", demo / "states" / "desired.yaml")
    assert code == 1 and "desired.yaml: users." in err and "'boss' is not one of: user, admin" in err


def test_usage_errors_exit_64(cli):
    assert cli("plan", "--bogus")[0] == 64
    assert cli("frobnicate")[0] == 64
    assert cli("show")[0] == 64


def test_a_file_that_cannot_be_written_is_one_sentence(cli, demo):
    before = tree_digest(demo)
    code, _, err = cli("plan", "-c", demo / "adsync.yaml", "-o", demo / "adsync.yaml" / "p.json")
    assert code == 1 and "p.json: cannot write it" in err and "bug" not in err and "Traceback" not in err
    code, _, err = cli("render", "-c", demo / "adsync.yaml", "-o", demo)  # a folder
    assert code == 1 and "cannot write it" in err and "bug" not in err
    assert tree_digest(demo) == before


def test_init_into_a_path_under_a_file_is_one_sentence(cli, demo):
    code, _, err = cli("init", demo / "adsync.yaml")
    assert code == 1 and "cannot write it" in err and "bug" not in err


@pytest.mark.parametrize(
    ("expires", "words"), [("2099-01-01T00:00:00", "expires_at"), ("2099-13-45T00:00:00Z", "no valid")]
)
def test_a_hand_edited_expiry_is_one_sentence(cli, demo, expires, words):
    assert cli("plan", "-c", demo / "adsync.yaml", "-o", demo / "p.plan.json")[0] == 0
    edit_plan(demo / "p.plan.json", lambda plan: plan.update(expires_at=expires), reseal=True)
    code, _, err = cli("apply", "-c", demo / "adsync.yaml", demo / "p.plan.json")
    assert code == 1 and words in err and "bug" not in err


def test_a_plan_ttl_beyond_the_calendar_is_refused(cli, demo):
    replace_in(demo / "adsync.yaml", "ttl: 24h", "ttl: 99999999999999d")
    code, _, err = cli("plan", "-c", demo / "adsync.yaml")
    assert code == 1 and "plan.ttl" in err and "bug" not in err


@pytest.mark.parametrize("scheme", ["ldap", "LDAP"])
def test_plain_ldap_is_refused_however_the_scheme_is_written(cli, demo, scheme):
    replace_in(
        demo / "adsync.yaml",
        "  type: ldif\n  path: directory.ldif",
        f"  type: ldap\n  url: {scheme}://127.0.0.1:389\n  base_dn: DC=example,DC=com\n"
        "  bind_dn: CN=reader,DC=example,DC=com\n  password_env: ADSYNC_LDAP_PASSWORD",
    )
    code, _, err = cli("validate", "-c", demo / "adsync.yaml")
    assert code == 1 and "source.url:" in err  # plain ldap://, or a scheme not written as the schema says
    assert "unencrypted" in err if scheme == "ldap" else "wrong form" in err
