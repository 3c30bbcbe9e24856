"""A process killed with SIGKILL between steps, or in the middle of one, then restarted, has lost
no committed step, and every chain verifies.

tests/crash_steps.py runs case steps forever on a prepared database (a copy of the template:
schema, bundle, the tests' organisation) and prints `committed <case> <seq>` after each step
returns. The test reads its output, kills it at a seeded point (right after a committed line,
while the rows are flushed, while COMMIT is under way, or while a step computes), restarts it
on the same database, and so on for KILLS rounds. After every kill, in this process: each step
the child reported is in the database (its case's chain has at least that many events), every
chain verifies, case numbers have no gap, and each case's rows agree with its stored workflow
(open work items are its ready user tasks, timer rows its waiting timers, its status what the
diagram says). Each restarted child must have stepped cases an earlier one left, and at the end
every open case is stepped once more, here, through a Runtime of this process.

Reading the child's lines is the only pacing: nothing here sleeps.
"""

from __future__ import annotations

import os
import random
import re
import selectors
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import crash_steps
import pytest
from conftest import START
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.util.task import TaskState
from sqlalchemy import func, select

from engine.clock import FixedClock, iso, parse_iso
from engine.events import verify
from engine.models import Case, CaseEvent, Counter, Timer, WorkItem
from engine.runtime import Runtime
from engine.serializer import make_serializer
from engine.specs import OPEN_STATUSES
from engine.storage import make_engine, make_sessionmaker

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "crash_steps.py"
SEED = 20261123
LINE_TIMEOUT = 60  # seconds without a line from the child before the test gives up on it
COMMITTED = re.compile(r"committed (\S+) (\d+)")
# Where to kill, round by round: after which kind of line the child writes (crash_steps.py), and
# up to how long to spin first (microseconds; a busy loop, not a sleep, the wait seeded). After
# `committed`: between steps. After `committing` (the rows are flushed, COMMIT is being sent):
# on SQLite, killed at once the step is rolled back, a little later it is often committed but
# never reported; both happen. After `flushing`: while the rows are written. After `begin`: while
# the step computes.
KILL_AT = [
    ("committed", 0),
    ("committing", 150),
    ("begin", 1500),
    ("flushing", 0),
    ("committing", 150),
]
KILLS = len(KILL_AT)


@dataclass
class Round:
    number: int
    kill_after: int  # committed lines to see before looking for the kill point
    kill_at: str
    spin_us: int
    existing: set[str]  # case numbers in the database when the child started
    lines: list[str] = field(default_factory=list)
    returncode: int | None = None

    def committed(self) -> list[tuple[str, int]]:
        found = (COMMITTED.fullmatch(line) for line in self.lines)
        return [(m[1], int(m[2])) for m in found if m]

    def in_flight(self) -> str:
        """The step the child had begun and not reported when it died (if any)."""
        for line in reversed(self.lines):
            if line.startswith("committed"):
                return "none"
            if line.startswith("begin"):
                return line
        return "none"


