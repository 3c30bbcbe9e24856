"""The town's figures (DESIGN §11), defined once: the API, the dashboards and the exports all call
`figures()`.

Every figure is an aggregate over `case_fact` and `feedback_fact` (engine/casefacts.py keeps them
step by step), filtered by the unit's column at its level and the period, so each is one indexed
query whatever the town's size: no workflow and no event is read.

A period is two Asia/Shanghai dates, both inclusive; it covers [from 00:00, to + 1 day 00:00) in
Shanghai. received and rejected count accepts completed in the period; resolved counts those
received cases that were archived before the period's end; on time means resolved with no
escalation and no overdue mark before that end. Rates are percentages rounded half up to one
decimal, or None when nothing is counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session, aliased

from .case_search import overdue_condition
from .clock import SHANGHAI
from .models import Case, CaseFact, FeedbackFact, Unit, WorkItem

CHILD_LEVEL = {"town": "village", "village": "district", "district": "grid"}
LEVEL_COLUMN = {
    "town": CaseFact.town_id,
    "village": CaseFact.village_id,
    "district": CaseFact.district_id,
    "grid": CaseFact.grid_id,
}
FIGURES = (
    "received",
    "rejected",
    "resolved",
    "resolution_rate",
    "on_time_rate",
    "satisfaction_rate",
    "reopen_rate",
    "avg_dispatch_minutes",
    "avg_resolution_hours",
    "overdue_open",
)
RATES = ("resolution_rate", "on_time_rate", "satisfaction_rate", "reopen_rate")


@dataclass(frozen=True)
class Period:
    start: date  # inclusive, Asia/Shanghai
    end: date  # inclusive

    @property
    def begins(self) -> datetime:
        return datetime.combine(self.start, time(0), SHANGHAI)

    @property
    def ends(self) -> datetime:
        """The instant just after the period: the next day's midnight in Shanghai."""
        return datetime.combine(self.end + timedelta(days=1), time(0), SHANGHAI)

    def previous(self) -> Period:
        """The period of the same length just before this one (for the change)."""
        length = self.end - self.start
        end = self.start - timedelta(days=1)
        return Period(end - length, end)


def default_period(now: datetime) -> Period:
    """This calendar year up to today, in Shanghai."""
    today = now.astimezone(SHANGHAI).date()
    return Period(date(today.year, 1, 1), today)


def rate(part: int, whole: int) -> float | None:
    """A percentage rounded half up (四舍五入) to one decimal; None when nothing is counted."""
    if not whole:
        return None
    value = (Decimal(part) * 100 / Decimal(whole)).quantize(Decimal("0.1"), ROUND_HALF_UP)
    return float(value)


def _mean(total: int | None, count: int, unit: int, places: str) -> float | int | None:
    if not count or total is None:
        return None
    value = (Decimal(total) / Decimal(count) / Decimal(unit)).quantize(
        Decimal(places), ROUND_HALF_UP
    )
    return int(value) if places == "1" else float(value)


def _counts(session: Session, where: list, period: Period, group=None) -> dict[Any, dict]:
    """The case counts of every figure but satisfaction, by `group` (None: one row)."""
    end = period.ends
    received = and_(CaseFact.valid.is_(True))
    resolved = and_(received, CaseFact.archived_at < end)
    on_time = and_(resolved, or_(CaseFact.late_at.is_(None), CaseFact.late_at >= end))
    reopened = and_(received, CaseFact.reopened_at < end)

    def count(condition):
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    def total(condition, column):
        return func.sum(case((condition, column), else_=None))

    columns = [
        count(received).label("received"),
        count(CaseFact.valid.is_(False)).label("rejected"),
        count(resolved).label("resolved"),
        count(on_time).label("on_time"),
        count(reopened).label("reopened"),
        total(received, CaseFact.dispatch_seconds).label("dispatch_seconds"),
        total(resolved, CaseFact.resolution_seconds).label("resolution_seconds"),
    ]
    query = select(*([group.label("g")] if group is not None else []), *columns).where(
        *where,
        CaseFact.accepted_at >= period.begins,
        CaseFact.accepted_at < end,
    )
    if group is not None:
        query = query.group_by(group)
    return {
        (row.g if group is not None else None): dict(row._mapping) for row in session.execute(query)
    }


def _satisfaction(session: Session, where: list, period: Period, group=None) -> dict[Any, tuple]:
    satisfied = func.coalesce(func.sum(case((FeedbackFact.satisfied.is_(True), 1), else_=0)), 0)
    query = (
        select(
            *([group.label("g")] if group is not None else []),
            satisfied.label("satisfied"),
            func.count().label("all"),
        )
        .join(CaseFact, CaseFact.case_id == FeedbackFact.case_id)
        .where(*where, FeedbackFact.at >= period.begins, FeedbackFact.at < period.ends)
    )
    if group is not None:
        query = query.group_by(group)
    return {
        (row.g if group is not None else None): (row.satisfied, row.all)
        for row in session.execute(query)
    }


