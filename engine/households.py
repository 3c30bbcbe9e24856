"""A grid's household register (DESIGN §9, §12): each household's number, head, phone and whether a
representative has joined the grid's group chat (一户一代表), read by everyone whose positions
cover the grid and kept up by the grid's own officers.

The organisation file (engine/org.py) lays the register down; the grid's information officers and
its leader then add the households it lacks and keep heads, phones and group marks current, on a
phone, while they walk the grid. On the next import the file wins for the households it lists, and
those an officer added (`added_by` set) stay. Who may read follows unit coverage like cases do
(DESIGN §4): a position covers its unit and everything below it, auditors read every grid, and a
department covers none, so a grid outside the caller's units is NotFound, as if it did not exist.
Only the grid's own officers and leader edit it: the people who know its households. Phones are
stored as digits and shown masked (engine/privacy.py) wherever the register is shown.

The functions here read, or change rows and flush; the caller commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .access import Viewer, lies_under
from .errors import Conflict, Forbidden, Invalid, NotFound
from .models import Household, Unit, Visit
from .org import MAX_HOUSEHOLD_NUMBER, MAX_HOUSEHOLDS
from .privacy import PHONE_MAX_DIGITS, PHONE_MIN_DIGITS, mask_phone, phone_digits

# The positions that keep a grid's register: its information officers and its leader.
EDITORS = ("info_officer", "grid_leader")
MAX_HEAD = 100  # household.head
# What the checks say of a field (the adapters show each in the page's words, by these values).
REQUIRED = "required"
NOT_A_NUMBER = f"must be a whole number from 1 to {MAX_HOUSEHOLD_NUMBER}"
TAKEN = "another household of this grid has this number"
TOO_LONG = f"at most {MAX_HEAD} characters"
NOT_A_PHONE = f"must be a phone number of {PHONE_MIN_DIGITS} to {PHONE_MAX_DIGITS} digits"
FULL = f"the grid has {MAX_HOUSEHOLDS} households already"
FROM_FILE = "this household comes from the organisation file; it is removed there"
VISITED = "a campaign visit names this household; it stays as proof of coverage"


class _Keep:
    """The phone an edit leaves as it is (the form's phone field is left empty)."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()


@dataclass(frozen=True)
class Entry:
    """One household as the register shows it. `phone` is the stored number: show `masked`."""

    number: int
    head: str | None
    phone: str | None
    in_group: bool
    added_by: str | None  # None: from the organisation file

    @property
    def masked(self) -> str:
        return mask_phone(self.phone)


@dataclass(frozen=True)
class Register:
    """A grid's households in number order, and whether the viewer may edit them."""

    grid: Unit
    entries: list[Entry]
    may_edit: bool

    @property
    def total(self) -> int:
        return len(self.entries)

    @property
    def in_group(self) -> int:
        return sum(1 for e in self.entries if e.in_group)

    @property
    def next_number(self) -> int:
        """The number a new household most likely gets: one past the highest."""
        return min(max((e.number for e in self.entries), default=0) + 1, MAX_HOUSEHOLD_NUMBER)


@dataclass(frozen=True)
class GridCount:
    """A grid the viewer covers, with its households and how many are in the group."""

    code: str
    name: str
    total: int
    in_group: int


# ------------------------------------------------------------------ who may


def _held_units(viewer: Viewer) -> set[int]:
    """The units of the viewer's positions, those held on behalf of a delegator included, as
    case coverage counts them (auditor and admin positions open no units)."""
    positions = list(viewer.positions) + [p for c in viewer.covers for p in c.positions]
    return {unit for role, unit, _level in positions if role not in ("auditor", "admin")}


def may_see(viewer: Viewer, grid: Unit) -> bool:
    """Whether the viewer's positions cover the grid: one of their units is the grid or above
    it. Auditors read every grid; a department is above no grid."""
    if viewer.is_auditor:
        return True
    held, node = _held_units(viewer), grid
    while node is not None:
        if node.id in held:
            return True
        node = node.parent
    return False


def may_edit(viewer: Viewer, grid: Unit) -> bool:
    """The grid's own information officers and leader keep its register (by their own
    positions: a delegation passes work items on, not the register)."""
    return any(role in EDITORS and unit == grid.id for role, unit, _l in viewer.positions)


def visible_grid(session: Session, viewer: Viewer, code: str) -> Unit:
    """The active grid `code` names, if the viewer covers it; NotFound otherwise, whether it
    exists or not (DESIGN §4)."""
    grid = session.scalars(select(Unit).where(Unit.code == code)).first()
    if grid is None or grid.level != "grid" or not grid.active or not may_see(viewer, grid):
        raise NotFound("no such grid")
    return grid


def _editable_grid(session: Session, viewer: Viewer, code: str) -> Unit:
    """The grid, for a change: NotFound outside the viewer's units, Forbidden for those who may
    read it but not keep it, before anything they sent is looked at."""
    grid = visible_grid(session, viewer, code)
    if not may_edit(viewer, grid):
        raise Forbidden("only the grid's officers and leader keep its households")
    return grid


# ------------------------------------------------------------------ reading


def _entry(row: Household) -> Entry:
    return Entry(row.number, row.head, row.phone, bool(row.in_group), row.added_by)


def _rows(session: Session, grid: Unit) -> list[Household]:
    return list(
        session.scalars(
            select(Household).where(Household.grid_id == grid.id).order_by(Household.number)
        )
    )


def read_register(session: Session, viewer: Viewer, code: str) -> Register:
    """The grid's register for a viewer who covers it (NotFound otherwise)."""
    grid = visible_grid(session, viewer, code)
    entries = [_entry(row) for row in _rows(session, grid)]
    return Register(grid, entries, may_edit(viewer, grid))


def grids_of(session: Session, viewer: Viewer) -> list[GridCount]:
    """Every active grid the viewer covers, in code order, with its counts: one query for the
    grids and one grouped count, whatever the size of the township."""
    grids = list(
        session.scalars(select(Unit).where(Unit.level == "grid", Unit.active).order_by(Unit.code))
    )
    if not viewer.is_auditor:
        held = _held_units(viewer)
        parents = dict(session.execute(select(Unit.id, Unit.parent_id)).tuples().all())
        grids = [g for g in grids if lies_under(g.id, held, parents)]
    if not grids:
        return []
    counts = {
        grid_id: (total, joined or 0)
        for grid_id, total, joined in session.execute(
            select(
                Household.grid_id,
                func.count(),
                func.sum(case((Household.in_group, 1), else_=0)),
            ).group_by(Household.grid_id)
        )
    }
    return [GridCount(g.code, g.name, *counts.get(g.id, (0, 0))) for g in grids]


def own_grids(viewer: Viewer) -> list[int]:
    """The ids of the grids where the viewer keeps the register (for the menu and the landing
    of the household pages)."""
    return sorted({unit for role, unit, _l in viewer.positions if role in EDITORS})


# ------------------------------------------------------------------ changing


def _number(value: Any, problems: dict[str, str]) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        problems["number"] = REQUIRED
        return None
    if isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) <= 10:
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        problems["number"] = NOT_A_NUMBER
        return None
    if not 1 <= value <= MAX_HOUSEHOLD_NUMBER:
        problems["number"] = NOT_A_NUMBER
        return None
    return value


