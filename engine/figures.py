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

from .access import Viewer, case_scope
from .case_search import overdue_condition
from .clock import SHANGHAI
from .deadlines import item_overdue
from .models import TIERS, Case, CaseFact, FeedbackFact, Unit, WorkItem, case_unit
from .specs import PROCESS_ID

MINUTE_US, HOUR_US = 60_000_000, 3_600_000_000  # case_fact keeps durations in microseconds
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


@dataclass
class Tally:
    """The additive counts behind the figures: tallies of finer groups (a child unit × a
    category) add up to those of coarser ones, so one grouped query serves the unit, its
    children and its categories at once."""

    received: int = 0
    rejected: int = 0
    resolved: int = 0
    on_time: int = 0
    reopened: int = 0
    dispatch_us: int = 0
    resolution_us: int = 0
    satisfied: int = 0
    answered: int = 0
    overdue_open: int = 0

    def add(self, other: Tally) -> Tally:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def figures(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "rejected": self.rejected,
            "resolved": self.resolved,
            "resolution_rate": rate(self.resolved, self.received),
            "on_time_rate": rate(self.on_time, self.resolved),
            "satisfaction_rate": rate(self.satisfied, self.answered),
            "reopen_rate": rate(self.reopened, self.received),
            "avg_dispatch_minutes": _mean(self.dispatch_us, self.received, MINUTE_US, "1"),
            "avg_resolution_hours": _mean(self.resolution_us, self.resolved, HOUR_US, "0.1"),
            "overdue_open": self.overdue_open,
        }


def _select(groups: list, *columns):
    return select(*[g.label(f"g{i}") for i, g in enumerate(groups)], *columns)


def _key(row, groups: list) -> tuple:
    return tuple(row[i] for i in range(len(groups)))


def _counts(session: Session, where: list, period: Period, groups: list, into: dict) -> None:
    """The case counts of every figure but satisfaction and overdue, by `groups`."""
    end = period.ends
    received = CaseFact.valid.is_(True)
    resolved = and_(received, CaseFact.archived_at < end)
    on_time = and_(resolved, or_(CaseFact.late_at.is_(None), CaseFact.late_at >= end))
    reopened = and_(received, CaseFact.reopened_at < end)

    def count(condition):
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    def total(condition, column):
        return func.coalesce(func.sum(case((condition, column), else_=0)), 0)

    query = _select(
        groups,
        count(received),
        count(CaseFact.valid.is_(False)),
        count(resolved),
        count(on_time),
        count(reopened),
        total(received, CaseFact.dispatch_us),
        total(resolved, CaseFact.resolution_us),
    ).where(*where, CaseFact.accepted_at >= period.begins, CaseFact.accepted_at < end)
    if groups:
        query = query.group_by(*groups)
    n = len(groups)
    for row in session.execute(query):
        tally = into.setdefault(_key(row, groups), Tally())
        (
            tally.received,
            tally.rejected,
            tally.resolved,
            tally.on_time,
            tally.reopened,
            tally.dispatch_us,
            tally.resolution_us,
        ) = (int(v or 0) for v in row[n:])


def _satisfaction(session: Session, where: list, period: Period, groups: list, into: dict) -> None:
    satisfied = func.coalesce(func.sum(case((FeedbackFact.satisfied.is_(True), 1), else_=0)), 0)
    query = (
        _select(groups, satisfied, func.count())
        .join(CaseFact, CaseFact.case_id == FeedbackFact.case_id)
        .where(*where, FeedbackFact.at >= period.begins, FeedbackFact.at < period.ends)
    )
    if groups:
        query = query.group_by(*groups)
    for row in session.execute(query):
        tally = into.setdefault(_key(row, groups), Tally())
        tally.satisfied, tally.answered = int(row[-2] or 0), int(row[-1] or 0)


def _overdue_open(session: Session, where: list, now: datetime, groups: list, into: dict) -> None:
    item = aliased(WorkItem)  # the counted items; overdue_condition reads WorkItem on its own
    query = (
        _select(groups, func.count(item.id))
        .join(Case, Case.id == item.case_id)
        .join(CaseFact, CaseFact.case_id == Case.id)
        .where(*where, item.completed_at.is_(None), overdue_condition(now))
    )
    if groups:
        query = query.group_by(*groups)
    for row in session.execute(query):
        into.setdefault(_key(row, groups), Tally()).overdue_open = int(row[-1] or 0)


