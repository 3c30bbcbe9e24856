"""The working-time calendar: turns a time limit in hours into a deadline.

Time limits for case steps are stated in hours. Urgent cases run on the wall clock; every other case
only spends hours on working days, so a weekend or the National Day week does not eat into the time a
grid worker has. What a working day is comes from the ``chinese_calendar`` package (statutory
holidays and make-up working days, 调休), which only knows the years the State Council has already
published. For other years, and to correct the package, administrators enter each year's holidays and
make-up working days from a calendar file (``import_calendar``), kept in ``CalendarYear`` rows;
``enter_calendar`` does it as an administrator's change, on the administration log, and
``describe_year`` says which days are special in a year and where each verdict comes from.
A year neither covers (DESIGN §2) has the statutory holidays of the ``holidays`` package's China
calendar as it comes, its observed days included, and no make-up working days: the rest of Monday
to Friday are working days. From 1 November administrators are reminded to enter next year's
published arrangement (``missing_arrangement``) when the package does not know it.

The day an instant falls on is decided in Asia/Shanghai time, whatever zone the instant is given in:
a working day is its 24 hours from local midnight to local midnight. Results are always aware UTC,
the one form the engine stores and compares.

Plain Python, no Flask: the calendar object is built once per request or job (``load_calendar``)
and asked for many deadlines, so it caches the working-day verdict per date.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

import chinese_calendar
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import admin_log
from .clock import SHANGHAI, iso
from .models import CalendarYear

MIN_YEAR = 2000
MAX_YEAR = 2100

# A stretch this long without a single working day can only be a broken calendar (say, every day
# of a year entered as a holiday); give up rather than loop on.
MAX_IDLE_DAYS = 400

_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
NOT_A_DATE = "not a date (YYYY-MM-DD)"

Overrides = dict[int, tuple[frozenset[date], frozenset[date]]]


class CalendarFileError(ValueError):
    """A calendar file an administrator uploaded is wrong; ``fields`` says where and why, one
    message per field (``{"holidays[2]": "not a date (YYYY-MM-DD)"}``), so a form can show each
    message next to the entry it is about."""

    def __init__(self, fields: dict[str, str]):
        self.fields: dict[str, str] = dict(fields)
        super().__init__(self.__str__())

    def __str__(self) -> str:
        details = "; ".join(f"{name}: {message}" for name, message in self.fields.items())
        return f"invalid calendar file: {details}"


class WorkCalendar:
    """Which days are working days, and when a limit in hours runs out.

    ``overrides`` maps a year to the (holidays, workdays) an administrator entered for it. They win
    over ``chinese_calendar``: the package can be late or wrong, the administrator has the notice.
    """

    def __init__(self, overrides: Overrides | None = None):
        self._holidays: dict[int, frozenset[date]] = {}
        self._workdays: dict[int, frozenset[date]] = {}
        for year, (holidays, workdays) in (overrides or {}).items():
            self._holidays[year] = frozenset(holidays)
            self._workdays[year] = frozenset(workdays)
        # Deadlines are computed on every case step, mostly over the same few weeks of dates.
        self._cache: dict[date, bool] = {}
        # The `holidays` package's China holidays of the years chinese_calendar does not cover
        # and nobody entered, built once per year when first asked.
        self._statutory: dict[int, frozenset[date]] = {}

    def is_workday(self, day: date) -> bool:
        """Administrator entries first, then the package. For years the package does not cover,
        Monday to Friday: with the year's entries, those are the arrangement; without them, minus
        the ``holidays`` package's China holidays (observed days included), and no make-up days."""
        if isinstance(day, datetime):
            # The date of an instant depends on the zone; make the caller decide it.
            raise TypeError("is_workday takes a date, not a datetime")
        cached = self._cache.get(day)
        if cached is not None:
            return cached
        if day in self._holidays.get(day.year, ()):
            verdict = False
        elif day in self._workdays.get(day.year, ()):
            verdict = True
        else:
            try:
                verdict = bool(chinese_calendar.is_workday(day))
            except NotImplementedError:
                verdict = day.weekday() < 5
                if verdict and day.year not in self._holidays:
                    verdict = day not in self._statutory_holidays(day.year)
        self._cache[day] = verdict
        return verdict

    def _statutory_holidays(self, year: int) -> frozenset[date]:
        found = self._statutory.get(year)
        if found is None:
            found = self._statutory[year] = statutory_holidays(year)
        return found

    def add_hours(self, start: datetime, hours: float, urgent: bool) -> datetime:
        """The instant ``hours`` of the limit are used up, counted from ``start``, in aware UTC.

        Urgent: every clock hour counts. Otherwise only hours on working days count, each working
        day all 24 of its Shanghai hours; a start on a non-working day begins counting at the next
        working day's midnight. Hours that run out exactly at the end of a working day end at that
        midnight, not after the weekend that follows. Walks day by day, never hour by hour, and uses
        timedelta arithmetic so fractional limits (the 80% supervision point) are exact to the
        microsecond.
        """
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("naive datetime: give a time zone")
        if isinstance(hours, bool) or not isinstance(hours, int | float):
            raise TypeError(f"hours must be a number, not {type(hours).__name__}")
        if not math.isfinite(hours) or hours < 0:
            raise ValueError(f"hours must be a finite number >= 0, not {hours!r}")

        cursor = start.astimezone(UTC)
        remaining = timedelta(hours=hours)
        if urgent or not remaining:
            return cursor + remaining

        day = cursor.astimezone(SHANGHAI).date()
        idle = 0
        while True:
            day_end = _midnight_utc(day + timedelta(days=1))
            if self.is_workday(day):
                idle = 0
                available = day_end - cursor
                if remaining <= available:
                    return cursor + remaining
                remaining -= available
            else:
                idle += 1
                if idle > MAX_IDLE_DAYS:
                    raise ValueError(
                        f"no working day in the {MAX_IDLE_DAYS} days before {day.isoformat()}: "
                        "check the calendar entries"
                    )
            cursor = day_end
            day += timedelta(days=1)


