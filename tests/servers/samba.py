"""A throwaway Samba Active Directory domain controller on a loopback address, for tests and benchmarks.

`start_domain(seed)` installs Samba from Debian's packages if missing (samba-ad-dc samba-ad-provision
ldb-tools), provisions the domain EXAMPLE.TEST in a temporary folder (never /etc/samba or /var/lib/samba),
writes an smb.conf that binds only to one 127.0.0.N address and runs only the LDAP service, starts `samba`
in the background, waits until it answers LDAPS, seeds it over LDAPS and returns a handle whose `stop()`
kills it by its process id and removes the folder.

Provisioning and seeding take a while (Samba creates ~130 users/s), so a provisioned and seeded domain is
cached as a tarball under CACHE_DIR, keyed by the seed and the code of this module and ad_seed.py; a warm
start is untar + start, about 1-3 s. The certificate Samba makes names DC1.example.test (no IP): connect to
the IP with tls_server_name = SERVER_NAME and ca_file = the domain's ca.pem.

Run as a script to provision, seed and cache a domain ahead of time: python -m tests.servers.samba [N].
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ldap3

from tests.servers import ad_seed, listening
from tests.servers.ad_seed import Seed
from tests.servers.listening import AddressTaken

log = logging.getLogger(__name__)

PACKAGES = ["samba-ad-dc", "samba-ad-provision", "ldb-tools"]
CACHE_DIR = Path(os.environ.get("ADSYNC_TEST_CACHE", "/var/tmp/adsync-plan-test-cache"))
REALM, NETBIOS_DOMAIN, HOST = "EXAMPLE.TEST", "EXAMPLE", "DC1"  # the seed's domain (ad_seed.DOMAIN)
SERVER_NAME = "DC1.example.test"  # the name in the certificate Samba generates
ADMIN_PASSWORD = "Passw0rd!Admin"
READER_DN = f"CN=svc-reader,{ad_seed.SERVICE}"  # an ordinary account, as adsync-plan would use
READER_PASSWORD = "Rd!Passw0rd-2026"
START_TIMEOUT = 60.0
START_ATTEMPTS = 5
LDAP_PORTS = (389, 636)  # the ports tests connect to (ldap_url, ldaps_url)
PRUNE_AFTER = 24 * 3600  # seconds unused before a snapshot made by other code is removed


class Unavailable(Exception):
    """Samba is not installed and cannot be installed here (no apt-get, not root)."""


def domain_dn(realm: str) -> str:
    return ",".join(f"DC={part}" for part in realm.lower().split("."))


def reader_dn(realm: str) -> str:
    return f"CN=svc-reader,OU=Service,{domain_dn(realm)}"


@dataclass
class SambaDomain:
    root: Path
    ip: str
    process: subprocess.Popen
    seed: Seed | None
    realm: str = REALM

    @property
    def reader_dn(self) -> str:
        return reader_dn(self.realm)

    @property
    def server_name(self) -> str:
        """The name in the certificate Samba made (no IP in it): use it as tls_server_name."""
        return f"{HOST}.{self.realm.lower()}"

    @property
    def ca_file(self) -> Path:
        return self.root / "private" / "tls" / "ca.pem"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{self.ip}"

    @property
    def ldap_url(self) -> str:
        return f"ldap://{self.ip}"

    def admin_connection(self) -> ldap3.Connection:
        return _admin_connection(self.ip, self.realm)

    def stop(self) -> None:
        _stop(self.process)
        shutil.rmtree(self.root, ignore_errors=True)


# --- installing -----------------------------------------------------------------------------------------


def apt_install(packages: list[str], preseed: str | None = None) -> None:
    """Install Debian packages (no recommends; services do not start here: no systemd, policy-rc.d 101)."""
    if not shutil.which("apt-get"):
        raise Unavailable(f"{' '.join(packages)} are not installed and there is no apt-get to install them")
    if os.geteuid() != 0:
        raise Unavailable(f"{' '.join(packages)} are not installed and installing them needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if preseed:
        subprocess.run(["debconf-set-selections"], input=preseed, text=True, check=True, env=env)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True, "env": env}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if subprocess.run(install, **quiet).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True, **quiet)
        done = subprocess.run(install, **quiet)
        if done.returncode != 0:
            raise RuntimeError(f"apt-get install {' '.join(packages)} failed: {done.stderr[-2000:]}")


def ensure_samba() -> None:
    if os.geteuid() != 0:
        raise Unavailable("a Samba DC listens on the fixed ports 389 and 636, which need root")
    schema = Path("/usr/share/samba/setup/ad-schema")
    if not (shutil.which("samba") and shutil.which("samba-tool") and schema.is_dir()):
        apt_install(PACKAGES)


# --- provisioning and starting --------------------------------------------------------------------------


def cache_key(*parts: str) -> str:
    code = Path(__file__).read_bytes() + Path(ad_seed.__file__).read_bytes()
    return hashlib.sha256("\0".join(parts).encode() + code).hexdigest()[:20]


def start_domain(seed: Seed) -> SambaDomain:
    ensure_samba()
    tarball = CACHE_DIR / f"samba-seed{len(seed.users)}-{cache_key(seed.digest())}.tar"
    root = Path(tempfile.mkdtemp(prefix="adsync-samba-"))
    try:
        if not _extract(tarball, root):
            _provision(root, REALM)
            ip, process = _start_anywhere(root, REALM)
            _add_reader(ip, REALM)
            _seed(ip, seed)
            _stop(process)
            _snapshot(root, tarball)
        ip, process = _start_anywhere(root, REALM)
        return SambaDomain(root, ip, process, seed)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _extract(tarball: Path, root: Path) -> bool:
    """Unpack a cached domain into root; False when there is none. Read from an open file, so that a copy of
    the suite run from another worktree (other code, so another key) may replace or prune it meanwhile."""
    try:
        archive = open(tarball, "rb")  # noqa: SIM115 (closed below, after tar read it)
    except FileNotFoundError:
        return False
    with archive:
        subprocess.run(["tar", "-xf", "-", "-C", str(root)], stdin=archive, check=True)
    with contextlib.suppress(OSError):
        os.utime(tarball)  # in use: not pruned as stale by a run with other code (see _snapshot)
    return True


def _start_anywhere(root: Path, realm: str) -> tuple[str, subprocess.Popen]:
    """Start the domain on a free loopback address: (address, process). The address is picked free and
    bound by Samba later, so another copy of the suite may take it in between: then start on another one."""
    for _ in range(START_ATTEMPTS):
        ip = free_loopback_address()
        try:
            return ip, _start(root, ip, realm)
        except AddressTaken:
            log.info("%s was taken meanwhile; starting the domain on another address.", ip)
    raise RuntimeError(f"a Samba test domain found its address taken {START_ATTEMPTS} times in a row")


def free_loopback_address() -> str:
    """A 127.0.0.N nobody listens on: Samba's LDAP ports are fixed, so instances differ by address."""
    candidates = list(range(2, 250))
    random.Random(os.getpid()).shuffle(candidates)
    for n in candidates:
        ip = f"127.0.0.{n}"
        if all(_port_free(ip, port) for port in (*LDAP_PORTS, 3268, 3269)):
            return ip
    raise RuntimeError("no free loopback address for a Samba test domain")


