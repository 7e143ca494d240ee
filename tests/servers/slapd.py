"""OpenLDAP slapd with a small Active-Directory-like schema and AD's 1,000-entry size limit, for tests.

Samba never enforces Active Directory's MaxPageSize, so the paging proof runs here: an ordinary account
(svc-reader) gets at most 1,000 entries from a plain search ("size limit exceeded") but any number through
the paged-results control, exactly as AD behaves. The schema uses AD's own OIDs and names (sAMAccountName,
objectGUID, userAccountControl, otherTelephone, ...; classes user, group, computer), so the same seed and the
same attribute mapping serve both servers. memberOf is computed by slapo-dynlist (transitively; slapd 2.5
cannot evaluate LDAP_MATCHING_RULE_IN_CHAIN, see the directory-servers notes).

slapd listens on free unprivileged ports of 127.0.0.1 (started again on new ones when another program took
one first: see listening.py), logs its operations (`-d stats`) to `log_file` so tests
can see exactly what a client asked for, and is stopped by its process id.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.servers import ad_seed, listening
from tests.servers.ad_seed import Seed
from tests.servers.listening import AddressTaken
from tests.servers.samba import Unavailable, apt_install

PACKAGES = ["slapd", "ldap-utils"]
PRESEED = "slapd slapd/no_configuration boolean true\n"  # no default database in /etc/ldap, /var/lib/ldap
SUFFIX = ad_seed.DOMAIN
ROOT_DN, ROOT_PASSWORD = f"CN=admin,{SUFFIX}", "Root!Passw0rd"
READER_DN, READER_PASSWORD = f"CN=svc-reader,{ad_seed.SERVICE}", "Rd!Passw0rd-2026"
SIZE_LIMIT = 1000
SCHEMA_DIR = Path("/etc/ldap/schema")
START_TIMEOUT = 60.0  # a loaded machine: slapd usually listens within a second
START_ATTEMPTS = 5

AD_LITE_SCHEMA = """\
# A small Active-Directory-like schema: AD's OIDs and names, with real matching rules.
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.2 NAME 'objectGUID'
  EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.750 NAME 'groupType'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.2.18 NAME 'otherTelephone'
  EQUALITY telephoneNumberMatch SUBSTR telephoneNumberSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.50 )
attributetype ( 1.2.840.113556.1.4.646 NAME 'otherFacsimileTelephoneNumber'
  EQUALITY telephoneNumberMatch SUBSTR telephoneNumberSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.50 )
attributetype ( 1.2.840.113556.1.4.721 NAME 'ipPhone'
  EQUALITY telephoneNumberMatch SUBSTR telephoneNumberSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.50 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.722 NAME 'otherIpPhone'
  EQUALITY telephoneNumberMatch SUBSTR telephoneNumberSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.50 )
objectclass ( 1.2.840.113556.1.5.9 NAME 'user' SUP organizationalPerson STRUCTURAL
  MAY ( sAMAccountName $ userPrincipalName $ objectGUID $ userAccountControl $ givenName $
        displayName $ mail $ otherTelephone $ otherFacsimileTelephoneNumber $ ipPhone $
        otherIpPhone $ pager $ mobile $ homePhone ) )
objectclass ( 1.2.840.113556.1.3.30 NAME 'computer' SUP user STRUCTURAL )
objectclass ( 1.2.840.113556.1.5.8 NAME 'group' SUP top STRUCTURAL
  MUST cn MAY ( member $ sAMAccountName $ groupType $ objectGUID $ description ) )
"""


@dataclass
class Slapd:
    root: Path
    ldap_port: int
    ldaps_port: int
    process: subprocess.Popen
    seed: Seed

    @property
    def ca_file(self) -> Path:
        return self.root / "tls" / "ca.pem"

    @property
    def log_file(self) -> Path:
        return self.root / "slapd.log"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def ldap_url(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    def kill(self) -> None:
        """Stop the server at once (SIGKILL), as a crashing or vanishing server would."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def ensure_slapd() -> None:
    if not (shutil.which("slapd") or Path("/usr/sbin/slapd").exists()) or not shutil.which("slapadd"):
        apt_install(PACKAGES, preseed=PRESEED)
    if not (SCHEMA_DIR / "inetorgperson.schema").exists():
        raise Unavailable("slapd is installed but its schema files are missing from /etc/ldap/schema")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_slapd(seed: Seed) -> Slapd:
    ensure_slapd()
    root = Path(tempfile.mkdtemp(prefix="adsync-slapd-"))
    try:
        conf = _configure(root)
        _load(root, conf, seed)
        for _ in range(START_ATTEMPTS):
            # picked free here, bound by slapd later: another program may take one in between (then slapd
            # exits, or the port answers from another process), so slapd starts again on new ports
            ldap_port, ldaps_port = free_port(), free_port()
            try:
                process = _start(root, conf, ldap_port, ldaps_port)
            except AddressTaken:
                continue
            return Slapd(root, ldap_port, ldaps_port, process, seed)
        raise RuntimeError(f"slapd found its ports taken {START_ATTEMPTS} times in a row")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _tls_files(root: Path) -> None:
    tls = root / "tls"
    tls.mkdir()
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tls / "ca.pem"))
    cert.private_key_pem.write_to_path(str(tls / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tls / "cert.pem"))


