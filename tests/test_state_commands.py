"""`state list`, `state show`, `state rm` and `import`: the Terraform habits for bindings, from the CLI.

Every command runs in-process through `adsync_plan.cli.run([...])` in a copy of examples/demo, with the file
PBX of the demo (a real provider, no mocks).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adsync_plan.state import Lock, load_snapshot
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
