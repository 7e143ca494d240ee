"""Faults between the provider and a STARFACE: retries of reads, no blind retry of writes, and an apply
interrupted at every single request that converges on the next run with no duplicate user and no lost number.

`converge` below is a deliberately small stand-in for the core's apply (SPEC 8 order: removals, then creates
and field updates, then new assignments and primary numbers), so that the provider's behaviour under faults
is tested on its own; the core's golden cases exercise the real pipeline.
"""

from __future__ import annotations

import pytest

from adsync_plan.errors import PbxError
from adsync_plan.model import PhoneUser
from tests.servers.starface import PASSWORD_ENV, StarfaceServer, provider_for


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, StarfaceServer().password)


def seed(srv: StarfaceServer) -> None:
    ids = {n: srv.add_internal(n) for n in ("30", "31", "32", "35")}
    for e164 in ("+4970222797830", "+4970222797850", "+4970222797899"):
        ids[e164] = srv.add_external(e164)
    jane = srv.add_user("30", "Jane", "Doe", "jane@example.com", user_id=17)
    for n in ("30", "31", "+4970222797830"):
        srv.assign(jane, ids[n])
    srv.assign(jane, ids["+4970222797899"], "fax")
    srv.set_primary(jane, ids["30"])
    old = srv.add_user("35", "Otto", "Old", "otto@example.com", user_id=19)
    srv.assign(old, ids["35"])
    srv.assign(old, ids["+4970222797850"])
    srv.set_primary(old, ids["35"])


DESIRED = {
    "30": PhoneUser(
        "30",
        "Jane",
        "Doe-Smith",
        "jane@example.com",
        "user",
        "30",
        ("30",),
        ("+4970222797830",),
        ("+4970222797899",),
    ),
    "32": PhoneUser("32", "Max", "Muster", "max@example.com", "admin", "32", ("32",), ("+4970222797850",), ()),
}
ORPHAN = PhoneUser("35", "Otto", "-Old", "otto@example.com", "user", "35", ("35",), (), ())


def converge(prov) -> None:
    """Make the PBX match DESIRED (by login ID) and orphan every other user, in the SPEC 8 order."""
    state = prov.read()
    by_login = {u.login_id: uid for uid, u in state.users.items()}
    wanted = {uid: DESIRED.get(u.login_id) or orphaned(u) for uid, u in state.users.items()}
    for uid, want in wanted.items():  # first every removal of a number assignment
        have = state.users[uid]
        for number in sorted(have.numbers() - want.numbers()):
            if number != want.primary_internal_number:
                prov.release_number(uid, number)
    for login, want in DESIRED.items():  # then creates and field updates
        uid = by_login.get(login) or prov.create_user(want)
        have = state.users.get(uid)
        changes = {
            f: getattr(want, f)
            for f in ("first_name", "last_name", "email")
            if have and getattr(have, f) != getattr(want, f)
        }
        if changes:
            prov.update_user(uid, changes)
        wanted[uid] = want
        if (have.role if have else "user") != want.role:
            prov.set_admin(uid, want.role == "admin")
    for uid, want in wanted.items():
        if want not in DESIRED.values() and state.users[uid].last_name != want.last_name:
            prov.update_user(uid, {"last_name": want.last_name})
    for uid, want in wanted.items():  # then new assignments and primary numbers
        have = state.users.get(uid)
        owned = have.numbers() if have else set()
        for number in sorted(want.numbers() - owned):
            prov.assign_number(uid, number, "fax" if number in want.fax_numbers else "standard")
        if (have.primary_internal_number if have else None) != want.primary_internal_number:
            prov.set_primary_internal_number(uid, want.primary_internal_number)


def orphaned(user: PhoneUser) -> PhoneUser:
    last = user.last_name if user.last_name.startswith("-") else "-" + user.last_name
    keep = (user.primary_internal_number,) if user.primary_internal_number else ()
    return PhoneUser(user.login_id, user.first_name, last, user.email, user.role, user.primary_internal_number, keep)