def _head(value: Any, problems: dict[str, str]) -> str | None:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        problems["head"] = REQUIRED
    elif len(text) > MAX_HEAD:
        problems["head"] = TOO_LONG
    else:
        return text
    return None


def _phone(value: Any, problems: dict[str, str]) -> str | None:
    """The phone's digits; None for no phone (an empty value)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    digits = phone_digits(value) if isinstance(value, str) else None
    if digits is None:
        problems["phone"] = NOT_A_PHONE
    return digits


def _flush(session: Session) -> None:
    """Write the change now, so a number another officer took meanwhile is this caller's 400
    (the unique constraint), not a failed commit. The session is rolled back then."""
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Invalid("the household has errors", {"number": TAKEN}) from None


def _count_one_more(session: Session, grid: Unit) -> None:
    """Keep the grid's household count (Unit.households, shown on the organisation pages) equal
    to its rows. An increment in SQL, not a recount: two officers adding at once on PostgreSQL
    each count without the other's uncommitted row, and one of them would be lost."""
    session.execute(
        update(Unit)
        .where(Unit.id == grid.id)
        .values(households=Unit.households + 1)
        .execution_options(synchronize_session=False)
    )
    session.expire(grid, ["households"])


def add_household(
    session: Session,
    viewer: Viewer,
    code: str,
    *,
    number: Any,
    head: Any,
    phone: Any = None,
    in_group: bool = False,
) -> Entry:
    """An officer or the leader of the grid adds a household: its number (unique in the grid),
    its head (required), a phone (optional, digits) and whether it is in the group. It stays
    through re-imports of a file that does not list it. Invalid, with one message per field,
    changes nothing."""
    grid = _editable_grid(session, viewer, code)
    problems: dict[str, str] = {}
    value = _number(number, problems)
    name = _head(head, problems)
    digits = _phone(phone, problems)
    rows = _rows(session, grid)
    if value is not None and any(row.number == value for row in rows):
        problems["number"] = TAKEN
    elif value is not None and len(rows) >= MAX_HOUSEHOLDS:
        problems["number"] = FULL
    if problems:
        raise Invalid("the household has errors", problems)
    row = Household(
        grid_id=grid.id,
        number=value,
        head=name,
        phone=digits,
        in_group=bool(in_group),
        added_by=viewer.username,
    )
    session.add(row)
    _flush(session)
    _count_one_more(session, grid)
    return _entry(row)


