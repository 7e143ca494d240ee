"""The STARFACE provider against a local STARFACE REST server: login, refresh, every write, every refusal."""

from __future__ import annotations

import ssl

import pytest
import requests
import trustme

from adsync_plan.errors import PbxError
from adsync_plan.model import PbxNumber, PhoneUser
from adsync_plan.providers import make_provider
from adsync_plan.providers.starface import StarfaceProvider, e164
from tests.servers.starface import PASSWORD_ENV, StarfaceServer, provider_for


@pytest.fixture
def server():
    with StarfaceServer() as srv:
        yield srv
        assert srv.errors == []  # no bug inside the emulator went unnoticed
        assert "DELETE /users/{id}" not in srv.counts  # nothing ever deletes a user
        srv.check_consistency()


@pytest.fixture
def provider(server, tmp_path, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, server.password)
    with provider_for(server, tmp_path) as prov:
        yield prov


def seed_office(srv: StarfaceServer) -> dict:
    """Two users (one an administrator), a fax number, a group, a module and a conference service."""
    ids = {n: srv.add_internal(n) for n in ("30", "31", "32", "40", "50", "60", "70")}
    ids["+4970222797830"] = srv.add_external("+4970222797830")
    ids["+4970222797899"] = srv.add_external("+4970222797899")
    ids["+4970222797850"] = srv.add_external("+4970222797850", block_id=2)
    srv.add_number_of_type("9999", "RESERVED")
    jane = srv.add_user("30", "Jane", "Doe", "jane@example.com", user_id=17, language="de", faxHeader="Sales")
    srv.assign(jane, ids["30"])
    srv.assign(jane, ids["31"])
    srv.set_primary(jane, ids["30"])
    srv.assign(jane, ids["+4970222797830"])
    srv.assign(jane, ids["+4970222797899"], "fax")
    boss = srv.add_user("40", "Bea", "Boss", "bea@example.com", user_id=18)
    srv.assign(boss, ids["40"])
    srv.set_primary(boss, ids["40"])
    srv.grant(boss)
    srv.grant(jane, "login_perm")
    ids["group"] = srv.add_group("Support", (ids["50"],))
    srv.give_to_module(ids["60"], "ivr-1")
    srv.give_to_service(ids["70"], 2)
    return ids


def test_describe_names_type_and_url(server, tmp_path):
    prov = make_provider(
        {"type": "starface", "url": server.url + "/", "login_id": "0001", "password_env": PASSWORD_ENV},
        tmp_path,
        None,
    )
    assert isinstance(prov, StarfaceProvider)
    assert prov.describe() == {"type": "starface", "url": server.url}
    assert server.total_requests == 0  # describing makes no request and needs no password


def test_login_uses_nonce_token_and_logs_out(server, provider):
    provider.read()
    assert server.counts["GET /login"] == 1 and server.counts["POST /login"] == 1
    assert len(server.tokens) == 1 and server.nonces == set()  # the nonce was used up
    provider.close()
    assert server.counts["DELETE /login"] == 1
    assert server.tokens == {}  # logged out: the token is invalid now


def test_every_request_carries_token_and_version(server, provider):
    seen = []
    original = requests.Session.request

    def spy(self, method, url, **kw):
        seen.append((method, url, dict(self.headers) | kw.get("headers", {})))
        return original(self, method, url, **kw)

    requests.Session.request = spy
    try:
        provider.read()
    finally:
        requests.Session.request = original
    assert all(h.get("X-Version") == "2" for _, _, h in seen)
    assert all("authToken" in h for _, url, h in seen if not url.endswith("/rest/login"))


