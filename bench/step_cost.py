"""What a persisted step costs: the engine against bare SpiffWorkflow on the same diagrams.

Run on demand (not a test), or `make bench`:
    .venv/bin/python bench/step_cost.py [--cases N] [--rounds R] [--cold] [--profile]
                                        [--history | --no-history] [--history-cases N]

Two measurements: the step table (below), then the history table (further below). `--history`
runs only the history table, `--no-history` only the step table.

Each case goes through the whole loop: open, accept, handle (resolved at the grid), feedback
(satisfied), report, review (approved), archived. That is 5 user steps; opening the case is timed
too, and every figure is "ms per *user* step" = (open + 5 completions) / 5.

  engine  engine.runtime.Runtime on a fresh SQLite file database (WAL, synchronous=NORMAL, set by
          engine.storage.make_engine); every step is its own committed transaction. One session
          serves a whole round, as in a worker. --cold adds a round with the runtime's in-process
          workflow cache off, so every step restores the case from its blob.
  bare    BpmnWorkflow in memory on the same parsed spec: task.data.update(form); task.run();
          workflow.do_engine_steps(). No persistence at all.
  step function, no database
          engine.step.run_step on the same spec, in memory: what the engine's step function adds
          to bare (reading the outcome off the tree), apart from what persisting it costs.
  bare, Gridloop's tree walk
          bare, with the walk a step gives its workflow (engine/treewalk.py) instead of
          SpiffWorkflow's TaskIterator: how much of bare is walking the tree. The aim's ratio is
          against bare as SpiffWorkflow ships; the line after it is against this one.

The modes alternate in rounds (the order reverses every round) and the median round is reported,
because the machine is noisy. Wall and CPU time are both summed. Only the use-case calls are timed: finding
the next work item (engine: one SELECT; bare: get_tasks) is the harness's job and is left out of both.

History: does a step cost more on a case with a long past? One database holds, per engine mode,
--history-cases long cases (~300 events) and as many short ones (~8 events), all waiting at town
with the daily supervision (the repeating `due_town` timer) due next; the timed step is that
supervision, `runtime.fire_case_timers(session, case_id, as_of)` one day later, on each case.

  long    opened at the grid, climbed to town by firing timers (supervised, escalated at every
          tier), then supervised daily at town; reopened at town (resolved, feedback unsatisfied)
          when it passes 100 and 200 events. Built day by day with fire_due_timers(as_of=...): a
          repeating timer fires once per step, so every day is a step.
  short   opened, referred up to town at once, then warned (80 %) and marked overdue (100 %).
  modes   cache on: the default Runtime, which built the cases and so holds them all in memory.
          cache off: Runtime(..., hot_cases=0), whose cache drops every workflow as soon as it is
          put in, so every step restores the case from its blob. bare: each case's blob
          deserialized once (runtime.serializer.deserialize_json), then the same timer step in
          memory: do_engine_steps() under the step's clock (engine.spiffclock.step_clock, which
          SpiffWorkflow's timers need to see a future instant), nothing persisted.

Every round moves the clock one day and steps every case once (so each round adds one event to
every case); blocks of (mode, length) alternate, reversing every round, and medians are reported.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import platform
import pstats
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from SpiffWorkflow.bpmn import BpmnWorkflow  # noqa: E402
from SpiffWorkflow.util.task import TaskState  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from engine import spiffclock, treewalk  # noqa: E402
from engine.access import viewer_of  # noqa: E402
from engine.clock import FixedClock, iso  # noqa: E402
from engine.models import Case, Person, Position, Timer, Unit, WorkItem  # noqa: E402
from engine.runtime import Runtime  # noqa: E402
from engine.sandbox import RestrictedScriptEngine  # noqa: E402
from engine.specs import deploy, load_bundle, parse_bundle  # noqa: E402
from engine.step import OPENING_WORDS, Complete, Open, ready_user_tasks, run_step  # noqa: E402
from engine.storage import create_schema, make_engine, make_sessionmaker  # noqa: E402
from engine.workcal import WorkCalendar  # noqa: E402

USER_STEPS = 5
GRID = "V01-D1-G01"
# (diagram element expected to be READY, form submitted) in the order the loop asks for them.
LOOP = [
    ("accept", {"valid": True, "category": "resident_request", "severity": "normal"}),
    ("handle_grid", {"outcome": "resolved", "note": "修好了"}),
    ("feedback", {"satisfaction": "satisfied"}),
    ("report_grid", {"summary": "done"}),
    ("review_district", {"approved": True}),
]
SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


class Stopwatch:
    """Adds up wall and CPU time of the timed blocks (CPU time is less disturbed by neighbours)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu


