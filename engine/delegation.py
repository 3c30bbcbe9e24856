"""Delegation (代理): a person's items worked by a colleague while they are away (DESIGN §4).

A person names a colleague who holds one of their positions (the same role at the same unit) or
the tier above it (the next role up, at the unit of that level over theirs), and a span of whole
days in Asia/Shanghai. From the first day's local midnight until the midnight after the last day
the colleague sees and works every item the person could, and each step they take records both
names. Nothing runs when it ends: access is computed from the clock each time (engine/access.py
`viewer_of`), so a delegation ends by itself. Revoking one sets `revoked_at`; rows are never
deleted, so who covered for whom stays on record.

Only the delegator's own positions pass on (a colleague covering for someone does not pass their
cover on again). The functions here change rows and flush; the caller commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.sql.elements import ColumnElement

from .clock import SHANGHAI, as_utc
from .errors import Conflict, Forbidden, Invalid, NotFound
from .models import LEVEL_OF_ROLE, TIERS, Delegation, Person, Position, Unit, UTCDateTime

MAX_DAYS = 90  # the longest span, in days: a longer absence is a change of position
AHEAD_DAYS = 366  # how far ahead the first day may be
# What `create` says of a field (the API's names: delegate, from, to). The pages show each in
# their own words, looked up by these constants.
REQUIRED = "required"
SELF = "you cannot delegate to yourself"
UNKNOWN = "no such active person"
NOT_A_COLLEAGUE = "must hold one of your positions (same role and unit) or the tier above it"
PAST = "must not be in the past"
TOO_FAR = f"must be within {AHEAD_DAYS} days from today"
BEFORE_FIRST = "must not be before the first day"
TOO_LONG = f"at most {MAX_DAYS} days"
OVERLAPS = "overlaps a delegation to this colleague"


@dataclass(frozen=True)
class Span:
    """A delegation's days, both inclusive, in Asia/Shanghai."""

    first: date
    last: date

    @property
    def starts_at(self) -> datetime:
        return as_utc(datetime.combine(self.first, time(), SHANGHAI))

    @property
    def ends_at(self) -> datetime:
        return as_utc(datetime.combine(self.last + timedelta(days=1), time(), SHANGHAI))


def span_of(delegation: Delegation) -> Span:
    """The days a stored delegation covers (its instants read back in Asia/Shanghai)."""
    first = delegation.starts_at.astimezone(SHANGHAI).date()
    last = delegation.ends_at.astimezone(SHANGHAI).date() - timedelta(days=1)
    return Span(first, last)


def today(now: datetime) -> date:
    return now.astimezone(SHANGHAI).date()


def running(now: datetime) -> ColumnElement[bool]:
    """SQL condition: delegations in force at `now` (started, not ended, not revoked)."""
    return and_(
        Delegation.revoked_at.is_(None), Delegation.starts_at <= now, Delegation.ends_at > now
    )


def status(delegation: Delegation, now: datetime) -> str:
    """revoked, ended, active or upcoming."""
    if delegation.revoked_at is not None:
        return "revoked"
    if delegation.ends_at <= now:
        return "ended"
    return "active" if delegation.starts_at <= now else "upcoming"


# ----------------------------------------------------------------------------- who may cover


def may_delegate(person: Person) -> bool:
    """Only people whose positions receive work items (the five tiers) have items to pass on."""
    return any(p.role in TIERS for p in person.positions)


def _unit_at(unit: Unit, level: str) -> Unit | None:
    """The unit at `level` over `unit` (itself if it is at that level)."""
    node: Unit | None = unit
    while node is not None and node.level != level:
        node = node.parent
    return node


def _covering_positions(person: Person) -> set[tuple[str, int]]:
    """(role, unit id) of the positions whose holders may cover for `person`: each of their tier
    positions, and the tier above it at the unit of that tier's level over theirs (a grid
    leader's district leader; an information officer's grid leader)."""
    wanted: set[tuple[str, int]] = set()
    for position in person.positions:
        if position.role not in TIERS:
            continue
        wanted.add((position.role, position.unit_id))
        index = TIERS.index(position.role)
        if index + 1 < len(TIERS):
            above = TIERS[index + 1]
            unit = _unit_at(position.unit, LEVEL_OF_ROLE[above])
            if unit is not None:
                wanted.add((above, unit.id))
    return wanted


def is_colleague(delegator: Person, held: set[tuple[str, int]]) -> bool:
    """Whether someone holding these (role, unit id) positions may cover for `delegator`."""
    return bool(_covering_positions(delegator) & held)


def eligible_delegates(session: Session, delegator: Person) -> list[Person]:
    """Active colleagues who may cover for `delegator`, by username."""
    wanted = _covering_positions(delegator)
    if not wanted:
        return []
    query = (
        select(Person)
        .join(Position, Position.person_id == Person.id)
        .where(
            Person.active,
            Person.id != delegator.id,
            or_(*[and_(Position.role == r, Position.unit_id == u) for r, u in sorted(wanted)]),
        )
        .distinct()
        .order_by(Person.username)
    )
    return list(session.scalars(query))