def _configure(root: Path) -> Path:
    _tls_files(root)
    (root / "db").mkdir()
    (root / "ad-lite.schema").write_text(AD_LITE_SCHEMA)
    schemas = "\n".join(
        f"include {SCHEMA_DIR}/{name}.schema" for name in ("core", "cosine", "inetorgperson", "dyngroup")
    )
    conf = root / "slapd.conf"
    conf.write_text(
        f"""{schemas}
include {root}/ad-lite.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload dynlist
pidfile {root}/slapd.pid
TLSCACertificateFile {root}/tls/ca.pem
TLSCertificateFile {root}/tls/cert.pem
TLSCertificateKeyFile {root}/tls/key.pem
access to dn.base="" by * read
access to dn.base="cn=Subschema" by * read

database mdb
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory {root}/db
maxsize 1073741824
dbnosync
# AD's MaxPageSize for ordinary accounts: a plain search stops at {SIZE_LIMIT} entries with
# sizeLimitExceeded, a paged search returns everything (prtotal unlimited). The rootdn is exempt: test
# with svc-reader.
limits users size.soft={SIZE_LIMIT} size.hard={SIZE_LIMIT} size.prtotal=unlimited
limits anonymous size.soft={SIZE_LIMIT} size.hard={SIZE_LIMIT} size.prtotal=unlimited
index objectClass,entryUUID eq
index cn,sn,givenName,sAMAccountName,userPrincipalName eq
index member eq
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by * none
overlay dynlist
dynlist-attrset groupOfURLs memberURL member+memberOf@group*
"""
    )
    return conf


def _load(root: Path, conf: Path, seed: Seed) -> None:
    base = [
        ad_seed.ldif_entry(
            SUFFIX, {"objectClass": ["top", "dcObject", "organization"], "dc": "example", "o": "Example"}
        )
    ]
    ldif = ad_seed.to_ldif(seed, base)
    ldif += "\n" + ad_seed.ldif_entry(
        READER_DN,
        {
            "objectClass": ["top", "person"],
            "cn": "svc-reader",
            "sn": "reader",
            "userPassword": READER_PASSWORD,
        },
    )
    path = root / "seed.ldif"
    path.write_text(ldif, encoding="utf-8")
    done = subprocess.run(["slapadd", "-q", "-f", str(conf), "-l", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"slapadd failed: {done.stderr[-3000:]}")


def _start(root: Path, conf: Path, ldap_port: int, ldaps_port: int) -> subprocess.Popen:
    """slapd listening on both ports; AddressTaken when another process holds one of them."""
    urls = f"ldap://127.0.0.1:{ldap_port}/ ldaps://127.0.0.1:{ldaps_port}/"
    log_path = root / "slapd.log"
    log = open(log_path, "wb")  # noqa: SIM115 (the child keeps it open; a failed attempt's lines are dropped)
    # -d stats: stay in the foreground (so the pid is slapd's) and log every operation to the log file
    process = subprocess.Popen(
        ["slapd", "-d", "stats", "-f", str(conf), "-h", urls],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    log.close()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log_path.read_text(errors="replace")
            if "errno=98" in text:  # daemon: bind(..) failed errno=98 (Address already in use)
                raise AddressTaken(f"slapd: a port of {urls} is taken")
            raise RuntimeError(f"slapd exited: {text[-2000:]}")
        owners = [listening.owns(process.pid, "127.0.0.1", port) for port in (ldap_port, ldaps_port)]
        if owners == [True, True] and "slapd starting" in log_path.read_text(errors="replace"):
            return process  # bound by slapd itself, and past its start-up (it logs this line last)
        if False in owners:  # another process listens there: slapd's own bind fails (or has failed)
            _stop(process)
            raise AddressTaken(f"slapd: a port of {urls} answers from another process")
        time.sleep(0.1)
    _stop(process)
    raise RuntimeError(f"slapd did not listen within {START_TIMEOUT:.0f} s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


if __name__ == "__main__":
    t0 = time.monotonic()
    server = start_slapd(ad_seed.make_seed(2600))
    print(f"slapd up at {server.ldaps_url} in {time.monotonic() - t0:.1f} s (pid {server.process.pid})")
    os.system(f"tail -3 {server.log_file}")
    server.stop()
