"""The case browser of auditors and leaders: the cases a viewer may read, narrowed by number,
unit, person, category, status, opening dates, overdue and escalations, newest first in keyset
pages (issue 9).

One query serves the JSON API (GET /api/v1/cases) and the case list page, so both find the same
cases. The adapters parse their input into CaseFilters; a unit code is resolved here, by
`covered_unit`, because which units a viewer may name is an access rule (DESIGN §4): a code that
names no unit and one outside the viewer's units are refused alike. Every condition is portable
SQL (EXISTS, IN, LIKE on upper()), the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import Select, and_, exists, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from .access import Viewer, case_scope, lies_under, unit_by_code
from .clock import SHANGHAI, as_utc
from .deadlines import overdue_clause
from .errors import NotFound
from .models import CASE_UNIT_COLUMN, Case, CaseDepartment, CaseEvent, Person, Unit, WorkItem
from .specs import PROCESS_ID

# The statuses of DESIGN §5, and "open": any status but the two that close a case.
STATUSES = ("accepting", "handling", "feedback", "reporting", "archived", "rejected")
CLOSED = ("archived", "rejected")
OPEN = "open"
# How a person is linked to a case: its owner (首接), someone who handled it (completed a handle
# item, or holds one now), or anyone its history names as the actor of a step.
PERSON_ROLES = ("any", "owner", "handler", "actor")
# The levels a unit filter may name, in the order a list of units shows them.
UNIT_LEVELS = ("village", "district", "grid", "department")


@dataclass(frozen=True)
class UnitRef:
    """A unit the viewer covers, as a filter needs it: its id and its level (which column of the
    case names it, or the departments named on the case)."""

    id: int
    level: str


@dataclass(frozen=True)
class CaseFilters:
    """What to look for; None (or "any") leaves a field out. Dates are days in Asia/Shanghai,
    both inclusive. `person` is a username or a person's full name."""

    number: str | None = None
    unit: UnitRef | None = None
    person: str | None = None
    person_as: str = "any"
    category: str | None = None
    status: str | None = None  # one of STATUSES, or OPEN
    opened_from: date | None = None
    opened_to: date | None = None
    overdue: bool | None = None
    escalated_min: int | None = None

    def __post_init__(self) -> None:
        # The adapters validate what people send; these are mistakes in the calling code.
        if self.person_as not in PERSON_ROLES:
            raise ValueError(f"person_as: {self.person_as!r}")
        if self.status is not None and self.status not in (*STATUSES, OPEN):
            raise ValueError(f"status: {self.status!r}")


# ------------------------------------------------------------------ units


def covered_unit(session: Session, viewer: Viewer, code: str) -> UnitRef:
    """The unit `code` names, if the viewer covers it: one of their units or one below it
    (auditors: any). NotFound otherwise, whether the code exists or not (DESIGN §4)."""
    unit = unit_by_code(session, code)
    if unit is None or not _covers(viewer, unit):
        raise NotFound("no such unit", {"unit": "no such unit"})
    return UnitRef(unit.id, unit.level)


def unit_condition(unit: UnitRef) -> ColumnElement[bool]:
    """The cases under a unit: by the case's column at its level, or for a department the
    cases a town leader named it on (联办)."""
    if unit.level in CASE_UNIT_COLUMN:
        return getattr(Case, CASE_UNIT_COLUMN[unit.level]) == unit.id
    named = select(CaseDepartment.case_id).where(CaseDepartment.unit_id == unit.id)
    return Case.id.in_(named)


def _held_units(viewer: Viewer) -> set[int]:
    """The units of the viewer's positions, with those held on behalf of a delegator, as
    case_scope counts them (auditor and admin positions open no units)."""
    positions = list(viewer.positions) + [p for c in viewer.covers for p in c.positions]
    return {unit for role, unit, _level in positions if role not in ("auditor", "admin")}


def _covers(viewer: Viewer, unit: Unit) -> bool:
    if viewer.is_auditor:
        return True
    held, node = _held_units(viewer), unit
    while node is not None:  # one of the viewer's units, or one below it
        if node.id in held:
            return True
        node = node.parent
    return False


def covered_units(session: Session, viewer: Viewer) -> list[Unit]:
    """The units a viewer may filter by, for a list to choose from: villages, districts and
    grids in code order (so each comes after its parent), then departments. Auditors get all."""
    units = list(session.scalars(select(Unit).where(Unit.level.in_(UNIT_LEVELS))))
    if not viewer.is_auditor:
        held = _held_units(viewer)
        parents = dict(session.execute(select(Unit.id, Unit.parent_id)).tuples().all())
        units = [u for u in units if lies_under(u.id, held, parents)]
    return sorted(units, key=lambda u: (u.level == "department", u.code))