# ----------------------------------------------------------------------------- use cases


def check_may_delegate(person: Person) -> None:
    """Checked before what a person sent is validated (DESIGN §4)."""
    if not may_delegate(person):
        raise Forbidden("only people who hold a tier position have items to delegate")


def create(
    session: Session,
    delegator: Person,
    delegate: str | None,
    first: date | None,
    last: date | None,
    now: datetime,
) -> Delegation:
    """Delegate `delegator`'s items to the colleague `delegate` from day `first` to day `last`
    (both inclusive, Asia/Shanghai). Forbidden for someone with no items to pass on (checked
    before what they sent); Invalid with one message per field (delegate, from, to)."""
    check_may_delegate(delegator)
    problems: dict[str, str] = {}
    colleague = None
    if not delegate:
        problems["delegate"] = REQUIRED
    elif delegate == delegator.username:
        problems["delegate"] = SELF
    else:
        colleague = session.scalars(select(Person).where(Person.username == delegate)).first()
        if colleague is None or not colleague.active:
            problems["delegate"] = UNKNOWN
        elif not is_colleague(delegator, {(p.role, p.unit_id) for p in colleague.positions}):
            problems["delegate"] = NOT_A_COLLEAGUE
    if first is None:
        problems["from"] = REQUIRED
    elif first < today(now):
        problems["from"] = PAST
    elif first > today(now) + timedelta(days=AHEAD_DAYS):
        problems["from"] = TOO_FAR
    if last is None:
        problems["to"] = REQUIRED
    elif first is not None and last < first:
        problems["to"] = BEFORE_FIRST
    elif first is not None and (last - first).days + 1 > MAX_DAYS:
        problems["to"] = TOO_LONG
    if not problems:
        span = Span(first, last)
        overlapping = select(Delegation.id).where(
            Delegation.delegator == delegator.username,
            Delegation.delegate == colleague.username,
            Delegation.revoked_at.is_(None),
            Delegation.starts_at < span.ends_at,
            Delegation.ends_at > span.starts_at,
        )
        if session.scalar(overlapping.limit(1)) is not None:
            problems["from"] = OVERLAPS
    if problems:
        raise Invalid("the request has errors", problems)
    row = Delegation(
        delegator=delegator.username,
        delegate=colleague.username,
        starts_at=span.starts_at,
        ends_at=span.ends_at,
        created_at=now,
        revoked_at=None,
    )
    session.add(row)
    session.flush()
    return row


def revoke(session: Session, person: Person, delegation_id: int, now: datetime) -> Delegation:
    """End a delegation now (or cancel one not begun). Only its delegator may: its delegate sees
    it but may not (Forbidden), anyone else finds nothing (NotFound); one that is over already
    is a Conflict."""
    row = session.get(Delegation, delegation_id) if 0 < delegation_id < 2**31 else None
    if row is None or person.username not in (row.delegator, row.delegate):
        raise NotFound("no such delegation")
    if row.delegator != person.username:
        raise Forbidden("only the person who delegated may revoke a delegation")
    if status(row, now) in ("revoked", "ended"):
        raise Conflict("this delegation is over already")
    row.revoked_at = now
    session.flush()
    return row


def current(session: Session, username: str, now: datetime) -> list[Delegation]:
    """Active and upcoming delegations that `username` gave or was named in, soonest first."""
    query = (
        select(Delegation)
        .where(
            or_(Delegation.delegator == username, Delegation.delegate == username),
            Delegation.revoked_at.is_(None),
            Delegation.ends_at > now,
        )
        .order_by(Delegation.starts_at, Delegation.id)
    )
    return list(session.scalars(query))


def delegators_of(
    session: Session, delegate: str, held: set[tuple[str, int]], now: datetime
) -> list[Person]:
    """The active people `delegate` covers for at `now`, positions loaded, in one query; only
    while `delegate` still holds a colleague's position (`held`: their (role, unit id) pairs),
    so a delegation stops passing anything on when either of them moves to another post."""
    found = session.scalars(DELEGATORS, {"b_delegate": delegate, "b_now": now})
    return [p for p in found if is_colleague(p, held)]


# delegators_of's query, built once: every request's viewer asks it.
DELEGATORS = (
    select(Person)
    .join(Delegation, Delegation.delegator == Person.username)
    .where(
        Delegation.delegate == bindparam("b_delegate"),
        running(bindparam("b_now", type_=UTCDateTime)),
        Person.active,
    )
    .options(selectinload(Person.positions).joinedload(Position.unit))
    .order_by(Person.username)
    .distinct()
)


def recorded(data: dict, actor, holder: str) -> dict:
    """Event data of a step `actor` took in `holder`'s name: through a delegation, it names the
    delegator as well."""
    return {**data, "on_behalf_of": holder} if holder != actor.username else data
