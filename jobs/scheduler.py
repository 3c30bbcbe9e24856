"""Due timers onto rq: the scheduler of `gridloop worker`, which reads the timer table and enqueues
jobs that each fire a batch of due cases.

The database is the truth; the queue only delivers. A timer row is consumed in its case's
transaction, under the case's version check (Runtime.fire_case_timers, the code the embedded ticker
runs too), so a delivery that comes twice, late, or after a worker died finds nothing due and does
nothing. The queue only has to deliver each due case at least once, and soon:

- The scheduler reads due timers from the `timer` table (its due_at index) in batches, oldest first,
  and enqueues jobs of up to `per_job` cases each (jobs.worker.fire_cases fires them one after
  another, each in its own transaction). One job per case made rq's own bookkeeping (about twenty
  Redis round trips a job) cost more than the firing itself.
- Each due case gets a lease in Redis: the key `gridloop:lease:{case_id}-{due_us}` (the case's
  earliest due instant in microseconds) names the job that carries it. While that job is queued or
  running, the case is not enqueued again.
- It passes every 0.25 s. Whatever a pass finds still due in the database is delivered again: a
  case whose job is gone from Redis (done, expired, Redis restarted empty) is enqueued anew, and so
  is one whose job was abandoned: left "started" by a worker that died before the case's commit (a
  case committed before the worker died is not due any more, so it is not sent again). A job a
  dying worker took off the queue but never started is put back. A failed job (one of its cases
  raised) is kept for FAILURE_TTL seconds: the back-off before its cases that are still due are
  tried again.

How a dead worker is noticed within seconds. Every worker process beats a heartbeat while it lives
(jobs.worker.Heartbeat): the key `gridloop:heartbeat:{worker name}`, set every HEARTBEAT_EVERY
seconds to expire after HEARTBEAT_TTL, first set before the worker takes its first job. rq writes
the name of the worker running a job into the job (`worker_name`), so at the start of each pass
the scheduler looks at the queue's started jobs (as many as there are busy workers) and takes a
job whose worker's key has lapsed as abandoned: it drops the job (its hash and its started-registry
entry, so `gridloop timers status` stops counting it) and delivers its cases again if they are
still due. A worker killed by SIGKILL is so noticed 2-3 s after its death (its last beat plus the
TTL), and its cases fire within a pass after that; the pass lock lasts no longer than a heartbeat
(renewed after each batch), so when the process that died ran a scheduler in mid-pass too, the
other schedulers are not held up longer. Redis expires the keys, so no clock of another machine is
compared. rq's own abandoned-job sweep (which this pass also runs) would be too late:
an rq SimpleWorker, which runs its job in its own process, sends no heartbeat during a job, so rq
calls the job abandoned only job_timeout + 60 s (two minutes) after it started, and then keeps it
as failed. As a backstop, a job started more than `redeliver_after` seconds ago is taken as lost
even if its worker still beats (hung in a call rq's job timeout cannot interrupt).

A wrong verdict costs a duplicate delivery, never a double firing: a worker that is alive but
stalled beyond the TTL (stopped, swapping) and resumes, or one still on older code that beats no
heartbeat (during an upgrade), races the new delivery for its cases, and the database lets one of
them consume each timer row; the other finds nothing due.

The job itself, the workers and their heartbeat are in jobs/worker.py. Without GRIDLOOP_REDIS_URL
nothing here runs: the ticker in `gridloop serve` fires timers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from engine.clock import Clock, iso
from engine.models import Timer

from .root import Root

log = logging.getLogger(__name__)

QUEUE = "gridloop-timers"
JOB_FUNC = "jobs.worker.fire_cases"  # what each job runs, by name: rq imports it in the worker
JOB_PREFIX = "fire-"  # every job id made here starts so; other jobs share the queue (jobs.audit)
PER_JOB = 50  # cases a job fires, one transaction each
JOB_TIMEOUT = 60  # seconds; a case's firing takes milliseconds
FAILURE_TTL = 60  # a failed job's id blocks a new delivery of its case this long
QUEUED_TTL = 3600  # a queued job never started within this is dropped, and delivered anew
LEASE_TTL = 2 * QUEUED_TTL  # a lease outlives its job: queued, then running, then failed
LEASE = "gridloop:lease:"
REDELIVER_AFTER = 60.0  # a job "started" longer than this is taken as lost, heartbeat or not
HEARTBEAT = "gridloop:heartbeat:"  # + a worker's name: present while the worker lives
HEARTBEAT_EVERY = 1.0  # seconds between a worker's beats
HEARTBEAT_TTL = 3.0  # seconds after its last beat that a worker is taken as dead
BATCH = 200  # timer rows read per query
MAX_PER_PASS = 2000  # cases looked at per pass: bounds a pass, and the queue, when far behind
LOCK = "gridloop:timer-scheduler"
# Seconds the pass lock lasts, renewed after each batch: a scheduler killed in mid-pass (it runs in
# the process of `gridloop worker`'s first worker) holds up the others no longer than a heartbeat.
LOCK_TTL = HEARTBEAT_TTL
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PENDING = frozenset({"queued", "deferred", "scheduled", "created", "ready_to_enqueue"})
_MOVE_BACK_LUA = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[1])
    return 1
end
return 0
"""


