"""Recovery after a worker dies (issue 12): a timer whose worker was SIGKILLed in the middle of its
job fires within 5 s of the death, once, and `gridloop timers status` shows no backlog soon after.

Everything here is real and on the wall clock: `gridloop worker` processes (each a scheduler
passing every 0.25 s beside an rq worker) on the test's Redis and database, urgent cases accepted
a day ago so that their timers are due now. One worker is made to hang in its job (a hook patched
into the real command, as tests/test_worker.py's RUNNER patches its crash points), a second
`gridloop worker` is started beside it, and the first is killed with SIGKILL. The test measures,
by wall time and polling with deadlines, how long the second takes to fire what the dead one held.

Why it is quick, and still once: workers beat a heartbeat key in Redis every second with a 3 s
TTL; the scheduler takes a started job whose worker's key lapsed as abandoned, drops it and
delivers its still-due cases again. The database consumes a timer row in its case's transaction
under the version check, so a case the dead worker committed is not due and is not fired again
(jobs/scheduler.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from conftest import REPO
from redis import Redis
from rq import Queue, Worker
from rq.utils import utcparse
from test_worker import _db, _env, _finish, _open_urgent_yesterday, _per_case

from jobs.scheduler import HEARTBEAT_TTL, LOCK, LOCK_TTL, QUEUE, heartbeat_key
from webapp.cli import main

RECOVERY = 5.0  # seconds from the SIGKILL to the case's escalation: the bound
START_UP = 60  # seconds a `gridloop worker` process may take to start (imports, first pass)

# The real `gridloop worker` command with a hook in its job: GL_HANG_AT=N hangs at the job's Nth
# case, before firing it; GL_HANG_AT=end hangs once the job's last case has committed, before the
# job returns to rq. Either way the process writes the case id (or "end") to GL_HANG_MARK first,
# so the test knows that it is mid-job, and then waits to be killed.
HANGING_WORKER = """
import os, time
import jobs.worker as w
from webapp.cli import main
hang_at, mark = os.environ["GL_HANG_AT"], os.environ["GL_HANG_MARK"]
original_case, original_job = w.fire_case, w.fire_cases
seen = []
def hang(what):
    with open(mark + ".tmp", "w") as out:
        out.write(what)
    os.replace(mark + ".tmp", mark)
    while True:
        time.sleep(3600)
def fire_case(case_id, as_of=None):
    seen.append(case_id)
    if hang_at != "end" and len(seen) == int(hang_at):
        hang(str(case_id))
    return original_case(case_id, as_of)
def fire_cases(case_ids, as_of=None):
    moved = original_job(case_ids, as_of)
    if hang_at == "end":
        hang("end")
    return moved
