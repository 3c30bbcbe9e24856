"""Diagram versions as an administrator handles them (DESIGN §8; issue 10, item 3): deploying a
bundle through POST /diagrams and `gridloop diagrams deploy`, the list with the live version and
the cases on each, rollback by activating an older version, the diff between two versions, and
the pages under /admin/diagrams. Every deploy and activation is on the administration log.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from apps import bearer, web_client
from click.testing import CliRunner
from conftest import REPO, changed

from engine import admin_log
from engine.diagram_diff import diff_bundles
from engine.specs import Bundle, load_bundle
from webapp.cli import main
from webapp.extensions import db

API = "/api/v1"
TIME_LIMIT = "rules/time_limit.dmn"
ACCEPT_FORM = "workflows/bpmn/forms/accept.schema.json"
DIAGRAM = "workflows/bpmn/case_loop.bpmn"
# Row time_limit_r0: an urgent case handled at the grid gets 2 clock hours; the new version 3.
TWO_HOURS = '<outputEntry id="time_limit_r0_o0"><text>2</text></outputEntry>'
THREE_HOURS = '<outputEntry id="time_limit_r0_o0"><text>3</text></outputEntry>'


@pytest.fixture(scope="module")
def repo_bundle() -> Bundle:
    return load_bundle(REPO)


@pytest.fixture(scope="module")
def longer_limit(repo_bundle) -> Bundle:
    """The repository's bundle with one time limit changed: 2 → 3 hours in rule time_limit_r0."""
    return changed(repo_bundle, TIME_LIMIT, TWO_HOURS, THREE_HOURS, once=True)


@pytest.fixture(scope="module")
def wrong_lane(repo_bundle) -> Bundle:
    """The grid leaders' lane renamed to something that is not one of the five tiers."""
    return changed(repo_bundle, DIAGRAM, 'name="grid_leader"', 'name="grid_boss"', once=True)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def adm(client):
    return bearer(client, "adm")


def versions_of(client, headers) -> list[dict]:
    answer = client.get(f"{API}/diagrams", headers=headers)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["items"]


def live_hash(client, headers) -> str:
    live = [v["hash"] for v in versions_of(client, headers) if v["live"]]
    assert len(live) == 1, live
    return live[0]


def deploy(client, headers, bundle: Bundle, **body):
    return client.post(f"{API}/diagrams", json={"files": bundle.files, **body}, headers=headers)


def log_entries(app, type_: str | None = None) -> list[dict]:
    """The administration log, oldest first, as {type, actor, data}."""
    with app.app_context():
        rows = admin_log.entries(db.session, limit=1000, type_=type_)
        found = [{"type": r.type, "actor": r.actor, "data": json.loads(r.data)} for r in rows]
        db.session.remove()
    return found[::-1]


def open_case(client, headers, **body) -> dict:
    answer = client.post(
        f"{API}/cases", json={"title": "路灯坏了", "grid": "V01-D1-G01", **body}, headers=headers
    )
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()


# ------------------------------------------------------------------ deploy


def test_an_administrator_deploys_a_new_version_and_new_cases_start_on_it(
    app, client, adm, repo_bundle, longer_limit
):
    [first] = versions_of(client, adm)
    assert first["hash"] == repo_bundle.sha256 and first["live"]
    assert first["deployed_by"] == "system" and first["processes"] == ["campaign", "case_loop"]

    answer = deploy(client, adm, longer_limit, comment="网格紧急处置延长到 3 小时")
    assert answer.status_code == 201, answer.get_json()
    version = answer.get_json()
    assert version["hash"] == longer_limit.sha256
    assert version["live"] is True
    assert version["deployed_by"] == "adm"
    assert version["comment"] == "网格紧急处置延长到 3 小时"
    assert (version["cases_open"], version["cases_total"]) == (0, 0)
    assert live_hash(client, adm) == longer_limit.sha256

    officer = bearer(client, "off1")
    assert open_case(client, officer)["diagram"] == longer_limit.sha256

    again = deploy(client, adm, longer_limit, comment="again")
    assert again.status_code == 200 and again.get_json()["hash"] == longer_limit.sha256
    assert len(versions_of(client, adm)) == 2

    detail = client.get(f"{API}/diagrams/{longer_limit.sha256}", headers=adm).get_json()
    assert detail["files"] == longer_limit.files and detail["cases_total"] == 1

    deployed = log_entries(app, "diagram_deployed")
    assert [(e["actor"], e["data"]["hash"], e["data"]["live"]) for e in deployed] == [
        ("adm", longer_limit.sha256, True)
    ]
    assert deployed[0]["data"]["comment"] == "网格紧急处置延长到 3 小时"


