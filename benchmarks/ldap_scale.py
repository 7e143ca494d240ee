"""How fast the ldap source reads a large Active Directory, against the floor of OpenLDAP's ldapsearch.

Starts a Samba AD DC seeded with N users (default 10,000; cached after the first run, see
tests/servers/samba.py), then, in the same run and against the same server, reads the users under OU=People:

- with adsync-plan's ldap source (LDAPS, certificate verified, paged, scope groups resolved with the in-chain
  rule, every entry mapped to a DirectoryUser);
- the same with ldap3's own entry decoding (the fallback for an ldap3 version the tests did not run);
- with `ldapsearch` (ldap-utils) over LDAPS, paged with `-E pr=1000/noprompt`, the same filter and the same
  attributes, writing LDIF to a pipe that is read to the end (the floor: a C client that only prints).

Each is run REPEAT times after one warm-up; the median times and their ratio are printed (target < 1.5).

    python benchmarks/ldap_scale.py [--users 10000] [--repeat 5] [--page-size 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adsync_plan.config import Scope  # noqa: E402
from adsync_plan.sources import (
    ad,  # noqa: E402
    ldap,  # noqa: E402
)
from adsync_plan.sources.ldap import AD_USER_FILTER, PRIMARY_GROUP_ATTRIBUTES, read_directory  # noqa: E402
from tests.servers import ad_seed, samba  # noqa: E402

PASSWORD_ENV = "ADSYNC_BENCH_LDAP_PASSWORD"


def adsync_read(domain: samba.SambaDomain, page_size: int) -> int:
    settings = {
        "type": "ldap",
        "url": domain.ldaps_url,
        "bind_dn": samba.READER_DN,
        "password_env": PASSWORD_ENV,
        "base_dn": ad_seed.PEOPLE,
        "ca_file": str(domain.ca_file),
        "tls_server_name": samba.SERVER_NAME,
        "page_size": page_size,
    }
    scope = Scope(admin_groups=(ad_seed.ADMINS,), user_groups=(ad_seed.STAFF_ALL,), nested_groups=True)
    return len(read_directory(settings, scope, {}, Path.cwd()).users)


def adsync_read_plain(domain: samba.SambaDomain, page_size: int) -> int:
    """The same read with ldap3's own entry decoding (what an untested ldap3 version gets)."""
    tested = ldap.LEAN_DECODING_TESTED
    ldap.LEAN_DECODING_TESTED = frozenset()
    try:
        return adsync_read(domain, page_size)
    finally:
        ldap.LEAN_DECODING_TESTED = tested


def ldapsearch_read(domain: samba.SambaDomain, page_size: int) -> int:
    # what the source asks Active Directory for: user accounts, the mapped attributes and the primary group
    attributes = ad.requested_attributes(ad.DEFAULT_ATTRIBUTES) + PRIMARY_GROUP_ATTRIBUTES
    command = [
        "ldapsearch", "-LLL", "-x", "-H", domain.ldaps_url,
        "-D", samba.READER_DN, "-y", str(domain.root / "pw"),
        "-b", ad_seed.PEOPLE, "-E", f"pr={page_size}/noprompt", AD_USER_FILTER, *attributes,
    ]  # fmt: skip
    # ldapsearch checks the certificate's name against the URL's host (an IP here) and has no option to
    # expect DC1.example.test instead, so it skips verification: if anything, that makes the floor lower.
    env = {**os.environ, "LDAPTLS_REQCERT": "never"}
    done = subprocess.run(command, capture_output=True, env=env, check=True)
    return done.stdout.count(b"\ndn:") + done.stdout.startswith(b"dn:")


def timed(fn, *args) -> tuple[float, int]:
    started = time.perf_counter()
    count = fn(*args)
    return time.perf_counter() - started, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()
    if not shutil.which("ldapsearch"):
        samba.apt_install(["ldap-utils"])

    t0 = time.perf_counter()
    domain = samba.start_domain(ad_seed.make_seed(args.users))
    ready = time.perf_counter() - t0
    print(f"Samba AD DC with {args.users} users under {ad_seed.PEOPLE} ready in {ready:.1f} s")
    try:
        os.environ[PASSWORD_ENV] = samba.READER_PASSWORD
        (domain.root / "pw").write_text(samba.READER_PASSWORD)  # ldapsearch -y: no newline allowed
        runs = {
            "adsync-plan ldap source": adsync_read,
            "ldap3's own decoding": adsync_read_plain,
            "ldapsearch (floor)": ldapsearch_read,
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for name, fn in runs.items():  # warm-up: Samba's caches, Python's imports
            _, count = timed(fn, domain, args.page_size)
            assert count == args.users, f"{name} read {count} users, expected {args.users}"
        for _ in range(args.repeat):
            for name, fn in runs.items():  # interleaved, so drift affects both alike
                seconds, count = timed(fn, domain, args.page_size)
                assert count == args.users, f"{name} read {count} users, expected {args.users}"
                times[name].append(seconds)
    finally:
        domain.stop()

    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        rate = args.users / medians[name]
        print(f"{name:26s} median {medians[name]:6.3f} s  ({rate:7.0f} users/s; runs: "
              f"{', '.join(f'{v:.3f}' for v in values)})")  # fmt: skip
    ratio = medians["adsync-plan ldap source"] / medians["ldapsearch (floor)"]
    best = min(times["adsync-plan ldap source"]) / min(times["ldapsearch (floor)"])
    print(f"ratio adsync-plan / ldapsearch: {ratio:.2f} of the medians, {best:.2f} of the best runs (target < 1.5)")
    lean = medians["ldap3's own decoding"] / medians["adsync-plan ldap source"] - 1
    print(f"ldap3's own decoding costs {lean:+.0%} over the lean decoding (medians)")


if __name__ == "__main__":
    main()
