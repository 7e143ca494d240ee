"""Parallel apply (`apply --parallelism N`) against the STARFACE test server: the same end state as a sequential
apply on the golden cases and on a generated plan where numbers move between users; a failure in the middle
converges on the next plan with nothing created twice; the order that matters is kept.

The PBX gives a created user the next free id, so concurrent creates may get their ids in another order: the
end states are compared with every user id replaced by its login ID."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adsync_plan import parallel
from adsync_plan.planfile import load_plan
from adsync_plan.providers.starface import StarfaceProvider
from adsync_plan.steps import plan_steps
from tests.conftest import CASES, copy_case
from tests.servers.starface import CLIENT_SECRET_ENV, PASSWORD_ENV, StarfaceServer, export_pbx_file
from tests.test_golden import CASE_NAMES
from tests.test_interrupt_converge import make_project
from tests.test_starface_golden import licences, on_starface


@pytest.fixture(autouse=True)
def password(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, StarfaceServer().password)
    monkeypatch.setenv(CLIENT_SECRET_ENV, StarfaceServer().client_secret)
    monkeypatch.setattr(StarfaceProvider, "backoff", 0.01)


def by_login(document: dict) -> dict:
    """A PBX document with each user id (each number's owner, each group's members) replaced by the user's
    login ID."""
    login = {u["id"]: u["login_id"] for u in document["users"]}
    users = sorted(({**u, "id": login[u["id"]]} for u in document["users"]), key=lambda u: u["login_id"])
    numbers = [{**n, "owner": login.get(n["owner"], n["owner"])} for n in document["numbers"]]
    out = {**document, "users": users, "numbers": numbers}
    if "groups" in document:  # a group's members by login ID too (issue 16)
        out["groups"] = [{**g, "members": sorted(login[m] for m in g["members"])} for g in document["groups"]]
    return out


def apply_at(cli, case: Path, parallelism: int, extra=()) -> tuple[int, str]:
    cfg = case / "adsync.yaml"
    code, _, err = cli("plan", "-c", cfg, "-o", case / "p.plan.json", *extra)
    assert code == 0, err
    code, out, err = cli("apply", "-c", cfg, case / "p.plan.json", "--parallelism", str(parallelism))
    return code, out + err


def converged(cli, case: Path) -> None:
    code, out, err = cli("plan", "-c", case / "adsync.yaml", "--detailed-exitcode")
    assert code == 0 and "No changes." in out, out + err


@pytest.mark.parametrize("name", CASE_NAMES)
def test_a_parallel_apply_of_a_golden_case_ends_as_the_sequential_one(name, cli, tmp_path):
    case = copy_case(name, tmp_path)
    expected = json.loads((CASES / name / "expected_pbx.yaml").read_text(encoding="utf-8"))  # sequential
    with StarfaceServer(licenses=licences(case)) as srv:
        on_starface(case, srv)
        extra = ("--allow-mass-orphan",) if name == "r13_safety" else ()
        code, said = apply_at(cli, case, 8, extra)
        assert code == 0, said
        assert by_login(export_pbx_file(srv)) == by_login(expected)
        converged(cli, case)
        srv.check_consistency()
        assert srv.errors == [] and "DELETE /users/{id}" not in srv.counts


def moved_numbers_end_state(cli, folder: Path, parallelism: int) -> dict:
    with StarfaceServer() as srv:
        make_project(folder, srv)
        code, said = apply_at(cli, folder, parallelism)
        assert code == 0, said
        converged(cli, folder)
        srv.check_consistency()
        assert srv.errors == []
        return by_login(export_pbx_file(srv))


def test_a_parallel_apply_where_numbers_move_between_users_ends_as_the_sequential_one(cli, tmp_path):
    sequential = moved_numbers_end_state(cli, tmp_path / "one", 1)
    plan = load_plan(tmp_path / "one" / "p.plan.json")
    steps = plan_steps(plan.changes)
    moved = {s.args[0] for s in steps if s.kind == "release"} & {s.args[0] for s in steps if s.kind == "assign"}
    assert len(moved) >= 10  # numbers released by some users and assigned to others in the same apply
    assert moved_numbers_end_state(cli, tmp_path / "eight", 8) == sequential
    assert moved_numbers_end_state(cli, tmp_path / "three", 3) == sequential


def test_concurrent_requests_really_overlap_with_latency(cli, tmp_path):
    """With 30 ms per request, 8 users at a time really are at the PBX at one time (counted by the server,
    not inferred from elapsed time, which a loaded machine stretches); one at a time never overlaps."""
    most = {}
    for parallelism in (1, 8):
        with StarfaceServer(latency=0.03) as srv:
            folder = make_project(tmp_path / str(parallelism), srv)
            cfg = folder / "adsync.yaml"
            assert cli("plan", "-c", cfg, "-o", folder / "p.plan.json")[0] == 0
            srv.most_in_flight = 0
            code, _, err = cli("apply", "-c", cfg, folder / "p.plan.json", "--parallelism", str(parallelism))
            most[parallelism] = srv.most_in_flight
            assert code == 0, err
            srv.check_consistency()
    assert most[1] == 1 and most[8] >= 4, most


CREATE, ASSIGN = "/users", "/users/{id}/phonenumberconfig/phonenumbers"
# (k-th POST to path, fault, after the request took effect, apply stops): a create whose answer is lost is found
# by its login ID and the apply carries on
FAULTS = [
    (CREATE, 1, "500", False, True),
    (CREATE, 10, "drop", True, False),
    (CREATE, 20, "500", False, True),
    (ASSIGN, 5, "drop", True, True),
    (ASSIGN, 30, "500", False, True),
]


@pytest.mark.parametrize("path, k, kind, after, stops", FAULTS)
def test_a_failure_in_a_parallel_apply_converges_with_nothing_created_twice(path, k, kind, after, stops, cli, tmp_path):
    expected = moved_numbers_end_state(cli, tmp_path / "reference", 1)
    with StarfaceServer() as srv:
        folder = make_project(tmp_path / "failed", srv)
        cfg = folder / "adsync.yaml"
        assert cli("plan", "-c", cfg, "-o", folder / "p.plan.json")[0] == 0
        srv.reset_counts()
        # the k-th create or assignment fails, or is carried out and its answer lost
        srv.fail(k, kind, method="POST", path=path, after=after)
        code, out, err = cli("apply", "-c", cfg, folder / "p.plan.json", "--parallelism", "8")
        assert "Traceback" not in err
        assert (code != 0) == stops, out + err
        audit = [json.loads(line) for line in (folder / "states" / "audit.jsonl").read_text().splitlines()]
        if stops:
            assert "apply stopped after" in err and "run plan again" in err, err
            assert audit[-1]["result"] == "failed" and audit[-1]["steps_not_done"] > 0
        code, said = apply_at(cli, folder, 8)
        assert code == 0, said
        converged(cli, folder)
        srv.check_consistency()  # every login ID once: no user created twice
        assert srv.errors == [] and "DELETE /users/{id}" not in srv.counts
        assert by_login(export_pbx_file(srv)) == expected


def test_phases_keep_releases_before_assignments_and_a_users_steps_in_order(tmp_path, cli):
    with StarfaceServer() as srv:
        folder = make_project(tmp_path / "p", srv)
        assert cli("plan", "-c", folder / "adsync.yaml", "-o", folder / "p.plan.json")[0] == 0
    plan = load_plan(folder / "p.plan.json")
    steps = plan_steps(plan.changes)
    phases = parallel.phases(steps, plan.changes)
    assert sorted(n for phase in phases for chain in phase for n in chain) == list(range(len(steps)))
    kinds = [{steps[n].kind for chain in phase for n in chain} for phase in phases]
    assert kinds[0] == {"release"} and kinds[1] <= {"create", "update", "admin"}
    assert kinds[2] <= {"assign", "service", "primary"}
    for phase in phases:
        users = [steps[chain[0]].index for chain in phase]
        assert len(users) == len(set(users))  # one chain per user: its steps never run side by side
        assert all(chain == sorted(chain) for chain in phase)  # and in plan order


def test_users_contending_for_a_login_id_take_their_account_steps_one_after_the_other():
    from adsync_plan.model import Action, PhoneUser

    def user(login: str, last: str) -> PhoneUser:
        return PhoneUser(login, "Vorname", last, f"{last.lower()}@example.com")

    actions = (
        Action("user.a", "update", "1", user("501", "A"), user("502", "A")),  # takes the login ID b gives up
        Action("user.b", "update", "2", user("502", "B"), user("503", "B")),
        Action("user.c", "update", "3", user("504", "C"), user("504", "Other")),
        Action("user.d", "create", None, None, user("501", "D")),  # takes the login ID a gives up
    )
    steps = plan_steps(actions)
    account = parallel.phases(steps, actions)[1]
    serial = [chain for chain in account if len({steps[n].index for n in chain}) > 1]
    assert [[steps[n].index for n in chain] for chain in serial] == [[0, 1, 3]]  # in plan order, as sequential
    assert [[steps[n].index for n in chain] for chain in account if chain not in serial] == [[2]]


def test_ctrl_c_in_a_parallel_apply_lets_the_steps_in_flight_finish_and_binds_every_created_user(cli, tmp_path):
    import signal

    from tests.test_interrupt import audit, leftovers, signal_during

    with StarfaceServer() as srv:
        folder = make_project(tmp_path / "p", srv)
        cfg = folder / "adsync.yaml"
        assert cli("plan", "-c", cfg, "-o", folder / "p.plan.json")[0] == 0
        users_before = len(srv.data.users)
        srv.latency = 0.02  # the other users' steps take a while too
        fault = srv.fail(3, "slow", method="POST", path="/users", after=True, delay=1.5, hold=True)
        apply = ["apply", "-c", cfg, folder / "p.plan.json", "--parallelism", "4"]
        done = signal_during(srv, fault, apply, signal.SIGINT, folder)
        srv.latency = 0
        assert done.returncode == 130, done.stderr
        assert "run plan again to converge" in done.stderr and "Traceback" not in done.stderr
        created = len(srv.data.users) - users_before
        assert 3 <= created < 25, created  # the slow create finished; the apply stopped before the last
        snapshot = json.loads((folder / "states" / "pbx.yaml").read_text())
        assert len(snapshot["users"]) == len(srv.data.users)  # every created user, the slow one included
        assert len(snapshot["bindings"]) == 30 + created  # 30 matched by e-mail, and each created user bound
        assert audit(folder)[-1]["result"] == "interrupted" and leftovers(folder) == []
        code, said = apply_at(cli, folder, 4)
        assert code == 0, said
        converged(cli, folder)
        srv.check_consistency()
        assert len(srv.data.users) == users_before + 25  # nothing created twice