def _overdue_open(session: Session, where: list, now: datetime, group=None) -> dict[Any, int]:
    item = aliased(WorkItem)  # the counted items; overdue_condition reads WorkItem on its own
    query = (
        select(*([group.label("g")] if group is not None else []), func.count(item.id))
        .join(Case, Case.id == item.case_id)
        .join(CaseFact, CaseFact.case_id == Case.id)
        .where(*where, item.completed_at.is_(None), overdue_condition(now))
    )
    if group is not None:
        query = query.group_by(group)
    return {(row[0] if group is not None else None): row[-1] for row in session.execute(query)}


def _assemble(counts: dict, satisfaction: tuple, overdue: int) -> dict[str, Any]:
    received, resolved = counts.get("received", 0), counts.get("resolved", 0)
    satisfied, answered = satisfaction
    return {
        "received": received,
        "rejected": counts.get("rejected", 0),
        "resolved": resolved,
        "resolution_rate": rate(resolved, received),
        "on_time_rate": rate(counts.get("on_time", 0), resolved),
        "satisfaction_rate": rate(satisfied, answered),
        "reopen_rate": rate(counts.get("reopened", 0), received),
        "avg_dispatch_minutes": _mean(counts.get("dispatch_seconds"), received, 60, "1"),
        "avg_resolution_hours": _mean(counts.get("resolution_seconds"), resolved, 3600, "0.1"),
        "overdue_open": overdue,
    }


def _grouped(
    session: Session, where: list, period: Period, now: datetime, group
) -> dict[Any, dict[str, Any]]:
    counts = _counts(session, where, period, group)
    satisfaction = _satisfaction(session, where, period, group)
    overdue = _overdue_open(session, where, now, group)
    keys = set(counts) | set(satisfaction) | set(overdue)
    return {
        key: _assemble(counts.get(key, {}), satisfaction.get(key, (0, 0)), overdue.get(key, 0))
        for key in keys
    }


def figures(
    session: Session,
    unit: Unit,
    period: Period,
    now: datetime,
    category: str | None = None,
    children: bool = True,
    by_category: bool = True,
) -> dict[str, Any]:
    """A unit's figures for a period, with the same figures per child unit and per category."""
    if unit.level not in LEVEL_COLUMN:
        raise ValueError(f"figures are kept for towns, villages, districts and grids: {unit.level}")
    where = [LEVEL_COLUMN[unit.level] == unit.id]
    if category is not None:
        where.append(CaseFact.category == category)
    mine = _grouped(session, where, period, now, None).get(None) or _assemble({}, (0, 0), 0)
    result: dict[str, Any] = {**mine}
    if children:
        result["children"] = _children(session, unit, where, period, now)
    if by_category:
        per = _grouped(session, where, period, now, CaseFact.category)
        result["by_category"] = [
            {"category": key, **per[key]} for key in sorted(per, key=lambda k: (k is None, k or ""))
        ]
    return result


def _children(session: Session, unit: Unit, where: list, period: Period, now: datetime) -> list:
    level = CHILD_LEVEL.get(unit.level)
    if level is None:
        return []
    kids = session.scalars(
        select(Unit).where(Unit.parent_id == unit.id, Unit.level == level).order_by(Unit.code)
    ).all()
    per = _grouped(session, where, period, now, LEVEL_COLUMN[level])
    empty = _assemble({}, (0, 0), 0)
    return [
        {"unit": {"code": kid.code, "name": kid.name, "level": kid.level}, **per.get(kid.id, empty)}
        for kid in kids
    ]


def widest_units(session: Session, viewer) -> list[Unit]:
    """The units a viewer's figures default to: the town for auditors; else the units of their
    tier positions (and those they cover for a delegator) that no other of them lies under."""
    if viewer.is_auditor:
        return list(session.scalars(select(Unit).where(Unit.level == "town").order_by(Unit.code)))
    held = {unit for _role, unit, level in viewer.positions if level in LEVEL_COLUMN}
    for cover in viewer.covers:
        held |= {unit for _role, unit, level in cover.positions if level in LEVEL_COLUMN}
    units = list(session.scalars(select(Unit).where(Unit.id.in_(held)))) if held else []
    parents = dict(session.execute(select(Unit.id, Unit.parent_id)).tuples().all())

    def above(unit_id: int) -> bool:
        node = parents.get(unit_id)
        while node is not None:
            if node in held:
                return True
            node = parents.get(node)
        return False

    return sorted((u for u in units if not above(u.id)), key=lambda u: u.code)
