"""Coverage (定格定人定责): is every unit staffed, can somebody see every open item, and who owns
the cases whose owner is gone?

- Gaps: every grid has a grid leader and at least one information officer, every district a
  leader, every village a secretary and a liaison town leader. Only active people count: a
  position held by a deactivated person is a gap.
- Flagged items: open work items that nobody active can see right now (DESIGN §4: the people of
  the item's role at its unit, the liaison leaders of its village for a town item, never the
  person a peer review excludes), and owner tasks whose owner was deactivated, which the grid's
  officers see meanwhile. Delegations are left out: they only lend what active people hold.
- Orphaned cases: open cases whose owner was deactivated or no longer serves the case's grid as
  an information officer; administrators hand them to another officer (engine/org_admin.py).

Read-only, a few aggregate queries whatever the size of the town.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy import case as when
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from .access import assignee_serves, other_liaisons
from .models import Case, Liaison, Person, Position, Unit, WorkItem
from .specs import OPEN_STATUSES

# What each level must have, in the order the report lists them. "liaison" is a town leader
# named as the village's liaison (镇联点).
REQUIRED = {
    "village": ("village_secretary", "liaison"),
    "district": ("district_leader",),
    "grid": ("grid_leader", "info_officer"),
}
LEVEL_ORDER = {"village": 0, "district": 1, "grid": 2}
FLAGGED_SHOWN = 200  # flagged items listed; the report counts them all


@dataclass(frozen=True)
class Gap:
    level: str
    code: str
    name: str
    missing: str  # a role, or "liaison"


@dataclass(frozen=True)
class Flagged:
    item_id: int
    case_number: str
    case_title: str
    task: str
    role: str
    unit_code: str
    unit_name: str
    created_at: datetime
    due_at: datetime | None
    reason: str  # "nobody": no active person sees it; "owner_deactivated": the officers do
    assignee: str | None


@dataclass(frozen=True)
class Orphaned:
    number: str
    title: str
    status: str
    grid_code: str
    grid_name: str
    owner: str
    owner_name: str | None
    reason: str  # "deactivated", or "left_grid": active but no longer an officer of the grid
    tasks: tuple[str, ...]  # the case's open items
    officers: tuple[tuple[str, str], ...]  # (username, name): whom it may be handed to


@dataclass
class Coverage:
    gaps: list[Gap] = field(default_factory=list)
    flagged: list[Flagged] = field(default_factory=list)
    flagged_total: int = 0
    nobody_total: int = 0  # of flagged_total, the items nobody active sees
    orphaned: list[Orphaned] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.gaps or self.flagged_total or self.orphaned)


def report(session: Session) -> Coverage:
    found = Coverage(gaps=gaps(session), orphaned=orphaned_cases(session))
    found.flagged, found.flagged_total, found.nobody_total = flagged_items(session)
    return found


# ------------------------------------------------------------------------------------- gaps


def gaps(session: Session) -> list[Gap]:
    """The staffing gaps of every active village, district and grid, by unit code."""
    held = set(
        session.execute(
            select(Position.role, Position.unit_id)
            .join(Person, Person.id == Position.person_id)
            .where(Person.active)
        ).tuples()
    )
    liaised = set(
        session.scalars(
            select(Liaison.village_id)
            .join(Person, Person.id == Liaison.person_id)
            .join(Position, Position.person_id == Person.id)
            .where(Person.active, Position.role == "town_leadership")
        )
    )
    units = session.execute(
        select(Unit.id, Unit.code, Unit.name, Unit.level).where(
            Unit.active, Unit.level.in_(REQUIRED)
        )
    ).all()
    found = []
    for unit_id, code, name, level in units:
        for role in REQUIRED[level]:
            present = unit_id in liaised if role == "liaison" else (role, unit_id) in held
            if not present:
                found.append(Gap(level, code, name, role))
    return sorted(found, key=lambda g: (g.code, LEVEL_ORDER[g.level], g.missing))


# ------------------------------------------------------------------------------------ items


def _someone_active_holds() -> ColumnElement[bool]:
    """SQL condition on a work item: an active person holds its role at its unit and may work
    it (not the excluded resolver; for a town item of a village with liaison leaders, one of
    them), as engine/access.py decides for each person."""
    village_has_liaisons = exists(other_liaisons(WorkItem.village_id, WorkItem.excluded))
    is_liaison = exists(
        select(Liaison.person_id)
        .where(Liaison.village_id == WorkItem.village_id, Liaison.person_id == Person.id)
        .correlate(WorkItem, Person)
    )
    return exists(
        select(Position.id)
        .join(Person, Person.id == Position.person_id)
        .where(
            Position.role == WorkItem.role,
            Position.unit_id == WorkItem.unit_id,
            Person.active,
            or_(WorkItem.excluded.is_(None), Person.username != WorkItem.excluded),
            or_(WorkItem.role != "town_leadership", ~village_has_liaisons, is_liaison),
        )
    )


def _assignee_active() -> ColumnElement[bool]:
    """SQL condition on an owner item: its owner still serves it (engine/access.py): active and
    an officer of its unit. Otherwise the unit's officers see it, flagged, until it is handed on."""
    return assignee_serves()


