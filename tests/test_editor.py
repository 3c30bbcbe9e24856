"""The process editor's server side (/admin/editor, webapp/editor.py; issue 10, item 1): who may
open it, what the page hands the editors, drafts (engine/drafts.py), the deploy route's answers
(the problems of a refused bundle, with the live version left live) and the form preview drawn
by the task page's own templates. The editors themselves run in tests/e2e/test_editor_browser.py.
"""

from __future__ import annotations

import json
import re

import pytest
from apps import web_client
from conftest import ACCEPT_NORMAL, GRID, REPO, START, changed
from sqlalchemy import func, select

from engine import admin_log, drafts
from engine.access import viewer_of
from engine.errors import Invalid
from engine.models import AdminEvent, Case, DiagramDraft, Person, WorkItem
from engine.specs import live_version, load_bundle
from engine.workcal import WorkCalendar
from webapp import services
from webapp.extensions import db

EDITOR = "/admin/editor/"
TIME_LIMIT = "rules/time_limit.dmn"
DIAGRAM = "workflows/bpmn/case_loop.bpmn"
ACCEPT_FORM = "workflows/bpmn/forms/accept.schema.json"
# Rule time_limit_r4: a non-urgent case handled at the grid gets 24 working hours.
GRID_24 = '<outputEntry id="time_limit_r4_o0"><text>24</text></outputEntry>'
GRID_12 = '<outputEntry id="time_limit_r4_o0"><text>12</text></outputEntry>'


@pytest.fixture(scope="module")
def repo_files() -> dict[str, str]:
    return dict(load_bundle(REPO).files)


@pytest.fixture(scope="module")
def grid_12() -> dict[str, str]:
    """The shipped bundle with one limit changed: a non-urgent case handled at the grid gets 12
    working hours instead of 24 (rule time_limit_r4)."""
    return dict(changed(load_bundle(REPO), TIME_LIMIT, GRID_24, GRID_12, once=True).files)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def adm(app):
    return web_client(app, "adm")


def page_data(response) -> dict:
    """The JSON the page hands the editors (#editor-data)."""
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    html = response.get_data(as_text=True)
    found = re.search(
        r'<script type="application/json" id="editor-data">(.*?)</script>', html, re.S
    )
    assert found, "the page carries the editors' data"
    return json.loads(found.group(1))


def live_hash(app) -> str:
    with app.app_context():
        sha = live_version(db.session).sha256
        db.session.remove()
    return sha


def log_types(app) -> list[str]:
    with app.app_context():
        types = list(db.session.scalars(select(AdminEvent.type).order_by(AdminEvent.seq)))
        db.session.remove()
    return types


# ------------------------------------------------------------------ who may


@pytest.mark.parametrize("username", ["gl1", "tl1", "aud", "off1"])
def test_only_administrators_open_the_editor(app, username, repo_files):
    client = web_client(app, username)
    assert client.get(EDITOR).status_code == 403
    for path, body in [
        ("draft", {"files": repo_files}),
        ("draft/discard", {}),
        ("deploy", {"files": repo_files, "comment": "x"}),
        ("preview", {"schema": "{}"}),
    ]:
        response = client.post(EDITOR + path, json=body)
        assert response.status_code == 403, path
        assert response.get_json()["error"]["code"] == "forbidden"
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(DiagramDraft)) == 0
        db.session.remove()


def test_signed_out_people_are_sent_to_sign_in(app):
    response = app.test_client().get(EDITOR)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_the_menu_offers_the_editor_to_administrators_only(app):
    assert 'href="/admin/editor/"' in web_client(app, "adm").get("/admin/ops").get_data(True)
    assert 'href="/admin/editor/"' not in web_client(app, "gl1").get("/").get_data(True)


# ------------------------------------------------------------------ the page


