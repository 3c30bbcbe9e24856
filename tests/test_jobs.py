"""The jobs package: background work on one composition root, with no web framework.

The races, the SIGKILLs and the supervisor are tests/test_worker.py's, on worker processes; here
the root itself, and each job run in-process on a root as `gridloop serve` and `gridloop worker`
build one: the ticker's round, the catch-up, the rq job, outbox delivery and the status readers.
"""

# The Redis fixtures are imported from tests/redis_fixture.py, and tests name them as arguments.
# ruff: noqa: F811

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from apps import build_app, dispose_app
from conftest import ORG_YAML, REPO, START
from redis_fixture import _free_port
from sqlalchemy import select

from engine.clock import FixedClock, iso
from engine.models import Case, Notification, Unit
from engine.storage import make_sessionmaker
from jobs import outbox, worker
from jobs.root import REDIS_URL_ENV, Root, build_root
from jobs.scheduler import TimerScheduler
from jobs.status import queue_states, timers_status
from jobs.ticker import Ticker, catch_up, fire_due


@pytest.fixture
def root(db_engine, runtime, clock) -> Root:
    """A root on the test's database, Runtime and clock, as build_root composes them (the shared
    Runtime keeps the session's parsed specs). No Redis."""
    return Root(clock, runtime, db_engine, make_sessionmaker(db_engine), redis_url=None)


@pytest.fixture
def process_root(monkeypatch):
    """Whatever a test hands the worker process as its root is forgotten after it."""
    monkeypatch.setattr(worker, "_ROOT", None)


def _due_at(gl, case: Case):
    return max(t.due_at for t in gl.timers(case))  # the escalation timer, after the 80% one


# ------------------------------------------------------------------ the root


