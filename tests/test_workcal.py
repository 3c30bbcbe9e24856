"""Deadlines as a grid worker sees them: weekends, holidays and 调休 days stretch or shorten a limit."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest
from sqlalchemy import func, select

from engine import workcal
from engine.models import CalendarYear
from engine.storage import create_schema, make_engine, make_sessionmaker
from engine.workcal import (
    CalendarCache,
    CalendarFileError,
    WorkCalendar,
    import_calendar,
    load_calendar,
    parse_calendar_file,
)

SH = ZoneInfo("Asia/Shanghai")


def sh(*args: int) -> datetime:
    """An instant given in Shanghai wall-clock time."""
    return datetime(*args, tzinfo=SH)


@pytest.fixture
def cal() -> WorkCalendar:
    return WorkCalendar()


@pytest.fixture
def session(new_db_url):
    engine = make_engine(new_db_url("cal"))
    create_schema(engine)
    with make_sessionmaker(engine)() as s:
        yield s
    engine.dispose()


# --- the weekend ---------------------------------------------------------------------------------


def test_weekend_stretches_a_non_urgent_limit(cal):
    # 2026-03-13 is a plain Friday: no holiday or make-up day that week.
    assert [chinese_calendar.is_workday(date(2026, 3, d)) for d in range(13, 17)] == [
        True,
        False,
        False,
        True,
    ]
    deadline = cal.add_hours(sh(2026, 3, 13, 10), 24, urgent=False)
    assert deadline == sh(2026, 3, 16, 10)
    assert deadline.tzinfo is UTC
    assert deadline == datetime(2026, 3, 16, 2, tzinfo=UTC)


def test_a_start_on_the_weekend_counts_from_monday_midnight(cal):
    assert cal.add_hours(sh(2026, 3, 14, 15), 2, urgent=False) == sh(2026, 3, 16, 2)


def test_hours_used_up_at_midnight_end_there_not_after_the_weekend(cal):
    assert cal.add_hours(sh(2026, 3, 13, 10), 14, urgent=False) == sh(2026, 3, 14, 0)
    assert cal.add_hours(sh(2026, 3, 13, 0), 24, urgent=False) == sh(2026, 3, 14, 0)
    # One microsecond more spills over the weekend.
    later = cal.add_hours(sh(2026, 3, 13, 10), 14 + 1 / 3_600_000_000, urgent=False)
    assert later == sh(2026, 3, 16, 0) + timedelta(microseconds=1)


def test_the_day_is_decided_in_shanghai_not_in_the_zone_given(cal):
    # Friday 20:00 UTC is already Saturday 04:00 in Shanghai: nothing counts until Monday.
    start = datetime(2026, 3, 13, 20, tzinfo=UTC)
    assert cal.add_hours(start, 1, urgent=False) == sh(2026, 3, 16, 1)


# --- national holidays and make-up working days (2026 data of chinesecalendar 1.11) ---------------


def test_package_data_for_national_day_2026():
    """The facts the next tests rely on, as the installed package has them."""
    holidays = [date(2026, 10, d) for d in range(1, 8)]
    assert not any(chinese_calendar.is_workday(d) for d in holidays)
    assert chinese_calendar.is_workday(date(2026, 9, 30))  # Wednesday
    assert chinese_calendar.is_workday(date(2026, 10, 8))  # Thursday
    assert chinese_calendar.is_workday(date(2026, 10, 10))  # Saturday, 调休
    assert not chinese_calendar.is_workday(date(2026, 10, 11))  # Sunday
    assert chinese_calendar.is_workday(date(2026, 9, 20))  # Sunday, 调休
    assert not chinese_calendar.is_workday(date(2026, 9, 19))  # Saturday


def test_national_day_stretches_a_non_urgent_limit(cal):
    # 14 hours on 30 September, the holiday week counts nothing, 10 hours on 8 October.
    assert cal.add_hours(sh(2026, 9, 30, 10), 24, urgent=False) == sh(2026, 10, 8, 10)
    assert cal.add_hours(sh(2026, 10, 2, 9), 1, urgent=False) == sh(2026, 10, 8, 1)


def test_make_up_saturday_counts(cal):
    # Friday 9 October 10:00 + 24h: 14 hours on Friday, the rest on the 调休 Saturday.
    assert cal.add_hours(sh(2026, 10, 9, 10), 24, urgent=False) == sh(2026, 10, 10, 10)
    # ... and past it, Sunday 11 October is off again.
    assert cal.add_hours(sh(2026, 10, 9, 10), 48, urgent=False) == sh(2026, 10, 12, 10)


def test_make_up_sunday_counts(cal):
    # Saturday 19 September is off, Sunday 20 September is a 调休 working day.
    assert cal.add_hours(sh(2026, 9, 19, 12), 2, urgent=False) == sh(2026, 9, 20, 2)


def test_is_workday_follows_the_package(cal):
    assert cal.is_workday(date(2026, 10, 10)) is True
    assert cal.is_workday(date(2026, 10, 1)) is False
    assert cal.is_workday(date(2026, 3, 14)) is False
    assert cal.is_workday(date(2026, 3, 13)) is True


# --- urgent cases --------------------------------------------------------------------------------


def test_urgent_counts_clock_hours_through_the_weekend(cal):
    assert cal.add_hours(sh(2026, 3, 13, 10), 24, urgent=True) == sh(2026, 3, 14, 10)
    assert cal.add_hours(sh(2026, 3, 14, 15), 2, urgent=True) == sh(2026, 3, 14, 17)


def test_urgent_counts_clock_hours_through_national_day(cal):
    deadline = cal.add_hours(sh(2026, 9, 30, 10), 24, urgent=True)
    assert deadline == sh(2026, 10, 1, 10)
    assert deadline.tzinfo is UTC


# --- fractional hours (the 80% supervision point) ------------------------------------------------


def test_eighty_percent_of_a_day_lands_on_the_exact_instant(cal):
    start = sh(2026, 3, 13, 10)
    hours = 0.8 * 24  # 19.200000000000003 in floating point, as the caller computes it
    # 14 hours on Friday, 5 h 12 min on Monday.
    assert cal.add_hours(start, hours, urgent=False) == sh(2026, 3, 16, 5, 12)
    assert cal.add_hours(start, hours, urgent=True) == sh(2026, 3, 14, 5, 12)
    assert cal.add_hours(start, 0.5, urgent=False) == sh(2026, 3, 13, 10, 30)


def test_a_zero_limit_ends_at_the_start(cal):
    start = sh(2026, 3, 14, 15)  # Saturday
    assert cal.add_hours(start, 0, urgent=False) == start


# --- years the package does not cover, and administrator entries ---------------------------------


def test_package_has_no_data_for_2027():
    with pytest.raises(NotImplementedError):
        chinese_calendar.is_workday(date(2027, 1, 4))


def test_uncovered_year_uses_monday_to_friday_and_the_statutory_holidays(cal):
    # chinese_calendar stops at 2026. In 2027, with nothing entered, the `holidays` package's
    # statutory days are holidays (DESIGN §2): Friday 1 January is New Year's Day.
    assert cal.is_workday(date(2027, 1, 1)) is False
    assert cal.is_workday(date(2027, 1, 2)) is False  # Saturday
    assert cal.is_workday(date(2027, 1, 3)) is False  # Sunday
    assert cal.is_workday(date(2027, 1, 4)) is True  # an ordinary Monday
    # Thursday 31 December 2026 10:00 + 24h runs into 2027: 14h on Thursday, 10h on Monday.
    assert cal.add_hours(sh(2026, 12, 31, 10), 24, urgent=False) == sh(2027, 1, 4, 10)
    # 48h: Monday is full, Tuesday 10:00.
    assert cal.add_hours(sh(2026, 12, 31, 10), 48, urgent=False) == sh(2027, 1, 5, 10)


def test_administrator_holiday_for_2027_extends_the_limit(session):
    import_calendar(
        session,
        {"year": 2027, "holidays": ["2027-01-01"], "workdays": ["2027-01-09"]},
    )
    session.commit()

    cal = load_calendar(session)
    assert cal.is_workday(date(2027, 1, 1)) is False
    assert cal.is_workday(date(2027, 1, 9)) is True  # an entered make-up Saturday
    # New Year's Day no longer counts: 14h on Thursday, then Monday 4 January.
    assert cal.add_hours(sh(2026, 12, 31, 10), 24, urgent=False) == sh(2027, 1, 4, 10)
    # The entered Saturday counts.
    assert cal.add_hours(sh(2027, 1, 8, 10), 24, urgent=False) == sh(2027, 1, 9, 10)
    # Urgent cases ignore the calendar.
    assert cal.add_hours(sh(2026, 12, 31, 10), 24, urgent=True) == sh(2027, 1, 1, 10)


def test_import_replaces_the_year_and_stores_sorted_iso_dates(session):
    import_calendar(session, {"year": 2027, "holidays": ["2027-01-01"], "workdays": []})
    session.commit()
    row = import_calendar(
        session,
        {"year": 2027, "holidays": ["2027-10-02", "2027-02-08"], "workdays": ["2027-02-20"]},
    )
    session.commit()

    assert session.scalar(select(func.count()).select_from(CalendarYear)) == 1
    assert row.holidays == ["2027-02-08", "2027-10-02"]
    assert row.workdays == ["2027-02-20"]
    cal = load_calendar(session)
    assert cal.is_workday(date(2027, 1, 1)) is True  # the old entry is gone
    assert cal.is_workday(date(2027, 2, 8)) is False
    assert cal.is_workday(date(2027, 2, 20)) is True


def test_a_process_keeps_its_calendar_until_an_administrator_changes_the_year(session):
    """The runtime's cache: one calendar while the rows read the same, and the entry another
    process commits counts from the next step."""
    cache = CalendarCache()
    first = cache.load(session)
    assert cache.load(session) is first
    assert first.is_workday(date(2027, 3, 12)) is True  # a Friday; nothing entered

    import_calendar(session, {"year": 2027, "holidays": ["2027-03-12"], "workdays": []})
    session.commit()
    entered = cache.load(session)
    assert entered is not first and entered.is_workday(date(2027, 3, 12)) is False
    assert cache.load(session) is entered

    import_calendar(session, {"year": 2027, "holidays": [], "workdays": ["2027-03-13"]})
    session.commit()
    changed = cache.load(session)
    assert changed.is_workday(date(2027, 3, 12)) is True
    assert changed.is_workday(date(2027, 3, 13)) is True  # a make-up Saturday


def test_import_does_not_commit(session):
    import_calendar(session, {"year": 2027, "holidays": ["2027-01-01"], "workdays": []})
    session.rollback()
    assert session.get(CalendarYear, 2027) is None


def test_administrator_entries_override_the_package():
    cal = WorkCalendar({2026: (frozenset({date(2026, 3, 13)}), frozenset({date(2026, 10, 3)}))})
    assert cal.is_workday(date(2026, 3, 13)) is False  # a Friday the package calls a workday
    assert cal.is_workday(date(2026, 10, 3)) is True  # a National Day holiday in the package
    assert cal.is_workday(date(2026, 3, 12)) is True  # untouched days still follow the package
    assert cal.is_workday(date(2026, 10, 4)) is False
    # Friday no longer counts: Thursday 10:00 + 24h → Monday 10:00.
    assert cal.add_hours(sh(2026, 3, 12, 10), 24, urgent=False) == sh(2026, 3, 16, 10)


def test_is_workday_is_asked_once_per_date(monkeypatch):
    asked: list[date] = []
    real = chinese_calendar.is_workday

    def counting(day):
        asked.append(day)
        return real(day)

    monkeypatch.setattr(workcal.chinese_calendar, "is_workday", counting)
    cal = WorkCalendar()
    for hour in range(24):
        cal.add_hours(sh(2026, 9, 30, hour), 48, urgent=False)
    assert sorted(asked) == sorted(set(asked))
    assert date(2026, 10, 1) in asked


# --- calendar files ------------------------------------------------------------------------------


def test_parse_accepts_a_good_file():
    year, holidays, workdays = parse_calendar_file(
        {
            "year": 2027,
            "holidays": ["2027-10-01", "2027-01-01"],
            "workdays": ["2027-02-07"],
            "source": "国务院办公厅通知",
        }
    )
    assert year == 2027
    assert holidays == [date(2027, 1, 1), date(2027, 10, 1)]
    assert workdays == [date(2027, 2, 7)]


def fields_of(data: object) -> dict[str, str]:
    with pytest.raises(CalendarFileError) as caught:
        parse_calendar_file(data)
    assert isinstance(caught.value, ValueError)
    return caught.value.fields


def test_parse_reports_each_bad_field():
    fields = fields_of(
        {
            "year": 2027,
            "holidays": ["2027-01-01", "2027-01-02", "2027-02-30", "2026-12-31", 20270105],
            "workdays": ["2027-01-02", "27-2-7", "20270207"],
        }
    )
    assert fields == {
        "holidays[2]": "not a date (YYYY-MM-DD)",
        "holidays[3]": "not in 2027",
        "holidays[4]": "not a date (YYYY-MM-DD)",
        "workdays[0]": "also a holiday (holidays[1])",
        "workdays[1]": "not a date (YYYY-MM-DD)",
        "workdays[2]": "not a date (YYYY-MM-DD)",
    }


def test_parse_requires_every_field():
    assert fields_of({}) == {"year": "required", "holidays": "required", "workdays": "required"}
    assert fields_of({"year": 2027, "holidays": []}) == {"workdays": "required"}


def test_parse_checks_the_year():
    whole = {"year": "must be a whole number"}
    out_of_range = {"year": "must be between 2000 and 2100"}
    assert fields_of({"year": "2027", "holidays": [], "workdays": []}) == whole
    assert fields_of({"year": True, "holidays": [], "workdays": []}) == whole
    assert fields_of({"year": 2027.0, "holidays": [], "workdays": []}) == whole
    assert fields_of({"year": 1999, "holidays": [], "workdays": []}) == out_of_range
    assert fields_of({"year": 2101, "holidays": [], "workdays": []}) == out_of_range
    assert parse_calendar_file({"year": 2000, "holidays": [], "workdays": []})[0] == 2000
    assert parse_calendar_file({"year": 2100, "holidays": [], "workdays": []})[0] == 2100


def test_parse_rejects_duplicates_and_wrong_shapes():
    assert fields_of({"year": 2027, "holidays": ["2027-01-01", "2027-01-01"], "workdays": []}) == {
        "holidays[1]": "listed twice (also holidays[0])"
    }
    assert set(fields_of({"year": 2027, "holidays": "2027-01-01", "workdays": []})) == {"holidays"}
    assert set(fields_of(["2027-01-01"])) == {"file"}
    assert set(fields_of("{}")) == {"file"}


def test_calendar_file_error_reads_well():
    with pytest.raises(CalendarFileError) as caught:
        parse_calendar_file({"holidays": ["nope"], "workdays": []})
    text = str(caught.value)
    assert "year: required" in text
    assert "holidays[0]: not a date (YYYY-MM-DD)" in text


def test_import_refuses_a_bad_file_and_stores_nothing(session):
    with pytest.raises(CalendarFileError):
        import_calendar(session, {"year": 2027, "holidays": ["2026-01-01"], "workdays": []})
    session.commit()
    assert session.get(CalendarYear, 2027) is None


# --- refused inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("urgent", [False, True])
def test_naive_datetimes_are_refused(cal, urgent):
    with pytest.raises(ValueError, match="naive"):
        cal.add_hours(datetime(2026, 3, 13, 10), 24, urgent=urgent)


@pytest.mark.parametrize("hours", [-1, float("nan"), float("inf")])
def test_impossible_limits_are_refused(cal, hours):
    with pytest.raises(ValueError):
        cal.add_hours(sh(2026, 3, 13, 10), hours, urgent=False)
