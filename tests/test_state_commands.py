"""`state list`, `state show`, `state rm` and `import`: the Terraform habits for bindings, from the CLI.

Every command runs in-process through `adsync_plan.cli.run([...])` in a copy of examples/demo, with the file
PBX of the demo (a real provider, no mocks).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adsync_plan.state import Lock, load_snapshot
from tests.conftest import copy_case
from tests.test_cli_ops import adsync, demo  # noqa: F401 - the fixture

ABRANDT_SID = "77997d12-4316-5c4e-888e-6f568c529732"


@pytest.fixture
def synced(demo, capsys):  # noqa: F811 - the fixture above
    """The demo after render and a first sync: 37 bindings, abrandt is PBX user 6 (login 44)."""
    assert adsync(capsys, "render")[0] == 0
    assert adsync(capsys, "sync", "--yes")[0] == 0
    return demo


@pytest.fixture
def refreshed(demo, capsys):  # noqa: F811
    """The demo rendered and refreshed, nothing bound yet: PBX users 1 (admin), 2 (protected), 3 to 5."""
    assert adsync(capsys, "render")[0] == 0
    assert adsync(capsys, "refresh")[0] == 0
    return demo


def audit(folder: Path) -> list[dict]:
    path = folder / "states/audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- state list / show --------------------------------------------------------------------------------


def test_state_list_prints_one_line_per_binding_with_address_source_id_pbx_id_and_login(synced, capsys):
    code, out, err = adsync(capsys, "state", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == len(load_snapshot(synced / "states/pbx.yaml").bindings) == 37
    abrandt = next(line for line in lines if line.startswith("user.abrandt "))
    assert abrandt.split() == ["user.abrandt", ABRANDT_SID, "6", "44"]
    assert lines == sorted(lines)  # by address


def test_state_list_without_a_desired_state_shows_unknown_addresses(synced, capsys):
    (synced / "states/desired.yaml").unlink(missing_ok=True)
    code, out, _ = adsync(capsys, "state", "list")
    assert code == 0
    assert ["-", ABRANDT_SID, "6", "44"] in [line.split() for line in out.splitlines()]
    assert not any(line.startswith("user.") for line in out.splitlines())


def test_state_list_with_no_bindings_says_so(refreshed, capsys):
    assert adsync(capsys, "state", "list")[:2] == (0, "No bindings in the state snapshot.\n")


def test_state_list_without_a_snapshot_is_one_sentence(demo, capsys):  # noqa: F811
    code, out, err = adsync(capsys, "state", "list")
    assert (code, out) == (1, "")
    assert err == f"Error: {demo / 'states/pbx.yaml'}: no state snapshot yet; run `adsync-plan refresh` first.\n"


@pytest.mark.parametrize("address", ["user.abrandt", "user.ABrandt", "pbx_user.44", ABRANDT_SID, "6"])
def test_state_show_finds_a_binding_by_every_kind_of_address(synced, capsys, address):
    code, out, err = adsync(capsys, "state", "show", address)
    assert code == 0, err
    assert out.splitlines() == [
        "address:     user.abrandt",
        f"source_id:   {ABRANDT_SID}",
        "pbx_user_id: 6",
        "pbx_user:",
        "  login_id: 44",
        "  first_name: Anton",
        "  last_name: Brandt",
        "  email: anton.brandt@example.com",
        "  role: user",
        "  primary_internal_number: 44",
        "  internal_numbers: 44",
        "  external_numbers: +4970222797844",
        "  fax_numbers: -",
        "  is_admin: false",
    ]


def test_state_show_of_an_unknown_address_is_one_sentence(synced, capsys):
    code, out, err = adsync(capsys, "state", "show", "user.nobody")
    assert (code, out) == (1, "")
    assert err.startswith("Error: user.nobody: no binding in ")
    assert "`adsync-plan state list` shows them" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


# -- group bindings (issue 16) ------------------------------------------------------------------------

VERTRIEB_KEY = "map:cn=vertrieb,ou=groups,dc=example,dc=com"
SUPPORT_KEY = "map:cn=support,ou=groups,dc=example,dc=com"


@pytest.fixture
def grouped(tmp_path, capsys):
    """tests/cases/groups_mapped rendered, planned and applied: users anna (PBX user 3), bernd (4), dieter (5);
    groups Support (PBX group 6: bernd, dieter) and Vertrieb (7: anna, bernd; numbers +4970222797830 and 30)."""
    case = copy_case("groups_mapped", tmp_path)
    config = str(case / "adsync.yaml")
    for args in (["render"], ["plan", "-o", str(case / "p.plan.json")], ["apply", str(case / "p.plan.json")]):
        code, _, err = adsync(capsys, *args, "-c", config)
        assert code == 0, err
    return case


def state(capsys, case: Path, *args: str) -> tuple[int, str, str]:
    return adsync(capsys, "state", *args, "-c", str(case / "adsync.yaml"))


def test_state_list_lists_the_group_bindings_after_the_users(grouped, capsys):
    code, out, err = state(capsys, grouped, "list")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == [
        "user.anna",
        "user.bernd",
        "user.dieter",
        "group.Support",
        "group.Vertrieb",
    ]
    assert lines[-2:] == [
        f"group.Support   {SUPPORT_KEY}   6",
        f"group.Vertrieb  {VERTRIEB_KEY}  7",
    ]
    assert lines[0].split() == ["user.anna", "3959d98c-f042-5cdf-b28c-e1bfc08f4782", "3", "10"]


def test_a_group_binding_is_addressed_by_the_desired_name_else_by_the_pbx_groups_name(grouped, capsys):
    config = grouped / "adsync.yaml"
    data = json.loads(config.read_text())
    data["pbx_groups"]["map"][0]["name"] = "Sales"  # renamed in the configuration: the next plan renames it
    config.write_text(json.dumps(data))
    assert adsync(capsys, "render", "-c", str(config))[0] == 0
    assert f"group.Sales    {VERTRIEB_KEY}  7" in state(capsys, grouped, "list")[1].splitlines()
    (grouped / "states/desired.yaml").unlink()
    assert state(capsys, grouped, "list")[1].splitlines()[-1] == f"group.Vertrieb  {VERTRIEB_KEY}  7"


def test_state_list_leaves_out_pbx_groups_the_tool_did_not_make(tmp_path, capsys):
    case = copy_case("groups_orphaned", tmp_path)  # PBX groups 51 Altgruppe (bound) and 52 Fremdgruppe (not)
    code, out, err = state(capsys, case, "list")
    assert code == 0, err
    assert out.splitlines() == ["group.Altgruppe  map:cn=altgruppe,ou=groups,dc=example,dc=com  51"]


@pytest.mark.parametrize("address", ["group.Vertrieb", "group.vertrieb", VERTRIEB_KEY])
def test_state_show_shows_a_group_binding_and_the_pbx_group_with_members_as_addresses(grouped, capsys, address):
    code, out, err = state(capsys, grouped, "show", address)
    assert code == 0, err
    assert out.splitlines() == [
        "address:      group.Vertrieb",
        f"key:          {VERTRIEB_KEY}",
        "pbx_group_id: 7",
        "pbx_group:",
        "  name: Vertrieb",
        "  members: user.anna, user.bernd",
        "  numbers: +4970222797830, 30",
    ]


def test_state_show_of_a_group_names_members_by_login_without_a_desired_state(grouped, capsys):
    (grouped / "states/desired.yaml").unlink()
    code, out, err = state(capsys, grouped, "show", "group.Support")
    assert code == 0, err
    assert out.splitlines()[-3:] == ["  name: Support", "  members: pbx_user.11, pbx_user.13", "  numbers: -"]


def test_state_show_of_an_unknown_group_is_one_sentence_with_a_guess(grouped, capsys):
    code, out, err = state(capsys, grouped, "show", "group.Vertreib")
    assert (code, out) == (1, "")
    assert err == (
        f"Error: group.Vertreib: no group binding in {grouped / 'states/pbx.yaml'} has this address (did you mean "
        "group.Vertrieb?); `adsync-plan state list` shows them.\n"
    )
    code, _, err = state(capsys, grouped, "show", "group.Buchhaltung")
    assert code == 1 and "did you mean" not in err and len(err.splitlines()) == 1


def test_state_show_of_a_pbx_group_the_tool_did_not_make_says_so(tmp_path, capsys):
    case = copy_case("groups_orphaned", tmp_path)
    code, out, err = state(capsys, case, "show", "group.Fremdgruppe")
    assert (code, out) == (1, "")
    assert err == (
        f"Error: group.Fremdgruppe: PBX group 52 has this name but no binding in {case / 'states/pbx.yaml'}: "
        "adsync-plan did not make it and never touches it.\n"
    )


def test_state_rm_of_a_group_address_is_refused_and_changes_nothing(grouped, capsys):
    snapshot = (grouped / "states/pbx.yaml").read_bytes()
    code, out, err = state(capsys, grouped, "rm", "group.Vertrieb")
    assert (code, out) == (1, "")
    assert err.startswith("Error: group.Vertrieb: `state rm` forgets user bindings only;")
    assert len(err.splitlines()) == 1
    assert (grouped / "states/pbx.yaml").read_bytes() == snapshot


# -- state rm -----------------------------------------------------------------------------------------


def test_state_rm_forgets_one_binding_atomically_and_audits_it(synced, capsys):
    before = load_snapshot(synced / "states/pbx.yaml")
    pbx = (synced / "pbx.yaml").read_bytes()
    code, out, err = adsync(capsys, "state", "rm", "user.abrandt")
    assert code == 0, err
    assert out == f"Removed the binding user.abrandt -> PBX user 6 from {synced / 'states/pbx.yaml'}.\n"
    after = load_snapshot(synced / "states/pbx.yaml")
    assert ABRANDT_SID not in after.bindings
    assert {s: i for s, i in before.bindings.items() if s != ABRANDT_SID} == after.bindings
    assert (after.serial, after.fingerprint, after.lineage) == (before.serial + 1, before.fingerprint, before.lineage)
    assert (synced / "pbx.yaml").read_bytes() == pbx  # the PBX user is not touched
    assert not list((synced / "states").glob(".*tmp*"))
    record = audit(synced)[-1]
    assert record["result"] != "applied"
    assert {k: record[k] for k in ("operation", "result", "address", "source_id", "pbx_user_id")} == {
        "operation": "state rm",
        "result": "binding removed",
        "address": "user.abrandt",
        "source_id": ABRANDT_SID,
        "pbx_user_id": "6",
    }
    assert adsync(capsys, "state", "show", "user.abrandt")[0] == 1
    assert not (synced / "states/.adsync.lock").exists()


def test_state_rm_of_an_unknown_address_changes_nothing(synced, capsys):
    snapshot = (synced / "states/pbx.yaml").read_bytes()
    records = audit(synced)
    code, _, err = adsync(capsys, "state", "rm", "pbx_user.4711")
    assert code == 1
    assert err.startswith("Error: pbx_user.4711: no binding in ")
    assert (synced / "states/pbx.yaml").read_bytes() == snapshot
    assert audit(synced) == records


def test_state_rm_and_import_wait_for_the_lock_and_fail_with_its_holder(synced, capsys):
    holder = Lock(synced / "states", "p-123", "apply", 0)
    holder.__enter__()
    holder.path.write_text(json.dumps({**holder.info, "host": "build-agent-2"}))
    snapshot = (synced / "states/pbx.yaml").read_bytes()
    for args in (("state", "rm", "user.abrandt"), ("import", "abrandt", "6")):
        code, out, err = adsync(capsys, *args, "--lock-timeout", "0s")
        assert (code, out) == (1, "")
        assert f"another run holds the lock (id {holder.info['id']}, apply of plan p-123 by " in err
    assert (synced / "states/pbx.yaml").read_bytes() == snapshot
    assert adsync(capsys, "state", "list")[0] == 0  # reading needs no lock


def test_lock_timeout_of_state_rm_must_be_a_duration(synced, capsys):
    code, _, err = adsync(capsys, "state", "rm", "user.abrandt", "--lock-timeout", "soon")
    assert code == 64
    assert "--lock-timeout soon: write a duration such as 0s, 30s, 5m or 1h." in err


# -- import -------------------------------------------------------------------------------------------


def test_import_binds_a_directory_user_to_an_existing_pbx_user(refreshed, capsys):
    # Gustav Gegangen (PBX user 5) would be orphaned and Anton Brandt created; imported, he is updated instead
    code, out, err = adsync(capsys, "import", "abrandt", "5")
    assert code == 0, err
    assert out == f"Imported user.abrandt: bound to PBX user 5 (login 67) in {refreshed / 'states/pbx.yaml'}.\n"
    assert load_snapshot(refreshed / "states/pbx.yaml").bindings == {ABRANDT_SID: "5"}
    record = audit(refreshed)[-1]
    assert (record["operation"], record["result"], record["address"], record["pbx_user_id"]) == (
        "import",
        "imported",
        "user.abrandt",
        "5",
    )
    code, out, _ = adsync(capsys, "plan", "--desired", "states/desired.yaml", "--no-refresh")
    assert code == 0
    assert "~ user.abrandt (PBX user 5)" in out
    assert "+ user.abrandt" not in out
    assert "0 to orphan" in out.splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (
            ("abrandt", "1"),
            "PBX user 1 (login 0001) is protected (an administrator or listed in protect.logins) and is never "
            "managed; import another PBX user.",
        ),
        (
            ("abrandt", "2"),
            "PBX user 2 (login 90) is protected (an administrator or listed in protect.logins) and is never "
            "managed; import another PBX user.",
        ),
        (
            ("jmueller", "4711"),
            "4711: no PBX user has this id in {snapshot}; `adsync-plan refresh` reads the PBX again, and the id "
            "is the key under users: there.",
        ),
        (
            ("nobody", "5"),
            "nobody: no such user in the desired state {desired} (held users cannot be imported); check the "
            "account with `adsync-plan explain` or run `adsync-plan render`.",
        ),
    ],
)
def test_import_refuses_with_one_sentence_and_changes_nothing(refreshed, capsys, args, sentence):
    snapshot = (refreshed / "states/pbx.yaml").read_bytes()
    records = audit(refreshed)
    code, out, err = adsync(capsys, "import", *args)
    assert (code, out) == (1, "")
    expected = sentence.format(snapshot=refreshed / "states/pbx.yaml", desired=refreshed / "states/desired.yaml")
    assert err == f"Error: {expected}\n"
    assert (refreshed / "states/pbx.yaml").read_bytes() == snapshot
    assert audit(refreshed) == records


def test_import_refuses_a_pbx_user_bound_to_someone_else(synced, capsys):
    snapshot = (synced / "states/pbx.yaml").read_bytes()
    code, _, err = adsync(capsys, "import", "jmueller", "6")
    assert code == 1
    assert err == (
        "Error: PBX user 6 (login 44) is bound to user.abrandt already; run `adsync-plan state rm 6` first if "
        "that binding is wrong.\n"
    )
    code, _, err = adsync(capsys, "import", "abrandt", "5")  # abrandt itself is bound to 6
    assert code == 1
    assert err == (
        "Error: user.abrandt is bound to PBX user 6 already; run `adsync-plan state rm user.abrandt` first to "
        "bind it anew.\n"
    )
    assert (synced / "states/pbx.yaml").read_bytes() == snapshot


def test_state_rm_then_import_rebinds(synced, capsys):
    assert adsync(capsys, "state", "rm", "6")[0] == 0
    assert adsync(capsys, "import", "user.abrandt", "6")[0] == 0
    assert load_snapshot(synced / "states/pbx.yaml").bindings[ABRANDT_SID] == "6"
    assert [r["result"] for r in audit(synced)] == ["applied", "binding removed", "imported"]


def test_state_rm_first_recovers_the_journal_of_a_killed_apply(demo, capsys):  # noqa: F811
    import signal

    from tests.test_interrupt import HOOK, run

    assert adsync(capsys, "render")[0] == 0
    assert adsync(capsys, "plan", "-o", "p.plan.json")[0] == 0
    killed = run("apply", "-c", demo / "adsync.yaml", demo / "p.plan.json", **{HOOK: "KILL@flushed"})
    assert killed.returncode == -signal.SIGKILL
    assert (demo / "states/.adsync.journal").exists()
    code, out, err = adsync(capsys, "state", "rm", "user.abrandt")
    assert code == 0, err
    assert "recovered from the journal" in err
    assert not (demo / "states/.adsync.journal").exists()
    bindings = load_snapshot(demo / "states/pbx.yaml").bindings
    assert len(bindings) == 36 and ABRANDT_SID not in bindings  # 37 recovered, one removed
    assert [r["result"] for r in audit(demo)] == ["recovered", "binding removed"]
