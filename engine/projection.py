"""The projection: a step's outcome (engine/step.py) written to the tables with SQLAlchemy Core.

What a step wrote, in order: the work items it closed and made ready, the supervision marks on
items (and whom they told, work_item_watch), the hash-chained events, the timer rows, and last
the case row, whose UPDATE carries the version check (`WHERE version = :read`); a lost race
raises StaleCase and the service retries.
Every statement is built once, at import: SQLAlchemy then only binds parameters. An UPDATE built
without .values() sets the columns its parameters name. Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    String,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from . import campaigns, casefacts, notify
from .access import eligible_town_leaders
from .clock import iso
from .events import GENESIS, chained_rows
from .models import (
    LEVEL_OF_ROLE,
    NO_DEADLINE,
    Case,
    CaseEvent,
    DiagramVersion,
    Timer,
    Unit,
    WorkItem,
    WorkItemWatch,
    case_unit,
)
from .specs import PROCESS_ID, Spec, TaskInfo
from .step import Outcome, Ready, Supervision

CASES, ITEMS, EVENTS, TIMERS, UNITS, WATCH = (
    Case.__table__,
    WorkItem.__table__,
    CaseEvent.__table__,
    Timer.__table__,
    Unit.__table__,
    WorkItemWatch.__table__,
)
# A case as a step reads it: every column but the workflow blob, and its version's hash.
CASE_ROW = select(
    *[c for c in CASES.c if c.name != "workflow"], DiagramVersion.sha256.label("diagram_sha")
).join(DiagramVersion, DiagramVersion.id == CASES.c.diagram_id)
# An item and its case in one SELECT: a case read after the item could be newer than it.
ITEM_AND_CASE = CASE_ROW.add_columns(*[c.label(f"item_{c.name}") for c in ITEMS.c]).join(
    ITEMS, ITEMS.c.case_id == CASES.c.id
)
CASE_BY_ID = CASE_ROW.where(CASES.c.id == bindparam("b_case"))
ITEM_BY_ID = ITEM_AND_CASE.where(ITEMS.c.id == bindparam("b_item"))
BLOB = select(CASES.c.workflow).where(CASES.c.id == bindparam("b_case"))
INSERT_CASE = insert(CASES).returning(CASES.c.id)
UPDATE_CASE = update(CASES).where(
    CASES.c.id == bindparam("b_case"), CASES.c.version == bindparam("b_version")
)
INSERT_ITEM = insert(ITEMS).returning(ITEMS.c.id)
UPDATE_ITEM = update(ITEMS).where(ITEMS.c.id == bindparam("b_item"))
# A step's closed items: its case's still-open items among the task ids it closed. Both UPDATEs
# return the items they closed and whether each was supervised: only those have watch rows to
# delete, so a step that closes unsupervised items (nearly every step) runs no other statement.
CLOSING = (
    ITEMS.c.case_id == bindparam("b_case"),
    ITEMS.c.task_id.in_(bindparam("b_tasks", expanding=True)),
    ITEMS.c.completed_at.is_(None),
)
CLOSE_ITEMS = (
    update(ITEMS)
    .where(*CLOSING)
    .values(completed_at=bindparam("b_now"), cancelled=ITEMS.c.completed_by.is_(None))
    .returning(ITEMS.c.id, ITEMS.c.supervised_at)
)
# The same, when a step completed one of them (`b_done`, by `b_actor`): that one is completed,
# claimed if it was not, and not cancelled; SET reads the row as it was before the UPDATE.
COMPLETE_AND_CLOSE = (
    update(ITEMS)
    .where(*CLOSING)
    .values(
        completed_at=bindparam("b_now"),
        completed_by=case(
            (ITEMS.c.id == bindparam("b_done"), bindparam("b_actor", type_=String)),
            else_=ITEMS.c.completed_by,
        ),
        claimed_by=case(
            (
                ITEMS.c.id == bindparam("b_done"),
                func.coalesce(ITEMS.c.claimed_by, bindparam("b_holder", type_=String)),
            ),
            else_=ITEMS.c.claimed_by,
        ),
        cancelled=and_(ITEMS.c.id != bindparam("b_done"), ITEMS.c.completed_by.is_(None)),
    )
    .returning(ITEMS.c.id, ITEMS.c.supervised_at)
)
OPEN_DUES = select(ITEMS.c.due_at).where(
    ITEMS.c.case_id == bindparam("b_case"),
    ITEMS.c.task_id.in_(bindparam("b_tasks", expanding=True)),
    ITEMS.c.completed_at.is_(None),
    ITEMS.c.due_at.is_not(None),
)
ITEM_OF_TASK = (
    select(ITEMS)
    .where(ITEMS.c.case_id == bindparam("b_case"), ITEMS.c.task_id == bindparam("b_task"))
    .limit(1)
)
# A case whose timers may be due: its row, whether a timer is due, and (when the process does not
# hold the workflow) the blob, in one SELECT: a burst of due timers is mostly such reads.
DUE_CASE = CASE_BY_ID.add_columns(
    exists()
    .where(TIMERS.c.case_id == CASES.c.id, TIMERS.c.due_at <= bindparam("b_now"))
    .label("timer_due")
)
DUE_CASE_AND_BLOB = DUE_CASE.add_columns(CASES.c.workflow)
DELETE_TIMERS = delete(TIMERS).where(TIMERS.c.case_id == bindparam("b_case"))
INSERT_TIMERS = insert(TIMERS)
INSERT_EVENTS = insert(EVENTS)
INSERT_WATCH = insert(WATCH)
DELETE_WATCH = delete(WATCH).where(WATCH.c.item_id.in_(bindparam("b_items", expanding=True)))

# Opening a case: the live diagram version (the one activated last), and a grid with the units
# above it, in one SELECT each.
LIVE_VERSION = (
    select(DiagramVersion.id, DiagramVersion.sha256)
    .where(
        DiagramVersion.process_id == bindparam("b_process"),
        DiagramVersion.activated_at.is_not(None),
    )
    .order_by(DiagramVersion.activated_at.desc(), DiagramVersion.id.desc())
    .limit(1)
)
UNIT_CODES = select(UNITS.c.id, UNITS.c.code).where(
    UNITS.c.id.in_(bindparam("b_units", expanding=True))
)
_GRID, _DISTRICT, _VILLAGE, _TOWN = (aliased(Unit) for _ in range(4))
GRID_CHAIN = (
    select(
        _GRID.id.label("grid_id"),
        _DISTRICT.id.label("district_id"),
        _VILLAGE.id.label("village_id"),
        _TOWN.id.label("town_id"),
        _TOWN.code.label("town_code"),
    )
    .join(_DISTRICT, _DISTRICT.id == _GRID.parent_id)
    .join(_VILLAGE, _VILLAGE.id == _DISTRICT.parent_id)
    .join(_TOWN, _TOWN.id == _VILLAGE.parent_id)
    .where(_GRID.code == bindparam("b_code"), _GRID.level == "grid", _GRID.active)
)

Event = tuple[str, str | None, dict]


class StaleCase(Exception):
    """The case's version moved between reading it and writing it: another step won."""


