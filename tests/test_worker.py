"""Timers on rq and a real Redis (`gridloop worker`): every due timer fires exactly once, whatever
the queue does. Worker processes are real processes that race, die by SIGKILL and start afresh.

The engine's clock in these tests is a FixedClock, and the instant timers fire at is passed
explicitly (`as_of`), so nothing waits for time to pass; the tests only wait (polling, with a
limit) for worker processes to finish their jobs.
"""

# The Redis fixtures are imported from tests/redis_fixture.py, and tests name them as arguments.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from apps import connect
from conftest import ACCEPT_NORMAL, GRID, REPO, START
from redis import Redis
from rq import Queue
from sqlalchemy import select

from engine.access import viewer_of
from engine.clock import FixedClock, iso
from engine.events import verify
from engine.models import Case, Person, Timer, WorkItem
from engine.runtime import Runtime
from engine.specs import SpecRegistry
from engine.storage import make_engine, make_sessionmaker
from jobs.root import REDIS_URL_ENV
from jobs.scheduler import (
    JOB_FUNC,
    PER_JOB,
    QUEUE,
    TimerScheduler,
    heartbeat_key,
    job_id,
    lease_key,
)
from jobs.status import calendar_warning
from webapp.cli import main

CASES = 1000
DUP_QUEUE = "gridloop-timers-dup"
WAIT = 300  # seconds a batch of worker processes may take before the test gives up

# A worker process as the tests run it: jobs.worker.run_worker on the queues named in argv, in
# burst mode, on a root built from the environment as `gridloop worker` builds one, counting what
# its jobs did (printed as JSON on exit): jobs run, and cases fired or found with nothing due.
# GL_DIE_AT=N:before|after kills the process with SIGKILL at its Nth case, before it fires or after
# it committed (so before its job ends and rq acknowledges it).
RUNNER = """
import json, os, signal, sys
import jobs.worker as w
counts = {"fired": 0, "noop": 0, "cases": 0, "jobs": 0}
die = os.environ.get("GL_DIE_AT")
die_at, when = (int(die.split(":")[0]), die.split(":")[1]) if die else (0, "")
original, original_job = w.fire_case, w.fire_cases
def counting(case_id, as_of=None):
    counts["cases"] += 1
    if counts["cases"] == die_at and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    moved = original(case_id, as_of)
    counts["fired" if moved else "noop"] += 1
    if counts["cases"] == die_at and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return moved
def counting_job(case_ids, as_of=None):
    counts["jobs"] += 1
    return original_job(case_ids, as_of)
w.fire_case, w.fire_cases = counting, counting_job
w.run_worker(queues=sys.argv[1:], burst=True, log_level="WARNING")
print(json.dumps(counts))
"""


# ------------------------------------------------------------------ set-up


def _open_accepted(session, runtime: Runtime, count: int, severity: str = "normal") -> list[int]:
    off1 = session.scalars(select(Person).where(Person.username == "off1")).one()
    officer = viewer_of(session, off1)
    ids = []
    for i in range(count):
        case = runtime.open_case(session, officer, title=f"路灯 {i}", grid=GRID)
        item = session.scalars(select(WorkItem).where(WorkItem.case_id == case.id)).one()
        runtime.complete(session, officer, item.id, {**ACCEPT_NORMAL, "severity": severity})
        ids.append(case.id)
    return ids


def _checkpoint(url: str) -> None:
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()


@pytest.fixture(scope="session")
def due_template(tmp_path_factory, databases, template_db, registry):
    """A database with CASES cases accepted at START, each waiting at the grid leader with two
    timers (80% supervision, 100% escalation). Built once through the engine (about 20 ms a case)
    and copied for each test. Returns (its URL, the instant both timers of every case are due)."""
    url = databases.new(tmp_path_factory.mktemp("due") / "gridloop.sqlite", template=template_db)
    engine = make_engine(url)
    session = make_sessionmaker(engine)()
    _open_accepted(session, Runtime(FixedClock(START), registry), CASES)
    due_at = session.scalar(select(Timer.due_at).order_by(Timer.due_at.desc()).limit(1))
    session.close()
    engine.dispose()
    _checkpoint(url)
    yield url, due_at
    databases.drop(url)


