"""The working-day calendar for administrators (issue 10, item 6): a page per year with every
holiday and make-up working day (调休上班) and where each came from (chinese-calendar, the
`holidays` package, or an administrator), and the entry of a year's published arrangement by
form or by calendar file (DESIGN §8: `{year, holidays, workdays}`).

The engine checks and stores (engine/workcal.py `enter_calendar`: the row, who entered it, and
the administration-log entry, one transaction). This module reads what was typed: dates one per
line or separated by commas, and ranges such as `2027-02-06..2027-02-12` (also `~` or `至`), as
published arrangements are written; each problem is shown under its field with what was typed.
"""

from __future__ import annotations

import calendar as pycalendar
import json
import re
from datetime import date, datetime, timedelta

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import format_date
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from engine.clock import SHANGHAI
from engine.errors import Conflict, Forbidden, Invalid, NotFound
from engine.models import CalendarYear, Person
from engine.safeyaml import load_yaml
from engine.workcal import (
    FROM_ADMIN,
    FROM_FALLBACK,
    FROM_PACKAGE,
    HOLIDAY,
    MAX_YEAR,
    MIN_YEAR,
    NOT_A_DATE,
    WORKDAY,
    CalendarFileError,
    YearArrangement,
    describe_year,
    enter_calendar,
)

from .extensions import db
from .web import calendar_warning, language, login_required, now, viewer

bp = Blueprint("calendar_pages", __name__, url_prefix="/admin/calendar")

FIELDS = ("holidays", "workdays")
# A range of dates as people write it; any of these between two dates.
_RANGE = re.compile(r"\s*(?:\.\.|~|～|至|到|—|–)\s*")
_SEPARATORS = re.compile(r"[\s,，;；、]+")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
MAX_RANGE_DAYS = 366
MAX_SHOWN_ERRORS = 5

SOURCE_NAMES = {
    FROM_ADMIN: _l("entered by an administrator"),
    FROM_PACKAGE: _l("chinese-calendar"),
    FROM_FALLBACK: _l("holidays package"),
}
KIND_NAMES = {HOLIDAY: _l("Holiday"), WORKDAY: _l("Make-up working day")}


def _admin_only() -> None:
    if not viewer().is_admin:
        raise Forbidden(_("Only administrators may open this page."))


def _year_or_404(year: int) -> None:
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise NotFound(_("No calendar for that year."))


def _form_year() -> int:
    """The year a form was sent from (a hidden field): the posts carry no year in their path, so
    every change on this page is one URL, refused alike to whoever may not make it."""
    year = request.form.get("year", type=int)
    if year is None or not MIN_YEAR <= year <= MAX_YEAR:
        raise Invalid(_("No calendar for that year."), {"year": "not a year Gridloop keeps"})
    return year


# ------------------------------------------------------------------ routes


@bp.get("")
@login_required
def index():
    """The year that needs entering (from November, when nobody has next year's), else this one."""
    _admin_only()
    year = calendar_warning() or now().astimezone(SHANGHAI).year
    return redirect(url_for("calendar_pages.year_page", year=year))


@bp.get("/<int:year>")
@login_required
def year_page(year: int):
    _admin_only()
    _year_or_404(year)
    arrangement = describe_year(db.session, year)
    return _render(arrangement, form=_prefill(arrangement), errors={})


@bp.post("")
@login_required
def enter():
    _admin_only()  # who may, before what they sent is read
    year = _form_year()
    form = {name: (request.form.get(name) or "")[:20000] for name in FIELDS}
    errors: dict[str, str] = {}
    lists: dict[str, list[tuple[str, str]]] = {}
    for name in FIELDS:
        lists[name], problem = _parse_dates(form[name])
        if problem:
            errors[name] = problem
    if "holidays" not in errors and not lists["holidays"]:
        # Every year has holidays: an empty list is a form sent too early, not an arrangement.
        errors["holidays"] = _("Enter the year's holidays.")
    if not errors:
        data = {"year": year, **{name: [d for d, _t in lists[name]] for name in FIELDS}}
        try:
            row = _enter(data)
        except CalendarFileError as exc:
            errors = _form_errors(exc.fields, lists)
        else:
            flash(_entered_message(row.year, len(row.holidays), len(row.workdays)))
            return redirect(_top_of(year))
    return _render(describe_year(db.session, year), form=form, errors=errors), 400


@bp.post("/file")
@login_required
def upload():
    """A calendar file, JSON or YAML, for any year: the page of the file's year follows."""
    _admin_only()
    year = _form_year()  # the page it was sent from, shown again with the file's problems
    upload_errors: list[str] = []
    file = request.files.get("file")
    if file is None or not file.filename:
        upload_errors.append(_("Choose a calendar file."))
    else:
        try:
            row = _enter(_read_file(file.filename, file.read()))
        except CalendarFileError as exc:
            upload_errors = [_problem(field, _message(text)) for field, text in exc.fields.items()]
        except ValueError as exc:
            db.session.rollback()
            upload_errors.append(_("Not a calendar file: %(reason)s", reason=str(exc)[:300]))
        else:
            flash(_entered_message(row.year, len(row.holidays), len(row.workdays)))
            return redirect(_top_of(row.year))
    arrangement = describe_year(db.session, year)
    return _render(arrangement, _prefill(arrangement), {}, upload_errors), 400