def test_the_jobs_package_loads_no_web_framework():
    code = (
        "import sys, jobs.root, jobs.ticker, jobs.outbox, jobs.scheduler, jobs.worker, "
        "jobs.status, jobs.__main__\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'webapp')))"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_root_reads_the_redis_url_once_and_the_ticker_follows_it(db_url, monkeypatch):
    monkeypatch.setenv(REDIS_URL_ENV, "redis://127.0.0.1:6399/3")
    with build_root(database_url=db_url) as with_redis:
        monkeypatch.setenv(REDIS_URL_ENV, "")  # read when the root was built, not later
        assert with_redis.redis_url == "redis://127.0.0.1:6399/3"
        assert not Ticker(with_redis).fires_timers  # rq workers fire timers; it delivers only
    with build_root(database_url=db_url) as without:
        assert without.redis_url is None and Ticker(without).fires_timers
        with pytest.raises(RuntimeError, match=REDIS_URL_ENV):
            without.redis  # noqa: B018 - the property is the call
    with build_root(database_url=db_url, redis_url=None) as explicit:
        assert explicit.redis_url is None and explicit.owns_engine


def test_the_web_app_and_its_ticker_share_one_root(tmp_path):
    from webapp import services
    from webapp.extensions import db

    clock = FixedClock(START)
    app = build_app(tmp_path / "app.sqlite", ORG_YAML, clock)
    try:
        svc = services(app)
        assert svc.jobs.runtime is svc.runtime and svc.jobs.clock is clock
        with app.app_context():
            assert svc.jobs.engine is db.engine  # one connection pool for requests and ticks
        assert not svc.jobs.owns_engine
    finally:
        dispose_app(app)


# ------------------------------------------------------------------ the jobs


def test_the_ticker_fires_a_round_and_catch_up_fires_until_nothing_is_due(gl, root, clock):
    cases = [gl.accepted() for _ in range(3)]
    as_of = _due_at(gl, cases[0])
    gl.session.commit()
    assert fire_due(root) == 0  # nothing is due at the root's clock yet
    assert catch_up(root, as_of) == 3
    assert catch_up(root, as_of) == 0
    for case in cases:
        assert gl.types(gl.reload(case)).count("escalated") == 1
    clock.set(as_of + timedelta(days=30))
    assert Ticker(root).tick() == 3  # the district's limits ran out too: one tier up again


def test_the_rq_job_fires_a_case_once_on_the_process_root(gl, root, process_root):
    case = gl.accepted()
    as_of = _due_at(gl, case)
    gl.session.commit()
    worker.use_root(root)
    assert worker.process_root() is root
    assert worker.fire_case(case.id, iso(as_of)) is True
    assert worker.fire_case(case.id, iso(as_of)) is False  # a second delivery finds nothing due
    assert gl.types(gl.reload(case)).count("escalated") == 1


def test_outbox_delivery_posts_at_the_roots_clock(gl, root):
    grid = gl.session.scalars(select(Unit).where(Unit.code == "V01-D1-G01")).one()
    grid.settings = {"notify": [{"url": "https://hooks.example/gridloop", "format": "json"}]}
    gl.session.commit()
    gl.accepted()
    gl.session.commit()
    posted = []

    def post(url: str, body: bytes) -> tuple[int, bytes]:
        posted.append(url)
        return 200, b""

    assert outbox.deliver(root, post) == len(posted) > 0
    assert outbox.deliver(root, post) == 0  # delivered once
    gl.session.expire_all()
    delivered = gl.session.scalars(select(Notification.delivered_at)).all()
    assert set(delivered) == {START}


# ------------------------------------------------------------------ status


def test_status_without_redis_has_no_queue(gl, root):
    gl.accepted()
    gl.session.commit()
    state, lines = timers_status(root, START)
    assert state.pending == 2 and lines[0] == f"as of {iso(START)}"
    assert not any(line.startswith("queue") for line in lines)
    assert queue_states(root) is None


def test_status_when_redis_does_not_answer(root):
    root.redis_url = f"redis://127.0.0.1:{_free_port()}/0"  # nothing listens there
    try:
        _, lines = timers_status(root, START)
        assert lines[0].startswith(f"queue: Redis at {root.redis_url} did not answer")
        (entry,) = queue_states(root)  # the operations page renders an error line instead
        assert entry["name"] == "redis" and entry["error"]
    finally:
        root.close()


def test_the_scheduler_and_a_worker_on_one_root(gl, root, redis_url, process_root):
    """`gridloop worker` in one process: the scheduler and an rq worker on the same root, its
    Redis connection included."""
    cases = [gl.accepted() for _ in range(2)]
    as_of = _due_at(gl, cases[0])
    gl.session.commit()
    root.redis_url, root.redis_timeout = redis_url, None  # as worker_root() builds it
    try:
        report = TimerScheduler.of(root).run_once(as_of=as_of)
        assert (report.due, report.enqueued) == (2, 2), report
        assert queue_states(root) == [
            {"name": "gridloop-timers", "waiting": 1, "running": 0, "failed": 0}  # one job, 2 cases
        ]
        worker.run_worker(root, burst=True, log_level="WARNING")
        assert worker.process_root() is root
        for case in cases:
            assert gl.types(gl.reload(case)).count("escalated") == 1
        _, lines = timers_status(root, as_of)
        assert "queue gridloop-timers: 0 queued, 0 started, 0 failed" in lines
    finally:
        root.close()


def test_a_case_that_fails_in_a_job_backs_off_and_the_others_in_it_fire(
    gl, root, redis_url, process_root, monkeypatch
):
    """One job carries three cases; the second raises. The other two escalate in their own
    transactions, the job ends failed naming the broken case, and the next pass leaves that case
    alone while the failed job is kept (the back-off); once it is gone, the case goes out again."""
    cases = [gl.accepted() for _ in range(3)]
    as_of = _due_at(gl, cases[0])
    gl.session.commit()
    root.redis_url, root.redis_timeout = redis_url, None
    broken = cases[1].id
    fire = root.runtime.fire_case_timers

    def fire_or_break(session, case_id, moment):
        if case_id == broken:
            raise RuntimeError("a broken diagram")
        return fire(session, case_id, moment)

    monkeypatch.setattr(root.runtime, "fire_case_timers", fire_or_break)
    try:
        scheduler = TimerScheduler.of(root)
        first = scheduler.run_once(as_of=as_of)
        assert (first.enqueued, first.jobs) == (3, 1), first
        worker.run_worker(root, burst=True, log_level="CRITICAL")
        assert [gl.types(gl.reload(c)).count("escalated") for c in cases] == [1, 0, 1]
        (failed,) = scheduler.queue.failed_job_registry.get_job_ids()
        assert (
            f"case(s) [{broken}] failed"
            in scheduler.queue.fetch_job(failed).latest_result().exc_string
        )

        backing = scheduler.run_once(as_of=as_of)
        assert (backing.due, backing.backing_off, backing.enqueued) == (1, 1, 0), backing
        scheduler.queue.fetch_job(failed).delete()  # the back-off (FAILURE_TTL) is over
        monkeypatch.setattr(root.runtime, "fire_case_timers", fire)
        again = scheduler.run_once(as_of=as_of)
        assert (again.enqueued, again.jobs) == (1, 1), again
        worker.run_worker(root, burst=True, log_level="CRITICAL")
        assert gl.types(gl.reload(cases[1])).count("escalated") == 1
    finally:
        root.close()


def test_a_worker_process_needs_the_redis_url():
    env = {k: v for k, v in os.environ.items() if k != REDIS_URL_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "jobs", "--burst"],
        env=dict(env, PYTHONPATH=str(REPO), GRIDLOOP_DATABASE_URL="sqlite://"),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and f"{REDIS_URL_ENV} is not set" in done.stderr


# ------------------------------------------------------------------ one definition each


def test_one_town_zone_and_one_unit_column_map(gl):
    from engine import clock, notify, runtime, workcal
    from engine.models import CASE_UNIT_COLUMN, case_unit

    assert workcal.SHANGHAI is notify.SHANGHAI is runtime.SHANGHAI is clock.SHANGHAI
    assert str(clock.SHANGHAI) == clock.TOWN_ZONE_NAME == "Asia/Shanghai"
    case = gl.accepted()
    for level in ("town", "village", "district", "grid"):
        column = case_unit(Case, level)
        assert column is getattr(Case, f"{level}_id") and level in CASE_UNIT_COLUMN
        assert case_unit(case, level) == getattr(case, f"{level}_id")
        assert gl.session.scalar(select(Case.id).where(column == case_unit(case, level)))
    with pytest.raises(KeyError):
        case_unit(case, "department")
