"""督办台账 and the figures as files and on paper (issue 11): the overdue board page and its CSV
and xlsx downloads, the figures of GET /api/v1/stats as CSV and xlsx, and the monthly report.

The board is engine/board.py's and the figures engine/figures.py's; a figures request is read by
webapp/figures.py's `stats_request`, the same as the API's, so a download holds the numbers the
API answers for the same query, and the same unit is refused the same way (404 outside the
caller's cover, 400 for a bad period or category). How the files are written (BOM, number cells,
no formulas) is webapp/exports.py's.

The figures files: one row for the unit and then one per child unit; the first header row is in
the page's language and the second gives the API's field names (`unit`, `unit_name`, then
engine.figures.FIGURES), so a program finds `resolution_rate` in a file made in either language.
The xlsx has three sheets, always in this order and with these names: `figures` (the unit and
its children), `by_category` (the unit's figures per category) and `query` (what was asked).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

from flask import Blueprint, render_template, request, url_for
from flask_babel import format_date, format_timedelta
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from engine.access import Viewer
from engine.board import SORTS, BoardPage, BoardRow, board, board_count
from engine.case_search import UnitRef, covered_unit, covered_units
from engine.clock import SHANGHAI
from engine.errors import Forbidden, Invalid
from engine.figures import FIGURES, LEVEL_COLUMN, RATES, widest_units
from engine.models import Unit

from . import schemas
from .api import parse
from .cases import _unit_label, display_names
from .exports import Sheet, csv_response, xlsx_response
from .extensions import db
from .figures import StatsRequest, stats_json, stats_request
from .web import TASK_NAMES, TIER_NAMES, category_label, language, login_required, now, viewer

bp = Blueprint("board", __name__)
PAGE = 50
MAX_PAGE = 10_000

SORT_NAMES = {
    "overdue": _l("Most overdue"),
    "age": _l("Longest open"),
    "supervised": _l("Most supervised"),
    "unit": _l("By unit"),
}
FIGURE_NAMES = {
    "received": _l("Received (cases)"),
    "rejected": _l("Not accepted (cases)"),
    "resolved": _l("Resolved (cases)"),
    "resolution_rate": _l("Resolution rate (%)"),
    "on_time_rate": _l("On-time rate (%)"),
    "satisfaction_rate": _l("Satisfaction rate (%)"),
    "reopen_rate": _l("Reopen rate (%)"),
    "avg_dispatch_minutes": _l("Average time to accept (minutes)"),
    "avg_resolution_hours": _l("Average time to resolve (hours)"),
    "overdue_open": _l("Overdue open tasks"),
}
MONTH = re.compile(r"^(\d{4})-(\d{2})$")


# ------------------------------------------------------------------ the board


def _board_viewer() -> tuple[Viewer, list[Unit]]:
    """The board is for people whose positions cover a unit (its cases), and auditors; the
    viewer, and the units they may narrow it to."""
    me = viewer()
    units = covered_units(db.session, me)
    if not (me.is_auditor or units):
        raise Forbidden(_("The overdue board is for people who cover a unit, and for auditors."))
    return me, units


def _board_args(me) -> tuple[UnitRef | None, str, str]:
    """The unit (covered by the viewer: 404 otherwise), the sort and the unit's code."""
    code = request.args.get("unit", "").strip()
    sort = request.args.get("sort", "").strip() or "overdue"
    if sort not in SORTS:
        raise Invalid(_("Choose from the list."), {"sort": _("Choose from the list.")})
    unit = covered_unit(db.session, me, code) if code else None
    return unit, sort, code


def _page_number() -> int:
    text = request.args.get("page", "1").strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PAGE:
        raise Invalid(_("Choose from the list."), {"page": _("Choose from the list.")})
    return int(text)


def holder_label(row: BoardRow, names: dict[str, str]) -> str:
    """Who holds the item: a person's name, or nobody yet (the role at the unit will take it)."""
    if row.holder is None:
        return _("Unclaimed")
    return names.get(row.holder, row.holder)


def hours(value: timedelta | None) -> float | None:
    """A duration in hours with one decimal, as a number for the spreadsheets."""
    return None if value is None else round(value.total_seconds() / 3600, 1)