def test_a_version_deployed_without_activation_is_stored_but_not_live(
    app, client, adm, repo_bundle, longer_limit
):
    answer = deploy(client, adm, longer_limit, activate=False)
    assert answer.status_code == 201 and answer.get_json()["live"] is False
    assert live_hash(client, adm) == repo_bundle.sha256
    assert open_case(client, bearer(client, "off1"))["diagram"] == repo_bundle.sha256
    # Deploying the same files again, live this time, makes the stored version live.
    assert deploy(client, adm, longer_limit).status_code == 200
    assert live_hash(client, adm) == longer_limit.sha256
    assert [e["type"] for e in log_entries(app)] == ["diagram_deployed", "diagram_activated"]


@pytest.mark.parametrize("username", ["off1", "gl1", "tl1", "aud", "ps1"])
def test_only_administrators_may_list_deploy_activate_or_diff(
    client, adm, username, longer_limit, repo_bundle
):
    headers = bearer(client, username)
    sha = repo_bundle.sha256
    calls = [
        client.get(f"{API}/diagrams", headers=headers),
        client.get(f"{API}/diagrams/{sha}", headers=headers),
        deploy(client, headers, longer_limit),
        # Who may do it is checked before what was sent: an empty body is still 403.
        client.post(f"{API}/diagrams", json={}, headers=headers),
        client.post(f"{API}/diagrams/{sha}/activate", json={}, headers=headers),
        client.get(f"{API}/diagrams/{sha}/diff/{sha}", headers=headers),
    ]
    assert [c.status_code for c in calls] == [403] * len(calls)
    assert live_hash(client, adm) == repo_bundle.sha256


def test_signed_out_callers_get_401(client, longer_limit, repo_bundle):
    sha = repo_bundle.sha256
    assert client.get(f"{API}/diagrams").status_code == 401
    assert client.post(f"{API}/diagrams", json={"files": longer_limit.files}).status_code == 401
    assert client.post(f"{API}/diagrams/{sha}/activate", json={}).status_code == 401
    assert client.get(f"{API}/diagrams/{sha}/diff/{sha}").status_code == 401


