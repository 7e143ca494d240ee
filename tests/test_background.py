"""At scale, `plan` reads the directory in a child process (pipeline.CHILD_FROM_SNAPSHOT_BYTES), then a fork
of it names the likely changes' fields and computes the desired digest while it reconciles: the plan is the
same as in one process, and the child's errors reach the user as they would without it."""

from __future__ import annotations

import fcntl
import os

import pytest

from adsync_plan import background, diff, pipeline, planfile
from adsync_plan.config import load_config
from adsync_plan.errors import AdsyncError
from adsync_plan.model import PbxState, PhoneUser
from adsync_plan.rules.directory import DesiredUser, Rendered
from tests.conftest import copy_case
from tests.test_golden import CASE_NAMES


class CountingForked(background.Forked):
    started = 0

    def __init__(self, work):
        CountingForked.started += 1
        super().__init__(work)


@pytest.fixture
def forking(monkeypatch):
    """Every plan from a source forks, and the users arrive in chunks of 3 even from a small directory."""
    monkeypatch.setattr(pipeline, "CHILD_FROM_SNAPSHOT_BYTES", 0)
    monkeypatch.setattr(pipeline, "CHUNK", 3)
    monkeypatch.setattr(pipeline.background, "Forked", CountingForked)
    CountingForked.started = 0
    return CountingForked


def plan_document(case, refresh=True) -> dict:
    doc = planfile.to_document(pipeline.make_plan(load_config(case / "adsync.yaml"), refresh_pbx=refresh).plan)
    doc["base_state"].pop("lineage")  # new at random when there is no snapshot yet
    return {k: v for k, v in doc.items() if k not in ("plan_id", "created_at", "expires_at")}


@pytest.mark.parametrize("name", CASE_NAMES)
def test_a_plan_made_with_a_child_process_equals_the_plan_made_in_one(name, tmp_path, forking, monkeypatch):
    case = copy_case(name, tmp_path)
    with monkeypatch.context() as alone:
        alone.setattr(pipeline, "CHILD_FROM_SNAPSHOT_BYTES", float("inf"))
        in_one = plan_document(case)
    assert forking.started == 0
    assert plan_document(case) == in_one  # changes, diagnostics, summary, bindings and desired_sha256 included
    assert forking.started == 2  # the directory's reader, and the fork that works ahead


def test_small_runs_stay_in_one_process(cli, demo, monkeypatch):
    monkeypatch.setattr(pipeline.background, "Forked", CountingForked)
    CountingForked.started = 0
    assert cli("refresh", "-c", demo / "adsync.yaml")[0] == 0
    assert cli("plan", "-c", demo / "adsync.yaml", "--no-refresh")[0] == 0
    assert CountingForked.started == 0


def test_plan_against_the_snapshot_with_a_child(cli, demo, forking):
    assert cli("refresh", "-c", demo / "adsync.yaml")[0] == 0
    code, out, err = cli("plan", "-c", demo / "adsync.yaml", "--no-refresh", "--detailed-exitcode")
    assert code == 2 and "Plan: " in out, err
    assert forking.started == 2


def test_a_malformed_ldif_read_by_the_child_is_one_sentence(cli, demo, forking):
    (demo / "directory.ldif").write_text("dn: CN=a\nno colon here\n")
    code, _, err = cli("plan", "-c", demo / "adsync.yaml")
    assert code == 1 and "directory.ldif:2: expected 'attribute: value'" in err and "Traceback" not in err
    assert forking.started == 1


def test_an_entry_that_fails_while_users_stream_is_one_sentence(cli, demo, forking):
    records = (demo / "directory.ldif").read_text(encoding="utf-8").split("\n\n")
    # the last user loses its objectGUID: the error comes after the first chunks were sent
    last = max(i for i, r in enumerate(records) if "objectClass: person" in r)
    records[last] = "\n".join(line for line in records[last].splitlines() if not line.startswith("objectGUID"))
    (demo / "directory.ldif").write_text("\n\n".join(records), encoding="utf-8")
    code, _, err = cli("plan", "-c", demo / "adsync.yaml")
    assert code == 1 and "has no objectGUID" in err and "Traceback" not in err