def _household(session: Session, grid: Unit, number: int) -> Household:
    if not 1 <= number <= MAX_HOUSEHOLD_NUMBER:  # no such row; and PostgreSQL's INTEGER is 32 bits
        raise NotFound("no such household")
    row = session.scalars(
        select(Household).where(Household.grid_id == grid.id, Household.number == number)
    ).first()
    if row is None:
        raise NotFound("no such household")
    return row


def edit_household(
    session: Session,
    viewer: Viewer,
    code: str,
    number: int,
    *,
    head: Any,
    phone: Any = KEEP,
    in_group: bool,
) -> Entry:
    """The grid's officer or leader corrects a household: its head, its phone (KEEP leaves it,
    None or "" removes it) and its group mark. The number stays (it is how visits and cases name
    the household). NotFound for a household the grid does not have."""
    grid = _editable_grid(session, viewer, code)
    row = _household(session, grid, number)
    problems: dict[str, str] = {}
    name = _head(head, problems)
    digits = row.phone if phone is KEEP else _phone(phone, problems)
    if problems:
        raise Invalid("the household has errors", problems)
    row.head, row.phone, row.in_group = name, digits, bool(in_group)
    _flush(session)
    return _entry(row)


def remove_household(session: Session, viewer: Viewer, code: str, number: int) -> Entry:
    """The grid's officer or leader removes a household added in Gridloop by mistake. One the
    organisation file brought is the file's to remove (Conflict); one an officer added and a
    later file also lists can still be removed here, and that file's next import brings it back.
    One a campaign visit names stays: the visit is proof of coverage (Conflict, also when the
    visit is recorded while this runs). NotFound for a household the grid does not have."""
    grid = _editable_grid(session, viewer, code)
    row = _household(session, grid, number)
    if row.added_by is None:
        raise Conflict(FROM_FILE)
    if session.scalar(select(Visit.id).where(Visit.household_id == row.id).limit(1)):
        raise Conflict(VISITED)
    entry = _entry(row)
    try:
        with session.begin_nested():  # a visit committed meanwhile: its foreign key refuses
            session.delete(row)
    except IntegrityError:
        raise Conflict(VISITED) from None
    session.execute(
        update(Unit)
        .where(Unit.id == grid.id)
        .values(households=Unit.households - 1)
        .execution_options(synchronize_session=False)
    )
    session.expire(grid, ["households"])
    return entry


def set_in_group(session: Session, viewer: Viewer, code: str, number: int, in_group: bool) -> Entry:
    """One tap: mark a household as in the group chat, or not. Setting (not flipping) it, so a
    form sent twice leaves it as the officer meant."""
    grid = _editable_grid(session, viewer, code)
    row = _household(session, grid, number)
    row.in_group = bool(in_group)
    _flush(session)
    return _entry(row)


def as_json(entries: Iterable[Entry]) -> list[dict[str, Any]]:
    """The API's items (DESIGN §12): number, head, the phone masked (null when none), in_group."""
    return [
        {"number": e.number, "head": e.head, "phone": e.masked or None, "in_group": e.in_group}
        for e in entries
    ]
