"""The engine's service: the use cases of a case, each one step in one transaction.

A step reads the clock once, loads the case (its workflow from the in-process cache, else from the
stored blob), asks engine/step.py what happens (the pure part: SpiffWorkflow and nothing else),
and writes that outcome with SQLAlchemy Core statements: the work items it closed and made ready,
the timers, the hash-chained events, and last the case row, guarded by its version counter. Any
error rolls the whole step back. A step that lost a race (another step changed the case first) is
recognised by exception class or SQLSTATE and retried from scratch; the retry usually answers 409.

The process itself (who handles, when it escalates) is in the diagram and the DMN tables.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from SpiffWorkflow.bpmn import BpmnWorkflow
from sqlalchemy import bindparam, delete, exists, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import flag_modified, set_committed_value
from sqlalchemy.orm.exc import StaleDataError

from . import notify, spiffclock
from .access import Viewer, can_see_case, eligible_town_leaders, may_act
from .clock import SHANGHAI, Clock, iso
from .errors import Conflict, Forbidden, Invalid, NotFound
from .events import (
    GENESIS,
    Chain,
    canonical,
    chain_hash,
    check_data,
    reporter_hash,
    reporter_record,
)
from .models import (
    LEVEL_OF_ROLE,
    TIER_ABOVE,
    Case,
    CaseDepartment,
    CaseEvent,
    Counter,
    DiagramVersion,
    Reporter,
    Timer,
    Unit,
    WorkItem,
    case_unit,
)
from .serializer import make_serializer
from .specs import OPEN_STATUSES, Spec, SpecRegistry, TaskInfo, latest_version
from .step import Complete, Fire, Open, Outcome, Ready, run_step
from .words import version_choices
from .workcal import WorkCalendar, load_calendar

log = logging.getLogger(__name__)
OPEN = frozenset(OPEN_STATUSES)
MAX_ATTEMPTS = 4

CASES, ITEMS, EVENTS, TIMERS = (
    Case.__table__,
    WorkItem.__table__,
    CaseEvent.__table__,
    Timer.__table__,
)
# A case as a step reads it: every column but the workflow blob, and its version's hash.
CASE_ROW = select(
    *[c for c in CASES.c if c.name != "workflow"], DiagramVersion.sha256.label("diagram_sha")
).join(DiagramVersion, DiagramVersion.id == CASES.c.diagram_id)


ITEM_AND_CASE = CASE_ROW.add_columns(*[c.label(f"item_{c.name}") for c in ITEMS.c]).join(
    ITEMS, ITEMS.c.case_id == CASES.c.id
)
# The step's statements, built once: SQLAlchemy then only binds parameters. An UPDATE built
# without .values() sets the columns its parameters name.
CASE_BY_ID = CASE_ROW.where(CASES.c.id == bindparam("b_case"))
ITEM_BY_ID = ITEM_AND_CASE.where(ITEMS.c.id == bindparam("b_item"))
BLOB = select(CASES.c.workflow).where(CASES.c.id == bindparam("b_case"))
UPDATE_CASE = update(CASES).where(
    CASES.c.id == bindparam("b_case"), CASES.c.version == bindparam("b_version")
)
INSERT_ITEM = insert(ITEMS).returning(ITEMS.c.id)
UPDATE_ITEM = update(ITEMS).where(ITEMS.c.id == bindparam("b_item"))
CLOSE_ITEMS = (
    update(ITEMS)
    .where(
        ITEMS.c.case_id == bindparam("b_case"),
        ITEMS.c.task_id.in_(bindparam("b_tasks", expanding=True)),
        ITEMS.c.completed_at.is_(None),
    )
    .values(completed_at=bindparam("b_now"), cancelled=ITEMS.c.completed_by.is_(None))
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
DUE_TIMER = (
    select(TIMERS.c.id)
    .where(TIMERS.c.case_id == bindparam("b_case"), TIMERS.c.due_at <= bindparam("b_now"))
    .limit(1)
)
DELETE_TIMERS = delete(TIMERS).where(TIMERS.c.case_id == bindparam("b_case"))
INSERT_TIMERS = insert(TIMERS)
INSERT_EVENTS = insert(EVENTS)
# What a step writes with Core: ORM objects of these kinds that the caller holds go stale.
WRITTEN = (Case, WorkItem, Timer, CaseEvent, CaseDepartment, Reporter)


class StaleCase(Exception):
    """The case's version moved between reading it and writing it: another step won."""


