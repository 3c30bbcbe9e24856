"""代理 in a phone-sized Chromium, in Chinese: a grid leader opens the page from the account menu,
names the district leader for today and the next two days, sees it listed as in force, and
revokes it (so that no other browser test meets it). The server's clock is the real one, so the
dates are today's in Asia/Shanghai."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from playwright.sync_api import expect

from engine.clock import SHANGHAI

from .conftest import assert_fits


def test_a_grid_leader_delegates_to_the_district_leader_on_the_page(login, step):
    today = datetime.now(UTC).astimezone(SHANGHAI).date()
    last = today + timedelta(days=2)
    page = login("gl2")
    with page.expect_navigation():
        page.get_by_test_id("account-delegation").click()
    assert urlsplit(page.url).path == "/account/delegations"
    expect(page.locator("h1")).to_have_text("代理")
    expect(page.get_by_test_id("given-empty")).to_be_visible()
    step(page, "delegation-page")

    form = page.get_by_test_id("delegation-form")
    form.get_by_test_id("delegate").select_option("dl1")
    form.get_by_test_id("from").fill(today.isoformat())
    form.get_by_test_id("to").fill(last.isoformat())
    step(page, "delegation-filled")
    with page.expect_navigation():
        form.get_by_test_id("delegate-submit").click()
    assert urlsplit(page.url).path == "/account/delegations"
    expect(page.get_by_role("status")).to_contain_text("钱片长")
    given = page.get_by_test_id("given-item")
    expect(given).to_have_count(1)
    expect(given).to_have_attribute("data-status", "active")
    expect(given).to_contain_text(f"{today.isoformat()} 至 {last.isoformat()}")
    expect(given).to_contain_text("代理中")
    assert_fits(page)
    step(page, "delegation-made")

    dl1 = login("dl1")
    dl1.goto("/account/delegations")
    expect(dl1.get_by_test_id("received-item")).to_contain_text("郑组长")
    assert_fits(dl1)

    with page.expect_navigation():
        given.get_by_test_id("revoke").click()
    expect(page.get_by_test_id("given-empty")).to_be_visible()
    step(page, "delegation-revoked")