# Known answers for the login secret, computed outside the project's code from the vendor's formula
# (shared/reference/starface-rest-api-notes.md, step 2) with the nonce of the vendor's example, in bash
# (LC_ALL=C.UTF-8, so the password's bytes are UTF-8):
#   inner=$(printf '%s' "$PASSWORD" | sha512sum | cut -d' ' -f1)
#   printf '%s' "0001pds24hmip1ctbogn1l8ujvs5u4$inner" | sha512sum        # Internal: "0001:" + this
#   printf '%s' "0001pds24hmip1ctbogn1l8ujvs5u4$PASSWORD" | base64 -w0   # ActiveDirectory
VENDOR_NONCE = "pds24hmip1ctbogn1l8ujvs5u4"
KNOWN_SECRETS = [
    (
        "Internal",
        "secret1234!",
        "0001:d655ce8a88d642abd9633787daf84d7bd6577df4599661751e7cfd99b0be572d"
        "7f6eb879dbc346a297b03041947ea60d47adbf150c299339467580c7587f4896",
    ),
    (
        "Internal",
        "Pässwort-ß€",
        "0001:3f9ed37874fa739937499b08878a7b20cd75ccb5075862b4581c18b176c94f18"
        "4d22e206b6f8f48a80a9400e475880f4a4293ed20af6212a21366efad6de2d8c",
    ),
    ("ActiveDirectory", "secret1234!", "MDAwMXBkczI0aG1pcDFjdGJvZ24xbDh1anZzNXU0c2VjcmV0MTIzNCE="),
    ("ActiveDirectory", "Pässwort-ß€", "MDAwMXBkczI0aG1pcDFjdGJvZ24xbDh1anZzNXU0UMOkc3N3b3J0LcOf4oKs"),
]


@pytest.mark.parametrize(("login_type", "password", "expected"), KNOWN_SECRETS)
def test_the_login_secret_of_the_provider_and_of_the_test_server_match_known_answers(login_type, password, expected):
    from adsync_plan.providers.starface import login_secret
    from tests.servers.starface import _secret as server_secret

    assert login_secret(login_type, "0001", VENDOR_NONCE, password) == expected
    assert server_secret(login_type, "0001", password, VENDOR_NONCE) == expected


def test_nonce_is_single_use_and_token_required(server):
    """Spoken to by hand, with the server's own secret (not the provider's): the nonce works once."""
    from tests.servers.starface import _secret as server_secret

    template = requests.get(server.url + "/rest/login", timeout=5).json()
    body = {**template, "secret": server_secret("Internal", server.login, server.password, template["nonce"])}
    assert requests.post(server.url + "/rest/login", json=body, timeout=5).status_code == 200
    again = requests.post(server.url + "/rest/login", json=body, timeout=5)
    assert again.status_code == 400
    assert requests.get(server.url + "/rest/users", timeout=5).status_code == 401


def test_relogin_after_token_expiry(server, provider):
    provider.read()
    server.advance_clock(4 * 3600 + 1)  # the 4-hour token lifetime has passed
    state = provider.read()
    assert state.users == {}
    assert server.counts["POST /login"] == 2
    assert server.counts["GET /users"] == 3  # the 401, then the same request again after the new login


def test_active_directory_login_type_over_https(tmp_path, monkeypatch):
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "pbx-ca.pem"))
    with StarfaceServer(login_type="ActiveDirectory", tls=context) as srv:
        monkeypatch.setenv(PASSWORD_ENV, srv.password)
        with provider_for(srv, tmp_path, ca_file="pbx-ca.pem") as prov:
            assert prov.read().users == {}
        assert srv.counts["POST /login"] == 1


def test_active_directory_login_is_never_sent_over_plain_http(tmp_path, monkeypatch):
    with StarfaceServer(login_type="ActiveDirectory") as srv:
        monkeypatch.setenv(PASSWORD_ENV, srv.password)
        with provider_for(srv, tmp_path) as prov, pytest.raises(PbxError, match="https://"):
            prov.read()
        assert srv.counts["POST /login"] == 0  # the base64 password never left