w.fire_case, w.fire_cases = fire_case, fire_cases
main(["worker", "--log-level", "WARNING"], prog_name="gridloop")
"""


def _start(env: dict[str, str], *command: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *command],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the test can kill it and its children
    )


def _until(condition, timeout: float, what: str, process: subprocess.Popen | None = None):
    """Poll `condition` until it returns something true, and return that; fail after `timeout`
    seconds, or at once if `process` died meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the worker exited with {process.returncode}:\n{process.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def _items(db_url: str) -> dict[int, tuple[int, int]]:
    """Per case: (work items in all, of them still open)."""
    with _db(db_url) as conn:
        rows = conn.execute(
            "select case_id, count(*), sum(case when completed_at is null then 1 else 0 end) "
            "from work_item group by case_id"
        )
        return {case_id: (total, int(open_)) for case_id, total, open_ in rows.fetchall()}


def _status(db_url: str, redis: str) -> tuple[int, str]:
    """`gridloop timers status --max-lag 0` on the real clock: its exit code and output."""
    runner = CliRunner(
        env={
            "GRIDLOOP_DATABASE_URL": db_url,
            "GRIDLOOP_REDIS_URL": redis,
            "GRIDLOOP_CHEAP_PASSWORDS": "1",
        }
    )
    result = runner.invoke(main, ["timers", "status", "--max-lag", "0"])
    return result.exit_code, result.output


def _no_backlog(db_url: str, redis: str) -> tuple[int, str] | None:
    """The status, when it shows no backlog: nothing overdue, no job queued, started or failed."""
    code, output = _status(db_url, redis)
    clear = (
        code == 0
        and "overdue: 0 of them due" in output
        and "queue gridloop-timers: 0 queued, 0 started, 0 failed" in output
    )
    return (code, output) if clear else None


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


@pytest.mark.parametrize("hang_at", ["3", "end"])
def test_a_timer_whose_worker_is_sigkilled_mid_job_fires_within_5_s_once(
    db_url, redis_url, tmp_path, hang_at
):
    """Five urgent cases are due; the first `gridloop worker` takes them in one job and hangs:
    at `3`, before firing the third case (cases 1 and 2 committed, 3 to 5 still due), or at
    `end`, after the last case committed but before rq heard that the job finished. A second
    `gridloop worker` starts beside it and waits: the job's worker still beats, so nothing is
    delivered twice. Then the first dies by SIGKILL. At `3`, the second fires cases 3 to 5 within
    5 s of the kill; at `end`, nothing is due and nothing fires again. Each case escalates once
    and gets one new work item, and `gridloop timers status` soon shows no backlog: no overdue
    timer, and no job left "started" by the dead worker."""
    ids, _ = _open_urgent_yesterday(db_url, 5)
    connection = Redis.from_url(redis_url)
    env = _env(db_url, redis_url)
    mark = tmp_path / "hanging"
    doomed = _start(dict(env, GL_HANG_AT=hang_at, GL_HANG_MARK=str(mark)), "-c", HANGING_WORKER)
    rescuer = rescued = None
    try:
        _until(mark.exists, START_UP, "the first worker to hang mid-job", doomed)
        held = mark.read_text()
        fired_before = _per_case(db_url, "escalated")
        assert sorted(fired_before) == (ids[:2] if hang_at == "3" else ids)
        if hang_at == "3":
            assert held == str(ids[2])

        rescuer = _start(env, "-m", "webapp.cli", "worker", "--log-level", "WARNING")
        _until(
            lambda: len(Worker.all(connection=connection)) == 2,
            START_UP,
            "the second worker to start",
            rescuer,
        )
        up = time.monotonic()
        (held_job,) = Queue(QUEUE, connection=connection).started_job_registry.get_job_ids()
        started_at, worker_name = connection.hmget(
            f"rq:job:{held_job}", "started_at", "worker_name"
        )
        started = utcparse(started_at.decode())
        heartbeat = heartbeat_key(worker_name.decode())
        # The hung job has run for longer than a heartbeat lasts, and the second worker's
        # scheduler has passed a few times meanwhile: the first worker still beats, so its job is
        # still its own and nothing was delivered twice.
        _until(
            lambda: (
                time.monotonic() - up > 1.0
                and (datetime.now(UTC) - started).total_seconds() > HEARTBEAT_TTL + 1.0
            ),
            START_UP,
            "the hung job to outlive a heartbeat",
            rescuer,
        )
        assert connection.pttl(heartbeat) > 0, "the hung worker does not beat"
        assert _per_case(db_url, "escalated") == fired_before
        assert connection.hget(f"rq:job:{held_job}", "status") == b"started"

        # The worst case, made sure of: the first worker's process (whose scheduler thread passes
        # four times a second) dies holding the scheduler's pass lock.
        connection.set(LOCK, "the dead process's token", px=int(LOCK_TTL * 1000), nx=True)
        os.killpg(doomed.pid, signal.SIGKILL)
        killed = time.monotonic()
        doomed.communicate()
        assert doomed.returncode == -signal.SIGKILL

        if hang_at == "3":
            _until(
                lambda: set(_per_case(db_url, "escalated")) == set(ids),
                RECOVERY,
                "the dead worker's cases to fire",
                rescuer,
            )
            print(f"fired {time.monotonic() - killed:.2f} s after the SIGKILL")
        _until(
            lambda: _no_backlog(db_url, redis_url),
            RECOVERY,
            "`gridloop timers status` to show no backlog",
            rescuer,
        )
        print(f"no backlog {time.monotonic() - killed:.2f} s after the SIGKILL")

        assert not connection.exists(heartbeat)
        assert not connection.exists(f"rq:job:{held_job}")  # dropped as abandoned
        escalated = _per_case(db_url, "escalated")
        assert set(escalated) == set(ids) and set(escalated.values()) == {1}, escalated
        assert set(_per_case(db_url, "supervised").values()) == {1}
        # accept, handling at the district, handling at the village (escalated): one open item.
        assert _items(db_url) == {case_id: (3, 1) for case_id in ids}
    finally:
        _stop(doomed)
        if rescuer is not None:
            if rescuer.poll() is None:
                rescuer.send_signal(signal.SIGTERM)  # a warm shutdown, as an operator stops it
            rescued = _finish(rescuer, timeout=60)
    code, _, err = rescued
    assert code == 0, err[-3000:]