def test_the_directory_error_comes_before_the_snapshot_error(cli, demo, forking):
    (demo / "directory.ldif").write_text("objectClass: user\n")
    code, _, err = cli("plan", "-c", demo / "adsync.yaml", "--no-refresh")  # and there is no snapshot either
    assert code == 1 and "a record must start with 'dn:'" in err and "no state snapshot" not in err


def test_the_snapshot_error_when_the_directory_is_fine(cli, demo, forking):
    code, _, err = cli("plan", "-c", demo / "adsync.yaml", "--no-refresh")
    assert code == 1 and "no state snapshot" in err


def _crash():
    yield "first"
    raise ZeroDivisionError("boom")


def test_a_bug_in_the_child_shows_its_traceback():
    with background.Forked(_crash) as child:
        assert child.next() == "first"
        with pytest.raises(RuntimeError, match="ZeroDivisionError: boom"):
            child.next()


def _die():
    os._exit(3)
    yield  # pragma: no cover


def test_a_child_that_dies_is_an_error_with_its_exit_code():
    with background.Forked(_die) as child, pytest.raises(AdsyncError, match="exit code 3"):
        child.next()


def _forever():
    yield "ready"
    while True:
        yield "more"


def test_leaving_early_stops_the_child():
    with background.Forked(_forever) as child:
        assert child.next() == "ready"
        process = child._child
    assert not process.is_alive()


def _pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def test_parallel_map_computes_the_second_half_in_a_child():
    results = background.parallel_map(_pid_and_square, list(range(10)), at_least=2)
    assert [square for _, square in results] == [x * x for x in range(10)]
    assert {pid for pid, _ in results[:5]} == {os.getpid()}
    assert os.getpid() not in {pid for pid, _ in results[5:]}


def test_parallel_map_of_few_items_stays_in_one_process():
    assert {pid for pid, _ in background.parallel_map(_pid_and_square, [1, 2, 3])} == {os.getpid()}


def _fails_on_seven(x: int) -> int:
    if x == 7:
        raise PbxLikeError("seven is not allowed.")
    return x


class PbxLikeError(AdsyncError):
    pass


def test_parallel_map_raises_the_childs_error():
    with pytest.raises(PbxLikeError, match="seven"):
        background.parallel_map(_fails_on_seven, list(range(10)), at_least=2)


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="pipe sizes are Linux's")
def test_the_child_can_write_a_chunk_ahead_of_the_parent():
    """A chunk of 5,000 users pickles to about 800 KB: the pipe holds one, so neither process waits for the
    other's every hitch."""
    with background.Forked(lambda: iter([1])) as child:
        assert fcntl.fcntl(child._answers.fileno(), fcntl.F_GETPIPE_SZ) >= background.PIPE_BYTES
        assert child.next() == 1


def test_the_diff_names_fields_the_same_in_two_processes(demo):
    result = pipeline.make_plan(load_config(demo / "adsync.yaml"))
    alone, _ = diff.actions(result.decisions, result.snapshot.state)
    both, _ = diff.actions(
        result.decisions, result.snapshot.state, lambda fn, items: background.parallel_map(fn, items, at_least=2)
    )
    assert both == alone and sum(1 for a in alone if a.fields) >= 2


def _named_after_the_rules(demo, forking, monkeypatch) -> tuple[dict, list[str]]:
    """The plan (as plan_document) made with the fork that works ahead, checked equal to the plan made in one
    process; and the addresses of the changes whose fields plan named itself: those the fork did not guess."""
    with monkeypatch.context() as alone:
        alone.setattr(pipeline, "CHILD_FROM_SNAPSHOT_BYTES", float("inf"))
        in_one = plan_document(demo, refresh=False)
    forking.started, named = 0, []
    with monkeypatch.context() as counting:
        counting.setattr(
            diff, "changed_fields_of", lambda a: named.append(a.address) or diff.changed_fields(a.before, a.after)
        )
        assert plan_document(demo, refresh=False) == in_one
    assert forking.started == 2  # the directory's reader, and the fork that works ahead
    return in_one, named


def _changes(doc: dict) -> dict:
    return {c["address"]: (c["action"], c.get("fields")) for c in doc["changes"]}  # a create has no fields


