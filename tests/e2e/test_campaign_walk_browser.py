"""走访 in a phone-sized Chromium (360x740, zh-CN): an information officer walks their grid's
checklist household by household until "已走访 N/N"; a hazard ticked shows the case it opened;
one household is saved with the network gone, waits as "离线：1 条待发送", and is sent once
when the network is back (the server holds exactly one visit for it). Every page fits 360 px,
holds no stray English word and breaks no Content-Security-Policy rule.

The campaign is launched through the engine when the module's server starts. The session's
live server (tests/e2e/conftest.py) offers no way to reach its database, so this module serves
an app of its own, on the same organisation, with its own watcher of what the pages do."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from engine.access import viewer_of
from engine.clock import iso
from engine.models import Case, Household, Person, Unit, Visit
from webapp import services
from webapp.extensions import db

from .conftest import PASSWORD, Watcher, assert_fits, own_app, phone_context, serving

GRID = "V01-D1-G01"  # off1's grid, four households
CHECKLIST = {
    "type": "object",
    "properties": {
        "told": {"type": "boolean", "title": "已宣传禁烧政策"},
        "burning": {"type": "boolean", "title": "发现焚烧隐患", "x-opens-case": True},
        "note": {"type": "string", "title": "备注", "maxLength": 200},
    },
}


@pytest.fixture(scope="module")
def walk_server(tmp_path_factory) -> Iterator[tuple[str, object, int]]:
    app = own_app(tmp_path_factory.mktemp("e2e-walk") / "walk.sqlite")
    with app.app_context():
        person = db.session.scalars(select(Person).where(Person.username == "tl1")).one()
        campaign = services(app).runtime.launch_campaign(
            db.session,
            viewer_of(db.session, person),
            {
                "title": "秸秆禁烧宣传",
                "instructions": "逐户宣传禁烧政策，发现隐患当场登记。",
                "kind": "patrol",
                "targets": [GRID],
                "due_at": iso(datetime.now(UTC) + timedelta(days=10)),
                "checklist": CHECKLIST,
            },
        )
        db.session.commit()
        campaign_id = campaign.id
        db.session.remove()
    with serving(app, "e2e-walk") as base:
        yield base, app, campaign_id


def visits_of(app, number: int) -> int:
    with app.app_context():
        count = len(
            db.session.scalars(
                select(Visit.id)
                .join(Household, Household.id == Visit.household_id)
                .join(Unit, Unit.id == Household.grid_id)
                .where(Unit.code == GRID, Household.number == number)
            ).all()
        )
        db.session.remove()
    return count


def row(page: Page, number: int):
    return page.locator(f'[data-testid="household"][data-number="{number}"]')


def test_an_officer_walks_the_grid_to_the_end_with_one_household_saved_offline(
    browser, walk_server, shots
):
    base, app, campaign_id = walk_server
    watcher = Watcher(base)
    context = phone_context(browser, base, watcher)
    try:
        page = context.new_page()
        page.goto("/login")
        page.fill("#username", "off1")
        page.fill("#password", PASSWORD)
        with page.expect_navigation():
            page.click("form button[type=submit]")

        # The inbox's return item leads to the walk.
        item = page.locator('[data-testid="inbox-item"][data-task="campaign_return"]')
        expect(item.get_by_test_id("campaign")).to_contain_text("工作任务")
        with page.expect_navigation():
            item.get_by_test_id("walk-link").click()
        assert urlsplit(page.url).path == f"/campaigns/{campaign_id}/walk/{GRID}"
        expect(page.locator("h1")).to_have_text("秸秆禁烧宣传")
        progress = page.get_by_test_id("progress-text")
        expect(progress).to_have_text("已走访 0/4")
        expect(page.get_by_test_id("household")).to_have_count(4)
        expect(page.get_by_test_id("queue")).to_be_hidden()
        expect(page.get_by_test_id("signin")).to_be_hidden()
        assert_fits(page)
        shots.take(page, "walk")

        # Household 1: tick what applies, save.
        first = row(page, 1)
        first.get_by_text("已宣传禁烧政策").click()
        first.get_by_test_id("save").click()
        expect(progress).to_have_text("已走访 1/4")
        expect(first).to_have_attribute("data-done", "yes")
        expect(first.get_by_test_id("mark")).to_have_text("已走访")
        expect(first.get_by_test_id("visited-by")).to_contain_text("周信息员")
        # The time the saved row shows is the town's, as the server writes it on the page,
        # whatever zone the phone is set to (this browser's is the machine's, UTC here).
        fresh = context.new_page()
        fresh.goto(urlsplit(page.url).path)
        served = row(fresh, 1).get_by_test_id("visited-by").inner_text()
        assert first.get_by_test_id("visited-by").inner_text() == served
        fresh.close()

        # Household 2: a hazard opens a case, linked from the household.
        second = row(page, 2)
        second.get_by_text("发现焚烧隐患").click()
        second.locator('input[data-item="note"]').fill("田边堆放秸秆")
        second.get_by_test_id("save").click()
        expect(progress).to_have_text("已走访 2/4")
        link = second.get_by_test_id("case-link")
        expect(link).to_have_count(1)
        number = link.text_content()
        assert link.get_attribute("href") == f"/cases/{number}"
        with app.app_context():
            case = db.session.scalars(select(Case).where(Case.number == number)).one()
            assert case.campaign_id == campaign_id
            db.session.remove()
        assert_fits(page)
        shots.take(page, "walk-hazard")

        # Household 3 with the network gone: kept on the phone, then sent once.
        context.set_offline(True)
        third = row(page, 3)
        third.get_by_text("已宣传禁烧政策").click()
        third.get_by_test_id("save").click()
        queue = page.get_by_test_id("queue")
        expect(queue).to_have_text("离线：1 条待发送")
        expect(page.get_by_test_id("signin")).to_be_hidden()  # offline is not signed out
        expect(third).to_have_attribute("data-done", "no")
        expect(progress).to_have_text("已走访 2/4")
        stored = page.evaluate(
            "key => localStorage.getItem(key)",
            page.get_by_test_id("walk").get_attribute("data-queue-key"),
        )
        assert stored and '"number":3' in stored
        assert visits_of(app, 3) == 0
        assert_fits(page)
        shots.take(page, "walk-offline")
        # What failed while offline is the visit's request and nothing else.
        failed = [p for p in watcher.problems if "/visits" not in p]
        assert not failed, failed
        watcher.problems.clear()

        context.set_offline(False)  # the `online` event sends the queue
        expect(queue).to_be_hidden()
        expect(progress).to_have_text("已走访 3/4")
        expect(third).to_have_attribute("data-done", "yes")
        assert visits_of(app, 3) == 1

        # Household 4: nothing to tick, one tap.
        fourth = row(page, 4)
        fourth.get_by_test_id("save").click()
        expect(progress).to_have_text("已走访 4/4")
        expect(page.locator('[data-testid="household"][data-done="yes"]')).to_have_count(4)
        assert_fits(page)
        shots.take(page, "walk-done")

        # After a reload: the same figures, nothing left queued, nothing sent twice.
        page.reload()
        expect(progress).to_have_text("已走访 4/4")
        expect(queue).to_be_hidden()
        assert [visits_of(app, n) for n in (1, 2, 3, 4)] == [1, 1, 1, 1]
        assert (
            page.evaluate(
                "key => localStorage.getItem(key)",
                page.get_by_test_id("walk").get_attribute("data-queue-key"),
            )
            is None
        )

        # The sign-in ends (cookies gone): a save stays queued and a sign-in link comes back
        # here, where the queue is sent once signed in again.
        context.clear_cookies()
        first.get_by_text("已宣传禁烧政策").click()
        first.get_by_test_id("save").click()
        signin = page.get_by_test_id("signin")
        expect(signin).to_be_visible()
        expect(queue).to_have_text("离线：1 条待发送")
        assert visits_of(app, 1) == 1
        shots.take(page, "walk-signed-out")
        assert [p.split(" for ")[0] for p in watcher.problems] == ["401"]  # the refused save
        watcher.problems.clear()
        with page.expect_navigation():
            signin.get_by_test_id("signin-link").click()
        page.fill("#username", "off1")
        page.fill("#password", PASSWORD)
        with page.expect_navigation():
            page.click("form button[type=submit]")
        assert urlsplit(page.url).path == f"/campaigns/{campaign_id}/walk/{GRID}"
        expect(queue).to_be_hidden()
        expect(page.get_by_test_id("signin")).to_be_hidden()
        expect(first.get_by_test_id("status")).to_have_text("已保存。")
        assert [visits_of(app, n) for n in (1, 2, 3, 4)] == [2, 1, 1, 1]
        expect(progress).to_have_text("已走访 4/4")

        # The return, from the inbox's item: its task page is the campaign's, and submitting
        # it goes back to the campaign.
        page.goto("/")
        item = page.locator('[data-testid="inbox-item"][data-task="campaign_return"]')
        with page.expect_navigation():
            item.locator("h3 a").click()
        expect(page.get_by_test_id("campaign")).to_contain_text("秸秆禁烧宣传")
        expect(page.get_by_test_id("case-summary")).to_have_count(0)
        assert_fits(page)
        shots.take(page, "return-task")
        page.locator("textarea").first.fill("全组四户已走访")
        with page.expect_navigation():
            page.locator('[data-testid="task-form-card"] button[type=submit]').last.click()
        assert urlsplit(page.url).path == f"/campaigns/{campaign_id}"
        assert_fits(page)
    finally:
        context.close()
    assert not watcher.problems, "\n".join(watcher.problems)