@dataclass
class StepContext:
    """One step: its instant, its actor and what it appended. Built fresh for every attempt."""

    session: Session
    now: datetime
    actor: str
    calendar: WorkCalendar | None = None
    hot: tuple[int, int, BpmnWorkflow] | None = None  # (case id, new version, workflow)
    touched: tuple[int, int] | None = None  # (case id, old version): a step with no workflow
    extra: list[tuple[str, str | None, dict]] = field(default_factory=list)
    written: tuple[int, dict] | None = None  # (case id, the case row's new values)

    def work_calendar(self) -> WorkCalendar:
        if self.calendar is None:
            self.calendar = load_calendar(self.session)
        return self.calendar

    def deadline(self, hours: float, clock: str) -> str:
        """gl_deadline for diagram code: the instant `hours` of limit run out from this step."""
        urgent = clock == "clock"
        calendar = WorkCalendar() if urgent else self.work_calendar()
        return iso(calendar.add_hours(self.now, hours, urgent))


class Runtime:
    """The engine of one process (web server, worker or CLI). Holds no database state of its own:
    parsed specs by hash, and recently used workflows keyed by case id *and* version."""

    def __init__(self, clock: Clock, registry: SpecRegistry | None = None, hot_cases: int = 2000):
        spiffclock.install()
        self.clock = clock
        self.registry = registry or SpecRegistry()
        self.serializer = make_serializer(self.registry)
        self._hot: OrderedDict[int, tuple[int, BpmnWorkflow]] = OrderedDict()
        self._hot_limit = hot_cases

    # ----------------------------------------------------------------- use cases

    def open_case(
        self,
        session: Session,
        actor: Viewer | None,
        *,
        title: str,
        grid: str,
        description: str = "",
        category: str | None = None,
        severity: str | None = None,
        household: str | None = None,
        reporter: dict | None = None,
    ) -> Case:
        """Open a case in a grid. An information officer of the grid holds its accept item at once;
        a resident's case (actor None) leaves accept unclaimed for the grid's officers."""

        def step(ctx: StepContext) -> int:
            session = ctx.session
            version = latest_version(session)
            if version is None:
                raise Conflict("no diagram is deployed; run `gridloop init-db`")
            spec = self.registry.get(version)
            problems = _word_problems(spec, category=category, severity=severity)
            grid_unit = session.scalars(
                select(Unit).where(Unit.code == grid, Unit.level == "grid", Unit.active)
            ).first()
            if grid_unit is None or (
                actor is not None and ("info_officer", grid_unit.id) not in actor.tier_positions()
            ):
                problems["grid"] = (
                    "not a grid you serve as information officer" if actor else "unknown grid"
                )
            if problems:
                raise Invalid("the request has errors", dict(sorted(problems.items())))
            district = session.get(Unit, grid_unit.parent_id)
            village = session.get(Unit, district.parent_id)
            town = session.get(Unit, village.parent_id)
            data = {
                "title": title,
                "description": description or "",
                "grid": grid,
                "category": category,
                "severity": severity,
                "household": household,
            }
            record = salt = None
            if reporter:
                # The reporter's details stay in their own table; the chain covers them by hash.
                record = reporter_record(reporter.get("name"), reporter.get("phone"))
                salt = secrets.token_hex(16)
                data["reporter_hash"] = reporter_hash(salt, record)
            outcome = run_step(None, spec, Open(data), ctx.now, ctx.deadline)
            row = {
                "number": self._next_number(session, town.code, ctx.now),
                "title": title,
                "description": description or "",
                "category": category,
                "severity": severity,
                "household": household,
                "town_id": town.id,
                "village_id": village.id,
                "district_id": district.id,
                "grid_id": grid_unit.id,
                "owner": None,
                "status": "accepting",
                "tier": None,
                "due_at": None,
                "opened_at": ctx.now,
                "closed_at": None,
                "updated_at": ctx.now,
                "satisfaction": None,
                "reopen_count": 0,
                "overdue_marked": False,
                "event_seq": 0,
                "event_head": GENESIS,
                "diagram_id": version.id,
                "workflow": "",
                "version": 1,
            }
            case_id = session.execute(insert(CASES).values(row).returning(CASES.c.id)).scalar_one()
            case = SimpleNamespace(id=case_id, diagram_sha=version.sha256, **row)
            if record is not None:
                session.execute(
                    insert(Reporter.__table__).values(case_id=case_id, salt=salt, **record)
                )

            def claim_accept(items: list[SimpleNamespace]) -> None:
                if actor is not None and items:
                    accept = items[0]
                    accept.claimed_by, accept.claimed_at = actor.username, ctx.now
                    session.connection().execute(
                        UPDATE_ITEM,
                        {"b_item": accept.id, "claimed_by": actor.username, "claimed_at": ctx.now},
                    )
                    ctx.extra.append(("claimed", accept.task, {"work_item": accept.id}))

            self._project(ctx, case, spec, outcome, claim_accept)
            return case_id

        case_id = self._run(session, None, actor.username if actor else "system", step)
        return session.get(Case, case_id)

    def claim(self, session: Session, actor: Viewer, item_id: int) -> WorkItem:
        def step(ctx: StepContext) -> WorkItem:
            item, case = self._actionable_orm(ctx.session, actor, item_id)
            if item.claimed_by not in (None, actor.username):
                raise Conflict(f"already claimed by {item.claimed_by}")
            if item.claimed_by is None:
                item.claimed_by, item.claimed_at = actor.username, ctx.now
                self._touch(ctx, case, "claimed", item, {"work_item": item.id})
            return item

        return self._run(session, None, actor.username, step)

    def release(self, session: Session, actor: Viewer, item_id: int) -> WorkItem:
        def step(ctx: StepContext) -> WorkItem:
            item, case = self._actionable_orm(ctx.session, actor, item_id)
            if item.claimed_by != actor.username:
                raise Conflict(
                    "you do not hold this item"
                    if item.claimed_by is None
                    else f"claimed by {item.claimed_by}"
                )
            item.claimed_by, item.claimed_at = None, None
            self._touch(ctx, case, "released", item, {"work_item": item.id})
            return item

        return self._run(session, None, actor.username, step)

    def complete(self, session: Session, actor: Viewer, item_id: int, data: Any) -> Case:
        """Complete a work item with its form's data. An unclaimed item is claimed in the same
        transaction; only the completion is recorded."""

        def step(ctx: StepContext) -> int:
            session = ctx.session
            item, case = self._actionable(session, actor, item_id)
            if item.claimed_by not in (None, actor.username):
                raise Conflict(f"claimed by {item.claimed_by}")
            spec = self._spec(session, case)
            info = spec.tasks[item.spec]
            form = validate_form(spec, info, data)
            departments = self._departments(session, form)
            workflow = self._load(session, case)
            outcome = run_step(
                workflow, spec, Complete(item.task_id, info.task, dict(form)), ctx.now, ctx.deadline
            )
            session.connection().execute(
                UPDATE_ITEM,
                {
                    "b_item": item.id,
                    "claimed_by": item.claimed_by or actor.username,
                    "completed_by": actor.username,
                },
            )
            if info.props.get("owner") == "set":
                case.owner = actor.username
            for unit in departments:
                named = select(CaseDepartment).where(
                    CaseDepartment.case_id == case.id, CaseDepartment.unit_id == unit.id
                )
                if not session.scalar(select(exists(named))):
                    session.execute(
                        insert(CaseDepartment.__table__).values(case_id=case.id, unit_id=unit.id)
                    )
            self._project(ctx, case, spec, outcome)
            return case.id

        case_id = self._run(session, None, actor.username, step)
        return session.get(Case, case_id)

    def fire_due_timers(
        self, session: Session, as_of: datetime | None = None, limit: int = 500
    ) -> int:
        """Fire, once per case, every timer due at or before `as_of` (default: now), with the
        engine clock set to that instant. Returns how many cases moved."""
        as_of = as_of or self.clock.now()
        case_ids = list(
            session.scalars(
                select(Timer.case_id)
                .where(Timer.due_at <= as_of)
                .group_by(Timer.case_id)
                .order_by(Timer.case_id)
                .limit(limit)
            )
        )
        session.rollback()  # end the read transaction before the steps begin
        fired = 0
        for case_id in case_ids:
            try:
                fired += self.fire_case_timers(session, case_id, as_of)
            except Conflict:
                log.info("case %s changed while its timers fired; skipped", case_id)
            except Exception:  # one broken case must not stop every other escalation
                log.exception("firing the timers of case %s failed; retried next time", case_id)
        return fired

    def fire_case_timers(self, session: Session, case_id: int, as_of: datetime) -> bool:
        def step(ctx: StepContext) -> bool:
            session = ctx.session
            row = session.connection().execute(CASE_BY_ID, {"b_case": case_id}).first()
            if row is None or row.status not in OPEN:
                session.connection().execute(DELETE_TIMERS, {"b_case": case_id})
                return False
            due = session.connection().scalar(DUE_TIMER, {"b_case": case_id, "b_now": ctx.now})
            if due is None:
                return False  # another process fired them first
            case = SimpleNamespace(**row._mapping)
            spec = self._spec(session, case)
            workflow = self._load(session, case)
            outcome = run_step(workflow, spec, Fire(), ctx.now, ctx.deadline)
            self._project(ctx, case, spec, outcome)
            return True

        return self._run(session, as_of, "system", step)

    # ----------------------------------------------------------------- the step machinery

    def _run(
        self, session: Session, at: datetime | None, actor: str, step: Callable[[StepContext], Any]
    ) -> Any:
        """Run a step in one transaction; retry it from scratch when a concurrent step changed the
        case first (the retry then sees the new state and usually answers 409 itself)."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            _end_transaction(session)
            ctx = StepContext(session, at or self.clock.now(), actor)
            try:
                # No autoflush: a step writes when it is done, not whenever it reads, and diagram
                # code that reads (the calendar) never flushes half a step.
                with session.no_autoflush:
                    result = step(ctx)
                session.commit()
            except BaseException as exc:
                session.rollback()
                if ctx.hot is not None:
                    self._hot.pop(ctx.hot[0], None)
                if not is_concurrency(exc):
                    raise
                if attempt == MAX_ATTEMPTS:
                    raise Conflict("the case changed meanwhile; try again") from exc
                continue
            _refresh_held(session, ctx.written)
            if ctx.hot is not None:
                self._remember(*ctx.hot)
            elif ctx.touched is not None:
                case_id, old = ctx.touched
                hot = self._hot.get(case_id)
                if hot is not None and hot[0] == old:  # the workflow did not change
                    self._remember(case_id, old + 1, hot[1])
            return result
        raise AssertionError("unreachable")

    def _remember(self, case_id: int, version: int, workflow: BpmnWorkflow) -> None:
        workflow.script_engine = None  # it holds the step's context; each step sets its own
        self._hot[case_id] = (version, workflow)
        self._hot.move_to_end(case_id)
        while len(self._hot) > self._hot_limit:
            self._hot.popitem(last=False)

    def _spec(self, session: Session, case) -> Spec:
        spec = self.registry.parsed(case.diagram_sha)
        if spec is None:
            spec = self.registry.get(session.get(DiagramVersion, case.diagram_id))
        return spec

    def _load(self, session: Session, case) -> BpmnWorkflow:
        hot = self._hot.pop(case.id, None)
        if hot is not None and hot[0] == case.version:
            return hot[1]
        blob = session.connection().scalar(BLOB, {"b_case": case.id})
        return self.serializer.deserialize_json(blob)

    def _actionable(self, session: Session, actor: Viewer, item_id: int):
        """The item and its case as plain rows, if this actor may work it."""
        # One SELECT for both: a case read after the item could be newer than it.
        row = (
            session.connection().execute(ITEM_BY_ID, {"b_item": item_id}).first()
            if 0 < item_id < 2**31  # an Integer column: 32-bit on PostgreSQL
            else None
        )
        if row is None:
            raise NotFound("no such work item")
        fields = row._mapping
        item = SimpleNamespace(**{c.name: fields[f"item_{c.name}"] for c in ITEMS.c})
        case = SimpleNamespace(**{k: v for k, v in fields.items() if not k.startswith("item_")})
        self._check_actionable(session, actor, item, case)
        return item, case

    def _actionable_orm(self, session: Session, actor: Viewer, item_id: int):
        # One SELECT for both: a case read after the item could be newer than it.
        item = (
            session.get(
                WorkItem, item_id, options=[joinedload(WorkItem.case)], populate_existing=True
            )
            if 0 < item_id < 2**31
            else None
        )
        if item is None:
            raise NotFound("no such work item")
        self._check_actionable(session, actor, item, item.case)
        return item, item.case

    @staticmethod
    def _check_actionable(session: Session, actor: Viewer, item, case) -> None:
        if not can_see_case(session, actor, case):
            raise NotFound("no such work item")
        if item.completed_at is not None and item.cancelled:
            raise Conflict("this item was closed: the case moved on")
        if item.completed_at is not None:
            raise Conflict("this item was already completed")
        if not may_act(session, actor, item):
            raise Forbidden("you may see this item but not work it")

    def _touch(self, ctx: StepContext, case: Case, type_: str, item: WorkItem, data: dict) -> None:
        """A step that changes no workflow still bumps the case version and appends its event."""
        case.updated_at = ctx.now
        flag_modified(case, "updated_at")  # the versioned UPDATE runs even at the same instant
        chain = Chain.open(ctx.session, case)
        chain.append(iso(ctx.now), type_, ctx.actor, item.task, data, case.diagram.sha256)
        ctx.touched = (case.id, case.version)

    # ----------------------------------------------------------------- the projection

    def _project(
        self,
        ctx: StepContext,
        case: SimpleNamespace,
        spec: Spec,
        outcome: Outcome,
        on_new_items: Callable[[list[SimpleNamespace]], None] | None = None,
    ) -> None:
        """Write a step's outcome: close and open work items, chain the events, refresh the
        timers, and last update the case row under its version check."""
        session, now = ctx.session, ctx.now
        if outcome.closed:
            # The completed item has completed_by already; every other item that closed was
            # cancelled by the move (an escalation, an interrupting timer).
            session.connection().execute(
                CLOSE_ITEMS, {"b_case": case.id, "b_tasks": outcome.closed, "b_now": now}
            )
        new_items = [self._new_item(ctx, case, ready, outcome.escalated) for ready in outcome.ready]
        if on_new_items is not None:
            on_new_items(new_items)
        events = outcome.events + ctx.extra
        for supervision in outcome.supervisions:
            self._supervise(ctx, case, events[supervision.event][2], supervision)

        facts = outcome.facts
        values: dict[str, Any] = {
            "updated_at": now,
            "tier": facts.tier,
            "satisfaction": facts.satisfaction,
            "reopen_count": facts.reopen_count,
            "owner": case.owner,
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
        if outcome.ready or outcome.closed:
            # Deadlines are fixed when an item becomes ready; the case's is its earliest open one.
            dues = [i.due_at for i in new_items if i.due_at is not None]
            if outcome.still_open:
                dues += (
                    session.connection()
                    .scalars(OPEN_DUES, {"b_case": case.id, "b_tasks": outcome.still_open})
                    .all()
                )
            values["due_at"] = min(dues) if dues else None
        values["event_seq"], values["event_head"] = self._append(ctx, case, spec, events)
        if outcome.timers is not None:
            session.connection().execute(DELETE_TIMERS, {"b_case": case.id})
            if outcome.timers:
                session.connection().execute(
                    INSERT_TIMERS,
                    [
                        {"case_id": case.id, "due_at": due, "kind": kind, "name": name}
                        for due, kind, name in sorted(outcome.timers)
                    ],
                )
        values["workflow"] = self.serializer.serialize_json(outcome.workflow)
        values["version"] = case.version + 1
        done = session.connection().execute(
            UPDATE_CASE, {"b_case": case.id, "b_version": case.version, **values}
        )
        if done.rowcount != 1:
            raise StaleCase(case.number)
        for name, value in values.items():
            if name != "workflow":
                setattr(case, name, value)
        ctx.written = (case.id, values)
        notify.on_step(session, case, events, new_items, now, spec.forms)
        ctx.hot = (case.id, case.version, outcome.workflow)

    def _append(self, ctx: StepContext, case, spec: Spec, events) -> tuple[int, str]:
        """Chain the step's events onto the case's head; returns the new (seq, head)."""
        seq, head, at = case.event_seq or 0, case.event_head or GENESIS, iso(ctx.now)
        rows = []
        for type_, task, data in events:
            check_data(data)
            seq += 1
            event = {
                "case": case.number,
                "seq": seq,
                "at": at,
                "type": type_,
                "actor": ctx.actor,
                "task": task,
                "data": data,
                "diagram": spec.sha256,
            }
            head = chain_hash(head, event)
            rows.append(
                {
                    "case_id": case.id,
                    "seq": seq,
                    "at": at,
                    "type": type_,
                    "actor": ctx.actor,
                    "task": task,
                    "data": canonical(data),
                    "diagram": spec.sha256,
                    "hash": head,
                }
            )
        if rows:
            ctx.session.connection().execute(INSERT_EVENTS, rows)
        return seq, head

    def _supervise(self, ctx: StepContext, case, data: dict, supervision) -> None:
        """A supervision names its item's deadline and whom it tells; the item records when."""
        session = ctx.session
        item = (
            session.connection()
            .execute(ITEM_OF_TASK, {"b_case": case.id, "b_task": supervision.task_id})
            .first()
        )
        if item is None:
            return
        told = _notify_list(session, case, item, supervision.notify)
        data.setdefault("due_at", iso(item.due_at))
        data["notify"] = [name for name, _key in told]
        session.connection().execute(
            UPDATE_ITEM,
            {
                "b_item": item.id,
                "supervised_at": ctx.now,
                "notified": "," + ",".join(key for _name, key in told) + "," if told else None,
            },
        )

    def _new_item(self, ctx: StepContext, case, ready: Ready, escalated: bool) -> SimpleNamespace:
        info: TaskInfo = ready.info
        session = ctx.session
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
            "created_at": ctx.now,
            "due_at": ready.due_at,
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
            others = set(eligible_town_leaders(session, case.village_id, case.town_id))
            if previous and others - {previous}:
                values["excluded"] = previous
        item_id = session.connection().execute(INSERT_ITEM, values).scalar_one()
        return SimpleNamespace(id=item_id, **values)

    def _departments(self, session: Session, form: dict) -> list[Unit]:
        codes = form.get("departments") or []
        units = []
        for i, code in enumerate(codes):
            unit = session.scalars(
                select(Unit).where(Unit.code == code, Unit.level == "department", Unit.active)
            ).first()
            if unit is None:
                raise Invalid(
                    "unknown department", {f"departments[{i}]": f"unknown department '{code}'"}
                )
            units.append(unit)
        return units

    def _next_number(self, session: Session, town_code: str, now: datetime) -> str:
        year = now.astimezone(SHANGHAI).year
        key = f"case:{town_code}:{year}"
        updated = session.execute(
            update(Counter).where(Counter.key == key).values(value=Counter.value + 1)
        ).rowcount
        if not updated:
            session.execute(insert(Counter.__table__).values(key=key, value=1))
        value = session.scalar(select(Counter.value).where(Counter.key == key))
        return f"{town_code}-{year}-{value:06d}"


