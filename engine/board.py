"""督办台账, the overdue board (issue 11): every open work item a viewer may see that is overdue or
has been supervised, with who holds it and for how long, how often it was supervised and whether it
arrived by escalation.

Overdue is engine/deadlines.py's one definition (`overdue_clause`, `item_overdue`), so the board
lists the same items the inbox, the case pages and `overdue_open` in the figures call overdue.
Visibility is DESIGN §4's `case_scope`: a leader sees the items of the cases under their units
(whoever holds them, at any tier), a department the cases it joined, auditors everything.

Everything is read from indexed rows (work_item, case, unit, case_event), never from workflows:
the cases come from the index of the viewer's unit (or, town-wide, of the open statuses), their
items from (case_id, completed_at), their supervision events from (case_id, seq). A page costs three queries whatever its length: the count, the rows, and one query for the
supervision events of the page's cases. Sorting by how often an item was supervised needs those
counts for every matching item, not just a page's, so that sort reads the matching items' keys
first (one query, plus the supervision query) and loads only the page's rows after.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from .access import Viewer, case_scope
from .case_search import CLOSED, STATUSES, UnitRef, unit_condition
from .clock import iso
from .deadlines import item_overdue, overdue_clause
from .models import Case, CaseEvent, Unit, WorkItem

# overdue: the longest past its deadline first (then the nearest deadline, then none);
# age: open longest first; supervised: supervised most often first; unit: by the code of the
# unit whose role holds the item, so each unit's items stand together.
SORTS = ("overdue", "age", "supervised", "unit")
# The statuses a case with an open work item has: naming them lets a town-wide board start from
# the case status index (the open cases) instead of scanning every work item ever made.
OPEN_STATUSES = tuple(s for s in STATUSES if s not in CLOSED)
# Case ids per IN (...) list: far below SQLite's and PostgreSQL's limits on parameters.
CHUNK = 500

ItemUnit = aliased(Unit, name="item_unit")
GridUnit = aliased(Unit, name="grid_unit")


@dataclass(frozen=True)
class BoardRow:
    """One open work item on the board. `holder` is who claimed it, else the one person it is
    for (an owner task's assignee); None means the role at the unit, whoever of them takes it."""

    item_id: int
    case_number: str
    case_title: str
    category: str | None
    severity: str | None
    grid_code: str
    grid_name: str
    task: str  # the logical task: accept, handle, feedback, report, review
    name: str  # the item's name in the diagram
    role: str
    unit_code: str
    unit_name: str
    holder: str | None
    claimed: bool
    created_at: datetime
    open_for: timedelta
    due_at: datetime | None
    overdue: bool  # now, by the one definition
    overdue_for: timedelta | None  # how long past its deadline; None while not overdue
    supervised_at: datetime | None  # the latest supervision
    times_supervised: int
    escalated: bool  # arrived by escalation from the tier below


@dataclass(frozen=True)
class BoardPage:
    rows: list[BoardRow]
    total: int  # every matching item, not only this page's
    offset: int
    limit: int | None

    @property
    def has_more(self) -> bool:
        return self.limit is not None and self.offset + len(self.rows) < self.total


def board_conditions(
    viewer: Viewer, now: datetime, unit: UnitRef | None = None
) -> list[ColumnElement[bool]]:
    """What puts an item on the board: open, overdue or supervised, in a case the viewer may
    read, and under `unit` if one is given (a UnitRef from case_search.covered_unit, which has
    checked that the viewer covers it)."""
    conditions = [
        WorkItem.completed_at.is_(None),
        or_(overdue_clause(now), WorkItem.supervised_at.is_not(None)),
        Case.status.in_(OPEN_STATUSES),
        case_scope(viewer),
    ]
    if unit is not None:
        conditions.append(unit_condition(unit))
    return conditions


def board_count(
    session: Session, viewer: Viewer, now: datetime, unit: UnitRef | None = None
) -> int:
    """How many items the board holds (the monthly report's line, the page's heading)."""
    query = (
        select(func.count(WorkItem.id))
        .join(Case, Case.id == WorkItem.case_id)
        .where(*board_conditions(viewer, now, unit))
    )
    return session.scalar(query) or 0


def board(
    session: Session,
    viewer: Viewer,
    now: datetime,
    unit: UnitRef | None = None,
    sort: str = "overdue",
    limit: int | None = 50,
    offset: int = 0,
) -> BoardPage:
    """One page of the board in the given order (limit None: every row, for the exports).
    Offset paging: the board is a short list of exceptions, and a sort by a count computed
    outside SQL has no keyset to page by."""
    if sort not in SORTS:
        raise ValueError(f"sort: {sort!r}")  # the adapters validate what people send
    conditions = board_conditions(viewer, now, unit)
    total = session.scalar(
        select(func.count(WorkItem.id)).join(Case, Case.id == WorkItem.case_id).where(*conditions)
    )
    if sort == "supervised":
        ids, counts = _most_supervised(session, conditions, limit, offset)
        found = {r[0].id: r for r in session.execute(_rows().where(WorkItem.id.in_(ids)))}
        rows = [found[i] for i in ids if i in found]
    else:
        query = _rows().where(*conditions).order_by(*_order(sort)).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        rows = list(session.execute(query))
        counts = supervision_counts(
            session, [(r[0].id, r[0].case_id, r[0].task, r[0].created_at) for r in rows]
        )
    return BoardPage(
        [_row(r, counts.get(r[0].id, 0), now) for r in rows], total or 0, offset, limit
    )


def _rows() -> Select:
    """The columns a row shows: the item, its case, the unit holding it and the case's grid."""
    return (
        select(
            WorkItem,
            Case.number,
            Case.title,
            Case.category,
            Case.severity,
            ItemUnit.code,
            ItemUnit.name,
            GridUnit.code,
            GridUnit.name,
        )
        .join(Case, Case.id == WorkItem.case_id)
        .join(ItemUnit, ItemUnit.id == WorkItem.unit_id)
        .join(GridUnit, GridUnit.id == Case.grid_id)
    )


def _order(sort: str) -> list:
    """ORDER BY for the sorts SQL can do; the id last, so that pages never overlap. Items
    without a deadline go last (portable NULLS LAST: the IS NULL test sorts false first)."""
    no_deadline = WorkItem.due_at.is_(None)
    if sort == "age":
        return [WorkItem.created_at, WorkItem.id]
    if sort == "unit":
        return [ItemUnit.code, no_deadline, WorkItem.due_at, WorkItem.id]
    return [no_deadline, WorkItem.due_at, WorkItem.id]


def _most_supervised(
    session: Session, conditions: list, limit: int | None, offset: int
) -> tuple[list[int], dict[int, int]]:
    """The page's item ids, most supervised first (then by deadline), and their counts."""
    keys = list(
        session.execute(
            select(
                WorkItem.id, WorkItem.case_id, WorkItem.task, WorkItem.created_at, WorkItem.due_at
            )
            .join(Case, Case.id == WorkItem.case_id)
            .where(*conditions)
        )
    )
    counts = supervision_counts(session, [(k.id, k.case_id, k.task, k.created_at) for k in keys])
    keys.sort(
        key=lambda k: (-counts.get(k.id, 0), k.due_at is None, k.due_at or k.created_at, k.id)
    )
    chosen = keys[offset : offset + limit if limit is not None else None]
    return [k.id for k in chosen], {k.id: counts.get(k.id, 0) for k in chosen}


def supervision_counts(
    session: Session, items: Iterable[tuple[int, int, str, datetime]]
) -> dict[int, int]:
    """How many times each item was supervised: its case's `supervised` events that name the
    item's logical task and were recorded after the item was created. So an escalated handle
    item does not inherit the supervisions of the tier below, not even the 80% notice a late
    run fires in the very step that escalates (it is recorded at the new item's creation instant;
    an item's own first notice comes at 80% of a limit, always later). Items are (id, case id,
    task, created_at). One query per CHUNK cases, on the case_event (case_id, seq) index; event
    times are compared as the canonical text they are stored in (clock.iso: fixed width, so text
    order is time order), so no database has to parse them."""
    items = list(items)
    wanted = sorted({case_id for _id, case_id, _task, _at in items})
    times: dict[tuple[int, str], list[str]] = defaultdict(list)
    for start in range(0, len(wanted), CHUNK):
        rows = session.execute(
            select(CaseEvent.case_id, CaseEvent.task, CaseEvent.at).where(
                CaseEvent.case_id.in_(wanted[start : start + CHUNK]),
                CaseEvent.type == "supervised",
            )
        )
        for case_id, task, at in rows:
            times[(case_id, task)].append(at)
    for found in times.values():
        found.sort()
    counts = {}
    for item_id, case_id, task, created_at in items:
        found = times.get((case_id, task), [])
        counts[item_id] = len(found) - bisect_right(found, iso(created_at))
    return counts


def _row(row, times_supervised: int, now: datetime) -> BoardRow:
    item: WorkItem = row[0]
    _i, number, title, category, severity, unit_code, unit_name, grid_code, grid_name = row
    overdue = item_overdue(item, now)
    return BoardRow(
        item_id=item.id,
        case_number=number,
        case_title=title,
        category=category,
        severity=severity,
        grid_code=grid_code,
        grid_name=grid_name,
        task=item.task,
        name=item.name,
        role=item.role,
        unit_code=unit_code,
        unit_name=unit_name,
        holder=item.claimed_by or item.assignee,
        claimed=item.claimed_by is not None,
        created_at=item.created_at,
        open_for=max(now - item.created_at, timedelta(0)),
        due_at=item.due_at,
        overdue=overdue,
        overdue_for=max(now - item.due_at, timedelta(0)) if overdue and item.due_at else None,
        supervised_at=item.supervised_at,
        times_supervised=times_supervised,
        escalated=bool(item.escalated),
    )
