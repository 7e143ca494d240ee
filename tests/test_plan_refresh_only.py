"""`plan --refresh-only`: what changed on the PBX since the committed snapshot, and a plan whose apply only
writes the snapshot. From the CLI on a copy of examples/demo with its file PBX, changed "by hand"."""

from __future__ import annotations

import json
import re

from adsync_plan import schemas
from adsync_plan.state import load_snapshot
from tests.test_cli_ops import adsync, demo  # noqa: F401 - the fixture

CHANGED = [
    "  PBX user 3 (20) changed: last_name",
    "  PBX user 5 (67) was removed",
    "  PBX user 6 (77) was added",
    "  2 number(s) changed owner or were added/removed: +4970222797867, 67",
]


def change_pbx_by_hand(folder) -> None:
    """An administrator renames Jürgen Müller, deletes Gustav Gegangen and adds a user, on the PBX itself."""
    path = folder / "pbx.yaml"
    data = json.loads(path.read_text())
    data["users"] = [u for u in data["users"] if u["id"] != 5]
    next(u for u in data["users"] if u["id"] == 3)["last_name"] = "Müller-Hand"
    data["users"].append(
        {
            "id": 6,
            "login_id": "77",
            "first_name": "Neu",
            "last_name": "Hand",
            "email": "neu@example.com",
            "is_admin": False,
            "primary_internal_number": None,
        }
    )
    for number in data["numbers"]:
        if number["owner"] == 5:
            number["owner"] = number["service"] = None
    path.write_text(json.dumps(data, indent=1))


def test_refresh_only_with_no_change_on_the_pbx(demo, capsys):  # noqa: F811
    assert adsync(capsys, "refresh")[0] == 0
    code, out, _ = adsync(capsys, "plan", "--refresh-only", "--detailed-exitcode")
    assert (code, out) == (0, "No changes. The PBX matches the committed snapshot (serial 1).\n")


def test_refresh_only_shows_what_changed_on_the_pbx_and_writes_nothing(demo, capsys):  # noqa: F811
    assert adsync(capsys, "refresh")[0] == 0
    snapshot = (demo / "states/pbx.yaml").read_bytes()
    change_pbx_by_hand(demo)
    code, out, err = adsync(capsys, "plan", "--refresh-only", "--detailed-exitcode")
    assert code == 2, err
    assert out.splitlines() == [
        "Refresh only: the PBX changed since the committed snapshot (serial 1):",
        *CHANGED,
        "",
        "Refresh only: 4 change(s) on the PBX; applying this plan writes them to the snapshot and changes nothing "
        "on the PBX.",
    ]
    assert (demo / "states/pbx.yaml").read_bytes() == snapshot


def test_refresh_only_plan_applies_only_the_snapshot(demo, capsys):  # noqa: F811
    assert adsync(capsys, "refresh")[0] == 0
    before = load_snapshot(demo / "states/pbx.yaml")
    change_pbx_by_hand(demo)
    pbx = (demo / "pbx.yaml").read_bytes()
    code, _, err = adsync(capsys, "plan", "--refresh-only", "-o", "plans/r.plan.json")
    assert code == 0, err
    doc = json.loads((demo / "plans/r.plan.json").read_text())
    schemas.validate(doc, "plan", "r.plan.json")
    assert doc["changes"] == [] and doc["bindings"] == {}
    assert doc["refresh_only"] == {"since_serial": 1, "pbx_changes": [line.strip() for line in CHANGED]}
    code, out, _ = adsync(capsys, "show", "plans/r.plan.json", "--markdown")
    assert code == 0 and "- PBX user 5 \\(67\\) was removed" in out
    code, out, err = adsync(capsys, "apply", "plans/r.plan.json")
    assert code == 0, err
    snapshot_path = demo / "states/pbx.yaml"
    assert out == f"Apply complete: {snapshot_path} records the PBX as read (serial 2); nothing changed on it.\n"
    assert (demo / "pbx.yaml").read_bytes() == pbx  # nothing written to the PBX
    after = load_snapshot(snapshot_path)
    assert (after.lineage, after.serial) == (before.lineage, 2)
    assert sorted(after.state.users) == ["1", "2", "3", "4", "6"]
    assert after.state.users["3"].last_name == "Müller-Hand"
    record = json.loads((demo / "states/audit.jsonl").read_text().splitlines()[-1])
    assert (record["plan_id"], record["result"], record["steps_done"]) == (doc["plan_id"], "applied", 0)
    assert adsync(capsys, "plan", "--refresh-only")[1].startswith("No changes.")
    assert adsync(capsys, "apply", "plans/r.plan.json")[0] == 1  # applied already


def test_refresh_only_plan_is_stale_when_the_pbx_changes_again(demo, capsys):  # noqa: F811
    assert adsync(capsys, "refresh")[0] == 0
    change_pbx_by_hand(demo)
    assert adsync(capsys, "plan", "--refresh-only", "-o", "plans/r.plan.json")[0] == 0
    data = json.loads((demo / "pbx.yaml").read_text())
    data["users"][0]["first_name"] = "Root"
    (demo / "pbx.yaml").write_text(json.dumps(data))
    snapshot = (demo / "states/pbx.yaml").read_bytes()
    code, _, err = adsync(capsys, "apply", "plans/r.plan.json")
    assert code == 1
    assert "plans/r.plan.json: the plan is stale: the PBX changed since it was made" in err
    assert (demo / "states/pbx.yaml").read_bytes() == snapshot


def test_refresh_only_needs_a_committed_snapshot(demo, capsys):  # noqa: F811
    code, out, err = adsync(capsys, "plan", "--refresh-only", "-o", "r.json")
    assert (code, out) == (1, "")
    assert err == (
        f"Error: {demo / 'states/pbx.yaml'}: no committed snapshot to compare the PBX with; run `adsync-plan "
        "refresh` to write the first one.\n"
    )
    assert not (demo / "r.json").exists()


def test_refresh_only_does_not_mix_with_directory_options(demo, capsys):  # noqa: F811
    assert adsync(capsys, "refresh")[0] == 0
    for extra in (("--target", "user.abrandt"), ("--no-refresh",), ("--desired", "states/desired.yaml")):
        code, _, err = adsync(capsys, "plan", "--refresh-only", *extra)
        assert code == 64
        assert "--refresh-only reads only the PBX: leave out --target, --desired and --no-refresh." in err


def test_refresh_only_redacts_numbers_and_login_ids_on_request(demo, capsys):  # noqa: F811
    """--redact hides the PBX's numbers and login IDs in every form of the refresh-only output, as it does
    in a plan; PBX user ids and counts stay readable. The saved plan keeps them."""
    assert adsync(capsys, "refresh")[0] == 0
    change_pbx_by_hand(demo)
    for form in ((), ("--markdown",), ("--json",)):
        code, out, err = adsync(capsys, "plan", "--refresh-only", "--redact", *form, "-o", "plans/r.plan.json")
        assert code == 0, err
        assert "+4970222797867" not in out and "(77)" not in out and "(20)" not in out, form
        assert len(re.findall(r"number\\?:[0-9a-f]{8}", out)) == 5 and "PBX user 6" in out, form
    assert "+4970222797867" in (demo / "plans/r.plan.json").read_text()
