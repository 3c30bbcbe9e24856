"""The administrators' version pages on a 360-px phone in Chinese: the list, a diff and the
confirmation of making a version live (the menu walk in test_browser.py opens each menu page;
these are the pages reached from the list)."""

from __future__ import annotations


def test_the_version_pages_fit_a_phone_in_chinese(login, step):
    page = login("adm")
    page.goto("/admin/diagrams")
    step(page, "admin-diagrams")
    live = page.get_attribute("[data-testid=version][data-hash]", "data-hash")
    assert live and len(live) == 64
    assert "网格事项闭环" in page.inner_text("[data-testid=versions]")  # the process by its name
    page.goto(f"/admin/diagrams/{live}/diff/{live}")
    step(page, "admin-diagrams-diff")
    page.goto(f"/admin/diagrams/{live}/activate")
    step(page, "admin-diagrams-activate")