def test_read_builds_the_snapshot_shapes(server, provider):
    seed_office(server)
    state = provider.read()
    assert state.users["17"] == PhoneUser(
        login_id="30",
        first_name="Jane",
        last_name="Doe",
        email="jane@example.com",
        role="user",
        primary_internal_number="30",
        internal_numbers=("30", "31"),
        external_numbers=("+4970222797830",),
        fax_numbers=("+4970222797899",),
    )
    assert state.users["18"].role == "admin" and state.admins == frozenset({"18"})
    assert state.numbers["+4970222797899"] == PbxNumber("external", "17", "fax")
    assert state.numbers["31"] == PbxNumber("internal", "17", "standard")
    assert state.numbers["+4970222797850"] == PbxNumber("external", None, None)
    assert state.numbers["32"] == PbxNumber("internal", None, None)
    group = [k for k, v in server.data.groups.items()][0]
    assert state.numbers["50"].owner == f"group:{group}"
    assert state.numbers["60"] == PbxNumber("internal", "module:ivr-1", "standard")
    assert state.numbers["70"] == PbxNumber("internal", "service:2", "standard")
    assert "9999" not in state.numbers  # a RESERVED number is not assignable to users


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"nationalPrefix": "49", "localPrefix": "07022", "number": "2797830"}, "+4970222797830"),
        ({"nationalPrefix": "+49", "localPrefix": "7022", "number": "27978-30"}, "+4970222797830"),
        ({"nationalPrefix": "0049", "localPrefix": "(0)7022", "number": "2797830"}, "+4970222797830"),
        ({"nationalPrefix": "49", "localPrefix": "721", "number": "+4970222797830"}, "+4970222797830"),
    ],
)
def test_external_numbers_become_e164(fields, expected):
    assert e164({"type": "EXTERNAL", "exitCode": "00", **fields}) == expected


def test_create_user_finds_the_new_id(server, provider):
    seed_office(server)
    provider.read()
    server.reset_counts()
    uid = provider.create_user(PhoneUser("32", "Max", "Muster", "max@example.com"))
    assert server.user_ids_by_login("32") == [int(uid)]
    user = server.data.users[int(uid)]
    assert (user["firstName"], user["familyName"], user["email"]) == ("Max", "Muster", "max@example.com")
    assert len(server.data.passwords[int(uid)]) >= 8  # an initial password nobody knows
    assert server.counts == {"POST /users": 1, "GET /users": 1}  # the create and one search for its id


def test_update_user_sends_the_full_user_and_keeps_other_fields(server, provider):
    seed_office(server)
    server.data.passwords[17] = "jane-secret-1"
    provider.read()
    provider.update_user("17", {"last_name": "Doe-Smith", "email": "jane.smith@example.com", "login_id": "31"})
    user = server.data.users[17]
    assert (user["familyName"], user["email"], user["login"]) == ("Doe-Smith", "jane.smith@example.com", "31")
    assert (user["language"], user["faxHeader"], user["firstName"]) == ("de", "Sales", "Jane")
    assert server.data.passwords[17] == "jane-secret-1"  # the password was not touched
    assert server.counts["PUT /users/{id}"] == 1


def test_set_admin_grants_and_revokes_only_that_permission(server, provider):
    seed_office(server)
    provider.read()
    provider.set_admin("17", True)
    assert 17 in server.admins()
    provider.set_admin("17", False)
    assert 17 not in server.admins() and 18 in server.admins()
    login_perm = 1
    assert 17 in server.data.grants[login_perm]  # the user's other permissions stay


def test_admin_permission_by_configured_name(server, tmp_path, monkeypatch):
    server.data.permissions[11]["permission"] = "Administrator-Rechte"
    monkeypatch.setenv(PASSWORD_ENV, server.password)
    with provider_for(server, tmp_path) as prov, pytest.raises(PbxError) as err:
        prov.read()
    assert "pbx.admin_permission" in str(err.value) and "Administrator-Rechte" in str(err.value)
    with provider_for(server, tmp_path, admin_permission="administrator-rechte") as prov:
        prov.read()
        uid = server.add_user("33", "A", "B", "ab@example.com")
        prov.set_admin(str(uid), True)
    assert uid in server.data.grants[11]


def test_assign_with_fax_and_standard_services(server, provider):
    ids = seed_office(server)
    provider.read()
    uid = server.add_user("32", "Max", "Muster", "max@example.com")
    provider.assign_number(str(uid), "32", "standard")
    provider.assign_number(str(uid), "+4970222797850", "fax")
    assert server.owner("32") == (uid, 1)  # standard_call
    assert server.owner("+4970222797850") == (uid, 4)  # Software Fax2Mail, as the vendor's AD module
    assert server.data.numbers[ids["+4970222797850"]]["assignedUserAccountId"] == uid
    state = provider.read()
    assert state.users[str(uid)].fax_numbers == ("+4970222797850",)


