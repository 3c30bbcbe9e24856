"""Who sees what and who may do what (DESIGN §4), as SQL filters and as checks on one row.

A position covers its unit and everything below it; departments see the cases they were named in;
auditors see every case. Work items are for the people holding their role at their unit.
While a delegation (代理, engine/delegation.py) runs, its delegate also sees and works what its
delegator could: a Viewer carries those positions as `covers`, computed with the clock's now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Select, and_, bindparam, exists, false, or_, select, true
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from .delegation import delegators_of
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
class Cover:
    """What a viewer holds on behalf of a delegator while a delegation runs: the delegator's tier
    positions and liaison villages, so that the viewer sees and works exactly their items."""

    delegator: str
    positions: tuple[tuple[str, int, str], ...]  # (role, unit id, unit level)
    liaises: frozenset[int] = field(default_factory=frozenset)

    def tier_positions(self) -> list[tuple[str, int]]:
        return [(role, unit) for role, unit, _l in self.positions]


@dataclass(frozen=True)
class Viewer:
    username: str
    person_id: int
    positions: tuple[tuple[str, int, str], ...]  # (role, unit id, unit level)
    liaises: frozenset[int] = field(default_factory=frozenset)
    covers: tuple[Cover, ...] = ()  # running delegations naming this viewer

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


def viewer_of(session: Session, person: Person, now: datetime | None = None) -> Viewer:
    """The person as access rules see them; with `now`, also what they cover for others then
    (without it, their own positions only)."""
    positions = tuple(sorted((p.role, p.unit_id, p.unit.level) for p in person.positions))
    covers = _covers(session, person.username, positions, now) if now is not None else ()
    return Viewer(person.username, person.id, positions, _liaises(session, person.id), covers)


def _liaises(session: Session, person_id: int) -> frozenset[int]:
    return frozenset(session.scalars(LIAISES, {"b_person": person_id}))


LIAISES = select(Liaison.village_id).where(Liaison.person_id == bindparam("b_person"))


def _covers(session: Session, username: str, positions, now: datetime) -> tuple[Cover, ...]:
    held = {(role, unit_id) for role, unit_id, _level in positions}
    covers = []
    for delegator in delegators_of(session, username, held, now):
        tier = [p for p in delegator.positions if p.role in TIERS]
        covered = tuple(sorted((p.role, p.unit_id, p.unit.level) for p in tier))
        covers.append(Cover(delegator.username, covered, _liaises(session, delegator.id)))
    return tuple(covers)


def _all_positions(viewer: Viewer):
    """The viewer's positions and those they hold on behalf of others."""
    yield from viewer.positions
    for cover in viewer.covers:
        yield from cover.positions


def lies_under(unit_id: int | None, held: set[int], parents: dict[int, int | None]) -> bool:
    """Whether one of the `held` units is the unit or above it, walking `parents` (unit id ->
    parent id, read once for many units at a time)."""
    seen: set[int] = set()
    while unit_id is not None and unit_id not in seen:
        if unit_id in held:
            return True
        seen.add(unit_id)
        unit_id = parents.get(unit_id)
    return False


def held_positions(viewer: Viewer) -> list[tuple[str, int, str]]:
    """(role, unit id, level) of every position the viewer works: their own and, while a
    delegation (代理) runs, their delegators'."""
    return list(_all_positions(viewer))


def case_scope(viewer: Viewer) -> ColumnElement[bool]:
    """SQL condition: the cases this viewer may read."""
    if viewer.is_auditor:
        return true()
    conditions = []
    for role, unit_id, level in _all_positions(viewer):
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
    for role, unit_id, level in _all_positions(viewer):
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
    # A delegate stands in for their delegators here too (they call the resident back for them).
    names = {viewer.username} | {cover.delegator for cover in viewer.covers}
    if viewer.is_auditor or (case.owner is not None and case.owner in names):
        return True
    return case.owner is None and any(
        i.task == "accept" and i.claimed_by in names for i in open_items
    )


def _liaison_ok() -> ColumnElement[bool]:
    """Town items go to the liaison leaders of the case's village, else to every town leader. A
    peer review's resolver does not count (DESIGN §2.5: "a town leader other than the resolver
    where there is one"): when they are the village's only liaison, every other town leader
    reviews."""
    return ~exists(other_liaisons(WorkItem.village_id, WorkItem.excluded))


def other_liaisons(village_id, excluded) -> Select:
    """SELECT the active liaison leaders of a village but the `excluded` username (either may be
    a column of the enclosing query, or a value). A deactivated leader keeps their liaison rows,
    so that reactivating restores them, and no longer counts: the village's town items go to
    the other town leaders meanwhile."""
    # Aliases of their own, so that a query around this never correlates them with its own.
    liaison, person = aliased(Liaison), aliased(Person)
    if excluded is None:
        but = true()
    elif isinstance(excluded, str):
        but = person.username != excluded
    else:
        but = or_(excluded.is_(None), person.username != excluded)
    # Tied to the work item around it however deep this sits (SQLAlchemy correlates only with
    # the query directly around a subquery; coverage.py nests it two levels down).
    return (
        select(liaison.person_id)
        .join(person, person.id == liaison.person_id)
        .where(liaison.village_id == village_id, person.active, but)
        .correlate(WorkItem)
    )


