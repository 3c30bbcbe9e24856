"""Several processes on one case loop (issue 12): `gridloop serve --workers 2` (gunicorn, the
ticker in its master) and `gridloop worker --workers 2` (rq) against 200 cases driven at once over
HTTP, while two `gridloop timers fire-due --as-of` processes and the rq workers fire timers. No step
is lost or doubled: every chain verifies, every case replays to its stored rows, each completion
is one event, and two clients completing the same item get one 200 and one 409.

The end-to-end test runs in both passes of `make test`, on the pass's database (SQLite files, or
PostgreSQL with GRIDLOOP_TEST_DATABASE=postgresql), with the session's Redis. The servers read
the real clock: timers fall due either because their cases were opened a day before it (the rq
workers fire those) or because `timers fire-due --as-of` names an instant ahead of it. The tests of
the timer claim (FOR UPDATE SKIP LOCKED) that hold row locks by hand run on PostgreSQL only.
"""

# The Redis fixture is imported from tests/redis_fixture.py, and tests name it as an argument.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ACCEPT_NORMAL, GRID, REPO
from redis_fixture import redis_url  # noqa: F401
from sqlalchemy import select, text

from engine.access import viewer_of
from engine.clock import FixedClock, iso
from engine.digests import verify_all
from engine.models import Case, CaseEvent, Person, Timer, WorkItem
from engine.replay import replay
from engine.runtime import Runtime
from engine.specs import SpecRegistry
from engine.storage import make_engine, make_sessionmaker
from webapp.cli import main

CASES = 200  # driven over HTTP
TIMED = 50  # of them urgent and left at the district: `timers fire-due --as-of` escalates them
ARCHIVED = 50  # of the others, taken on to the archive; the rest wait for their report
LATE = 30  # more, opened a day before the real clock: the rq workers find them due
PAIRS = 30  # items of each of two tasks completed by two clients at once
THREADS = 16  # HTTP clients at once
START_TIMEOUT = 60  # seconds for the servers to come up
GRIDS = {  # grid: (officer, grid leader, district leader)
    "V01-D1-G01": ("off1", "gl1", "dl1"),
    "V01-D1-G02": ("off2", "gl2", "dl1"),
    "V02-D1-G01": ("off3", "gl3", "dl2"),
    "V02-D1-G02": ("off4", "gl4", "dl2"),
}
URGENT = {"valid": True, "category": "resident_request", "severity": "urgent"}

postgresql_only = pytest.mark.postgresql_only  # row locks: the SQLite pass deselects these


# ------------------------------------------------------------------ processes


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env(db_url: str, redis: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GRIDLOOP_DATABASE_URL=db_url,
        GRIDLOOP_REDIS_URL=redis,
        GRIDLOOP_SECRET_KEY="test",
        GRIDLOOP_CHEAP_PASSWORDS="1",
        PYTHONPATH=str(REPO),
    )
    return env


def _gridloop(env, log: Path, *args: str) -> subprocess.Popen:
    """`gridloop ARGS` in its own process group, its output in a file (a pipe nobody reads
    would fill up and stall the server)."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "webapp.cli", *args],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(
    process: subprocess.Popen, log: Path, timeout: float = 60, signalled: bool = False
) -> int:
    """SIGTERM (unless `signalled` already), then the exit status; the whole group is killed if
    it does not stop in time."""
    if not signalled and process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"{process.args[3:]} did not stop on SIGTERM:\n{log.read_text()[-3000:]}")


def _wait_for(condition, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log else ""
            pytest.fail(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.05)


# ------------------------------------------------------------------ HTTP


class Api:
    """A JSON client of /api/v1 on the server's port; each call answers (status, body)."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}/api/v1"

    def call(self, method: str, path: str, token: str | None = None, body=None):
        request = urllib.request.Request(self.base + path, method=method)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, data, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def up(self) -> bool:
        try:
            return self.call("GET", "/openapi.json")[0] == 200
        except OSError:  # not listening yet, or the connection was reset while workers boot
            return False

    def token(self, username: str) -> str:
        status, body = self.call("POST", "/tokens", body={"username": username, "password": "pw"})
        assert status == 201, body
        return body["token"]

    def inbox(self, token: str) -> list[dict]:
        items, cursor = [], None
        while True:
            query = f"?cursor={cursor}" if cursor else ""
            status, body = self.call("GET", f"/inbox{query}", token)
            assert status == 200, body
            items += body["items"]
            cursor = body["next_cursor"]
            if cursor is None:
                return items

    def complete(self, token: str, item_id: int, data: dict) -> tuple[int, dict]:
        return self.call("POST", f"/work-items/{item_id}/complete", token, {"data": data})