# ----------------------------------------------------------------------------- reading


def case_row(session: Session, case_id: int) -> SimpleNamespace | None:
    row = session.connection().execute(CASE_BY_ID, {"b_case": case_id}).first()
    return SimpleNamespace(**row._mapping) if row is not None else None


def item_and_case(session: Session, item_id: int) -> tuple[Any, SimpleNamespace] | None:
    """A work item and its case as plain rows (attribute access, like the models)."""
    row = session.connection().execute(ITEM_BY_ID, {"b_item": item_id}).first()
    if row is None:
        return None
    fields = row._mapping
    item = SimpleNamespace(**{c.name: fields[f"item_{c.name}"] for c in ITEMS.c})
    case = SimpleNamespace(**{k: v for k, v in fields.items() if not k.startswith("item_")})
    return item, case


def live_version(session: Session, process_id: str):
    """(id, sha256) of the newest version of a process, or None."""
    return session.connection().execute(LIVE_VERSION, {"b_process": process_id}).first()


def grid_chain(session: Session, code: str):
    """An active grid's id and its district's, village's and town's (and the town's code)."""
    return session.connection().execute(GRID_CHAIN, {"b_code": code}).first()


def blob(session: Session, case_id: int) -> str:
    return session.connection().scalar(BLOB, {"b_case": case_id})


