"""No secret in any output at any level: every command runs at trace level, as a separate process, with known
secrets in the environment; stdout, stderr and every file left behind are searched for them.

The ldif + file demo runs every command successfully. The ldap, azure and starface components are run twice:
against a port that is bound but not listening (the error path must not leak either), and against real
servers where the secret is used with success: a Samba AD DC (a simple bind over LDAPS), the local Entra ID
and Graph server (a client-credentials sign-in), and the STARFACE test server (the login handshake).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
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


GLOBAL_OPTIONS = ("--log-level", "trace")


def markers(secrets: dict[str, str] = SECRETS) -> list[str]:
    """Each secret, and the forms a client might derive from it (STARFACE hashes the password with SHA-512;
    an Active Directory password travels as UTF-16-LE, Basic auth as base64)."""
    found = []
    for value in secrets.values():
        found += [value, hashlib.sha512(value.encode()).hexdigest(), value.encode().hex()]
        found += [value.encode("utf-16-le").hex(), base64.b64encode(value.encode()).decode()]
    return found


def command_of(result: subprocess.CompletedProcess) -> list[str]:
    """The adsync-plan arguments of a run (after python -m adsync_plan and the global options)."""
    return list(result.args[3 + len(GLOBAL_OPTIONS) :])


def run(folder: Path, *args: str, secrets: dict[str, str] = SECRETS) -> subprocess.CompletedProcess:
    env = {**os.environ, **secrets, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "adsync_plan", *GLOBAL_OPTIONS, *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_no_secret(
    folder: Path, results: list[subprocess.CompletedProcess], tokens: tuple[str, ...] = (), secrets=SECRETS
) -> None:
    texts = {f"{' '.join(command_of(r))} (stdout)": r.stdout for r in results}
    texts |= {f"{' '.join(command_of(r))} (stderr)": r.stderr for r in results}
    for path in folder.rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
    for where, text in texts.items():
        for marker in markers(secrets) + list(tokens):
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


def write_config(folder: Path, source: str, pbx: str, port: int) -> None:
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
def test_error_paths_of_the_network_components_at_trace_level(tmp_path, source, pbx, closed_port):
    folder = copy_demo(tmp_path)
    assert run(folder, "plan", "-o", "plans/a.plan.json").returncode == 0  # a plan to apply, from the demo
    write_config(folder, source, pbx, closed_port)
    commands = [["validate"], ["render"], ["refresh"], ["plan"], ["explain", "jmueller"], ["sync", "--yes"]]
    commands += [["apply", "plans/a.plan.json"]]
    results = [run(folder, *args) for args in commands]
    # every command that reaches the closed port fails with one sentence (exit 1, last line "Error: ..."), and so
    # does apply, whose plan was made with the demo's configuration; the others succeed: validate, and with a
    # file PBX refresh, which never asks the source
    reaches_network = {"ldap": {"render", "plan", "explain", "sync"}, "azure": {"render", "plan", "explain", "sync"}}
    reaches_network["ldif"] = {"refresh", "plan", "explain", "sync"}
    reaches_network = {name: commands | {"apply"} for name, commands in reaches_network.items()}
    checked = []
    for r in results:
        command = command_of(r)[0]
        expected = 1 if command in reaches_network[source] else 0
        assert r.returncode == expected, (command_of(r), r.stderr[-800:])
        if expected:
            assert r.stderr.rstrip().splitlines()[-1].startswith("Error: "), (command_of(r), r.stderr[-800:])
            checked.append(command)
    assert sorted(checked) == sorted(reaches_network[source])  # the checks above really ran, for each
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


# -- the secret used with success: a bind to Samba AD and a sign-in to Entra ID, at trace level ----------


def success_commands(account: str) -> list[list[str]]:
    return [
        ["validate"],
        ["render"],
        ["plan", "-o", "plans/a.plan.json"],
        ["explain", account],
        ["apply", "plans/a.plan.json"],
        ["sync", "--yes"],
        ["plan", "--detailed-exitcode"],
    ]


def replace_source(folder: Path, source: str) -> None:
    config = (folder / "adsync.yaml").read_text()
    start, end = config.index("source:\n"), config.index("scope:\n")
    (folder / "adsync.yaml").write_text(config[:start] + source + config[end:])


def run_all_succeeding(folder: Path, secrets: dict[str, str], account: str) -> list[subprocess.CompletedProcess]:
    results = [run(folder, *args, secrets=secrets) for args in success_commands(account)]
    assert [r.returncode for r in results] == [0] * len(results), [(command_of(r), r.stderr[-800:]) for r in results]
    assert "Apply complete" in results[4].stdout
    assert any("DEBUG" in r.stderr for r in results)  # trace level really logged
    return results


@pytest.fixture
def case_domain():
    """A Samba AD DC (tests/servers/samba.py) holding the users of the golden case create_basic."""
    from tests.cases.make_cases import case_entries
    from tests.servers import samba

    groups = ["CN=PBX-Admins,OU=Groups,DC=example,DC=com", "CN=PBX-Users,OU=Groups,DC=example,DC=com"]
    try:
        domain = samba.start_domain_from_entries(case_entries("create_basic"), groups)
    except samba.Unavailable as err:
        if os.environ.get("ADSYNC_REQUIRE_LDAP_SERVERS") == "1":
            pytest.fail(f"ADSYNC_REQUIRE_LDAP_SERVERS=1 but: {err}")
        pytest.skip(f"Samba AD DC unavailable: {err}")
    yield domain
    domain.stop()


def set_reader_password(domain, password: str) -> None:
    """A fresh password for svc-reader, so the secret searched for is unique to this run."""
    import ldap3

    conn = domain.admin_connection()
    conn.modify(domain.reader_dn, {"unicodePwd": [(ldap3.MODIFY_REPLACE, [f'"{password}"'.encode("utf-16-le")])]})
    conn.unbind()


@pytest.mark.filterwarnings("ignore:ssl.match_hostname:DeprecationWarning")
def test_every_command_with_a_successful_ldap_bind_at_trace_level(tmp_path, case_domain):
    from tests.conftest import copy_case

    folder = copy_case("create_basic", tmp_path)
    secrets = {**SECRETS, "ADSYNC_LDAP_PASSWORD": f"Ldap-{uuid.uuid4().hex}!"}
    set_reader_password(case_domain, secrets["ADSYNC_LDAP_PASSWORD"])
    config = json.loads((folder / "adsync.yaml").read_text())  # the golden cases' configurations are JSON
    config["source"] = {
        "type": "ldap",
        "url": case_domain.ldaps_url,
        "bind_dn": case_domain.reader_dn,
        "password_env": "ADSYNC_LDAP_PASSWORD",
        "base_dn": "DC=example,DC=com",
        "ca_file": str(case_domain.ca_file),
        "tls_server_name": case_domain.server_name,
        "timeout": 30,
    }
    (folder / "adsync.yaml").write_text(json.dumps(config, indent=1))
    results = run_all_succeeding(folder, secrets, "jmueller")
    assert f"users from {case_domain.ldaps_url}" in results[1].stderr, results[1].stderr[-800:]  # bound, and read
    assert_no_secret(folder, results, secrets=secrets)


def test_every_command_with_a_successful_graph_sign_in_at_trace_level(tmp_path):
    from tests.servers.graph import GraphServer, graph_user, group_id

    folder = copy_demo(tmp_path)
    secrets = {**SECRETS, "ADSYNC_AZURE_CLIENT_SECRET": f"azure~{uuid.uuid4().hex}"}
    with GraphServer(client_secret=secrets["ADSYNC_AZURE_CLIENT_SECRET"]) as graph:
        graph.users = [graph_user(n, businessPhones=[f"+49 7022 27978-{n}"]) for n in range(22, 30)]
        graph.add_group(group_id("pbx-users"), [u["id"] for u in graph.users])
        graph.add_group(group_id("pbx-admins"), [])
        replace_source(
            folder,
            f"""source:
  type: azure
  tenant_id: {graph.tenant_id}
  client_id: {graph.client_id}
  client_secret_env: ADSYNC_AZURE_CLIENT_SECRET
  authority_host: {graph.base_url}
  graph_url: {graph.base_url}
  ca_file: {graph.ca_file}
  timeout: 30
""",
        )
        config = (folder / "adsync.yaml").read_text()
        config = config.replace("CN=PBX-Admins,OU=Groups,DC=example,DC=com", group_id("pbx-admins"))
        (folder / "adsync.yaml").write_text(
            config.replace("CN=PBX-Users,OU=Groups,DC=example,DC=com", group_id("pbx-users"))
        )
        results = run_all_succeeding(folder, secrets, "user000022")
        assert graph.counts["token:200"] >= 1 and graph.counts["users:200"] >= 1  # signed in, and read
    assert_no_secret(folder, results, secrets=secrets)
