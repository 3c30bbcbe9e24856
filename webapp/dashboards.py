"""The dashboards (统计看板, DESIGN §11): a unit's figures on one page, for anyone whose positions
cover a unit and for auditors. The town sees its villages, a village secretary their districts, a
district leader their grids; each child row drills down, and a grid leads on to its cases.

Everything counted comes from engine/figures.py (the §11 figures, and the trend, the tiers at
which cases were resolved and the slowest open items beside them), and the request is read the
way GET /api/v1/stats reads it (webapp/figures.py's `stats_request`: 404 for a unit outside the
viewer's cover, 400 for a malformed value), so the page, the API and the exports cannot disagree.

The page is complete without JavaScript: every number is in a tile or a table. The charts are
drawn over the same numbers by static/js/dashboards.js with ECharts (vendored from npm, never
loaded from the internet), from a JSON block the page carries; every word in them comes from here,
already translated.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from marshmallow import ValidationError
from sqlalchemy.exc import StatementError

from engine.access import Viewer
from engine.errors import Invalid
from engine.figures import (
    BUCKETS,
    CHILD_LEVEL,
    Period,
    bucket_count,
    figures,
    resolved_tiers,
    slowest_open,
    trend,
    widest_units,
)
from engine.models import Unit

from . import schemas
from .api import flatten_messages
from .extensions import db
from .figures import StatsRequest, stats_request
from .web import (
    TIER_NAMES,
    category_label,
    language,
    login_required,
    now,
    viewer,
    words,
)

bp = Blueprint("dashboards", __name__)

# A trend has at most this many points: three years by week, or thirteen by month.
MAX_POINTS = 160
SLOWEST = 5
ARGS = ("unit", "from", "to", "category")  # what GET /api/v1/stats takes, read by StatsArgs

# The tiles, in the order the page shows them: (figure, label, kind, better), where kind says
# how the value reads ("count", "rate" in percent, "number" with one decimal) and better which
# way of change is good news (+1 up, -1 down, 0 neither), for the colour of the change.
TILES = (
    ("received", _l("Cases received"), "count", 0),
    ("resolved", _l("Cases resolved"), "count", +1),
    ("resolution_rate", _l("Resolution rate"), "rate", +1),
    ("on_time_rate", _l("On-time rate"), "rate", +1),
    ("satisfaction_rate", _l("Satisfaction rate"), "rate", +1),
    ("reopen_rate", _l("Reopen rate"), "rate", -1),
    ("avg_dispatch_minutes", _l("Average dispatch (minutes)"), "count", -1),
    ("avg_resolution_hours", _l("Average resolution (hours)"), "number", -1),
    ("overdue_open", _l("Overdue open items"), "count", -1),
)
# overdue_open counts what is overdue now, whatever the period: it has no previous value.
NOW_ONLY = {"overdue_open"}
LEVEL_NAMES = {
    "town": _l("Town"),
    "village": _l("Village"),
    "district": _l("District"),
    "grid": _l("Grid"),
}
CHILDREN_NAMES = {"village": _l("Villages"), "district": _l("Districts"), "grid": _l("Grids")}
BUCKET_NAMES = {"week": _l("By week"), "month": _l("By month")}
NONE = "—"  # a figure with nothing to count


# ------------------------------------------------------------------ reading the request


def _asked(me: Viewer, moment: datetime) -> tuple[StatsRequest, str, bool]:
    """The unit, period and category as GET /api/v1/stats reads them, and the trend's bucket
    (default: weeks for a quarter or less, else months); whether the bucket was chosen."""
    given = {
        name: request.args[name].strip() for name in ARGS if request.args.get(name, "").strip()
    }
    try:
        args = schemas.StatsArgs().load(given)
    except ValidationError as exc:
        raise Invalid("the request has errors", flatten_messages(exc.messages)) from exc
    asked = stats_request(db.session, me, args, moment)
    chosen = request.args.get("bucket", "").strip()
    if chosen and chosen not in BUCKETS:
        raise Invalid("the request has errors", {"bucket": "must be week or month"})
    period = asked.period
    bucket = chosen or ("week" if (period.end - period.start).days <= 92 else "month")
    if bucket_count(period, bucket) > MAX_POINTS:
        raise Invalid(_("Too many points for the trend: choose a shorter period, or months."))
    return asked, bucket, bool(chosen)


def _previous(period: Period) -> Period | None:
    try:
        return period.previous()
    except OverflowError:  # a period that starts near year 1 has no period before it
        return None


# ------------------------------------------------------------------ what the page shows


def _change(current: Any, before: Any) -> Decimal | None:
    """current - before, exactly (the figures are rounded already), or None when either is."""
    if current is None or before is None:
        return None
    return Decimal(str(current)) - Decimal(str(before))


def _value(value: Any, kind: str) -> str:
    if value is None:
        return NONE
    if kind == "rate":
        return f"{value:.1f}%"
    if kind == "number":
        return f"{value:.1f}"
    return str(value)


def _delta(diff: Decimal | None, kind: str) -> str:
    """'↑ 3.2', '↓ 5', '→ 0', or '—'; rates change in percentage points."""
    if diff is None:
        return NONE
    size = abs(diff)
    text = f"{size:.1f}" if kind in ("rate", "number") else f"{size:.0f}"
    if diff > 0:
        return f"↑ {text}"
    if diff < 0:
        return f"↓ {text}"
    return f"→ {text}"


def tiles(found: dict, before: dict | None) -> list[dict]:
    """One tile per figure: its value, and its change against the previous period."""
    shown = []
    for key, label, kind, better in TILES:
        diff = None if key in NOW_ONLY or before is None else _change(found[key], before[key])
        mood = ""
        if diff is not None and diff != 0 and better:
            mood = "better" if (diff > 0) == (better > 0) else "worse"
        shown.append(
            {
                "key": key,
                "label": label,
                "value": _value(found[key], kind),
                "raw": found[key],
                "now_only": key in NOW_ONLY,
                "change": _delta(diff, kind),
                "direction": ""
                if diff is None
                else "up"
                if diff > 0
                else "down"
                if diff < 0
                else "same",
                "mood": mood,
            }
        )
    return shown


def _crumbs(me: Viewer, unit: Unit) -> list[Unit]:
    """The units above `unit` up to the widest one the viewer covers, top first; never a unit
    outside their cover."""
    top = {u.id for u in widest_units(db.session, me)}
    chain: list[Unit] = []
    node: Unit | None = unit
    while node.id not in top:
        node = node.parent
        if node is None:  # not under a unit of theirs (stats_request made sure): no trail
            return []
        chain.append(node)
    return list(reversed(chain))


def _category_name(value: str | None) -> str:
    return category_label(value) if value else _("No category")


def _categories(chosen: str | None) -> list[tuple[str, str]]:
    """The live bundle's categories for the form (and a retired one the query names)."""
    options = [(c.value, c.label(language())) for c in words().options("category")]
    if chosen and chosen not in dict(options):
        options.append((chosen, category_label(chosen)))
    return options