class Child:
    """tests/crash_steps.py as a subprocess, its stdout read line by line with a deadline."""

    def __init__(self, db_url: str, seed: int, stderr: Path):
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.stderr_path = stderr
        with stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(SCRIPT), db_url, str(seed), iso(START)],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                bufsize=0,
            )
        self.fd = self.proc.stdout.fileno()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)
        self.buffer = b""
        self.eof = False

    def _fill(self, timeout: float) -> bool:
        if not self.selector.select(timeout):
            return False
        chunk = os.read(self.fd, 65536)
        if not chunk:
            self.eof = True
        self.buffer += chunk
        return True

    def line(self) -> str:
        """The next line; fails the test if the child ends or goes quiet."""
        deadline = time.monotonic() + LINE_TIMEOUT
        while b"\n" not in self.buffer:
            if self.eof:
                self.proc.wait(timeout=30)
                pytest.fail(
                    f"the step process ended by itself (status {self.proc.returncode}):\n"
                    + self.stderr_path.read_text()[-4000:]
                )
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                pytest.fail(f"no line from the step process in {LINE_TIMEOUT} s")
            self._fill(left)
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def kill(self) -> list[str]:
        """SIGKILL; then the lines it had written before it died (each one was true when
        written: a committed line follows its commit)."""
        self.proc.kill()
        self.proc.wait(timeout=30)
        while not self.eof:
            self._fill(30)
        rest = self.buffer.decode()
        self.buffer = b""
        return [line for line in rest.split("\n") if line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.selector.close()
        self.proc.stdout.close()


def spin(microseconds: int) -> None:
    end = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < end:
        pass


def run_round(db_url: str, rnd: Round, seed: int, stderr: Path) -> None:
    child = Child(db_url, seed, stderr)
    try:
        first = child.line()
        assert first.startswith("ready "), first
        rnd.lines.append(first)
        seen = 0
        while seen < rnd.kill_after:
            line = child.line()
            rnd.lines.append(line)
            seen += line.startswith("committed ")
        while True:
            line = child.line()
            rnd.lines.append(line)
            if line.split(" ", 1)[0] == rnd.kill_at:
                break
        spin(rnd.spin_us)
        rnd.lines.extend(child.kill())
        rnd.returncode = child.proc.returncode
    finally:
        child.stop()


# ------------------------------------------------------------------ what the database must hold


def waiting_timers(workflow) -> set:
    """The workflow's pending timers as (due_at, element id), as the timer rows mirror them."""
    found = set()
    for task in workflow.get_tasks(state=TaskState.WAITING):
        definition = getattr(task.task_spec, "event_definition", None)
        if isinstance(definition, TimerEventDefinition):
            value = definition.details(task).value
            if value:
                found.add((parse_iso(value), task.task_spec.name))
    return found


def check_database(db_url: str, registry, reported: dict[str, int]) -> list[str]:
    """Everything a crash must not break; returns the numbers of the open cases."""
    engine = make_engine(db_url)
    session = make_sessionmaker(engine)()
    serializer = make_serializer(registry)
    try:
        cases = list(session.scalars(select(Case).order_by(Case.id)))
        stored = {c.number: c.event_seq for c in cases}
        lost = {
            number: (seq, stored.get(number))
            for number, seq in reported.items()
            if stored.get(number) is None or stored[number] < seq
        }
        assert not lost, f"committed steps lost, case: (reported seq, stored seq): {lost}"

        for case in cases:
            result = verify(session, case)
            assert result.ok, (case.number, result)
            assert (result.events, result.head) == (case.event_seq, case.event_head), case.number

        # Case numbers count without a gap, and the counter stands at the last one.
        by_year = defaultdict(list)
        for case in cases:
            prefix, serial = case.number.rsplit("-", 1)
            by_year[prefix].append(int(serial))
        for prefix, serials in by_year.items():
            assert sorted(serials) == list(range(1, len(serials) + 1)), prefix
            town, year = prefix.split("-")
            counter = session.get(Counter, f"case:{town}:{year}")
            assert counter is not None and counter.value == len(serials), prefix

        open_numbers = []
        for case in cases:
            spec = registry.get(case.diagram)
            workflow = serializer.deserialize_json(case.workflow)
            ready = {
                str(t.id): t.task_spec.name
                for t in workflow.get_tasks(state=TaskState.READY, manual=True)
            }
            items = list(
                session.scalars(
                    select(WorkItem).where(
                        WorkItem.case_id == case.id, WorkItem.completed_at.is_(None)
                    )
                )
            )
            assert {i.task_id: i.spec for i in items} == ready, case.number
            assert len(items) == len(ready), case.number
            timers = {
                (t.due_at, t.name)
                for t in session.scalars(select(Timer).where(Timer.case_id == case.id))
            }
            if workflow.is_completed():
                assert case.status not in OPEN_STATUSES, case.number
                assert case.closed_at is not None and not items and not timers, case.number
            else:
                assert ready, f"{case.number}: an open workflow with nothing to do"
                statuses = {spec.tasks[name].props["status"] for name in ready.values()}
                assert case.status in statuses, (case.number, case.status, statuses)
                assert timers == waiting_timers(workflow), case.number
                open_numbers.append(case.number)
        return open_numbers
    finally:
        session.close()
        engine.dispose()


def case_numbers(db_url: str) -> set[str]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return set(conn.scalars(select(Case.number)))
    finally:
        engine.dispose()


def step_every_open_case(db_url: str, registry, open_numbers: list[str]) -> None:
    """Each open case takes one more step here: its first open item completed."""
    engine = make_engine(db_url)
    session = make_sessionmaker(engine)()
    try:
        latest = session.scalar(select(func.max(Case.updated_at)))
        runtime = Runtime(FixedClock(latest), registry)
        viewers = crash_steps.load_viewers(session)
        rng = random.Random(SEED)
        for number in open_numbers:
            case = session.scalars(select(Case).where(Case.number == number)).one()
            before = case.event_seq
            item = session.scalars(
                select(WorkItem)
                .where(WorkItem.case_id == case.id, WorkItem.completed_at.is_(None))
                .order_by(WorkItem.id)
            ).first()
            actor = crash_steps.actor_for(session, viewers, item, rng)
            case = runtime.complete(session, actor, item.id, crash_steps.form_for(item, rng))
            assert case.event_seq > before, number
            assert verify(session, case).ok, number
    finally:
        session.close()
        engine.dispose()


def test_sigkill_between_and_during_steps_loses_no_committed_step(db_url, registry, tmp_path):
    rng = random.Random(SEED)
    rounds: list[Round] = []
    reported: dict[str, int] = {}
    for number in range(KILLS):
        kill_at, spin_us = KILL_AT[number]
        rnd = Round(
            number,
            kill_after=rng.randint(20, 80),
            kill_at=kill_at,
            spin_us=rng.randint(0, spin_us),
            existing=case_numbers(db_url),
        )
        rounds.append(rnd)
        run_round(db_url, rnd, SEED + number, tmp_path / f"child-{number}.stderr")
        assert rnd.returncode == -signal.SIGKILL, (rnd.returncode, rnd.lines[-5:])
        committed = rnd.committed()
        assert len(committed) >= rnd.kill_after
        for case, seq in committed:
            reported[case] = max(seq, reported.get(case, 0))
        if number > 0:
            old = {case for case, _seq in committed} & rnd.existing
            assert old, f"round {number}: the restarted process stepped no case left before it"
        try:
            open_numbers = check_database(db_url, registry, reported)
        except AssertionError as exc:
            raise AssertionError(
                f"after kill {number + 1} ({rnd.kill_at}, spin {rnd.spin_us} us, in flight: "
                f"{rnd.in_flight()}): {exc}"
            ) from exc

    # Every case a child opened is in the database, and the open ones can still be worked.
    assert set(reported) <= case_numbers(db_url)
    assert open_numbers
    # The children went through the loop's branches and its timers, not just its happy path.
    engine = make_engine(db_url)
    with engine.connect() as conn:
        types = set(conn.scalars(select(CaseEvent.type).distinct()))
    engine.dispose()
    assert {"claimed", "released", "supervised", "escalated", "reopened", "archived"} <= types
    step_every_open_case(db_url, registry, open_numbers)
    check_database(db_url, registry, reported)
