"""The case loop through the HTML pages, in a phone-sized Chromium, as its users live it.

An officer opens a case and accepts it, the grid leader refers it up, the district leader resolves
it, the officer records the resident's feedback, the district leader reports and the village
secretary reviews; the case ends archived. Every page visited must fit a 360 px wide phone, and
each step keeps a screenshot under test-output/e2e/.

The pages are found by their data-testid and form field names (the page contract), never by
wording, so the same selectors work in both languages.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from conftest import GRID
from playwright.sync_api import APIRequestContext, BrowserContext, Locator, Page, expect

from .conftest import PASSWORD, assert_fits

NUMBER = re.compile(r"^/cases/([A-Z]+-\d{4}-\d{6})$")
TASK = re.compile(r"^/tasks/(\d+)$")


# ------------------------------------------------------------------ helpers


def path_of(page: Page) -> str:
    return urlsplit(page.url).path


def goto(page: Page, path: str, status: int = 200) -> None:
    response = page.goto(path)
    assert response is not None
    assert response.status == status, f"GET {path}: {response.status}, wanted {status}"
    assert_fits(page)


def follow(page: Page, target: Locator) -> None:
    """Click a link or button and wait for the page the server answers with; it must fit."""
    with page.expect_navigation():
        target.click()
    assert_fits(page)


def submit(page: Page, testid: str) -> None:
    follow(page, page.get_by_test_id(testid))


# The form being filled in: the one with the task's or the new case's submit button (a task page
# also has claim/release forms, the inbox a filter form).
MAIN_FORM = "[data-testid=complete], [data-testid=open-case]"


def form_of(page: Page) -> Locator:
    return page.locator("form").filter(has=page.locator(MAIN_FORM))


def field(page: Page, name: str) -> Locator:
    return form_of(page).locator(f"[name='{name}']")


def choose(page: Page, name: str, value: str) -> None:
    """Pick `value` for field `name`, whether the page shows it as a select or as radios."""
    select = form_of(page).locator(f"select[name='{name}']")
    if select.count():
        select.select_option(value)
    else:
        form_of(page).locator(f"input[name='{name}'][value='{value}']").check()


def chosen(page: Page, name: str) -> str | None:
    """The value the form would send for field `name`: a select's, the checked radio's, or a
    (hidden) input's."""
    return page.evaluate(
        """([name, button]) => {
            const form = document.querySelector(button).form;
            const fields = [...form.querySelectorAll(`[name="${name}"]`)];
            const radios = fields.filter(f => f.type === "radio");
            if (radios.length) {
                const on = radios.find(f => f.checked);
                return on ? on.value : null;
            }
            return fields.length ? fields[0].value : null;
        }""",
        [name, MAIN_FORM],
    )


def case_status(page: Page) -> str | None:
    return page.get_by_test_id("case-status").get_attribute("data-status")


def inbox_item(page: Page, number: str, task: str) -> Locator:
    """The user's inbox row for `task` of case `number` (the inbox must be on screen)."""
    item = page.locator(f"[data-testid=inbox-item][data-case='{number}'][data-task='{task}']")
    expect(item).to_have_count(1)
    return item


def open_task_from_inbox(page: Page, number: str, task: str) -> str:
    """From the inbox, follow the item's link to its task page; returns the item id."""
    item = inbox_item(page, number, task)
    item_id = item.get_attribute("data-item-id")
    assert item_id and item_id.isdigit(), item_id
    follow(page, item.locator(f"a[href$='/tasks/{item_id}']").first)
    assert path_of(page) == f"/tasks/{item_id}"
    return item_id


def view_case(page: Page, number: str) -> str | None:
    goto(page, f"/cases/{number}")
    return case_status(page)


# ------------------------------------------------------------------ the API, for quick set-ups