def _chart_data(found: dict, points: list[dict], bucket: str, tiers: list[dict]) -> dict:
    """What dashboards.js draws, with every word already translated: the script holds none."""
    received, resolved = _("Cases received"), _("Cases resolved")
    tier_keys = list(tiers[0]["tiers"]) if tiers else []
    cells = [
        [x, y, row["tiers"][tier]]
        for y, row in enumerate(tiers)
        for x, tier in enumerate(tier_keys)
    ]
    return {
        "series": {"received": received, "resolved": resolved},
        "children": {
            "names": [c["unit"]["name"] for c in found["children"]],
            "received": [c["received"] for c in found["children"]],
            "resolved": [c["resolved"] for c in found["children"]],
        },
        "trend": {
            "starts": [_point_label(p["start"], bucket) for p in points],
            "received": [p["received"] for p in points],
            "resolved": [p["resolved"] for p in points],
        },
        "categories": {
            "names": [_category_name(c["category"]) for c in found["by_category"]],
            "received": [c["received"] for c in found["by_category"]],
            "resolved": [c["resolved"] for c in found["by_category"]],
        },
        "tiers": {
            "units": [row["unit"]["name"] for row in tiers],
            "tiers": [str(TIER_NAMES.get(t, t)) for t in tier_keys],
            "cells": cells,
            "max": max((cell[2] for cell in cells), default=0),
            "label": resolved,
        },
    }


def _point_label(start: date, bucket: str) -> str:
    return start.isoformat() if bucket == "week" else start.strftime("%Y-%m")


# ------------------------------------------------------------------ the page


@bp.get("/figures")
@login_required
def index():
    """A unit's figures for a period: tiles with their change, the child units (each a link one
    level down; a grid's cases are a link away), the trend, the categories, the tiers at which
    cases were resolved and the open items that have waited longest."""
    me = viewer()
    moment = now()
    if not request.args.get("unit", "").strip():
        widest = widest_units(db.session, me)
        if len(widest) > 1:  # several units with none above the others: let them choose
            return render_template("dashboards/choose.html", units=widest, level_names=LEVEL_NAMES)
    asked, bucket, bucket_chosen = _asked(me, moment)
    unit, period, category = asked.unit, asked.period, asked.category
    try:
        found = figures(db.session, unit, period, moment, category)
        previous = _previous(period)
        before = (
            figures(db.session, unit, previous, moment, category, children=False, by_category=False)
            if previous
            else None
        )
        points = trend(db.session, unit, period, bucket, category)
        tiers = resolved_tiers(db.session, unit, period, category)
    except (OverflowError, StatementError) as exc:
        # A day near year 1 or 9999 whose midnight in UTC, or the day after, has no datetime.
        if isinstance(exc, StatementError) and not isinstance(exc.orig, OverflowError):
            raise
        raise Invalid("the request has errors", {"to": "out of range"}) from exc
    keep = {"from": period.start.isoformat(), "to": period.end.isoformat()}
    if category:
        keep["category"] = category
    if bucket_chosen:
        keep["bucket"] = bucket

    def here(code: str) -> str:
        """The figures of another unit, for the same period, category and bucket."""
        return url_for("dashboards.index", unit=code, **keep)

    # The case browser filters by village, district or grid; the town's cases are all of them.
    if unit.level == "town":
        cases = url_for("cases.index")
    else:
        cases = url_for("cases.index", unit=unit.code)
    return render_template(
        "dashboards/index.html",
        unit=unit,
        level_name=LEVEL_NAMES.get(unit.level, unit.level),
        crumbs=_crumbs(me, unit),
        here=here,
        cases_url=cases,
        period=period,
        previous=previous,
        category=category,
        category_name=_category_name(category) if category else None,
        categories=_categories(category),
        bucket=bucket,
        buckets=list(BUCKET_NAMES.items()),
        bucket_name=BUCKET_NAMES[bucket],
        tiles=tiles(found, before),
        found=found,
        children_name=CHILDREN_NAMES.get(CHILD_LEVEL.get(unit.level, ""), ""),
        points=points,
        point_label=_point_label,
        tiers=tiers,
        category_name_of=_category_name,
        slowest=slowest_open(db.session, me, unit, moment, SLOWEST),
        chart=_chart_data(found, points, bucket, tiers),
        value=_value,
        empty=found["received"] == 0,
    )
