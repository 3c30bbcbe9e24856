"""The case dossier (DESIGN §6): the JSON of GET /api/v1/cases/{number}/dossier and `gridloop audit
export`, checked the way a county would check it, by running tools/verify_dossier.py in a process of
its own; the printable page; who may read it and whose reading is logged.

The organisation is conftest's ORG_YAML: the case is in V01-D1-G01 (officer off1, leader gl1,
district leader dl1, secretary vs1); gl3 leads a grid of the other village; aud audits.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from apps import bearer, case_accesses, web_client
from conftest import GRID, REPO, changed

from engine import dossier as dossiers
from engine.clock import iso
from engine.events import GENESIS, Chain
from engine.specs import Bundle, deploy

API = "/api/v1"
CHECKER = REPO / "tools" / "verify_dossier.py"
ACCEPT = {"valid": True, "category": "resident_request", "severity": "normal"}
HASH = re.compile(r"[0-9a-f]{64}")


# ------------------------------------------------------------------ helpers


def check(path: Path) -> subprocess.CompletedProcess:
    """Run the standalone checker as someone holding only the file would."""
    return subprocess.run(
        [sys.executable, str(CHECKER), str(path)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        cwd=path.parent,
    )


def write(path: Path, dossier: dict) -> Path:
    path.write_text(json.dumps(dossier, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


class Api:
    """The JSON API as its users: one token each."""

    def __init__(self, app):
        self.app, self.client, self.tokens = app, app.test_client(), {}

    def headers(self, username: str) -> dict[str, str]:
        if username not in self.tokens:
            self.tokens[username] = bearer(self.client, username)
        return self.tokens[username]

    def get(self, username: str, path: str):
        return self.client.get(f"{API}{path}", headers=self.headers(username))

    def complete(self, username: str, number: str, data: dict) -> dict:
        [item] = [
            i
            for i in self.get(username, "/inbox").get_json()["items"]
            if i["case"]["number"] == number
        ]
        response = self.client.post(
            f"{API}/work-items/{item['id']}/complete",
            json={"data": data},
            headers=self.headers(username),
        )
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def archived(self) -> str:
        """A case run through the whole loop: the grid refers it up, the district resolves it,
        the owner checks with the resident, the district reports and the village approves."""
        response = self.client.post(
            f"{API}/cases",
            json={"grid": GRID, "title": "路灯坏了", "description": "村口路灯不亮"},
            headers=self.headers("off1"),
        )
        assert response.status_code == 201, response.get_json()
        number = response.get_json()["number"]
        self.complete("off1", number, {**ACCEPT, "note": "已核实"})
        self.complete("gl1", number, {"outcome": "refer_up", "note": "需要片长协调"})
        self.complete("dl1", number, {"outcome": "resolved", "note": "已修好"})
        self.complete("off1", number, {"satisfaction": "satisfied"})
        self.complete("dl1", number, {"summary": "路灯已更换"})
        case = self.complete("vs1", number, {"approved": True})
        assert case["status"] == "archived"
        return number

    def dossier(self, username: str, number: str) -> dict:
        response = self.get(username, f"/cases/{number}/dossier")
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.headers["Content-Disposition"] == (
            f"attachment; filename={number}.dossier.json"
        )
        return json.loads(response.get_data(as_text=True))


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def api(app) -> Api:
    return Api(app)


@pytest.fixture
def done(api) -> str:
    return api.archived()


# ------------------------------------------------------------------ the file and its checker


def test_a_dossier_of_the_whole_loop_passes_the_standalone_checker(api, done, tmp_path):
    dossier = api.dossier("gl1", done)
    assert set(dossier) == {"format", "case", "events", "head", "diagram"}
    assert dossier["format"] == "gridloop-dossier/1"
    assert dossier["case"] == api.get("gl1", f"/cases/{done}").get_json()
    events = api.get("gl1", f"/cases/{done}/events").get_json()
    assert dossier["events"] == events["events"]
    last = dossier["events"][-1]
    assert last["type"] == "archived"
    assert dossier["head"] == {"seq": last["seq"], "hash": last["hash"]}
    assert last["hash"] == events["head"]
    bundle = dossier["diagram"]
    assert bundle["hash"] == dossier["case"]["diagram"] and HASH.fullmatch(bundle["hash"])
    assert Bundle(bundle["files"]).sha256 == bundle["hash"]  # engine/specs.py's definition

    result = check(write(tmp_path / f"{done}.dossier.json", dossier))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"OK: case {done}, {last['seq']} events, head {last['seq']} {last['hash']}"
    ]


def test_one_edited_byte_in_an_events_data_fails_naming_that_seq(api, done, tmp_path):
    dossier = api.dossier("gl1", done)
    path = write(tmp_path / "d.json", dossier)
    [seq] = [e["seq"] for e in dossier["events"] if e["data"].get("note") == "已修好"]
    text = path.read_text(encoding="utf-8")
    assert text.count("已修好") == 1
    path.write_text(text.replace("已修好", "已修坏"), encoding="utf-8")

    result = check(path)
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"seq {seq}: hash does not match (stored "), lines
    assert len(lines) == 2 and lines[1].startswith("FAILED"), lines


def test_an_edited_diagram_file_fails_naming_the_bundle(api, done, tmp_path):
    dossier = api.dossier("gl1", done)
    files = dossier["diagram"]["files"]
    path = sorted(p for p in files if p.endswith(".json"))[0]
    files[path] = files[path].replace('"title"', '"Title"', 1)

    result = check(write(tmp_path / "d.json", dossier))
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    name = dossier["diagram"]["hash"][:12]
    assert lines[0].startswith(f"diagram {name}…: bundle hash does not match its files"), lines
    assert len(lines) == 2, lines  # the events still name a bundle the file carries


def test_a_removed_event_is_named(api, done, tmp_path):
    dossier = api.dossier("gl1", done)
    del dossier["events"][2]
    result = check(write(tmp_path / "d.json", dossier))
    assert result.returncode == 1
    assert "seq 4: expected seq 3" in result.stdout
    assert "seq 4: hash does not match" in result.stdout


def test_a_file_that_is_not_a_dossier_exits_2(tmp_path):
    (tmp_path / "x.json").write_text('{"format": "something else"}', encoding="utf-8")
    (tmp_path / "y.json").write_text("not json", encoding="utf-8")
    for name in ("x.json", "y.json", "missing.json"):
        result = check(tmp_path / name)
        assert result.returncode == 2, (name, result.stdout, result.stderr)


# ------------------------------------------------------------------ a migrated case


def test_a_case_that_ran_on_two_versions_carries_both(gl, session, registry, bundle, tmp_path):
    """A case moved to another version (its `migrated` event names the new one): the dossier
    carries both, in the order the events first name them, and still checks."""
    case = gl.accepted()
    old = case.diagram
    path = "workflows/bpmn/forms/accept.schema.json"
    newer, created = deploy(
        session,
        registry,
        changed(bundle, path, '"title": "受理"', '"title": "受理登记"'),
        "adm",
        gl.clock.now(),
    )
    assert created
    Chain.open(session, case).append(
        iso(gl.clock.now()),
        "migrated",
        "system",
        None,
        {"from": old.sha256, "to": newer.sha256},
        newer.sha256,
    )
    case.diagram_id = newer.id
    session.commit()
    case = gl.reload(case)

    dossier = dossiers.build(session, case, {"number": case.number, "diagram": newer.sha256})
    assert dossier["diagram"]["hash"] == newer.sha256
    assert [d["hash"] for d in dossier["diagrams"]] == [old.sha256, newer.sha256]
    for carried in dossier["diagrams"]:
        assert Bundle(carried["files"]).sha256 == carried["hash"]
    result = check(write(tmp_path / "d.json", dossier))
    assert result.returncode == 0, result.stdout

    del dossier["diagrams"]  # the old version's events then name a bundle it does not carry
    result = check(write(tmp_path / "d.json", dossier))
    assert result.returncode == 1
    assert f"seq 1: diagram {old.sha256[:12]}… is not carried" in result.stdout


def test_the_head_of_a_chain_without_events_is_the_genesis():
    assert dossiers.head_of([]) == {"seq": 0, "hash": GENESIS}


# ------------------------------------------------------------------ the command line


def test_audit_export_writes_the_apis_dossier(app, api, done, gridloop, tmp_path):
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    out = tmp_path / "export.json"
    gridloop(url, "audit", "export", done, "--out", str(out))
    text = out.read_text(encoding="utf-8")
    assert "路灯坏了" in text, "written as UTF-8, not \\u escapes"
    assert json.loads(text) == api.dossier("aud", done)
    assert json.loads(gridloop(url, "audit", "export", done)) == json.loads(text)
    assert "no case XDK-2026-999999" in gridloop(
        url, "audit", "export", "XDK-2026-999999", ok=False
    )


# ------------------------------------------------------------------ who may read it


def test_outside_a_grid_leaders_units_the_dossier_does_not_exist(app, api, done):
    response = api.get("gl3", f"/cases/{done}/dossier")
    assert response.status_code == 404 and response.get_json()["error"]["code"]
    client = web_client(app, "gl3")
    assert client.get(f"/cases/{done}/dossier").status_code == 404
    assert client.get(f"/cases/{done}/dossier.json").status_code == 404
    assert case_accesses(app) == []


def test_an_auditors_reading_is_logged_a_grid_leaders_is_not(app, api, done):
    api.dossier("gl1", done)
    web_client(app, "gl1").get(f"/cases/{done}/dossier")
    assert case_accesses(app) == []
    api.dossier("aud", done)
    assert case_accesses(app) == [("aud", "dossier")]
    auditor = web_client(app, "aud")
    assert auditor.get(f"/cases/{done}/dossier").status_code == 200
    assert auditor.get(f"/cases/{done}/dossier.json").status_code == 200
    assert case_accesses(app) == [("aud", "dossier")] * 3


# ------------------------------------------------------------------ the page


def test_the_page_shows_every_event_and_the_head_in_chinese_by_default(app, api, done):
    dossier = api.dossier("gl1", done)
    client = web_client(app, "gl1")
    page = client.get(f"/cases/{done}/dossier")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert dossier["head"]["hash"] in html
    assert dossier["diagram"]["hash"] in html
    assert "案件档案" in html and "链头哈希" in html and "Head hash" not in html
    assert html.count('data-testid="dossier-event"') == len(dossier["events"])
    assert "2026-11-23 10:00:00" in html, "times in Asia/Shanghai"
    assert "周信息员" in html, "actors by their names"
    assert "verify_dossier.py" in html
    assert f'href="/cases/{done}/dossier.json"' in html

    download = client.get(f"/cases/{done}/dossier.json")
    assert download.headers["Content-Disposition"] == f"attachment; filename={done}.dossier.json"
    assert json.loads(download.get_data(as_text=True)) == dossier
    checker = client.get("/dossier/verify_dossier.py")
    assert checker.status_code == 200
    assert checker.get_data() == CHECKER.read_bytes()

    case_page = client.get(f"/cases/{done}").get_data(as_text=True)
    assert f'href="/cases/{done}/dossier"' in case_page


def test_the_page_is_in_english_on_request(app, api, done):
    dossier = api.dossier("gl1", done)
    html = web_client(app, "gl1", lang="en").get(f"/cases/{done}/dossier").get_data(as_text=True)
    assert "Case dossier" in html and "Head hash" in html and "链头哈希" not in html
    assert dossier["head"]["hash"] in html


def test_the_page_needs_a_sign_in(app, done):
    response = app.test_client().get(f"/cases/{done}/dossier")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
