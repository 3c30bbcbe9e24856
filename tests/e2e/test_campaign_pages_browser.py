"""工作任务 pages in a phone-sized Chromium (360x740, zh-CN): a town leader opens the launch form,
ticks a village (its districts and grids are then ticked and locked), adds a checklist row with
the builder's script, ticks "发现问题时立案", launches, lands on the campaign with its heat table,
drills down to a grid and comes back to the list. Every page fits 360 px, holds no stray English
word and breaks no Content-Security-Policy rule.

Launching makes return items in the grids' inboxes, so this module serves an app of its own (on
the same organisation), like test_campaign_walk_browser.py, and leaves the session's server be."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from engine.models import Campaign
from webapp.extensions import db

from .conftest import PASSWORD, Watcher, assert_fits, own_app, phone_context, serving


@pytest.fixture(scope="module")
def pages_server(tmp_path_factory) -> Iterator[tuple[str, object]]:
    app = own_app(tmp_path_factory.mktemp("e2e-campaign-pages") / "campaign_pages.sqlite")
    with serving(app, "e2e-campaigns") as base:
        yield base, app


def test_a_town_leader_launches_with_the_builder_and_reads_the_heat_table(
    browser, pages_server, shots
):
    base, app = pages_server
    watcher = Watcher(base)
    context = phone_context(browser, base, watcher)
    try:
        page = context.new_page()
        page.goto("/login")
        page.fill("#username", "tl1")
        page.fill("#password", PASSWORD)
        with page.expect_navigation():
            page.click("form button[type=submit]")

        with page.expect_navigation():
            page.get_by_test_id("menu-campaigns.index").click()
        expect(page.get_by_test_id("no-campaigns")).to_be_visible()
        assert_fits(page)
        with page.expect_navigation():
            page.get_by_test_id("launch").click()
        assert urlsplit(page.url).path == "/campaigns/new"
        # With the script: rows are added in place, the server's "more rows" button is gone.
        expect(page.get_by_test_id("add-item")).to_be_visible()
        expect(page.get_by_test_id("more-items")).to_have_count(0)
        assert_fits(page)
        shots.take(page, "campaign-new")

        page.get_by_test_id("title").fill("秸秆禁烧宣传")
        page.get_by_test_id("instructions").fill("逐户宣传禁烧政策")
        page.get_by_test_id("kind-patrol").check()
        page.get_by_test_id("target-V01").check()
        grid = page.get_by_test_id("target-V01-D1-G01")
        expect(grid).to_be_checked()
        expect(grid).to_be_disabled()
        rows = page.get_by_test_id("checklist-item")
        before = rows.count()
        rows.nth(0).locator('[data-role="label"]').fill("已宣传禁烧政策")
        rows.nth(1).locator('[data-role="label"]').fill("发现焚烧隐患")
        rows.nth(1).locator('[data-role="opens"]').check()
        page.get_by_test_id("add-item").click()
        expect(rows).to_have_count(before + 1)
        added = rows.nth(before)
        added.locator('[data-role="label"]').fill("备注")
        added.locator('[data-role="type"]').select_option("string")
        expect(added.locator('[data-role="opens"]')).to_be_disabled()
        assert_fits(page)
        shots.take(page, "campaign-new-filled")
        with page.expect_navigation():
            page.get_by_test_id("launch-submit").click()

        expect(page.get_by_role("status")).to_contain_text("已下发到 2 个网格")
        heat = page.get_by_test_id("heat-row")
        expect(heat).to_have_count(2)  # the town and V01
        assert_fits(page)
        shots.take(page, "campaign-show")
        with app.app_context():
            campaign = db.session.scalars(select(Campaign)).one()
            assert campaign.targets == ["V01"]
            assert campaign.checklist["properties"] == {
                "item_1": {"title": "已宣传禁烧政策", "type": "boolean"},
                "item_2": {"title": "发现焚烧隐患", "type": "boolean", "x-opens-case": True},
                "item_3": {"title": "备注", "type": "string", "maxLength": 500},
            }
            db.session.remove()

        with page.expect_navigation():
            page.get_by_test_id("drill").click()  # V01
        with page.expect_navigation():
            page.get_by_test_id("drill").click()  # V01-D1
        expect(heat).to_have_count(3)  # the district and its two grids
        with page.expect_navigation():
            page.get_by_test_id("drill").first.click()  # V01-D1-G01
        expect(heat).to_have_count(1)
        expect(page.get_by_test_id("household")).to_have_count(4)
        assert_fits(page)
        shots.take(page, "campaign-grid")

        with page.expect_navigation():
            page.get_by_test_id("menu-campaigns.index").click()
        expect(page.get_by_test_id("campaign")).to_have_count(1)
        expect(page.get_by_test_id("coverage")).to_contain_text("已走访 0/7")
        assert_fits(page)
        shots.take(page, "campaign-list")
    finally:
        context.close()
    assert not watcher.problems, watcher.problems
