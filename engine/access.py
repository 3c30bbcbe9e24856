"""Who sees what and who may do what (DESIGN §4), as SQL filters and as checks on one row.

A position covers its unit and everything below it; departments see the cases they were named in;
auditors see every case. Work items are for the people holding their role at their unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import and_, exists, false, or_, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from .models import (
    TIERS,
    Case,
    CaseDepartment,
    Liaison,
    Person,
    Position,
    Unit,
    WorkItem,
    case_unit,
)


@dataclass(frozen=True)
class Viewer:
    username: str
    person_id: int
    positions: tuple[tuple[str, int, str], ...]  # (role, unit id, unit level)
    liaises: frozenset[int] = field(default_factory=frozenset)

    @property
    def roles(self) -> set[str]:
        return {role for role, _u, _l in self.positions}

    @property
    def is_auditor(self) -> bool:
        return "auditor" in self.roles

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def tier_positions(self) -> list[tuple[str, int]]:
        return [(role, unit) for role, unit, _l in self.positions if role in TIERS]


def viewer_of(session: Session, person: Person) -> Viewer:
    positions = tuple(sorted((p.role, p.unit_id, p.unit.level) for p in person.positions))
    liaises = frozenset(
        session.scalars(select(Liaison.village_id).where(Liaison.person_id == person.id))
    )
    return Viewer(person.username, person.id, positions, liaises)


def case_scope(viewer: Viewer) -> ColumnElement[bool]:
    """SQL condition: the cases this viewer may read."""
    if viewer.is_auditor:
        return true()
    conditions = []
    for role, unit_id, level in viewer.positions:
        if role in ("auditor", "admin"):
            continue
        if level == "department":
            conditions.append(
                Case.id.in_(select(CaseDepartment.case_id).where(CaseDepartment.unit_id == unit_id))
            )
        else:
            conditions.append(case_unit(Case, level) == unit_id)
    return or_(*conditions) if conditions else false()


def can_see_case(session: Session, viewer: Viewer, case: Case) -> bool:
    """case_scope for one loaded case, without a query unless departments are involved."""
    if viewer.is_auditor:
        return True
    departments = []
    for role, unit_id, level in viewer.positions:
        if role in ("auditor", "admin"):
            continue
        if level == "department":
            departments.append(unit_id)
        elif case_unit(case, level) == unit_id:
            return True
    if not departments:
        return False
    named = select(CaseDepartment).where(
        CaseDepartment.case_id == case.id, CaseDepartment.unit_id.in_(departments)
    )
    return bool(session.scalar(select(exists(named))))


def sees_reporter_phone(viewer: Viewer, case: Case, open_items: list[WorkItem]) -> bool:
    """A reporter's phone is for the case's owner and auditors, and before acceptance for the
    officer holding the accept item (they call the resident back); others see it masked."""
    if viewer.is_auditor or (case.owner is not None and case.owner == viewer.username):
        return True
    return case.owner is None and any(
        i.task == "accept" and i.claimed_by == viewer.username for i in open_items
    )


def _liaison_ok() -> ColumnElement[bool]:
    """Town items go to the liaison leaders of the case's village, else to every town leader."""
    return ~exists().where(Liaison.village_id == WorkItem.village_id)


def inbox_scope(viewer: Viewer) -> ColumnElement[bool]:
    """SQL condition: the work items shown in this viewer's inbox (open or not)."""
    by_position = [
        and_(WorkItem.role == role, WorkItem.unit_id == unit)
        for role, unit in viewer.tier_positions()
    ]
    town = or_(
        WorkItem.role != "town_leadership",
        WorkItem.village_id.in_(viewer.liaises) if viewer.liaises else false(),
        _liaison_ok(),
    )
    # Never NULL, so that the condition can be negated (NULL = 'x' is NULL, not false).
    mine = and_(WorkItem.assignee.is_not(None), WorkItem.assignee == viewer.username)
    if not by_position:
        return mine
    shared = and_(
        WorkItem.assignee.is_(None),
        or_(*by_position),
        or_(WorkItem.excluded.is_(None), WorkItem.excluded != viewer.username),
        town,
    )
    return or_(mine, shared)


def may_act(session: Session, viewer: Viewer, item: WorkItem) -> bool:
    """inbox_scope for one loaded item: whether this viewer may claim or complete it."""
    if item.assignee is not None:
        return item.assignee == viewer.username
    if (item.role, item.unit_id) not in viewer.tier_positions() or item.excluded == viewer.username:
        return False
    if item.role == "town_leadership" and item.village_id not in viewer.liaises:
        return not session.scalar(select(exists().where(Liaison.village_id == item.village_id)))
    return True


def eligible_town_leaders(session: Session, village_id: int, town_id: int) -> list[str]:
    """Active town leaders who would see a town item of this village."""
    liaisons = select(Liaison.person_id).where(Liaison.village_id == village_id)
    has_liaison = session.scalar(select(exists(liaisons)))
    query = (
        select(Person.username)
        .join(Position, Position.person_id == Person.id)
        .where(Position.role == "town_leadership", Position.unit_id == town_id, Person.active)
    )
    if has_liaison:
        query = query.where(Person.id.in_(liaisons))
    return list(session.scalars(query))


def unit_by_code(session: Session, code: str) -> Unit | None:
    return session.scalars(select(Unit).where(Unit.code == code)).first()
