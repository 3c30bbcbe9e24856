"""Years the chinese-calendar data does not cover (DESIGN §2): from 2027 the statutory holidays are
the `holidays` package's China calendar (observed days included) until administrators enter the
year's published arrangement, and from 1 November administrators are warned — in `gridloop timers
status` and on every page — when next year's arrangement is still missing. Clocks are injected."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar
import holidays
import pytest
from click.testing import CliRunner
from conftest import REPO

from engine.clock import FixedClock, iso
from engine.storage import make_sessionmaker
from engine.workcal import WorkCalendar, import_calendar, load_calendar, missing_arrangement
from jobs.root import REDIS_URL_ENV, Root
from jobs.status import timers_status
from webapp.cli import main
from webapp.extensions import db

SH = ZoneInfo("Asia/Shanghai")

# An arrangement for 2027 as an administrator would enter it (made up for the test: the State
# Council had not published 2027's when this was written). The festival week is 6–12 February,
# Saturday 13 February is a make-up working day, and Friday 5 February (New Year's Eve, a holiday
# in the `holidays` package) is an ordinary working day.
ARRANGEMENT_2027 = {
    "year": 2027,
    "holidays": [f"2027-02-{d:02d}" for d in range(6, 13)],
    "workdays": ["2027-02-13"],
}
WARNING_2027 = (
    "warning: the 2027 holiday arrangement has not been entered; deadlines in 2027 use the "
    "holidays package's statutory days without make-up working days (gridloop calendar import "
    "FILE)"
)
BANNER = 'data-testid="calendar-warning"'


def sh(*args: int) -> datetime:
    """An instant given in Shanghai wall-clock time, as UTC."""
    return datetime(*args, tzinfo=SH).astimezone(UTC)


# Shanghai's 1 November 2026 begins at 16:00 UTC on 31 October.
FIRST_NOVEMBER = sh(2026, 11, 1)
LAST_OCTOBER_SECOND = FIRST_NOVEMBER - timedelta(seconds=1)
# Friday 5 February 2027, 10:00 in Shanghai: the eve of the Spring Festival.
FESTIVAL_EVE = sh(2027, 2, 5, 10)


# ------------------------------------------------------------------ the facts relied on


def test_the_packages_know_what_the_next_tests_rely_on():
    with pytest.raises(NotImplementedError):
        chinese_calendar.is_workday(date(2027, 2, 8))
    assert chinese_calendar.is_workday(date(2026, 11, 2))  # 2026 is covered
    cn = holidays.country_holidays("CN", years=2027)
    festival = [date(2027, 2, d) for d in range(5, 11)]  # the eve, three days, two observed
    assert all(day in cn for day in festival)
    assert "Spring Festival" in cn[date(2027, 2, 6)]
    assert date(2027, 2, 4) not in cn and date(2027, 2, 11) not in cn


# ------------------------------------------------------------------ working days in 2027


def test_without_an_arrangement_the_spring_festival_is_not_working_time():
    cal = WorkCalendar()
    assert cal.is_workday(date(2027, 2, 4)) is True  # Thursday
    for day in range(5, 11):  # Friday to Wednesday: the package's holidays, observed ones too
        assert cal.is_workday(date(2027, 2, day)) is False, day
    assert cal.is_workday(date(2027, 2, 11)) is True
    assert cal.is_workday(date(2027, 1, 1)) is False  # New Year's Day, a Friday
    assert cal.is_workday(date(2027, 2, 20)) is False  # no make-up days: Saturdays are off
    # Thursday 4 February 10:00 + 24h: 14h on Thursday, the festival counts nothing, 10h on 11th.
    assert cal.add_hours(sh(2027, 2, 4, 10), 24, urgent=False) == sh(2027, 2, 11, 10)
    # Urgent cases still run on the wall clock.
    assert cal.add_hours(sh(2027, 2, 4, 10), 24, urgent=True) == sh(2027, 2, 5, 10)


def test_a_normal_case_accepted_on_the_festival_eve_is_due_after_the_festival(gl):
    gl.clock.set(FESTIVAL_EVE)
    case = gl.accepted()
    item = gl.item(case)
    # Grid leader, 24 working hours; the eve is a holiday, so counting starts on Thursday 11th.
    assert (item.role, item.due_at) == ("grid_leader", sh(2027, 2, 12))
    assert [t.due_at for t in gl.timers(case)] == [sh(2027, 2, 11, 19, 12), sh(2027, 2, 12)]


def test_an_entered_arrangement_wins_with_its_make_up_day(gl):
    import_calendar(gl.session, ARRANGEMENT_2027)
    gl.session.commit()
    cal = load_calendar(gl.session)
    assert cal.is_workday(date(2027, 2, 5)) is True  # not in the entered holidays
    assert cal.is_workday(date(2027, 2, 13)) is True  # the entered make-up Saturday
    assert cal.is_workday(date(2027, 2, 14)) is False  # Sunday
    assert cal.is_workday(date(2027, 1, 1)) is True  # the entries are the whole arrangement

    gl.clock.set(FESTIVAL_EVE)
    case = gl.accepted()
    item = gl.item(case)
    # 14h on Friday 5th, the festival week off, 10h on the make-up Saturday.
    assert (item.role, item.due_at) == ("grid_leader", sh(2027, 2, 13, 10))
    # 80%: 19.2h = 14h on Friday and 5h12 on Saturday.
    assert [t.due_at for t in gl.timers(case)] == [sh(2027, 2, 13, 5, 12), sh(2027, 2, 13, 10)]


def test_the_holidays_package_is_asked_once_per_year():
    cal = WorkCalendar()
    for hour in range(24):
        cal.add_hours(sh(2027, 2, 4, hour), 48, urgent=False)
    assert set(cal._statutory) == {2027}
    built = cal._statutory[2027]
    cal.add_hours(sh(2027, 9, 30, 10), 48, urgent=False)
    assert cal._statutory[2027] is built


# ------------------------------------------------------------------ the reminder


def test_missing_arrangement_from_the_first_of_november_in_shanghai(session):
    assert missing_arrangement(session, LAST_OCTOBER_SECOND) is None
    assert missing_arrangement(session, FIRST_NOVEMBER) == 2027
    assert missing_arrangement(session, sh(2026, 12, 31, 23, 59)) == 2027
    # Next year covered by the chinese-calendar data: nothing to enter.
    assert missing_arrangement(session, sh(2025, 11, 15)) is None
    # Early in the year nobody is asked for the year after.
    assert missing_arrangement(session, sh(2027, 10, 31, 12)) is None
    assert missing_arrangement(session, sh(2027, 11, 1)) == 2028
    import_calendar(session, ARRANGEMENT_2027)
    session.commit()
    assert missing_arrangement(session, FIRST_NOVEMBER) is None
    assert missing_arrangement(session, sh(2027, 11, 1)) == 2028


@pytest.fixture
def root(db_engine, runtime, clock) -> Root:
    return Root(clock, runtime, db_engine, make_sessionmaker(db_engine), redis_url=None)


def test_timers_status_warns_from_the_first_of_november(root, session):
    _, before = timers_status(root, LAST_OCTOBER_SECOND)
    assert not any(line.startswith("warning") for line in before)

    _, lines = timers_status(root, FIRST_NOVEMBER)
    assert lines[0] == f"as of {iso(FIRST_NOVEMBER)}"
    assert lines[-1] == WARNING_2027
    assert lines[1:-1] == before[1:]  # the backlog's lines as they were, the warning last

    import_calendar(session, ARRANGEMENT_2027)
    session.commit()
    _, entered = timers_status(root, FIRST_NOVEMBER)
    assert WARNING_2027 not in entered
    assert not any(line.startswith("warning") for line in entered)


def test_the_status_command_prints_the_warning(db_url, monkeypatch, tmp_path):
    monkeypatch.setenv("GRIDLOOP_DATABASE_URL", db_url)
    monkeypatch.setenv("GRIDLOOP_CHEAP_PASSWORDS", "1")
    monkeypatch.delenv(REDIS_URL_ENV, raising=False)
    runner = CliRunner()

    def status(at: datetime) -> list[str]:
        result = runner.invoke(main, ["timers", "status", "--as-of", iso(at)])
        assert result.exit_code == 0, result.output
        return result.output.splitlines()

    assert WARNING_2027 not in status(LAST_OCTOBER_SECOND)
    assert status(FIRST_NOVEMBER)[-1] == WARNING_2027
    file = tmp_path / "2027.json"
    file.write_text(json.dumps(ARRANGEMENT_2027))
    imported = runner.invoke(main, ["calendar", "import", str(file)])
    assert imported.exit_code == 0, imported.output
    assert WARNING_2027 not in status(FIRST_NOVEMBER)


# ------------------------------------------------------------------ the banner


@pytest.fixture
def banner_clock() -> FixedClock:
    return FixedClock(LAST_OCTOBER_SECOND)


@pytest.fixture
def banner_app(make_app, banner_clock):
    return make_app(clock=banner_clock)


def _signed_in(app, username: str):
    client = app.test_client()
    response = client.post("/login", data={"username": username, "password": "pw"})
    assert response.status_code == 302
    return client


def _page(client, path: str, lang: str | None = None) -> str:
    if lang:
        client.set_cookie("lang", lang)
    else:
        client.delete_cookie("lang")
    response = client.get(path)
    assert response.status_code == 200, path
    return response.get_data(as_text=True)


def test_the_banner_shows_administrators_from_the_first_of_november(banner_app, banner_clock):
    admin = _signed_in(banner_app, "adm")
    officer = _signed_in(banner_app, "off1")
    assert BANNER not in _page(admin, "/admin/ops")

    banner_clock.set(FIRST_NOVEMBER)
    ops = _page(admin, "/admin/ops")
    assert BANNER in ops
    # Chinese by default, naming the year and leading to the calendar page (a page sweep found
    # it sending people on phones to a command line); English on request.
    assert "2027 年节假日安排尚未录入" in ops
    assert "gridloop calendar import" not in ops
    assert 'href="/admin/calendar/2027" data-testid="calendar-warning-link"' in ops
    english = _page(admin, "/admin/ops", "en")
    assert "The 2027 holiday arrangement has not been entered." in english
    assert "gridloop calendar import" not in english
    # On every page an administrator opens, not only the operations page.
    assert BANNER in _page(admin, "/account/password")
    # Never for people who cannot enter the calendar, nor before signing in.
    for path in ("/", "/cases/mine"):
        assert BANNER not in _page(officer, path)
    assert BANNER not in _page(banner_app.test_client(), "/login")

    with banner_app.app_context():
        import_calendar(db.session, ARRANGEMENT_2027)
        db.session.commit()
    assert BANNER not in _page(admin, "/admin/ops")
    assert BANNER not in _page(admin, "/admin/ops", "en")


def test_the_banner_fits_a_phone(banner_app, banner_clock):
    """No fixed widths: the banner wraps (DESIGN: every page fits 360 px)."""
    banner_clock.set(FIRST_NOVEMBER)
    ops = _page(_signed_in(banner_app, "adm"), "/admin/ops")
    start = ops.index(BANNER)
    banner = ops[ops.rindex("<p", 0, start) : ops.index("</p>", start)]
    assert "style=" not in banner and "nowrap" not in banner
    sheet = (REPO / "webapp/static/css/app.css").read_text(encoding="utf-8")
    rule = sheet.index(".calendar-warning {")
    css = sheet[rule : sheet.index("}", sheet.index(".calendar-warning code", rule))]
    assert "width" not in css and "nowrap" not in css