class Clients:
    """Two tokens per person: two clients each, for the races."""

    def __init__(self, api: Api, usernames):
        self.api = api
        self.tokens = {name: (api.token(name), api.token(name)) for name in usernames}

    def __call__(self, username: str, second: bool = False) -> str:
        return self.tokens[username][1 if second else 0]

    def items(self, username: str, task: str, numbers: set[str]) -> dict[str, int]:
        """The ids of `username`'s open `task` items of the cases `numbers`, by case number."""
        return {
            i["case"]["number"]: i["id"]
            for i in self.api.inbox(self(username))
            if i["task"] == task and i["case"]["number"] in numbers
        }


def _race(api: Api, first: str, second: str, item_id: int, data: dict) -> list[int]:
    """Two clients complete the same item at the same moment; their statuses, sorted."""
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def complete(token: str) -> None:
        barrier.wait(timeout=30)
        statuses.append(api.complete(token, item_id, data)[0])

    threads = [threading.Thread(target=complete, args=(t,)) for t in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    return sorted(statuses)


# ------------------------------------------------------------------ the database


def _open_late(db_url: str, count: int) -> set[str]:
    """Urgent cases accepted a day before the real clock, waiting at the district: their 4-hour
    limit ran out long ago, so the rq workers (on the real clock) escalate them."""
    engine = make_engine(db_url)
    session = make_sessionmaker(engine)()
    runtime = Runtime(FixedClock(datetime.now(UTC) - timedelta(days=1)), SpecRegistry())
    officer = viewer_of(
        session, session.scalars(select(Person).where(Person.username == "off1")).one()
    )
    numbers = set()
    for i in range(count):
        case = runtime.open_case(session, officer, title=f"昨天的险情 {i}", grid=GRID)
        item = session.scalars(select(WorkItem).where(WorkItem.case_id == case.id)).one()
        runtime.complete(session, officer, item.id, URGENT)
        numbers.add(case.number)
    session.close()
    engine.dispose()
    return numbers


def _due_bounds(db_url: str, timed: set[str], others: set[str]) -> tuple[datetime, datetime]:
    """The latest due instant of the timed cases' timers, and the earliest of the others'."""
    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine)() as session:

            def due(numbers, pick):
                query = select(Timer.due_at).join(Case, Case.id == Timer.case_id)
                return session.scalar(query.where(Case.number.in_(numbers)).order_by(pick).limit(1))

            return due(timed, Timer.due_at.desc()), due(others, Timer.due_at)
    finally:
        engine.dispose()


def _fired(log: Path) -> int:
    found = re.search(r"fired the due timers of (\d+) case", log.read_text())
    assert found, log.read_text()[-3000:]
    return int(found.group(1))


# ------------------------------------------------------------------ the end-to-end test


