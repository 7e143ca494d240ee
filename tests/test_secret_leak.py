"""No secret in any output at any level: every command runs at trace level, as a separate process, with known
secrets in the environment; stdout, stderr and every file left behind are searched for them.

The ldap, azure and starface configurations point at a closed port on 127.0.0.1, so their runs end in the
error path (which must not leak either); the ldif + file demo runs every command successfully.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.servers.starface import StarfaceServer

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo"
SECRETS = {
    "ADSYNC_LDAP_PASSWORD": f"ldap-{uuid.uuid4().hex}",
    "ADSYNC_AZURE_CLIENT_SECRET": f"azure-{uuid.uuid4().hex}",
    "ADSYNC_STARFACE_PASSWORD": f"starface-{uuid.uuid4().hex}",
    "ADSYNC_STARFACE_CLIENT_SECRET": f"client-{uuid.uuid4().hex}",
}


def markers() -> list[str]:
    """Each secret, and the forms a client might derive from it (STARFACE hashes the password with SHA-512)."""
    found = []
    for value in SECRETS.values():
        found += [value, hashlib.sha512(value.encode()).hexdigest(), value.encode().hex()]
    return found


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **SECRETS, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "adsync_plan", "--log-level", "trace", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_no_secret(folder: Path, results: list[subprocess.CompletedProcess], tokens: tuple[str, ...] = ()) -> None:
    texts = {f"{' '.join(r.args[3:])} (stdout)": r.stdout for r in results}
    texts |= {f"{' '.join(r.args[3:])} (stderr)": r.stderr for r in results}
    for path in folder.rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
    for where, text in texts.items():
        for marker in markers() + list(tokens):
            assert marker not in text, f"a secret appears in {where}"


def copy_demo(tmp_path: Path) -> Path:
    folder = tmp_path / "demo"
    shutil.copytree(DEMO, folder, ignore=shutil.ignore_patterns("make_demo.py", "states", "plans", "__pycache__"))
    return folder


def test_every_command_of_the_demo_at_trace_level(tmp_path):
    folder = copy_demo(tmp_path)
    commands = [
        ["validate"],
        ["render"],
        ["refresh"],
        ["plan", "-o", "plans/a.plan.json"],
        ["plan", "--desired", "states/desired.yaml", "--no-refresh", "--json"],
        ["plan", "--markdown", "--detailed-exitcode"],
        ["show", "plans/a.plan.json"],
        ["show", "plans/a.plan.json", "--json"],
        ["show", "plans/a.plan.json", "--markdown", "--redact"],
        ["explain", "jmueller"],
        ["explain", "nobody"],
        ["apply", "plans/a.plan.json"],
        ["apply", "plans/a.plan.json"],  # refused: applied already
        ["sync"],
        ["sync", "--yes", "--detailed-exitcode"],
        ["--log-format", "json", "sync", "--yes"],
        ["force-unlock", "no-such-lock"],
        ["init", "new", "--source", "ldap", "--pbx", "starface"],
    ]
    results = [run(folder, *args) for args in commands]
    codes = [r.returncode for r in results]
    assert codes == [0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0], [r.stderr[-500:] for r in results]
    assert any("DEBUG" in r.stderr for r in results)  # trace level really logged
    assert_no_secret(folder, results)


def write_config(folder: Path, source: str, pbx: str) -> None:
    port = closed_port()
    sources = {
        "ldap": f"""source:
  type: ldap
  url: ldaps://127.0.0.1:{port}
  bind_dn: CN=svc,DC=example,DC=com
  password_env: ADSYNC_LDAP_PASSWORD
  base_dn: DC=example,DC=com
  timeout: 2
""",
        "azure": f"""source:
  type: azure
  tenant_id: t1
  client_id: c1
  client_secret_env: ADSYNC_AZURE_CLIENT_SECRET
  authority_host: https://127.0.0.1:{port}
  graph_url: https://127.0.0.1:{port}
  timeout: 2