def test_an_invalid_bundle_is_refused_naming_the_element_and_the_live_version_stays(
    app, client, adm, repo_bundle, wrong_lane
):
    answer = deploy(client, adm, wrong_lane, comment="rename a lane")
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["code"] == "invalid_bundle" and error["message"]
    problems = error["problems"]
    assert problems and all({"file", "element", "message"} <= set(p) for p in problems)
    # The lane, or a task that stands in it (whichever validation names), in the diagram's file.
    lane = re.search(
        r'<bpmn:lane id="lane_grid_leader".*?</bpmn:lane>', wrong_lane.files[DIAGRAM], re.S
    ).group(0)
    in_lane = {"lane_grid_leader", *re.findall(r"<bpmn:flowNodeRef>(\w+)<", lane)}
    assert any(p["element"] in in_lane for p in problems), problems
    assert any("grid_boss" in p["message"] for p in problems), problems

    items = versions_of(client, adm)
    assert [(v["hash"], v["live"]) for v in items] == [(repo_bundle.sha256, True)]
    assert log_entries(app) == []
    assert open_case(client, bearer(client, "off1"))["diagram"] == repo_bundle.sha256


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "files"),
        ({"files": []}, "files"),
        ({"files": {}}, "files"),
        ({"files": {"workflows/bpmn/x.bpmn": 7}}, "files"),
        ({"files": {"../etc/passwd.bpmn": "<x/>"}}, "files.../etc/passwd.bpmn"),
        ({"files": {"workflows/bpmn/notes.txt": "hi"}}, "files.workflows/bpmn/notes.txt"),
        ({"files": {"elsewhere/x.bpmn": "<x/>"}}, "files.elsewhere/x.bpmn"),
        ({"files": {"rules/x.dmn": "<a>\x00</a>"}}, "files.rules/x.dmn"),
        ({"files": {"rules/x.dmn": "<a/>"}, "activate": "often"}, "activate"),
        ({"files": {"rules/x.dmn": "<a/>"}, "comment": "x" * 2001}, "comment"),
    ],
)
def test_a_malformed_deploy_is_a_400_naming_the_field(client, adm, body, field):
    answer = client.post(f"{API}/diagrams", json=body, headers=adm)
    assert answer.status_code == 400, answer.get_json()
    error = answer.get_json()["error"]
    assert error["code"] == "invalid" and any(k.startswith(field) for k in error["fields"]), error


# ------------------------------------------------------------------ activate (rollback)


def test_rollback_activates_the_older_version_and_the_list_counts_cases(
    app, client, adm, repo_bundle, longer_limit
):
    old, new = repo_bundle.sha256, longer_limit.sha256
    assert deploy(client, adm, longer_limit).status_code == 201
    officer = bearer(client, "off1")
    on_new = [open_case(client, officer)["number"] for _ in range(2)]

    rollback = client.post(
        f"{API}/diagrams/{old}/activate", json={"comment": "3 小时太长，回退"}, headers=adm
    )
    assert rollback.status_code == 200, rollback.get_json()
    assert rollback.get_json()["hash"] == old and rollback.get_json()["live"] is True
    assert live_hash(client, adm) == old
    opened = open_case(client, officer)
    assert opened["diagram"] == old

    # One of the cases on the new version is rejected at accept: closed, still counted in all.
    item = next(
        i
        for i in client.get(f"{API}/inbox", headers=officer).get_json()["items"]
        if i["case"]["number"] == on_new[0] and i["task"] == "accept"
    )
    rejected = client.post(
        f"{API}/work-items/{item['id']}/complete",
        json={"data": {"valid": False, "note": "重复上报"}},
        headers=officer,
    )
    assert rejected.status_code == 200 and rejected.get_json()["status"] == "rejected"

    counts = {
        v["hash"]: (v["live"], v["cases_open"], v["cases_total"]) for v in versions_of(client, adm)
    }
    assert counts == {old: (True, 1, 1), new: (False, 1, 2)}

    activated = log_entries(app, "diagram_activated")
    assert [(e["actor"], e["data"]["hash"], e["data"]["comment"]) for e in activated] == [
        ("adm", old, "3 小时太长，回退")
    ]
    # Activating the live version again changes nothing and logs nothing.
    assert client.post(f"{API}/diagrams/{old}/activate", json={}, headers=adm).status_code == 200
    assert len(log_entries(app, "diagram_activated")) == 1
    # Forward again, with the clock standing still: the activation still takes.
    assert client.post(f"{API}/diagrams/{new}/activate", json={}, headers=adm).status_code == 200
    assert live_hash(client, adm) == new
    assert open_case(client, officer)["diagram"] == new


def test_activating_or_diffing_an_unknown_version_is_404(client, adm, repo_bundle):
    sha = repo_bundle.sha256
    for path in (f"/diagrams/{'0' * 64}", f"/diagrams/{sha[:12]}", f"/diagrams/{sha}/diff/nope"):
        assert client.get(f"{API}{path}", headers=adm).status_code == 404, path
    missing = client.post(f"{API}/diagrams/{'f' * 64}/activate", json={}, headers=adm)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"