# --------------------------------------------------------------------------- engine mode


class EngineBench:
    """A fresh database, runtime and minimal org (one unit and one person per tier)."""

    def __init__(self, folder: Path, start: datetime, hot_cases: int = 2000):
        self.path = folder / f"bench-{time.monotonic_ns()}.sqlite"
        self.db = make_engine(f"sqlite:///{self.path}")
        create_schema(self.db)
        self.session = make_sessionmaker(self.db)()
        self.runtime = Runtime(FixedClock(start), hot_cases=hot_cases)
        s = self.session
        deploy(s, self.runtime.registry, load_bundle(ROOT), "system", start)
        s.commit()
        town = _unit(s, "XDK", "town", None)
        village = _unit(s, "V01", "village", town)
        district = _unit(s, "V01-D1", "district", village)
        grid = _unit(s, GRID, "grid", district)
        people = {}
        for role, unit in [
            ("info_officer", grid),
            ("grid_leader", grid),
            ("district_leader", district),
            ("village_secretary", village),
            ("town_leadership", town),
        ]:
            person = Person(username=role, name=role, password_hash="x")
            s.add(person)
            s.flush()
            s.add(Position(person_id=person.id, role=role, unit_id=unit.id))
            people[role] = person
        s.commit()
        self.viewers = {role: viewer_of(s, p) for role, p in people.items()}
        s.commit()

    def run_case(self, n: int, watch: Stopwatch) -> int:
        """One case through the loop, timing only the use-case calls; returns the case id."""
        s, rt = self.session, self.runtime
        with watch:
            case = rt.open_case(
                s,
                self.viewers["info_officer"],
                title=f"路灯坏了 {n}",
                grid=GRID,
                category="resident_request",
                severity="normal",
            )
        for expected, form in LOOP:
            item = s.scalars(
                select(WorkItem).where(WorkItem.case_id == case.id, WorkItem.completed_at.is_(None))
            ).one()
            if item.spec != expected:
                raise AssertionError(f"case {case.id}: expected {expected}, got {item.spec}")
            with watch:
                case = rt.complete(s, self.viewers[item.role], item.id, dict(form))
        if case.status != "archived":
            raise AssertionError(f"case {case.id} ended {case.status}, not archived")
        return case.id

    def run(self, cases: int) -> Stopwatch:
        watch = Stopwatch()
        for n in range(cases):
            self.last_case = self.run_case(n, watch)
        archived = self.session.scalar(
            select(func.count()).select_from(Case).where(Case.status == "archived")
        )
        self.session.rollback()
        if archived < cases:
            raise AssertionError(f"only {archived} of {cases} cases archived")
        return watch

    def pragmas(self) -> tuple[str, str]:
        with self.db.connect() as conn:
            mode = conn.execute(text("PRAGMA journal_mode")).scalar()
            sync = conn.execute(text("PRAGMA synchronous")).scalar()
        return str(mode), SYNCHRONOUS.get(sync, str(sync))

    def blob_size(self) -> int:
        case = self.session.get(Case, self.last_case)
        size = len(case.workflow)
        self.session.rollback()
        return size

    def close(self) -> None:
        self.session.close()
        self.db.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


def _unit(session, code: str, level: str, parent: Unit | None) -> Unit:
    unit = Unit(code=code, name=code, level=level, parent_id=parent.id if parent else None)
    session.add(unit)
    session.flush()
    return unit


# --------------------------------------------------------------------------- bare mode