def flagged_items(session: Session, limit: int = FLAGGED_SHOWN) -> tuple[list[Flagged], int, int]:
    """(the first `limit` flagged open items, oldest first; how many are flagged; how many of
    them nobody active sees)."""
    holder = _someone_active_holds()
    unassigned_unseen = and_(WorkItem.assignee.is_(None), ~holder)
    orphan = and_(WorkItem.assignee.is_not(None), ~_assignee_active())
    nobody = or_(unassigned_unseen, and_(orphan, ~holder))
    flagged = and_(WorkItem.completed_at.is_(None), or_(unassigned_unseen, orphan))
    total, unseen = session.execute(
        select(func.count(), func.coalesce(func.sum(_as_int(nobody)), 0)).where(flagged)
    ).one()
    rows = session.execute(
        select(
            WorkItem.id,
            Case.number,
            Case.title,
            WorkItem.task,
            WorkItem.role,
            Unit.code,
            Unit.name,
            WorkItem.created_at,
            WorkItem.due_at,
            nobody.label("nobody"),
            WorkItem.assignee,
        )
        .join(Case, Case.id == WorkItem.case_id)
        .join(Unit, Unit.id == WorkItem.unit_id)
        .where(flagged)
        .order_by(WorkItem.created_at, WorkItem.id)
        .limit(limit)
    ).all()
    items = [
        Flagged(
            item_id=r[0],
            case_number=r[1],
            case_title=r[2],
            task=r[3],
            role=r[4],
            unit_code=r[5],
            unit_name=r[6],
            created_at=r[7],
            due_at=r[8],
            reason="nobody" if r[9] else "owner_deactivated",
            assignee=r[10],
        )
        for r in rows
    ]
    return items, int(total), int(unseen)


def _as_int(condition: ColumnElement[bool]):
    return when((condition, 1), else_=0)


# ------------------------------------------------------------------------------ the owners


def _owner_serves() -> ColumnElement[bool]:
    """SQL condition on a case: its owner is active and an information officer of its grid."""
    return exists(
        select(Position.id)
        .join(Person, Person.id == Position.person_id)
        .where(
            Person.username == Case.owner,
            Person.active,
            Position.role == "info_officer",
            Position.unit_id == Case.grid_id,
        )
    )


def orphaned_cases(session: Session, grid_code: str | None = None) -> list[Orphaned]:
    """Open cases whose owner was deactivated or left the grid, oldest first, each with its open
    items and the grid's active officers it may be handed to."""
    query = (
        select(Case, Unit.code, Unit.name, Person.name, Person.active)
        .join(Unit, Unit.id == Case.grid_id)
        .outerjoin(Person, Person.username == Case.owner)
        .where(Case.status.in_(OPEN_STATUSES), Case.owner.is_not(None), ~_owner_serves())
        .order_by(Case.opened_at, Case.id)
    )
    if grid_code is not None:
        query = query.where(Unit.code == grid_code)
    rows = session.execute(query).all()
    if not rows:
        return []
    case_ids = [row[0].id for row in rows]
    tasks: dict[int, list[str]] = defaultdict(list)
    for case_id, task in session.execute(
        select(WorkItem.case_id, WorkItem.task)
        .where(WorkItem.case_id.in_(case_ids), WorkItem.completed_at.is_(None))
        .order_by(WorkItem.id)
    ):
        tasks[case_id].append(task)
    grid_ids = {row[0].grid_id for row in rows}
    officers: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for grid_id, username, name in session.execute(
        select(Position.unit_id, Person.username, Person.name)
        .join(Person, Person.id == Position.person_id)
        .where(
            Position.role == "info_officer",
            Position.unit_id.in_(grid_ids),
            Person.active,
        )
        .order_by(Person.username)
    ):
        officers[grid_id].append((username, name))
    return [
        Orphaned(
            number=case.number,
            title=case.title,
            status=case.status,
            grid_code=code,
            grid_name=name,
            owner=case.owner,
            owner_name=owner_name,
            reason="left_grid" if active else "deactivated",
            tasks=tuple(tasks[case.id]),
            officers=tuple(officers[case.grid_id]),
        )
        for case, code, name, owner_name, active in rows
    ]


def unseen_by_unit(session: Session) -> dict[int, int]:
    """How many open items nobody active sees, by the item's unit id (for the hierarchy page)."""
    holder = _someone_active_holds()
    nobody = or_(
        and_(WorkItem.assignee.is_(None), ~holder),
        and_(WorkItem.assignee.is_not(None), ~_assignee_active(), ~holder),
    )
    rows = session.execute(
        select(WorkItem.unit_id, func.count())
        .where(WorkItem.completed_at.is_(None), nobody)
        .group_by(WorkItem.unit_id)
    ).all()
    return dict(rows)