def final_state_is_right(srv: StarfaceServer, tmp_path) -> None:
    srv.check_consistency()
    assert srv.errors == []
    assert "DELETE /users/{id}" not in srv.counts
    assert all(len(srv.user_ids_by_login(login)) == 1 for login in ("30", "32", "35")), "a duplicate user"
    with provider_for(srv, tmp_path) as prov:
        state = prov.read()
    shapes = {u.login_id: u for u in state.users.values()}
    assert shapes == {**DESIRED, "35": ORPHAN}
    free = {n for n, info in state.numbers.items() if info.owner is None}
    assert free == {"31"}  # every other number is where it belongs: none lost


def test_converge_without_faults_and_count_its_requests(tmp_path, env):
    with StarfaceServer() as srv:
        seed(srv)
        with provider_for(srv, tmp_path) as prov:
            converge(prov)
        final_state_is_right(srv, tmp_path)
        srv.reset_counts()
        with provider_for(srv, tmp_path) as prov:
            converge(prov)  # a second run finds nothing to do: reads only
        assert all(key.startswith("GET ") or key.endswith(" /login") for key in srv.counts), srv.counts


def clean_run_requests(tmp_path) -> tuple[int, int]:
    """(all requests, writes) of an uninterrupted run."""
    with StarfaceServer() as srv:
        seed(srv)
        with provider_for(srv, tmp_path) as prov:
            converge(prov)
        writes = sum(c for key, c in srv.counts.items() if not key.startswith("GET ") and not key.endswith("/login"))
        return srv.total_requests, writes


@pytest.mark.parametrize("kind, after", [("500", False), ("drop", False), ("500", True), ("drop", True)])
def test_a_fault_at_every_request_then_a_rerun_converges(tmp_path, env, kind, after):
    steps, writes = clean_run_requests(tmp_path)
    assert writes == 9  # two releases, a create, two updates, admin, two assignments, a primary number
    failures = 0
    for k in range(1, steps + 1):
        with StarfaceServer() as srv:
            seed(srv)
            srv.fail(k, kind, after=after)
            try:
                with provider_for(srv, tmp_path, retries=2) as prov:
                    converge(prov)
            except PbxError as err:
                failures += 1
                assert "\n" not in str(err) and srv.password not in str(err)
            with provider_for(srv, tmp_path) as prov:
                converge(prov)  # the next run after the interrupted one
            final_state_is_right(srv, tmp_path)
            assert len(srv.user_ids_by_login("32")) == 1
    # A fault on a read is retried; on a write it stops the run, except a create that took effect (found).
    assert failures == writes - (1 if after else 0)


def test_reads_are_retried_on_500_and_dropped_connections(tmp_path, env):
    with StarfaceServer() as srv:
        seed(srv)
        srv.fail(1, "500", "GET", "/users")
        srv.fail(1, "drop", "GET", "/phonenumbers")
        with provider_for(srv, tmp_path) as prov:
            state = prov.read()
        assert len(state.users) == 2
        assert srv.counts["GET /users"] == 2 and srv.counts["GET /phonenumbers"] == 2


def test_reads_give_up_after_the_configured_retries(tmp_path, env):
    with StarfaceServer() as srv:
        for k in (1, 2, 3):
            srv.fail(k, "500", "GET", "/users")
        with provider_for(srv, tmp_path, retries=2) as prov, pytest.raises(PbxError) as err:
            prov.read()
        assert "answered GET /rest/users with HTTP 500" in str(err.value) and "3 times" in str(err.value)
        assert srv.counts["GET /users"] == 3


def test_reads_give_up_on_dropped_connections_with_a_sentence(tmp_path, env):
    with StarfaceServer() as srv:
        for k in (1, 2):
            srv.fail(k, "drop", "GET", "/phonenumbers")
        with provider_for(srv, tmp_path, retries=1) as prov, pytest.raises(PbxError) as err:
            prov.read()
        assert str(err.value) == (
            f"The STARFACE PBX at {srv.url} did not answer GET /rest/phonenumbers (the connection was closed "
            "without an answer) after 2 attempts; try again later or check the PBX."
        )