def test_two_web_processes_and_two_workers_over_200_cases_lose_and_double_no_step(
    db_url, redis_url, tmp_path
):
    late = _open_late(db_url, LATE)
    env = _env(db_url, redis_url)
    port = _free_port()
    api = Api(port)
    logs = {name: tmp_path / f"{name}.log" for name in ("serve", "worker", "fire1", "fire2")}
    server = _gridloop(env, logs["serve"], "serve", "--workers", "2", "--port", str(port))
    workers = _gridloop(env, logs["worker"], "worker", "--workers", "2", "--log-level", "WARNING")
    pool = ThreadPoolExecutor(THREADS)
    fire: list[subprocess.Popen] = []
    try:
        _wait_for(
            lambda: api.up() or server.poll() is not None,
            START_TIMEOUT,
            "the server",
            logs["serve"],
        )
        assert server.poll() is None, logs["serve"].read_text()[-3000:]
        people = {name for trio in GRIDS.values() for name in trio}
        clients = Clients(api, sorted(people))

        # 1. 200 cases opened at once, by the officers of four grids.
        grids = [list(GRIDS)[i % len(GRIDS)] for i in range(CASES)]

        def open_case(i: int) -> tuple[str, str]:
            grid = grids[i]
            body = {"title": f"并发 {i}", "description": "—", "grid": grid}
            status, case = api.call("POST", "/cases", clients(GRIDS[grid][0]), body)
            assert status == 201, case
            return case["number"], grid

        grid_of = dict(pool.map(open_case, range(CASES)))
        assert len(grid_of) == CASES
        numbers = sorted(grid_of)
        timed = set(numbers[:TIMED])  # urgent: handled at the district, escalated by fire-due
        handled = set(numbers[TIMED:])  # the rest are handled at the grid over HTTP
        archived = set(numbers[-ARCHIVED:])

        def by_person(role: int, task: str, cases: set[str]) -> dict[str, tuple[str, int]]:
            """{case number: (person, item id)} for the person of `role` in each case's grid."""
            found = {}
            for person in {GRIDS[grid_of[n]][role] for n in cases}:
                mine = {n for n in cases if GRIDS[grid_of[n]][role] == person}
                found.update({n: (person, i) for n, i in clients.items(person, task, mine).items()})
            assert set(found) == cases, f"{task}: {len(cases - set(found))} item(s) not in inboxes"
            return found

        def run_phase(
            task: str, role: int, cases: set[str], data_of, races: set[str] = frozenset()
        ):
            """Complete `task` on every case at once; the cases in `races` by two clients."""
            items = by_person(role, task, cases)

            def one(number: str):
                person, item_id = items[number]
                data = data_of(number)
                if number in races:
                    return number, _race(api, clients(person), clients(person, True), item_id, data)
                status, body = api.complete(clients(person), item_id, data)
                assert status == 200, (task, number, body)
                return number, [status]

            outcomes = dict(pool.map(one, sorted(cases)))  # each step's own assert holds
            raced = {n: outcomes[n] for n in races}
            assert all(s == [200, 409] for s in raced.values()), (task, raced)

        # 2. Every case accepted at once; PAIRS of the accept items by two clients at once.
        run_phase(
            "accept",
            0,
            set(numbers),
            lambda n: URGENT if n in timed else ACCEPT_NORMAL,
            races=set(numbers[TIMED - PAIRS // 2 : TIMED + PAIRS // 2]),
        )

        # 3. Two `timers fire-due --as-of` processes escalate the urgent cases (and the late
        # ones the rq workers have not fired yet) while the others are handled over HTTP. The
        # instant is past every urgent case's 4-hour limit and before any other case's 80%
        # notice: the earliest is handling's 19.2 working hours, or report's 6.4 from later on.
        as_of, others = _due_bounds(db_url, timed, handled)
        as_of += timedelta(seconds=1)
        assert others > as_of, (others, as_of)
        fire += [
            _gridloop(env, logs[name], "timers", "fire-due", "--as-of", iso(as_of))
            for name in ("fire1", "fire2")
        ]
        handle_races = set(sorted(handled)[:PAIRS])
        run_phase(
            "handle",
            1,
            handled,
            lambda n: {"outcome": "resolved", "note": "已处理"},
            races=handle_races,
        )
        run_phase("feedback", 0, handled, lambda n: {"satisfaction": "satisfied"})
        run_phase("report", 1, archived, lambda n: {"summary": "已办结"})
        run_phase("review", 2, archived, lambda n: {"approved": True})
        for process, name in zip(fire, ("fire1", "fire2"), strict=True):  # they end by themselves
            status = _stop(process, logs[name], timeout=120, signalled=True)
            assert status == 0, logs[name].read_text()[-3000:]
        fired_ahead = _fired(logs["fire1"]) + _fired(logs["fire2"])

        # The rq workers escalate the late cases that fire-due did not get to first.
        _wait_for(
            lambda: _escalated_cases(db_url) >= TIMED + LATE,
            60,
            "the rq workers to escalate the late cases",
            logs["worker"],
        )
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for process in fire:  # left running only when the test failed before their end
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for process in (server, workers):  # both stop at once; each is then waited for
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        served = _stop(server, logs["serve"], signalled=True)
        worked = _stop(workers, logs["worker"], signalled=True)
    assert served == 0, logs["serve"].read_text()[-3000:]
    assert worked == 0, logs["worker"].read_text()[-3000:]
    serve_log = logs["serve"].read_text()
    # The background work ran once, in gunicorn's master (the process started), not per worker.
    tickers = re.findall(r"ticker runs in the master \(pid (\d+)\)", serve_log)
    assert tickers == [str(server.pid)], serve_log[-3000:]
    assert serve_log.count("Booting worker with pid") == 2, serve_log[-3000:]
    assert not re.search(r'HTTP/1\.[01]" 5\d\d ', serve_log), "a request failed with a 5xx"
    assert "Traceback" not in serve_log, serve_log[-3000:]

    _assert_the_record_holds(db_url, timed | late, handled, archived, as_of, fired_ahead)


def _escalated_cases(db_url: str) -> int:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.scalar(
                text("select count(distinct case_id) from case_event where type = 'escalated'")
            )
    finally:
        engine.dispose()


def _assert_the_record_holds(db_url, escalating, handled, archived, as_of, fired_ahead) -> None:
    engine = make_engine(db_url)
    session = make_sessionmaker(engine)()
    try:
        report = verify_all(session)
        assert report.ok and report.cases == CASES + LATE, report.problems[:5]

        cases = session.scalars(select(Case).order_by(Case.id)).all()
        registry = SpecRegistry()
        for case in cases:
            result = replay(session, case, registry)
            assert result.ok, (case.number, result.as_json())

        events = session.execute(
            select(CaseEvent.case_id, CaseEvent.type, CaseEvent.task, CaseEvent.at)
        ).all()
        items = session.execute(
            select(WorkItem.case_id, WorkItem.task).where(
                WorkItem.completed_by.is_not(None), WorkItem.cancelled.is_(False)
            )
        ).all()
        completed = Counter((e.case_id, e.task) for e in events if e.type == "task_completed")
        assert completed == Counter((i.case_id, i.task) for i in items), "a step doubled or lost"

        number = {c.id: c.number for c in cases}
        escalations = Counter(number[e.case_id] for e in events if e.type == "escalated")
        assert escalations == dict.fromkeys(escalating, 1), "a timer fired twice, or never"
        # Each fire-due process counted the cases it moved; together, those escalated as of TIME.
        assert sum(1 for e in events if e.type == "escalated" and e.at == iso(as_of)) == fired_ahead
        assert fired_ahead >= TIMED

        by_number = {c.number: c for c in cases}
        assert {by_number[n].tier for n in escalating} == {"village_secretary"}
        assert {by_number[n].status for n in archived} == {"archived"}
        assert {by_number[n].status for n in handled - archived} == {"reporting"}
        assert session.scalar(select(Timer.id).join(Case).where(Case.number.in_(archived))) is None
    finally:
        session.close()
        engine.dispose()


# ------------------------------------------------------------------ the timer claim


def _accepted(gl, count: int) -> list:
    cases = []
    for i in range(count):
        case = gl.open("off1", title=f"路灯 {i}")
        cases.append(gl.complete("off1", case, ACCEPT_NORMAL))
    gl.session.commit()
    return cases


def test_two_processes_firing_the_same_batch_fire_each_case_once(gl, db_url, clock):
    """Two runtimes on their own engines fire the same 30 due cases at once (two tickers, or the
    ticker and `timers fire-due`): together they move each case once."""
    cases = _accepted(gl, 30)
    due_at = gl.item(cases[-1]).due_at
    engines = [make_engine(db_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    moved = [0, 0]

    def fire(i: int) -> None:
        session = make_sessionmaker(engines[i])()
        try:
            barrier.wait(timeout=30)
            moved[i] = Runtime(clock, SpecRegistry()).fire_due_timers(session, as_of=due_at)
        finally:
            session.close()

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for engine in engines:
        engine.dispose()
    assert sum(moved) == len(cases), moved
    for case in cases:
        assert gl.types(gl.reload(case)).count("escalated") == 1, case.number


@postgresql_only
def test_the_pick_skips_a_case_whose_timers_another_transaction_holds(gl, db_engine):
    held, free = _accepted(gl, 2)
    due_at = gl.item(free).due_at
    with db_engine.connect() as other:
        other.execute(
            text("select id from timer where case_id = :c for update"), {"c": held.id}
        ).all()
        # The held case is skipped, not waited for: the free one fires at once.
        assert gl.runtime.fire_due_timers(gl.session, as_of=due_at) == 1
        assert "escalated" not in gl.types(gl.reload(held))
        assert "escalated" in gl.types(gl.reload(free))
        gl.session.rollback()
        other.rollback()
    assert gl.runtime.fire_due_timers(gl.session, as_of=due_at) == 1
    assert gl.types(gl.reload(held)).count("escalated") == 1


@postgresql_only
def test_a_round_that_finds_every_due_case_held_waits_for_it(gl, db_engine):
    """When every due row is held (its case is mid-step elsewhere), the round waits for the holder
    instead of reporting that nothing moved: `timers fire-due` goes round after round until a
    round moves nothing, and must not stop while timers are still due."""
    (case,) = _accepted(gl, 1)
    due_at = gl.item(case).due_at
    moved: list[int] = []
    with db_engine.connect() as other:
        other.execute(
            text("select id from timer where case_id = :c for update"), {"c": case.id}
        ).all()
        firing = threading.Thread(
            target=lambda: moved.append(gl.runtime.fire_due_timers(gl.session, as_of=due_at))
        )
        firing.start()

        def waiting() -> bool:  # a backend waits for the holder's transaction
            query = "select count(*) from pg_locks where not granted and locktype = 'transactionid'"
            with db_engine.connect() as conn:
                return conn.execute(text(query)).scalar() > 0

        try:
            _wait_for(lambda: waiting() or not firing.is_alive(), 30, "the round to wait")
            assert firing.is_alive() and moved == [], "the round did not wait for the holder"
        finally:
            other.rollback()
            firing.join(timeout=30)
    assert moved == [1]
    assert gl.types(gl.reload(case)).count("escalated") == 1


def test_serve_with_workers_refuses_a_busy_port_with_a_clear_message(cli_env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli_env.invoke(main, ["serve", "--workers", "2", "--port", str(port)])
    assert result.exit_code != 0
    assert f"port {port}" in result.output and "already in use" in result.output
