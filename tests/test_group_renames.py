"""Group renames that collide on the way (issue 16 follow-up): two groups adsync-plan made swap names, one takes
the name another gives up (to a new name, to an orphan's `-` name, or only in another case). Names are unique on
the PBX, case-insensitive, at every moment, so apply must free a name before it gives it and break a swap with a
temporary name; on the file PBX and on the STARFACE test server (both refuse a taken name), and an apply stopped
between the two renames of a swap converges on the next plan and apply."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from adsync_plan import providers
from adsync_plan.errors import PbxError
from adsync_plan.providers.file import FileProvider
from adsync_plan.providers.starface import StarfaceProvider
from tests.conftest import CASES, copy_case
from tests.servers.starface import CLIENT_SECRET_ENV, PASSWORD_ENV, StarfaceServer, export_pbx_file
from tests.test_golden import plan_and_apply
from tests.test_starface_golden import on_starface

VERTRIEB, SUPPORT = 0, 1  # positions in groups_mapped's pbx_groups.map
TEMPORARY = "adsync-plan renaming"


def names(case: Path, *wanted: str | None) -> None:
    """Give groups_mapped's mapped groups new names; None leaves the entry out (its group becomes an orphan)."""
    config = json.loads((case / "adsync.yaml").read_text(encoding="utf-8"))
    entries = json.loads((CASES / "groups_mapped" / "adsync.yaml").read_text(encoding="utf-8"))["pbx_groups"]["map"]
    config["pbx_groups"]["map"] = [dict(e, name=n) for e, n in zip(entries, wanted, strict=True) if n is not None]
    (case / "adsync.yaml").write_text(json.dumps(config, indent=1), encoding="utf-8")


def entry_ids(case: Path, srv: StarfaceServer | None, first) -> list[str]:
    """The PBX ids of the groups named `first`, in the map's order."""
    by_name = {name: gid for gid, name in group_names(case, srv).items()}
    return [by_name[name] for name in first if name is not None]


def group_names(case: Path, srv: StarfaceServer | None) -> dict[str, str]:
    pbx = export_pbx_file(srv) if srv else json.loads((case / "pbx.yaml").read_text(encoding="utf-8"))
    return {str(g["id"]): g["name"] for g in pbx["groups"]}


# (the names of the first apply, the names of the second, the group names on the PBX at the end)
RENAMES = {
    "swap": (("Vertrieb", "Support"), ("Support", "Vertrieb"), ["Support", "Vertrieb"]),
    "swap-case": (("Vertrieb", "Support"), ("SUPPORT", "vertrieb"), ["SUPPORT", "vertrieb"]),
    "chain": (("Vertrieb", "Support"), ("Zentrale", "Vertrieb"), ["Zentrale", "Vertrieb"]),
    "chain-case": (("Vertrieb", "Support"), ("Zentrale", "VERTRIEB"), ["Zentrale", "VERTRIEB"]),
    "case-only": (("Vertrieb", "Support"), ("VERTRIEB", "support"), ["VERTRIEB", "support"]),
    # the orphan becomes "-Vertrieb", the name the other group gives up
    "orphan-takes-a-freed-name": (("Vertrieb", "-Vertrieb"), (None, "Support"), ["-Vertrieb", "Support"]),
    # the other group takes the name the orphan gives up
    "takes-an-orphans-name": (("Vertrieb", "Support"), (None, "Vertrieb"), ["-Vertrieb", "Vertrieb"]),
}


@pytest.fixture
def starface(monkeypatch):
    """A STARFACE test server (a 10.x, OAuth)."""
    monkeypatch.setenv(PASSWORD_ENV, StarfaceServer().password)
    monkeypatch.setenv(CLIENT_SECRET_ENV, StarfaceServer().client_secret)
    monkeypatch.setattr(StarfaceProvider, "backoff", 0.01)
    with StarfaceServer(licenses=50, version="10") as srv:
        yield srv
        assert srv.errors == [] and "DELETE /groups/{id}" not in srv.counts
        srv.check_consistency()


@pytest.fixture(params=["file", "starface"])
def pbx(request):
    """None for the file PBX, else a STARFACE test server."""
    return request.getfixturevalue("starface") if request.param == "starface" else None


def made(cli, tmp_path, srv, first) -> Path:
    """groups_mapped applied with the names `first`: two groups adsync-plan made and bound."""
    case = copy_case("groups_mapped", tmp_path)
    if srv is not None:
        on_starface(case, srv)
    names(case, *first)
    plan_and_apply(cli, case)
    return case