class Api:
    """The JSON API of the same server, to put a case where a test needs it without the pages."""

    def __init__(self, request: APIRequestContext):
        self.request = request
        self.tokens: dict[str, str] = {}

    def headers(self, username: str) -> dict[str, str]:
        if username not in self.tokens:
            response = self.request.post(
                "/api/v1/tokens", data={"username": username, "password": PASSWORD}
            )
            assert response.status == 201, response.text()
            self.tokens[username] = response.json()["token"]
        return {"Authorization": f"Bearer {self.tokens[username]}"}

    def open_case(self, officer: str = "off1", **body) -> str:
        body = {"grid": GRID, "title": "楼道堆放杂物", "description": "三楼楼道堆满纸箱", **body}
        response = self.request.post("/api/v1/cases", data=body, headers=self.headers(officer))
        assert response.status == 201, response.text()
        return response.json()["number"]

    def item(self, username: str, number: str) -> dict:
        response = self.request.get("/api/v1/inbox", headers=self.headers(username))
        assert response.status == 200, response.text()
        found = [i for i in response.json()["items"] if i["case"]["number"] == number]
        assert len(found) == 1, found
        return found[0]

    def complete(self, username: str, number: str, data: dict) -> dict:
        item = self.item(username, number)
        response = self.request.post(
            f"/api/v1/work-items/{item['id']}/complete",
            data={"data": data},
            headers=self.headers(username),
        )
        assert response.status == 200, response.text()
        return response.json()


@pytest.fixture(scope="module")
def api(new_context) -> Api:
    context: BrowserContext = new_context()
    return Api(context.request)


# ------------------------------------------------------------------ the whole loop


def test_a_case_goes_round_the_loop_through_the_pages(login, step):
    # 受理: the officer opens a case and accepts it.
    off1 = login("off1", shot="login")
    step(off1, "officer-inbox")
    goto(off1, "/cases/new")
    assert chosen(off1, "grid") == GRID, "the officer's grid is preselected"
    field(off1, "title").fill("村口路灯不亮")
    choose(off1, "category", "resident_request")
    choose(off1, "severity", "normal")
    field(off1, "description").fill("村口第三根路灯连续三晚不亮，老人夜里出行不便。")
    field(off1, "household").fill("2")
    field(off1, "reporter_name").fill("王大妈")
    field(off1, "reporter_phone").fill("13812345678")
    step(off1, "new-case")
    submit(off1, "open-case")
    match = NUMBER.match(path_of(off1))
    assert match, f"opening a case should land on its page, not {off1.url}"
    number = match.group(1)
    assert case_status(off1) == "accepting"
    step(off1, "case-opened")

    follow(off1, off1.get_by_test_id("case-open-task"))
    assert TASK.match(path_of(off1)), off1.url
    choose(off1, "valid", "true")
    choose(off1, "category", "resident_request")
    choose(off1, "severity", "normal")
    field(off1, "note").fill("已电话核实，情况属实。")
    step(off1, "accept")
    submit(off1, "complete")
    assert view_case(off1, number) == "handling"
    step(off1, "accepted")

    # 处置: the grid leader claims it from the inbox and refers it up.
    gl1 = login("gl1")
    item = inbox_item(gl1, number, "handle")
    follow(gl1, item.get_by_test_id("claim"))
    expect(inbox_item(gl1, number, "handle").get_by_test_id("release")).to_be_visible()
    step(gl1, "grid-leader-claimed")
    open_task_from_inbox(gl1, number, "handle")
    # The process diagram is drawn by the vendored bpmn-js (webapp/static/vendor, from npm).
    expect(gl1.get_by_test_id("diagram").locator("svg").first).to_be_visible()
    choose(gl1, "outcome", "refer_up")
    field(gl1, "note").fill("需更换灯杆线路，超出网格能力，请片长协调供电所。")
    step(gl1, "grid-leader-refers-up")
    submit(gl1, "complete")
    assert view_case(gl1, number) == "handling"

    # The district leader claims, thinks better of it, releases, then resolves it.
    dl1 = login("dl1")
    follow(dl1, inbox_item(dl1, number, "handle").get_by_test_id("claim"))
    follow(dl1, inbox_item(dl1, number, "handle").get_by_test_id("release"))
    expect(inbox_item(dl1, number, "handle").get_by_test_id("claim")).to_be_visible()
    step(dl1, "district-leader-inbox")
    open_task_from_inbox(dl1, number, "handle")
    choose(dl1, "outcome", "resolved")
    field(dl1, "note").fill("已联系供电所更换线路，路灯恢复。")
    step(dl1, "district-leader-resolves")
    submit(dl1, "complete")
    assert view_case(dl1, number) == "feedback"

    # 反馈: the officer who accepted it calls the resident back.
    goto(off1, "/")
    open_task_from_inbox(off1, number, "feedback")
    choose(off1, "satisfaction", "satisfied")
    field(off1, "note").fill("王大妈表示满意。")
    step(off1, "feedback")
    submit(off1, "complete")
    assert view_case(off1, number) == "reporting"

    # 上报: the resolving tier reports.
    goto(dl1, "/")
    open_task_from_inbox(dl1, number, "report")
    field(dl1, "summary").fill("路灯线路老化，已协调供电所更换，群众满意。")
    step(dl1, "report")
    submit(dl1, "complete")

    # 审核 → 归档: the tier above the resolving one reviews.
    vs1 = login("vs1")
    open_task_from_inbox(vs1, number, "review")
    choose(vs1, "approved", "true")
    field(vs1, "note").fill("同意归档。")
    step(vs1, "review")
    submit(vs1, "complete")

    assert view_case(off1, number) == "archived"
    expect(off1.get_by_test_id("case-open-task")).to_have_count(0)
    step(off1, "archived")