# ------------------------------------------------------------------ diff


def test_the_diff_names_the_changed_rule_and_nothing_else(client, adm, repo_bundle, longer_limit):
    assert deploy(client, adm, longer_limit).status_code == 201
    a, b = repo_bundle.sha256, longer_limit.sha256
    answer = client.get(f"{API}/diagrams/{a}/diff/{b}", headers=adm)
    assert answer.status_code == 200
    nothing = {"added": [], "removed": [], "changed": []}
    assert answer.get_json() == {
        "elements": nothing,
        "rules": {"added": [], "removed": [], "changed": ["time_limit_r0"]},
        "forms": nothing,
    }
    same = client.get(f"{API}/diagrams/{a}/diff/{a}", headers=adm).get_json()
    assert same == {"elements": nothing, "rules": nothing, "forms": nothing}


def test_a_form_field_added_shows_as_added(client, adm, repo_bundle):
    form = json.loads(repo_bundle.files[ACCEPT_FORM])
    form["properties"]["place"] = {"type": "string", "title": "地点", "maxLength": 200}
    with_place = Bundle({**repo_bundle.files, ACCEPT_FORM: json.dumps(form, ensure_ascii=False)})
    assert deploy(client, adm, with_place).status_code == 201
    diff = client.get(
        f"{API}/diagrams/{repo_bundle.sha256}/diff/{with_place.sha256}", headers=adm
    ).get_json()
    assert diff["forms"] == {
        "added": ["forms/accept.schema.json#place"],
        "removed": [],
        "changed": [],
    }
    assert diff["elements"]["changed"] == [] and diff["rules"]["changed"] == []
    back = client.get(
        f"{API}/diagrams/{with_place.sha256}/diff/{repo_bundle.sha256}", headers=adm
    ).get_json()
    assert back["forms"]["removed"] == ["forms/accept.schema.json#place"]


def test_moving_shapes_is_no_change_but_a_timer_or_a_field_schema_is(repo_bundle):
    files = repo_bundle.files
    moved = re.sub(r' x="(\d+)"', lambda m: f' x="{int(m.group(1)) + 40}"', files[DIAGRAM])
    assert moved != files[DIAGRAM]
    assert diff_bundles(files, {**files, DIAGRAM: moved}).empty

    earlier = files[DIAGRAM].replace("limit_hours * 0.8", "limit_hours * 0.7", 1)
    diff = diff_bundles(files, {**files, DIAGRAM: earlier})
    [entry] = diff.elements.changed
    assert entry.kind == "boundaryEvent" and entry.name  # the event, by its name, not its timer
    [what] = entry.changes
    assert what.name == "timerEventDefinition/timeDate" and "0.7" in what.after
    assert not diff.rules and not diff.forms

    form = json.loads(files[ACCEPT_FORM])
    form["properties"]["note"]["maxLength"] = 500
    diff = diff_bundles(files, {**files, ACCEPT_FORM: json.dumps(form)})
    assert diff.as_json()["forms"]["changed"] == ["forms/accept.schema.json#note"]
    [change] = diff.forms.changed[0].changes
    assert (change.name, change.before, change.after) == ("maxLength", "2000", "500")


# ------------------------------------------------------------------ CLI


def bundle_dir(folder: Path, bundle: Bundle) -> Path:
    for path, text in bundle.files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def cli(app, monkeypatch):
    """`gridloop ...` on the app's database."""
    monkeypatch.setenv("GRIDLOOP_DATABASE_URL", app.config["SQLALCHEMY_DATABASE_URI"])
    monkeypatch.setenv("GRIDLOOP_CHEAP_PASSWORDS", "1")
    monkeypatch.delenv("GRIDLOOP_REDIS_URL", raising=False)
    runner = CliRunner()

    def run(*args: str, status: int = 0) -> str:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == status, result.output
        return result.output

    return run