def _midnight_utc(day: date) -> datetime:
    """The instant a Shanghai day begins, in UTC."""
    return datetime.combine(day, time(), tzinfo=SHANGHAI).astimezone(UTC)


@lru_cache(maxsize=16)
def statutory_holidays(year: int) -> frozenset[date]:
    """The ``holidays`` package's China holidays of a year, as the package has them (its default
    categories, observed days included). Imported here: most processes never need it. Kept per
    process (a pure function of the year and the installed package): building a year costs
    about 0.6 ms, and every step builds a new WorkCalendar."""
    import holidays

    return frozenset(holidays.country_holidays("CN", years=year, observed=True))


def package_covers(year: int) -> bool:
    """Whether ``chinese_calendar`` has the year's published arrangement."""
    try:
        chinese_calendar.is_workday(date(year, 1, 1))
    except NotImplementedError:
        return False
    return True


def missing_arrangement(session: Session, now: datetime) -> int | None:
    """Next year, when its holiday arrangement is due and nobody has it: ``now`` is on or after
    1 November (Shanghai date), ``chinese_calendar`` does not cover next year and no
    ``CalendarYear`` row was entered for it. None otherwise. Before November it asks nothing; after,
    one primary-key lookup."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("naive datetime: give a time zone")
    today = now.astimezone(SHANGHAI).date()
    if today.month < 11:
        return None
    year = today.year + 1
    if package_covers(year):
        return None
    entered = session.scalar(select(CalendarYear.year).where(CalendarYear.year == year))
    return None if entered is not None else year


# The administrators' entries, one row a year, in a stable order (CalendarCache compares them).
CALENDAR_ROWS = select(CalendarYear.year, CalendarYear.holidays, CalendarYear.workdays).order_by(
    CalendarYear.year
)


def load_calendar(session: Session) -> WorkCalendar:
    """A calendar with every year's administrator entries, for one request or job.

    The rows are few (one per year) and read once; the returned object does not see later imports.
    """
    return _calendar_of(session.execute(CALENDAR_ROWS).all())


def _calendar_of(rows) -> WorkCalendar:
    overrides: Overrides = {}
    for year, holidays, workdays in rows:
        overrides[year] = (
            frozenset(date.fromisoformat(text) for text in holidays or ()),
            frozenset(date.fromisoformat(text) for text in workdays or ()),
        )
    return WorkCalendar(overrides)


class CalendarCache:
    """The calendar a process built last, kept while the administrators' rows read the same.

    Every step still reads the rows (one small SELECT, so an entry made by another process counts
    from its next step), but a step no longer builds a calendar whose day verdicts start cold."""

    def __init__(self) -> None:
        self._last: tuple[list, WorkCalendar] | None = None  # one attribute: swapped whole

    def load(self, session: Session) -> WorkCalendar:
        rows = [tuple(row) for row in session.execute(CALENDAR_ROWS)]
        last = self._last
        if last is not None and last[0] == rows:
            return last[1]
        calendar = _calendar_of(rows)
        self._last = (rows, calendar)
        return calendar


def parse_calendar_file(data: object) -> tuple[int, list[date], list[date]]:
    """Check an uploaded calendar file and return (year, holidays, workdays), each list sorted.

    Shape: ``{"year": 2027, "holidays": ["2027-01-01", ...], "workdays": ["2027-02-07", ...]}``;
    both lists are required (either may be empty), other keys are ignored. Every problem is
    reported at once, one message per field, so an administrator fixes the file in one go. Dates
    must be strict ``YYYY-MM-DD`` in the file's year; a date may not be both a holiday and a
    workday, nor appear twice in one list (likely a typo for another date).
    """
    if not isinstance(data, Mapping):
        raise CalendarFileError({"file": "must be an object with year, holidays and workdays"})
    errors: dict[str, str] = {}

    year: int | None = None
    if "year" not in data:
        errors["year"] = "required"
    else:
        raw_year = data["year"]
        if isinstance(raw_year, bool) or not isinstance(raw_year, int):
            errors["year"] = "must be a whole number"
        elif not MIN_YEAR <= raw_year <= MAX_YEAR:
            errors["year"] = f"must be between {MIN_YEAR} and {MAX_YEAR}"
        else:
            year = raw_year

    found: dict[str, dict[date, str]] = {}
    for key in ("holidays", "workdays"):
        found[key] = {}
        if key not in data:
            errors[key] = "required"
            continue
        items = data[key]
        if not isinstance(items, list):
            errors[key] = "must be a list of dates (YYYY-MM-DD)"
            continue
        for index, item in enumerate(items):
            name = f"{key}[{index}]"
            day = _parse_day(item)
            if day is None:
                errors[name] = NOT_A_DATE
            elif year is not None and day.year != year:
                errors[name] = f"not in {year}"
            elif day in found[key]:
                errors[name] = f"listed twice (also {found[key][day]})"
            else:
                found[key][day] = name

    for day, name in found["workdays"].items():
        if day in found["holidays"]:
            errors[name] = f"also a holiday ({found['holidays'][day]})"

    if errors:
        raise CalendarFileError(errors)
    assert year is not None
    return year, sorted(found["holidays"]), sorted(found["workdays"])


def _parse_day(item: object) -> date | None:
    """Only the plain ``YYYY-MM-DD`` form: ``date.fromisoformat`` alone would also take
    ``20270101`` and week dates, which nobody means in a holiday list."""
    if not isinstance(item, str) or not _DATE_TEXT.fullmatch(item):
        return None
    try:
        return date.fromisoformat(item)
    except ValueError:
        return None


def import_calendar(session: Session, data: object) -> CalendarYear:
    """Validate a calendar file and store it as its year's entries, replacing what was there.

    Does not commit: the caller's unit of work does, together with whatever else the step records.
    """
    year, holidays, workdays = parse_calendar_file(data)
    row = session.get(CalendarYear, year)
    if row is None:
        row = CalendarYear(year=year)
        session.add(row)
    row.holidays = [day.isoformat() for day in holidays]
    row.workdays = [day.isoformat() for day in workdays]
    return row


def enter_calendar(session: Session, data: object, now: datetime, by: str) -> CalendarYear:
    """``import_calendar`` as an administrator's change: the row remembers who entered it and
    when (``CalendarYear.entered``), and a ``calendar_changed`` entry goes on the administration
    log in the same unit of work, so the change and its record commit or roll back together.
    Deadlines already fixed do not move: they are data in the events and timers (DESIGN §2)."""
    row = import_calendar(session, data)
    row.entered = {"by": by, "at": iso(now)}
    admin_log.record(
        session,
        now,
        by,
        "calendar_changed",
        {
            "year": row.year,
            "holidays": len(row.holidays),
            "workdays": len(row.workdays),
            "by": by,
        },
    )
    return row


# ------------------------------------------------------------------ a year, described

# Where a special day comes from, in the order ``WorkCalendar.is_workday`` asks.
FROM_ADMIN = "admin"
FROM_PACKAGE = "chinese_calendar"
FROM_FALLBACK = "holidays"

HOLIDAY = "holiday"
WORKDAY = "workday"  # a make-up working day (调休上班) on a weekend


@dataclass(frozen=True)
class SpecialDay:
    """A holiday, or a weekend day that is a working day, with where that verdict comes from
    and, when a package knows it, the festival's name (English and Chinese)."""

    day: date
    kind: str  # HOLIDAY or WORKDAY
    source: str  # FROM_ADMIN, FROM_PACKAGE or FROM_FALLBACK
    name_en: str | None = None
    name_zh: str | None = None