# ------------------------------------------------------------------ outside one's units


def test_another_grid_cannot_see_the_case_or_its_task(api, login, step):
    number = api.open_case()
    accept_id = api.item("off1", number)["id"]
    for username in ("off2", "gl2"):
        page = login(username)
        goto(page, f"/cases/{number}", status=404)
        goto(page, f"/tasks/{accept_id}", status=404)
    step(page, "other-grid-404")

    api.complete("off1", number, {"valid": True, "category": "dispute", "severity": "low"})
    handle_id = api.item("gl1", number)["id"]
    goto(page, f"/tasks/{handle_id}", status=404)
    expect(page.get_by_test_id("complete")).to_have_count(0)


# ------------------------------------------------------------------ form errors


def field_error(page: Page, name: str) -> Locator:
    """The error shown beside field `name`: inside the same field wrapper as its input."""
    wrapper = page.locator(f"[data-field='{name}']", has=page.locator(f"[name='{name}']"))
    return wrapper.get_by_test_id("field-error")


def test_task_form_shows_field_errors_and_keeps_what_was_entered(api, login, step):
    number = api.open_case(title="河边护栏松动")

    # Accepting a valid case needs a category: the page comes back with the error beside it,
    # and what the officer typed and picked is still there.
    off1 = login("off1")
    goto(off1, "/")
    item_id = open_task_from_inbox(off1, number, "accept")
    choose(off1, "valid", "true")
    choose(off1, "severity", "urgent")
    typed = "护栏松动约三米，\n已拉警戒线。"
    field(off1, "note").fill(typed)
    submit(off1, "complete")
    assert path_of(off1) == f"/tasks/{item_id}", "an invalid form stays on its task page"
    expect(field_error(off1, "category")).to_be_visible()
    assert (chosen(off1, "valid"), chosen(off1, "severity")) == ("true", "urgent")
    assert field(off1, "note").input_value() == typed, "the typed note was lost"
    step(off1, "form-error-accept")
    choose(off1, "category", "safety_hazard")
    choose(off1, "severity", "normal")
    submit(off1, "complete")
    assert view_case(off1, number) == "handling"

    # Referring up needs a note: the error is beside the note, the chosen outcome kept.
    gl1 = login("gl1")
    item_id = open_task_from_inbox(gl1, number, "handle")
    choose(gl1, "outcome", "refer_up")
    submit(gl1, "complete")
    assert path_of(gl1) == f"/tasks/{item_id}"
    expect(field_error(gl1, "note")).to_be_visible()
    assert field(gl1, "note").get_attribute("aria-invalid") == "true"
    assert chosen(gl1, "outcome") == "refer_up", "the chosen outcome was lost"
    expect(field_error(gl1, "outcome")).to_have_count(0)
    step(gl1, "form-error-handle")

    field(gl1, "note").fill("护栏需焊接，请片长安排。")
    submit(gl1, "complete")
    assert view_case(gl1, number) == "handling"


# ------------------------------------------------------------------ language