""",
        "ldif": "source:\n  type: ldif\n  path: directory.ldif\n",
    }
    pbxes = {
        "starface": f"""pbx:
  type: starface
  url: https://127.0.0.1:{port}
  login_id: "0001"
  password_env: ADSYNC_STARFACE_PASSWORD
  timeout: 2
  retries: 0
""",
        "file": "pbx:\n  type: file\n  path: pbx.yaml\n",
    }
    group = "11111111-1111-1111-1111-111111111111" if source == "azure" else "CN=PBX-Admins,OU=Groups,DC=example,DC=com"
    scope = f'scope:\n  admin_groups: ["{group}"]\n  user_groups: []\n'
    (folder / "adsync.yaml").write_text(f"version: 1\n{sources[source]}{scope}{pbxes[pbx]}")


@pytest.mark.parametrize(("source", "pbx"), [("ldap", "file"), ("azure", "file"), ("ldif", "starface")])
def test_error_paths_of_the_network_components_at_trace_level(tmp_path, source, pbx):
    folder = copy_demo(tmp_path)
    assert run(folder, "plan", "-o", "plans/a.plan.json").returncode == 0  # a plan to apply, from the demo
    write_config(folder, source, pbx)
    commands = [["validate"], ["render"], ["refresh"], ["plan"], ["explain", "jmueller"], ["sync", "--yes"]]
    commands += [["apply", "plans/a.plan.json"]]
    results = [run(folder, *args) for args in commands]
    assert results[0].returncode == 0, results[0].stderr
    reaches_network = {"ldap": ["render", "plan", "explain", "sync"], "azure": ["render", "plan", "explain", "sync"]}
    reaches_network["ldif"] = ["refresh", "plan", "explain", "sync", "apply"]
    for r in results[1:]:
        if r.args[3] in reaches_network[source]:
            assert r.returncode == 1, r.stderr[-800:]
            assert r.stderr.rstrip().splitlines()[-1].startswith("Error: ")
    assert_no_secret(folder, results)


@pytest.mark.parametrize("version", ["6", "10"])
def test_every_command_against_a_live_starface_at_trace_level(tmp_path, version):
    """With the STARFACE test server (tests/servers/starface.py) the password is really used: login
    handshake (nonce, or on 10.x OAuth with the client secret), reads, creates; no token it issued shows."""
    folder = copy_demo(tmp_path)
    client = SECRETS["ADSYNC_STARFACE_CLIENT_SECRET"]
    with StarfaceServer(password=SECRETS["ADSYNC_STARFACE_PASSWORD"], version=version, client_secret=client) as pbx:
        pbx.add_user("0001", "Admin", "STARFACE", "admin@example.com")
        pbx.grant(pbx.user_ids_by_login("0001")[0])
        for n in range(20, 60):
            pbx.add_internal(str(n))
            pbx.add_external(f"+497022279780{n}" if n < 10 else f"+49702227978{n}")
        config = (folder / "adsync.yaml").read_text()
        config = config.replace(
            "pbx:\n  type: file\n  path: pbx.yaml\n",
            f'pbx:\n  type: starface\n  url: {pbx.url}\n  login_id: "0001"\n'
            "  password_env: ADSYNC_STARFACE_PASSWORD\n  timeout: 5\n"
            + ("  client_secret_env: ADSYNC_STARFACE_CLIENT_SECRET\n" if version == "10" else ""),
        )
        (folder / "adsync.yaml").write_text(config)
        commands = [["refresh"], ["plan", "-o", "plans/a.plan.json"], ["apply", "plans/a.plan.json"]]
        commands += [["sync", "--yes"], ["explain", "jmueller"], ["render"]]
        results = [run(folder, *args) for args in commands]
    assert [r.returncode for r in results] == [0, 0, 0, 0, 0, 0], [r.stderr[-800:] for r in results]
    assert "Apply complete" in results[2].stdout
    assert pbx.issued and (pbx.counts["token password"] > 0) == (version == "10")
    assert_no_secret(folder, results, tuple(pbx.issued))