def test_the_page_opens_the_live_version_with_every_file(app, adm, repo_files):
    data = page_data(adm.get(EDITOR))
    assert data["files"] == repo_files, "the live version's files, byte for byte"
    assert data["base"] == live_hash(app)
    assert data["process"] == "case_loop"
    assert set(data["urls"]) >= {"draft", "discard", "deploy", "preview"}
    html = adm.get(EDITOR).get_data(as_text=True)
    assert "vendor/editor/editor.js" in html and "vendor/editor/editor.css" in html
    assert 'href="/admin/diagrams"' in html, "versions are listed by the versions pages"


def test_the_page_speaks_chinese_and_sends_the_editors_words(app, adm):
    html = adm.get(EDITOR).get_data(as_text=True)
    assert "流程编辑器" in html
    words = page_data(adm.get(EDITOR))["words"]
    assert words["Create task"] == "创建任务" and words["Hit policy:"] == "命中策略："
    assert words["Task"] == "任务", "not the overdue board's 待办事项"
    assert page_data(web_client(app, "adm", lang="en").get(EDITOR))["words"] == {}, (
        "on an English page the editors keep their own words"
    )


def test_the_page_lets_the_editors_set_style_attributes_and_nothing_more(adm):
    policy = adm.get(EDITOR).headers["Content-Security-Policy"]
    assert "style-src-attr 'unsafe-inline'" in policy
    assert "script-src 'self' 'nonce-" in policy and "unsafe-eval" not in policy
    assert re.search(r"style-src 'self' 'nonce-[^']+';", policy), "<style> stays nonce-bound"


def test_any_stored_version_opens_and_an_unknown_one_is_404(app, adm, repo_files):
    sha = live_hash(app)
    assert page_data(adm.get(EDITOR + f"?version={sha}"))["files"] == repo_files
    assert adm.get(EDITOR + "?version=" + "0" * 64).status_code == 404


# ------------------------------------------------------------------ drafts


def test_a_saved_draft_reopens_as_it_was_saved(app, adm, repo_files, grid_12, clock):
    edited = grid_12
    answer = adm.post(EDITOR + "draft", json={"files": edited, "base": live_hash(app)})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["saved_at"] == START.isoformat()

    live_page = adm.get(EDITOR).get_data(as_text=True)
    assert 'data-testid="draft-notice"' in live_page, "the live version's page offers the draft"
    data = page_data(adm.get(EDITOR + "?draft=1"))
    assert data["files"] == edited and data["base"] == live_hash(app)

    clock.advance(minutes=5)
    again = {**edited, TIME_LIMIT: edited[TIME_LIMIT].replace(GRID_12, GRID_24)}
    assert adm.post(EDITOR + "draft", json={"files": again}).status_code == 200
    data = page_data(adm.get(EDITOR + "?draft=1"))
    assert data["files"] == again, "saving replaces the draft"
    assert data["base"] is None, "this save named no version it started from"
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(DiagramDraft)) == 1
        db.session.remove()
    assert "diagram_deployed" not in log_types(app), "a draft changes nothing anyone runs"


def test_a_discarded_draft_is_gone(app, adm, repo_files):
    adm.post(EDITOR + "draft", json={"files": repo_files})
    assert adm.post(EDITOR + "draft/discard", json={}).get_json() == {"discarded": True}
    assert adm.get(EDITOR + "?draft=1").status_code == 404
    assert 'data-testid="draft-notice"' not in adm.get(EDITOR).get_data(as_text=True)
    assert adm.post(EDITOR + "draft/discard", json={}).get_json() == {"discarded": False}


@pytest.mark.parametrize(
    "path",
    [
        "../etc/passwd.bpmn",
        "/workflows/bpmn/x.bpmn",
        "workflows/bpmn/x.py",
        "docs/x.bpmn",
        "workflows/bpmn/../x.bpmn",
        "rules\\x.dmn",
    ],
)
def test_a_draft_holds_only_bundle_files(adm, repo_files, path):
    response = adm.post(EDITOR + "draft", json={"files": {**repo_files, path: "<x/>"}})
    assert response.status_code == 400
    assert path in response.get_json()["error"]["fields"], "the refusal names the path"


