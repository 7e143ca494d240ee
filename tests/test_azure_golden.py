"""The core's golden cases with their directory served by Graph: the same desired state and the same plan as
from the LDIF.

Each case's directory (the data its directory.ldif is written from, tests/cases/make_cases.py; not the LDIF
read back by the project's parser) is converted to Entra ID objects (users with the Graph properties SPEC 4
maps, groups with their direct members, nesting kept) and served by the local Graph server; the case's
configuration gets an azure source and the scope groups' object ids. `render` must then give the same users
and held users, and `plan` the same changes and summary, as expected_plan.json. Diagnostics may differ only
in their wording, which names the entry (UPN instead of DN) and the Graph attribute names.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from adsync_plan import cli, pipeline
from adsync_plan.config import load_config
from adsync_plan.model import normalise_dn
from tests.cases.make_cases import case_entries
from tests.servers.graph import CLIENT_SECRET, GraphServer

CASES = Path(__file__).resolve().parent / "cases"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "adsync.yaml").exists())
ACCOUNT_DISABLED = 0x2


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in values or ()]


def _first(entry, name) -> str | None:
    values = _text(entry.get(name))
    return values[0] if values else None


def _rid(sid: bytes) -> int:
    """The RID: the last sub-authority of a binary objectSid (4 bytes, little-endian), read here rather than
    with the source's helper."""
    return int.from_bytes(sid[-4:], "little")


def _is(entry, kind: str) -> bool:
    classes = {c.lower() for c in _text(entry.get("objectclass"))}
    return kind in classes if kind != "group" else bool(classes & {"group", "groupofnames"})


def _is_user(entry) -> bool:
    return _is(entry, "person") and not (_is(entry, "computer") or _is(entry, "contact"))


class GraphTenant:
    """An LDIF directory as Entra ID objects: users (Graph properties) and groups (id -> direct members)."""

    def __init__(self, entries):
        # the case's entries as data (tests/cases/make_cases.py), attribute names in lower case: the tenant is
        # not read through the project's LDIF parser, so a parser bug cannot cancel out
        entries = [
            (dn, {k.lower(): v if isinstance(v, list) else [v] for k, v in entry.items()}) for dn, entry in entries
        ]
        self.ids: dict[str, str] = {}  # normalised DN -> object id
        self.users: list[dict] = []
        self.members: dict[str, set[str]] = {}  # group id -> direct member ids
        self.missing_account = False
        # an object id per entry (two entries may share a DN, as in r14), and per DN for references
        own = [self._own_id(dn, entry) for dn, entry in entries]
        for (dn, entry), me in zip(entries, own, strict=True):
            if _is(entry, "group"):
                self.members.setdefault(me, set())
            elif _is_user(entry):
                self.users.append(self._user(dn, entry, me))
        for (_, entry), me in zip(entries, own, strict=True):  # membership edges, both sides, as ldif reads them
            if not (_is(entry, "group") or _is_user(entry)):
                continue  # an AD contact or computer is no Graph user (Entra has its own kinds for them)
            for group in _text(entry.get("memberof")):
                self.members.setdefault(self._id(group), set()).add(me)
            if _is(entry, "group"):
                for member in _text(entry.get("member")):
                    self.members[me].add(self._id(member))
        self._primary_group_edges(entries, own)

    def _primary_group_edges(self, entries, own: list[str]) -> None:
        """AD's primary group (primaryGroupID, a RID) as the plain membership it is in Entra."""
        by_rid = {
            _rid(entry["objectsid"][0]): me
            for (_, entry), me in zip(entries, own, strict=True)
            if _is(entry, "group") and entry.get("objectsid")
        }
        for (_, entry), me in zip(entries, own, strict=True):
            primary = _first(entry, "primarygroupid")
            if _is_user(entry) and primary and int(primary) in by_rid:
                self.members[by_rid[int(primary)]].add(me)

    def _own_id(self, dn: str, entry) -> str:
        guid = entry.get("objectguid")
        me = str(uuid.UUID(bytes_le=guid[0])) if guid else str(uuid.uuid5(uuid.NAMESPACE_X500, normalise_dn(dn)))
        self.ids[normalise_dn(dn)] = me
        return me

    def _id(self, dn: str) -> str:
        return self.ids.setdefault(normalise_dn(dn), str(uuid.uuid5(uuid.NAMESPACE_X500, normalise_dn(dn))))

    def _user(self, dn: str, entry, me: str) -> dict:
        sam = _first(entry, "samaccountname")
        self.missing_account |= sam is None
        uac = _first(entry, "useraccountcontrol")
        faxes = _text(entry.get("facsimiletelephonenumber")) + _text(entry.get("otherfacsimiletelephonenumber"))
        assert len(faxes) <= 1, f"{dn}: Graph's faxNumber holds one value; this case needs a different converter"
        return {
            "id": me,
            "userPrincipalName": f"{sam or me}@example.com",
            "onPremisesSamAccountName": sam,
            "onPremisesDistinguishedName": dn,
            "givenName": _first(entry, "givenname"),
            "surname": _first(entry, "sn"),
            "mail": _first(entry, "mail"),
            "businessPhones": _text(entry.get("telephonenumber")) + _text(entry.get("othertelephone")),
            "faxNumber": faxes[0] if faxes else None,
            "accountEnabled": not (int(uac) & ACCOUNT_DISABLED) if uac and uac.isdigit() else True,
        }

    def serve(self, server: GraphServer) -> None:
        server.users = self.users
        for gid, members in self.members.items():
            server.add_group(gid, sorted(members))

    def azure_config(self, config: dict, server: GraphServer) -> dict:
        """The case's configuration with an azure source and the scope groups as object ids."""
        out = json.loads(json.dumps(config))
        out["source"] = {k: v for k, v in server.source_settings().items() if k != "timeout"}
        for key in ("admin_groups", "user_groups"):
            out["scope"][key] = [self._id(dn) for dn in config["scope"][key]]
        for entry in out.get("pbx_groups", {}).get("map", ()):  # issue 16: mapped groups by object id too
            entry["directory_group"] = self._id(entry["directory_group"])
        if self.missing_account:
            # Graph always has a userPrincipalName, whose local part would stand in for a missing
            # sAMAccountName; to compare with AD, read the account from onPremisesSamAccountName alone.
            out.setdefault("attributes", {})["account"] = "onPremisesSamAccountName"
        return out


