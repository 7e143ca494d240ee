"""Fax numbers as the vendor's AD module assigns them (Software Fax2Mail, else Software Fax), service changes
in place, the primary number written as a whole configuration, administrators as a set of permissions."""

from __future__ import annotations

import pytest

from adsync_plan.errors import PbxError
from adsync_plan.model import Action, PhoneUser
from adsync_plan.steps import plan_steps
from tests.servers.starface import PASSWORD_ENV, StarfaceServer, provider_for


@pytest.fixture
def srv(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, StarfaceServer().password)
    with StarfaceServer() as server:
        server.add_user("30", "Jane", "Doe", "jane@example.com", user_id=17)
        for n in ("30", "31"):
            server.add_internal(n)
        server.add_external("+4970222797830")
        server.add_external("+4970222797899")
        yield server
        assert server.errors == []
        server.check_consistency()


def test_a_fax_number_gets_software_fax2mail_when_the_pbx_has_it(srv, tmp_path):
    with provider_for(srv, tmp_path) as prov:
        prov.read()
        prov.assign_number("17", "+4970222797899", "fax")
    assert srv.owner("+4970222797899") == (17, 4)  # 4: Software Fax2Mail


def test_without_fax2mail_a_fax_number_gets_software_fax(srv, tmp_path):
    del srv.data.services[4]
    with provider_for(srv, tmp_path) as prov:
        prov.read()
        prov.assign_number("17", "+4970222797899", "fax")
    assert srv.owner("+4970222797899") == (17, 3)


@pytest.mark.parametrize("configured", [3, "Software Fax", "software_fax"])
def test_the_fax_service_can_be_named_or_given_by_id(srv, tmp_path, configured):
    with provider_for(srv, tmp_path, call_services={"fax": configured}) as prov:
        prov.read()
        prov.assign_number("17", "+4970222797899", "fax")
    assert srv.owner("+4970222797899") == (17, 3)


def test_an_unknown_service_id_is_one_sentence_with_what_the_pbx_has(srv, tmp_path):
    with provider_for(srv, tmp_path, call_services={"fax": 42}) as prov, pytest.raises(PbxError) as err:
        prov.read()
        prov.assign_number("17", "+4970222797899", "fax")
    assert "has no call service 42 (it has: 1 standard_call, 2 conference_room, 3 software_fax, 4 fax2mail)" in str(
        err.value
    )
    assert "set pbx.call_services.fax" in str(err.value)


def test_a_service_change_is_one_request_in_place_never_a_release(srv, tmp_path):
    srv.assign(17, srv.number_id("+4970222797899"))  # a standard number that the plan makes a fax number
    before = PhoneUser("30", "Jane", "Doe", "jane@example.com", external_numbers=("+4970222797899",))
    after = before.changed(external_numbers=(), fax_numbers=("+4970222797899",))
    steps = plan_steps((Action("user.jane", "update", "17", before, after, ("fax_numbers",)),))
    assert [s.kind for s in steps] == ["service"]
    with provider_for(srv, tmp_path) as prov:
        prov.read()
        srv.reset_counts()
        prov.change_service("17", "+4970222797899", "fax")
        assert srv.counts == {"PUT /users/{id}/phonenumberconfig/phonenumbers": 1}
    assert srv.owner("+4970222797899") == (17, 4)


def test_the_primary_number_is_written_back_whole_and_never_as_null(srv, tmp_path):
    for n in ("30", "31", "+4970222797830"):
        srv.assign(17, srv.number_id(n))
    srv.set_primary(17, srv.number_id("30"))
    with provider_for(srv, tmp_path) as prov:
        prov.read()
        srv.reset_counts()
        prov.set_primary_internal_number("17", "31")
        assert srv.counts == {"GET /users/{id}/phonenumberconfig": 1, "PUT /users/{id}/phonenumberconfig": 1}
        body = srv.pnc_bodies[-1]
        assert body["primaryInternalNumberId"] == srv.number_id("31")
        assert body["primaryExternalNumberId"] == srv.number_id("+4970222797830")
        assert len(body["possibleSignalnumbers"]) == 3 and None not in body.values()
        prov.release_number("17", "31")  # the PBX drops the primary with its number
        prov.set_primary_internal_number("17", None)  # nothing left to clear: no write, no null
    assert len(srv.pnc_bodies) == 1 and 17 not in srv.data.primary


def test_administrators_are_a_set_of_permissions(srv, tmp_path):
    other = srv.add_user("40", "Bea", "Boss", "bea@example.com", user_id=18)
    srv.grant(other, "admin_user_perm")  # holds one of the set: an administrator, so protected
    srv.grant(17, "login_perm")
    with provider_for(srv, tmp_path, admin_permissions=["admin_perm", 25]) as prov:
        state = prov.read()
        assert state.users["18"].role == "admin" and state.users["17"].role == "user"
        prov.set_admin("17", True)
        assert {p["id"] for p in srv.data.permissions.values() if 17 in srv.data.grants[p["id"]]} == {1, 11, 25}
        assert prov.read_user("17", ["role"]) == {"role": "admin"}
        prov.set_admin("17", False)
        assert {p["id"] for p in srv.data.permissions.values() if 17 in srv.data.grants[p["id"]]} == {1}


def test_an_unknown_admin_permission_is_one_sentence(srv, tmp_path):
    with (
        provider_for(srv, tmp_path, admin_permissions=["admin_perm", "superuser"]) as prov,
        pytest.raises(PbxError) as err,
    ):
        prov.read()
    assert "has no permission 'superuser' (it has: 1 login_perm, 3 callman_perm" in str(err.value)
    assert "set pbx.admin_permissions in the configuration" in str(err.value)