def _end_transaction(session: Session) -> None:
    """Start the step in a transaction of its own. A caller's read-only transaction ends with a
    commit, which (unlike a rollback) leaves the objects it holds loaded; pending changes the
    caller did not commit are discarded, as before."""
    if session.new or session.dirty or session.deleted:
        session.rollback()
    else:
        session.commit()


def _refresh_held(session: Session, written: tuple[int, dict] | None) -> None:
    """The step wrote with Core, past the ORM, so objects the caller holds are stale. The case
    row takes the values just written (no reload); its items, events and timers are expired and
    reload when read. Organisation rows stay: a step never writes them."""
    for key, obj in list(session.identity_map.items()):
        # The identity key holds the primary key: reading obj.id could load an expired object.
        if written is not None and key[0] is Case and key[1] == (written[0],):
            for name, value in written[1].items():
                if name == "workflow":
                    session.expire(obj, ["workflow"])
                else:
                    set_committed_value(obj, name, value)
        elif isinstance(obj, WRITTEN):
            session.expire(obj)


# SQLSTATEs and SQLite result codes that mean "another transaction got there first": retry.
RETRY_SQLSTATES = frozenset({"40001", "40P01", "23505", "55P03"})
# SQLITE_BUSY and SQLITE_LOCKED (with their extended codes), SQLITE_CONSTRAINT_UNIQUE and
# SQLITE_CONSTRAINT_PRIMARYKEY (two steps appending the same seq, or numbering the same counter).
SQLITE_RETRY_PRIMARY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
SQLITE_RETRY_EXTENDED = frozenset({2067, 1555})