def _enter(data: object) -> CalendarYear:
    """Store a year's arrangement with its administration-log entry, committed together. Two
    administrators entering at the same moment collide on the log's seq (or on the year's row):
    the loser's change rolls back whole, and they are told to send it again."""
    try:
        row = enter_calendar(db.session, data, now(), viewer().username)
        db.session.commit()
    except CalendarFileError:
        db.session.rollback()
        raise
    except IntegrityError as exc:
        db.session.rollback()
        raise Conflict(_("Another change was saved at the same moment. Send yours again.")) from exc
    return row


def _top_of(year: int) -> str:
    """The year's page, scrolled to its top where the flash is: the forms post to their own
    anchors (#enter, #upload), which a redirect without a fragment of its own would keep."""
    return url_for("calendar_pages.year_page", year=year) + "#top"  # HTML: the page's top


# ------------------------------------------------------------------ reading what was typed


def _parse_dates(text: str) -> tuple[list[tuple[str, str]], str | None]:
    """(date text, what was typed for it) for every date in a field, ranges expanded; or the
    message for the field when a range cannot be read. Single dates go to the engine as typed:
    it says what is wrong with them."""
    found: list[tuple[str, str]] = []
    problems: list[str] = []
    for token in _SEPARATORS.split(_RANGE.sub("..", text.strip())):
        if not token:
            continue
        if ".." not in token:
            found.append((token, token))
            continue
        first, _sep, last = token.partition("..")
        start, end = _day(first), _day(last)
        if start is None or end is None or end < start:
            problems.append(_problem(token, _("not a range of dates (YYYY-MM-DD..YYYY-MM-DD)")))
        elif (end - start).days >= MAX_RANGE_DAYS:
            problems.append(_problem(token, _("longer than a year")))
        else:
            day = start
            while day <= end:
                found.append((day.isoformat(), token))
                day += timedelta(days=1)
    return found, _joined(problems) if problems else None


def _day(text: str) -> date | None:
    if not _DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _form_errors(fields: dict[str, str], lists: dict[str, list[tuple[str, str]]]) -> dict:
    """The engine's per-entry messages ("holidays[3]") as one message per form field, each naming
    what was typed: a date typed alone, or the date a typed range gave."""

    def typed(ref: str) -> str:
        match = re.fullmatch(r"(\w+)\[(\d+)\]", ref)
        if not match or match.group(1) not in lists:
            return ref
        items = lists[match.group(1)]
        index = int(match.group(2))
        if index >= len(items):
            return ref
        value, token = items[index]
        return token if value == token else f"{value} ({token})"

    by_field: dict[str, list[str]] = {}
    for ref, text in fields.items():
        field = ref.split("[", 1)[0]
        if field not in FIELDS:
            field = "holidays"
        by_field.setdefault(field, []).append(_problem(typed(ref), _message(text, typed)))
    return {field: _joined(messages) for field, messages in by_field.items()}


def _message(text: str, typed=lambda ref: ref) -> str:
    """An engine/workcal.py calendar-file message in the page's language; `typed` turns a
    reference to another entry ("holidays[1]") into what the administrator typed for it."""
    fixed = {
        NOT_A_DATE: _l("not a date (YYYY-MM-DD)"),
        "required": _l("missing from the file"),
        "must be a whole number": _l("must be a year, a whole number"),
        "must be a list of dates (YYYY-MM-DD)": _l("must be a list of dates (YYYY-MM-DD)"),
        "must be an object with year, holidays and workdays": _l(
            "must be an object with year, holidays and workdays"
        ),
    }
    if text in fixed:
        return str(fixed[text])
    if match := re.fullmatch(r"not in (\d+)", text):
        return _("not in %(year)s", year=match.group(1))
    if match := re.fullmatch(r"listed twice \(also (.+)\)", text):
        return _("listed twice (also %(other)s)", other=typed(match.group(1)))
    if match := re.fullmatch(r"also a holiday \((.+)\)", text):
        return _("also entered as a holiday (%(other)s)", other=typed(match.group(1)))
    if match := re.fullmatch(r"must be between (\d+) and (\d+)", text):
        return _("must be between %(low)s and %(high)s", low=match.group(1), high=match.group(2))
    return text


def _problem(typed: str, problem: str) -> str:
    return _("%(typed)s: %(problem)s", typed=typed, problem=problem)


def _joined(messages: list[str]) -> str:
    shown = messages[:MAX_SHOWN_ERRORS]
    if len(messages) > MAX_SHOWN_ERRORS:
        shown.append(_("and %(count)s more", count=len(messages) - MAX_SHOWN_ERRORS))
    return "; ".join(shown)