def _due_us(due_at: datetime) -> int:
    return (due_at - EPOCH) // timedelta(microseconds=1)


def lease_key(case_id: int, due_at: datetime) -> str:
    """The Redis key naming the job that carries a case's firing of its timers due at `due_at`."""
    return f"{LEASE}{case_id}-{_due_us(due_at)}"


def heartbeat_key(worker_name: str) -> str:
    """The Redis key a live worker keeps setting (jobs.worker.Heartbeat)."""
    return f"{HEARTBEAT}{worker_name}"


def job_id(case_id: int, due_at: datetime) -> str:
    """A job's id: that of its first case and instant (rq allows no colons in ids)."""
    return f"{JOB_PREFIX}{case_id}-{_due_us(due_at)}"


@dataclass
class PassReport:
    due: int = 0  # cases with a due timer looked at
    enqueued: int = 0  # cases delivered for the first time (or their job is gone)
    jobs: int = 0  # jobs made for the enqueued and redelivered cases
    pending: int = 0  # cases whose job is queued or running
    redelivered: int = 0  # cases whose job was taken as lost, delivered again
    requeued: int = 0  # jobs a dead worker took off the queue and never started, put back
    abandoned: int = 0  # started jobs whose worker stopped beating (it died), dropped
    backing_off: int = 0  # cases whose job failed a moment ago
    skipped: bool = False  # another scheduler held the pass lock

    def __str__(self) -> str:
        if self.skipped:
            return "another scheduler is running this pass"
        return (
            f"{self.due} due case(s): {self.enqueued} enqueued, {self.redelivered} redelivered "
            f"({self.jobs} job(s)), {self.requeued} job(s) requeued, {self.pending} pending, "
            f"{self.backing_off} backing off, {self.abandoned} abandoned job(s) dropped"
        )


