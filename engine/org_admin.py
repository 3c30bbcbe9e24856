"""What administrators change about people between imports of the organisation file: deactivate
and reactivate a person, reset a password, move a position, and hand a deactivated owner's open
cases to another information officer of the grid.

Each change is one call that writes its rows and its administration-log entry
(engine/admin_log.py) in the caller's transaction, which the caller commits; nothing here
commits. Deactivation is engine/org.py's own (sessions and tokens end, claims go back to the
colleagues with a `released` event), so a person leaves the same way whether the file dropped
them or an administrator did. A person deactivated here keeps their positions, so reactivating
gives them back; the next import of the file, which is the source of truth, decides again.

An owner change is a case step without a workflow move, written like a claim or a release
(engine/projection.py): the events on the case's chain, then the case row under its version
check. Replay applies `owner_changed` to the rebuilt rows (engine/replay.py), so the case replays.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from . import admin_log, projection
from .errors import Conflict, Invalid, NotFound
from .models import LEVEL_OF_ROLE, Case, Person, Position, Unit, WorkItem
from .org import _Plan, _Sync
from .passwords import Passwords
from .specs import OPEN_STATUSES

# Roles held at one unit by one person at most, as the organisation file writes them (`leader:`,
# `secretary:`): moving someone onto a unit that has one already would make a file nobody can
# export. Town-level roles (leaders, auditors, administrators) have one unit: the town.
SINGLE = frozenset({"grid_leader", "district_leader", "village_secretary"})
MOVABLE = frozenset({"info_officer", "grid_leader", "district_leader", "village_secretary",
                     "department_officer"})  # fmt: skip
# A temporary password: easy to read out over the phone (no 0/O, 1/l/I), 12 characters.
ALPHABET = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789"
TEMPORARY_LENGTH = 12
# engine/org.py's import does the deactivating and releasing (one way out for everyone); those
# steps set no password, so its hasher is never used.
_NO_PASSWORDS = Passwords(cheap=True)
# What a refused move or reassignment says (as the field's message too).
CANNOT_MOVE = "this position cannot be moved"
NOT_THAT_LEVEL = "the position can move only to an active unit of its level"
HELD_THERE = "the person holds this position there already"
TAKEN = "that unit has one already: move or deactivate its holder first"
NOT_AN_OFFICER = "choose an active information officer of the case's grid"


def person_named(session: Session, username: str) -> Person:
    person = session.scalars(select(Person).where(Person.username == username)).first()
    if person is None:
        raise NotFound("no such person")
    return person


# --------------------------------------------------------------------------------- people


@dataclass(frozen=True)
class Deactivated:
    claims_released: int
    open_cases_owned: int  # now listed for reassignment (engine/coverage.py)


def deactivate(session: Session, now: datetime, actor: str, username: str) -> Deactivated:
    """The person can no longer sign in; their sessions and tokens end and their claimed items go
    back to their colleagues, exactly as when a re-imported file leaves them out."""
    person = person_named(session, username)
    if not person.active:
        raise Conflict("this person is already deactivated")
    if username == actor:
        raise Conflict("you cannot deactivate yourself")
    if _is_admin(person) and _active_admins(session) <= 1:
        raise Conflict("the last active administrator cannot be deactivated")
    sync = _Sync(session, _Plan(), _NO_PASSWORDS, False, now)
    sync.people = {person.username: person}  # everyone not in the (empty) plan: just them
    sync.deactivate_missing_people()
    owned = _open_cases_owned(session, username)
    admin_log.record(
        session,
        now,
        actor,
        "person_deactivated",
        {
            "username": username,
            "claims_released": sync.report.claims_released,
            "open_cases_owned": owned,
        },
    )
    session.flush()
    return Deactivated(sync.report.claims_released, owned)


def reactivate(session: Session, now: datetime, actor: str, username: str) -> None:
    """The person may sign in again, with the positions they kept (a person the file dropped
    holds none: the file gives them back)."""
    person = person_named(session, username)
    if person.active:
        raise Conflict("this person is already active")
    person.active = True
    admin_log.record(
        session,
        now,
        actor,
        "person_reactivated",
        {"username": username, "positions": len(person.positions)},
    )
    session.flush()


def reset_password(
    session: Session, now: datetime, actor: str, username: str, passwords: Passwords
) -> str:
    """Give the person a new random password and return it (shown once, to hand over): it is
    an initial password, so the pages ask them for their own at the next sign-in; every session
    and token they had ends."""
    person = person_named(session, username)
    temporary = "".join(secrets.choice(ALPHABET) for _ in range(TEMPORARY_LENGTH))
    person.password_hash = passwords.hash(temporary)
    person.password_initial = True
    person.end_sessions()
    admin_log.record(session, now, actor, "password_reset", {"username": username})
    session.flush()
    return temporary


def move_position(
    session: Session,
    now: datetime,
    actor: str,
    username: str,
    role: str,
    from_code: str,
    to_code: str,
) -> int:
    """Move the person's `role` at one unit to another unit of the same level (an officer to
    another grid). Items they had claimed at the old unit go back to its people, as they can no
    longer work them; returns how many. Cases they own in the old grid stay theirs until an
    administrator reassigns them (engine/coverage.py lists them)."""
    person = person_named(session, username)
    position = next(
        (p for p in person.positions if p.role == role and p.unit.code == from_code), None
    )
    if position is None:
        raise NotFound("this person holds no such position")
    if role not in MOVABLE:
        raise Invalid(CANNOT_MOVE, {"role": CANNOT_MOVE})
    target = session.scalars(select(Unit).where(Unit.code == to_code, Unit.active)).first()
    if target is None or target.level != LEVEL_OF_ROLE[role]:
        raise Invalid(NOT_THAT_LEVEL, {"to": NOT_THAT_LEVEL})
    if target.id == position.unit_id or any(
        p.role == role and p.unit_id == target.id for p in person.positions
    ):
        raise Invalid(HELD_THERE, {"to": HELD_THERE})
    if role in SINGLE:
        holder = session.scalars(
            select(Person.username)
            .join(Position, Position.person_id == Person.id)
            .where(Position.role == role, Position.unit_id == target.id)
        ).first()
        if holder is not None:
            held_by = f"{TAKEN}: {holder}"
            raise Invalid(TAKEN, {"to": held_by})
    old_unit = position.unit_id
    position.unit_id, position.unit = target.id, target
    session.flush()
    released = _release_claims(session, now, username, role, old_unit)
    admin_log.record(
        session,
        now,
        actor,
        "position_moved",
        {
            "username": username,
            "role": role,
            "from": from_code,
            "to": to_code,
            "claims_released": released,
        },
    )
    session.flush()
    return released


def _release_claims(session: Session, now: datetime, username: str, role: str, unit: int) -> int:
    """Give back the person's claimed open items of `role` at `unit`, as a deactivation does."""
    items = session.scalars(
        select(WorkItem).where(
            WorkItem.claimed_by == username,
            WorkItem.role == role,
            WorkItem.unit_id == unit,
            WorkItem.assignee.is_(None),
            WorkItem.completed_at.is_(None),
        )
    ).all()
    sync = _Sync(session, _Plan(), _NO_PASSWORDS, False, now)
    for item in items:
        sync.release(item)
    return len(items)


