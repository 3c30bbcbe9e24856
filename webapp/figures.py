"""The figures' API (DESIGN §8, §11): GET /api/v1/stats, and the one way the API, the dashboards
and the exports read a request for figures: which unit (covered by the caller), which period and
which category. The figures themselves are engine/figures.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import g, jsonify, request
from sqlalchemy.orm import Session

from engine.access import Viewer
from engine.case_search import covered_unit
from engine.errors import Invalid, NotFound
from engine.figures import LEVEL_COLUMN, Period, default_period, figures, widest_units
from engine.models import Unit

from . import schemas
from .api import bp as api_bp
from .api import parse, token_required
from .extensions import db
from .web import now, words


@dataclass(frozen=True)
class StatsRequest:
    unit: Unit
    period: Period
    category: str | None


def stats_request(session: Session, viewer: Viewer, args: dict, moment: datetime) -> StatsRequest:
    """The unit, period and category a figures request names, checked: a unit outside the
    caller's cover is 404 (DESIGN §4); without one, the widest unit they cover, and 400 listing
    them when there are several with none above the others."""
    code = args.get("unit")
    if code:
        unit = session.get(Unit, covered_unit(session, viewer, code).id)
    else:
        widest = widest_units(session, viewer)
        if not widest:
            raise NotFound("no unit to show", {"unit": "you cover no unit"})
        if len(widest) > 1:
            choices = ", ".join(u.code for u in widest)
            raise Invalid("name a unit", {"unit": f"must be one of: {choices}"})
        unit = widest[0]
    if unit.level not in LEVEL_COLUMN:
        raise Invalid(
            "not a unit with figures", {"unit": "must be a town, village, district or grid"}
        )
    category = args.get("category")
    if category is not None and category not in words().known["category"]:
        raise Invalid("the request has errors", {"category": "unknown category"})
    period = default_period(moment)
    period = Period(args.get("from_") or period.start, args.get("to") or period.end)
    if period.start > period.end:
        raise Invalid("the request has errors", {"to": schemas.CaseListArgs.DAYS_OUT_OF_ORDER})
    return StatsRequest(unit, period, category)


def unit_json(unit: Unit) -> dict:
    return {"code": unit.code, "name": unit.name, "level": unit.level}


def stats_json(session: Session, asked: StatsRequest, moment: datetime) -> dict:
    found = figures(session, asked.unit, asked.period, moment, asked.category)
    return {
        "unit": unit_json(asked.unit),
        "from": asked.period.start.isoformat(),
        "to": asked.period.end.isoformat(),
        "category": asked.category,
        **found,
    }


@api_bp.get("/stats")
@token_required
def stats_api():
    args = parse(schemas.StatsArgs, request.args.to_dict())
    moment = now()
    asked = stats_request(db.session, g.viewer, args, moment)
    return jsonify(stats_json(db.session, asked, moment))