@pytest.fixture
def graph(monkeypatch):
    monkeypatch.setenv("GRAPH_TEST_SECRET", CLIENT_SECRET)
    with GraphServer() as server:
        yield server


def azure_case(name: str, tmp_path: Path, server: GraphServer) -> tuple[Path, Path]:
    """Copies of the case: (ldif/adsync.yaml, azure/adsync.yaml), the latter served by `server`."""
    ldif_dir, azure_dir = tmp_path / "ldif", tmp_path / "azure"
    for target in (ldif_dir, azure_dir):
        shutil.copytree(CASES / name, target, ignore=shutil.ignore_patterns("expected_*"))
    tenant = GraphTenant(case_entries(name))
    tenant.serve(server)
    config = _load_plain(ldif_dir / "adsync.yaml")
    (azure_dir / "adsync.yaml").write_text(json.dumps(tenant.azure_config(config, server), indent=1))
    (azure_dir / "directory.ldif").unlink()
    _bind_groups_by_object_id(azure_dir / "states" / "pbx.yaml", tenant)
    return ldif_dir / "adsync.yaml", azure_dir / "adsync.yaml"


def _bind_groups_by_object_id(snapshot: Path, tenant: GraphTenant) -> None:
    """A case's snapshot binds its PBX groups by the mapped group's DN (`map:<dn>`); on Entra ID the key is
    the group's object id (the bindings are outside the fingerprint, so the snapshot stays valid)."""
    if not snapshot.exists():
        return
    doc = json.loads(snapshot.read_text(encoding="utf-8"))
    doc["group_bindings"] = {
        f"map:{tenant._id(key.removeprefix('map:'))}" if key.startswith("map:") else key: gid
        for key, gid in doc.get("group_bindings", {}).items()
    }
    snapshot.write_text(json.dumps(doc, indent=1), encoding="utf-8")


def _load_plain(path: Path) -> dict:
    from ruamel.yaml import YAML

    return json.loads(json.dumps(YAML(typ="safe").load(path.read_text(encoding="utf-8"))))


def desired_view(config_path: Path) -> tuple[dict, list]:
    """What must agree between sources: each desired user (shape and source id) and each held user's codes."""
    state = pipeline.render(load_config(config_path))
    users = {a: (u.source_id, u.user.to_dict()) for a, u in state.rendered.desired.items()}
    held = [(h.address, h.account, h.source_id, h.email, [d.code for d in h.diagnostics]) for h in state.rendered.held]
    return users, held


def plan_view(config_path: Path, capsys, extra=()) -> dict:
    capsys.readouterr()
    code = cli.run(["plan", "-c", str(config_path), "--json", *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    plan = json.loads(out)
    return {
        "changes": plan["changes"],
        # the binding key names the directory group: its DN here, its object id there
        "group_changes": [{k: v for k, v in g.items() if k != "key"} for g in plan.get("group_changes", [])],
        "summary": plan["summary"],
        "overrides": plan["overrides"],
        "base_state": plan["base_state"]["fingerprint"],
        "diagnostics": [(d["severity"], d["code"], d["address"]) for d in plan["diagnostics"]],
    }


@pytest.mark.parametrize("name", CASE_NAMES)
def test_graph_gives_the_same_desired_state_and_plan_as_the_ldif(name, graph, tmp_path, capsys):
    ldif_config, azure_config = azure_case(name, tmp_path, graph)

    ldif_users, ldif_held = desired_view(ldif_config)
    azure_users, azure_held = desired_view(azure_config)

    assert ldif_users or ldif_held, "the case renders nothing; the comparison would prove nothing"
    assert azure_users == ldif_users
    assert azure_held == ldif_held
    assert graph.counts["users:200"] >= 1 and graph.counts["token:200"] == 1

    extra = ("--allow-mass-orphan",) if name == "r13_safety" else ()
    expected = json.loads((CASES / name / "expected_plan.json").read_text(encoding="utf-8"))
    azure_plan = plan_view(azure_config, capsys, extra)
    assert azure_plan["changes"] == expected["changes"]
    assert azure_plan["group_changes"] == [
        {k: v for k, v in g.items() if k != "key"} for g in expected.get("group_changes", [])
    ]
    assert azure_plan["summary"] == expected["summary"]
    assert azure_plan["overrides"] == expected["overrides"]
    assert azure_plan["diagnostics"] == [(d["severity"], d["code"], d["address"]) for d in expected["diagnostics"]]