def test_cli_deploys_with_a_comment_without_activating_then_lists(
    app, client, adm, cli, tmp_path, repo_bundle, longer_limit
):
    folder = bundle_dir(tmp_path / "bundle", longer_limit)
    short = longer_limit.sha256[:12]
    stored = cli("diagrams", "deploy", str(folder), "--comment", "延长时限", "--no-activate")
    assert short in stored and "not live" in stored
    assert live_hash(client, adm) == repo_bundle.sha256

    listed = cli("diagrams", "list").splitlines()
    assert len(listed) == 2
    # The whole hash, which `cases migrate --to` takes (a CLI sweep found only 12 characters).
    new_line = next(line for line in listed if longer_limit.sha256 in line)
    old_line = next(line for line in listed if repo_bundle.sha256 in line)
    assert new_line.startswith(" ") and "延长时限" in new_line and "cli" in new_line
    assert old_line.startswith("*") and "open 0 / total 0" in old_line

    made_live = cli("diagrams", "deploy", str(folder))
    assert "made live" in made_live
    assert live_hash(client, adm) == longer_limit.sha256
    assert next(line for line in cli("diagrams", "list").splitlines() if short in line)[0] == "*"
    assert "already live" in cli("diagrams", "deploy", str(folder))

    entries = [(e["type"], e["actor"], e["data"]["hash"]) for e in log_entries(app)]
    assert entries == [
        ("diagram_deployed", "cli", longer_limit.sha256),
        ("diagram_activated", "cli", longer_limit.sha256),
    ]
    assert log_entries(app)[0]["data"]["comment"] == "延长时限"


def test_cli_refuses_an_invalid_bundle_listing_its_problems(
    app, client, adm, cli, tmp_path, repo_bundle, wrong_lane
):
    folder = bundle_dir(tmp_path / "bundle", wrong_lane)
    output = cli("diagrams", "deploy", str(folder), status=1)
    assert "live version is unchanged" in output
    assert "grid_boss" in output and "case_loop.bpmn" in output
    assert live_hash(client, adm) == repo_bundle.sha256
    assert log_entries(app) == []