def is_concurrency(exc: BaseException | None) -> bool:
    """Whether a failed step lost a race, by exception class or SQLSTATE, never by message."""
    if isinstance(exc, StaleCase | StaleDataError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate is not None:
        return sqlstate in RETRY_SQLSTATES
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in SQLITE_RETRY_PRIMARY or code in SQLITE_RETRY_EXTENDED
    return False


def _word_problems(spec: Spec, **given: str | None) -> dict[str, str]:
    """A category or severity given when opening must be one the version's accept form offers
    (they only prefill it); the bundle, not Python, says which there are."""
    fields = {}
    for name, value in given.items():
        allowed = [c.value for c in version_choices(spec, name)]
        if value is not None and value not in allowed:
            fields[name] = "must be one of: " + ", ".join(allowed)
    return fields


def validate_form(spec: Spec, info: TaskInfo, data: Any) -> dict:
    """Validate submitted data against the task's JSON Schema: one message per field."""
    if not isinstance(data, dict):
        raise Invalid("data must be an object", {"data": "must be an object"})
    validator = spec.validators[info.form]
    fields: dict[str, str] = {}
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.path)):
        for name, message in _field_messages(error):
            fields.setdefault(name, message)
    if fields:
        raise Invalid("the form has errors", fields)
    return data