@bp.get("/board")
@login_required
def index():
    """The overdue board: every open task under the viewer's units that is past its deadline or
    was supervised, sortable and narrowed to one unit, in pages of PAGE."""
    me, units = _board_viewer()
    unit, sort, code = _board_args(me)
    number = _page_number()
    found: BoardPage = board(
        db.session, me, now(), unit, sort, limit=PAGE, offset=(number - 1) * PAGE
    )
    names = display_names(r.holder for r in found.rows)
    keep = {"unit": code} if code else {}
    return render_template(
        "board/index.html",
        page=found,
        rows=[_shown(r, names) for r in found.rows],
        units=[(u.code, _unit_label(u)) for u in units],
        chosen=code,
        sort=sort,
        sorts=[(key, SORT_NAMES[key], url_for("board.index", **keep, sort=key)) for key in SORTS],
        first=url_for("board.index", **keep, sort=sort) if number > 1 else None,
        next=url_for("board.index", **keep, sort=sort, page=number + 1) if found.has_more else None,
        csv=url_for("board.board_csv", **keep, sort=sort),
        xlsx=url_for("board.board_xlsx", **keep, sort=sort),
        auditor=me.is_auditor,
    )


def _shown(row: BoardRow, names: dict[str, str]) -> dict[str, Any]:
    return {
        "row": row,
        "holder": holder_label(row, names),
        "task": TASK_NAMES.get(row.task, row.task),
        "tier": TIER_NAMES.get(row.role, row.role),
        "category": category_label(row.category),
        "open_for": format_timedelta(row.open_for, threshold=1.1),
        "overdue_for": format_timedelta(row.overdue_for, threshold=1.1)
        if row.overdue_for is not None
        else None,
    }


BOARD_COLUMNS = (
    _l("Case number"),
    _l("Title"),
    _l("Category"),
    _l("Grid"),
    _l("Loop step"),
    _l("Task"),
    _l("Tier"),
    _l("Unit"),
    _l("Held by"),
    _l("Arrived"),
    _l("Open for (hours)"),
    _l("Deadline"),
    _l("Overdue by (hours)"),
    _l("Times supervised"),
    _l("Escalated"),
    _l("Overdue"),
)


def board_sheet(found: BoardPage) -> Sheet:
    """The whole board as a table: times as instants (shown in Asia/Shanghai), durations in
    hours, yes and no in words."""
    names = display_names(r.holder for r in found.rows)
    yes, no = _("Yes"), _("No")
    rows = [
        [
            r.case_number,
            r.case_title,
            category_label(r.category),
            r.grid_name,
            str(TASK_NAMES.get(r.task, r.task)),
            r.name,
            str(TIER_NAMES.get(r.role, r.role)),
            r.unit_name,
            holder_label(r, names),
            r.created_at,
            hours(r.open_for),
            r.due_at,
            hours(r.overdue_for),
            r.times_supervised,
            yes if r.escalated else no,
            yes if r.overdue else no,
        ]
        for r in found.rows
    ]
    return Sheet("board", [str(c) for c in BOARD_COLUMNS], rows, formats={10: "0.0", 12: "0.0"})


def _board_file() -> tuple[Sheet, str]:
    me, _units = _board_viewer()
    unit, sort, code = _board_args(me)
    moment = now()
    found = board(db.session, me, moment, unit, sort, limit=None)
    stamp = moment.astimezone(SHANGHAI).strftime("%Y%m%d-%H%M")
    return board_sheet(found), f"board-{code or 'all'}-{stamp}"


@bp.get("/board.csv")
@login_required
def board_csv():
    sheet, name = _board_file()
    return csv_response(sheet, f"{name}.csv")


@bp.get("/board.xlsx")
@login_required
def board_xlsx():
    sheet, name = _board_file()
    return xlsx_response([sheet], f"{name}.xlsx")


# ------------------------------------------------------------------ the figures as files


def figures_sheets(found: dict, asked: StatsRequest) -> list[Sheet]:
    """The figures of stats_json as the three sheets of the module's docstring; the CSV is the
    first of them."""
    header = [_("Unit code"), _("Unit")] + [str(FIGURE_NAMES[f]) for f in FIGURES]
    fields = ["unit", "unit_name", *FIGURES]
    units = [found] + list(found["children"])
    rows = [[u["unit"]["code"], u["unit"]["name"]] + [u[f] for f in FIGURES] for u in units]
    rate_columns = {2 + FIGURES.index(f): "0.0" for f in (*RATES, "avg_resolution_hours")}
    by_category = [
        [c["category"], category_label(c["category"])] + [c[f] for f in FIGURES]
        for c in found["by_category"]
    ]
    query = [
        [_("Unit code"), "unit", asked.unit.code],
        [_("Unit"), "unit_name", asked.unit.name],
        [_("First day"), "from", asked.period.start],
        [_("Last day"), "to", asked.period.end],
        [_("Category"), "category", category_label(asked.category) if asked.category else ""],
        [_("Made at"), "made_at", now()],
    ]
    return [
        Sheet("figures", header, rows, fields, rate_columns, bold_rows={0}),
        Sheet(
            "by_category",
            [_("Category code"), _("Category")] + header[2:],
            by_category,
            ["category", "category_label", *FIGURES],
            rate_columns,
        ),
        Sheet("query", ["label", "field", "value"], query),
    ]