@dataclass
class TimerScheduler:
    """Enqueues due cases from the timer table. Safe to run in several processes at once: a
    Redis lock lets one pass run at a time, and unique job ids stop doubles if the lock expires."""

    connection: object  # redis.Redis
    sessions: Callable[[], Session]
    clock: Clock
    queue_name: str = QUEUE
    batch: int = BATCH
    per_job: int = PER_JOB
    max_per_pass: int = MAX_PER_PASS
    redeliver_after: float = REDELIVER_AFTER
    _queue: object = field(default=None, init=False, repr=False)
    _stranded: set[str] = field(default_factory=set, init=False, repr=False)

    @classmethod
    def of(cls, root: Root, **options) -> TimerScheduler:
        """The scheduler on a root's Redis, database and clock."""
        return cls(root.redis, root.sessions, root.clock, **options)

    @property
    def queue(self):
        if self._queue is None:
            from rq import Queue

            self._queue = Queue(self.queue_name, connection=self.connection)
        return self._queue

    def run_once(self, as_of: datetime | None = None) -> PassReport:
        """One pass. With `as_of`, cases due at that instant are enqueued to fire as of it
        (catch-up, tests); without, cases due now, to fire at the worker's clock."""
        lock = self.connection.lock(LOCK, timeout=LOCK_TTL, blocking=False)
        if not lock.acquire(blocking=False):
            return PassReport(skipped=True)
        try:
            return self._pass(as_of, lock)
        finally:
            try:
                lock.release()
            except Exception:  # noqa: BLE001 - expired under a very slow pass: nothing to free
                log.warning("the scheduler lock expired during a pass")

    def run(self, stop: threading.Event, interval: float = 0.25) -> None:
        """Pass after pass until `stop` is set; a failing pass (database or Redis away) is logged
        and the next one tries again."""
        while not stop.is_set():
            try:
                report = self.run_once()
                if report.enqueued or report.redelivered or report.requeued or report.abandoned:
                    log.info("timer scheduler: %s", report)
            except Exception:  # noqa: BLE001 - keep scheduling: the next pass retries
                log.exception("timer scheduler pass failed")
            stop.wait(interval)

    def _pass(self, as_of: datetime | None, lock) -> PassReport:
        from redis.exceptions import LockError
        from rq.registry import StartedJobRegistry

        # rq's own sweep of abandoned jobs, two minutes late for a SimpleWorker's (see above): it
        # is for the queue's other jobs; the timer jobs' own, by heartbeat, follows.
        StartedJobRegistry(queue=self.queue).cleanup()
        now = as_of or self.clock.now()
        fire_as_of = iso(as_of) if as_of is not None else None
        abandoned = self._drop_abandoned()
        report = PassReport(requeued=self._requeue_stranded(), abandoned=len(abandoned))
        for cases in self._due_batches(now):
            report.due += len(cases)
            self._deliver(cases, fire_as_of, report, abandoned)
            try:
                lock.reacquire()  # the pass goes on: another LOCK_TTL
            except LockError:  # it ran out: a second scheduler may pass meanwhile, harmlessly
                log.warning("the scheduler lock expired during a pass")
        return report

    def _drop_abandoned(self) -> set[str]:
        """Drop the started timer jobs whose worker is dead (its heartbeat key lapsed) or that
        started more than `redeliver_after` seconds ago; return their ids. Their cases that are
        still due are delivered again by this pass (`_deliver`); those the dead worker committed
        are not due, so dropping the job is all that is left to do. Two round trips for the jobs
        and their workers; the started jobs are at most one per worker. Other jobs on the queue
        (an audit verification runs for hours) are not the scheduler's: rq's sweep sees to them."""
        from rq.job import Job

        registry = self.queue.started_job_registry
        entries = self.connection.zrange(registry.key, 0, -1)  # "{job id}:{execution id}"
        jids = {entry.decode().partition(":")[0] for entry in entries}
        jids = sorted(jid for jid in jids if jid.startswith(JOB_PREFIX))
        if not jids:
            return set()
        pipe = self.connection.pipeline(transaction=False)
        for jid in jids:
            pipe.hmget(Job.key_for(jid), "status", "started_at", "worker_name")
        started = {
            jid: (started_at, worker.decode() if worker else None)
            for jid, (status, started_at, worker) in zip(jids, pipe.execute(), strict=True)
            if status == b"started"
        }
        workers = sorted({worker for _, worker in started.values() if worker})
        pipe = self.connection.pipeline(transaction=False)
        for worker in workers:
            pipe.exists(heartbeat_key(worker))
        alive = {worker for worker, beats in zip(workers, pipe.execute(), strict=True) if beats}
        wall = datetime.now(UTC)
        dropped = set()
        for jid, (started_at, worker) in started.items():
            if worker in alive and not self._lost(started_at, wall):
                continue
            self._forget(jid)
            dropped.add(jid)
            if worker in alive:
                log.warning("job %s ran longer than %s s; taken as lost", jid, self.redeliver_after)
            else:
                log.warning("job %s was abandoned: its worker %s stopped beating", jid, worker)
        return dropped

    def _requeue_stranded(self) -> int:
        """rq moves a job it dequeues to an "intermediate" list until the worker marks it started.
        A worker killed in between leaves it there, still "queued", where no worker looks again
        (rq's own sweep fails it after minutes). Seen there on two passes in a row, it goes back on
        the queue; the job ids are few (one per busy worker) and the check costs one round trip."""
        key = self.queue.intermediate_queue_key
        ids = [i.decode() for i in self.connection.lrange(key, 0, -1)]
        if not ids:
            self._stranded = set()
            return 0
        from rq.job import Job

        pipe = self.connection.pipeline(transaction=False)
        for jid in ids:
            pipe.hget(Job.key_for(jid), "status")
        stranded = {
            jid for jid, status in zip(ids, pipe.execute(), strict=True) if status == b"queued"
        }
        move_back = self.connection.register_script(_MOVE_BACK_LUA)
        moved = 0
        for jid in sorted(stranded & self._stranded):
            moved += int(move_back(keys=[key, self.queue.key], args=[jid]))
            log.warning("job %s was taken off the queue by a worker that died; requeued", jid)
        self._stranded = stranded - self._stranded
        return moved

    def _due_batches(self, now: datetime) -> Iterable[list[tuple[int, datetime]]]:
        """(case id, earliest due instant) of cases with a timer due at `now`, oldest first, a
        batch of timer rows at a time (keyset over the due_at index), at most max_per_pass cases.

        A plain read, with no FOR UPDATE SKIP LOCKED, on PostgreSQL too (the embedded ticker's
        path claims its batches that way): here the Redis lease is the claim. A claim has to last
        from this read until a worker commits the case, across processes and for seconds or (in
        a backlog) minutes; a row lock lasts only as long as this transaction, which ends right
        after the read so that none is held while Redis is asked. Locked for that instant, the
        rows would gain nothing: the only rows SKIP LOCKED would skip are those a worker is
        consuming at that moment, whose leases already name a pending job. And it would cost:
        PostgreSQL writes a row lock into each row (up to max_per_pass rows, four times a second),
        and a worker's transaction deleting a locked row waits for the read to end. Timer rows
        are consumed under the case's version check whoever else reads them, so a plain read
        never makes a timer fire twice."""
        seen: set[int] = set()
        last: tuple[datetime, int] | None = None
        session = self.sessions()
        try:
            while len(seen) < self.max_per_pass:
                query = select(Timer.id, Timer.case_id, Timer.due_at).where(Timer.due_at <= now)
                if last is not None:
                    query = query.where(
                        or_(
                            Timer.due_at > last[0],
                            and_(Timer.due_at == last[0], Timer.id > last[1]),
                        )
                    )
                rows = session.execute(
                    query.order_by(Timer.due_at, Timer.id).limit(self.batch)
                ).all()
                session.rollback()  # no read transaction held while Redis is asked
                cases = []
                for row in rows:
                    if row.case_id not in seen and len(seen) < self.max_per_pass:
                        seen.add(row.case_id)
                        cases.append((row.case_id, row.due_at))
                if cases:
                    yield cases
                if len(rows) < self.batch:
                    break
                last = (rows[-1].due_at, rows[-1].id)
        finally:
            session.close()

    def _deliver(
        self,
        cases: list[tuple[int, datetime]],
        fire_as_of: str | None,
        report: PassReport,
        abandoned: set[str],
    ) -> None:
        """Read each case's lease and the state of the job it names (two round trips), then
        enqueue the cases that need a delivery, `per_job` to a job: those with no job, and those
        whose job was `abandoned` (dropped by this pass) or ended without firing them."""
        from rq.job import Job

        leases = self.connection.mget([lease_key(*case) for case in cases])
        jids = sorted({lease.decode() for lease in leases if lease})
        pipe = self.connection.pipeline(transaction=False)
        for jid in jids:
            pipe.hmget(Job.key_for(jid), "status", "started_at")
        states = dict(zip(jids, pipe.execute(), strict=True))
        wall = datetime.now(UTC)
        fresh: list[tuple[int, datetime]] = []
        again: list[tuple[int, datetime]] = []
        forgotten: set[str] = set()
        for case, lease in zip(cases, leases, strict=True):
            if not lease:
                fresh.append(case)
                continue
            jid = lease.decode()
            status, started_at = states[jid]
            status = status.decode() if status else None
            if jid in abandoned:
                again.append(case)
            elif status is None:
                fresh.append(case)
            elif status in PENDING:
                report.pending += 1
            elif status == "failed":
                report.backing_off += 1
            elif status == "started" and not self._lost(started_at, wall):
                report.pending += 1
            else:  # started long ago (lost), stopped, canceled, or kept after finishing
                if jid not in forgotten:
                    self._forget(jid)
                    forgotten.add(jid)
                    log.warning("job %s (%s) left its cases due; delivered again", jid, status)
                again.append(case)
        report.enqueued += self._enqueue(fresh, fire_as_of, report)
        report.redelivered += self._enqueue(again, fire_as_of, report)

    def _lost(self, started_at: bytes | None, wall: datetime) -> bool:
        """The backstop: a job started more than `redeliver_after` seconds ago (by this machine's
        wall clock) is lost whatever its worker's heartbeat says."""
        if not started_at:
            return True
        from rq.utils import utcparse

        started = utcparse(started_at.decode())
        return (wall - started).total_seconds() >= self.redeliver_after

    def _enqueue(
        self, cases: list[tuple[int, datetime]], fire_as_of: str | None, report: PassReport
    ) -> int:
        """Jobs of up to `per_job` cases; each case's lease then names its job. A scheduler that
        dies between the two leaves a job without leases: its cases may be delivered twice, which
        does no harm. Returns how many cases went out."""
        from rq.exceptions import DuplicateJobError

        sent = 0
        for start in range(0, len(cases), self.per_job):
            chunk = cases[start : start + self.per_job]
            jid = job_id(*chunk[0])
            try:
                self.queue.enqueue_call(
                    JOB_FUNC,
                    args=([case_id for case_id, _ in chunk], fire_as_of),
                    job_id=jid,
                    unique=True,
                    timeout=JOB_TIMEOUT,
                    result_ttl=0,  # done is done: the id is free again at once
                    failure_ttl=FAILURE_TTL,
                    ttl=QUEUED_TTL,
                    description=f"fire the due timers of {len(chunk)} case(s)",
                )
            except DuplicateJobError:
                continue  # another scheduler got there first; the next pass looks again
            pipe = self.connection.pipeline(transaction=False)
            for case in chunk:
                pipe.set(lease_key(*case), jid, ex=LEASE_TTL)
            pipe.execute()
            report.jobs += 1
            sent += len(chunk)
        return sent

    def _forget(self, jid: str) -> None:
        """Drop a lost job: its hash, and its stale entries in the started registry (so rq's
        sweep later cannot mistake the new delivery, under the same id, for the dead one, and the
        queue's "started" count is right at once)."""
        from rq.exceptions import NoSuchJobError
        from rq.job import Job
        from rq.registry import StartedJobRegistry

        try:
            Job.fetch(jid, connection=self.connection).delete()
        except NoSuchJobError:
            pass
        registry = StartedJobRegistry(queue=self.queue)
        stale = [
            key
            for key in self.connection.zrange(registry.key, 0, -1)
            if key.decode().split(":", 1)[0] == jid
        ]
        if stale:
            self.connection.zrem(registry.key, *stale)