def test_malformed_posts_are_400_not_500(adm):
    assert adm.post(EDITOR + "draft", data="{", content_type="application/json").status_code == 400
    assert adm.post(EDITOR + "draft", json=[1, 2]).status_code == 400
    assert adm.post(EDITOR + "draft", json={"files": {DIAGRAM: 5}}).status_code == 400
    assert adm.post(EDITOR + "deploy", json={"files": "x", "comment": "c"}).status_code == 400
    assert adm.post(EDITOR + "preview", json={"schema": 5}).status_code == 400


def test_drafts_are_per_administrator(session, repo_files, clock):
    drafts.save_draft(session, "adm", "case_loop", repo_files, None, clock.now())
    assert drafts.draft_of(session, "adm2", "case_loop") is None
    drafts.save_draft(session, "adm2", "case_loop", {DIAGRAM: "<x/>"}, None, clock.now())
    assert drafts.draft_of(session, "adm", "case_loop").files == repo_files
    assert drafts.discard_draft(session, "adm2", "case_loop")
    assert drafts.draft_of(session, "adm", "case_loop") is not None
    with pytest.raises(Invalid):
        drafts.save_draft(session, "adm", "case_loop", {}, None, clock.now())


# ------------------------------------------------------------------ deploy


def test_a_refused_deploy_lists_the_problems_and_leaves_the_live_version(app, adm, repo_files):
    before = live_hash(app)
    broken = {p: t for p, t in repo_files.items() if p != ACCEPT_FORM}  # accept's form is gone
    response = adm.post(EDITOR + "deploy", json={"files": broken, "comment": "drop a form"})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_bundle"
    assert error["problems"], "every problem is listed"
    assert any(p["element"] == "accept" for p in error["problems"]), error["problems"]
    assert all({"file", "element", "message"} <= set(p) for p in error["problems"])
    assert live_hash(app) == before, "the live version stays live"
    assert "diagram_deployed" not in log_types(app)


def test_a_deploy_goes_live_for_new_cases_and_is_on_the_record(app, adm, repo_files, grid_12):
    adm.post(EDITOR + "draft", json={"files": repo_files})
    edited = grid_12
    old_live = live_hash(app)
    old_case, old_accepted_at = open_and_accept(app)
    response = adm.post(EDITOR + "deploy", json={"files": edited, "comment": "网格处置 12 小时"})
    assert response.status_code == 201, response.get_json()
    answer = response.get_json()
    assert answer["created"] is True and answer["live"] is True
    assert answer["hash"] == live_hash(app) != old_live
    assert adm.get(EDITOR + "?draft=1").status_code == 404, "the deployed draft is gone"
    with app.app_context():
        entry = admin_log.entries(db.session, type_="diagram_deployed")[0]
        assert entry.actor == "adm" and json.loads(entry.data)["comment"] == "网格处置 12 小时"
        db.session.remove()

    new_case, accepted_at = open_and_accept(app)
    working = WorkCalendar()
    assert handle_due(app, new_case) == working.add_hours(accepted_at, 12, urgent=False)
    assert handle_due(app, old_case) == working.add_hours(old_accepted_at, 24, urgent=False)


def test_deploying_the_live_files_again_makes_no_new_version(app, adm, repo_files):
    response = adm.post(EDITOR + "deploy", json={"files": repo_files, "comment": "nothing"})
    assert response.status_code == 200
    assert response.get_json()["created"] is False
    assert response.get_json()["hash"] == live_hash(app)


def test_deploying_an_older_versions_files_makes_it_live_again_and_says_so(
    app, adm, repo_files, grid_12
):
    first = live_hash(app)
    assert (
        adm.post(EDITOR + "deploy", json={"files": grid_12, "comment": "12 h"}).status_code == 201
    )
    again = adm.post(EDITOR + "deploy", json={"files": repo_files, "comment": "back to 24 h"})
    assert again.status_code == 200
    answer = again.get_json()
    assert (answer["created"], answer["activated"], answer["live"]) == (False, True, True)
    assert answer["hash"] == live_hash(app) == first
    same = adm.post(EDITOR + "deploy", json={"files": repo_files, "comment": "again"})
    assert same.get_json()["activated"] is False  # live already: nothing happened