def swap_planned(cli, tmp_path, srv) -> tuple[Path, list[str]]:
    """Vertrieb and Support applied, their names swapped in pbx_groups and planned (p.plan.json); returns the
    case and the two PBX group ids (Vertrieb's, Support's)."""
    case = made(cli, tmp_path, srv, ("Vertrieb", "Support"))
    ids = entry_ids(case, srv, ("Vertrieb", "Support"))
    names(case, "Support", "Vertrieb")
    code, _, err = cli("plan", "-c", case / "adsync.yaml", "-o", case / "p.plan.json")
    assert code == 0, err
    return case, ids


@pytest.mark.parametrize("kind", RENAMES)
def test_renames_that_take_each_others_names_apply_and_converge(kind, cli, tmp_path, pbx):
    first, second, end = RENAMES[kind]
    case = made(cli, tmp_path, pbx, first)
    ids = entry_ids(case, pbx, first)
    names(case, *second)
    plan = plan_and_apply(cli, case)
    # the plan shows the final names only; a temporary name is apply's detail
    assert TEMPORARY not in json.dumps(plan)
    assert [group_names(case, pbx)[i] for i in ids] == end
    code, out, err = cli("plan", "-c", case / "adsync.yaml", "--detailed-exitcode")
    assert code == 0 and "No changes." in out, out + err


def test_a_swap_says_so_in_the_apply_log_with_the_temporary_name(cli, tmp_path):
    case, _ = swap_planned(cli, tmp_path, None)
    code, out, err = cli("--log-level", "info", "apply", "-c", case / "adsync.yaml", case / "p.plan.json")
    assert code == 0, err
    assert f"rename to {TEMPORARY} " in out + err and "for now" in out + err, out + err


class FailingSecondRename(FileProvider):
    """The file PBX, refusing every rename after the first one (the file is still written: apply flushes)."""

    renames = 0

    def rename_group(self, group_id: str, name: str) -> None:
        FailingSecondRename.renames += 1
        if FailingSecondRename.renames > 1:
            raise PbxError("the PBX did not answer.")
        super().rename_group(group_id, name)


def test_a_swap_stopped_after_the_temporary_name_converges_on_the_file_pbx(cli, tmp_path, monkeypatch):
    case, ids = swap_planned(cli, tmp_path, None)
    monkeypatch.setitem(providers.PROVIDERS, "file", "tests.test_group_renames:FailingSecondRename")
    FailingSecondRename.renames = 0
    code, _, err = cli("apply", "-c", case / "adsync.yaml", case / "p.plan.json")
    assert code == 1 and "apply stopped after" in err, err
    halfway = group_names(case, None)
    assert sum(TEMPORARY in n for n in halfway.values()) == 1, halfway  # one group waits under the temporary name
    monkeypatch.undo()
    plan = plan_and_apply(cli, case)
    assert TEMPORARY in json.dumps(plan)  # the next plan shows where it is: from the temporary name to the final
    assert [group_names(case, None)[i] for i in ids] == ["Support", "Vertrieb"]
    code, out, err = cli("plan", "-c", case / "adsync.yaml", "--detailed-exitcode")
    assert code == 0 and "No changes." in out, out + err