@pytest.mark.parametrize("admin_first", [False, True])
def test_init_db_stores_a_new_repository_bundle_and_makes_it_live_only_over_its_own(
    make_app, monkeypatch, repo_bundle, longer_limit, admin_first
):
    """The database starts on an older repository bundle (here: longer_limit, by "system");
    the repository now holds repo_bundle. init-db makes it live over that, but only stores it
    when an administrator's version is live."""
    app = make_app(bundle=longer_limit)
    client = app.test_client()
    adm = bearer(client, "adm")
    form = json.loads(longer_limit.files[ACCEPT_FORM])
    form["properties"]["place"] = {"type": "string"}
    admins = Bundle({**longer_limit.files, ACCEPT_FORM: json.dumps(form)})
    if admin_first:
        assert deploy(client, adm, admins).status_code == 201
    monkeypatch.setenv("GRIDLOOP_DATABASE_URL", app.config["SQLALCHEMY_DATABASE_URI"])
    monkeypatch.setenv("GRIDLOOP_CHEAP_PASSWORDS", "1")
    result = CliRunner().invoke(main, ["init-db"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    stored = {v["hash"]: v["live"] for v in versions_of(client, adm)}
    assert repo_bundle.sha256 in stored
    if admin_first:
        assert "was not deployed over it" in result.output
        assert live_hash(client, adm) == admins.sha256
    else:
        assert "deployed" in result.output
        assert live_hash(client, adm) == repo_bundle.sha256
    deployed = [e for e in log_entries(app, "diagram_deployed") if e["actor"] == "system"]
    assert [(e["data"]["hash"], e["data"]["live"]) for e in deployed] == [
        (repo_bundle.sha256, not admin_first)
    ]


# ------------------------------------------------------------------ pages


@pytest.fixture
def two_versions(client, adm, longer_limit):
    assert deploy(client, adm, longer_limit, comment="延长时限 extend").status_code == 201
    return longer_limit


@pytest.mark.parametrize(
    "lang, words",
    [
        ("zh_CN", ["图版本", "当前生效", "延长时限 extend", "比较"]),
        ("en", ["Diagram versions", "Live", "延长时限 extend", "Compare"]),
    ],
)
def test_the_versions_page_for_an_administrator(app, two_versions, repo_bundle, lang, words):
    page = web_client(app, "adm", lang).get("/admin/diagrams")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for word in words:
        assert word in html, word
    assert html.count('data-testid="version"') == 2
    assert html.count('data-testid="live-badge"') == 1
    assert f'data-hash="{two_versions.sha256}"' in html
    rollback = f'/admin/diagrams/{repo_bundle.sha256}/activate"'
    assert rollback in html, "the older version offers a rollback"
    assert 'name="viewport" content="width=device-width' in html


def test_the_diff_page_names_the_rule_and_shows_before_and_after(app, two_versions, repo_bundle):
    url = f"/admin/diagrams/{repo_bundle.sha256}/diff/{two_versions.sha256}"
    for lang, words in (
        ("zh_CN", ["规则行", "处置 紧急：2 个自然小时", "办理时限", "时限（小时） limit_hours"]),
        ("en", ["Rule rows", "处置 紧急：2 个自然小时", "Output: 时限（小时） limit_hours"]),
    ):
        html = web_client(app, "adm", lang).get(url).get_data(as_text=True)
        for word in words:
            assert word in html, (lang, word)
        changed = re.findall(r'data-testid="entry-changed" data-id="([^"]+)"', html)
        assert changed == ["time_limit_r0"]
        assert re.search(r"dv-before[^>]*><code>2</code>", html)
        assert re.search(r"dv-after[^>]*><code>3</code>", html)

    chooser = web_client(app, "adm").get(
        f"/admin/diagrams/compare?a={repo_bundle.sha256}&b={two_versions.sha256}"
    )
    assert chooser.status_code == 302 and chooser.headers["Location"].endswith(url)


def test_rollback_from_the_page_asks_first_and_records_the_comment(app, two_versions, repo_bundle):
    admin = web_client(app, "adm", "en")
    confirm = admin.get(f"/admin/diagrams/{repo_bundle.sha256}/activate")
    html = confirm.get_data(as_text=True)
    assert confirm.status_code == 200 and 'data-testid="activate-confirm"' in html
    assert "1 rule row(s)" in html  # what differs from the live version, before confirming
    client = app.test_client()
    assert live_hash(client, bearer(client, "adm")) == two_versions.sha256  # asking changed nothing

    done = admin.post(
        f"/admin/diagrams/{repo_bundle.sha256}/activate", data={"comment": "回退到仓库版本"}
    )
    assert done.status_code == 302
    assert live_hash(client, bearer(client, "adm")) == repo_bundle.sha256
    [entry] = log_entries(app, "diagram_activated")
    assert entry["data"]["comment"] == "回退到仓库版本" and entry["actor"] == "adm"
    listed = admin.get("/admin/diagrams").get_data(as_text=True)
    assert "is live" in listed  # the flash


@pytest.mark.parametrize("username", ["off1", "aud", "tl1"])
def test_the_pages_are_403_for_everyone_else(app, two_versions, repo_bundle, username):
    person = web_client(app, username)
    sha = repo_bundle.sha256
    for url in (
        "/admin/diagrams",
        f"/admin/diagrams/{sha}/diff/{two_versions.sha256}",
        f"/admin/diagrams/{sha}/activate",
    ):
        assert person.get(url).status_code == 403, url
    assert person.post(f"/admin/diagrams/{sha}/activate", data={}).status_code == 403
    landing = person.get("/", follow_redirects=True)
    assert landing.status_code == 200 and 'href="/admin/diagrams"' not in landing.get_data(
        as_text=True
    )


def test_the_menu_offers_the_versions_page_to_administrators(app):
    html = web_client(app, "adm", "en").get("/admin/ops").get_data(as_text=True)
    assert 'href="/admin/diagrams"' in html
