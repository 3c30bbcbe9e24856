"""The administrators' calendar page (issue 10, item 6): a year's holidays and make-up working days
with where each came from, and entering a year's published arrangement by form or file. The clock
is the suite's START (Monday 23 November 2026), when 2027's arrangement is due and unknown to
chinese-calendar 1.11."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from io import BytesIO
from zoneinfo import ZoneInfo

import pytest
from apps import web_client
from conftest import START, Loop
from sqlalchemy import select

from engine import admin_log
from engine.clock import iso
from engine.models import AdminEvent, CalendarYear
from engine.workcal import (
    HOLIDAY,
    WORKDAY,
    WorkCalendar,
    describe_year,
    enter_calendar,
    load_calendar,
)
from webapp import services
from webapp.extensions import db

SH = ZoneInfo("Asia/Shanghai")


def sh(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH).astimezone(UTC)


# Friday 5 February 2027, 10:00 in Shanghai: the eve of the Spring Festival.
FESTIVAL_EVE = sh(2027, 2, 5, 10)
FORM_2027 = {
    "year": "2027",
    "holidays": "2027-01-01\n2027-02-06..2027-02-12",
    "workdays": "2027-02-13",
}


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def admin(app):
    return web_client(app, "adm")


def page(client, path: str, status: int = 200) -> str:
    response = client.get(path)
    assert response.status_code == status, (path, response.status_code)
    return response.get_data(as_text=True)


def day_line(html: str, day: str) -> str | None:
    """The list line of a special day, or None when the page does not list the day."""
    match = re.search(rf'<li data-testid="day-{day}"(.*?)</li>', html, re.S)
    return match.group(0) if match else None


def field_error(html: str, name: str) -> str | None:
    match = re.search(rf'data-testid="error-{name}">(.*?)</p>', html, re.S)
    return match.group(1) if match else None


def textarea(html: str, name: str) -> str:
    match = re.search(rf'<textarea id="{name}"[^>]*>(.*?)</textarea>', html, re.S)
    assert match, name
    return match.group(1)


def calendar_entries(app) -> list[AdminEvent]:
    with app.app_context():
        rows = admin_log.entries(db.session, type_="calendar_changed")
        db.session.expunge_all()
        db.session.remove()
    return rows


def stored_year(app, year: int) -> CalendarYear | None:
    with app.app_context():
        row = db.session.get(CalendarYear, year)
        if row is not None:
            db.session.expunge(row)
        db.session.remove()
    return row


# ------------------------------------------------------------------ what a year shows


def test_2026_shows_national_day_from_chinese_calendar_and_its_make_up_days(admin):
    html = page(admin, "/admin/calendar/2026")
    assert 'data-testid="calendar-basis" data-source="chinese_calendar"' in html
    for day in range(1, 8):
        line = day_line(html, f"2026-10-{day:02d}")
        assert line and 'data-kind="holiday"' in line and 'data-source="chinese_calendar"' in line
        assert "国庆节" in line and "内置国务院安排数据" in line
    # Saturday 10 October 2026 is worked to make up for the National Day week (调休上班).
    saturday = day_line(html, "2026-10-10")
    assert 'data-kind="workday"' in saturday and 'data-source="chinese_calendar"' in saturday
    assert "调休上班" in saturday
    assert day_line(html, "2026-10-08") is None  # an ordinary Thursday is not listed
    assert 'data-testid="not-entered"' not in html

    english = page(web_client(admin.application, "adm", "en"), "/admin/calendar/2026")
    line = day_line(english, "2026-10-01")
    assert "National Day" in line and "Holiday" in line and "chinese-calendar" in line
    assert "Make-up working day" in day_line(english, "2026-10-10")


def test_2027_shows_the_holidays_package_dates_and_offers_entry(admin):
    html = page(admin, "/admin/calendar/2027")
    assert 'data-testid="calendar-basis" data-source="holidays"' in html
    assert 'data-testid="not-entered"' in html and 'data-testid="offer-entry"' in html
    for day in ("2027-01-01", "2027-02-05", "2027-02-06", "2027-02-09", "2027-10-05"):
        line = day_line(html, day)
        assert line and 'data-kind="holiday"' in line and 'data-source="holidays"' in line, day
    assert "春节（补假）" in day_line(html, "2027-02-09")  # the package's observed day, by name
    assert 'data-kind="workday"' not in html  # the package knows no make-up working days
    assert textarea(html, "holidays") == "" and textarea(html, "workdays") == ""
    # The year's neighbours are a click away.
    assert 'href="/admin/calendar/2026"' in html and 'href="/admin/calendar/2028"' in html


def test_the_menu_and_the_banner_lead_to_the_year_to_enter(admin):
    home = page(admin, "/admin/ops")
    assert 'data-testid="menu-calendar_pages.index"' in home
    # From 1 November the banner names next year and links to its page.
    assert 'data-testid="calendar-warning-link"' in home
    assert 'href="/admin/calendar/2027" data-testid="calendar-warning-link"' in home
    response = admin.get("/admin/calendar")
    assert response.status_code == 302 and response.headers["Location"] == "/admin/calendar/2027"


# ------------------------------------------------------------------ entering a year


def test_entering_2027_through_the_form_stores_it_and_deadlines_honour_it(app, admin, clock):
    response = admin.post("/admin/calendar", data=FORM_2027)
    assert (
        response.status_code == 302 and response.headers["Location"] == "/admin/calendar/2027#top"
    )

    html = page(admin, "/admin/calendar/2027")
    assert "2027 年安排已录入：8 个放假日，1 个调休上班日。" in html  # the flash, in Chinese
    entered = re.search(r'data-testid="entered-by">(.*?)</p>', html, re.S).group(1)
    assert "朱管理 (adm)" in entered and "2026-11-23 10:00" in entered
    assert 'data-testid="calendar-basis" data-source="admin"' in html
    saturday = day_line(html, "2027-02-13")
    assert 'data-kind="workday"' in saturday and 'data-source="admin"' in saturday
    assert 'data-source="admin"' in day_line(html, "2027-02-12")
    # The package's holiday on the festival eve is not in the entered arrangement any more.
    assert day_line(html, "2027-02-05") is None
    assert 'data-testid="calendar-warning"' not in html  # the banner is gone
    # The form now holds what was entered, as ranges.
    assert textarea(html, "holidays") == "2027-01-01\n2027-02-06..2027-02-12"
    assert textarea(html, "workdays") == "2027-02-13"

    row = stored_year(app, 2027)
    assert row.holidays == ["2027-01-01"] + [f"2027-02-{d:02d}" for d in range(6, 13)]
    assert row.workdays == ["2027-02-13"]
    assert row.entered == {"by": "adm", "at": iso(START)}
    [entry] = calendar_entries(app)
    assert (entry.actor, entry.at) == ("adm", iso(START))
    assert json.loads(entry.data) == {"year": 2027, "holidays": 8, "workdays": 1, "by": "adm"}

    # A deadline computed afterwards counts the entered make-up Saturday and not the festival.
    with app.app_context():
        gl = Loop(db.session, services(app).runtime, clock)
        clock.set(FESTIVAL_EVE)
        case = gl.accepted()
        item = gl.item(case)
        # 14 h on Friday 5th, the festival week off, 10 h on the make-up Saturday 13th.
        assert (item.role, item.due_at) == ("grid_leader", sh(2027, 2, 13, 10))
        db.session.remove()


def test_an_entered_year_does_not_move_deadlines_already_set(app, admin, clock):
    with app.app_context():
        gl = Loop(db.session, services(app).runtime, clock)
        clock.set(FESTIVAL_EVE)
        case = gl.accepted()
        before = gl.item(case).due_at
        timers = [t.due_at for t in gl.timers(case)]
        assert before == sh(2027, 2, 12)  # the holidays package: the eve and the week off
        db.session.remove()
    assert admin.post("/admin/calendar", data=FORM_2027).status_code == 302
    with app.app_context():
        gl = Loop(db.session, services(app).runtime, clock)
        case = gl.reload(case)
        assert gl.item(case).due_at == before
        assert [t.due_at for t in gl.timers(case)] == timers
        db.session.remove()


def test_bad_dates_get_a_per_field_error_keep_what_was_typed_and_store_nothing(app, admin):
    typed = {
        "holidays": "2027-02-06..2027-02-08\n2027-02-30\n2026-10-01\n2027-02-07",
        "workdays": "2027-02-13\n2027-02-06\n2027-13-01",
    }
    response = admin.post("/admin/calendar", data={"year": "2027", **typed})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert 'data-testid="form-errors"' in html
    holidays = field_error(html, "holidays")
    assert "2027-02-30：不是日期（YYYY-MM-DD）" in holidays
    assert "2026-10-01：不在 2027 年内" in holidays
    assert "2027-02-07：重复填写（另见 2027-02-07 (2027-02-06..2027-02-08)）" in holidays
    workdays = field_error(html, "workdays")
    assert "2027-13-01：不是日期（YYYY-MM-DD）" in workdays
    assert "2027-02-06：已填为放假日（2027-02-06 (2027-02-06..2027-02-08)）" in workdays
    assert "2027-02-13" not in workdays  # the good date is not blamed
    assert textarea(html, "holidays") == typed["holidays"]
    assert textarea(html, "workdays") == typed["workdays"]
    assert stored_year(app, 2027) is None
    assert calendar_entries(app) == []

    # A range that cannot be read, and an empty list of holidays, are refused the same way.
    html = admin.post(
        "/admin/calendar", data={"year": "2027", "holidays": "2027-02-12..2027-02-06"}
    ).get_data(as_text=True)
    assert "2027-02-12..2027-02-06：不是日期范围" in field_error(html, "holidays")
    html = admin.post("/admin/calendar", data={"year": "2027", "holidays": " "}).get_data(
        as_text=True
    )
    assert field_error(html, "holidays") == "请填写当年的放假日期。"
    # A form without a year Gridloop keeps is a bad request, not a crash.
    for year in ("", "abc", "1999", "99999999999999999999"):
        bad = admin.post("/admin/calendar", data={**FORM_2027, "year": year})
        assert bad.status_code == 400, year
    assert stored_year(app, 2027) is None


def test_the_form_errors_read_in_english_on_request(admin):
    client = web_client(admin.application, "adm", "en")
    html = client.post("/admin/calendar", data={"year": "2027", "holidays": "2027-02-30"}).get_data(
        as_text=True
    )
    assert field_error(html, "holidays") == "2027-02-30: not a date (YYYY-MM-DD)"


def test_a_calendar_file_is_entered_like_the_form(app, admin):
    file = {"year": 2027, "holidays": ["2027-01-01", "2027-02-06"], "workdays": ["2027-02-13"]}
    response = admin.post(
        "/admin/calendar/file",
        data={"year": "2026", "file": (BytesIO(json.dumps(file).encode()), "2027.json")},
        content_type="multipart/form-data",
    )
    # The file's year, whatever page it was sent from.
    assert (
        response.status_code == 302 and response.headers["Location"] == "/admin/calendar/2027#top"
    )
    assert stored_year(app, 2027).workdays == ["2027-02-13"]
    [entry] = calendar_entries(app)
    assert json.loads(entry.data)["holidays"] == 2

    yaml_file = b"year: 2028\nholidays: [2028-01-01, New Year]\nworkdays: []\n"
    response = admin.post(
        "/admin/calendar/file",
        data={"year": "2028", "file": (BytesIO(yaml_file), "2028.yaml")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    errors = re.search(r'data-testid="upload-errors">(.*?)</ul>', html, re.S).group(1)
    assert "holidays[1]：不是日期（YYYY-MM-DD）" in errors
    assert stored_year(app, 2028) is None
    assert len(calendar_entries(app)) == 1


def test_a_file_nested_past_any_limit_is_refused_not_a_crash(app, admin):
    deep = b"[" * 100_000 + b"]" * 100_000
    response = admin.post(
        "/admin/calendar/file",
        data={"year": "2027", "file": (BytesIO(deep), "deep.json")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert "不是日历文件" in response.get_data(as_text=True)
    assert calendar_entries(app) == []


def test_two_administrators_at_once_one_is_told_to_send_again(app, admin, monkeypatch):
    """The loser of a race on the log's seq: its head was read before the winner's entry."""
    first = {"year": "2028", "holidays": "2028-01-01", "workdays": ""}
    assert admin.post("/admin/calendar", data=first).status_code == 302
    stale = admin_log.head
    monkeypatch.setattr(admin_log, "head", lambda session: (0, stale(session)[1]))
    response = admin.post("/admin/calendar", data=FORM_2027)
    assert response.status_code == 409
    assert "同一时刻已有另一项更改保存" in response.get_data(as_text=True)
    monkeypatch.undo()
    assert stored_year(app, 2027) is None  # the change rolled back with its entry
    assert [json.loads(e.data)["year"] for e in calendar_entries(app)] == [2028]


def test_the_command_line_import_is_on_the_record_too(cli_env, db_url, tmp_path, make_session):
    from webapp.cli import main

    file = tmp_path / "2027.json"
    file.write_text(json.dumps({"year": 2027, "holidays": ["2027-01-01"], "workdays": []}))
    result = cli_env.invoke(main, ["calendar", "import", str(file)])
    assert result.exit_code == 0, result.output
    with make_session() as session:
        assert session.get(CalendarYear, 2027).entered["by"] == "cli"
        [entry] = session.scalars(select(AdminEvent)).all()
        assert (entry.type, entry.actor) == ("calendar_changed", "cli")
        assert json.loads(entry.data) == {"year": 2027, "holidays": 1, "workdays": 0, "by": "cli"}
        assert admin_log.check(session) is None


def test_only_administrators_open_or_change_the_calendar(app):
    for username in ("off1", "aud", "tl1"):
        client = web_client(app, username)
        assert client.get("/admin/calendar/2027").status_code == 403
        assert client.get("/admin/calendar").status_code == 403
        assert client.post("/admin/calendar", data=FORM_2027).status_code == 403
        upload = client.post(
            "/admin/calendar/file",
            data={"year": "2027", "file": (BytesIO(b'{"year": 2027, "holidays": []}'), "f.json")},
            content_type="multipart/form-data",
        )
        assert upload.status_code == 403
        assert 'data-testid="menu-calendar_pages.index"' not in page(client, "/account/password")
    assert stored_year(app, 2027) is None
    signed_out = app.test_client().get("/admin/calendar/2027")
    assert signed_out.status_code == 302 and "/login" in signed_out.headers["Location"]
    assert page(web_client(app, "adm"), "/admin/calendar/1999", 404)


# ------------------------------------------------------------------ the page tells the truth


@pytest.mark.parametrize("entered", [False, True])
@pytest.mark.parametrize("year", [2026, 2027])
def test_the_described_year_is_what_deadlines_use(session, year, entered):
    """Every day of the year: a listed holiday is not a working day, a listed make-up day is one,
    and an unlisted day is a working day exactly from Monday to Friday."""
    if entered:
        enter_calendar(
            session,
            {
                "year": year,
                "holidays": [f"{year}-02-{d:02d}" for d in range(6, 13)] + [f"{year}-10-03"],
                "workdays": [f"{year}-02-14", f"{year}-10-01"],
            },
            START,
            "adm",
        )
        session.commit()
    described = describe_year(session, year)
    cal = load_calendar(session)
    special = {d.day: d for d in described.days}
    day = date(year, 1, 1)
    while day.year == year:
        found = special.get(day)
        if found is None:
            assert cal.is_workday(day) == (day.weekday() < 5), day
        elif found.kind == HOLIDAY:
            assert not cal.is_workday(day), day
        else:
            assert found.kind == WORKDAY and cal.is_workday(day), day
        day += timedelta(days=1)
    assert described.entered is entered
    if entered and year == 2026:
        # The entries win where they speak; chinese-calendar keeps the other days.
        assert special[date(2026, 10, 1)].source == "admin"
        assert special[date(2026, 10, 2)].source == "chinese_calendar"
    assert WorkCalendar().is_workday(date(year, 3, 2)) == cal.is_workday(date(year, 3, 2))
