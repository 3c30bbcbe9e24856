"""The use cases of a case: open it, claim, release and complete its work items, fire its timers.

Each use case is one step: it reads the clock once, runs the pinned diagram version, and commits the
case row, its work items, timers and events in one transaction, guarded by the case's version
counter. The process itself (who handles, when it escalates) is in the diagram and the DMN tables;
this module only moves the workflow and mirrors it into tables that inboxes can query.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.specs.event_definitions.timer import (
    CycleTimerEventDefinition,
    TimerEventDefinition,
)
from SpiffWorkflow.util.task import TaskState
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import flag_modified
from sqlalchemy.orm.exc import StaleDataError

from . import notify, spiffclock
from .access import Viewer, can_see_case, eligible_town_leaders, may_act
from .clock import SHANGHAI, Clock, iso, parse_iso
from .deadlines import case_deadline
from .errors import Conflict, Forbidden, Invalid, NotFound
from .events import Chain, reporter_hash, reporter_record
from .models import (
    LEVEL_OF_ROLE,
    TIER_ABOVE,
    Case,
    CaseDepartment,
    Counter,
    Reporter,
    Timer,
    Unit,
    WorkItem,
    case_unit,
)
from .sandbox import RestrictedScriptEngine
from .serializer import make_serializer
from .specs import OPEN_STATUSES, Spec, SpecRegistry, TaskInfo, latest_version
from .words import version_choices
from .workcal import WorkCalendar, load_calendar

log = logging.getLogger(__name__)
OPEN = frozenset(OPEN_STATUSES)
MAX_ATTEMPTS = 4


@dataclass
class StepContext:
    """One step: its instant, its actor and what it appended. Built fresh for every attempt."""

    session: Session
    now: datetime
    actor: str
    calendar: WorkCalendar | None = None
    events: list[tuple[str, str | None, dict]] = field(default_factory=list)
    hot: tuple[Case, BpmnWorkflow] | None = None
    timers_before: frozenset | None = frozenset()
    ready_before: frozenset[str] = frozenset()
    missed: dict = field(
        default_factory=dict
    )  # repeating timers' missed repeats, by task id  # ids of the user tasks READY before the step
    items: dict[str, WorkItem] = field(default_factory=dict)  # work items loaded, by task id

    def work_calendar(self) -> WorkCalendar:
        if self.calendar is None:
            self.calendar = load_calendar(self.session)
        return self.calendar


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

        def step(ctx: StepContext) -> Case:
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
            case = Case(
                number=self._next_number(session, town.code, ctx.now),
                title=title,
                description=description or "",
                category=category,
                severity=severity,
                household=household,
                town_id=town.id,
                village_id=village.id,
                district_id=district.id,
                grid_id=grid_unit.id,
                status="accepting",
                opened_at=ctx.now,
                updated_at=ctx.now,
                reopen_count=0,
                diagram_id=version.id,
                workflow="",
            )
            session.add(case)
            session.flush()
            workflow = BpmnWorkflow(spec.process, spec.subprocesses)
            data = {
                "title": title,
                "description": description or "",
                "grid": grid,
                "category": category,
                "severity": severity,
                "household": household,
            }
            if reporter:
                # The reporter's details stay in their own table; the chain covers them by hash.
                record = reporter_record(reporter.get("name"), reporter.get("phone"))
                salt = secrets.token_hex(16)
                session.add(Reporter(case_id=case.id, salt=salt, **record))
                data["reporter_hash"] = reporter_hash(salt, record)
            ctx.events.append(("opened", None, data))
            self._advance(ctx, case, spec, workflow, lambda: None)

            def claim_accept(items: list[WorkItem]) -> None:
                if actor is not None:
                    session.flush()  # the claimed event names the item's id
                    items[0].claimed_by, items[0].claimed_at = actor.username, ctx.now
                    ctx.events.append(("claimed", items[0].task, {"work_item": items[0].id}))

            self._save(ctx, case, spec, workflow, claim_accept)
            return case

        return self._run(session, None, actor.username if actor else "system", step)

    def claim(self, session: Session, actor: Viewer, item_id: int) -> WorkItem:
        def step(ctx: StepContext) -> WorkItem:
            item, case = self._actionable(ctx.session, actor, item_id)
            if item.claimed_by not in (None, actor.username):
                raise Conflict(f"already claimed by {item.claimed_by}")
            if item.claimed_by is None:
                item.claimed_by, item.claimed_at = actor.username, ctx.now
                self._touch(ctx, case, "claimed", item, {"work_item": item.id})
            return item

        return self._run(session, None, actor.username, step)

    def release(self, session: Session, actor: Viewer, item_id: int) -> WorkItem:
        def step(ctx: StepContext) -> WorkItem:
            item, case = self._actionable(ctx.session, actor, item_id)
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

        def step(ctx: StepContext) -> Case:
            session = ctx.session
            item, case = self._actionable(session, actor, item_id)
            ctx.items[item.task_id] = item
            if item.claimed_by not in (None, actor.username):
                raise Conflict(f"claimed by {item.claimed_by}")
            spec = self.registry.get(case.diagram)
            info = spec.tasks[item.spec]
            form = validate_form(spec, info, data)
            departments = self._departments(session, case, form)
            workflow = self._load(session, case)
            task = workflow.get_task_from_id(UUID(item.task_id))
            if task is None or task.state != TaskState.READY:
                raise Conflict("this task is no longer open")
            item.claimed_by = item.claimed_by or actor.username
            item.completed_by = actor.username
            if info.props.get("owner") == "set":
                case.owner = actor.username
            for unit in departments:
                if session.get(CaseDepartment, (case.id, unit.id)) is None:
                    session.add(CaseDepartment(case_id=case.id, unit_id=unit.id))
            ctx.events.append(("task_completed", info.task, dict(form)))

            def run_task() -> None:
                task.data.update(form)
                task.run()

            self._advance(ctx, case, spec, workflow, run_task)
            self._save(ctx, case, spec, workflow)
            return case

        return self._run(session, None, actor.username, step)

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
            case = session.get(Case, case_id)
            if case is None or case.status not in OPEN:
                session.execute(delete(Timer).where(Timer.case_id == case_id))
                return False
            due = session.scalar(
                select(Timer.id).where(Timer.case_id == case_id, Timer.due_at <= ctx.now).limit(1)
            )
            if due is None:
                return False  # another process fired them first
            spec = self.registry.get(case.diagram)
            workflow = self._load(session, case)
            self._advance(ctx, case, spec, workflow, lambda: None)
            ctx.timers_before = None  # a due row was found: rewrite the rows whatever happened
            self._save(ctx, case, spec, workflow)
            return True

        return self._run(session, as_of, "system", step)

    # ----------------------------------------------------------------- the step machinery

    def _run(
        self, session: Session, at: datetime | None, actor: str, step: Callable[[StepContext], Any]
    ) -> Any:
        """Run a step in one transaction; retry it from scratch when a concurrent step changed the
        case first (the retry then sees the new state and usually answers 409 itself)."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            session.rollback()
            session.expire_all()
            ctx = StepContext(session, at or self.clock.now(), actor)
            try:
                # No autoflush: a step writes when it is done, not whenever it reads, and diagram
                # code that reads (the calendar) never flushes half a step.
                with spiffclock.step_clock(ctx.now), session.no_autoflush:
                    result = step(ctx)
                session.commit()
            except (StaleDataError, IntegrityError, OperationalError) as exc:
                session.rollback()
                self._forget(ctx)
                if attempt == MAX_ATTEMPTS or not _is_concurrency(exc):
                    if _is_concurrency(exc):
                        raise Conflict("the case changed meanwhile; try again") from exc
                    raise
                continue
            except BaseException:
                session.rollback()
                self._forget(ctx)
                raise
            if ctx.hot is not None:
                case, workflow = ctx.hot
                self._remember(case.id, case.version, workflow)
            return result
        raise AssertionError("unreachable")

    def _forget(self, ctx: StepContext) -> None:
        if ctx.hot is not None:
            self._hot.pop(ctx.hot[0].id, None)

    def _remember(self, case_id: int, version: int, workflow: BpmnWorkflow) -> None:
        workflow.script_engine = None  # it holds the step's context; each step sets its own
        self._hot[case_id] = (version, workflow)
        self._hot.move_to_end(case_id)
        while len(self._hot) > self._hot_limit:
            self._hot.popitem(last=False)

    def _load(self, session: Session, case: Case) -> BpmnWorkflow:
        self.registry.get(case.diagram)
        hot = self._hot.pop(case.id, None)
        if hot is not None and hot[0] == case.version:
            return hot[1]
        return self.serializer.deserialize_json(case.workflow)

    def _actionable(self, session: Session, actor: Viewer, item_id: int) -> tuple[WorkItem, Case]:
        item = (
            session.get(WorkItem, item_id, options=[joinedload(WorkItem.case)])
            if 0 < item_id < 2**31  # an Integer column: 32-bit on PostgreSQL
            else None
        )
        if item is None:
            raise NotFound("no such work item")
        case = item.case
        if not can_see_case(session, actor, case):
            raise NotFound("no such work item")
        if item.completed_at is not None and item.cancelled:
            raise Conflict("this item was closed: the case moved on")
        if item.completed_at is not None:
            raise Conflict("this item was already completed")
        if not may_act(session, actor, item):
            raise Forbidden("you may see this item but not work it")
        return item, case

    def _touch(self, ctx: StepContext, case: Case, type_: str, item: WorkItem, data: dict) -> None:
        """A step that changes no workflow still bumps the case version and appends its event."""
        case.updated_at = ctx.now
        flag_modified(case, "updated_at")  # the versioned UPDATE runs even at the same instant
        chain = Chain.open(ctx.session, case)
        chain.append(iso(ctx.now), type_, ctx.actor, item.task, data, case.diagram.sha256)

    def _advance(
        self,
        ctx: StepContext,
        case: Case,
        spec: Spec,
        workflow: BpmnWorkflow,
        action: Callable[[], None],
    ) -> None:
        """Run `action`, then every automatic task and due timer, recording diagram events."""
        tier_before = case.tier
        ran: list = []
        workflow.script_engine = self._script_engine(ctx)
        ctx.timers_before = _timers_of(workflow)
        ctx.missed = _catch_up_cycles(workflow, ctx.now)
        ctx.ready_before = frozenset(_ready_user_tasks(workflow))
        action()
        # do_engine_steps ends by refreshing timers, which can leave fired boundary events READY
        # but not run: go on until nothing automatic is READY.
        while True:
            workflow.do_engine_steps(did_complete_task=ran.append)
            if not any(not t.task_spec.manual for t in _tasks(workflow, TaskState.READY)):
                break
        for task in ran:
            props = getattr(task.task_spec, "extensions", {}).get("properties", {})
            if props.get("marksOverdue") == "true":
                case.overdue_marked = True
            kind = props.get("event")
            if kind:
                ctx.events.append(
                    (kind, None, self._event_data(ctx, case, task, props, tier_before))
                )

    def _event_data(self, ctx, case, task, props, tier_before) -> dict:
        kind = props["event"]
        if kind == "supervised":
            attached = _attached_user_task(task)
            item = None
            if attached is not None:
                item = ctx.session.scalars(
                    select(WorkItem).where(
                        WorkItem.case_id == case.id, WorkItem.task_id == str(attached.id)
                    )
                ).first()
            data: dict[str, Any] = {"tier": attached.task_spec.lane if attached else None}
            if item is not None:
                item.supervised_at = ctx.now
                data["due_at"] = iso(item.due_at)
                data["notify"] = _notify_list(ctx.session, case, item, props.get("notify", ""))
            if props.get("marksOverdue") == "true":
                data["overdue"] = True
            cycle = _cycle_of(task)
            if cycle is not None:
                data["missed"] = ctx.missed.get(cycle.id, 0)
            return data
        if kind == "escalated":
            return {"from": tier_before}
        if kind == "reopened":
            return {"reopen_count": int(task.data.get("reopen_count", 0))}
        return {}

    def _save(
        self,
        ctx: StepContext,
        case: Case,
        spec: Spec,
        workflow: BpmnWorkflow,
        on_new_items: Callable[[list[WorkItem]], None] | None = None,
    ) -> None:
        """Mirror the workflow into the case row, work items and timers; append the events."""
        session = ctx.session
        ready = _ready_user_tasks(workflow)
        # Work items mirror READY user tasks one to one, so the workflow says which items closed
        # and which are new: no need to read the case's open items.
        for item in self._items_of(ctx, case, ctx.ready_before - ready.keys()):
            item.completed_at = ctx.now
            if item.completed_by is None:
                item.cancelled = True
        started, new_items = None, []
        for task_id, task in ready.items():
            if task_id in ctx.ready_before:
                continue
            item = self._new_item(ctx, case, spec.tasks[task.task_spec.name], task)
            new_items.append(item)
            if item.due_at is not None:
                started = item
        if any(type_ == "escalated" for type_, _t, _d in ctx.events):
            for item in new_items:
                item.escalated = True
        if on_new_items is not None:
            on_new_items(new_items)
        timers = _timers_of(workflow)
        if timers != ctx.timers_before:
            self._refresh_timers(session, case, timers)
        self._update_case(ctx, case, workflow, ready)
        if ready.keys() != ctx.ready_before:
            # Deadlines are fixed when an item becomes ready; the case's is its earliest open one.
            still_open = self._items_of(ctx, case, ready.keys() & ctx.ready_before)
            case.due_at = case_deadline(still_open + new_items, ctx.now).due_at
        if started is not None and ctx.events:
            last = ctx.events[-1][2]
            last.setdefault("tier", started.role)
            last.setdefault("due_at", iso(started.due_at))
        chain = Chain.open(session, case)
        for type_, task_name, data in ctx.events:
            chain.append(iso(ctx.now), type_, ctx.actor, task_name, data, spec.sha256)
        notify.on_step(session, case, ctx.events, new_items, ctx.now, spec.forms)
        case.workflow = self.serializer.serialize_json(workflow)
        ctx.hot = (case, workflow)

    def _new_item(self, ctx: StepContext, case: Case, info: TaskInfo, task) -> WorkItem:
        level = LEVEL_OF_ROLE[info.lane]
        unit_id = case_unit(case, level)
        item = WorkItem(
            case_id=case.id,
            task_id=str(task.id),
            spec=info.spec,
            task=info.task,
            name=info.name,
            form=info.form,
            role=info.lane,
            unit_id=unit_id,
            village_id=case.village_id,
            created_at=ctx.now,
            due_at=_deadline_of(task),
        )
        if info.props.get("assignee") == "owner":
            item.assignee = case.owner
        not_by = info.props.get("notBy")
        if not_by:
            previous = ctx.session.scalar(
                select(WorkItem.completed_by)
                .where(
                    WorkItem.case_id == case.id,
                    WorkItem.task == not_by,
                    WorkItem.completed_by.is_not(None),
                )
                .order_by(WorkItem.id.desc())
                .limit(1)
            )
            others = set(eligible_town_leaders(ctx.session, case.village_id, case.town_id))
            if previous and others - {previous}:
                item.excluded = previous
        ctx.session.add(item)
        return item

    def _update_case(
        self, ctx: StepContext, case: Case, workflow: BpmnWorkflow, ready: dict
    ) -> None:
        tasks = list(ready.values())
        data = tasks[0].data if tasks else (workflow.data or workflow.last_task.data)
        case.updated_at = ctx.now
        case.category = data.get("category") or case.category
        case.severity = data.get("severity") or case.severity
        case.tier = data.get("tier")
        case.satisfaction = data.get("satisfaction")
        case.reopen_count = int(data.get("reopen_count") or 0)
        if tasks:
            info = self.registry.by_process(workflow.spec).tasks[tasks[0].task_spec.name]
            case.status = info.props["status"]  # the diagram says (DESIGN §1)
        elif workflow.is_completed():
            case.status = data.get("closed_as") or "archived"
            case.closed_at = ctx.now

    def _refresh_timers(self, session: Session, case: Case, wanted: frozenset) -> None:
        """Make the case's timer rows equal the workflow's pending timers."""
        rows = list(session.scalars(select(Timer).where(Timer.case_id == case.id)))
        have = {(r.due_at, r.kind, r.name): r for r in rows}
        for key, row in have.items():
            if key not in wanted:
                session.delete(row)
        for due_at, kind, name in wanted - set(have):
            session.add(Timer(case_id=case.id, due_at=due_at, kind=kind, name=name))

    def _items_of(self, ctx: StepContext, case: Case, task_ids) -> list[WorkItem]:
        missing = [t for t in task_ids if t not in ctx.items]
        if missing:
            rows = ctx.session.scalars(
                select(WorkItem).where(WorkItem.case_id == case.id, WorkItem.task_id.in_(missing))
            )
            ctx.items.update({row.task_id: row for row in rows})
        return [ctx.items[t] for t in task_ids if t in ctx.items]

    def _departments(self, session: Session, case: Case, form: dict) -> list[Unit]:
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
            session.add(Counter(key=key, value=1))
            session.flush()
        value = session.scalar(select(Counter.value).where(Counter.key == key))
        return f"{town_code}-{year}-{value:06d}"

    def _script_engine(self, ctx: StepContext) -> RestrictedScriptEngine:
        def gl_deadline(hours: float, clock: str) -> str:
            """The instant `hours` of limit run out, counted from this step's instant."""
            urgent = clock == "clock"
            calendar = WorkCalendar() if urgent else ctx.work_calendar()
            return iso(calendar.add_hours(ctx.now, hours, urgent))

        return RestrictedScriptEngine({"gl_deadline": gl_deadline})


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