@dataclass(frozen=True)
class YearArrangement:
    """A year as the deadlines see it: every special day, whether ``chinese_calendar`` has the
    year, and who entered the year's arrangement and when ({by, at}) if someone did."""

    year: int
    days: tuple[SpecialDay, ...]
    covered: bool
    entered: bool
    entered_by: str | None = None
    entered_at: str | None = None
    entered_holidays: tuple[date, ...] = ()
    entered_workdays: tuple[date, ...] = ()

    def of_kind(self, kind: str) -> list[SpecialDay]:
        return [d for d in self.days if d.kind == kind]


def describe_year(session: Session, year: int) -> YearArrangement:
    """Every holiday and make-up working day of a year, each with its source, by the same
    precedence as ``WorkCalendar.is_workday``: the administrator's entries first, then
    ``chinese_calendar`` for the years it covers, then (for a year nobody entered) the
    ``holidays`` package's China holidays. A holiday on a weekend is listed too when its source
    lists it (the National Day week), though it changes no deadline. The administrators' page
    shows this, so it has to be what deadlines use: tests/test_calendar_page.py compares it with
    ``is_workday`` day by day."""
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise ValueError(f"year must be between {MIN_YEAR} and {MAX_YEAR}")
    row = session.get(CalendarYear, year)
    entered_h = frozenset(date.fromisoformat(t) for t in (row.holidays or ())) if row else None
    entered_w = frozenset(date.fromisoformat(t) for t in (row.workdays or ())) if row else None
    covered = package_covers(year)
    names = _festival_names(year)
    fallback = statutory_holidays(year) if not covered and row is None else frozenset()

    days: list[SpecialDay] = []
    day = date(year, 1, 1)
    while day.year == year:
        kind = source = None
        if entered_h is not None and day in entered_h:
            kind, source = HOLIDAY, FROM_ADMIN
        elif entered_w is not None and day in entered_w:
            kind, source = WORKDAY, FROM_ADMIN
        elif covered:
            if day in chinese_calendar.holidays:
                kind, source = HOLIDAY, FROM_PACKAGE
            elif day in chinese_calendar.workdays:
                kind, source = WORKDAY, FROM_PACKAGE
        elif day in fallback:
            kind, source = HOLIDAY, FROM_FALLBACK
        if kind is not None:
            name_en, name_zh = names.get(day, (None, None))
            days.append(SpecialDay(day, kind, source, name_en, name_zh))
        day += timedelta(days=1)

    entered = (row.entered or {}) if row else {}
    return YearArrangement(
        year=year,
        days=tuple(days),
        covered=covered,
        entered=row is not None,
        entered_by=entered.get("by"),
        entered_at=entered.get("at"),
        entered_holidays=tuple(sorted(entered_h or ())),
        entered_workdays=tuple(sorted(entered_w or ())),
    )


@lru_cache(maxsize=16)
def _festival_names(year: int) -> dict[date, tuple[str, str]]:
    """(English, Chinese) festival names by date, from ``chinese_calendar`` where it has the
    year (make-up days carry the festival they make up for), else from the ``holidays``
    package. Names only label a day; they decide nothing."""
    import holidays

    found: dict[date, tuple[str, str]] = {}
    english = holidays.country_holidays("CN", years=year, observed=True)
    chinese = holidays.country_holidays("CN", years=year, observed=True, language="zh_CN")
    for day, name in english.items():
        found[day] = (name, chinese.get(day) or name)
    for table in (chinese_calendar.holidays, chinese_calendar.workdays):
        for day, name in table.items():
            if day.year == year:
                found[day] = (str(name), _chinese_name(name))
    return found


def _chinese_name(name: object) -> str:
    """The Chinese name ``chinese_calendar`` keeps beside an English one (its Holiday enum)."""
    try:
        return chinese_calendar.Holiday(name).chinese
    except (ValueError, AttributeError):
        return str(name)