def _read_file(filename: str, raw: bytes) -> object:
    """A calendar file's data: JSON when it is named .json, else YAML (safe: engine/safeyaml.py,
    no aliases), unquoted YAML dates read back as YYYY-MM-DD text, as `gridloop calendar import`
    reads it. Everything wrong with the file itself is a ValueError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("not UTF-8 text") from exc
    if filename.lower().endswith(".json"):
        try:
            return json.loads(text)
        except RecursionError as exc:  # arrays inside arrays past Python's limit
            raise ValueError("nested too deeply") from exc
    return json.loads(json.dumps(load_yaml(text), default=str))


def _entered_message(year: int, holidays: int, workdays: int) -> str:
    return _(
        "The %(year)s arrangement is entered: %(holidays)s holidays, %(workdays)s make-up working days.",
        year=year,
        holidays=holidays,
        workdays=workdays,
    )


# ------------------------------------------------------------------ the page


def _prefill(arrangement: YearArrangement) -> dict[str, str]:
    """The form starts from what the year's deadlines use now: the entered arrangement, or the
    chinese-calendar data of a year it covers; empty for a year only the fallback knows, whose
    dates are not a published arrangement."""
    if arrangement.entered:
        holidays, workdays = arrangement.entered_holidays, arrangement.entered_workdays
    elif arrangement.covered:
        holidays = tuple(d.day for d in arrangement.of_kind(HOLIDAY))
        workdays = tuple(d.day for d in arrangement.of_kind(WORKDAY))
    else:
        return {name: "" for name in FIELDS}
    return {"holidays": _as_ranges(holidays), "workdays": _as_ranges(workdays)}


def _as_ranges(days: tuple[date, ...]) -> str:
    """Consecutive days as one `first..last` line, as published arrangements read."""
    lines: list[str] = []
    run: list[date] = []
    for day in sorted(days):
        if run and day != run[-1] + timedelta(days=1):
            lines.append(_run_text(run))
            run = []
        run.append(day)
    if run:
        lines.append(_run_text(run))
    return "\n".join(lines)


def _run_text(run: list[date]) -> str:
    if len(run) == 1:
        return run[0].isoformat()
    return f"{run[0].isoformat()}..{run[-1].isoformat()}"


def _months(arrangement: YearArrangement) -> list[dict]:
    """Twelve month grids (weeks from Monday) and each month's special days, for the template."""
    special = {d.day: d for d in arrangement.days}
    zh = language() == "zh"
    months = []
    for month in range(1, 13):
        weeks = pycalendar.Calendar(firstweekday=0).monthdatescalendar(arrangement.year, month)
        cells = []
        for week in weeks:
            for day in week:
                if day.month != month:
                    cells.append(None)
                    continue
                found = special.get(day)
                cells.append(
                    {
                        "day": day,
                        "kind": found.kind if found else ("weekend" if day.weekday() >= 5 else ""),
                    }
                )
        days = [
            {
                "day": d.day,
                "weekday": format_date(d.day, "EEE"),
                "kind": d.kind,
                "kind_name": KIND_NAMES[d.kind],
                "source": d.source,
                "source_name": SOURCE_NAMES[d.source],
                "name": (d.name_zh if zh else d.name_en) or "",
            }
            for d in arrangement.days
            if d.day.month == month
        ]
        first = date(arrangement.year, month, 1)
        months.append(
            {"month": month, "name": format_date(first, "LLLL"), "cells": cells, "days": days}
        )
    return months


def _entered_by(arrangement: YearArrangement) -> dict | None:
    if not arrangement.entered:
        return None
    who = arrangement.entered_by
    person = (
        db.session.scalars(select(Person).where(Person.username == who)).first() if who else None
    )
    at = datetime.fromisoformat(arrangement.entered_at) if arrangement.entered_at else None
    return {"username": who, "name": person.name if person else None, "at": at}


def _render(arrangement: YearArrangement, form: dict, errors: dict, upload_errors=()):
    year = arrangement.year
    return render_template(
        "calendar/year.html",
        a=arrangement,
        months=_months(arrangement),
        entered=_entered_by(arrangement),
        holidays=len(arrangement.of_kind(HOLIDAY)),
        workdays=len(arrangement.of_kind(WORKDAY)),
        previous=year - 1 if year > MIN_YEAR else None,
        following=year + 1 if year < MAX_YEAR else None,
        form=form,
        errors=errors,
        upload_errors=list(upload_errors),
        # Narrow weekday names (一 二 … / M T …) over the grid's columns, Monday first.
        weekdays=[format_date(date(2024, 1, d), "EEEEE") for d in range(1, 8)],
        FROM_ADMIN=FROM_ADMIN,
        FROM_FALLBACK=FROM_FALLBACK,
        FROM_PACKAGE=FROM_PACKAGE,
    )