def test_a_swap_killed_between_its_renames_converges_on_the_starface(cli, tmp_path, starface):
    # (the file PBX writes nothing before its flush: a kill between its steps leaves it as it was)
    from tests.test_interrupt import HOOK, leftovers, run

    pbx = starface
    case, ids = swap_planned(cli, tmp_path, pbx)
    # the group steps of this plan: the temporary rename, the other group's rename, the final rename
    killed = run(
        "apply",
        "-c",
        case / "adsync.yaml",
        case / "p.plan.json",
        **{HOOK: "KILL@step:1", CLIENT_SECRET_ENV: pbx.client_secret},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    halfway = group_names(case, pbx)
    assert sorted(TEMPORARY in n for n in halfway.values()) == [False, True], halfway
    code, _, err = cli("refresh", "-c", case / "adsync.yaml")
    assert code == 0, err
    assert leftovers(case) == []
    plan_and_apply(cli, case)
    assert [group_names(case, pbx)[i] for i in ids] == ["Support", "Vertrieb"]
    code, out, err = cli("plan", "-c", case / "adsync.yaml", "--detailed-exitcode")
    assert code == 0 and "No changes." in out, out + err


@pytest.mark.parametrize("kind, after", [("500", False), ("drop", True)])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_fault_at_each_rename_of_a_swap_then_a_new_plan_converges_on_the_starface(
    k, kind, after, cli, tmp_path, starface
):
    pbx = starface
    case, ids = swap_planned(cli, tmp_path, pbx)
    pbx.fail(k, kind, "PUT", "/groups", after=after)  # the k-th rename fails, or its answer is lost
    code, _, err = cli("apply", "-c", case / "adsync.yaml", case / "p.plan.json")
    assert code == 1 and "apply stopped after" in err, err
    plan_and_apply(cli, case)
    assert [group_names(case, pbx)[i] for i in ids] == ["Support", "Vertrieb"]
    code, out, err = cli("plan", "-c", case / "adsync.yaml", "--detailed-exitcode")
    assert code == 0 and "No changes." in out, f"fault at request {k}: {out}"


def test_an_orphan_whose_dash_name_another_group_keeps_is_held_with_a_sentence(cli, tmp_path, pbx):
    """The first orphan of 'Vertrieb' keeps '-Vertrieb'; the group that took 'Vertrieb' since then cannot get
    '-Vertrieb' too: it is held (members and numbers stay), not left to fail at apply."""
    case = made(cli, tmp_path, pbx, ("Vertrieb", "Support"))
    ids = entry_ids(case, pbx, ("Vertrieb", "Support"))
    names(case, None, "Support")
    plan_and_apply(cli, case)  # 'Vertrieb' -> '-Vertrieb'
    names(case, None, "Vertrieb")
    plan_and_apply(cli, case)  # 'Support' -> 'Vertrieb'
    before = export_pbx_file(pbx) if pbx else json.loads((case / "pbx.yaml").read_text(encoding="utf-8"))
    names(case, None, None)
    code, out, err = cli("plan", "-c", case / "adsync.yaml", "-o", case / "p.plan.json", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan.get("group_changes", []) == [], plan
    (held,) = [d for d in plan["diagnostics"] if d["address"] == "group.Vertrieb"]
    assert held["code"] == "GROUP_NAME_COLLISION" and f"PBX group {ids[0]} is named '-Vertrieb'" in held["message"]
    code, _, err = cli("apply", "-c", case / "adsync.yaml", case / "p.plan.json")
    assert code == 0, err
    after = export_pbx_file(pbx) if pbx else json.loads((case / "pbx.yaml").read_text(encoding="utf-8"))
    assert after["groups"] == before["groups"]


def test_a_group_held_for_its_new_name_keeps_its_old_one_which_then_holds_the_group_that_wanted_it():
    """Found by the property test: 'Alle' (bound) wants 'sales', which a group the tool did not make keeps, so
    it stays 'Alle'; the new group that wanted 'Alle' is held too, not left to fail at apply."""
    from tests.test_groups import OTHER, USERS, GroupMap, PbxGroup, config, directory, plan, state, user

    pbx = state(groups={"101": PbxGroup("Sales"), "102": PbxGroup("Alle")})
    mapped = (GroupMap(OTHER, "Alle"), GroupMap(USERS, "sales"))
    _, d, _, groups = plan(directory(user("a", "11")), pbx, config(mapped=mapped), {}, {f"map:{USERS}": "102"})
    assert groups == []
    assert sorted(d.group_held) == ["group.Alle", "group.sales"]
    (reason,) = d.group_held["group.Alle"]
    assert "PBX group 102 is named 'Alle' and keeps its name" in reason.message


def test_an_orphan_held_for_its_name_keeps_its_numbers_so_a_user_wanting_one_is_held():
    from tests.test_groups import PbxGroup, config, directory, plan, state, user

    groups = {"50": PbxGroup("Alt", (), ("30",)), "51": PbxGroup("-Alt")}  # 50 cannot become '-Alt'
    pbx = state([], {"30": "group:50"}, groups)
    _, d, actions, group_actions = plan(
        directory(user("a", "11", "30")), pbx, config(), {}, {"map:cn=gone": "50", "map:cn=gone2": "51"}
    )
    assert group_actions == [] and d.group_orphans == ["51"]  # 51 is '-Alt' already: nothing to do
    assert [x.code for x in d.group_held["group.Alt"]] == ["GROUP_NAME_COLLISION"]
    assert "user.a" in d.held and [a.address for a in actions] == []