def _is_admin(person: Person) -> bool:
    return any(p.role == "admin" for p in person.positions)


def _active_admins(session: Session) -> int:
    return session.scalar(
        select(func.count(func.distinct(Person.id)))
        .join(Position, Position.person_id == Person.id)
        .where(Position.role == "admin", Person.active)
    )


def _open_cases_owned(session: Session, username: str) -> int:
    return session.scalar(
        select(func.count()).where(Case.owner == username, Case.status.in_(OPEN_STATUSES))
    )


# --------------------------------------------------------------------------------- owners


def officers_of_grid(session: Session, grid_id: int) -> list[Person]:
    """The grid's active information officers: whom a case of the grid may be handed to."""
    return list(
        session.scalars(
            select(Person)
            .join(Position, Position.person_id == Person.id)
            .where(Position.role == "info_officer", Position.unit_id == grid_id, Person.active)
            .order_by(Person.username)
        )
    )


def reassign_owner(session: Session, now: datetime, actor: str, number: str, to: str) -> Case:
    """Name `to` the owner of an open case whose owner was deactivated or no longer serves its
    grid (首接负责 moves to another officer of the grid). On the case's chain: a `released` event
    for each owner item someone else had claimed, then `owner_changed` {from, to}; the owner's
    open items (feedback) are assigned to the new owner. The administration log records it too."""
    case = session.scalars(select(Case).where(Case.number == number)).first()
    if case is None:
        raise NotFound("no such case")
    if case.status not in OPEN_STATUSES:
        raise Conflict("the case is closed")
    if case.owner is None:
        raise Conflict("the case has no owner yet")
    if owner_serves(session, case.owner, case.grid_id):
        raise Conflict("the owner is active and serves the grid: nothing to reassign")
    officer = session.scalars(select(Person).where(Person.username == to)).first()
    if officer is None or officer not in officers_of_grid(session, case.grid_id):
        raise Invalid(NOT_AN_OFFICER, {"to": NOT_AN_OFFICER})
    try:
        _write_owner(session, now, actor, case, to)
    except projection.StaleCase as exc:
        raise Conflict("the case changed meanwhile; try again") from exc
    session.expire(case)  # written past the ORM
    for item in list(session.identity_map.values()):
        if isinstance(item, WorkItem) and item.case_id == case.id:
            session.expire(item)
    return case


def _write_owner(session: Session, now: datetime, actor: str, case: Case, to: str) -> None:
    """The owner change as a step writes it: items, then each event with the case row's
    version-checked UPDATE (projection.touch), so a step racing it raises StaleCase."""
    row = projection.case_row(session, case.id)
    before = row.owner
    held = session.execute(
        select(WorkItem.id, WorkItem.task, WorkItem.claimed_by).where(
            WorkItem.case_id == case.id,
            WorkItem.completed_at.is_(None),
            WorkItem.assignee.is_not(None),
        )
    ).all()
    for item_id, task, claimed_by in held:
        if claimed_by is not None and claimed_by != to:
            projection.set_item(session, item_id, claimed_by=None, claimed_at=None)
            data = {"work_item": item_id, "from": claimed_by, "reason": "owner_changed"}
            projection.touch(session, row, now, actor, ("released", task, data))
    session.connection().execute(
        update(WorkItem)
        .where(
            WorkItem.case_id == case.id,
            WorkItem.completed_at.is_(None),
            WorkItem.assignee.is_not(None),
        )
        .values(assignee=to)
    )
    session.connection().execute(update(Case).where(Case.id == case.id).values(owner=to))
    projection.touch(session, row, now, actor, ("owner_changed", None, {"from": before, "to": to}))
    admin_log.record(
        session,
        now,
        actor,
        "owner_changed",
        {"case": case.number, "from": before, "to": to, "items": len(held)},
    )


def owner_serves(session: Session, username: str, grid_id: int) -> bool:
    """Whether the owner is active and still an information officer of the case's grid."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Position)
            .join(Person, Person.id == Position.person_id)
            .where(
                Person.username == username,
                Person.active,
                Position.role == "info_officer",
                Position.unit_id == grid_id,
            )
        )
        > 0
    )