def _is_concurrency(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, StaleDataError | IntegrityError):
        return True
    text = str(exc).lower()
    return "locked" in text or "could not serialize" in text or "deadlock" in text


def _tasks(workflow: BpmnWorkflow, state: TaskState) -> list:
    """Tasks in a state, read off the workflow's flat task dict: SpiffWorkflow's tree iterator
    costs several times more, and steps ask this a few times each."""
    return [t for t in workflow.tasks.values() if t.state == state]


def _ready_user_tasks(workflow: BpmnWorkflow) -> dict:
    return {str(t.id): t for t in _tasks(workflow, TaskState.READY) if t.task_spec.manual}


def _timers_of(workflow: BpmnWorkflow) -> frozenset:
    """The workflow's pending timers as (due_at, kind, element id)."""
    found = set()
    for task in _tasks(workflow, TaskState.WAITING):
        event = getattr(task.task_spec, "event_definition", None)
        if isinstance(event, TimerEventDefinition):
            value = event.details(task).value
            if value:
                props = task.task_spec.extensions.get("properties", {})
                found.add((parse_iso(value), props.get("timer", "timer"), task.task_spec.name))
    return frozenset(found)


def _attached_user_task(task):
    """The user task a boundary event (or a task on its branch) hangs on: the manual sibling
    found under the nearest BoundaryEventSplit above it."""
    parent = task.parent
    while parent is not None:
        for child in parent.children:
            if child.task_spec.manual:
                return child
        parent = parent.parent
    return None