def inbox_scope(viewer: Viewer) -> ColumnElement[bool]:
    """SQL condition: the work items shown in this viewer's inbox (open or not): their own, and
    while a delegation runs, their delegators'."""
    own = _items_of(viewer.username, viewer.tier_positions(), viewer.liaises, viewer.username)
    if not viewer.covers:
        return own
    covered = [
        _items_of(c.delegator, c.tier_positions(), c.liaises, viewer.username)
        for c in viewer.covers
    ]
    return or_(own, *covered)


def _items_of(
    username: str, positions: list[tuple[str, int]], liaises: frozenset[int], actor: str
) -> ColumnElement[bool]:
    """SQL condition: the items `username` may work with these positions, when `actor` works
    them (a peer review excludes the resolver, whoever's items they cover)."""
    by_position = [
        and_(WorkItem.role == role, WorkItem.unit_id == unit) for role, unit in positions
    ]
    town = or_(
        WorkItem.role != "town_leadership",
        WorkItem.village_id.in_(liaises) if liaises else false(),
        _liaison_ok(),
    )
    if not by_position:
        return false()
    # An owner task (feedback) is its owner's while they serve its role at its unit: a person's
    # positions are the active positions they hold, so `mine` needs no lookup. An owner who was
    # deactivated or moved to another grid no longer lists it (they could not open its case);
    # it goes to the people of its role and unit (the grid's information officers) until an
    # administrator names a new owner (DESIGN §4). Never NULL, so that it can be negated.
    mine = and_(WorkItem.assignee.is_not(None), WorkItem.assignee == username, or_(*by_position))
    orphaned = and_(WorkItem.assignee.is_not(None), or_(*by_position), ~assignee_serves())
    shared = and_(
        WorkItem.assignee.is_(None),
        or_(*by_position),
        or_(WorkItem.excluded.is_(None), WorkItem.excluded.not_in(sorted({username, actor}))),
        town,
    )
    return or_(mine, shared, orphaned)


def assignee_serves() -> ColumnElement[bool]:
    """SQL condition on a work item: its assignee is active and holds its role at its unit."""
    return exists(
        select(Position.id)
        .join(Person, Person.id == Position.person_id)
        .where(
            Person.username == WorkItem.assignee,
            Person.active,
            Position.role == WorkItem.role,
            Position.unit_id == WorkItem.unit_id,
        )
    )


def may_act(session: Session, viewer: Viewer, item: WorkItem) -> bool:
    """inbox_scope for one loaded item: whether this viewer may claim or complete it."""
    return acting_for(session, viewer, item) is not None


def acting_for(session: Session, viewer: Viewer, item: WorkItem) -> str | None:
    """Whose rights let this viewer work the item: their own username, the username of a
    delegator they cover for (the one holding the item, if one does), or None."""
    rights = [(viewer.username, viewer.tier_positions(), viewer.liaises)] + [
        (c.delegator, c.tier_positions(), c.liaises) for c in viewer.covers
    ]
    allowed = [
        name
        for name, positions, liaises in rights
        if _may_work(session, item, name, positions, liaises, viewer.username)
    ]
    if not allowed:
        return None
    return item.claimed_by if item.claimed_by in allowed else allowed[0]


def _may_work(
    session: Session,
    item: WorkItem,
    username: str,
    positions: list[tuple[str, int]],
    liaises: frozenset[int],
    actor: str,
) -> bool:
    if item.assignee is not None:  # an owner task: see _items_of
        if (item.role, item.unit_id) not in positions:
            return False
        return item.assignee == username or not _serves(session, item)
    if (item.role, item.unit_id) not in positions or item.excluded in (username, actor):
        return False
    if item.role == "town_leadership" and item.village_id not in liaises:
        return not session.scalar(select(exists(other_liaisons(item.village_id, item.excluded))))
    return True


def _serves(session: Session, item: WorkItem) -> bool:
    """assignee_serves for one loaded item."""
    holds = (
        select(Position.id)
        .join(Person, Person.id == Position.person_id)
        .where(
            Person.username == item.assignee,
            Person.active,
            Position.role == item.role,
            Position.unit_id == item.unit_id,
        )
    )
    return bool(session.scalar(select(exists(holds))))


def eligible_town_leaders(
    session: Session, village_id: int, town_id: int, excluded: str | None = None
) -> list[str]:
    """Active town leaders who would see a town item of this village that excludes `excluded`
    (a peer review's resolver): the village's other liaison leaders, else every other one."""
    liaisons = other_liaisons(village_id, excluded)
    query = (
        select(Person.username)
        .join(Position, Position.person_id == Person.id)
        .where(Position.role == "town_leadership", Position.unit_id == town_id, Person.active)
    )
    if excluded is not None:
        query = query.where(Person.username != excluded)
    if session.scalar(select(exists(liaisons))):
        query = query.where(Person.id.in_(liaisons))
    return list(session.scalars(query))


def unit_by_code(session: Session, code: str) -> Unit | None:
    return session.scalars(select(Unit).where(Unit.code == code)).first()