def _field_messages(error) -> list[tuple[str, str]]:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required":
        missing = [f for f in error.validator_value if f not in (error.instance or {})]
        return [(_join(path, f), "required") for f in missing]
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        return [(_join(path, k), "unknown field") for k in error.instance if k not in allowed]
    if error.validator in ("if", "allOf", "anyOf", "oneOf"):
        found = []
        for sub in error.context or []:
            found.extend(_field_messages(sub))
        return found or [(path or "data", error.message)]
    messages = {
        "enum": lambda: "must be one of: " + ", ".join(map(str, error.validator_value)),
        "const": lambda: f"must be {error.validator_value!r}",
        "type": lambda: f"must be of type {error.validator_value}",
        "pattern": lambda: "must not be empty",
        "minLength": lambda: "must not be empty",
        "maxLength": lambda: f"must be at most {error.validator_value} characters",
        "uniqueItems": lambda: "must not repeat",
    }
    message = messages.get(error.validator, lambda: error.message)()
    return [(path or "data", message)]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _notify_list(session: Session, case, item, who: str) -> list[tuple[str, str]]:
    """Who a supervision notice (督办) goes to, as the diagram's `notify` property lists them:
    `holder` (whoever claimed the item, else its role at its unit), `owner` (the case's owner,
    if it has one yet), or a tier, meaning that role at its level of the case's units. Each as
    (what the event records: a username or role@unit code, the key the watch list matches: a
    username or role@unit id)."""
    if not who:  # a version deployed before `notify` existed: its rule, the tier above
        above = TIER_ABOVE.get(item.role)
        who = "holder,owner" + (f",{above}" if above else "")
    told: list[tuple[str, str]] = []
    for kind in (k.strip() for k in who.split(",") if k.strip()):
        if kind == "holder":
            if item.claimed_by:
                told.append((item.claimed_by, item.claimed_by))
            else:
                unit = session.get(Unit, item.unit_id)
                told.append((f"{item.role}@{unit.code}", f"{item.role}@{unit.id}"))
        elif kind == "owner":
            if case.owner:
                told.append((case.owner, case.owner))
        else:
            unit = session.get(Unit, case_unit(case, LEVEL_OF_ROLE[kind]))
            told.append((f"{kind}@{unit.code}", f"{kind}@{unit.id}"))
    return told
