"""The dashboards (统计看板, DESIGN §11) through Flask's test client, and the series they draw
(engine/figures.py's trend, resolved_tiers and slowest_open) on the engine.

The organisation is conftest's: town XDK with villages V01 (secretary vs1, district V01-D1 under
dl1, grids G01 under gl1 and G02 under gl2) and V02 (vs2, V02-D1, grids G01 and G02); town
leaders tl1 and tl2, auditor aud. The clock starts on Monday 2026-11-23 10:00 in Shanghai.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from apps import web_client
from conftest import ACCEPT_NORMAL, START, Loop
from sqlalchemy import select
from test_web_inbox import find, one, page

from engine.figures import (
    Period,
    bucket_count,
    figures,
    resolved_tiers,
    slowest_open,
    trend,
)
from engine.models import TIERS, Case, Unit
from webapp import services

FORMS = {
    "accept": ACCEPT_NORMAL,
    "handle": {"outcome": "resolved", "note": "已处理"},
    "feedback": {"satisfaction": "satisfied"},
    "report": {"summary": "已办结"},
    "review": {"approved": True, "note": "同意"},
}
WORKERS = ("off1", "off2", "off3", "gl1", "gl2", "gl3", "dl1", "dl2", "vs1", "vs2", "tl1", "tl2")
NOVEMBER = Period(date(2026, 11, 1), date(2026, 11, 30))


@pytest.fixture
def town(make_app, clock):
    """The app, and a Loop on a session of its own: no app context is held open, or requests
    would share it (and its `g`) with each other."""
    app = make_app()
    jobs = services(app).jobs
    session = jobs.sessions()
    yield app, Loop(session, jobs.runtime, clock)
    session.close()


@pytest.fixture
def gl(session, runtime, clock) -> Loop:
    return Loop(session, runtime, clock)


def archived(gl: Loop, officer: str = "off1", grid: str = "V01-D1-G01", **accept) -> Case:
    """A case taken round the whole loop to 归档, half an hour a step."""
    case = gl.open(officer, grid)
    for _ in range(12):
        case = gl.reload(case)
        if case.status == "archived":
            return case
        item = gl.item(case)
        who = item.assignee or next(
            name for name in WORKERS if any(i.id == item.id for i in gl.inbox(name))
        )
        gl.clock.advance(minutes=30)
        data = {**FORMS[item.task], **accept} if item.task == "accept" else FORMS[item.task]
        gl.runtime.complete(gl.session, gl.viewer(who), item.id, data)
    raise AssertionError(f"not archived: {case.status}")


def unit(gl: Loop, code: str) -> Unit:
    return gl.session.scalars(select(Unit).where(Unit.code == code)).one()


def codes(html: str, testid: str) -> list[str]:
    return [row.attrs["data-unit"] for row in find(html, data_testid=testid)]


def href(html: str, **want) -> str:
    return one(html, **want).attrs["href"]


# ------------------------------------------------------------------ the pages


def test_the_town_leader_drills_from_the_town_to_a_grid_and_its_cases(town):
    app, gl = town
    case = gl.accepted("off1", "V01-D1-G01")
    gl.accepted("off3", "V02-D1-G01")
    gl.session.commit()
    tl1 = web_client(app, "tl1")

    html = page(tl1, "/figures")
    assert one(html, data_testid="figures").attrs["data-unit"] == "XDK"
    assert codes(html, "child-row") == ["V01", "V02"]
    assert "一村" in html and "二村" in html
    assert one(html, data_testid="tile-received").attrs["data-value"] == "2"
    assert one(html, data_testid="tile-resolution_rate").attrs["data-value"] == "0.0"
    for chart in ("children", "trend", "categories", "tiers"):
        assert one(html, data_testid=f"chart-{chart}").attrs["data-chart"] == chart
    assert one(html, id="figures-data").attrs["type"] == "application/json"
    assert "vendor/echarts/echarts.min.js" in html and "js/dashboards.js" in html
    # Each village row keeps the period: this year up to today.
    links = [a.attrs["href"] for a in find(html, data_testid="child-link")]
    assert links[0] == "/figures?unit=V01&from=2026-01-01&to=2026-11-23", links
    village = page(tl1, links[0])
    assert codes(village, "child-row") == ["V01-D1"]
    assert codes(village, "crumb") == ["XDK"]
    district = page(tl1, href(village, data_testid="child-link"))
    assert codes(district, "child-row") == ["V01-D1-G01", "V01-D1-G02"]
    assert codes(district, "crumb") == ["XDK", "V01"]
    grid_links = find(district, data_testid="child-cases")
    assert grid_links[0].attrs["href"] == "/cases?unit=V01-D1-G01"
    grid = page(tl1, "/figures?unit=V01-D1-G01")
    assert not find(grid, data_testid="figures-children"), "a grid has no child units"
    assert href(grid, data_testid="figures-cases") == "/cases?unit=V01-D1-G01"
    assert one(grid, data_testid="tier-row").attrs["data-unit"] == "V01-D1-G01"
    slow = one(grid, data_testid="slowest-item")
    assert slow.attrs["data-case"] == case.number
    assert f'href="/cases/{case.number}"' in grid
    listed = page(tl1, "/cases?unit=V01-D1-G01")
    assert case.number in listed


def test_the_village_secretary_sees_their_districts_and_no_other_village(town):
    app, gl = town
    gl.accepted("off1", "V01-D1-G01")
    gl.accepted("off3", "V02-D1-G01")
    gl.session.commit()
    vs1 = web_client(app, "vs1")
    html = page(vs1, "/figures")
    assert one(html, data_testid="figures").attrs["data-unit"] == "V01"
    assert codes(html, "child-row") == ["V01-D1"]
    assert codes(html, "crumb") == [], "nothing above the village is theirs"
    assert one(html, data_testid="tile-received").attrs["data-value"] == "1"
    assert "二村" not in html
    for other in ("V02", "V02-D1", "V02-D1-G01", "XDK", "NOWHERE"):
        page(vs1, f"/figures?unit={other}", status=404)
    district = page(vs1, "/figures?unit=V01-D1")
    assert codes(district, "crumb") == ["V01"]
    # A district leader sees their grids; a grid leader their grid.
    assert codes(page(web_client(app, "dl1"), "/figures"), "child-row") == [
        "V01-D1-G01",
        "V01-D1-G02",
    ]
    own = page(web_client(app, "gl2"), "/figures")
    assert one(own, data_testid="figures").attrs["data-unit"] == "V01-D1-G02"
    # The auditor sees the town; a department officer covers no unit with figures.
    assert codes(page(web_client(app, "aud"), "/figures"), "child-row") == ["V01", "V02"]
    page(web_client(app, "ps1"), "/figures", status=404)


@pytest.mark.parametrize(
    "query",
    [
        "from=2026-13-01",
        "to=yesterday",
        "from=2026-11-20&to=2026-11-01",
        "category=no_such_category",
        "bucket=day",
        "from=2000-01-01&to=2026-11-23&bucket=week",  # too many points to draw
        "from=9999-12-31&to=9999-12-31",  # the day after is past year 9999
        "from=0001-01-01&to=0001-01-07",  # midnight in Shanghai is before year 1 in UTC
        "unit=",  # blank is the default unit, not an error
    ],
)
def test_a_malformed_request_is_a_400_page(town, query):
    app, _gl = town
    response = web_client(app, "tl1").get(f"/figures?{query}")
    wanted = 200 if query == "unit=" else 400
    assert response.status_code == wanted, response.status_code
    if wanted == 400:
        assert "error-page" in response.get_data(as_text=True)


def test_changes_against_the_previous_period_and_an_empty_state(town):
    app, gl = town
    gl.clock.set(START - timedelta(days=5))  # Wednesday 18 November: the week before
    gl.accepted("off1", "V01-D1-G01")
    gl.clock.set(START + timedelta(days=1))  # Tuesday 24 November
    gl.accepted("off1", "V01-D1-G01")
    gl.accepted("off2", "V01-D1-G02")
    gl.session.commit()
    tl1 = web_client(app, "tl1")
    html = page(tl1, "/figures?from=2026-11-23&to=2026-11-29")
    change = one(html, data_testid="change-received")
    assert change.attrs["data-direction"] == "up" and change.words == "↑ 1"
    assert one(html, data_testid="change-resolution_rate").words == "→ 0.0"
    assert one(html, data_testid="change-satisfaction_rate").words == "—"
    assert "2026-11-16" in one(html, data_testid="figures-previous").words
    assert not find(html, data_testid="change-overdue_open"), "overdue is now, not a period's"
    # A week by days: the trend table holds one Monday.
    assert [r.attrs["data-start"] for r in find(html, data_testid="trend-row")] == ["2026-11-23"]

    empty = page(tl1, "/figures?from=2026-11-19&to=2026-11-22")  # after the 18th, before us
    assert one(empty, data_testid="figures-empty")
    assert not find(empty, data_testid="chart-trend")
    assert codes(empty, "child-row") == ["V01", "V02"], "still a way down"
    assert one(empty, data_testid="change-received").words == "↓ 1"


def test_the_page_speaks_english_with_the_lang_cookie(town):
    app, gl = town
    gl.accepted("off1", "V01-D1-G01")
    gl.session.commit()
    english = page(web_client(app, "tl1", lang="en"), "/figures?bucket=week")
    assert 'lang="en"' in english
    for words in ("Figures", "Cases received", "Resolution rate", "Villages", "By category"):
        assert words in english, words
    assert "受理量" not in english and "统计看板" not in english
    chinese = page(web_client(app, "tl1"), "/figures")
    assert "受理量" in chinese and "各村（社区）" in chinese


def test_the_menu_offers_figures_to_leaders_and_auditors(town):
    app, _gl = town
    for username, offered in {"tl1": True, "vs1": True, "gl1": True, "aud": True}.items():
        html = page(web_client(app, username), "/cases")
        assert bool(find(html, data_testid="menu-dashboards.index")) is offered, username
    for username in ("off1", "ps1", "adm"):
        landing = web_client(app, username).get("/", follow_redirects=True)
        assert not find(landing.get_data(as_text=True), data_testid="menu-dashboards.index")


# ------------------------------------------------------------------ the series


def test_trend_buckets_add_up_to_the_figures(gl):
    town = unit(gl, "XDK")
    moments = [
        START - timedelta(days=20),  # Tuesday 3 November
        START - timedelta(days=16),  # Saturday 7 November
        START - timedelta(days=15, hours=-14),  # Monday 9 November, 00:00 in Shanghai
        START,  # Monday 23 November
    ]
    for moment in moments[:3]:
        gl.clock.set(moment)
        gl.accepted("off1", "V01-D1-G01")
    gl.clock.set(moments[3])
    archived(gl, "off3", "V02-D1-G01")
    gl.accepted("off1", "V01-D1-G01", valid=False, note="重复")  # rejected: never received
    gl.session.commit()
    found = figures(gl.session, town, NOVEMBER, gl.clock.now())
    assert (found["received"], found["resolved"]) == (4, 1)

    weeks = trend(gl.session, town, NOVEMBER, "week")
    assert weeks[0]["start"] == date(2026, 10, 26), "the Monday before 1 November"
    assert all(p["start"].weekday() == 0 for p in weeks)
    assert len(weeks) == bucket_count(NOVEMBER, "week") == 6
    by_week = {p["start"]: (p["received"], p["resolved"]) for p in weeks}
    assert by_week[date(2026, 11, 2)] == (2, 0)
    assert by_week[date(2026, 11, 9)] == (1, 0), "midnight in Shanghai is the next week"
    assert by_week[date(2026, 11, 23)] == (1, 1)
    assert sum(p["received"] for p in weeks) == found["received"]
    assert sum(p["resolved"] for p in weeks) == found["resolved"]

    year = Period(date(2026, 1, 1), date(2026, 12, 31))
    months = trend(gl.session, town, year, "month")
    assert [p["start"] for p in months] == [date(2026, m, 1) for m in range(1, 13)]
    assert [p["received"] for p in months][10] == 4
    assert sum(p["received"] for p in months) == figures(gl.session, town, year, START)["received"]
    only = trend(gl.session, town, NOVEMBER, "month", category="dispute")
    assert [(p["received"], p["resolved"]) for p in only] == [(0, 0)]


def test_resolved_tiers_add_up_to_each_childs_resolved(gl):
    archived(gl, "off1", "V01-D1-G01")
    archived(gl, "off3", "V02-D1-G01")
    gl.accepted("off2", "V01-D1-G02")
    gl.session.commit()
    town = unit(gl, "XDK")
    rows = resolved_tiers(gl.session, town, NOVEMBER)
    assert [r["unit"]["code"] for r in rows] == ["V01", "V02"]
    assert all(list(r["tiers"]) == list(TIERS) for r in rows)
    children = figures(gl.session, town, NOVEMBER, gl.clock.now())["children"]
    assert [sum(r["tiers"].values()) for r in rows] == [c["resolved"] for c in children] == [1, 1]
    assert rows[0]["tiers"]["grid_leader"] == 1, "the grid leader resolved it"
    grid = resolved_tiers(gl.session, unit(gl, "V01-D1-G02"), NOVEMBER)
    assert [(r["unit"]["code"], sum(r["tiers"].values())) for r in grid] == [("V01-D1-G02", 0)]


def test_slowest_open_lists_the_items_waiting_longest_first(gl):
    first = gl.open("off1", "V01-D1-G01", title="最早")
    gl.clock.advance(hours=1)
    second = gl.accepted("off2", "V01-D1-G02")  # its handling item is made now
    gl.clock.advance(hours=1)
    gl.open("off3", "V02-D1-G01", title="二村的")
    gl.clock.advance(hours=1)
    third = gl.open("off1", "V01-D1-G01", title="最晚")
    gl.session.commit()
    now = gl.clock.now()

    village = slowest_open(gl.session, gl.viewer("aud"), unit(gl, "V01"), now)
    assert [(s["number"], s["task"]) for s in village] == [
        (first.number, "accept"),
        (second.number, "handle"),
        (third.number, "accept"),
    ]
    assert village[0]["title"] == "最早" and village[0]["role"] == "info_officer"
    assert village[0]["unit"]["code"] == "V01-D1-G01"
    assert village[1]["unit"]["code"] == "V01-D1-G02" and village[1]["role"] == "grid_leader"
    assert [s["created_at"] for s in village] == sorted(s["created_at"] for s in village)
    assert not any(s["overdue"] for s in village)
    assert len(slowest_open(gl.session, gl.viewer("aud"), unit(gl, "XDK"), now, limit=2)) == 2
    assert [
        s["title"] for s in slowest_open(gl.session, gl.viewer("aud"), unit(gl, "V02"), now)
    ] == ["二村的"]
    # Past its deadline the oldest item is overdue, by the one definition.
    later = first.opened_at + timedelta(days=3)
    assert (
        slowest_open(gl.session, gl.viewer("aud"), unit(gl, "V01-D1-G01"), later)[0]["overdue"]
        is True
    )


def test_a_bad_date_on_the_figures_page_says_which_value_was_wrong(town):
    """/figures?from=bad&to=bad said only 请求有误，请按提示修改 with nothing to correct by:
    the error page now lists each value that was not valid, in the page's language."""
    app, _gl = town
    page = web_client(app, "tl1").get("/figures?from=bad&to=bad")
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    assert "起始日期：该值无效。" in html and "截止日期：该值无效。" in html
    english = web_client(app, "tl1")
    english.set_cookie("lang", "en")
    html = english.get("/figures?from=bad&to=bad").get_data(as_text=True)
    assert "From: Not a valid date." in html and "To: Not a valid date." in html
    # engine/'s terse English reaches an English page as a sentence.
    html = english.get("/board?unit=ZZZ").get_data(as_text=True)
    assert "There is no such unit among yours." in html and "no such unit<" not in html
