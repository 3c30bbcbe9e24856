"""Replay (DESIGN §6): rebuild a case from its pinned diagram version and its events alone, through
the step function every normal step runs (engine/step.py), and compare with what is stored.

The events that move the workflow are inputs: `opened`, `task_completed`, `transferred` and
`migrated` become the commands Open, Complete, Transfer and Migrate at their recorded `at` (from
a `migrated` event on, the case runs on the version it moved to, moved as engine/migration.py
moved it); an event the process records of itself (supervised, escalated, reopened, archived,
rejected) that no input just produced is a timer firing at its recorded `at`, so it becomes Fire. Every event the replayed step produces is
rebuilt from the step's output and chained again; the first seq whose recomputed hash differs from
the stored one is where the case diverges. The bookkeeping events (claimed, released,
owner_changed) move no workflow: they are applied to the rebuilt rows only. At the end the rebuilt
rows (status, tier, owner, reopen count, grid, deadline, open work items, pending timers) are
compared with the stored ones.

What the step does not decide is taken from the stored event, as the service added it from the
organisation: who a supervision told (`notify`), and in whose name a delegate acted
(`on_behalf_of`). Deadlines come from the work calendar as it is now; when an administrator has
since changed a day the calendar had then, a deadline recomputes differently though the event is
intact (its hash still matches its chain), and replay then uses the recorded deadline, as DESIGN
§6 says, and counts it in `recorded_deadlines`.

With `frames=True` a replay also says, after each event, which diagram elements had run, which
user tasks were open, the deadline in force and which decision-table rows decided: the auditors'
step-through viewer draws those.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from SpiffWorkflow.exceptions import SpiffWorkflowException
from SpiffWorkflow.util.task import TaskState
from sqlalchemy import select
from sqlalchemy.orm import Session

from .clock import iso, parse_iso
from .errors import Conflict
from .events import GENESIS, as_dict, case_events, chain_hash
from .migration import MIGRATED
from .models import LEVEL_OF_ROLE, Case, DiagramVersion, Timer, Unit, WorkItem
from .specs import PROCESS_ID, Spec, SpecRegistry
from .step import (
    Complete,
    Fire,
    Migrate,
    Open,
    Outcome,
    Transfer,
    ready_user_tasks,
    run_step,
)
from .workcal import WorkCalendar, load_calendar

# A campaign's `visited` (engine/campaigns.py) records a household's visit on its grid's chain.
BOOKKEEPING = frozenset({"claimed", "released", "owner_changed", "visited"})
# What a step adds to the last event it records, beside the command's data: the tier and the
# deadlines of the task it started (engine/step.py).
STARTED = ("tier", "due_at", "warn_at")
# What the service adds to a step's events from outside the process: whom a supervision told,
# in whose name a delegate acted.
ADDED = {"supervised": ("notify", "due_at"), "task_completed": ("on_behalf_of",)}
ADDED_TO_ANY = ("on_behalf_of",)
MAX_CORRECTIONS = 20


@dataclass(frozen=True)
class Divergence:
    seq: int
    field: str  # "hash", or the state field that differs
    expected: Any  # what the replay recomputed
    found: Any  # what is stored

    def as_json(self) -> dict:
        return {
            "seq": self.seq,
            "field": self.field,
            "expected": self.expected,
            "found": self.found,
        }


@dataclass
class Frame:
    """The case as it stood after one event, for the step-through viewer."""

    seq: int
    ran: list[str]  # diagram elements that ran in this event's step
    done: list[str]  # every element that had run up to here
    active: list[str]  # the user tasks open after it (element ids)
    due_at: str | None  # the deadline in force
    decisions: list[dict]  # the decision-table rows that decided in this step


@dataclass
class ReplayResult:
    ok: bool
    events_replayed: int
    divergence: Divergence | None
    recorded_deadlines: int = 0
    frames: list[Frame] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "ok": self.ok,
            "events_replayed": self.events_replayed,
            "divergence": self.divergence.as_json() if self.divergence else None,
        }


class _Diverged(Exception):
    def __init__(self, divergence: Divergence):
        self.divergence = divergence


class _Recalendared(Exception):
    """A step's deadlines differ from an intact event's: the calendar changed since."""


@dataclass
class _Item:
    task: str
    spec: str
    role: str
    unit: str
    assignee: str | None
    claimed_by: str | None
    due_at: str | None
    warn_at: str | None

    def key(self) -> tuple:
        return (self.task, self.spec, self.role, self.unit, self.assignee, self.claimed_by,
                self.due_at, self.warn_at)  # fmt: skip


class _Rows:
    """The case's rows as the replay rebuilds them: what the projection would have written."""

    def __init__(self, session: Session):
        self.session = session
        self.status = "accepting"
        self.tier: str | None = None
        self.owner: str | None = None
        self.reopen_count = 0
        self.grid: str | None = None
        self.items: dict[str, _Item] = {}
        self.timers: list[tuple[str, str, str]] = []
        self._chains: dict[str, dict[str, str]] = {}

    def unit_at(self, level: str) -> str:
        chain = self._chains.get(self.grid or "")
        if chain is None:
            chain = _grid_chain(self.session, self.grid or "")
            self._chains[self.grid or ""] = chain
        return chain.get(level, "?")

    def apply(self, spec: Spec, outcome: Outcome, actor: str, data: dict, info=None) -> None:
        facts = outcome.facts
        if info is not None and info.props.get("owner") == "set":
            self.owner = data.get("on_behalf_of") or actor
        if outcome.owner_cleared:
            self.owner = None
        for task_id in outcome.closed:
            self.items.pop(task_id, None)
        for ready in outcome.ready:
            lane = ready.info.lane
            self.items[ready.task_id] = _Item(
                task=ready.info.task,
                spec=ready.info.spec,
                role=lane,
                unit=self.unit_at(LEVEL_OF_ROLE[lane]),
                assignee=self.owner if ready.info.props.get("assignee") == "owner" else None,
                claimed_by=None,
                due_at=iso(ready.due_at),
                warn_at=iso(ready.warn_at),
            )
        if facts.status:
            self.status = facts.status
        self.tier, self.reopen_count = facts.tier, facts.reopen_count
        if outcome.timers is not None:
            self.timers = sorted((iso(due), kind, name) for due, kind, name in outcome.timers)

    def bookkeeping(self, event: dict, stored_item: WorkItem | None) -> None:
        data = event["data"] if isinstance(event["data"], dict) else {}
        if event["type"] == "visited":
            return  # a visit moves no item
        if event["type"] == "owner_changed":
            self.owner = data.get("to")
            for item in self.items.values():
                if item.assignee is not None:
                    item.assignee = self.owner
            return
        item = self._item_named(event["task"], stored_item)
        if item is None:
            return
        if event["type"] == "claimed":
            item.claimed_by = data.get("on_behalf_of") or event["actor"]
        else:
            item.claimed_by = None

    def _item_named(self, task: str | None, stored_item: WorkItem | None) -> _Item | None:
        named = [i for i in self.items.values() if i.task == task]
        if len(named) > 1 and stored_item is not None:
            named = [i for i in named if i.spec == stored_item.spec] or named
        return named[0] if named else None

    def due_at(self) -> str | None:
        dues = [i.due_at for i in self.items.values() if i.due_at is not None]
        return min(dues) if dues else None