class BareBench:
    """The same spec, in memory: no database, no serialization, no work items or events."""

    def __init__(self, spec, start: datetime, walk: bool = False):
        self.spec = spec
        self.walk = walk
        calendar = WorkCalendar()

        def gl_deadline(hours: float, clock: str) -> str:
            # As the engine's helper, counted from the same fixed instant.
            return iso(calendar.add_hours(start, hours, clock == "clock"))

        self.script_engine = RestrictedScriptEngine({"gl_deadline": gl_deadline})

    def run_case(self, watch: Stopwatch) -> None:
        with watch:
            workflow = BpmnWorkflow(self.spec.process, self.spec.subprocesses)
            workflow.script_engine = self.script_engine
            if self.walk:
                treewalk.bind(workflow)
            for start in workflow.get_tasks(state=TaskState.READY):  # as run_step opens a case
                start.data.update(dict.fromkeys(OPENING_WORDS))
            workflow.do_engine_steps()
        for expected, form in LOOP:
            ready = workflow.get_tasks(state=TaskState.READY, manual=True)
            if len(ready) != 1 or ready[0].task_spec.name != expected:
                raise AssertionError(f"expected {expected}, got {ready}")
            task = ready[0]
            with watch:
                task.data.update(form)
                task.run()
                workflow.do_engine_steps()
        if not workflow.is_completed():
            raise AssertionError("bare workflow did not complete")

    def run(self, cases: int) -> Stopwatch:
        watch = Stopwatch()
        for _ in range(cases):
            self.run_case(watch)
        return watch


class StepBench(BareBench):
    """engine.step.run_step in memory: the engine's step function with no database, to tell
    what the step itself adds to bare SpiffWorkflow from what persisting it adds."""

    def __init__(self, spec, start: datetime):
        super().__init__(spec, start)
        self.start = start
        calendar = WorkCalendar()
        self.deadline = lambda hours, clock: iso(calendar.add_hours(start, hours, clock == "clock"))

    def run_case(self, watch: Stopwatch) -> None:
        with watch:
            outcome = run_step(
                None, self.spec, Open({"title": "路灯坏了"}), self.start, self.deadline
            )
        for expected, form in LOOP:
            ready = ready_user_tasks(outcome.workflow)
            ((task_id, task),) = ready.items()
            if task.task_spec.name != expected:
                raise AssertionError(f"expected {expected}, got {task.task_spec.name}")
            info = self.spec.tasks[expected]
            with watch:
                outcome = run_step(
                    outcome.workflow,
                    self.spec,
                    Complete(task_id, info.task, dict(form)),
                    self.start,
                    self.deadline,
                )
        if not outcome.facts.closed:
            raise AssertionError("the step function's workflow did not complete")


# --------------------------------------------------------------------------- history mode

# Monday 2026-11-23 10:00 in Shanghai, as in the tests. Every step is at 10:00 there; a deadline
# falls at 10:00 too, or at midnight when counted from a weekend: either way the daily supervision
# is due within a day of each step, so a step one day later fires it exactly once.
HISTORY_START = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
DAY = timedelta(days=1)
LONG_EVENTS = 300  # a long case is built until it has about this many events
REOPEN_AT = (100, 200)  # a long case is reopened at town when its event count passes these
# The short cases are opened when the long ones are this many events short of LONG_EVENTS: the
# days (one event each) a short case takes to reach town and be marked overdue.
SHORT_DAYS = 7
MAX_DAYS = 1000
ENGINE_MODES = ("cache on", "cache off")
HISTORY_MODES = (*ENGINE_MODES, "bare")
LENGTHS = ("short", "long")
BLOCKS = [(mode, length) for mode in HISTORY_MODES for length in LENGTHS]
ACCEPT = LOOP[0][1]
REFER_UP = {"outcome": "refer_up", "note": "上报"}
RESOLVED = {"outcome": "resolved", "note": "已处理"}
UNSATISFIED = {"satisfaction": "unsatisfied", "note": "还是没修好"}