def test_on_first_contact_the_orphans_are_guessed_and_the_users_matched_by_e_mail_named_after(
    cli, demo, forking, monkeypatch
):
    """No binding yet (ownership: all): a PBX user that no user in scope has the e-mail address of likely
    becomes an orphan; the users taken by e-mail are found only by the PBX rules."""
    assert cli("refresh", "-c", demo / "adsync.yaml")[0] == 0
    plan, named = _named_after_the_rules(demo, forking, monkeypatch)
    changes = _changes(plan)
    assert changes["pbx_user.67"] == ("orphan", ["external_numbers", "last_name"])
    assert sorted(named) == sorted(a for a, (action, _) in changes.items() if action == "update")
    assert len(named) == 2


def test_fields_guessed_ahead_give_the_plan_made_in_one_process(cli, demo, forking, monkeypatch):
    """After an apply every user is bound, and the fork guesses most changes right: a renamed user (update),
    a user gone (orphan). Two guesses are wrong and named again: a user whose directory entry was made anew
    (new objectGUID: its PBX user is taken by e-mail and updated, not orphaned), and a user the PBX rules hold
    (a number of another user's: no change at all)."""
    config = demo / "adsync.yaml"
    assert cli("plan", "-c", config, "-o", demo / "p.plan.json")[0] == 0
    assert cli("apply", "-c", config, demo / "p.plan.json")[0] == 0
    records = (demo / "directory.ldif").read_text(encoding="utf-8").split("\n\n")
    records = [r for r in records if "sAMAccountName: jkoehler\n" not in r]  # gone
    edits = [  # (account, old, new)
        ("eschulz", "sn: Schulz\n", "sn: Schultz\n"),  # renamed
        ("lschaefer", "objectGUID:: ", "objectGUID:: AAAAAAAAAAAAAAAAAAAAAA==\ndescription:: "),  # made anew
        ("lschaefer", "givenName: Lena\n", "givenName: Lena Marie\n"),  # and renamed
        (
            "fhoffmann",
            "telephoneNumber: +49 7022 27978-26\n",
            "telephoneNumber: +49 7022 27978-26\notherTelephone: 21\n",
        ),
    ]
    for account, old, new in edits:
        [n] = [n for n, r in enumerate(records) if f"sAMAccountName: {account}\n" in r]
        assert old in records[n]
        records[n] = records[n].replace(old, new, 1)
    (demo / "directory.ldif").write_text("\n\n".join(records), encoding="utf-8")
    plan, named = _named_after_the_rules(demo, forking, monkeypatch)
    assert _changes(plan) == {
        "pbx_user.28": ("orphan", ["external_numbers", "last_name"]),  # jkoehler: guessed
        "user.eschulz": ("update", ["last_name"]),  # guessed
        "user.lschaefer": ("update", ["first_name"]),  # guessed an orphan (her binding's source id is gone)
    }
    assert named == ["user.lschaefer"]  # the only change named after the PBX rules
    assert any(d["address"] == "user.fhoffmann" and d["code"] == "NUMBER_CONFLICT" for d in plan["diagnostics"])


def test_when_nearly_every_user_changes_the_fork_names_only_what_takes_as_long_as_reconciling():
    """1,500 bound users whose last name changed: the fork names 1,000 (its floor; one for every ten users in
    scope at scale) and leaves the other 500 to `actions`, which names them in two processes."""

    def shape(n: int, last: str) -> PhoneUser:
        return PhoneUser(str(n), "Max", last, f"u{n}@example.com", "user", str(n), (str(n),))

    desired = {f"u{n}": DesiredUser(f"u{n}", f"sid{n}", f"CN=u{n}", shape(n, "Neu")) for n in range(100, 1600)}
    state = PbxState(users={str(n): shape(n, "Alt") for n in range(100, 1600)}, admins=frozenset(), numbers={})
    bindings = {f"sid{n}": str(n) for n in range(100, 1600)}
    likely = diff.likely_fields(Rendered(desired, []), state, bindings, everyone=True)
    assert len(likely) == 1000
    assert all(
        fields == ("last_name",) and after == desired[f"u{pbx_id}"].user for pbx_id, (after, fields) in likely.items()
    )