def replay(
    session: Session,
    case: Case,
    registry: SpecRegistry,
    calendar: WorkCalendar | None = None,
    frames: bool = False,
) -> ReplayResult:
    """Replay one case from its events and compare; `frames` also keeps what the viewer draws."""
    rows = case_events(session, case)
    calendar = calendar or load_calendar(session)
    corrections: dict[tuple[int, str], str] = {}
    for _attempt in range(MAX_CORRECTIONS):
        try:
            return _Replay(session, case, registry, calendar, corrections, frames).run(rows)
        except _Recalendared:
            continue
    return ReplayResult(
        False, 0, Divergence(0, "due_at", "deadlines that follow from the calendar", "too many")
    )


class _Replay:
    def __init__(self, session, case, registry, calendar, corrections, frames):
        self.session, self.case, self.registry = session, case, registry
        self.calendar, self.corrections, self.keep_frames = calendar, corrections, frames
        self.rows = _Rows(session)
        self.workflow = None
        self.spec: Spec | None = None
        self.step_no = 0
        self.step_at = None
        self.frames: list[Frame] = []
        self.done: list[str] = []

    # ------------------------------------------------------------------ the walk

    def run(self, events: list) -> ReplayResult:
        prev, pending = GENESIS, deque()
        replayed = 0
        try:
            for expected_seq, row in enumerate(events, start=1):
                if row.seq != expected_seq:
                    raise _Diverged(Divergence(expected_seq, "hash", None, "missing event"))
                try:
                    stored = as_dict(self.case.number, row)
                except ValueError:
                    raise _Diverged(Divergence(row.seq, "hash", None, "unreadable data")) from None
                ran: list[str] = []
                decisions: list[dict] = []
                if stored["type"] in BOOKKEEPING:
                    recomputed = stored
                    self.rows.bookkeeping(stored, self._stored_item(stored))
                else:
                    if not pending:
                        outcome = self._step_at(stored)
                        pending = deque(outcome.events)
                        ran, decisions = self._ran(outcome)
                        if not pending:  # the step records nothing: no such event can be
                            raise _Diverged(
                                Divergence(row.seq, "hash", "no event from this step", row.type)
                            )
                    type_, task, data = pending.popleft()
                    recomputed = self._event(stored, type_, task, data)
                digest = chain_hash(prev, recomputed)
                if digest != row.hash:
                    if recomputed is not stored and chain_hash(prev, stored) == row.hash:
                        self._learn_deadlines(recomputed, stored)
                    raise _Diverged(Divergence(row.seq, "hash", digest, row.hash))
                prev = digest
                replayed += 1
                if self.keep_frames:
                    self._frame(row.seq, ran, decisions)
            if pending:
                type_, _task, _data = pending[0]
                seq = len(events) + 1
                raise _Diverged(Divergence(seq, "hash", f"a {type_} event", None))
            self._compare(len(events))
        except _Diverged as diverged:
            return ReplayResult(
                False, replayed, diverged.divergence, len(self.corrections), self.frames
            )
        return ReplayResult(True, replayed, None, len(self.corrections), self.frames)

    def _step_at(self, stored: dict) -> Outcome:
        try:
            return self._step(stored)
        except _Diverged as diverged:  # said without a seq: it is this event's
            d = diverged.divergence
            raise _Diverged(
                Divergence(d.seq or stored["seq"], d.field, d.expected, d.found)
            ) from None

    def _step(self, stored: dict) -> Outcome:
        """Run the command an input event records, or a firing for a process event."""
        kind, data = stored["type"], stored["data"] if isinstance(stored["data"], dict) else {}
        if kind == MIGRATED:
            # The move the real migration made: from the version replayed so far to the one
            # this event is the first to name, through the same step.
            source = self.spec.sha256 if self.spec is not None else None
            if data.get("from") != source or data.get("to") != stored["diagram"]:
                raise _Diverged(Divergence(0, "hash", source, data.get("from")))
            spec = self._version(stored["diagram"])
        else:
            spec = self._spec_of(stored["diagram"])
        at = parse_iso(stored["at"])
        self.step_no += 1
        self.step_at = stored["at"]
        info = None
        if kind == "opened":
            # What the step added of the item it started goes; what opened the process stays
            # (a campaign's instance opens with its due_at).
            command: Any = Open(
                {k: v for k, v in data.items() if k not in STARTED or k in spec.opening}
            )
            self.rows.grid = data.get("grid")
        elif kind == "task_completed":
            task_id, info = self._ready(stored["task"])
            fields = spec.forms.get(info.form, {}).get("properties", {})
            command = Complete(task_id, info.task, {k: v for k, v in data.items() if k in fields})
        elif kind == "transferred":
            task_id, info = self._ready(stored["task"])
            command = Transfer(task_id, info.task, {k: data.get(k) for k in ("from", "to", "note")})
            info = None
        elif kind == MIGRATED:
            command = Migrate(self.spec)
            self.spec = spec  # the events from here on name the new version
        else:
            command = Fire()
        if self.workflow is None and not isinstance(command, Open):
            raise _Diverged(Divergence(stored["seq"], "hash", "an opened event first", kind))
        try:
            outcome = run_step(self.workflow, spec, command, at, self._deadline)
        except (Conflict, SpiffWorkflowException) as exc:  # the diagram cannot run this event
            raise _Diverged(Divergence(stored["seq"], "hash", str(exc)[:300], kind)) from exc
        self.workflow = outcome.workflow
        if isinstance(command, Transfer):
            self.rows.grid = data.get("to")
        self.rows.apply(spec, outcome, stored["actor"], data, info)
        return outcome

    def _deadline(self, hours: float, clock: str) -> str:
        urgent = clock == "clock"
        calendar = WorkCalendar() if urgent else self.calendar
        computed = iso(calendar.add_hours(parse_iso(self.step_at), hours, urgent))
        return self.corrections.get((self.step_no, computed), computed)

    def _learn_deadlines(self, recomputed: dict, stored: dict) -> None:
        """An intact event whose deadlines alone differ from the replay's: the calendar has
        changed since; replay again with the recorded deadlines for this step."""
        mine, theirs = recomputed["data"], stored["data"]
        if not isinstance(theirs, dict) or not isinstance(mine, dict):
            return
        keys = ("due_at", "warn_at")
        rest = {k: v for k, v in mine.items() if k not in keys}
        if rest != {k: v for k, v in theirs.items() if k not in keys}:
            return
        if {k: recomputed[k] for k in recomputed if k != "data"} != {
            k: stored[k] for k in stored if k != "data"
        }:
            return
        learned = False
        for key in keys:
            old, new = mine.get(key), theirs.get(key)
            if isinstance(old, str) and isinstance(new, str) and old != new:
                if (self.step_no, old) not in self.corrections:
                    self.corrections[(self.step_no, old)] = new
                    learned = True
        if learned:
            raise _Recalendared()

    def _ready(self, task: str | None):
        """The open user task an event names by its logical task name."""
        ready = ready_user_tasks(self.workflow) if self.workflow is not None else {}
        spec = self.spec
        for task_id, t in ready.items():
            info = spec.tasks[t.task_spec.name]
            if info.task == task:
                return task_id, info
        raise _Diverged(Divergence(0, "hash", f"an open {task} task", "none open"))

    def _spec_of(self, sha: str) -> Spec:
        if self.spec is None or self.spec.sha256 != sha:
            if self.spec is not None:  # a version change without a migrated event
                raise _Diverged(Divergence(0, "hash", self.spec.sha256, sha))
            self.spec = self._version(sha)
        return self.spec

    def _version(self, sha: str) -> Spec:
        process = getattr(self.case, "process", None) or PROCESS_ID
        spec = self.registry.parsed(sha, process)
        if spec is None:
            version = self.session.scalars(
                select(DiagramVersion).where(DiagramVersion.sha256 == sha)
            ).first()
            if version is None:
                raise _Diverged(Divergence(0, "hash", "a stored diagram version", sha))
            spec = self.registry.get(version, process)
        return spec

    def _event(self, stored: dict, type_: str, task: str | None, data: dict) -> dict:
        """The event as the replayed step records it, with what the service added to it from
        outside the process taken from the stored one."""
        theirs = stored["data"] if isinstance(stored["data"], dict) else {}
        data = dict(data)
        for key in ADDED.get(type_, ()) + ADDED_TO_ANY:
            if key in theirs and key not in data:
                data[key] = theirs[key]
        return {
            "case": self.case.number,
            "seq": stored["seq"],
            "at": self.step_at,
            "type": type_,
            "actor": stored["actor"],
            "task": task,
            "data": data,
            "diagram": self.spec.sha256 if self.spec else stored["diagram"],
        }

    def _stored_item(self, event: dict) -> WorkItem | None:
        data = event["data"] if isinstance(event["data"], dict) else {}
        item_id = data.get("work_item")
        return self.session.get(WorkItem, item_id) if isinstance(item_id, int) else None

    # ------------------------------------------------------------------ frames

    def _ran(self, outcome: Outcome) -> tuple[list[str], list[dict]]:
        if not self.keep_frames:
            return [], []
        ran, decisions = [], []
        for task in outcome.ran:
            ran.append(task.task_spec.name)
            decisions.extend(_decided(task))
        return ran, decisions

    def _frame(self, seq: int, ran: list[str], decisions: list[dict]) -> None:
        self.done.extend(name for name in ran if name not in self.done)
        active = []
        if self.workflow is not None:
            active = sorted(t.task_spec.name for t in ready_user_tasks(self.workflow).values())
            for task in self.workflow.tasks.values():
                if task.state == TaskState.COMPLETED and task.task_spec.manual:
                    if task.task_spec.name not in self.done:
                        self.done.append(task.task_spec.name)
        self.frames.append(
            Frame(seq, list(ran), list(self.done), active, self.rows.due_at(), decisions)
        )

    # ------------------------------------------------------------------ the comparison

    def _compare(self, last_seq: int) -> None:
        case, rows = self.case, self.rows
        stored_items = self.session.scalars(
            select(WorkItem).where(WorkItem.case_id == case.id, WorkItem.completed_at.is_(None))
        ).all()
        codes = _codes(self.session, {i.unit_id for i in stored_items} | {case.grid_id})
        found_items = sorted(
            (
                i.task,
                i.spec,
                i.role,
                codes.get(i.unit_id),
                i.assignee,
                i.claimed_by,
                iso(i.due_at),
                iso(i.warn_at),
            )  # fmt: skip
            for i in stored_items
        )
        found_timers = sorted(
            (iso(t.due_at), t.kind, t.name)
            for t in self.session.scalars(select(Timer).where(Timer.case_id == case.id))
        )
        checks = [
            ("status", rows.status, case.status),
            ("tier", rows.tier, case.tier),
            ("owner", rows.owner, case.owner),
            ("reopen_count", rows.reopen_count, case.reopen_count),
            ("grid", rows.grid, codes.get(case.grid_id)),
            ("due_at", rows.due_at(), iso(case.due_at)),
            ("work_items", sorted(i.key() for i in rows.items.values()), found_items),
            ("timers", rows.timers, found_timers),
        ]
        for name, expected, found in checks:
            if expected != found:
                if name in ("work_items", "timers"):
                    expected, found = [list(x) for x in expected], [list(x) for x in found]
                raise _Diverged(Divergence(last_seq, name, expected, found))