def _tallies(
    session: Session, where: list, period: Period, now: datetime, groups: list
) -> dict[tuple, Tally]:
    """Every tally by `groups`, in three queries (cases, feedback, open items)."""
    found: dict[tuple, Tally] = {}
    _counts(session, where, period, groups, found)
    _satisfaction(session, where, period, groups, found)
    _overdue_open(session, where, now, groups, found)
    return found


def _rollup(tallies: dict[tuple, Tally], position: int | None) -> dict[Any, Tally]:
    """Tallies added up by one part of their key (None: all of them)."""
    out: dict[Any, Tally] = {}
    for key, tally in tallies.items():
        out.setdefault(key[position] if position is not None else None, Tally()).add(tally)
    return out


def _unit_where(unit: Unit, category: str | None) -> list:
    """The facts under a unit (by the units a case was opened in), of one category or all."""
    if unit.level not in LEVEL_COLUMN:
        raise ValueError(f"figures are kept for towns, villages, districts and grids: {unit.level}")
    where = [LEVEL_COLUMN[unit.level] == unit.id]
    if category is not None:
        where.append(CaseFact.category == category)
    return where


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
    where = _unit_where(unit, category)
    child_level = CHILD_LEVEL.get(unit.level) if children else None
    groups = [LEVEL_COLUMN[child_level]] if child_level else []
    groups.append(CaseFact.category)
    tallies = _tallies(session, where, period, now, groups)
    result: dict[str, Any] = _rollup(tallies, None).get(None, Tally()).figures()
    if children:
        per_child = _rollup(tallies, 0) if child_level else {}
        kids = (
            session.scalars(
                select(Unit)
                .where(Unit.parent_id == unit.id, Unit.level == child_level)
                .order_by(Unit.code)
            ).all()
            if child_level
            else []
        )
        result["children"] = [
            {
                "unit": {"code": kid.code, "name": kid.name, "level": kid.level},
                **per_child.get(kid.id, Tally()).figures(),
            }
            for kid in kids
        ]
    if by_category:
        per = _rollup(tallies, -1)
        result["by_category"] = [
            {"category": key, **per[key].figures()}
            for key in sorted(per, key=lambda k: (k is None, k or ""))
        ]
    return result


def widest_units(session: Session, viewer) -> list[Unit]:
    """The units a viewer's figures default to: the town for auditors; else the units of their
    tier positions (and those they cover for a delegator) that no other of them lies under."""
    if viewer.is_auditor:
        return list(session.scalars(select(Unit).where(Unit.level == "town").order_by(Unit.code)))
    # Auditor and administrator posts sit on the town but open no cases (DESIGN §4).
    positions = [*viewer.positions, *(p for cover in viewer.covers for p in cover.positions)]
    held = {
        unit
        for role, unit, level in positions
        if level in LEVEL_COLUMN and role not in ("auditor", "admin")
    }
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


# ------------------------------------------------------------------ the dashboards' series
#
# What the dashboards draw beside the §11 figures: a trend, where cases got resolved, and the
# open items that have waited longest. They count the same `case_fact` rows as `figures()`, with
# the same meaning of received and resolved, so every chart adds up to a tile on the same page.

BUCKETS = ("week", "month")


def bucket_start(day: date, bucket: str) -> date:
    """The first day of the week (Monday, as Chinese calendars start it) or month holding `day`."""
    if bucket == "week":
        return day - timedelta(days=day.weekday())
    if bucket == "month":
        return day.replace(day=1)
    raise ValueError(f"a bucket is a week or a month: {bucket}")


def bucket_count(period: Period, bucket: str) -> int:
    """How many points a trend of the period has, worked out without listing them, so that a
    caller can refuse a period too long to draw before anything is counted."""
    first, last = bucket_start(period.start, bucket), bucket_start(period.end, bucket)
    if bucket == "week":
        return (last - first).days // 7 + 1
    return (last.year - first.year) * 12 + last.month - first.month + 1


def _bucket_starts(period: Period, bucket: str) -> list[date]:
    starts, current = [], bucket_start(period.start, bucket)
    while current <= period.end:
        starts.append(current)
        if bucket == "week":
            current += timedelta(days=7)
        else:  # the 28th plus four days is always in the next month
            current = (current.replace(day=28) + timedelta(days=4)).replace(day=1)
    return starts


def _shanghai_day(moment: datetime) -> date:
    return moment.astimezone(SHANGHAI).date()


def _resolved_in(period: Period) -> list:
    """The conditions of `resolved` in §11: received in the period, archived before its end."""
    return [
        CaseFact.valid.is_(True),
        CaseFact.accepted_at >= period.begins,
        CaseFact.accepted_at < period.ends,
        CaseFact.archived_at < period.ends,
    ]