class HistoryBench:
    """One database with long and short cases per engine mode, all waiting at town with the daily
    supervision due next; then the same timer step on every case, one day at a time."""

    def __init__(self, folder: Path):
        self.base = EngineBench(folder, HISTORY_START)  # its runtime (cache on) builds every case
        self.session, self.clock = self.base.session, self.base.runtime.clock
        self.runtimes = {
            "cache on": self.base.runtime,
            # hot_cases=0 turns the cache off: Runtime._remember evicts down to the limit at once.
            "cache off": Runtime(self.clock, self.base.runtime.registry, hot_cases=0),
        }
        self.cases: dict[tuple[str, str], list[int]] = {}
        self.day = 0

    @property
    def now(self) -> datetime:
        return HISTORY_START + self.day * DAY

    def next_day(self) -> None:
        self.day += 1
        if self.day > MAX_DAYS:
            raise AssertionError(f"the cases were not ready after {MAX_DAYS} days")
        self.clock.set(self.now)

    # ---- building (untimed)

    def build(self, n: int) -> None:
        """Long cases first, day by day; the short ones are opened SHORT_DAYS before the end."""
        for mode in ENGINE_MODES:
            self.cases[mode, "long"] = [self._accepted(f"长期未结 {mode} {i}") for i in range(n)]
        longs = self.ids("long")
        while min(self.events(longs).values()) < LONG_EVENTS - SHORT_DAYS:
            self._fire_day()
            self._reopen_due(longs)
            if self.day % 50 == 0:
                print(f"  day {self.day}: long cases at {min(self.events(longs).values())} events")
        for mode in ENGINE_MODES:
            self.cases[mode, "short"] = [self._at_town(f"新案 {mode} {i}") for i in range(n)]
        for _day in range(3 * SHORT_DAYS):
            if all(self._waiting_daily(c) for c in self.ids("short")):
                break
            self._fire_day()
        not_ready = [self._describe(c) for c in self.ids() if not self._waiting_daily(c)]
        if not_ready:
            raise AssertionError(
                f"day {self.day}: not waiting at town with only the daily supervision due by "
                f"tomorrow: {not_ready}"
            )

    def _fire_day(self) -> None:
        """The next day: fire what is due, as the ticker would."""
        self.next_day()
        self.base.runtime.fire_due_timers(self.session, as_of=self.now)

    def _accepted(self, title: str) -> int:
        """A case opened and accepted in the grid: its handling waits for the grid leader."""
        case = self.base.runtime.open_case(
            self.session,
            self.base.viewers["info_officer"],
            title=title,
            grid=GRID,
            category="resident_request",
            severity="normal",
        )
        self._complete(case.id, "accept", ACCEPT)
        return case.id

    def _at_town(self, title: str) -> int:
        """A case referred up from the grid to town on the day it is opened."""
        case_id = self._accepted(title)
        for _tier in ("grid", "district", "village"):
            self._complete(case_id, "handle", REFER_UP)
        return case_id

    def _reopen_due(self, case_ids: list[int]) -> None:
        """Reopen at town every long case that has passed its next REOPEN_AT count."""
        for case_id in case_ids:
            case = self.session.get(Case, case_id)
            n = case.reopen_count
            at_town = (case.status, case.tier) == ("handling", "town_leadership")
            self.session.rollback()
            if at_town and n < len(REOPEN_AT) and case.event_seq >= REOPEN_AT[n]:
                self._complete(case_id, "handle", RESOLVED)
                self._complete(case_id, "feedback", UNSATISFIED)

    def _complete(self, case_id: int, task: str, form: dict) -> None:
        item = self.session.scalars(
            select(WorkItem).where(WorkItem.case_id == case_id, WorkItem.completed_at.is_(None))
        ).one()
        if item.task != task:
            raise AssertionError(f"case {case_id}: expected {task}, got {item.task}")
        self.base.runtime.complete(self.session, self.base.viewers[item.role], item.id, dict(form))

    def _waiting_daily(self, case_id: int) -> bool:
        """At town, marked overdue, and its only timer the daily supervision, due by tomorrow (a
        deadline counted from a weekend falls at midnight, not at the steps' 10:00)."""
        case = self.session.get(Case, case_id)
        timers = self.session.scalars(select(Timer).where(Timer.case_id == case_id)).all()
        at_town = (case.status, case.tier) == ("handling", "town_leadership")
        daily = [t.kind for t in timers] == ["due"] and timers[0].due_at <= self.now + DAY
        waiting = at_town and case.overdue_marked and daily
        self.session.rollback()
        return waiting

    def _describe(self, case_id: int) -> str:
        case = self.session.get(Case, case_id)
        timers = self.session.scalars(select(Timer).where(Timer.case_id == case_id)).all()
        text = (
            f"case {case_id}: {case.status} at {case.tier}, overdue={case.overdue_marked}, "
            f"{case.event_seq} events, timers {[(t.kind, iso(t.due_at)) for t in timers]}"
        )
        self.session.rollback()
        return text

    # ---- reading (untimed)

    def ids(self, length: str | None = None) -> list[int]:
        return [c for (_mode, ln), ids in self.cases.items() if length in (None, ln) for c in ids]

    def events(self, case_ids: list[int]) -> dict[int, int]:
        rows = self.session.execute(select(Case.id, Case.event_seq).where(Case.id.in_(case_ids)))
        found = {case_id: seq for case_id, seq in rows}
        self.session.rollback()
        return found

    def sizes(self, length: str) -> dict[str, int]:
        """Events, reopenings and stored state size: medians over the cases of that length."""
        rows = [
            (case.event_seq, case.reopen_count, len(case.workflow))
            for case in self.session.scalars(select(Case).where(Case.id.in_(self.ids(length))))
        ]
        self.session.rollback()
        medians = [int(statistics.median(column)) for column in zip(*rows, strict=True)]
        return dict(zip(("events", "reopenings", "blob"), medians, strict=True))

    def bare(self) -> BareHistory:
        """In-memory copies of the cache-on cases as they are now, each blob deserialized once."""
        serializer = self.base.runtime.serializer
        workflows = {
            length: [
                serializer.deserialize_json(self.session.get(Case, case_id).workflow)
                for case_id in self.cases["cache on", length]
            ]
            for length in LENGTHS
        }
        self.session.rollback()
        return BareHistory(workflows)

    # ---- timing

    def step(self, mode: str, length: str, watch: Stopwatch) -> None:
        """Today's supervision on every case of (mode, length), each its own step."""
        runtime, ids = self.runtimes[mode], self.cases[mode, length]
        before = self.events(ids)
        for case_id in ids:
            with watch:
                fired = runtime.fire_case_timers(self.session, case_id, self.now)
            if not fired:
                raise AssertionError(f"case {case_id}: nothing fired on day {self.day}")
        after = self.events(ids)
        if any(after[c] != before[c] + 1 for c in ids):
            raise AssertionError(f"a step appended other than one event: {before} -> {after}")

    def close(self) -> None:
        self.base.close()