def _decided(task) -> list[dict]:
    """The rows of a business rule task's decision table that matched, judged on the data the
    task had before its outputs were merged in (a table may read and write `tier`)."""
    engine = getattr(task.task_spec, "dmnEngine", None)
    if engine is None:
        return []
    table = engine.decision_table
    outputs = {o.name for o in table.outputs}
    before = task.parent.data if task.parent is not None else {}
    saved = task.data
    task.data = {**saved, **{k: v for k, v in before.items() if k in outputs}}
    try:
        rules = engine.decide(task)
    except Exception:  # a table that cannot be judged again says nothing, and changes nothing
        rules = []
    finally:
        task.data = saved
    return [
        {
            "element": task.task_spec.name,
            "table": table.name or table.id,
            "rule": rule.id,
            "row": rule.row_number,
            "description": rule.description,
            "outputs": {k: _plain(v) for k, v in rule.output_as_dict(task).items()},
        }
        for rule in rules
    ]


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _codes(session: Session, unit_ids: set[int]) -> dict[int, str]:
    if not unit_ids:
        return {}
    return dict(session.execute(select(Unit.id, Unit.code).where(Unit.id.in_(unit_ids))).all())


def _grid_chain(session: Session, code: str) -> dict[str, str]:
    """A grid's code and its district's, village's and town's, by level (units keep their codes)."""
    chain: dict[str, str] = {}
    unit = session.scalars(select(Unit).where(Unit.code == code, Unit.level == "grid")).first()
    while unit is not None:
        chain[unit.level] = unit.code
        unit = unit.parent
    return chain
