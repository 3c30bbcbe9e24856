"""One step of a case, with no database: run SpiffWorkflow and say what happened.

`run_step(workflow, spec, command, now, deadline)` opens a case, completes one of its user tasks
or fires its due timers at `now`, then runs every automatic task, and returns an `Outcome`: the
events the step appends (not yet chained), the work items it made ready and the ones it closed,
the pending timers if they changed, and the case's facts (status, tier, category, ...). The
engine's service (engine/runtime.py) writes that outcome to the tables; replay, migration dry
runs and fan-outs call the same function on workflows of their own.

Everything the process decides comes from the diagram: a user task's `status` property says which
status it puts a case in, an automatic task's `event` property which event it records, a
supervision's `notify` property whom it tells (the service turns that into names, since that
needs the organisation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.specs.control import BoundaryEventJoin, _EndJoin
from SpiffWorkflow.bpmn.specs.event_definitions.timer import (
    CycleTimerEventDefinition,
    TimerEventDefinition,
)
from SpiffWorkflow.bpmn.util.event import BpmnEvent
from SpiffWorkflow.spiff.specs.event_definitions import SignalEventDefinition as SpiffSignal
from SpiffWorkflow.util.task import TaskState

from . import migration, spiffclock, treewalk
from .clock import as_utc, iso, parse_iso
from .errors import Conflict
from .sandbox import RestrictedScriptEngine
from .specs import TRANSFER_SIGNAL, Spec, TaskInfo

# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Open:
    """Start the case: `data` is what the `opened` event records."""

    data: dict


@dataclass(frozen=True)
class Complete:
    """Complete the READY user task `task_id` (a work item's task id) with its form's data."""

    task_id: str
    task: str  # the task's logical name, recorded on the event
    data: dict


@dataclass(frozen=True)
class Fire:
    """Fire every timer due at or before the step's instant."""


@dataclass(frozen=True)
class Transfer:
    """转办: send the case from the READY user task `task_id` to another grid, through the
    diagram's `transfer` signal boundary event on that task. `data` ({from, to, note}) becomes
    the process's data and the `transferred` event's."""

    task_id: str
    task: str  # the task's logical name, recorded on the event
    data: dict


@dataclass(frozen=True)
class Migrate:
    """Move the case from the version `source` it runs on to the step's spec (the target):
    engine/migration.py re-points the workflow, keeping the tasks it is at as they were, or
    raises Unmovable. The `migrated` event records both hashes."""

    source: Spec


Command = Open | Complete | Fire | Transfer | Migrate

# --------------------------------------------------------------------------- outcome


@dataclass(frozen=True)
class Ready:
    """A user task the step made ready: a new work item."""

    task_id: str
    info: TaskInfo
    due_at: datetime | None
    warn_at: datetime | None = None  # its 80% supervision


@dataclass(frozen=True)
class Supervision:
    """A supervision event whose data still needs names: the supervised item's task id and the
    diagram's `notify` property (holder, owner, tiers)."""

    event: int  # index into Outcome.events
    task_id: str | None
    notify: str


@dataclass(frozen=True)
class Facts:
    """What the case row says about the workflow after the step."""

    status: str | None  # None: unchanged (no user task ready and not finished)
    tier: str | None
    category: str | None
    severity: str | None
    satisfaction: str | None
    reopen_count: int
    closed: bool


@dataclass
class Outcome:
    workflow: BpmnWorkflow
    events: list[tuple[str, str | None, dict]]
    ready: list[Ready]
    closed: list[str]  # task ids of items no longer ready (completed or cancelled)
    still_open: list[str]  # task ids of items ready before and after
    timers: frozenset | None  # the pending timers (due_at, kind, element), None if unchanged
    facts: Facts
    supervisions: list[Supervision] = field(default_factory=list)
    escalated: bool = False  # the new items arrived by escalation
    overdue_marked: bool = False
    owner_cleared: bool = False  # a task with the `owner=clear` property ran (a transfer)
    ran: list = field(default_factory=list)  # the automatic tasks the step ran, in order


Deadline = Callable[[float, str], str]
# A user task's deadline as fixed when it became ready, kept on the task: a repeating timer's
# next repeat moves, the deadline does not (engine/deadlines.py).
DUE_AT = "gl_due_at"
# What an opened case's data holds when its process starts.
OPENING_WORDS = ("category", "severity")


def gl_between(start: str | datetime, end: str | datetime, fraction: float) -> str:
    """The instant `fraction` of the way from `start` to `end` (ISO 8601 instants with a time
    zone), as UTC text for a timeDate. A campaign's supervision is measured over the span from its
    launch to its due time (DESIGN §12), in clock time, so its timers need no calendar:
    `gl_between(launched_at, due_at, 0.8)` is its 80% instant, `gl_between(launched_at, due_at,
    1)` its due time. A naive instant, a span that ends before it starts or a fraction outside
    0..1 raises ValueError, which validation reports on the timer."""
    begin, finish = (t if isinstance(t, datetime) else parse_iso(t) for t in (start, end))
    begin, finish = as_utc(begin), as_utc(finish)
    if finish < begin:
        raise ValueError(f"the span ends ({iso(finish)}) before it starts ({iso(begin)})")
    if isinstance(fraction, bool) or not 0 <= fraction <= 1:
        raise ValueError(f"the fraction of the span must be between 0 and 1, not {fraction!r}")
    return iso(begin + (finish - begin) * fraction)


# Helpers diagram code may call besides gl_deadline, which depends on the step's instant and
# calendar and so comes from the caller: these depend on their arguments only.
STEP_HELPERS = {"gl_between": gl_between}


# --------------------------------------------------------------------------- the step


def run_step(
    workflow: BpmnWorkflow | None,
    spec: Spec,
    command: Command,
    now: datetime,
    deadline: Deadline,
) -> Outcome:
    """Run one step on `workflow` (None for Open) at `now`. Raises Conflict when the task to
    complete is not READY; any error from the diagram propagates, and the caller must then drop
    the workflow object (SpiffWorkflow changes it in place)."""
    if isinstance(command, Open):
        workflow = BpmnWorkflow(spec.process, spec.subprocesses)
    assert workflow is not None
    workflow.script_engine = RestrictedScriptEngine({"gl_deadline": deadline, **STEP_HELPERS})
    treewalk.bind(workflow)
    spiffclock.install()  # SpiffWorkflow's timers read the step's instant, never the real clock
    with spiffclock.step_clock(now):
        return _run(workflow, spec, command, now)


def _run(workflow: BpmnWorkflow, spec: Spec, command: Command, now: datetime) -> Outcome:
    events: list[tuple[str, str | None, dict]] = []
    waiting, ready_tasks = _scan(workflow)
    timers_before = _timers_of(waiting)
    missed = _catch_up_cycles(waiting, now) if not isinstance(command, Open) else {}
    ready_before = _user_tasks(ready_tasks)
    tier_before = next((t.data.get("tier") for t in ready_before.values()), None)
    if isinstance(command, Open):
        events.append(("opened", None, dict(command.data)))
        # The words given at opening are the process's first data (the accept limit reads the
        # severity); completing accept then sets them for good.
        for start in ready_tasks:
            words = spec.opening or OPENING_WORDS  # a campaign's are its span (specs.RULES)
            start.data.update({key: command.data.get(key) for key in words})
    elif isinstance(command, Complete):
        task = _ready(workflow, ready_before, command.task_id)
        events.append(("task_completed", command.task, dict(command.data)))
        task.data.update(command.data)
        task.run()
    elif isinstance(command, Transfer):
        task = _ready(workflow, ready_before, command.task_id)
        if task.task_spec.name not in spec.transferable:
            raise Conflict("this step cannot be sent to another grid")
        # The boundary event puts the payload in the process's data under the signal's
        # variableName; the `transferred` event reads it there.
        workflow.catch(BpmnEvent(SpiffSignal(TRANSFER_SIGNAL), dict(command.data)))
    elif isinstance(command, Fire) and not workflow.subprocesses:
        # The timers due by now fire here, so that the loop below runs them in its first pass:
        # do_engine_steps refreshes timers only at its end, which cost every firing a second pass.
        # Not with a subprocess: the loop's check reads the top level only, so a timer fired in a
        # subprocess can still be READY from an earlier step, and must run before the new ones,
        # as it always did (replay recomputes the stored events in that order).
        workflow.refresh_timers()
    elif isinstance(command, Migrate):
        migration.move_workflow(workflow, command.source, spec)
        events.append(
            (migration.MIGRATED, None, {"from": command.source.sha256, "to": spec.sha256})
        )

    # do_engine_steps ends by refreshing timers, which can leave fired boundary events READY but
    # not run: go on until nothing automatic is READY.
    ran: list = []
    while True:
        workflow.do_engine_steps(did_complete_task=ran.append)
        if not any(not t.task_spec.manual for t in _tasks(workflow, TaskState.READY)):
            break

    supervisions: list[Supervision] = []
    overdue_marked = owner_cleared = False
    for task in ran:
        props = getattr(task.task_spec, "extensions", {}).get("properties", {})
        if props.get("marksOverdue") == "true":
            overdue_marked = True
        if props.get("owner") == "clear":
            owner_cleared = True
        kind = props.get("event")
        if kind:
            attached = _attached_user_task(task) if kind == "supervised" else None
            data = _event_data(kind, task, attached, props, tier_before, missed)
            named = command.task if isinstance(command, Transfer) else None
            if kind == "supervised":  # it names the task it supervises
                if attached is not None:
                    named = spec.tasks[attached.task_spec.name].task
                supervisions.append(
                    Supervision(
                        len(events),
                        str(attached.id) if attached is not None else None,
                        props.get("notify", ""),
                    )
                )
            events.append((kind, named, data))

    waiting, ready_tasks = _scan(workflow)
    _prune_fired_cycles(workflow, waiting)
    if spec.loops_shed:
        _shed_passed_loops(workflow, ran)
    ready = _user_tasks(ready_tasks)
    new = []
    for task_id, task in ready.items():
        if task_id not in ready_before:
            due, warn = _timer_instant(task, "due"), _timer_instant(task, "warn")
            if due is not None:
                task.internal_data[DUE_AT] = iso(due)
            new.append(Ready(task_id, spec.tasks[task.task_spec.name], due, warn))
    started = next((r for r in reversed(new) if r.due_at is not None), None)
    if started is not None and events:
        last = events[-1][2]
        last.setdefault("tier", started.info.lane)
        last.setdefault("due_at", iso(started.due_at))
        if started.warn_at is not None:
            last.setdefault("warn_at", iso(started.warn_at))
    timers = _timers_of(waiting)
    return Outcome(
        workflow=workflow,
        events=events,
        ready=new,
        closed=[t for t in ready_before if t not in ready],
        still_open=[t for t in ready_before if t in ready],
        # A firing and a move refresh the timer rows whatever they hold.
        timers=None
        if timers == timers_before and not isinstance(command, Fire | Migrate)
        else timers,
        facts=_facts(workflow, spec, ready),
        supervisions=supervisions,
        escalated=any(kind == "escalated" for kind, _t, _d in events),
        overdue_marked=overdue_marked,
        owner_cleared=owner_cleared,
        ran=ran,
    )


def _event_data(
    kind: str, task, attached, props: dict, tier_before: str | None, missed: dict
) -> dict:
    if kind == "supervised":
        data: dict[str, Any] = {"tier": attached.task_spec.lane if attached else None}
        if attached is not None and DUE_AT in attached.internal_data:
            data["due_at"] = attached.internal_data[DUE_AT]  # fixed when it became ready
        if props.get("overdue") == "true" or props.get("marksOverdue") == "true":
            data["overdue"] = True  # the 100% supervision: the item is overdue from now on
        cycle = _cycle_of(task)
        if cycle is not None:
            data["missed"] = missed.get(cycle.id, 0)
        return data
    if kind == "escalated":
        return {"from": tier_before}
    if kind == "reopened":
        return {"reopen_count": int(task.data.get("reopen_count", 0))}
    if kind == "transferred":
        sent = task.data.get(TRANSFER_SIGNAL) or {}
        return {key: sent.get(key) for key in ("from", "to", "note")}
    return {}


def _facts(workflow: BpmnWorkflow, spec: Spec, ready: dict) -> Facts:
    tasks = list(ready.values())
    last = workflow.last_task
    data = tasks[0].data if tasks else (workflow.data or (last.data if last else {}))
    status = None
    closed = False
    if tasks:
        status = spec.tasks[tasks[0].task_spec.name].props["status"]  # the diagram says
    elif workflow.is_completed():
        status, closed = data.get("closed_as") or "archived", True
    return Facts(
        status=status,
        tier=data.get("tier"),
        category=data.get("category"),
        severity=data.get("severity"),
        satisfaction=data.get("satisfaction"),
        reopen_count=int(data.get("reopen_count") or 0),
        closed=closed,
    )


# --------------------------------------------------------------------------- reading the tree


def _tasks(workflow: BpmnWorkflow, state: TaskState) -> list:
    """Tasks in a state, read off the workflow's flat task dict: SpiffWorkflow's tree iterator
    costs several times more, and a step asks this a few times."""
    return [t for t in workflow.tasks.values() if t.state == state]


def _scan(workflow: BpmnWorkflow) -> tuple[list, list]:
    """The WAITING and the READY tasks, in one pass over the task dict."""
    waiting, ready = [], []
    for task in workflow.tasks.values():
        state = task.state
        if state == TaskState.WAITING:
            waiting.append(task)
        elif state == TaskState.READY:
            ready.append(task)
    return waiting, ready


def _user_tasks(ready: list) -> dict:
    return {str(t.id): t for t in ready if t.task_spec.manual}


def ready_user_tasks(workflow: BpmnWorkflow) -> dict:
    """The workflow's READY user tasks by task id: one open work item each."""
    return _user_tasks(_tasks(workflow, TaskState.READY))


def _ready(workflow: BpmnWorkflow, ready_before: dict, task_id: str):
    """The READY user task a command names, or Conflict."""
    task = ready_before.get(task_id) or _by_uuid(workflow, task_id)
    if task is None or task.state != TaskState.READY:
        raise Conflict("this task is no longer open")
    return task


def _by_uuid(workflow: BpmnWorkflow, task_id: str):
    try:
        return workflow.get_task_from_id(UUID(task_id))
    except (ValueError, KeyError):
        return None


def _timers_of(waiting: list) -> frozenset:
    """The pending timers among WAITING tasks, as (due_at, kind, element id)."""
    found = set()
    for task in waiting:
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


def _catch_up_cycles(waiting: list, now: datetime) -> dict:
    """A repeating timer fires once per step (DESIGN §7): when several of its repeats are due,
    skip to the last one due and remember how many were missed, by boundary task id."""
    missed = {}
    for task in waiting:
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


def _prune_fired_cycles(workflow: BpmnWorkflow, waiting: list) -> None:
    """Drop the older finished branches of repeating timers that still wait. SpiffWorkflow keeps
    every fired repeat (a town item supervised daily grows its tree, and every stored copy of it,
    by a branch a day), and nothing walks them again but the process's end join, which merges the
    data of every finished branch into the workflow's, in the order they finished. So the newest
    finished branch of each timer is kept (its data is what that merge ends with, for every key a
    repeat sets each time) and the older ones go: a case's state stays the same size however long
    it is supervised, and its events hold what every branch did. The names of the elements the
    dropped branches passed are recorded for a migration's check, as the shedding below does."""
    for task in waiting:
        if not isinstance(
            getattr(task.task_spec, "event_definition", None), CycleTimerEventDefinition
        ):
            continue
        # A firing adds one child per output of the timer (its branch, the join it waits in):
        # keep the newest finished child of each output, drop the older ones.
        newest: dict[str, object] = {}
        dropped = set()
        for child_id in task._children:
            if all(_spent(t) for t in _subtree(workflow, child_id)):
                output = workflow.tasks[child_id].task_spec.name
                if output in newest:
                    dropped.add(newest[output])
                newest[output] = child_id
        if not dropped:
            continue
        passed = set()
        for child_id in dropped:
            for t in _subtree(workflow, child_id):
                passed.add(t.task_spec.name)
                del workflow.tasks[t.id]
        task._children = [c for c in task._children if c not in dropped]
        if workflow.last_task is not None and workflow.last_task.id not in workflow.tasks:
            workflow.last_task = task
        _record_passed(workflow, passed)


def _shed_passed_loops(workflow: BpmnWorkflow, ran: list) -> None:
    """Drop what earlier passes of a loop left in the tree. SpiffWorkflow runs a loop (a case
    reopened at feedback) by new tasks below the old ones, so each reopening adds a whole pass to
    the tree, its stored copy and every walk of it. What the rest of a case reads of its past is
    the nearest finished task of an element above a task still to run (a boundary event's join
    finds its split that way, and `_attached_user_task` its user task), a parent's data, and its
    own children; so a finished ancestor that a newer task of the same element hides from every
    task still to run, from this step's tasks and from the last task run is dropped, with the
    finished branches hanging off it, and its children take its place among its parent's. The
    walk meets the remaining tasks in the same order, so the step's events and items are the
    same. Two things of the past are read otherwise, and stay: the ends those branches reached
    (the end event and its end-join task: the process's end join merges their data into the
    workflow's, which a closed case's facts read), and the names of the elements dropped, on the
    root task (migration.PASSED: a case cannot move to a version without an element it has
    passed). So the tree holds one or two passes of each element, and of each earlier pass only
    the ends its finished branches reached: two tasks for each, where a whole pass stayed before.

    Only for processes whose joins are boundary events' and the end's (Spec.loops_shed): a
    parallel or inclusive join reads the finished tasks of earlier passes."""
    tasks = workflow.tasks
    anchors = [t for t in tasks.values() if not t._state & TaskState.FINISHED_MASK]
    if not anchors:  # the process has ended: its tree stays as it ended
        return
    anchors.extend(ran)
    if workflow.last_task is not None:
        anchors.append(workflow.last_task)
    keep = {t.id for t in anchors}
    starts = {t._parent for t in anchors} - {None}
    on_path, needed = set(), set()
    # From each anchor's parent up: the nearest task of each element is needed. A walk can stop
    # at another start, whose own walk finds all it would find above there.
    for start in starts:
        seen, task = set(), tasks.get(start)
        while task is not None and (task.id == start or task.id not in starts):
            on_path.add(task.id)
            name = task.task_spec.name
            if name not in seen:
                seen.add(name)
                needed.add(task.id)
            task = tasks.get(task._parent)
    drop = {i for i in on_path - needed - keep if tasks[i]._state & TaskState.FINISHED_MASK}
    if not drop:
        return
    alive = on_path | keep
    passed = {tasks[i].task_spec.name for i in drop}
    for task_id in drop:
        task = tasks[task_id]
        children = []
        for child in task._children:
            if child in alive:
                children.append(child)
                continue
            # A finished branch off the dropped task goes, but for the ends it reached: the
            # process's end join merges the data of every finished end-join task's parent into
            # the workflow's (what a closed case's facts read), so those pairs stay, in place.
            stack = [child]
            while stack:
                t = tasks[stack.pop()]
                stack.extend(reversed(t._children))
                if isinstance(t.task_spec, _EndJoin) and t._parent in tasks:
                    end = tasks[t._parent]
                    end._children = [t.id]
                    children.append(end.id)
            ends = {c for c in children if c not in alive}
            for t in _subtree(workflow, child):
                if t.id not in ends and t._parent not in ends:
                    passed.add(t.task_spec.name)
                    del tasks[t.id]
        task._children = children
    for parent_id in {tasks[i]._parent for i in drop} - drop:
        parent = tasks[parent_id]
        children, stack = [], list(reversed(parent._children))
        while stack:
            child = stack.pop()
            if child in drop:
                stack.extend(reversed(tasks[child]._children))
            else:
                tasks[child]._parent = parent_id
                children.append(child)
        parent._children = children
    for task_id in drop:
        del tasks[task_id]
    _record_passed(workflow, passed)


def _record_passed(workflow: BpmnWorkflow, names: set) -> None:
    """What a case passed stays known to a migration's check (engine/migration.py) when the
    tasks that held it are dropped: a repeat's branch that once went another way at a gateway,
    a shed pass of a loop."""
    root = workflow.task_tree.internal_data
    known = root.get(migration.PASSED, ())
    if not names.issubset(known):
        root[migration.PASSED] = sorted(names.union(known))


def _spent(task) -> bool:
    """Finished, or the join a fired branch leaves waiting for the attached task: when that task
    finishes, its own branch's join decides, and these merge into it without a trace."""
    return bool(task.state & TaskState.FINISHED_MASK) or (
        task.state == TaskState.WAITING and isinstance(task.task_spec, BoundaryEventJoin)
    )


def _subtree(workflow: BpmnWorkflow, task_id) -> list:
    found, stack = [], [task_id]
    while stack:
        task = workflow.tasks.get(stack.pop())
        if task is not None:
            found.append(task)
            stack.extend(task._children)
    return found


def _timer_instant(user_task, kind: str) -> datetime | None:
    """When a user task's boundary timer of a `timer` kind comes due: `due`, the item's deadline;
    `warn`, its 80% supervision."""
    parent = user_task.parent
    for sibling in parent.children if parent else []:
        event = getattr(sibling.task_spec, "event_definition", None)
        props = getattr(sibling.task_spec, "extensions", {}).get("properties", {})
        if isinstance(event, TimerEventDefinition) and props.get("timer") == kind:
            value = sibling.internal_data.get("event_value")
            if isinstance(value, dict):  # a repeating timer: its next repeat is the deadline
                value = value.get("next")
            if isinstance(value, str):
                return parse_iso(value)
    return None