class BareHistory:
    """The same timer step on workflows in memory: SpiffWorkflow alone, nothing persisted."""

    def __init__(self, workflows: dict[str, list[BpmnWorkflow]]):
        self.workflows = workflows
        self.now = HISTORY_START
        calendar = WorkCalendar()

        def gl_deadline(hours: float, clock: str) -> str:
            # As the engine's helper, counted from the step's instant.
            return iso(calendar.add_hours(self.now, hours, clock == "clock"))

        self.script_engine = RestrictedScriptEngine({"gl_deadline": gl_deadline})

    def step(self, length: str, now: datetime, watch: Stopwatch) -> None:
        self.now = now
        for workflow in self.workflows[length]:
            before = _supervisions(workflow)
            with watch, spiffclock.step_clock(now):
                workflow.script_engine = self.script_engine
                # As the engine: do_engine_steps ends by refreshing timers, which can leave a fired
                # boundary event READY but not run; go on until nothing automatic is READY.
                while True:
                    workflow.do_engine_steps()
                    if not workflow.get_tasks(state=TaskState.READY, manual=False):
                        break
            if _supervisions(workflow) != before + 1:
                raise AssertionError(f"bare {length} case: the daily supervision did not run once")


def _supervisions(workflow: BpmnWorkflow) -> int:
    """How many times the town's daily supervision (the overdue_town script) has run."""
    return sum(
        1
        for task in workflow.tasks.values()
        if task.task_spec.name == "overdue_town" and task.state == TaskState.COMPLETED
    )


def measure_history(folder: Path, cases: int, rounds: int) -> None:
    """Build the cases, then time one supervision a day on each, `rounds` days in a row."""
    started = time.perf_counter()
    print(f"\nbuilding {cases} long and {cases} short cases per engine mode, one day a step")
    bench = HistoryBench(folder)
    try:
        bench.build(cases)
        built_days, built_s = bench.day, time.perf_counter() - started
        sizes = {length: bench.sizes(length) for length in LENGTHS}
        wall, cpu = _time_rounds(bench, bench.bare(), cases, rounds)
    finally:
        bench.close()
    report_history(cases, rounds, sizes, wall, cpu, built_days, built_s)