def _cycle_of(task):
    """The repeating timer a task's branch started from, if any."""
    parent = task.parent
    while parent is not None:
        if isinstance(
            getattr(parent.task_spec, "event_definition", None), CycleTimerEventDefinition
        ):
            return parent
        parent = parent.parent
    return None


def _catch_up_cycles(workflow: BpmnWorkflow, now: datetime) -> dict:
    """A repeating timer fires once per step (DESIGN §7): when several of its repeats are due,
    skip to the last one due and remember how many were missed, by boundary task id."""
    missed = {}
    for task in _tasks(workflow, TaskState.WAITING):
        if not isinstance(
            getattr(task.task_spec, "event_definition", None), CycleTimerEventDefinition
        ):
            continue
        value = task.internal_data.get("event_value")
        if not isinstance(value, dict) or value.get("cycles") == 0:
            continue
        due, step = datetime.fromisoformat(value["next"]), timedelta(seconds=value["duration"])
        late = int((now - due) / step) if due <= now and step.total_seconds() > 0 else 0
        if late > 0:
            value["next"] = (due + late * step).isoformat()
            if value["cycles"] > 0:
                value["cycles"] = max(1, value["cycles"] - late)
        missed[task.id] = late
    return missed


def _deadline_of(user_task) -> datetime | None:
    """A work item's deadline: the `timer=due` boundary timer's evaluated instant."""
    parent = user_task.parent
    for sibling in parent.children if parent else []:
        event = getattr(sibling.task_spec, "event_definition", None)
        props = getattr(sibling.task_spec, "extensions", {}).get("properties", {})
        if isinstance(event, TimerEventDefinition) and props.get("timer") == "due":
            value = sibling.internal_data.get("event_value")
            if isinstance(value, dict):  # a repeating timer: its next repeat is the deadline
                value = value.get("next")
            if isinstance(value, str):
                return parse_iso(value)
    return None


def _notify_list(session: Session, case: Case, item: WorkItem, who: str) -> list[str]:
    """Who a supervision notice (督办) goes to, as the diagram's `notify` property lists them:
    `holder` (whoever claimed the item, else its role at its unit), `owner` (the case's owner,
    if it has one yet), or a tier, meaning that role at its level of the case's units."""
    if not who:  # a version deployed before `notify` existed: its rule, the tier above
        above = TIER_ABOVE.get(item.role)
        who = "holder,owner" + (f",{above}" if above else "")
    recipients: list[str] = []
    for kind in (k.strip() for k in who.split(",") if k.strip()):
        if kind == "holder":
            unit = session.get(Unit, item.unit_id)
            recipients.append(item.claimed_by or f"{item.role}@{unit.code}")
        elif kind == "owner":
            if case.owner:
                recipients.append(case.owner)
        else:
            unit = session.get(Unit, case_unit(case, LEVEL_OF_ROLE[kind]))
            recipients.append(f"{kind}@{unit.code}")
    return recipients