def _figures_file() -> tuple[list[Sheet], str]:
    args = parse(schemas.StatsArgs, request.args.to_dict())
    moment = now()
    asked = stats_request(db.session, viewer(), args, moment)
    found = stats_json(db.session, asked, moment)
    name = f"figures-{asked.unit.code}-{asked.period.start}-{asked.period.end}"
    if asked.category:
        name += f"-{asked.category}"
    return figures_sheets(found, asked), name


@bp.get("/figures/export.csv")
@login_required
def figures_csv():
    sheets, name = _figures_file()
    return csv_response(sheets[0], f"{name}.csv")


@bp.get("/figures/export.xlsx")
@login_required
def figures_xlsx():
    sheets, name = _figures_file()
    return xlsx_response(sheets, f"{name}.xlsx")


# ------------------------------------------------------------------ the monthly report


def _month(text: str | None, moment: datetime) -> date:
    """The first day of the month `YYYY-MM` names; without one, of last month in Shanghai."""
    if not text:
        first = moment.astimezone(SHANGHAI).date().replace(day=1)
        return (first - timedelta(days=1)).replace(day=1)
    match = MONTH.match(text.strip())
    if not match or not 1 <= int(match.group(2)) <= 12 or not 2000 <= int(match.group(1)) <= 2099:
        raise Invalid(_("Give a month as YYYY-MM."), {"month": _("Give a month as YYYY-MM.")})
    return date(int(match.group(1)), int(match.group(2)), 1)


def _month_end(first: date) -> date:
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def _report_units(me) -> list[Unit]:
    """The units a report may be about: the widest the viewer covers, and every village,
    district and grid under them."""
    widest = widest_units(db.session, me)
    below = [u for u in covered_units(db.session, me) if u.level in LEVEL_COLUMN]
    seen = {u.id for u in widest}
    return widest + [u for u in below if u.id not in seen]


def _shown_value(figure: str, value: Any) -> str:
    if value is None:
        return "—"
    if figure in RATES or figure == "avg_resolution_hours":
        return f"{value:.1f}"  # the label says the unit: (%), (hours)
    return str(value)


@bp.get("/figures/report")
@login_required
def report():
    """A month's figures for a unit, with its children and categories, and how many tasks the
    overdue board holds there now; printed on A4 (app.css), readable on a phone."""
    me = viewer()
    moment = now()
    first = _month(request.args.get("month"), moment)
    last = _month_end(first)
    code = request.args.get("unit", "").strip()
    if not code:  # several units with none above: the first, and the list offers the others
        widest = widest_units(db.session, me)
        code = widest[0].code if widest else ""
    args = {"from_": first, "to": last, **({"unit": code} if code else {})}
    asked = stats_request(db.session, me, args, moment)
    found = stats_json(db.session, asked, moment)
    level = asked.unit.level
    count = board_count(db.session, me, moment, UnitRef(asked.unit.id, level))
    month = first.strftime("%Y-%m")
    previous = (first - timedelta(days=1)).replace(day=1).strftime("%Y-%m")
    following = (last + timedelta(days=1)).strftime("%Y-%m")
    pattern = "y年M月" if language() == "zh" else "MMMM y"
    period = {"from": first.isoformat(), "to": last.isoformat(), "unit": asked.unit.code}
    return render_template(
        "board/report.html",
        unit=asked.unit,
        month=month,
        month_name=format_date(first, pattern),
        first=first,
        last=last,
        figures=[(FIGURE_NAMES[f], _shown_value(f, found[f]), f) for f in FIGURES],
        names=[(f, FIGURE_NAMES[f]) for f in FIGURES],
        children=[
            (c["unit"]["name"], [_shown_value(f, c[f]) for f in FIGURES]) for c in found["children"]
        ],
        categories=[
            (
                category_label(c["category"]) or _("Not set"),
                [_shown_value(f, c[f]) for f in FIGURES],
            )
            for c in found["by_category"]
        ],
        board_count=count,
        board_link=url_for("board.index", unit=asked.unit.code),
        units=[(u.code, _unit_label(u) or u.name) for u in _report_units(me)],
        previous=url_for("board.report", unit=asked.unit.code, month=previous),
        following=url_for("board.report", unit=asked.unit.code, month=following)
        if last < moment.astimezone(SHANGHAI).date().replace(day=1)
        else None,
        csv=url_for("board.figures_csv", **period),
        xlsx=url_for("board.figures_xlsx", **period),
        made=moment,
    )
