"""The step-through viewer in a phone-sized Chromium: an auditor walks a case event by event, and
at each step the task bpmn-js marks as open is the one the event left open.

The case is put where the test needs it over the JSON API (opened and accepted by the officer,
referred up by the grid leader, resolved by the district leader), so the events are known: what
each one leaves open is written down here from the loop (DESIGN §2), not read from the replay,
and the marks on the SVG are compared with that.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from .conftest import WIDTH, assert_fits
from .test_browser import Api

ACCEPT = {"valid": True, "category": "resident_request", "severity": "normal", "note": "已核实"}
# What each event of this case leaves open, by (type, task, actor).
OPEN_AFTER = {
    ("opened", None, "off1"): ["accept"],
    ("claimed", "accept", "off1"): ["accept"],
    ("task_completed", "accept", "off1"): ["handle_grid"],
    ("task_completed", "handle", "gl1"): ["handle_district"],
    ("task_completed", "handle", "dl1"): ["feedback"],
}
TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")  # Asia/Shanghai, from the server
MARKED = """(marker) => Array.from(
  document.querySelectorAll("[data-testid=steps-diagram] g.djs-element." + marker)
).map((el) => el.getAttribute("data-element-id")).sort()"""


@pytest.fixture(scope="module")
def api(new_context) -> Api:
    context: BrowserContext = new_context()
    return Api(context.request)


def walked_case(api: Api) -> tuple[str, list[dict]]:
    """A case three steps into the loop, and its events as the events API gives them."""
    number = api.open_case(title="路口井盖松动", description="井盖一踩就晃")
    api.complete("off1", number, ACCEPT)
    api.complete("gl1", number, {"outcome": "refer_up", "note": "需要片长协调"})
    api.complete("dl1", number, {"outcome": "resolved", "note": "已更换井盖"})
    response = api.request.get(f"/api/v1/cases/{number}/events", headers=api.headers("aud"))
    assert response.status == 200, response.text()
    return number, response.json()["events"]


def expected_open(event: dict) -> list[str]:
    key = (event["type"], event["task"], event["actor"])
    assert key in OPEN_AFTER, f"an event this test did not drive: {key}"
    return OPEN_AFTER[key]


def check_frame(page: Page, events: dict[int, dict], seq: int) -> None:
    """The viewer shows event `seq`: its open task carries gl-active in the SVG, and nothing else
    does; the page still fits the phone."""
    box = page.get_by_test_id("steps-diagram")
    expect(box).to_have_attribute("data-seq", str(seq))
    wanted = expected_open(events[seq])
    assert page.evaluate(MARKED, "gl-active") == wanted, (seq, events[seq]["type"])
    assert box.get_attribute("data-active") == ",".join(wanted)
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    assert_fits(page)


def test_an_auditor_steps_through_a_case_and_the_marks_follow_the_events(api, login, step):
    number, listed = walked_case(api)
    events = {e["seq"]: e for e in listed}
    last = max(events)
    assert [e["type"] for e in listed][:2] == ["opened", "claimed"]

    aud = login("aud")
    response = aud.goto(f"/cases/{number}")
    assert response is not None and response.status == 200
    with aud.expect_navigation():
        aud.get_by_test_id("case-step-through").click()
    assert urlsplit(aud.url).path == f"/cases/{number}/steps"
    box = aud.get_by_test_id("steps-diagram")
    expect(box).to_have_attribute("data-state", "ready")
    expect(aud.get_by_test_id("steps-position")).to_have_text(f"1 / {last}")
    check_frame(aud, events, 1)
    expect(aud.get_by_test_id("steps-actor")).to_have_text("周信息员")
    step(aud, "steps-opened")

    # The keyboard: → to the officer's claim and acceptance.
    aud.keyboard.press("ArrowRight")
    check_frame(aud, events, 2)
    aud.keyboard.press("ArrowRight")
    check_frame(aud, events, 3)
    assert "accept" in aud.evaluate(MARKED, "gl-done")
    assert "dispatch" in aud.evaluate(MARKED, "gl-ran"), "the dispatch table ran in this step"
    decisions = aud.get_by_test_id("steps-decisions")
    expect(decisions).to_contain_text("派单")
    expect(decisions).to_contain_text("limit_hours=24")
    expect(aud.get_by_test_id("steps-fields")).to_contain_text("民情信息")
    expect(aud.get_by_test_id("steps-due")).to_have_text(TIME)
    step(aud, "steps-accepted")

    # The buttons: next to the grid leader's referral and the district leader's resolution.
    nxt = aud.get_by_test_id("steps-next")
    for seq in range(4, last + 1):
        nxt.click()
        check_frame(aud, events, seq)
    expect(nxt).to_be_disabled()
    step(aud, "steps-last")
    aud.keyboard.press("ArrowLeft")
    check_frame(aud, events, last - 1)

    # The slider, by its own keys (Home: the first event).
    slider = aud.get_by_test_id("steps-slider")
    slider.focus()
    aud.keyboard.press("Home")
    check_frame(aud, events, 1)

    # Space (focus out of the slider) plays; play runs to the end by itself and stops there.
    play = aud.get_by_test_id("steps-play")
    aud.get_by_role("heading", level=1).click()
    aud.keyboard.press("Space")
    expect(play).to_have_attribute("aria-pressed", "true")
    expect(box).to_have_attribute("data-seq", str(last), timeout=15_000)
    expect(play).to_have_attribute("aria-pressed", "false")
    check_frame(aud, events, last)
    play.click()  # from the end, play starts again at the first event; pressed again, it pauses
    expect(box).to_have_attribute("data-seq", "2", timeout=5_000)
    play.click()
    expect(play).to_have_attribute("aria-pressed", "false")
    paused = int(box.get_attribute("data-seq") or 0)
    assert 2 <= paused < last
    check_frame(aud, events, paused)
