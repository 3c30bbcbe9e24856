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


def test_a_persons_one_tap_actions_ask_first_and_a_move_needs_a_unit(login):
    """On a phone one tap on 停用 or 调整 used to act at once, and 调整 moved the person to
    whichever unit the list showed first. Now the list starts at 请选择单位 (the form will not
    send without a choice) and each action asks; saying no changes nothing."""
    page = login("adm")
    page.goto("/admin/org/people/off2")
    before = page.inner_text("[data-testid=positions]")
    asked: list[str] = []

    def dismiss(dialog):
        asked.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    page.click("[data-testid=move]")  # nothing chosen: the browser refuses, nothing asks
    assert asked == [] and page.url.endswith("/admin/org/people/off2")
    assert page.input_value("[data-testid=move-to]") == ""
    page.select_option("[data-testid=move-to]", index=1)
    page.click("[data-testid=move]")
    page.click("[data-testid=deactivate]")
    assert len(asked) == 2 and "调整" in asked[0] and "停用" in asked[1]
    page.reload()
    assert page.inner_text("[data-testid=positions]") == before
    assert page.inner_text("[data-testid=state]") == "在岗"