def _port_free(ip: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


def _provision(root: Path, realm: str) -> None:
    started = time.monotonic()
    done = subprocess.run(
        ["samba-tool", "domain", "provision", f"--targetdir={root}", f"--realm={realm}",
         f"--domain={NETBIOS_DOMAIN}", "--server-role=dc", "--dns-backend=NONE", f"--host-name={HOST}",
         "--host-ip=127.0.0.1", f"--adminpass={ADMIN_PASSWORD}", "--backend-store=mdb",
         "--option=interfaces = 127.0.0.1/8", "--option=bind interfaces only = yes"],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"samba-tool domain provision failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    log.info("Provisioned a Samba domain in %.1f s.", time.monotonic() - started)


def write_smb_conf(root: Path, ip: str, realm: str) -> Path:
    """Every path under root (the generated smb.conf would log to /var/log/samba and use /run/samba)."""
    for sub in ("run", "log", "cache", "private", "state", "bind-dns", "etc"):
        (root / sub).mkdir(exist_ok=True)
    conf = root / "etc" / "smb.conf"
    conf.write_text(
        f"""[global]
\tnetbios name = {HOST}
\trealm = {realm}
\tworkgroup = {NETBIOS_DOMAIN}
\tserver role = active directory domain controller
\tinterfaces = {ip}/8
\tbind interfaces only = yes
\tserver services = ldap
\tldb:nosync = true
\tprivate dir = {root}/private
\tstate directory = {root}/state
\tcache directory = {root}/cache
\tlock directory = {root}
\tpid directory = {root}/run
\tncalrpc dir = {root}/run/ncalrpc
\twinbindd socket directory = {root}/run/winbindd
\tntp signd socket directory = {root}/run/ntp_signd
\tbinddns dir = {root}/bind-dns
\tlog file = {root}/log/log.%m
\tlogging = file
"""
    )
    return conf


def _start(root: Path, ip: str, realm: str) -> subprocess.Popen:
    conf = write_smb_conf(root, ip, realm)
    out = open(root / "log" / "samba-stdout.log", "wb")  # noqa: SIM115 (the child keeps it open; one start's output)
    process = subprocess.Popen(
        ["samba", "-s", str(conf), "-i", "-M", "single", "--no-process-group", "--maximum-runtime=7200"],
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    out.close()
    try:
        _wait_until_answering(process, ip, root)
    except BaseException:
        _stop(process)
        raise
    return process


def _wait_until_answering(process: subprocess.Popen, ip: str, root: Path) -> None:
    """Until this Samba answers LDAPS on ip; AddressTaken when another process listens there."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (root / "log" / "samba-stdout.log").read_text(errors="replace")[-2000:]
            if "NT_STATUS_ADDRESS_ALREADY_ASSOCIATED" in tail:  # add_socket: ldapsrv failed to bind to ...
                raise AddressTaken(f"another process holds a port of {ip}")
            raise RuntimeError(f"samba exited with {process.returncode} while starting: {tail}")
        owners = [listening.owns(process.pid, ip, port) for port in LDAP_PORTS]
        if False in owners:  # another program's server would answer in its place
            raise AddressTaken(f"another process listens on {ip}")
        if owners != [True] * len(LDAP_PORTS):
            time.sleep(0.2)
            continue
        try:
            server = ldap3.Server(ip, port=636, use_ssl=True, tls=ldap3.Tls(validate=ssl.CERT_NONE),
                                  get_info=ldap3.NONE, connect_timeout=1)  # fmt: skip
            conn = ldap3.Connection(server, auto_bind=True, receive_timeout=2)
            conn.search("", "(objectClass=*)", ldap3.BASE, attributes=["defaultNamingContext"])
            conn.unbind()
            return
        except Exception:  # noqa: BLE001 (not up yet)
            time.sleep(0.2)
    raise RuntimeError(f"samba did not answer on {ip}:636 within {START_TIMEOUT:.0f} s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _snapshot(root: Path, tarball: Path) -> None:
    """tar the stopped domain into the cache (atomically: a half-written tarball is never used)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = tarball.with_suffix(f".{os.getpid()}.tmp")
    # --warning=no-file-ignored: the ldapi sockets cannot be archived and need not be
    subprocess.run(["tar", "--warning=no-file-ignored", "-cf", str(tmp), "-C", str(root), "."], check=True)
    os.replace(tmp, tarball)
    # a snapshot of the same kind (same name before the key) was made by other code: drop it once unused for
    # a day (it may belong to a copy of the suite running from another worktree, which touches what it uses)
    kind = tarball.name.rsplit("-", 1)[0]
    for old in CACHE_DIR.glob(f"{kind}-*.tar"):
        with contextlib.suppress(FileNotFoundError):
            if old != tarball and old.name.rsplit("-", 1)[0] == kind and _age(old) > PRUNE_AFTER:
                old.unlink()


def _age(path: Path) -> float:
    return time.time() - path.stat().st_mtime


# --- seeding --------------------------------------------------------------------------------------------


def _admin_connection(ip: str, realm: str = REALM) -> ldap3.Connection:
    tls = ldap3.Tls(validate=ssl.CERT_NONE)
    server = ldap3.Server(ip, port=636, use_ssl=True, tls=tls, get_info=ldap3.NONE)
    user = f"Administrator@{realm.lower()}"
    # a generous wait: on a loaded machine a fresh domain's first writes can take longer than ldap3's 10 s
    return ldap3.Connection(server, user, ADMIN_PASSWORD, auto_bind=True, raise_exceptions=True, receive_timeout=120)


def _add_reader(ip: str, realm: str) -> None:
    """OU=Service and svc-reader, an ordinary account with a password (needs LDAPS), as adsync-plan uses."""
    conn = _admin_connection(ip, realm)
    with contextlib.suppress(ldap3.core.exceptions.LDAPEntryAlreadyExistsResult):  # an add retried after a timeout
        conn.add(f"OU=Service,{domain_dn(realm)}", ["top", "organizationalUnit"])
    with contextlib.suppress(ldap3.core.exceptions.LDAPEntryAlreadyExistsResult):
        conn.add(reader_dn(realm), ad_seed.USER_CLASSES, {
            "sAMAccountName": "svc-reader", "userAccountControl": 512,
            "unicodePwd": f'"{READER_PASSWORD}"'.encode("utf-16-le"),
        })  # fmt: skip
    conn.unbind()


def _seed(ip: str, seed: Seed) -> None:
    started = time.monotonic()
    conn = _admin_connection(ip)
    for ou in ad_seed.organizational_units():
        if ou != ad_seed.SERVICE:
            conn.add(ou, ["top", "organizationalUnit"])
    for user in seed.users:
        conn.add(user.dn, ad_seed.USER_CLASSES, user.attributes)
    for group in seed.groups:
        attrs = {"sAMAccountName": group.name}
        if group.members:
            attrs["member"] = group.members
        conn.add(group.dn, ad_seed.GROUP_CLASSES, attrs)
    conn.unbind()
    log.info("Seeded %d users in %.1f s.", len(seed.users), time.monotonic() - started)


# --- a domain holding exactly the entries of an LDIF file (the golden cases) ------------------------------

LDIF_REALM = "EXAMPLE.COM"  # the golden cases' domain, DC=example,DC=com


class UnsupportedDirectory(Exception):
    """The LDIF holds something Active Directory itself refuses (e.g. two users with one sAMAccountName)."""


def start_domain_from_entries(entries, extra_groups=(), realm: str = LDIF_REALM) -> SambaDomain:
    """A domain whose users and groups are exactly `entries` (data: (dn, {attribute: value}) as
    tests/cases/make_cases.py makes them, objectGUIDs included), never read through the project's LDIF parser.

    AD never lets a client choose an objectGUID, so the entries are added offline with ldbadd and the
    relax control (as Samba's provisioning does), before the server starts. Group membership comes from the
    users' memberOf values and the groups' member values (Samba computes memberOf itself); `extra_groups`
    (the configured scope groups) are created when the entries do not name them."""
    adds, members = samba_ldif(entries, extra_groups, domain_dn(realm))
    ensure_samba()
    root = Path(tempfile.mkdtemp(prefix="adsync-samba-"))
    try:
        _extract_base(realm, root)
        _ldb_tool(root, "ldbadd", adds)
        if members:
            _ldb_tool(root, "ldbmodify", members)
        ip, process = _start_anywhere(root, realm)
        return SambaDomain(root, ip, process, None, realm)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def start_domain_from_ldif(text: str, extra_groups=(), realm: str = LDIF_REALM) -> SambaDomain:
    """A domain holding an LDIF text's entries, read with the project's own LDIF parser: for tests that need a
    directory in Active Directory, never for comparing the ldap source with the ldif source (a parser bug
    would cancel out there; those seed from data with start_domain_from_entries)."""
    from adsync_plan.sources.ldif import parse_ldif

    return start_domain_from_entries(list(parse_ldif(text)), extra_groups, realm)


def _extract_base(realm: str, root: Path) -> None:
    """A provisioned, started-once (TLS keys made) domain with svc-reader and nothing else, cached, unpacked
    into root."""
    tarball = CACHE_DIR / f"samba-base-{realm.lower()}-{cache_key(realm)}.tar"
    if _extract(tarball, root):
        return
    _provision(root, realm)
    ip, process = _start_anywhere(root, realm)
    _add_reader(ip, realm)
    _stop(process)
    _snapshot(root, tarball)


def _ldb_tool(root: Path, tool: str, ldif: str) -> None:
    path = root / f"{tool}.ldif"
    path.write_text(ldif, encoding="utf-8")
    sam = root / "private" / "sam.ldb"
    done = subprocess.run([tool, "-H", str(sam), "--controls=relax:0", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")


def _norm(dn: str) -> str:
    return ",".join(part.strip() for part in dn.lower().split(","))


def _as_values(entry: dict) -> dict[str, list]:
    """Attribute names in lower case (LDAP's are case-insensitive), every value a list."""
    return {name.lower(): list(value) if isinstance(value, list) else [value] for name, value in entry.items()}


def samba_ldif(entries, extra_groups, domain: str) -> tuple[str, str]:
    """(entries to add, member modifications) for ldbadd/ldbmodify, from directory entries given as data."""
    entries = [(dn, _as_values(entry)) for dn, entry in entries]
    users = [(dn, e) for dn, e in entries if "group" not in _classes(e) and {"person", "user"} & _classes(e)]
    groups = {_norm(dn): [dn, e, list(e.get("member", []))] for dn, e in entries if "group" in _classes(e)}
    for dn, entry in users + [(g[0], g[1]) for g in list(groups.values())]:
        for parent in entry.get("memberof", []):
            group = groups.setdefault(_norm(parent), [parent, {}, []])
            if _norm(dn) not in {_norm(m) for m in group[2]}:
                group[2].append(dn)
    for extra in extra_groups:
        groups.setdefault(_norm(extra), [extra, {}, []])
    _check_ad_constraints([(dn, e) for dn, e in users if "contact" not in _classes(e)])
    dns = [dn for dn, _ in users] + [g[0] for g in groups.values()]
    chunks = [ad_seed.ldif_entry(ou, {"objectClass": ["top", "organizationalUnit"]}) for ou in _ous(dns, domain)]
    for dn, entry in users:
        # Samba gives every entry its own objectSid, and every user the primary group Domain Users (513)
        attrs = {k: v for k, v in entry.items() if k not in ("memberof", "objectsid", "primarygroupid")}
        if "contact" not in _classes(entry):  # a contact has no account and no userAccountControl
            attrs.setdefault("useraccountcontrol", ["512"])  # an LDIF user without it is enabled; AD's is not
        chunks.append(ad_seed.ldif_entry(dn, attrs))
    modifies = []
    for dn, entry, members in groups.values():
        well_known = _well_known(entry)
        attrs = {k: v for k, v in entry.items() if k not in ("member", "memberof")}
        attrs.pop("objectsid", None)
        attrs["objectclass"] = ad_seed.GROUP_CLASSES
        attrs.setdefault("samaccountname", [dn.split(",", 1)[0].split("=", 1)[1]])
        if not well_known:  # provisioning made Domain Users and the like already
            chunks.append(ad_seed.ldif_entry(dn, attrs))
        if members:
            lines = [
                ad_seed.ldif_entry(dn, {"changetype": "modify", "add": "member", "member": members}),
                "-\n",
            ]
            modifies.append("".join(lines))
    return "\n".join(chunks), "\n".join(modifies)


def _well_known(entry) -> bool:
    """A group whose objectSid ends in a RID below 1000 (Domain Users is 513): every domain has it."""
    sids = entry.get("objectsid") or []
    if not sids:
        return False
    sid = sids[0]
    if isinstance(sid, str) and sid.upper().startswith("S-"):  # the text form S-1-5-21-...-513
        return int(sid.rsplit("-", 1)[1]) < 1000
    sid = sid if isinstance(sid, bytes) else sid.encode("utf-8")  # binary that happened to be UTF-8
    return int.from_bytes(sid[-4:], "little") < 1000


def _classes(entry) -> set[str]:
    return {str(c).lower() for c in entry.get("objectclass", [])}


def _check_ad_constraints(users) -> None:
    seen = set()
    for dn, entry in users:
        account = (entry.get("samaccountname") or [None])[0]
        if not account:
            raise UnsupportedDirectory(f"{dn} has no sAMAccountName, which Active Directory requires")
        if account.lower() in seen:
            raise UnsupportedDirectory(f"sAMAccountName {account} occurs twice; Active Directory keeps it unique")
        seen.add(account.lower())


def _ous(dns, domain: str) -> list[str]:
    """The OU= containers above the entries (parents first); CN= containers such as CN=Users exist already."""
    found = set()
    for dn in dns:
        parts = dn.split(",")
        for i in range(1, len(parts)):
            parent = ",".join(parts[i:])
            if parts[i].strip().lower().startswith("ou=") and _norm(parent).endswith(_norm(domain)):
                found.add(parent)
    return sorted(found, key=lambda dn: dn.count(","))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2600
    t0 = time.monotonic()
    domain = start_domain(ad_seed.make_seed(count))
    print(f"domain with {count} users up at {domain.ip} in {time.monotonic() - t0:.1f} s; stopping")
    domain.stop()