def due_case(
    session: Session, case_id: int, now: datetime, with_blob: bool
) -> tuple[SimpleNamespace, bool, str | None] | None:
    """A case as `case_row` reads it, whether one of its timers is due at `now`, and its stored
    workflow if asked for."""
    query = DUE_CASE_AND_BLOB if with_blob else DUE_CASE
    row = session.connection().execute(query, {"b_case": case_id, "b_now": now}).first()
    if row is None:
        return None
    fields = dict(row._mapping)
    due = bool(fields.pop("timer_due"))
    stored = fields.pop("workflow", None)
    return SimpleNamespace(**fields), due, stored


def unit_code(session: Session, unit_id: int) -> str | None:
    row = session.connection().execute(UNIT_CODES, {"b_units": [unit_id]}).first()
    return row.code if row is not None else None


def move_case(session: Session, case: SimpleNamespace, chain) -> None:
    """A transferred case now belongs to another grid (and its district and village): set before
    the step's new items are written, so they go to the new grid's people. The case row's own
    UPDATE, with the version check, comes after in the same transaction."""
    values = {
        "grid_id": chain.grid_id,
        "district_id": chain.district_id,
        "village_id": chain.village_id,
    }
    session.connection().execute(update(CASES).where(CASES.c.id == case.id).values(**values))
    for name, value in values.items():
        setattr(case, name, value)


def drop_timers(session: Session, case_id: int) -> None:
    session.connection().execute(DELETE_TIMERS, {"b_case": case_id})


def set_item(session: Session, item_id: int, **values: Any) -> None:
    session.connection().execute(UPDATE_ITEM, {"b_item": item_id, **values})


def insert_case(session: Session, values: dict) -> int:
    return session.connection().execute(INSERT_CASE, values).scalar_one()


# ----------------------------------------------------------------------------- writing


def write(
    session: Session,
    case: SimpleNamespace,
    spec: Spec,
    outcome: Outcome,
    now: datetime,
    actor: str,
    workflow_blob: str,
    on_new_items: Callable[[list[SimpleNamespace]], Iterable[Event]] | None = None,
    completed: Any = None,
    holder: str | None = None,
) -> dict[str, Any]:
    """Write a step's outcome; returns the case row's new values (also set on `case`).
    `completed` is the work item the step completed (by `actor`, in `holder`'s name: a
    delegator's, through a delegation; an unclaimed item is claimed in that name), if any. `on_new_items` may
    change the new items (claim the accept item) and return events of its own, appended after
    the step's."""
    conn = session.connection()
    if completed is not None and completed.task_id not in outcome.closed:
        raise AssertionError(f"the step did not close the item it completed: {completed.id}")
    if outcome.closed:
        # Every item that closed but the completed one was cancelled by the move (an
        # escalation, an interrupting timer).
        params = {"b_case": case.id, "b_tasks": outcome.closed, "b_now": now}
        if completed is None:
            closed = conn.execute(CLOSE_ITEMS, params).all()
        else:
            closed = conn.execute(
                COMPLETE_AND_CLOSE,
                {**params, "b_done": completed.id, "b_actor": actor, "b_holder": holder or actor},
            ).all()
        # A closed item leaves every watch list: its watch rows go with it.
        watched = [row.id for row in closed if row.supervised_at is not None]
        if watched:
            conn.execute(DELETE_WATCH, {"b_items": watched})
    new_items = [_new_item(session, case, ready, outcome.escalated, now) for ready in outcome.ready]
    events = list(outcome.events)
    if on_new_items is not None:
        events.extend(on_new_items(new_items))
    for supervision in outcome.supervisions:
        _supervise(session, case, events[supervision.event][2], supervision, now)

    facts = outcome.facts
    owner_before = case.owner
    values: dict[str, Any] = {
        "updated_at": now,
        "tier": facts.tier,
        "satisfaction": facts.satisfaction,
        "reopen_count": facts.reopen_count,
        "owner": None if outcome.owner_cleared else case.owner,
    }
    if facts.category:
        values["category"] = facts.category
    if facts.severity:
        values["severity"] = facts.severity
    if facts.status:
        values["status"] = facts.status
    if facts.closed:
        values["closed_at"] = now
    if outcome.overdue_marked:
        values["overdue_marked"] = True
    escalated = sum(1 for type_, _task, _data in outcome.events if type_ == "escalated")
    if escalated:
        values["escalations"] = (case.escalations or 0) + escalated
    if outcome.ready or outcome.closed:
        # Deadlines are fixed when an item becomes ready; the case's is its earliest open one.
        dues = [i.due_at for i in new_items if i.due_at is not None]
        if outcome.still_open:
            dues += conn.scalars(
                OPEN_DUES, {"b_case": case.id, "b_tasks": outcome.still_open}
            ).all()
        values["due_at"] = min(dues) if dues else None
    values["event_seq"], values["event_head"] = append(
        session, case, spec.sha256, now, actor, events
    )
    if outcome.timers is not None:
        conn.execute(DELETE_TIMERS, {"b_case": case.id})
        if outcome.timers:
            conn.execute(
                INSERT_TIMERS,
                [
                    {"case_id": case.id, "due_at": due, "kind": kind, "name": name}
                    for due, kind, name in sorted(outcome.timers)
                ],
            )
    if getattr(case, "process", PROCESS_ID) == PROCESS_ID:
        casefacts.on_step(session, case, events, facts.tier, now)
    else:  # a campaign's grid instance: its campaign sums it (DESIGN §12)
        campaigns.on_grid_step(session, case, events, facts.closed, now, actor)
    values["workflow"] = workflow_blob
    _update_case(session, case, values)
    notify.on_step(
        session,
        case,
        events,
        new_items,
        now,
        spec.forms,
        owner_before if outcome.owner_cleared else None,
    )
    return values