def _time_rounds(bench: HistoryBench, bare: BareHistory, cases: int, rounds: int):
    """ms per step by (mode, length), one list entry per round; round 0 warms up, untimed
    (compiled SQL, the cache-off runtime's first steps)."""
    wall: dict[tuple[str, str], list[float]] = {block: [] for block in BLOCKS}
    cpu: dict[tuple[str, str], list[float]] = {block: [] for block in BLOCKS}
    for r in range(rounds + 1):
        bench.next_day()
        order = BLOCKS if r % 2 == 0 else list(reversed(BLOCKS))
        for mode, length in order:
            gc.collect()
            watch = Stopwatch()
            if mode == "bare":
                bare.step(length, bench.now, watch)
            else:
                bench.step(mode, length, watch)
            if r > 0:
                wall[mode, length].append(1000 * watch.wall / cases)
                cpu[mode, length].append(1000 * watch.cpu / cases)
        if r > 0:
            times = [
                f"{mode} {wall[mode, 'short'][-1]:.2f} / {wall[mode, 'long'][-1]:.2f}"
                for mode in HISTORY_MODES
            ]
            print(f"round {r}/{rounds}  ms/step short / long:  " + "   ".join(times), flush=True)
    return wall, cpu


def report_history(cases, rounds, sizes, wall, cpu, built_days, built_s) -> None:
    med = {block: statistics.median(times) for block, times in wall.items()}
    med_cpu = {block: statistics.median(times) for block, times in cpu.items()}
    short, long = sizes["short"], sizes["long"]
    print(
        "\n== step cost by history: timer step (daily supervision at town), "
        f"{cases} long and {cases} short cases per mode, median of {rounds} rounds"
    )
    print(
        f"{'':<23}{'events':>8}{'blob bytes':>12}{'ms/step (cache on)':>21}"
        f"{'ms/step (cache off)':>21}{'bare ms/step':>14}"
    )
    for length, size in sizes.items():
        times = [med[mode, length] for mode in HISTORY_MODES]
        print(f"  {length + ' case':<21}{size['events']:>8}{size['blob']:>12,}" + _cols(times))
    ratios = [med[mode, "long"] / med[mode, "short"] for mode in HISTORY_MODES]
    print(
        f"  {'ratio long / short':<21}{long['events'] / short['events']:>8.1f}"
        f"{long['blob'] / short['blob']:>12.1f}" + _cols(ratios) + "   (aim: cache on <= 1.3)"
    )
    per_100 = (long["events"] - short["events"]) / 100
    growth = [(med[mode, "long"] - med[mode, "short"]) / per_100 for mode in HISTORY_MODES]
    print(
        f"  {'per 100 more events':<21}{'':>8}{(long['blob'] - short['blob']) / per_100:>+12,.0f}"
        + _cols(growth, "+")
    )
    print(f"\n{'cpu ms/step (medians)':<23}{'short':>8}{'long':>9}{'ratio':>8}")
    for mode in HISTORY_MODES:
        s, lg = med_cpu[mode, "short"], med_cpu[mode, "long"]
        print(f"  {mode:<21}{s:>8.2f}{lg:>9.2f}{lg / s:>8.2f}")
    print(
        "\nlong cases             climbed grid -> town by timers, then supervised daily; "
        f"{long['reopenings']} reopenings at town (feedback unsatisfied)"
    )
    print(
        "short cases            referred up to town the day they opened, warned, marked "
        f"overdue; {short['reopenings']} reopenings"
    )
    print(
        "events, blob bytes     medians before the timed rounds; every round adds one event "
        "(and one supervision's tasks) to every case"
    )
    print("cache off              Runtime(..., hot_cases=0): every step restores the case's blob")
    print(f"build                  {built_days} simulated days, {built_s:.0f} s (untimed)")


def _cols(values: list[float], sign: str = "") -> str:
    """Values under the three mode columns of the history table."""
    widths = (21, 21, 14)
    return "".join(f"{v:>{sign}{w}.2f}" for v, w in zip(values, widths, strict=True))


