"""The test servers themselves: two copies of the suite may run at once on one machine (from two worktrees),
so a server started on an address another program took first must notice and move, and the Samba snapshot
cache they share must not be pulled from under either."""

from __future__ import annotations

import os
import socket
import ssl
import time

import ldap3
import pytest

from tests.servers import ad_seed, listening, samba, slapd

pytestmark = pytest.mark.filterwarnings("ignore:ssl.match_hostname:DeprecationWarning")


def _unavailable(reason: str):
    if os.environ.get("ADSYNC_REQUIRE_LDAP_SERVERS") == "1":
        pytest.fail(f"ADSYNC_REQUIRE_LDAP_SERVERS=1 but: {reason}")
    pytest.skip(reason)


@pytest.fixture
def squatter():
    """A socket of "another program" listening on 127.0.0.1 (it accepts connections and never answers)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def test_who_listens_is_read_from_the_kernel(squatter, closed_port):
    assert listening.owns(os.getpid(), "127.0.0.1", squatter) is True
    assert listening.owns(1, "127.0.0.1", squatter) is False  # init does not hold it
    assert listening.owns(os.getpid(), "127.0.0.1", closed_port) is None  # bound, not listening


def test_slapd_moves_when_another_program_took_its_port(monkeypatch, squatter, closed_port):
    """slapd's ports are picked free and bound later: here another program listens on the first one picked
    and holds the next without listening; slapd must end up on ports of its own, answering LDAP."""
    picked = [squatter, closed_port]
    free_port = slapd.free_port
    monkeypatch.setattr(slapd, "free_port", lambda: picked.pop(0) if picked else free_port())
    try:
        server = slapd.start_slapd(ad_seed.make_seed(3))
    except samba.Unavailable as err:
        _unavailable(f"slapd unavailable: {err}")
    try:
        assert not {server.ldap_port, server.ldaps_port} & {squatter, closed_port}
        conn = ldap3.Connection(
            ldap3.Server("127.0.0.1", port=server.ldap_port, get_info=ldap3.NONE, connect_timeout=10),
            slapd.ROOT_DN, slapd.ROOT_PASSWORD, auto_bind=True, receive_timeout=30,
        )  # fmt: skip
        assert conn.search(slapd.SUFFIX, "(sAMAccountName=*)", attributes=["sAMAccountName"])
        conn.unbind()
    finally:
        server.stop()


def test_a_samba_domain_moves_when_another_program_took_its_address(monkeypatch):
    """Samba's ports are fixed, so a domain differs by its 127.0.0.N address, picked free and bound later;
    another program listening there first must not be taken for the domain."""
    address = samba.free_loopback_address()
    with socket.create_server((address, 636)):
        picked = [address]
        free = samba.free_loopback_address
        monkeypatch.setattr(samba, "free_loopback_address", lambda: picked.pop(0) if picked else free())
        started = time.monotonic()
        try:
            domain = samba.start_domain_from_entries([], ["CN=Staff,OU=Groups,DC=example,DC=com"])
        except samba.Unavailable as err:
            _unavailable(f"Samba AD DC unavailable: {err}")
        try:
            assert domain.ip != address and not picked
            assert time.monotonic() - started < samba.START_TIMEOUT  # noticed, not waited out
            server = ldap3.Server(domain.ip, port=636, use_ssl=True, tls=ldap3.Tls(validate=ssl.CERT_NONE))
            conn = ldap3.Connection(server, domain.reader_dn, samba.READER_PASSWORD, auto_bind=True)
            assert conn.search(samba.domain_dn(domain.realm), "(cn=Staff)")
            conn.unbind()
        finally:
            domain.stop()


def test_a_snapshot_of_other_code_is_kept_while_another_run_may_use_it(monkeypatch, tmp_path):
    """Runs from two worktrees share the snapshot cache and differ in code, so in key: writing one's snapshot
    must not remove the other's while that run may still unpack it (only once unused for a day)."""
    cache = tmp_path / "cache"
    monkeypatch.setattr(samba, "CACHE_DIR", cache)
    cache.mkdir()
    theirs, stale = cache / "samba-base-example.com-aaaa.tar", cache / "samba-base-example.com-bbbb.tar"
    other_kind = cache / "samba-seed10-cccc.tar"
    for path in (theirs, stale, other_kind):
        path.write_bytes(b"x")
    day_old = time.time() - samba.PRUNE_AFTER - 60
    os.utime(stale, (day_old, day_old))
    os.utime(other_kind, (day_old, day_old))
    (tmp_path / "domain").mkdir()
    (tmp_path / "domain" / "sam.ldb").write_text("data")
    samba._snapshot(tmp_path / "domain", cache / "samba-base-example.com-dddd.tar")
    assert sorted(p.name for p in cache.iterdir()) == [
        "samba-base-example.com-aaaa.tar",
        "samba-base-example.com-dddd.tar",
        "samba-seed10-cccc.tar",  # another kind: never pruned by this one
    ]
    target = tmp_path / "unpacked"
    target.mkdir()
    assert samba._extract(cache / "samba-base-example.com-dddd.tar", target)
    assert (target / "sam.ldb").read_text() == "data"
    assert not samba._extract(stale, target)  # gone: the caller provisions instead of failing