def touch(
    session: Session, case: SimpleNamespace, now: datetime, actor: str, event: Event
) -> dict[str, Any]:
    """A step that moves no workflow (claim, release): its event, and the case row's version."""
    values: dict[str, Any] = {"updated_at": now}
    values["event_seq"], values["event_head"] = append(
        session, case, case.diagram_sha, now, actor, [event]
    )
    _update_case(session, case, values)
    return values


def append(
    session: Session, case, diagram: str, now: datetime, actor: str, events: list[Event]
) -> tuple[int, str]:
    """Chain events onto the case's head (DESIGN §6); returns the new (seq, head)."""
    rows, seq, head = chained_rows(
        case.number,
        case.event_seq or 0,
        case.event_head or GENESIS,
        iso(now),
        actor,
        diagram,
        events,
    )
    if rows:
        session.connection().execute(INSERT_EVENTS, [{"case_id": case.id, **r} for r in rows])
    return seq, head


def _update_case(session: Session, case: SimpleNamespace, values: dict[str, Any]) -> None:
    """The case row's UPDATE, guarded by the version the step read; the row then holds the new
    version, and so does `case`."""
    values["version"] = case.version + 1
    done = session.connection().execute(
        UPDATE_CASE, {"b_case": case.id, "b_version": case.version, **values}
    )
    if done.rowcount != 1:
        raise StaleCase(case.number)
    for name, value in values.items():
        if name != "workflow":
            setattr(case, name, value)


def _supervise(session: Session, case, data: dict, supervision: Supervision, now) -> None:
    """A supervision names its item's deadline and whom it tells; the item records when, and
    work_item_watch whom (the 督办 watch list reads it): the latest supervision's keys replace
    the earlier one's. An item the same step closed (an escalation at 100%) gets none: it is on
    no watch list, and nothing would delete them."""
    conn = session.connection()
    item = conn.execute(ITEM_OF_TASK, {"b_case": case.id, "b_task": supervision.task_id}).first()
    if item is None:
        return
    told = notify_list(session, case, item, supervision.notify)
    data.setdefault("due_at", iso(item.due_at))
    data["notify"] = [name for name, _key in told]
    set_item(session, item.id, supervised_at=now)
    if item.completed_at is not None:
        return
    if item.supervised_at is not None:  # supervised before: those rows are no longer whom
        conn.execute(DELETE_WATCH, {"b_items": [item.id]})
    keys = watch_keys(item, [key for _name, key in told])
    if keys:
        conn.execute(
            INSERT_WATCH, [{"key": k, "due_key": item.due_key, "item_id": item.id} for k in keys]
        )