# --------------------------------------------------------------------------- report


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "usable cpus": str(len(os.sched_getaffinity(0)))
        if hasattr(os, "sched_getaffinity")
        else "?",
        "cpu": model,
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def profile_engine(folder: Path, start: datetime, cases: int, top: int = 15) -> None:
    bench = EngineBench(folder, start)
    try:
        bench.run(min(cases, 20))  # warm up outside the profile
        profiler = cProfile.Profile()
        profiler.enable()
        bench.run(cases)
        profiler.disable()
    finally:
        bench.close()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    total = stats.total_tt
    steps = cases * (USER_STEPS + 1)
    print(f"\n== cProfile, engine mode, one round of {cases} cases, {steps} use-case calls")
    print(f"   ({total:.2f} s under the profiler, which slows Python-heavy code about 2x)")
    stats.sort_stats("cumulative").print_stats(top)

    def cumulative(parts: list[tuple[str, str]]) -> float:
        return sum(
            v[3]
            for (f, _line, fn), v in stats.stats.items()
            if any(fn == name and frag in f for frag, name in parts)
        )

    print("== engine functions (cumulative; nested and overlapping)")
    for label, parts in BREAKDOWN:
        cum = cumulative(parts)
        print(
            f"  {label:<52} {cum:7.2f} s {100 * cum / total:5.1f} %  {1000 * cum / steps:6.2f} ms/call"
        )

    def calls(name: str) -> int:
        return sum(v[1] for (_f, _line, fn), v in stats.stats.items() if fn == name)

    executes = calls("<method 'execute' of 'sqlite3.Cursor' objects>")
    flushes = sum(v[1] for (f, _l, fn), v in stats.stats.items() if fn == "_flush" and "orm" in f)
    trees = sum(
        v[1] for (f, _l, fn), v in stats.stats.items() if fn == "get_tasks" and "Spiff" in f
    )
    print(
        f"== per use-case call: {executes / steps:.1f} SQL statements, {flushes / steps:.1f} ORM "
        f"flushes, {trees / steps:.1f} get_tasks calls (each walks the task tree)"
    )
    print("== self time by package (adds up to 100 %)")
    by_package: dict[str, float] = {}
    for (f, _line, fn), v in stats.stats.items():
        key = _package(f, fn)
        by_package[key] = by_package.get(key, 0.0) + v[2]
    for key, tt in sorted(by_package.items(), key=lambda kv: -kv[1]):
        print(f"  {key:<52} {tt:7.2f} s {100 * tt / total:5.1f} %")


def _package(filename: str, function: str) -> str:
    if filename == "~":  # C functions
        if "sqlite3" in function:
            return "sqlite3 C calls (SQL, COMMIT, fsync)"
        if "json" in function or "_json" in function:
            return "json (C)"
        return "other C built-ins"
    for fragment, name in [
        ("sqlalchemy", "SQLAlchemy (ORM, SQL compile, result rows)"),
        ("SpiffWorkflow", "SpiffWorkflow (run, serialize, get_tasks)"),
        ("jsonschema", "jsonschema"),
        ("/json/", "json encode/decode (JSON columns, blobs)"),
        ("/work/main/engine/", "engine/ own code"),
        ("/bench/", "benchmark harness"),
    ]:
        if fragment in filename:
            return name
    return "other stdlib (uuid, datetime, copy, ...)"


# (label, [(file fragment, function name), ...]) for the engine's own phases.
BREAKDOWN = [
    ("Runtime._run: every open_case/complete call", [("engine/runtime.py", "_run")]),
    ("  load the item and its case (one SELECT)", [("engine/projection.py", "item_and_case")]),
    ("  run_step (the step function: SpiffWorkflow)", [("engine/step.py", "run_step")]),
    ("  projection.write (Core statements)", [("engine/projection.py", "write")]),
    ("    events: hash chain + INSERT", [("engine/projection.py", "append")]),
    ("    new work items: INSERT", [("engine/projection.py", "_new_item")]),
    ("    outbox (notify.on_step)", [("engine/notify.py", "on_step")]),
    ("  serializer.serialize_json", [("engine/serializer.py", "serialize_json")]),
    ("  Session.commit", [("sqlalchemy/orm/session.py", "commit")]),
    ("  validate_form (jsonschema)", [("engine/runtime.py", "validate_form")]),
    ("  load_calendar (once per step)", [("engine/workcal.py", "load_calendar")]),
    ("BpmnWorkflow.do_engine_steps", [("bpmn/workflow.py", "do_engine_steps")]),
    ("Session.flush (explicit and autoflush)", [("sqlalchemy/orm/session.py", "_flush")]),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=300, help="cases per round (default 300)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per mode (default 5)")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="also time the engine with its in-process workflow cache off (every step restores "
        "the blob), as when consecutive steps of a case land on different processes",
    )
    parser.add_argument(
        "--profile", action="store_true", help="print a cProfile of one engine round"
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--history",
        action="store_true",
        help="only the history table: a timer step on a ~300-event case against a ~8-event one",
    )
    which.add_argument("--no-history", action="store_true", help="only the step table")
    parser.add_argument(
        "--history-cases",
        type=int,
        default=4,
        help="long (and short) cases per engine mode in the history table (default 4; building "
        "a long case takes ~8 s)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gridloop-bench-") as tmp:
        folder = Path(tmp)
        if not args.history:
            measure_steps(folder, args)
        if not args.no_history:
            measure_history(folder, args.history_cases, args.rounds)
            if args.history:
                for key, value in machine().items():
                    print(f"{key:<23}{value}")
    return 0


