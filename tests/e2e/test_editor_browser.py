"""The process editor (/admin/editor) in Chromium: an administrator changes a time limit by typing
in a dmn-js decision table cell and deploys it; a case opened afterwards gets the new limit while
a case opened before keeps the old one (issue 10: "A headless Chromium test edits a time limit in
dmn-js, deploys it, and a new case gets the new limit while an old case keeps the old one").

Also: the modeler exports the shipped diagram and tables without edits into a bundle the engine
parses to the same spec; the properties panel edits a user task's spiffworkflow properties; a
refused deploy lists its problems and a click on one shows the rule at fault; a draft survives a
reload; the page works 360 px wide.

The editor deploys, which changes the live version, so these tests run on a server of their own
(the other browser tests share the session's), on a FixedClock: Monday 2026-11-23 10:00 in
Asia/Shanghai, so the deadlines are known. An administrator edits on a desktop, so the editor's
contexts are desktop-sized; one phone-sized context checks that the page still fits 360 px.
Screenshots go to test-output/e2e/ with the other browser tests'.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from apps import build_app, dispose_app
from conftest import ACCEPT_NORMAL, ORG_YAML, START
from playwright.sync_api import BrowserContext, Page, expect
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG

from engine.clock import FixedClock
from engine.specs import Bundle, live_version, load_bundle, parse_bundle
from engine.validation import validate
from engine.workcal import WorkCalendar
from webapp.extensions import db

from .conftest import PASSWORD, WIDTH, Shots, Watcher, serving, stray_english
from .test_browser import Api

REPO = Path(__file__).resolve().parents[2]
EDITOR = "/admin/editor/"
TIME_LIMIT = "rules/time_limit.dmn"
DIAGRAM = "workflows/bpmn/case_loop.bpmn"
# Rule time_limit_r4 (row 5): a case that is not urgent, handled at grid_leader: 24 working hours.
GRID_LIMIT_CELL = "td[data-element-id='time_limit_r4_o0'] [contenteditable]"
DESKTOP = {"width": 1440, "height": 900}


# ------------------------------------------------------------------ a server of its own


@pytest.fixture(scope="module")
def editor_clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture(scope="module")
def editor_app(tmp_path_factory, editor_clock):
    app = build_app(
        tmp_path_factory.mktemp("editor") / "editor.sqlite", ORG_YAML, editor_clock, csrf=True
    )
    app.config["TESTING"] = False  # as in production: errors render their pages
    yield app
    dispose_app(app)


@pytest.fixture(scope="module")
def editor_server(editor_app) -> Iterator[str]:
    with serving(editor_app, "editor-server", dispose=False) as base:  # editor_app disposes
        yield base


@pytest.fixture(scope="module")
def editor_watcher(editor_server) -> Watcher:
    return Watcher(editor_server)


@pytest.fixture(autouse=True)
def no_editor_problems(editor_watcher) -> Iterator[None]:
    """As the session's watcher does for the other browser tests: nothing loaded from elsewhere,
    every asset found, no script error, nothing the Content-Security-Policy refused."""
    editor_watcher.problems.clear()
    yield
    problems, editor_watcher.problems = editor_watcher.problems, []
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def contexts(browser, editor_server, editor_watcher) -> Iterator[Callable[..., BrowserContext]]:
    made: list[BrowserContext] = []

    def make(viewport: dict | None = None) -> BrowserContext:
        context = browser.new_context(
            base_url=editor_server, viewport=viewport or DESKTOP, locale="zh-CN"
        )
        context.set_default_timeout(15_000)
        editor_watcher.attach(context)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


@pytest.fixture(scope="module")
def api(contexts) -> Api:
    return Api(contexts().request)


def expect_refused(watcher: Watcher, path: str) -> None:
    """A 400 the test provoked on purpose (a refused deploy, a broken form's preview) is no page
    problem: take it off the watcher's list, once, and fail if it never came."""
    wanted = [p for p in watcher.problems if p == f"400 for {watcher.base_url}{path}"]
    assert wanted, f"no 400 for {path}: {watcher.problems}"
    for problem in wanted:
        watcher.problems.remove(problem)


def sign_in(context: BrowserContext, username: str) -> Page:
    page = context.new_page()
    page.goto("/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.click("form button[type=submit]")
    return page


@pytest.fixture
def admin(contexts) -> Page:
    """The administrator on a desktop, with the editor open on the live version."""
    page = sign_in(contexts(), "adm")
    open_editor(page)
    return page


def open_editor(page: Page, query: str = "") -> None:
    page.goto(EDITOR + query)
    expect(page.locator("#editor")).to_have_attribute("data-opened", DIAGRAM)
    page.wait_for_selector("#bpmn-canvas .djs-element[data-element-id='accept']")


def open_file(page: Page, path: str) -> None:
    page.click(f"button.file[data-path='{path}']")
    expect(page.locator("#editor")).to_have_attribute("data-opened", path)


def exported(page: Page, path: str) -> str:
    """The file as its editor exports it now (the modeler for .bpmn, dmn-js for .dmn)."""
    open_file(page, path)
    kind = "bpmn" if path.endswith(".bpmn") else "dmn"
    return page.evaluate(
        f"async () => (await window.gridloopEditor.{kind}.saveXML({{format: true}})).xml"
    )


def live_sha(app) -> str:
    with app.app_context():
        sha = live_version(db.session).sha256
        db.session.remove()
    return sha


def case_of(api: Api, number: str) -> dict:
    response = api.request.get(f"/api/v1/cases/{number}", headers=api.headers("gl1"))
    assert response.status == 200, response.text()
    return response.json()


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ------------------------------------------------------------------ the test the issue asks for


def test_a_limit_typed_into_dmn_js_and_deployed_reaches_new_cases_only(
    admin, api, contexts, editor_app, shots: Shots
):
    working = WorkCalendar()
    # An old case, accepted before the edit: handled at the grid, 24 working hours.
    old = api.open_case(title="路灯不亮（改时限前）")
    api.complete("off1", old, ACCEPT_NORMAL)
    old_due = instant(case_of(api, old)["due_at"])
    assert old_due == working.add_hours(START, 24, urgent=False)
    leader = sign_in(contexts(), "gl1")
    leader.goto(f"/tasks/{api.item('gl1', old)['id']}")
    noted = leader.locator(".task-head time").get_attribute("datetime")
    assert instant(noted) == old_due, "the task page shows the deadline the API gives"
    shots.take(leader, "editor-old-case-deadline")
    old_version = live_sha(editor_app)

    # The administrator opens the time limits in dmn-js and types 12 over the 24.
    shots.take(admin, "editor-opened")
    open_file(admin, TIME_LIMIT)
    cell = admin.locator(GRID_LIMIT_CELL)
    expect(cell).to_have_text("24")
    cell.click()
    admin.keyboard.press("Control+A")
    admin.keyboard.type("12")
    admin.locator("#deploy-comment").click()  # leaves the cell
    expect(cell).to_have_text("12")
    expect(admin.locator(f"button.file[data-path='{TIME_LIMIT}'] .changed")).to_be_visible()
    shots.take(admin, "editor-limit-typed")

    admin.fill("#deploy-comment", "网格长处置时限改为 12 个工作小时")
    admin.click("#deploy")
    status = admin.locator("#editor-status")
    expect(status).to_have_class(re.compile(r"\bgood\b"))
    expect(status).to_contain_text("已发布")
    shots.take(admin, "editor-deployed")
    new_version = status.get_attribute("data-hash")
    assert new_version == live_sha(editor_app) != old_version
    with editor_app.app_context():
        stored = live_version(db.session).files
        db.session.remove()
    assert re.search(r'id="time_limit_r4_o0">\s*<text>12</text>', stored[TIME_LIMIT])
    assert stored[DIAGRAM] == load_bundle(REPO).files[DIAGRAM], (
        "untouched files go back as they were"
    )

    # A case opened now runs on the new version, with 12 hours; the old one keeps its 24.
    new = api.open_case(title="路灯不亮（改时限后）")
    api.complete("off1", new, ACCEPT_NORMAL)
    fresh = case_of(api, new)
    assert fresh["diagram"] == new_version
    assert instant(fresh["due_at"]) == working.add_hours(START, 12, urgent=False)
    kept = case_of(api, old)
    assert kept["diagram"] == old_version
    assert instant(kept["due_at"]) == old_due
    leader.goto(f"/tasks/{api.item('gl1', new)['id']}")
    assert instant(leader.locator(".task-head time").get_attribute("datetime")) == (
        working.add_hours(START, 12, urgent=False)
    )
    shots.take(leader, "editor-new-case-deadline")


# ------------------------------------------------------------------ the modeler keeps the bundle


def spec_dict(bundle: Bundle) -> dict:
    """The process spec as SpiffWorkflow serializes it: every task spec with its extensions,
    scripts, conditions, timers and decision tables."""
    registry = BpmnWorkflowSerializer.configure(SPIFF_CONFIG)
    return json.loads(json.dumps(registry.convert(parse_bundle(bundle).process), default=str))


def test_the_live_bundle_exported_without_edits_parses_to_the_same_spec(admin, editor_app):
    with editor_app.app_context():
        shipped = Bundle(dict(live_version(db.session).files))
        db.session.remove()
    files = dict(shipped.files)
    for path in shipped.files:
        if path.endswith((".bpmn", ".dmn")):
            files[path] = exported(admin, path)
    assert "spiffworkflow:preScript" in files[DIAGRAM], "the extension elements are kept"
    roundtrip = Bundle(files)
    assert validate(roundtrip) == []
    assert spec_dict(roundtrip) == spec_dict(shipped)


def test_the_properties_panel_edits_a_user_tasks_properties(admin, shots: Shots):
    admin.evaluate(
        """() => { const m = window.gridloopEditor.bpmn;
        m.get('selection').select(m.get('elementRegistry').get('handle_grid')); }"""
    )
    group = admin.locator("[data-group-id='group-gridloop-task']")
    group.locator(".bio-properties-panel-group-header").click()
    form = group.locator("select#bio-properties-panel-gridloop-task-form")
    expect(group.locator("select#bio-properties-panel-gridloop-task-name")).to_have_value("handle")
    expect(group.locator("select#bio-properties-panel-gridloop-task-status")).to_have_value(
        "handling"
    )
    expect(form).to_have_value("handle")
    options = form.locator("option").all_inner_texts()
    assert {"accept", "handle", "handle_town", "review"} <= set(options), options
    form.select_option("handle_town")
    shots.take(admin, "editor-properties-panel")
    xml = exported(admin, DIAGRAM)
    task = re.search(r'<bpmn:userTask id="handle_grid".*?</bpmn:userTask>', xml, re.S).group(0)
    assert '<spiffworkflow:property name="formKey" value="handle_town" />' in task
    assert '<spiffworkflow:property name="task" value="handle" />' in task


# ------------------------------------------------------------------ refused, and drafts


def test_a_refused_deploy_points_at_the_rule_at_fault(
    admin, editor_app, editor_watcher, shots: Shots
):
    before = live_sha(editor_app)
    open_file(admin, TIME_LIMIT)
    cell = admin.locator("td[data-element-id='time_limit_r0_o0'] [contenteditable]")
    cell.click()
    admin.keyboard.press("Control+A")
    admin.keyboard.type('__import__("os")')
    admin.locator("#deploy-comment").click()
    expect(admin.locator(f"button.file[data-path='{TIME_LIMIT}'] .changed")).to_be_visible()
    admin.fill("#deploy-comment", "坏的时限")
    admin.click("#deploy")
    expect(admin.locator("#editor-status")).to_have_class(re.compile(r"\bbad\b"))
    problem = admin.locator("[data-testid=problem][data-element='time_limit_r0']")
    expect(problem).to_be_visible()
    open_file(admin, DIAGRAM)  # elsewhere: the click brings the table back
    problem.click()
    expect(admin.locator("#editor")).to_have_attribute("data-opened", TIME_LIMIT)
    expect(
        admin.locator("tr td[data-row-id='time_limit_r0'].gridloop-problem").first
    ).to_be_visible()
    shots.take(admin, "editor-refused")
    assert live_sha(editor_app) == before, "the live version stays live"
    expect_refused(editor_watcher, EDITOR + "deploy")


def test_a_draft_survives_a_reload(admin, editor_watcher, shots: Shots):
    open_file(admin, "workflows/bpmn/forms/report.schema.json")
    expect(admin.locator("[data-testid=preview-form]")).to_be_visible()
    code = admin.locator("#form-code .cm-content")
    code.click()
    admin.keyboard.press("Control+End")
    admin.keyboard.type(" x")  # no longer JSON
    expect(admin.locator("[data-testid=preview-problem]")).to_be_visible()
    expect_refused(editor_watcher, EDITOR + "preview")
    admin.keyboard.press("Backspace")
    admin.keyboard.press("Backspace")
    expect(admin.locator("[data-testid=preview-form]")).to_be_visible()
    admin.evaluate(
        """() => { const e = window.gridloopEditor;
        e.form.view.dispatch({changes: {from: 0, to: e.form.view.state.doc.length,
          insert: JSON.stringify({type: "object", required: ["summary"], properties: {
            summary: {type: "string", title: "办结情况"}}}, null, 2)}}); }"""
    )
    expect(admin.locator("#form-preview label[for=f-summary]")).to_have_text(re.compile("办结情况"))
    admin.click("#save-draft")
    expect(admin.locator("#editor-status")).to_contain_text("草稿已于")
    shots.take(admin, "editor-draft-saved")

    admin.reload()
    expect(admin.locator("[data-testid=draft-notice]")).to_be_visible()
    admin.click("[data-testid=open-draft]")
    expect(admin.locator("[data-testid=editor-source]")).to_contain_text("您的草稿")
    open_file(admin, "workflows/bpmn/forms/report.schema.json")
    expect(admin.locator("#form-preview label[for=f-summary]")).to_have_text(re.compile("办结情况"))
    admin.once("dialog", lambda dialog: dialog.accept())
    with admin.expect_navigation():
        admin.click("#discard-draft")
    expect(admin.locator("[data-testid=draft-notice]")).to_have_count(0)


# ------------------------------------------------------------------ on a phone, and in Chinese


def test_the_editor_fits_a_phone_and_speaks_chinese(contexts, shots: Shots):
    page = sign_in(contexts({"width": WIDTH, "height": 740}), "adm")
    open_editor(page)
    # As the menu walk checks every page: no English word. File names, hashes and commands are
    # <code>; lanes are drawn with the tiers' names while the diagram keeps the tiers.
    assert not stray_english(page)
    lanes = page.locator(".djs-element[data-element-id^='lane_'] text").all_text_contents()
    assert sorted(lanes) == sorted(["信息员", "网格长", "片长", "村党组织书记", "镇联点班子"])
    for path in (DIAGRAM, TIME_LIMIT, "workflows/bpmn/forms/accept.schema.json"):
        open_file(page, path)
        width = page.evaluate(
            "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        )
        assert width <= WIDTH, f"{path}: the page is {width}px wide"
        shots.take(page, "editor-phone-" + path.rsplit("/", 1)[-1].split(".")[0])
        if path == TIME_LIMIT:  # the decision table's own words
            expect(page.locator(".hit-policy .dms-label")).to_have_text("命中策略：")
            clauses = page.locator("#dmn-canvas th .clause").all_text_contents()
            assert clauses[:2] == ["当", "且"] and "则" in clauses, clauses