def test_english_after_switching_language(login, step):
    page = login("off1b")
    nav = page.locator("header")
    expect(nav).to_contain_text("我的待办")
    assert page.get_attribute("html", "lang") == "zh-CN"
    follow(page, page.locator("header a[href*='/lang/en']"))
    assert path_of(page) == "/", "switching language stays on the page"
    expect(nav).to_contain_text("My inbox")
    expect(nav).not_to_contain_text("我的待办")
    assert page.get_attribute("html", "lang") == "en"
    step(page, "english")
    goto(page, "/cases/new")
    expect(page.locator("header")).to_contain_text("My inbox")


# ------------------------------------------------------------------ every role's pages

# What each role's menu offers (by endpoint), in the e2e organisation. Leaders of units and
# auditors also get the figures and the overdue board.
FIGURES = ["dashboards.index", "board.index"]
ROLE_MENUS = {
    "off1": ["inbox.index", "cases.mine", "cases.new", "households.index", "campaigns.index"],
    "gl1": ["inbox.index", "households.index", "campaigns.index", "cases.index", *FIGURES],
    "tl1": ["inbox.index", "campaigns.index", "cases.index", *FIGURES],
    "aud": ["campaigns.index", "cases.index", *FIGURES, "audit.index"],
    "ps1": ["cases.index"],
    "adm": [
        "diagrams.index",
        "editor.index",
        "migrations.index",
        "org.index",
        "calendar_pages.index",
        "admin.ops",
        "audit.index",
    ],
}


def test_every_role_walks_its_menu_in_chinese_and_meets_no_403(api, login, step):
    api.open_case(title="路边井盖缺失")
    for username, wanted in ROLE_MENUS.items():
        page = login(username)  # lands on the role's own start page, checked there
        links = page.get_by_test_id("menu").locator("a")
        endpoints = [
            t.removeprefix("menu-")
            for t in links.evaluate_all("links => links.map(a => a.dataset.testid)")
        ]
        assert endpoints == wanted, username
        hrefs = links.evaluate_all("links => links.map(a => a.getAttribute('href'))")
        for href in hrefs:
            goto(page, href)  # 200, fits the phone, no English word
        step(page, f"menu-{username}")


def test_error_pages_and_the_diagram_speak_chinese(api, login, step):
    number = api.open_case(title="桥头护栏破损")
    api.complete("off1", number, {"valid": True, "category": "resident_request", "severity": "low"})
    gl1 = login("gl1")
    goto(gl1, "/cases/new", status=403)
    step(gl1, "error-403")
    goto(gl1, "/cases?cursor=not-a-cursor", status=400)
    goto(gl1, "/admin/ops", status=403)
    goto(gl1, "/nowhere", status=404)
    step(gl1, "error-404")

    # The diagram names each lane by its tier in Chinese; the engine's names stay in the file.
    goto(gl1, f"/cases/{number}")
    follow(gl1, gl1.get_by_test_id("case-open-task"))
    assert TASK.match(path_of(gl1)), gl1.url
    lanes = gl1.get_by_test_id("diagram").locator(".djs-element[data-element-id^='lane_']")
    expect(lanes.first).to_be_visible()
    labels = lanes.locator("text").all_text_contents()
    assert {"信息员", "网格长", "片长", "村党组织书记", "镇联点班子"} <= {
        " ".join(t.split()) for t in labels
    }, labels
    assert_fits(gl1)
    step(gl1, "diagram-lanes")


# ------------------------------------------------------------------ 转办 on a phone


def test_an_officer_sends_a_case_to_the_grid_it_belongs_to(api, login, step):
    number = api.open_case(title="二组的井盖丢了")
    accept_id = api.item("off1", number)["id"]
    off1 = login("off1")
    goto(off1, f"/tasks/{accept_id}")
    transfer = off1.get_by_test_id("transfer")
    transfer.locator("summary").click()
    off1.get_by_test_id("transfer-to").select_option("V01-D1-G02")
    transfer.locator("textarea[name=note]").fill("地址在二组村道旁")
    step(off1, "transfer-form")
    submit(off1, "transfer-submit")
    assert path_of(off1) == "/"
    expect(off1.locator(".flash")).to_contain_text(f"{number} 已转办至 二组")
    step(off1, "transferred")
    goto(off1, f"/cases/{number}", status=404)

    off2 = login("off2")
    inbox_item(off2, number, "accept")
    step(off2, "transferred-to-other-grid")