def test_a_body_that_is_not_json(tmp_path, env):
    with StarfaceServer() as srv:
        srv.fail(1, "garbage", "GET", "/accounts")
        with provider_for(srv, tmp_path) as prov, pytest.raises(PbxError) as err:
            prov.read()
        assert "answered GET /rest/accounts with something that is not JSON" in str(err.value)
        assert "Bad Gateway" in str(err.value)


def short_timeout_for_the_first(prov, method: str, path: str) -> None:
    """pbx.timeout (short) only for the first `method path` request; every other request of the provider
    (login, the other reads, the retry) gets a long one, so a loaded machine cannot make them time out."""
    session, left = prov._open(), [1]
    send = session.request

    def request(verb, url, **kwargs):
        if verb == method and url.endswith("/rest" + path) and left[0]:
            left[0] -= 1
        else:
            kwargs["timeout"] = 60
        return send(verb, url, **kwargs)

    session.request = request


def test_a_slow_answer_times_out_then_is_retried(tmp_path, env):
    with StarfaceServer() as srv:
        srv.fail(1, "slow", "GET", "/users", delay=1.5)
        with provider_for(srv, tmp_path, timeout=0.3, retries=0) as prov, pytest.raises(PbxError) as err:
            short_timeout_for_the_first(prov, "GET", "/users")
            prov.read()
        assert "no answer within 0.3 s (pbx.timeout)" in str(err.value)
        srv.fail(1, "slow", "GET", "/users", delay=1.5)
        with provider_for(srv, tmp_path, timeout=0.3, retries=1) as prov:
            short_timeout_for_the_first(prov, "GET", "/users")
            assert prov.read().users == {}


@pytest.mark.parametrize("kind", ["500", "drop"])
def test_writes_are_never_retried(tmp_path, env, kind):
    with StarfaceServer() as srv:
        seed(srv)
        srv.fail(1, kind, "POST", "/users/{id}/phonenumberconfig/phonenumbers")
        with provider_for(srv, tmp_path) as prov:
            prov.read()
            with pytest.raises(PbxError) as err:
                prov.assign_number("17", "32", "standard")
        assert "did not confirm that it could assign the number 32 (standard) to user 17" in str(err.value)
        assert srv.counts["POST /users/{id}/phonenumberconfig/phonenumbers"] == 1
        assert srv.owner("32") == (None, None)


def test_a_create_whose_answer_is_lost_is_found_not_repeated(tmp_path, env):
    with StarfaceServer() as srv:
        srv.fail(1, "drop", "POST", "/users", after=True)  # created, but the answer never arrives
        with provider_for(srv, tmp_path) as prov:
            uid = prov.create_user(DESIRED["32"])
        assert srv.user_ids_by_login("32") == [int(uid)]
        assert srv.counts["POST /users"] == 1


def test_a_create_that_failed_is_reported_not_repeated(tmp_path, env):
    with StarfaceServer() as srv:
        srv.fail(1, "drop", "POST", "/users")  # dropped before the PBX saw it
        with provider_for(srv, tmp_path) as prov, pytest.raises(PbxError) as err:
            prov.create_user(DESIRED["32"])
        assert "did not confirm the creation of the new user Max Muster (login ID 32)" in str(err.value)
        assert "nothing was created" in str(err.value)
        assert srv.user_ids_by_login("32") == [] and srv.counts["POST /users"] == 1


def test_a_lost_create_whose_login_belongs_to_someone_else(tmp_path, env):
    with StarfaceServer() as srv:
        srv.add_user("32", "Eve", "Other", "eve@example.com")
        srv.fail(1, "500", "POST", "/users")
        with provider_for(srv, tmp_path) as prov, pytest.raises(PbxError) as err:
            prov.create_user(DESIRED["32"])
        assert "another e-mail address" in str(err.value)
        assert len(srv.user_ids_by_login("32")) == 1
