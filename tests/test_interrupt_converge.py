"""Convergence, proved: a real apply of a plan with every kind of action (creates, some with the admin
permission; updates that move numbers between users; orphans whose numbers go to new users; admin grants)
is stopped at sampled steps by Ctrl-C and by kill -9, on the file PBX and on the STARFACE test server; then
plan and apply again. No PBX user is created twice, every created user is bound, every file parses, there is
one audit record per apply, and the final plan has no changes.

The process signals itself at the chosen point (ADSYNC_PLAN_TEST_SIGNAL, see interrupts.test_hook), so each
interruption is exact and costs one process. Steps sampled: the first and the last, the first of each kind,
and one in the middle of the creates; on the STARFACE, where every run is slower, Ctrl-C and kill -9 at
the first and the last, and in turn at the others.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from adsync_plan.planfile import load_plan
from adsync_plan.providers.starface import StarfaceProvider
from adsync_plan.steps import plan_steps
from tests import ldifgen
from tests.servers.starface import PASSWORD_ENV, StarfaceServer, export_pbx_file, seed_from_pbx_file
from tests.test_interrupt import HOOK, audit, leftovers, run

PREFIX = "+49702227978"
USERS_GROUP = "CN=PBX-Users,OU=Groups,DC=example,DC=com"
ADMINS_GROUP = "CN=PBX-Admins,OU=Groups,DC=example,DC=com"


def number(k: int) -> str:
    return f"5{k:02d}"


def pbx_document() -> dict:
    """PBX users 1..40, each with internal 5kk (primary, login ID) and external +49702227978 5kk; numbers up
    to 599 free."""
    users = [
        {
            "id": k,
            "login_id": number(k),
            "first_name": "Vorname",
            "last_name": f"Nachname{k}",
            "email": f"u{k}@example.com",
            "is_admin": False,
            "primary_internal_number": number(k),
        }
        for k in range(1, 41)
    ]
    numbers = []
    for k in range(1, 100):
        owner = k if k <= 40 else None
        service = "standard" if owner else None
        numbers.append({"number": number(k), "type": "internal", "owner": owner, "service": service})
        numbers.append({"number": PREFIX + number(k), "type": "external", "owner": owner, "service": service})
    return {"format_version": 1, "users": users, "numbers": numbers}


def directory() -> str:
    """1..10 take the external number of 11..20 (who keep only their internal one); 21..30 are gone
    (orphans, their external numbers freed); 31..40 join the admins; 41..65 are new, 56..60 with an orphan's
    external number, 61..65 admins."""
    entries, users, admins = [], [], []
    for k in list(range(1, 21)) + list(range(31, 66)):
        phones = {"telephoneNumber": PREFIX + number(k)}
        if k <= 10:
            phones["otherTelephone"] = [PREFIX + number(k + 10)]
        elif k <= 20:
            phones = {"telephoneNumber": number(k)}
        elif 56 <= k <= 60:
            phones = {"telephoneNumber": number(k), "otherTelephone": [PREFIX + number(k - 35)]}
        dn, text = ldifgen.user(
            k,
            f"User {k}",
            sAMAccountName=f"user{k}",
            givenName="Vorname",
            sn=f"Nachname{k}",
            mail=f"u{k}@example.com",
            **phones,
        )
        entries.append(text)
        (admins if k >= 31 and (k <= 40 or k > 60) else users).append(dn)
    entries.append(ldifgen.group("PBX-Users", users, n=1)[1])
    entries.append(ldifgen.group("PBX-Admins", admins, n=2)[1])
    return ldifgen.document(entries)


def make_project(folder: Path, srv: StarfaceServer | None) -> Path:
    folder.mkdir(parents=True)
    (folder / "directory.ldif").write_text(directory(), encoding="utf-8")
    if srv is None:
        pbx = {"type": "file", "path": "pbx.yaml"}
        (folder / "pbx.yaml").write_text(json.dumps(pbx_document()))
    else:
        seed_from_pbx_file(srv, pbx_document())
        pbx = {"type": "starface", "url": srv.url, "login_id": srv.login, "password_env": PASSWORD_ENV, "timeout": 5}
    config = {
        "version": 1,
        "source": {"type": "ldif", "path": "directory.ldif"},
        "scope": {"admin_groups": [ADMINS_GROUP], "user_groups": [USERS_GROUP]},
        "numbering": {"country": "DE", "blocks": [{"external_prefix": PREFIX, "internal_prefix": ""}]},
        "pbx": {**pbx, "licenses": None},
        "safety": {"max_orphans": 20, "min_source_ratio": 0.1},
    }
    (folder / "adsync.yaml").write_text(json.dumps(config, indent=1))
    return folder


def sampled_points(steps) -> list[int]:
    """1-based step numbers: first, last, the first of each kind, one in the middle of the creates."""
    points = {1, len(steps)}
    kinds = {}
    for n, step in enumerate(steps, 1):
        kinds.setdefault(step.kind, n)
    creates = [n for n, s in enumerate(steps, 1) if s.kind == "create"]
    return sorted(points | set(kinds.values()) | {creates[len(creates) // 2]})


def signals_at(points: list[int]) -> list[tuple[str, int]]:
    """Both signals at the first and the last step, one of them in turn at the others (time: each is a process)."""
    ends = (points[0], points[-1])
    return [
        (sig, n) for i, n in enumerate(points) for sig in ("INT", "KILL") if n in ends or sig == ("INT", "KILL")[i % 2]
    ]


def check_files(folder: Path) -> None:
    """Every file parses: snapshot, audit (each line), plans, and the file PBX."""
    json.loads((folder / "states" / "pbx.yaml").read_text())
    audit(folder)
    for plan in folder.glob("*.plan.json"):
        json.loads(plan.read_text())
    if (folder / "pbx.yaml").exists():
        json.loads((folder / "pbx.yaml").read_text())
    assert leftovers(folder) == []


def bound_logins(folder: Path) -> dict[str, str]:
    snapshot = json.loads((folder / "states" / "pbx.yaml").read_text())
    return {source: snapshot["users"][pbx_id]["login_id"] for source, pbx_id in snapshot["bindings"].items()}


def interrupt_then_converge(cli, folder: Path, point: str, expected: dict) -> None:
    cfg = folder / "adsync.yaml"
    code, _, err = cli("plan", "-c", cfg, "-o", folder / "first.plan.json")
    assert code == 0, err
    stopped = run("apply", "-c", cfg, folder / "first.plan.json", **{HOOK: point})
    if point.startswith("INT"):
        last = point.endswith(f"step:{expected['steps']}")
        assert stopped.returncode == (0 if last else 130), stopped.stderr
        if not last:
            assert "run plan again to converge" in stopped.stderr
        assert leftovers(folder) == [] and len(audit(folder)) == 1
    else:
        assert stopped.returncode == -signal.SIGKILL, stopped.stderr
        assert audit(folder) == []
    code, _, err = cli("plan", "-c", cfg, "-o", folder / "second.plan.json")
    assert code == 0, f"{point}: {err}"
    code, _, err = cli("apply", "-c", cfg, folder / "second.plan.json")
    assert code == 0, f"{point}: {err}"
    code, out, err = cli("plan", "-c", cfg, "--detailed-exitcode")
    assert code == 0 and "No changes." in out, f"{point}: {out}{err}"
    check_files(folder)
    records = audit(folder)
    assert len(records) == 2 and len({r["plan_id"] for r in records}) == 2, f"{point}: {records}"
    assert records[-1]["result"] == "applied"
    assert bound_logins(folder) == expected["bound"], point  # every user bound, none created twice
    snapshot = json.loads((folder / "states" / "pbx.yaml").read_text())
    logins = [u["login_id"] for u in snapshot["users"].values()]
    assert len(logins) == len(set(logins)) == 65, point


def reference(cli, folder: Path) -> dict:
    """The uninterrupted apply: its steps and the bindings it ends with."""
    cfg = folder / "adsync.yaml"
    code, out, err = cli("plan", "-c", cfg, "-o", folder / "p.plan.json", "--json")
    assert code == 0, err
    plan = load_plan(folder / "p.plan.json")
    kinds = {a.action for a in plan.changes}
    assert len(plan.changes) >= 50 and kinds == {"create", "update", "orphan"}, plan.summary
    steps = plan_steps(plan.changes)
    assert {s.kind for s in steps} == {"release", "create", "update", "admin", "assign", "primary"}
    assert any(s.kind == "admin" and plan.changes[s.index].action == "update" for s in steps)  # admin grants
    assert cli("apply", "-c", cfg, folder / "p.plan.json")[0] == 0
    return {"steps": len(steps), "points": sampled_points(steps), "bound": bound_logins(folder)}


@pytest.fixture(autouse=True)
def password(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, StarfaceServer().password)
    monkeypatch.setattr(StarfaceProvider, "backoff", 0.01)


def test_file_pbx_interrupted_at_every_sampled_step_converges(cli, tmp_path):
    expected = reference(cli, make_project(tmp_path / "reference", None))
    points = [f"INT@step:{n}" for n in expected["points"]] + ["KILL@step:1", "KILL@flushed"]
    for point in points:
        folder = make_project(tmp_path / point.replace("@", "-").replace(":", "-"), None)
        interrupt_then_converge(cli, folder, point, expected)


def test_starface_interrupted_at_every_sampled_step_converges(cli, tmp_path):
    with StarfaceServer() as srv:
        expected = reference(cli, make_project(tmp_path / "reference", srv))
    points = [f"{sig}@step:{n}" for sig, n in signals_at(expected["points"])]
    for point in points:
        with StarfaceServer() as srv:
            folder = make_project(tmp_path / point.replace("@", "-").replace(":", "-"), srv)
            interrupt_then_converge(cli, folder, point, expected)
            srv.check_consistency()
            assert srv.errors == [] and "DELETE /users/{id}" not in srv.counts
            assert len(export_pbx_file(srv)["users"]) == 65