def trend(
    session: Session, unit: Unit, period: Period, bucket: str, category: str | None = None
) -> list[dict[str, Any]]:
    """received and resolved per week or month of the period: [{start, received, resolved}].

    The rows are the period's received cases: each counts as received in the bucket of its
    accept and, when it was archived before the period's end, as resolved in the bucket of its
    archiving. So the buckets sum to the `received` and `resolved` of `figures()` for the same
    unit and period. The first and last buckets may be partial (`start` is the bucket's own
    Monday or first of the month, which may precede the period). Buckets are made here from
    Shanghai dates because SQLite and PostgreSQL spell date arithmetic differently; a period
    holds at most a town's year or so of cases, two timestamps each.
    """
    points = {
        start: {"start": start, "received": 0, "resolved": 0}
        for start in _bucket_starts(period, bucket)
    }
    rows = session.execute(
        select(CaseFact.accepted_at, CaseFact.archived_at).where(
            *_unit_where(unit, category),
            CaseFact.valid.is_(True),
            CaseFact.accepted_at >= period.begins,
            CaseFact.accepted_at < period.ends,
        )
    )
    for accepted_at, archived_at in rows:
        points[bucket_start(_shanghai_day(accepted_at), bucket)]["received"] += 1
        if archived_at is not None and archived_at < period.ends:
            points[bucket_start(_shanghai_day(archived_at), bucket)]["resolved"] += 1
    return list(points.values())


def resolved_tiers(
    session: Session, unit: Unit, period: Period, category: str | None = None
) -> list[dict[str, Any]]:
    """For the heat map: per child unit (a grid: the grid itself), how many of its cases resolved
    in the period were resolved at each tier: [{unit {code, name, level}, tiers {tier: n}}].

    Resolved means what it means in `figures()`, so a row's counts add up to that child's
    `resolved`. Every tier of the loop is listed (0 when none), bottom to top, so the map's
    columns do not move between units; a tier an older diagram used is added after them.
    """

    level = CHILD_LEVEL.get(unit.level)
    if level is None:
        rows_of, column = [unit], LEVEL_COLUMN[unit.level]
    else:
        column = LEVEL_COLUMN[level]
        rows_of = list(
            session.scalars(
                select(Unit)
                .where(Unit.parent_id == unit.id, Unit.level == level)
                .order_by(Unit.code)
            )
        )
    counts: dict[int, dict[str, int]] = {}
    query = (
        select(column, CaseFact.resolved_tier, func.count())
        .where(*_unit_where(unit, category), *_resolved_in(period))
        .where(CaseFact.resolved_tier.is_not(None))
        .group_by(column, CaseFact.resolved_tier)
    )
    for unit_id, tier, count in session.execute(query):
        counts.setdefault(unit_id, {})[tier] = count
    extra = sorted({t for per in counts.values() for t in per} - set(TIERS))
    return [
        {
            "unit": {"code": kid.code, "name": kid.name, "level": kid.level},
            "tiers": {tier: counts.get(kid.id, {}).get(tier, 0) for tier in (*TIERS, *extra)},
        }
        for kid in rows_of
    ]


def slowest_open(
    session: Session, viewer: Viewer, unit: Unit, now: datetime, limit: int = 5
) -> list[dict]:
    """The open work items of cases under the unit that have waited longest (earliest made
    ready first), for the dashboards' "slowest open" list: what a leader should ask about. Like
    `overdue_open`, it is about now, whatever the period; `overdue` is the one definition of
    engine/deadlines.py, so the list agrees with the inbox and the case page. Unlike the
    counts, it names cases: those under the unit now (a transferred case is its new grid's), and
    only those the viewer may see (DESIGN §4)."""

    query = (
        select(WorkItem, Case.number, Case.title, Unit.code, Unit.name)
        .join(Case, Case.id == WorkItem.case_id)
        .join(Unit, Unit.id == WorkItem.unit_id)
        .where(
            case_unit(Case, unit.level) == unit.id,
            case_scope(viewer),
            Case.process == PROCESS_ID,  # a campaign's grid items are not cases waiting
            WorkItem.completed_at.is_(None),
        )
        .order_by(WorkItem.created_at, WorkItem.id)
        .limit(limit)
    )
    return [
        {
            "number": number,
            "title": title,
            "task": item.task,
            "role": item.role,
            "unit": {"code": code, "name": name},
            "created_at": item.created_at,
            "due_at": item.due_at,
            "overdue": item_overdue(item, now),
        }
        for item, number, title, code, name in session.execute(query)
    ]
