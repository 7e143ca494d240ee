"""A refresh costs the same number of requests for 1,000 users as for 5,000: bulk reads only."""

from __future__ import annotations

import pytest

from tests.servers.starface import PASSWORD_ENV, StarfaceServer, provider_for, seed_scale


def refresh_counts(count: int, tmp_path, monkeypatch) -> tuple[int, dict]:
    with StarfaceServer() as srv:
        seed_scale(srv, count)
        monkeypatch.setenv(PASSWORD_ENV, srv.password)
        with provider_for(srv, tmp_path) as prov:
            state = prov.read()
            counts = dict(srv.counts)
        assert len(state.users) == count
        assert sum(1 for u in state.users.values() if u.primary_internal_number and u.external_numbers) == count
        assert len(state.admins) == len(range(0, count, 500))
        return len(state.users), counts


@pytest.mark.parametrize("count", [1000, 5000])
def test_refresh_needs_a_fixed_number_of_requests(count, tmp_path, monkeypatch):
    _, counts = refresh_counts(count, tmp_path, monkeypatch)
    assert counts == {
        "GET /login": 1,
        "POST /login": 1,
        "GET /users": 1,
        "GET /phonenumbers": 1,
        "GET /accounts": 1,
        "GET /callservices": 1,
        "GET /permissions": 1,
        "GET /permissions/{id}/users": 1,
        "GET /groups": 1,  # no groups, so no GET /groups/{id} (tests/test_starface_groups.py counts those)
    }