# ------------------------------------------------------------------ the query


def search_query(viewer: Viewer, filters: CaseFilters, now: datetime) -> Select:
    """The cases the viewer may read that match every filter given, as a select of Case (no
    order: case_page pages it newest first). `now` decides what is overdue."""
    # A campaign's grid instances are case rows too (engine/campaigns.py): not cases to list.
    conditions = [case_scope(viewer), Case.process == PROCESS_ID]
    if filters.number:
        conditions.append(_number_prefix(filters.number))
    if filters.unit is not None:
        conditions.append(unit_condition(filters.unit))
    if filters.person:
        conditions.append(person_condition(filters.person, filters.person_as))
    if filters.category:
        conditions.append(Case.category == filters.category)
    if filters.status:
        conditions.append(_status(filters.status))
    conditions.extend(_opened_between(filters.opened_from, filters.opened_to))
    if filters.overdue is not None:
        late = overdue_condition(now)
        conditions.append(late if filters.overdue else ~late)
    if filters.escalated_min is not None:
        conditions.append(Case.escalations >= filters.escalated_min)
    return select(Case).where(*conditions)


def _number_prefix(text: str) -> ColumnElement[bool]:
    """Case-insensitive prefix: upper() on both sides, as PostgreSQL's LIKE tells case apart.
    `autoescape` keeps % and _ in what was typed literal."""
    return func.upper(Case.number).startswith(text.strip().upper(), autoescape=True)


def _status(status: str) -> ColumnElement[bool]:
    return Case.status.not_in(CLOSED) if status == OPEN else Case.status == status


def _opened_between(first: date | None, last: date | None) -> list[ColumnElement[bool]]:
    """Opened on or after the first day's midnight in Shanghai, and before the midnight after
    the last day: whole town days, whatever UTC date an instant falls on."""
    found = []
    if first is not None:
        found.append(Case.opened_at >= _midnight(first))
    if last is not None:
        found.append(Case.opened_at < _midnight(last + timedelta(days=1)))
    return found


def _midnight(day: date) -> datetime:
    return as_utc(datetime.combine(day, time(), SHANGHAI))


def overdue_condition(now: datetime) -> ColumnElement[bool]:
    """A case is overdue while one of its open items is (engine/deadlines.py, the one
    definition): the same cases the API and the pages mark overdue. `overdue_marked` is not
    asked: it stays true after the late item is done, when the case no longer shows as overdue."""
    late = select(WorkItem.id).where(
        WorkItem.case_id == Case.id, WorkItem.completed_at.is_(None), overdue_clause(now)
    )
    return exists(late)


def person_condition(person: str, person_as: str = "any") -> ColumnElement[bool]:
    """The cases linked to a person in the given way ("any": in any of them)."""
    ways = {
        "owner": lambda: _named(Case.owner, person),
        "handler": lambda: _handled_by(person),
        "actor": lambda: _acted_in(person),
    }
    if person_as == "any":
        return or_(*(make() for make in ways.values()))
    return ways[person_as]()


def _named(column, person: str) -> ColumnElement[bool]:
    """The column names the person: by username, or by the full name of someone in the
    organisation (so an auditor can type 孙组长 as well as gl1). Never NULL, so it negates."""
    text = person.strip()
    by_name = select(Person.username).where(Person.name == text)
    return and_(column.is_not(None), or_(column == text, column.in_(by_name)))


def _handled_by(person: str) -> ColumnElement[bool]:
    """Someone who completed a handle item of the case, or holds an open one now."""
    handled = select(WorkItem.id).where(
        WorkItem.case_id == Case.id,
        WorkItem.task == "handle",
        or_(
            _named(WorkItem.completed_by, person),
            and_(WorkItem.completed_at.is_(None), _named(WorkItem.claimed_by, person)),
        ),
    )
    return exists(handled)


def _acted_in(person: str) -> ColumnElement[bool]:
    """Anyone the case's history names as an actor (ix_case_event_actor serves this)."""
    acted = select(CaseEvent.id).where(
        CaseEvent.case_id == Case.id, _named(CaseEvent.actor, person)
    )
    return exists(acted)


# ------------------------------------------------------------------ keyset pages


def case_page(
    session: Session, query: Select, after: int | None = None, limit: int = 20
) -> tuple[list[Case], int | None]:
    """One page of the query's cases, newest first (by id, which only grows), and the id to pass
    as `after` for the next page: None on the last. Keyset, not offset: a page costs the same
    however deep it is, and cases opened meanwhile never shift a page."""
    if after is not None:
        query = query.where(Case.id < after)
    cases = list(session.scalars(query.order_by(Case.id.desc()).limit(limit + 1)))
    if len(cases) <= limit:
        return cases, None
    return cases[:limit], cases[limit - 1].id