def test_call_services_by_configured_name(server, tmp_path, monkeypatch):
    seed_office(server)
    monkeypatch.setenv(PASSWORD_ENV, server.password)
    with provider_for(server, tmp_path, call_services={"fax": "Software Fax2Mail"}) as prov:
        prov.read()
        prov.assign_number("18", "+4970222797850", "fax")
    assert server.owner("+4970222797850") == (18, 4)


def test_release_number_and_primary(server, provider):
    seed_office(server)
    provider.read()
    provider.set_primary_internal_number("17", "31")
    assert server.data.primary[17] == server.number_id("31")
    provider.release_number("17", "+4970222797899")
    provider.release_number("17", "30")
    state = provider.read()
    assert state.users["17"].primary_internal_number == "31"
    assert state.users["17"].fax_numbers == () and state.users["17"].internal_numbers == ("31",)
    assert state.numbers["+4970222797899"] == PbxNumber("external", None, None)


@pytest.mark.parametrize(
    "call, words",
    [
        (
            lambda p: p.create_user(PhoneUser("30", "X", "Y", "x@example.com")),
            ["login ID 30", "already in use"],
        ),
        (lambda p: p.create_user(PhoneUser("3a", "X", "Y", "x@example.com")), ["login ID 3a", "digits"]),
        (
            lambda p: p.assign_number("18", "31", "standard"),
            ["31", "user 18", "login ID 40", "already assigned"],
        ),
        (lambda p: p.assign_number("18", "50", "standard"), ["50", "already assigned"]),
        (lambda p: p.release_number("18", "31"), ["remove the number 31", "user 18", "not assigned"]),
        (lambda p: p.set_primary_internal_number("18", "31"), ["primary internal number", "user 18"]),
        (
            lambda p: p.update_user("18", {"login_id": "30"}),
            ["change the login ID", "user 18", "already in use"],
        ),
        (lambda p: p.update_user("99", {"last_name": "Z"}), ["user 99", "no longer has"]),
        (lambda p: p.set_admin("99", True), ["administrator permission", "user 99", "not found"]),
    ],
)
def test_every_refusal_is_one_sentence_naming_the_user(server, provider, call, words):
    seed_office(server)
    provider.read()
    before = (dict(server.data.users), {k: dict(v) for k, v in server.data.numbers.items()})
    with pytest.raises(PbxError) as err:
        call(provider)
    message = str(err.value)
    assert all(w in message for w in words), message
    assert "\n" not in message and message.endswith(".")
    assert before == (dict(server.data.users), {k: dict(v) for k, v in server.data.numbers.items()})


def test_licence_count_refused(tmp_path, monkeypatch):
    with StarfaceServer(licenses=1) as srv:
        srv.add_user("30", "Jane", "Doe", "jane@example.com")
        monkeypatch.setenv(PASSWORD_ENV, srv.password)
        with provider_for(srv, tmp_path) as prov, pytest.raises(PbxError) as err:
            prov.create_user(PhoneUser("31", "Max", "Muster", "max@example.com"))
        assert "refused to create the new user Max Muster (login ID 31)" in str(err.value)
        assert "licence" in str(err.value)
        assert len(srv.data.users) == 1


def test_number_outside_the_inventory_is_refused_without_a_request(server, provider):
    seed_office(server)
    provider.read()
    server.reset_counts()
    with pytest.raises(PbxError, match=r"\+4930123456 is not in the inventory"):
        provider.assign_number("17", "+4930123456", "standard")
    assert server.total_requests == 0


def test_server_enforces_short_passwords_and_unknown_numbers(server, provider):
    """The emulator refuses what a PBX refuses, also for requests the provider never makes."""
    seed_office(server)
    provider.read()
    session = provider._open()
    headers = provider._auth.headers()
    user = {"login": "77", "firstName": "A", "familyName": "B", "email": "a@b.c", "language": "de"}
    short = session.post(server.url + "/rest/users", json={**user, "password": "short"}, headers=headers)
    assert short.status_code == 400 and "8 characters" in short.json()["message"]
    assignment = [{"accountId": 17, "phoneNumberId": 424242, "serviceId": 1}]
    unknown = session.post(
        server.url + "/rest/users/17/phonenumberconfig/phonenumbers/", json=assignment, headers=headers
    )
    assert unknown.status_code == 400 and "does not exist" in unknown.json()