@pytest.fixture
def due_db(tmp_path, databases, due_template):
    url = databases.new(tmp_path / "gridloop.sqlite", template=due_template[0])
    yield url, due_template[1]
    databases.drop(url)


def _env(db_url: str, redis: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GRIDLOOP_DATABASE_URL=db_url,
        GRIDLOOP_REDIS_URL=redis,
        GRIDLOOP_SECRET_KEY="test",
        GRIDLOOP_CHEAP_PASSWORDS="1",
        PYTHONPATH=str(REPO),
    )
    env.pop("GL_DIE_AT", None)
    return env


def _runner(env, *queues: str, die_at: str | None = None) -> subprocess.Popen:
    env = dict(env, **({"GL_DIE_AT": die_at} if die_at else {}))
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, *queues],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _cli(env, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "webapp.cli", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the test can kill it and its children
    )


def _finish(process: subprocess.Popen, timeout: float = WAIT) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if _own_group(process):
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        out, err = process.communicate()
        pytest.fail(f"worker process did not finish in {timeout} s:\n{err[-3000:]}")
    return process.returncode, out, err


def _own_group(process: subprocess.Popen) -> bool:
    try:
        return os.getpgid(process.pid) == process.pid
    except ProcessLookupError:
        return False


def _counts(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _scheduler(db_url: str, redis: str, **options) -> TimerScheduler:
    engine = make_engine(db_url)
    return TimerScheduler(
        Redis.from_url(redis), make_sessionmaker(engine), FixedClock(START), **options
    )


def _db(db_url: str):
    return connect(db_url)


def _per_case(db_url: str, type_: str) -> dict[int, int]:
    with _db(db_url) as conn:
        rows = conn.execute(
            "select case_id, count(*) from case_event where type = ? group by case_id", (type_,)
        )
        return dict(rows.fetchall())


def _due_timers(db_url: str, as_of: datetime) -> int:
    text = as_of.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # as SQLAlchemy stores it
    with _db(db_url) as conn:
        return conn.execute("select count(*) from timer where due_at <= ?", (text,)).fetchone()[0]


def _assert_each_fired_once(db_url: str, case_ids, as_of: datetime) -> None:
    case_ids = set(case_ids)
    escalated = _per_case(db_url, "escalated")
    supervised = _per_case(db_url, "supervised")
    assert set(escalated) == case_ids, f"{len(case_ids - set(escalated))} case(s) never escalated"
    doubled = {c: n for c, n in escalated.items() if n != 1}
    assert not doubled, f"escalated more than once: {list(doubled.items())[:10]}"
    assert set(supervised) == case_ids and set(supervised.values()) == {1}
    assert _due_timers(db_url, as_of) == 0, "due timer rows remain"
    engine = make_engine(db_url)
    session = make_sessionmaker(engine)()
    try:
        tiers = set(session.scalars(select(Case.tier).where(Case.id.in_(case_ids))))
        assert tiers == {"district_leader"}, tiers
        for case in session.scalars(select(Case).where(Case.id.in_(case_ids))):
            assert verify(session, case).ok, case.number
    finally:
        session.close()
        engine.dispose()


def _timer_dues(db_url: str, case_id: int) -> list[datetime]:
    engine = make_engine(db_url)
    session = make_sessionmaker(engine)()
    try:
        return list(session.scalars(select(Timer.due_at).where(Timer.case_id == case_id)))
    finally:
        session.close()
        engine.dispose()


def _case_ids(db_url: str) -> list[int]:
    with _db(db_url) as conn:
        return [i for (i,) in conn.execute('select id from "case" order by id')]


def _wait_for(condition, timeout: float = WAIT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


# ------------------------------------------------------------------ exactly once


def test_two_workers_racing_over_1000_due_timers_fire_each_exactly_once(due_db, redis_url):
    """Every case is delivered twice, to two worker processes at about the same moment: worker A
    takes the scheduler's queue first, worker B a second queue holding a copy of every job in the
    same order. Each case still escalates once; the copy that loses finds nothing due. The cases
    go out PER_JOB to a job, and each case's lease names its job."""
    db_url, as_of = due_db
    case_ids = _case_ids(db_url)
    assert len(case_ids) == CASES and _due_timers(db_url, as_of) == 2 * CASES

    scheduler = _scheduler(db_url, redis_url)
    first = scheduler.run_once(as_of=as_of)
    assert (first.due, first.enqueued) == (CASES, CASES), first
    assert first.jobs == CASES // PER_JOB == 20, first
    again = scheduler.run_once(as_of=as_of)  # every case's job is pending: nothing new
    assert (again.enqueued, again.jobs, again.pending) == (0, 0, CASES), again

    connection = Redis.from_url(redis_url)
    main_queue = Queue(QUEUE, connection=connection)
    dup_queue = Queue(DUP_QUEUE, connection=connection)
    assert main_queue.count == CASES // PER_JOB
    jobs = main_queue.get_jobs()
    warn_at = min(t for t in _timer_dues(db_url, case_ids[0]))
    assert (
        jobs[0].id
        == job_id(case_ids[0], warn_at)
        == f"fire-{case_ids[0]}-" + str(int(warn_at.timestamp()) * 10**6 + warn_at.microsecond)
    )
    assert jobs[0].args == (case_ids[:PER_JOB], iso(as_of))
    assert sorted(c for job in jobs for c in job.args[0]) == case_ids
    leases = connection.mget([lease_key(c, warn_at) for c in case_ids])
    assert leases[:PER_JOB] == [jobs[0].id.encode()] * PER_JOB
    assert {lease.decode() for lease in leases} == {job.id for job in jobs}
    dup_queue.enqueue_many(
        [
            Queue.prepare_data(JOB_FUNC, args=job.args, job_id=f"dup-{job.id}", result_ttl=0)
            for job in jobs
        ]
    )

    env = _env(db_url, redis_url)
    a = _runner(env, QUEUE, DUP_QUEUE)
    b = _runner(env, DUP_QUEUE, QUEUE)
    code_a, out_a, err_a = _finish(a)
    code_b, out_b, err_b = _finish(b)
    assert code_a == 0, err_a[-3000:]
    assert code_b == 0, err_b[-3000:]
    counts = [_counts(out_a), _counts(out_b)]

    assert sum(c["cases"] for c in counts) == 2 * CASES
    assert sum(c["jobs"] for c in counts) == 2 * CASES // PER_JOB
    assert sum(c["fired"] for c in counts) == CASES, counts
    assert sum(c["noop"] for c in counts) == CASES, counts
    assert all(c["fired"] > 0 for c in counts), f"one worker did all the work: {counts}"
    assert main_queue.count == dup_queue.count == 0
    assert main_queue.failed_job_registry.count == dup_queue.failed_job_registry.count == 0
    _assert_each_fired_once(db_url, case_ids, as_of)
    # The database is the truth: nothing is due, so a later pass delivers nothing.
    assert scheduler.run_once(as_of=as_of).due == 0


# ------------------------------------------------------------------ a worker killed


def test_a_worker_killed_mid_batch_loses_nothing_and_doubles_nothing(due_db, redis_url):
    db_url, as_of = due_db
    case_ids = _case_ids(db_url)
    assert _scheduler(db_url, redis_url).run_once(as_of=as_of).enqueued == CASES
    env = _env(db_url, redis_url)

    doomed = _cli(env, "worker", "--no-scheduler", "--burst", "--log-level", "WARNING")
    _wait_for(
        lambda: sum(_per_case(db_url, "escalated").values()) >= 20 or doomed.poll() is not None,
        what="the first escalations",
    )
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.communicate()
    assert doomed.returncode == -signal.SIGKILL
    fired = _per_case(db_url, "escalated")
    assert 0 < len(fired) < CASES, "the worker was not killed mid-batch"
    assert set(fired.values()) == {1}

    # A fresh scheduler (taking any job left "started" by the dead worker as lost at once, as it
    # would once the worker's heartbeat lapsed: tests/test_recovery.py) and a fresh worker finish
    # the rest. The job in the dead worker's hands had started (its cases not
    # yet fired are delivered again, in one new job, on the first pass) or was only just taken off
    # the queue, not yet started (put back on the second pass: on one, it may be a live worker's in
    # mid-dequeue); one of them at most.
    scheduler = _scheduler(db_url, redis_url, redeliver_after=0)
    report = scheduler.run_once(as_of=as_of)
    assert report.due == CASES - len(fired), report
    assert report.redelivered <= PER_JOB and report.jobs <= 1, report
    assert report.enqueued == 0, report
    assert report.pending + report.redelivered == report.due, report
    again = scheduler.run_once(as_of=as_of)
    assert (again.enqueued, again.redelivered, again.pending) == (0, 0, report.due), again
    assert report.jobs + again.requeued <= 1, (report, again)
    code, out, err = _finish(
        _cli(env, "worker", "--no-scheduler", "--burst", "--log-level", "WARNING")
    )
    assert code == 0, err[-3000:]
    _assert_each_fired_once(db_url, case_ids, as_of)


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_worker_dying_before_firing_or_before_acknowledging(gl, db_url, redis_url, when):
    """Ten cases, five to a job. SIGKILL in the first job: `before` its 4th case fired (the job is
    lost with cases 4 and 5 still due: the scheduler delivers those two again once the worker's
    heartbeat has lapsed), or `after` its 5th and last case committed but before rq acknowledged
    the job (the job stays "started" in Redis until the scheduler drops it; none of its cases is
    due any more, so none is delivered again, and a copy of it would find nothing to fire)."""
    ids = _open_accepted(gl.session, gl.runtime, 10)
    warn_at, as_of = (t.due_at for t in gl.timers(gl.session.get(Case, ids[0])))
    gl.session.commit()
    scheduler = _scheduler(db_url, redis_url, per_job=5)
    first = scheduler.run_once(as_of=as_of)
    assert (first.enqueued, first.jobs) == (10, 2), first

    env = _env(db_url, redis_url)
    dying = _runner(env, QUEUE, die_at="4:before" if when == "before" else "5:after")
    code, _, err = _finish(dying)
    assert code == -signal.SIGKILL, err[-3000:]
    fired = _per_case(db_url, "escalated")
    assert sorted(fired) == ids[: 3 if when == "before" else 5]
    connection = Redis.from_url(redis_url)
    queue = Queue(QUEUE, connection=connection)
    dead_job = job_id(ids[0], warn_at)
    assert queue.count == 1  # the second job, cases 6 to 10
    assert connection.hget(f"rq:job:{dead_job}", "status") == b"started"

    # While the job's worker beats its heartbeat (here: as if it were alive, only slow), the job
    # is its own and nothing is delivered again.
    heartbeat = heartbeat_key(connection.hget(f"rq:job:{dead_job}", "worker_name").decode())
    connection.set(heartbeat, 1)
    report = scheduler.run_once(as_of=as_of)
    assert (report.enqueued, report.redelivered, report.abandoned) == (0, 0, 0), report
    assert queue.started_job_registry.count == 1
    # Its heartbeat lapses (the worker is dead): the next pass drops the job, long before
    # redeliver_after, and delivers again the cases it left due.
    connection.delete(heartbeat)
    report = scheduler.run_once(as_of=as_of)
    assert report.abandoned == 1, report
    assert report.redelivered == (2 if when == "before" else 0), report
    assert report.jobs == (1 if when == "before" else 0), report
    assert report.pending == 5, report
    assert queue.started_job_registry.count == 0  # `gridloop timers status` counts it no more
    assert not connection.exists(f"rq:job:{dead_job}")

    # A stray copy of the 4th job (a redelivery racing the dead worker's commit) does nothing.
    queue.enqueue_call(JOB_FUNC, args=([ids[3]], iso(as_of)), job_id="copy-4")
    code, out, err = _finish(_runner(env, QUEUE))
    assert code == 0, err[-3000:]
    counts = _counts(out)
    assert counts["fired"] == 10 - len(fired)
    assert counts["noop"] == 1  # the copy (or, `before`, the redelivery it raced)
    _assert_each_fired_once(db_url, ids, as_of)


def test_the_scheduler_drops_the_timer_jobs_whose_worker_stopped_beating(db_url, redis_url):
    """Jobs left "started" as rq records them (status, start, worker; an entry in the started
    registry): a timer job whose worker beats is left alone; one whose worker's heartbeat lapsed is
    dropped on the next pass, hash and registry entry; so is one that started more than
    redeliver_after ago though its worker beats (hung); a job that is not a timer job (an audit
    verification, hours long) is rq's to sweep, whatever its worker does."""
    from rq.utils import utcformat

    connection = Redis.from_url(redis_url)
    queue = Queue(QUEUE, connection=connection)
    now = datetime.now(UTC)

    def started(jid: str, worker: str, ago: timedelta = timedelta(0)) -> None:
        queue.enqueue_call(JOB_FUNC, args=([], None), job_id=jid)
        connection.lrem(queue.key, 1, jid)
        at = utcformat(now - ago)
        connection.hset(
            f"rq:job:{jid}", mapping={"status": "started", "started_at": at, "worker_name": worker}
        )
        connection.zadd(queue.started_job_registry.key, {f"{jid}:run": time.time() + 3600})

    connection.set(heartbeat_key("alive"), 1)
    started("fire-1-1", "alive")
    started("fire-2-2", "dead")
    started("fire-3-3", "alive", timedelta(minutes=2))
    started("verification", "dead", timedelta(minutes=2))
    report = _scheduler(db_url, redis_url).run_once(as_of=START)
    assert (report.due, report.abandoned) == (0, 2), report
    assert sorted(queue.started_job_registry.get_job_ids()) == ["fire-1-1", "verification"]
    assert not connection.exists("rq:job:fire-2-2") and not connection.exists("rq:job:fire-3-3")


def test_a_job_a_worker_took_off_the_queue_but_never_started_goes_back_on_it(gl, db_url, redis_url):
    """rq's dequeue moves a job to an intermediate list, then marks it started: a worker killed
    in between strands it there, still "queued". The scheduler puts it back once it has seen it
    stranded on two passes in a row (on one, it may be a live worker in mid-dequeue)."""
    ids = _open_accepted(gl.session, gl.runtime, 3)
    as_of = gl.timers(gl.session.get(Case, ids[0]))[1].due_at
    gl.session.commit()
    scheduler = _scheduler(db_url, redis_url, per_job=2)
    assert scheduler.run_once(as_of=as_of).enqueued == 3
    connection = Redis.from_url(redis_url)
    queue = Queue(QUEUE, connection=connection)
    assert connection.lmove(queue.key, queue.intermediate_queue_key) is not None
    assert queue.count == 1

    first = scheduler.run_once(as_of=as_of)
    assert (first.requeued, first.pending, first.enqueued) == (0, 3, 0), first
    second = scheduler.run_once(as_of=as_of)
    assert (second.requeued, second.pending, second.enqueued) == (1, 3, 0), second
    assert queue.count == 2 and connection.llen(queue.intermediate_queue_key) == 0

    code, out, err = _finish(_runner(_env(db_url, redis_url), QUEUE))
    assert code == 0, err[-3000:]
    assert _counts(out) == {"fired": 3, "noop": 0, "cases": 3, "jobs": 2}
    _assert_each_fired_once(db_url, ids, as_of)


# ------------------------------------------------------------------ the command


def _open_urgent_yesterday(db_url: str, count: int) -> tuple[list[int], datetime]:
    """Urgent cases (clock hours) accepted a day before the real clock, so `gridloop worker`
    (which reads the real clock) finds their timers due: their 4-hour limit ran out long ago."""
    engine = make_engine(db_url)
    session = make_sessionmaker(engine)()
    opened = datetime.now(UTC) - timedelta(days=1)
    ids = _open_accepted(session, Runtime(FixedClock(opened), SpecRegistry()), count, "urgent")
    due = session.scalar(select(Timer.due_at).order_by(Timer.due_at.desc()).limit(1))
    session.close()
    engine.dispose()
    assert due < datetime.now(UTC)
    return ids, due


def _assert_urgent_fired_once(db_url: str, ids) -> None:
    escalated = _per_case(db_url, "escalated")
    assert set(escalated) == set(ids) and set(escalated.values()) == {1}, escalated
    with _db(db_url) as conn:
        tiers = {t for (t,) in conn.execute('select distinct tier from "case"')}
    assert tiers == {"village_secretary"}  # urgent starts at the district, one tier up


def test_gridloop_worker_burst_runs_the_scheduler_and_two_worker_processes(db_url, redis_url):
    ids, due = _open_urgent_yesterday(db_url, 20)
    code, out, err = _finish(
        _cli(
            _env(db_url, redis_url),
            *("worker", "--burst", "--workers", "2", "--log-level", "WARNING"),
        )
    )
    assert code == 0, err[-3000:]
    assert "20 due case(s): 20 enqueued" in out
    assert "2 rq worker processes" in out
    _assert_urgent_fired_once(db_url, ids)
    assert _due_timers(db_url, datetime.now(UTC)) == 0


def test_gridloop_worker_fires_timers_as_they_come_due_and_stops_on_sigterm(db_url, redis_url):
    """The production shape: the scheduler thread passes every second and the worker waits for
    jobs; SIGTERM stops both (the job in hand is finished first)."""
    ids, _ = _open_urgent_yesterday(db_url, 5)
    process = _cli(_env(db_url, redis_url), "worker", "--log-level", "WARNING")
    try:
        _wait_for(
            lambda: len(_per_case(db_url, "escalated")) == 5 or process.poll() is not None,
            timeout=60,
            what="the worker to fire the due timers",
        )
        assert process.poll() is None, process.communicate()[1][-3000:]
        process.send_signal(signal.SIGTERM)
        code, _, err = _finish(process, timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert code == 0, err[-3000:]
    _assert_urgent_fired_once(db_url, ids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(
                line.split()[1:2] == ["Z"] for line in status if line.startswith("State")
            )
    except FileNotFoundError:
        return False


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read()
    except FileNotFoundError:
        return b""


def test_the_supervisor_restarts_a_dead_worker_and_its_workers_die_with_it(db_url, redis_url):
    from rq import Worker

    connection = Redis.from_url(redis_url)
    process = _cli(
        _env(db_url, redis_url),
        "worker",
        "--no-scheduler",
        "--workers",
        "2",
        "--log-level",
        "WARNING",
    )

    def pids() -> set[int]:
        return {w.pid for w in Worker.all(connection=connection)}

    try:
        _wait_for(lambda: len(pids()) == 2, timeout=60, what="two rq workers")
        first = pids()
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: pids() - first, timeout=60, what="a worker started in its place")
        children = {p for p in pids() if _alive(p)}
        assert len(children) == 2 and victim not in children
        os.kill(process.pid, signal.SIGKILL)  # the supervisor only: not its process group
        _wait_for(
            lambda: not any(_alive(p) for p in children), timeout=60, what="the workers to exit"
        )
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for pid in pids():  # a worker left behind by a failure, and only that
            if _alive(pid) and b"\0-m\0jobs\0" in _cmdline(pid):
                os.kill(pid, signal.SIGKILL)
        process.communicate()


def test_without_redis_the_worker_command_points_to_the_embedded_ticker(cli_env):
    result = cli_env.invoke(main, ["worker"])
    assert result.exit_code != 0
    assert "GRIDLOOP_REDIS_URL is not set" in result.output
    assert "embedded ticker in `gridloop serve` fires timers" in result.output


def test_timers_status_prints_pending_overdue_and_the_oldest_lag(
    gl, cli_env, redis_url, monkeypatch
):
    cases = [gl.accepted() for _ in range(3)]
    gl.clock.advance(hours=2)
    gl.accepted()  # two hours later: its timers are not due yet
    warn_at, due_at = (t.due_at for t in gl.timers(cases[0]))
    gl.session.commit()
    as_of = warn_at + timedelta(minutes=30, seconds=5)
    assert as_of < due_at

    result = cli_env.invoke(main, ["timers", "status", "--as-of", iso(as_of)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"as of {iso(as_of)}",
        "pending: 8 timer(s) not yet fired",
        "overdue: 3 of them due",
        f"oldest overdue: due {iso(warn_at)}, lag 0:30:05 (1805 s)",
        "outbox: 0 notification(s) waiting, 0 failed",
        calendar_warning(2027),  # START is in late November and 2027 is not entered
    ]
    a_day_later = iso(warn_at + timedelta(days=1, seconds=1))
    later = cli_env.invoke(main, ["timers", "status", "--as-of", a_day_later]).output
    assert "lag 1d 0:00:01 (86401 s)" in later

    monkeypatch.setenv(REDIS_URL_ENV, redis_url)
    with_queue = cli_env.invoke(main, ["timers", "status"]).output
    assert "queue gridloop-timers: 0 queued, 0 started, 0 failed" in with_queue
    late = cli_env.invoke(main, ["timers", "status", "--as-of", iso(as_of), "--max-lag", "1800"])
    assert late.exit_code == 1
    calm = cli_env.invoke(main, ["timers", "status", "--as-of", iso(START), "--max-lag", "0"])
    assert calm.exit_code == 0 and "oldest overdue: none, lag 0 s" in calm.output
