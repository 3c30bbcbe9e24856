"""督办台账 and the exports (issue 11): the overdue board (engine/board.py) lists every open task
under a viewer's units that is overdue or was supervised, with its holder and how often it was
supervised; the page, its CSV and xlsx agree; the figures files hold the numbers GET
/api/v1/stats answers; the monthly report renders in both languages.

Cases are driven through the runtime on the app's own FixedClock, and timers fired by moving it
(`gl.fire(moment)`); nothing sleeps. The town is conftest's ORG_YAML.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from apps import bearer, web_client
from conftest import ACCEPT_NORMAL, START, Loop
from openpyxl import load_workbook

from engine.board import SORTS, board, board_count
from engine.case_search import covered_unit
from engine.clock import SHANGHAI
from engine.figures import FIGURES
from engine.models import Case
from webapp import services

G02 = "V01-D1-G02"
HANDLED = {"outcome": "resolved", "note": "已处理"}
FORMS = {
    "accept": ACCEPT_NORMAL,
    "handle": HANDLED,
    "feedback": {"satisfaction": "satisfied"},
    "report": {"summary": "已办结"},
    "review": {"approved": True, "note": "同意"},
}


@pytest.fixture
def town(make_app, clock):
    """The app, and a Loop on a session of its own: no app context is held open, or requests
    would share it (and its `g`) with each other."""
    app = make_app()
    jobs = services(app).jobs
    session = jobs.sessions()
    yield app, Loop(session, jobs.runtime, clock)
    session.close()


def _rows(gl: Loop, username: str, **options):
    gl.session.rollback()
    return board(gl.session, gl.viewer(username), gl.clock.now(), **options).rows


def _archived(gl: Loop, officer: str = "off1", grid: str = "V01-D1-G01") -> Case:
    """A case taken through the whole loop to 归档, half an hour a step."""
    case = gl.open(officer, grid)
    for _ in range(12):
        case = gl.reload(case)
        if case.status == "archived":
            return case
        item = gl.item(case)
        who = item.assignee or next(
            name
            for name in (officer, "gl1", "gl2", "dl1", "vs1", "tl1", "tl2")
            if any(i.id == item.id for i in gl.inbox(name))
        )
        gl.clock.advance(minutes=30)
        gl.runtime.complete(gl.session, gl.viewer(who), item.id, FORMS[item.task])
    raise AssertionError(f"not archived: {case.status}")


# ------------------------------------------------------------------ what is on the board


def test_an_item_past_its_deadline_is_on_the_board_with_its_holder_and_supervisions(town):
    app, gl = town
    case = gl.open("off1")  # off1 holds its accept item at once
    accept = gl.item(case)
    assert _rows(gl, "gl1") == [], "neither overdue nor supervised yet"
    gl.fire(accept.warn_at)  # 80%: 督办
    gl.fire(accept.due_at)  # 100%: supervised again, overdue from now on
    gl.clock.advance(hours=2)

    [row] = _rows(gl, "gl1")
    assert (row.case_number, row.task, row.role, row.unit_code) == (
        case.number,
        "accept",
        "info_officer",
        "V01-D1-G01",
    )
    assert row.holder == "off1" and row.claimed
    assert row.times_supervised == 2
    assert row.overdue and row.overdue_for == timedelta(hours=2)
    assert row.open_for == gl.clock.now() - START
    assert not row.escalated
    assert board_count(gl.session, gl.viewer("gl1"), gl.clock.now()) == 1

    page = web_client(app, "gl1").get("/board").get_data(as_text=True)
    assert case.number in page and "周信息员" in page  # off1's name, not the username
    assert 'data-testid="board-supervised">2<' in page
    assert 'data-testid="board-overdue"' in page


def test_a_supervised_item_not_yet_due_is_on_the_board_until_it_is_done(town):
    app, gl = town
    case = gl.accepted()  # waits at the grid leader, unclaimed
    handle = gl.item(case)
    gl.fire(handle.warn_at)

    [row] = _rows(gl, "dl1")
    assert row.task == "handle" and row.role == "grid_leader"
    assert row.holder is None and not row.claimed  # the grid's leaders, whoever takes it
    assert row.times_supervised == 1 and not row.overdue and row.overdue_for is None
    assert row.due_at == handle.due_at

    page = web_client(app, "dl1").get("/board").get_data(as_text=True)
    assert "未认领" in page and 'data-testid="board-overdue"' not in page

    gl.complete("gl1", case, HANDLED)
    assert _rows(gl, "dl1") == [], "done: the feedback item that follows is neither"


def test_an_escalated_item_counts_only_its_own_supervisions(town):
    _app, gl = town
    case = gl.accepted(severity="urgent")  # handled at the district first, in clock hours
    for _ in range(2):  # district -> village -> town, each at its deadline
        gl.fire(gl.item(gl.reload(case)).due_at)
    town_item = gl.item(gl.reload(case))
    assert town_item.role == "town_leadership"
    assert _rows(gl, "tl1") == [], "the notices of the tiers below are not its own"
    gl.fire(town_item.due_at)  # its 80% and 100% notices
    gl.fire(town_item.due_at + timedelta(days=1))  # and then one a day

    [row] = _rows(gl, "tl1")
    assert row.escalated and row.overdue and row.times_supervised == 3
    assert row.unit_code == "XDK" and row.grid_code == "V01-D1-G01"


def test_the_items_of_a_finished_case_are_not_on_the_board(town):
    _app, gl = town
    case = gl.open("off1")
    gl.fire(gl.item(case).warn_at)
    assert len(_rows(gl, "aud")) == 1
    _archived_from(gl, case)
    assert _rows(gl, "aud") == []
    assert board_count(gl.session, gl.viewer("aud"), gl.clock.now()) == 0


def _archived_from(gl: Loop, case: Case) -> None:
    for _ in range(12):
        case = gl.reload(case)
        if case.status == "archived":
            return
        item = gl.item(case)
        who = item.assignee or next(
            n
            for n in ("off1", "gl1", "dl1", "vs1", "tl1")
            if item.id in {i.id for i in gl.inbox(n)}
        )
        gl.runtime.complete(gl.session, gl.viewer(who), item.id, FORMS[item.task])
    raise AssertionError(case.status)


def test_a_grid_leader_sees_only_their_grid_and_other_units_do_not_exist(town):
    app, gl = town
    mine, theirs = gl.open("off1"), gl.open("off2", G02)
    gl.fire(gl.item(mine).warn_at)
    assert {r.case_number for r in _rows(gl, "gl1")} == {mine.number}
    assert {r.case_number for r in _rows(gl, "gl2")} == {theirs.number}
    assert {r.case_number for r in _rows(gl, "dl1")} == {mine.number, theirs.number}
    assert _rows(gl, "gl3") == [], "another village"
    grid = covered_unit(gl.session, gl.viewer("dl1"), G02)
    assert [r.case_number for r in _rows(gl, "dl1", unit=grid)] == [theirs.number]

    leader = web_client(app, "gl1")
    assert leader.get(f"/board?unit={G02}").status_code == 404
    assert leader.get("/board.csv?unit=V02").status_code == 404
    assert leader.get("/board.xlsx?unit=NOPE").status_code == 404
    district = web_client(app, "dl1").get(f"/board?unit={G02}").get_data(as_text=True)
    assert theirs.number in district and mine.number not in district
    assert web_client(app, "adm").get("/board").status_code == 403  # covers no unit
    assert leader.get("/board?sort=sideways").status_code == 400


def test_the_board_sorts(town):
    """S: opened first, due later. Q: urgent, opened later, due first. T: reached the town
    through escalation, opened last and supervised most."""
    app, gl = town
    slow = gl.open("off1")
    gl.clock.set(START + timedelta(minutes=30))
    quick = gl.open("off2", G02, severity="urgent")
    gl.clock.set(START + timedelta(hours=1))
    top = gl.accepted("off1", severity="urgent")
    for _ in range(2):
        gl.fire(gl.item(gl.reload(top)).due_at)
    town_item = gl.item(gl.reload(top))
    gl.fire(town_item.due_at)
    gl.fire(town_item.due_at + timedelta(days=1))

    def order(sort: str) -> list[str]:
        return [r.case_number for r in _rows(gl, "tl1", sort=sort)]

    s, q, t = slow.number, quick.number, top.number
    assert order("overdue") == [q, s, t]
    assert order("age") == [s, q, t]
    assert order("supervised") == [t, q, s]  # 3, then 2 and 2 by deadline
    assert order("unit") == [s, q, t]  # V01-D1-G01, V01-D1-G02, XDK
    assert set(SORTS) == {"overdue", "age", "supervised", "unit"}

    viewer, now = gl.viewer("tl1"), gl.clock.now()
    for sort in SORTS:  # pages of one never repeat or skip a row
        paged = [
            board(gl.session, viewer, now, sort=sort, limit=1, offset=n).rows[0].case_number
            for n in range(3)
        ]
        assert paged == order(sort)
    assert board(gl.session, viewer, now, sort="supervised", limit=1, offset=1).has_more

    page = web_client(app, "tl1").get("/board?sort=supervised").get_data(as_text=True)
    assert page.index(t) < page.index(q) < page.index(s)
    assert 'data-testid="sort-supervised" aria-current="true"' in page


def test_the_empty_board_says_so_in_both_languages(town):
    app, _gl = town
    assert "没有超时或督办中的事项" in web_client(app, "gl1").get("/board").get_data(as_text=True)
    english = web_client(app, "aud", lang="en").get("/board").get_data(as_text=True)
    assert "No task is overdue or supervised." in english and "Overdue board" in english


# ------------------------------------------------------------------ downloads


def _overdue_case(gl: Loop) -> Case:
    case = gl.open("off1", title='=HYPERLINK("http://x")路灯')
    accept = gl.item(case)
    gl.fire(accept.due_at)
    gl.clock.advance(hours=1)
    return case


def test_the_board_as_csv_opens_in_excel_in_chinese(town):
    app, gl = town
    case = _overdue_case(gl)
    response = web_client(app, "gl1").get("/board.csv?sort=age")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    body = response.get_data()
    assert body.startswith(b"\xef\xbb\xbf"), "a BOM, or Excel garbles the Chinese"
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    header, [row] = rows[0], rows[1:]
    assert header[0] == "事项编号" and "督办次数" in header and "当前办理人" in header
    values = dict(zip(header, row, strict=True))
    assert values["事项编号"] == case.number
    assert values["标题"].startswith("'="), "text never turns into a formula"
    assert values["当前办理人"] == "周信息员"
    assert values["督办次数"] == "2"
    assert values["超时（小时）"] == "1.0"
    assert values["时限"] == "2026-11-23 14:00"  # 06:00 UTC, shown in Asia/Shanghai
    assert values["超时"] == "是"


def test_the_board_as_xlsx_holds_numbers_and_local_times(town):
    app, gl = town
    case = _overdue_case(gl)
    accept = gl.item(case)
    response = web_client(app, "gl1", lang="en").get("/board.xlsx")
    assert response.status_code == 200
    assert response.mimetype.endswith("spreadsheetml.sheet")
    sheet = load_workbook(io.BytesIO(response.get_data()))["board"]
    header = [c.value for c in sheet[1]]
    assert header[:3] == ["Case number", "Title", "Category"]
    row = dict(zip(header, [c.value for c in sheet[2]], strict=True))
    assert row["Case number"] == case.number
    assert row["Title"] == case.title, "kept exactly, as text"
    assert sheet["B2"].data_type == "s"
    assert row["Times supervised"] == 2
    assert row["Overdue by (hours)"] == 1.0
    assert row["Deadline"] == accept.due_at.astimezone(SHANGHAI).replace(tzinfo=None)
    assert row["Escalated"] == "No" and row["Overdue"] == "Yes"
    assert sheet.max_row == 2
    assert sheet.column_dimensions["B"].width > 8


# ------------------------------------------------------------------ the figures as files


def _some_figures(gl: Loop) -> None:
    """Two cases archived in V01-D1-G01, one in V01-D1-G02, one waiting there and one
    rejected: rates that are not whole numbers, and two children with different figures."""
    _archived(gl)
    _archived(gl)
    _archived(gl, "off2", G02)
    gl.accepted("off2", G02, category="dispute")
    rejected = gl.open("off1")
    gl.complete("off1", rejected, {"valid": False, "note": "重复"})


def test_the_figures_xlsx_holds_the_numbers_of_the_api(town):
    app, gl = town
    _some_figures(gl)
    query = "unit=V01-D1&from=2026-11-01&to=2026-11-30"
    api = app.test_client()
    stats = api.get(f"/api/v1/stats?{query}", headers=bearer(api, "dl1")).get_json()
    assert stats["resolution_rate"] == 75.0 and stats["received"] == 4

    response = web_client(app, "dl1").get(f"/figures/export.xlsx?{query}")
    assert response.status_code == 200
    book = load_workbook(io.BytesIO(response.get_data()))
    assert book.sheetnames == ["figures", "by_category", "query"]
    sheet = book["figures"]
    fields = [c.value for c in sheet[2]]
    assert fields == ["unit", "unit_name", *FIGURES]
    assert sheet["A1"].value == "单位代码", "the first header row is in the page's language"
    rows = [dict(zip(fields, [c.value for c in r], strict=True)) for r in sheet.iter_rows(3)]
    assert [r["unit"] for r in rows] == ["V01-D1", "V01-D1-G01", "V01-D1-G02"]
    for row, expected in zip(rows, [stats, *stats["children"]], strict=True):
        assert row["unit_name"] == expected["unit"]["name"]
        assert {f: row[f] for f in FIGURES} == {f: expected[f] for f in FIGURES}
    g02 = rows[2]
    assert g02["resolution_rate"] == 50.0  # a number cell (Excel keeps 50.0 as 50)
    assert sheet.cell(5, 3 + FIGURES.index("resolution_rate")).data_type == "n"

    by_category = book["by_category"]
    keys = [c.value for c in by_category[2]]
    assert keys[:2] == ["category", "category_label"] and keys[2:] == list(FIGURES)
    got = [dict(zip(keys, [c.value for c in r], strict=True)) for r in by_category.iter_rows(3)]
    assert [{k: r[k] for k in ("category", *FIGURES)} for r in got] == [
        {k: c[k] for k in ("category", *FIGURES)} for c in stats["by_category"]
    ]
    about = {r[1].value: r[2].value for r in book["query"].iter_rows(2)}
    assert about["unit"] == "V01-D1" and str(about["from"])[:10] == "2026-11-01"


def test_the_figures_csv_and_its_refusals(town):
    app, gl = town
    _some_figures(gl)
    api = app.test_client()
    stats = api.get("/api/v1/stats?unit=V01-D1-G02", headers=bearer(api, "gl2")).get_json()
    leader = web_client(app, "gl2")
    body = leader.get("/figures/export.csv?unit=V01-D1-G02").get_data()
    assert body.startswith(b"\xef\xbb\xbf")
    labels, fields, *rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert labels[2] == "受理数（件）" and fields[2:] == list(FIGURES)
    [row] = rows  # a grid has no children
    values = dict(zip(fields, row, strict=True))
    assert values["resolution_rate"] == str(stats["resolution_rate"]) == "50.0"
    assert values["avg_resolution_hours"] == str(stats["avg_resolution_hours"])
    assert values["satisfaction_rate"] == "100.0" and values["overdue_open"] == "0"

    assert leader.get("/figures/export.csv?unit=V01-D1-G01").status_code == 404
    assert leader.get("/figures/export.xlsx?unit=V02").status_code == 404
    assert leader.get("/figures/export.csv?from=2026-12-01&to=2026-11-01").status_code == 400
    assert leader.get("/figures/export.csv?category=nonsense").status_code == 400
    assert leader.get("/figures/export.csv?from=yesterday").status_code == 400
    empty = leader.get("/figures/export.xlsx?from=2025-01-01&to=2025-01-31").get_data()
    none = load_workbook(io.BytesIO(empty))["figures"]
    assert none.cell(3, 3 + FIGURES.index("resolution_rate")).value is None, "null is empty"


# ------------------------------------------------------------------ the monthly report


def test_the_monthly_report_renders_in_both_languages(town):
    app, gl = town
    _some_figures(gl)
    case = gl.open("off1")
    gl.fire(gl.item(case).warn_at)

    chinese = web_client(app, "tl1").get("/figures/report?month=2026-11")
    assert chinese.status_code == 200
    html = chinese.get_data(as_text=True)
    assert "小渡口镇 2026年11月月度报告" in html
    assert "2026-11-01 至 2026-11-30" in html
    assert 'data-figure="resolution_rate">75.0<' in html  # 3 of the 4 received
    assert 'data-testid="report-board-count"' in html and "共 1 项" in html
    assert "一村" in html and "二村" in html, "the town's villages"
    assert "/figures/export.xlsx?from=2026-11-01&amp;to=2026-11-30&amp;unit=XDK" in html

    english = web_client(app, "dl1", lang="en").get("/figures/report?unit=V01-D1&month=2026-11")
    text = english.get_data(as_text=True)
    assert english.status_code == 200
    assert "Monthly report of 一片, November 2026" in text
    assert 'data-figure="resolution_rate">75.0<' in text
    assert 'data-testid="report-next"' not in text, "no month after the current one"

    default = web_client(app, "dl1").get("/figures/report?unit=V01-D1").get_data(as_text=True)
    assert "2026-10-01 至 2026-10-31" in default, "last month by default"
    assert 'data-figure="received">0<' in default and "—" in default

    assert web_client(app, "dl1").get("/figures/report?month=2026-13").status_code == 400
    assert web_client(app, "gl1").get("/figures/report?unit=V02").status_code == 404


def test_a_title_with_a_control_character_still_exports(town):
    """A title pasted from Word may hold a vertical tab, which xlsx cannot: it is left out."""
    app, gl = town
    case = gl.open("off1", title="路灯\x0b坏了")
    gl.fire(gl.item(case).due_at)
    response = web_client(app, "gl1").get("/board.xlsx")
    assert response.status_code == 200
    sheet = load_workbook(io.BytesIO(response.get_data()))["board"]
    assert sheet["B2"].value == "路灯坏了"


def test_odd_page_and_month_values_are_refused_not_crashed(town):
    app, _gl = town
    client = web_client(app, "tl1")
    assert client.get("/board?page=%C2%B2").status_code == 400
    assert client.get("/figures/report?month=9999-12").status_code == 400
    assert client.get("/figures/report?month=2026-10").status_code == 200