WALK = "bare, Gridloop's tree walk"


def measure_steps(folder: Path, args: argparse.Namespace) -> None:
    """The step table: whole loops, engine against bare, and the --profile if asked."""
    n, rounds = args.cases, args.rounds
    start = datetime.now(UTC).replace(microsecond=0)  # timers are days away: none fires

    modes = ["engine", "bare", "step function, no database", WALK] + (
        ["engine (cache off)"] if args.cold else []
    )
    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    spec = parse_bundle(load_bundle(ROOT))
    pragmas, blob = ("?", "?"), 0

    def one(mode: str, cases: int) -> Stopwatch:
        nonlocal pragmas, blob
        if mode == "bare":
            return BareBench(spec, start).run(cases)
        if mode == WALK:
            return BareBench(spec, start, walk=True).run(cases)
        if mode.startswith("step function"):
            return StepBench(spec, start).run(cases)
        bench = EngineBench(folder, start, hot_cases=0 if "off" in mode else 2000)
        try:
            watch = bench.run(cases)
            pragmas, blob = bench.pragmas(), bench.blob_size()
        finally:
            bench.close()
        return watch

    for mode in modes:  # warm-up: imports, compiled SQL, script caches
        one(mode, min(n, 20))
    for r in range(rounds):
        order = modes if r % 2 == 0 else list(reversed(modes))
        for mode in order:
            gc.collect()
            watch = one(mode, n)
            wall[mode].append(1000 * watch.wall / (n * USER_STEPS))
            cpu[mode].append(1000 * watch.cpu / (n * USER_STEPS))
            print(
                f"round {r + 1}/{rounds}  {mode:<20} {wall[mode][-1]:7.3f} ms wall"
                f" {cpu[mode][-1]:7.3f} ms cpu per user step",
                flush=True,
            )

    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    med = {m: statistics.median(wall[m]) for m in modes}
    med_cpu = {m: statistics.median(cpu[m]) for m in modes}
    print(f"\n== step cost: {n} cases x {USER_STEPS} user steps, median of {rounds} rounds")
    print("ms per user step (open_case included)   wall median   min     max     cpu median")
    for m in modes:
        print(f"  {m:<38}{med[m]:8.3f}{min(wall[m]):8.3f}{max(wall[m]):8.3f}{med_cpu[m]:10.3f}")
    for m in modes[:1] + modes[2:]:
        print(
            f"ratio {m + ' / bare':<33}{med[m] / med['bare']:8.2f} x wall"
            f"{med_cpu[m] / med_cpu['bare']:17.2f} x cpu"
            + ("" if m == WALK else "   (aim: <= 2 x)")
        )
    print(
        f"ratio {'engine / ' + WALK:<33}{med['engine'] / med[WALK]:8.2f} x wall"
        f"{med_cpu['engine'] / med_cpu[WALK]:17.2f} x cpu   (the engine walks its trees so too)"
    )
    print(f"engine throughput      {1000 / med['engine']:.0f} user steps/s (one process)")
    print(f"sqlite                 journal_mode={pragmas[0]} synchronous={pragmas[1]}")
    print(f"archived case blob     {blob} bytes (len(case.workflow))")
    print(f"peak memory            {maxrss_mb:.1f} MB (ru_maxrss, whole process, all modes)")
    for key, value in machine().items():
        print(f"{key:<23}{value}")

    if args.profile:
        profile_engine(folder, start, n)


if __name__ == "__main__":
    sys.exit(main())