def _new_item(session: Session, case, ready: Ready, escalated: bool, now) -> SimpleNamespace:
    info: TaskInfo = ready.info
    values: dict[str, Any] = {
        "case_id": case.id,
        "task_id": ready.task_id,
        "spec": info.spec,
        "task": info.task,
        "name": info.name,
        "form": info.form,
        "role": info.lane,
        "unit_id": case_unit(case, LEVEL_OF_ROLE[info.lane]),
        "village_id": case.village_id,
        "assignee": case.owner if info.props.get("assignee") == "owner" else None,
        "excluded": None,
        "claimed_by": None,
        "claimed_at": None,
        "created_at": now,
        "due_at": ready.due_at,
        "due_key": ready.due_at or NO_DEADLINE,  # the inbox's order
        "warn_at": ready.warn_at,
        "supervised_at": None,
        "escalated": escalated,
        "completed_at": None,
        "completed_by": None,
        "cancelled": False,
    }
    not_by = info.props.get("notBy")
    if not_by:
        previous = session.scalar(
            select(ITEMS.c.completed_by)
            .where(
                ITEMS.c.case_id == case.id,
                ITEMS.c.task == not_by,
                ITEMS.c.completed_by.is_not(None),
            )
            .order_by(ITEMS.c.id.desc())
            .limit(1)
        )
        if previous and eligible_town_leaders(session, case.village_id, case.town_id, previous):
            values["excluded"] = previous
    item_id = session.connection().execute(INSERT_ITEM, values).scalar_one()
    return SimpleNamespace(id=item_id, **values)


def person_key(username: str) -> str:
    """How work_item_watch names a person (prefixed: a username may look like a position)."""
    return f"u:{username}"


def position_key(role: str, unit_id: int) -> str:
    """How work_item_watch names a position: a role at a unit."""
    return f"p:{role}@{unit_id}"


def watch_keys(item, told: Iterable[str]) -> list[str]:
    """The work_item_watch keys a supervision of `item` writes: the keys it told, once each,
    but the item's own position when the item is unassigned, excludes nobody and is not a town
    item. Everyone holding that position then has the item in their inbox (engine/access.py
    inbox_scope: its `shared` items), and the watch list leaves out what is in the viewer's
    inbox, so that row would show on no one's list. Leaving it out keeps a position's rows to
    what its holders may see there: the 80% supervision tells the holder, which is the item's
    own position until someone claims it, so without this a grid leader's key would hold all
    their own supervised items for the list to read and drop. These three fields never change
    on an item that has them empty (an owner change reassigns assigned items only)."""
    own = position_key(item.role, item.unit_id)
    everyones = item.assignee is None and item.excluded is None and item.role != "town_leadership"
    return [key for key in dict.fromkeys(told) if not (everyones and key == own)]


def notify_list(session: Session, case, item, who: str) -> list[tuple[str, str]]:
    """Who a supervision notice (督办) goes to, as the diagram's `notify` property lists them:
    `holder` (whoever claimed the item or is assigned it, else its role at its unit), `owner` (the case's owner,
    if it has one yet), or a tier, meaning that role at its level of the case's units. Each as
    (what the event records: a username or role@unit code, the key the watch list matches)."""
    kinds = [k.strip() for k in who.split(",") if k.strip()]
    wanted: list[tuple[str, str | None, int | None]] = []  # (role, person, unit id)
    for kind in kinds:
        if kind == "holder":
            holder = item.claimed_by or item.assignee  # the owner holds their feedback
            if holder:
                wanted.append((item.role, holder, None))
            else:
                wanted.append((item.role, None, item.unit_id))
        elif kind == "owner":
            if case.owner:
                wanted.append((kind, case.owner, None))
        else:
            wanted.append((kind, None, case_unit(case, LEVEL_OF_ROLE[kind])))
    unit_ids = {unit for _role, _person, unit in wanted if unit is not None}
    codes = (
        dict(session.connection().execute(UNIT_CODES, {"b_units": sorted(unit_ids)}).all())
        if unit_ids
        else {}
    )
    told: list[tuple[str, str]] = []
    for role, person, unit in wanted:
        if person is not None:
            told.append((person, person_key(person)))
        else:
            told.append((f"{role}@{codes[unit]}", position_key(role, unit)))
    return told