@pytest.mark.parametrize("comment", [None, "", "   ", "x" * 501])
def test_a_deploy_needs_a_comment(app, adm, grid_12, comment):
    response = adm.post(EDITOR + "deploy", json={"files": grid_12, "comment": comment})
    assert response.status_code == 400
    assert "comment" in response.get_json()["error"]["fields"]


def open_and_accept(app):
    """A resident request opened and accepted by off1 in G01 now; (case number, accepted at)."""
    with app.app_context():
        runtime = services(app).runtime
        person = db.session.scalars(select(Person).where(Person.username == "off1")).one()
        me = viewer_of(db.session, person)
        case = runtime.open_case(db.session, me, grid=GRID, title="路灯坏了")
        item = db.session.scalars(
            select(WorkItem).where(WorkItem.case_id == case.id, WorkItem.completed_at.is_(None))
        ).one()
        runtime.complete(db.session, me, item.id, dict(ACCEPT_NORMAL))
        number, at = case.number, runtime.clock.now()
        db.session.remove()
    return number, at


def handle_due(app, number: str):
    with app.app_context():
        case = db.session.scalars(select(Case).where(Case.number == number)).one()
        item = db.session.scalars(
            select(WorkItem).where(
                WorkItem.case_id == case.id,
                WorkItem.completed_at.is_(None),
                WorkItem.task == "handle",
            )
        ).one()
        due = item.due_at
        db.session.remove()
    return due


# ------------------------------------------------------------------ preview


def test_the_preview_draws_a_form_as_the_task_page_does(adm, repo_files):
    response = adm.post(EDITOR + "preview", json={"schema": repo_files[ACCEPT_FORM]})
    assert response.status_code == 200
    html = response.get_json()["html"]
    assert 'data-testid="preview-form"' in html
    assert 'data-field="valid"' in html and 'type="radio" name="valid" value="true"' in html
    assert "有效" in html and "民情信息" in html, "labels come from the schema, in Chinese"
    assert 'name="valid" value="true" checked' in html, "the default is chosen, as on the task"
    assert "photo-picker" in html, "the photo field is the task page's picker"


def test_the_preview_follows_the_page_language(app):
    english = web_client(app, "adm", lang="en")
    schema = {"type": "object", "properties": {"note": {"type": "string", "title": "说明"}}}
    html = english.post(EDITOR + "preview", json={"schema": json.dumps(schema)}).get_json()["html"]
    assert "Note" in html and "说明" not in html


@pytest.mark.parametrize(
    "text, says",
    [
        ('{"type": "object",', "JSON"),
        ('{"type": 12}', "JSON Schema"),
        ("[1, 2]", "object"),
    ],
)
def test_a_broken_form_is_a_400_saying_why(app, text, says):
    client = web_client(app, "adm", lang="en")
    response = client.post(EDITOR + "preview", json={"schema": text})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert says in error["message"] and error["fields"]["schema"]


def test_a_schema_the_task_page_cannot_draw_is_a_400(adm):
    schema = {"type": "object", "properties": {"odd": True}}  # valid JSON Schema, no field
    response = adm.post(EDITOR + "preview", json={"schema": json.dumps(schema)})
    assert response.status_code == 400


# ------------------------------------------------------------------ CSRF


def test_posts_need_the_pages_csrf_token(make_app, repo_files):
    app = make_app(csrf=True)
    client = web_client_with_csrf(app)
    page = client.get(EDITOR).get_data(as_text=True)
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
    refused = client.post(EDITOR + "draft", json={"files": repo_files})
    assert refused.status_code == 400 and refused.get_json()["error"]["message"]
    accepted = client.post(
        EDITOR + "draft", json={"files": repo_files}, headers={"X-CSRFToken": token}
    )
    assert accepted.status_code == 200


def web_client_with_csrf(app):
    client = app.test_client()
    login = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', login).group(1)
    response = client.post(
        "/login", data={"username": "adm", "password": "pw", "csrf_token": token}
    )
    assert response.status_code == 302
    return client
