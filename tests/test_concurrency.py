"""Several processes on one database: double completions, timers fired by the ticker and the CLI
at once, and steps that fail half-way. Every step commits all of its rows or none."""

from __future__ import annotations

import threading
from collections import OrderedDict
from types import SimpleNamespace

import pytest
from conftest import ACCEPT_NORMAL, GRID, snapshot
from sqlalchemy import select, update

from engine import events, projection
from engine.clock import iso
from engine.errors import Conflict
from engine.events import verify
from engine.models import Counter, WorkItem
from engine.runtime import Runtime
from engine.specs import SpecRegistry
from engine.step import Fire, run_step
from engine.storage import make_engine, make_sessionmaker

ROUNDS = 5


class Process:
    """What a second server process or the CLI has of its own: an engine (connection pool), a
    Runtime with its own parsed specs and workflow cache, and a session per thread."""

    def __init__(self, db_url: str, clock):
        self.engine = make_engine(db_url)
        self.make_session = make_sessionmaker(self.engine)
        self.runtime = Runtime(clock, SpecRegistry())

    def close(self):
        self.engine.dispose()


@pytest.fixture
def processes(db_url, clock):
    made = [Process(db_url, clock), Process(db_url, clock)]
    yield made
    for p in made:
        p.close()


def race(calls):
    """Run the calls in threads released at once by a barrier; return each outcome."""
    barrier = threading.Barrier(len(calls))
    outcomes: list = [None] * len(calls)

    def run(i, call):
        try:
            barrier.wait(timeout=10)
            outcomes[i] = ("ok", call())
        except Exception as exc:  # noqa: BLE001 - the outcome is what is asserted
            outcomes[i] = ("error", exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a racing step hung"
    return outcomes


# ------------------------------------------------------------------ double completion


@pytest.mark.parametrize("shared_runtime", [False, True], ids=["two-processes", "one-process"])
def test_double_completion_gives_one_success_and_one_conflict(gl, processes, shared_runtime):
    officers = [gl.viewer("off1"), gl.viewer("off1b")]
    for round_ in range(ROUNDS):
        case = gl.open(None, title=f"第{round_}件")
        item_id = gl.item(case).id
        gl.session.commit()
        sessions = [p.make_session() for p in processes]
        runtimes = [p.runtime for p in processes]
        if shared_runtime:  # one threaded web server: one Runtime, a session per request
            runtimes = [runtimes[0], runtimes[0]]

        def completion(i, sessions=sessions, runtimes=runtimes, item_id=item_id):
            return lambda: runtimes[i].complete(sessions[i], officers[i], item_id, ACCEPT_NORMAL)

        outcomes = race([completion(0), completion(1)])
        for s in sessions:
            s.close()

        kinds = sorted(kind for kind, _ in outcomes)
        errors = [value for kind, value in outcomes if kind == "error"]
        assert kinds == ["error", "ok"], outcomes
        assert isinstance(errors[0], Conflict), repr(errors[0])
        winner = next(officers[i].username for i, (k, _) in enumerate(outcomes) if k == "ok")

        case = gl.reload(case)
        assert (case.status, case.owner) == ("handling", winner)
        assert gl.types(case) == ["opened", "task_completed"]
        accept = gl.session.get(WorkItem, item_id)
        assert (accept.completed_by, accept.claimed_by) == (winner, winner)
        assert [i.task for i in gl.items(case)] == ["handle"]
        assert verify(gl.session, case).ok

        # The loser's late retry answers 409 as well, and changes nothing.
        with pytest.raises(Conflict):
            gl.runtime.complete(gl.session, gl.viewer("off1"), item_id, ACCEPT_NORMAL)


@pytest.mark.parametrize("clock_moved", [True, False], ids=["later", "same-instant"])
def test_concurrent_claims_leave_one_holder(gl, processes, clock_moved):
    """Two officers claim one item at once: one holds it, the other gets 409. `same-instant`:
    the claims come at the instant the case last changed (a FixedClock, `fire-due --as-of`)."""
    officers = [gl.viewer("off1"), gl.viewer("off1b")]
    for round_ in range(ROUNDS):
        case = gl.open(None, title=f"第{round_}件")
        item_id = gl.item(case).id
        gl.session.commit()
        if clock_moved:
            gl.clock.advance(seconds=1)
        sessions = [p.make_session() for p in processes]

        def claim(i, sessions=sessions, item_id=item_id):
            return lambda: processes[i].runtime.claim(sessions[i], officers[i], item_id)

        outcomes = race([claim(0), claim(1)])
        for s in sessions:
            s.close()
        assert sorted(k for k, _ in outcomes) == ["error", "ok"], outcomes
        assert all(isinstance(v, Conflict) for k, v in outcomes if k == "error")
        winner = next(officers[i].username for i, (k, _) in enumerate(outcomes) if k == "ok")
        case = gl.reload(case)
        assert gl.item(case).claimed_by == winner
        assert gl.types(case) == ["opened", "claimed"]
        assert gl.last(case, "claimed").actor == winner


# ------------------------------------------------------------------ timers fired twice at once


def test_ticker_and_cli_firing_the_same_timers_record_them_once(gl, processes):
    for round_ in range(ROUNDS):
        gl.clock.advance(hours=1)
        case = gl.accepted()
        due_at = gl.item(case).due_at
        before = len(gl.events(case))
        gl.session.commit()
        sessions = [p.make_session() for p in processes]

        def fire(i, sessions=sessions, due_at=due_at):
            return lambda: processes[i].runtime.fire_due_timers(sessions[i], as_of=due_at)

        outcomes = race([fire(0), fire(1)])
        for s in sessions:
            s.close()
        assert all(k == "ok" for k, _ in outcomes), outcomes
        assert sum(v for _, v in outcomes) == 1, f"round {round_}: {outcomes}"

        case = gl.reload(case)
        assert [e.type for e in gl.events(case)[before:]] == ["supervised", "escalated"]
        assert case.tier == "district_leader"
        assert [(i.task, i.role) for i in gl.items(case)] == [("handle", "district_leader")]
        assert verify(gl.session, case).ok


# ------------------------------------------------------------------ failures half-way


def fail_on_call(n: int, original):
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise RuntimeError("disk full")
        return original(*args, **kwargs)

    return wrapper


def test_a_failure_while_saving_leaves_no_partial_rows(gl, monkeypatch):
    case = gl.accepted()
    before = snapshot(gl, case)
    # The items are written by then; the events and the case row are not.
    monkeypatch.setattr(projection, "append", fail_on_call(1, projection.append))
    with pytest.raises(RuntimeError):
        gl.complete("gl1", case, {"outcome": "refer_up", "note": "上报"})
    assert snapshot(gl, case) == before
    assert gl.item(case).claimed_by is None

    # The same runtime (and its workflow cache) carries on as if nothing happened.
    gl.clock.advance(hours=1)
    case = gl.complete("gl1", case, {"outcome": "refer_up", "note": "上报"})
    assert (case.status, case.tier) == ("handling", "district_leader")
    assert [i.role for i in gl.items(case)] == ["district_leader"]
    assert gl.types(case) == ["opened", "claimed", "task_completed", "task_completed"]
    assert [t.kind for t in gl.timers(case)] == ["warn", "due"]
    assert verify(gl.session, case).ok


def test_a_failure_between_two_events_appends_neither(gl, monkeypatch):
    case = gl.accepted()
    due_at = gl.item(case).due_at
    before = snapshot(gl, case)
    # Firing at the deadline appends two events (supervised, escalated); fail on the second.
    monkeypatch.setattr(events, "chain_hash", fail_on_call(2, events.chain_hash))
    try:
        moved = gl.runtime.fire_due_timers(gl.session, as_of=due_at)
    except RuntimeError:
        moved = 0  # the ticker may report the failure or log it and go on
    assert moved == 0
    assert snapshot(gl, case) == before

    monkeypatch.undo()
    assert gl.runtime.fire_due_timers(gl.session, as_of=due_at) == 1
    case = gl.reload(case)
    assert gl.types(case)[-2:] == ["supervised", "escalated"]
    assert case.tier == "district_leader"
    assert verify(gl.session, case).ok


def test_a_failure_while_opening_leaves_no_case_and_no_number_used(gl, monkeypatch):
    monkeypatch.setattr(
        events, "chain_hash", fail_on_call(2, events.chain_hash)
    )  # the `claimed` event
    with pytest.raises(RuntimeError):
        gl.open("off1")
    gl.session.rollback()
    assert gl.counts() == {"case": 0, "case_event": 0, "work_item": 0, "timer": 0}
    assert gl.session.scalars(select(Counter)).all() == []
    monkeypatch.undo()
    case = gl.open("off1")
    assert case.number == "XDK-2026-000001"
    assert gl.types(case) == ["opened", "claimed"]


def test_one_failing_case_does_not_stop_other_cases_timers(gl, monkeypatch):
    """The ticker fires every due case; a case whose step raises (a broken script, a bad row)
    must not keep every later case from escalating, tick after tick."""
    poisoned = gl.accepted()
    healthy = gl.accepted("off2", grid="V01-D1-G02")
    due_at = gl.item(healthy).due_at
    poisoned_before = snapshot(gl, poisoned)
    original = Runtime._load

    def load(self, session, case, *stored):
        if case.id == poisoned.id:
            raise RuntimeError("a broken workflow blob")
        return original(self, session, case, *stored)

    monkeypatch.setattr(Runtime, "_load", load)
    try:
        gl.runtime.fire_due_timers(gl.session, as_of=due_at)
    except RuntimeError:
        pass  # reporting the failure is fine; skipping the healthy case is not
    assert snapshot(gl, poisoned)[1:] == poisoned_before[1:], "the failed case is untouched"
    assert gl.reload(healthy).tier == "district_leader"
    assert gl.types(healthy)[-2:] == ["supervised", "escalated"]


def test_a_stale_workflow_cache_is_never_used(gl, processes, clock):
    """Process A caches a case's workflow; process B moves the case on; A must then work on the
    case as B left it, not on its cached copy."""
    a, b = processes
    case = gl.accepted()
    item_id = gl.item(case).id
    gl.session.commit()
    sa, sb = a.make_session(), b.make_session()
    # A completes a step of the case, so its cache holds the workflow as of that step.
    a.runtime.complete(sa, gl.viewer("gl1"), item_id, {"outcome": "refer_up", "note": "上报"})
    case = gl.reload(case)
    district = gl.item(case).id
    # B refers the case up once more.
    clock.advance(minutes=1)
    b.runtime.complete(sb, gl.viewer("dl1"), district, {"outcome": "refer_up", "note": "上报"})
    village = gl.item(gl.reload(case)).id
    # A now completes the village item: it must see the village task, not its cached grid one.
    clock.advance(minutes=1)
    case = a.runtime.complete(sa, gl.viewer("vs1"), village, {"outcome": "resolved"})
    sa.close()
    sb.close()
    case = gl.reload(case)
    assert (case.status, case.tier) == ("feedback", "village_secretary")
    assert verify(gl.session, case).ok
    assert gl.types(case)[-3:] == ["task_completed"] * 3


def test_two_officers_opening_at_once_get_distinct_numbers(gl, processes):
    off1 = gl.viewer("off1")
    sessions = [p.make_session() for p in processes]

    def opener(i):
        return lambda: processes[i].runtime.open_case(sessions[i], off1, title=f"{i}", grid=GRID)

    outcomes = race([opener(0), opener(1)])
    numbers = sorted(v.number for k, v in outcomes if k == "ok")
    for s in sessions:
        s.close()
    assert all(k == "ok" for k, _ in outcomes), outcomes
    assert numbers == ["XDK-2026-000001", "XDK-2026-000002"]


class _InterleavingCache(OrderedDict):
    """The runtime's workflow cache, running `hook` (another thread's step) right after the next
    read of an entry, in the window between a step's read of the cache and its write back."""

    hook = None

    def _after(self, key):
        hook, self.hook = self.hook, None
        if hook is not None:
            hook(key)

    def get(self, key, default=None):
        value = super().get(key, default)
        self._after(key)
        return value

    def pop(self, key, *default):
        value = super().pop(key, *default)
        self._after(key)
        return value


def test_a_claim_never_puts_back_a_workflow_another_step_is_changing(gl, runtime, make_session):
    """Claims and releases bump the version without touching the workflow, so the cached one is
    carried over to the new version. A timer step on another thread that took the same workflow
    meanwhile must not find it back in the cache, half-stepped, when it retries."""
    case = gl.accepted()
    item = gl.item(case)
    read = gl.reload(case).version
    other = make_session()
    taken = {}

    def timer_step_on_another_thread(case_id):
        workflow = runtime._load(other, SimpleNamespace(id=case_id, version=read))
        spec = runtime._spec(other, projection.case_row(other, case_id))
        other.rollback()
        run_step(workflow, spec, Fire(), item.due_at, lambda hours, clock: iso(item.due_at))
        taken["workflow"] = workflow  # changed in place; its write would lose to the claim

    runtime._hot = _InterleavingCache(runtime._hot)
    runtime._hot.hook = timer_step_on_another_thread
    gl.runtime.claim(gl.session, gl.viewer("gl1"), item.id)
    cached = runtime._hot.get(case.id)
    assert cached is None or cached[1] is not taken["workflow"]

    # The timer step retries on what the database says, and the case moves on whole.
    assert runtime.fire_case_timers(other, case.id, item.due_at)
    other.close()
    case = gl.reload(case)
    assert gl.types(case)[-2:] == ["supervised", "escalated"]
    assert [i.role for i in gl.items(case)] == ["district_leader"]
    assert verify(gl.session, case).ok


def test_a_step_never_commits_what_its_caller_wrote_and_did_not_commit(gl, make_session):
    """A step runs in a transaction of its own: rows its caller flushed (or wrote with a
    statement) but never committed are rolled back, not committed by the step."""
    case = gl.accepted()
    gl.session.add(Counter(key="half-done", value=1))
    gl.session.flush()
    gl.runtime.claim(gl.session, gl.viewer("gl1"), gl.item(case).id)
    gl.session.execute(update(Counter).where(Counter.key == "nothing").values(value=2))
    gl.runtime.release(gl.session, gl.viewer("gl1"), gl.item(case).id)
    with make_session() as fresh:
        assert fresh.get(Counter, "half-done") is None
    assert gl.types(case)[-2:] == ["claimed", "released"]
