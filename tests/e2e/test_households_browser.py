"""住户名册 in a phone-sized Chromium, in Chinese: an information officer opens their grid's register
from the menu, adds a household, marks it as in the group with one tap and watches "入群 N/M" move;
a wrong phone is marked on its field; the district leader reads the register without its forms.
Every page fits 360 px and holds no stray English word. Grid V02-D1-G02 (off4, district leader
dl2) is used by no other browser test."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import expect

from .conftest import assert_fits

GRID = "V02-D1-G02"


def test_an_officer_adds_a_household_and_marks_it_in_the_group(login, step):
    page = login("off4")
    with page.expect_navigation():
        page.get_by_test_id("menu-households.index").click()
    assert urlsplit(page.url).path == f"/grids/{GRID}/households"
    expect(page.locator("h1")).to_have_text("住户名册")
    progress = page.get_by_test_id("progress")
    expect(progress).to_contain_text("入群 0/3")
    expect(page.get_by_test_id("household")).to_have_count(3)
    step(page, "households")

    add = page.get_by_test_id("add")
    add.locator("summary").click()
    form = page.get_by_test_id("add-form")
    expect(form.get_by_test_id("number")).to_have_value("4")
    form.get_by_test_id("head").fill("钱四")
    form.get_by_test_id("phone").fill("138 0000 1234")
    step(page, "households-add")
    with page.expect_navigation():
        form.get_by_test_id("add-submit").click()
    expect(page.get_by_role("status")).to_contain_text("已添加 4 号住户（钱四）")
    expect(progress).to_contain_text("入群 0/4")
    added = page.locator('[data-testid="household"][data-number="4"]')
    expect(added.get_by_test_id("masked-phone")).to_have_text("138****1234")
    expect(added.get_by_test_id("mark")).to_have_text("未入群")
    assert_fits(page)

    with page.expect_navigation():
        added.get_by_test_id("toggle").click()
    expect(progress).to_contain_text("入群 1/4")
    expect(added).to_have_attribute("data-in-group", "yes")
    expect(added.get_by_test_id("mark")).to_have_text("已入群")
    step(page, "households-in-group")

    added.get_by_test_id("edit").locator("summary").click()
    edit = added.get_by_test_id("edit-form")
    edit.get_by_test_id("phone").fill("12")
    with page.expect_navigation():
        edit.get_by_test_id("edit-submit").click()
    expect(added.get_by_test_id("error-phone")).to_contain_text("请输入 7 至 15 位数字的电话号码")
    expect(added.get_by_test_id("masked-phone")).to_have_text("138****1234")
    step(page, "households-edit-error")

    dl2 = login("dl2")
    dl2.goto(f"/grids/{GRID}/households")
    expect(dl2.get_by_test_id("progress")).to_contain_text("入群 1/4")
    expect(dl2.get_by_test_id("add-form")).to_have_count(0)
    expect(dl2.get_by_test_id("toggle")).to_have_count(0)
    step(dl2, "households-district-leader")
