"""rq workers that fire timers (`gridloop worker`, with GRIDLOOP_REDIS_URL set): the job, the
worker processes and their supervisor.

The job, `fire_cases`, fires a batch of cases' due timers, each case in its own transaction
(`fire_case`); the scheduler (jobs/scheduler.py) enqueues it, and explains why a job that comes
twice, late or after a dead worker does no harm. Workers are rq SimpleWorkers: the job runs in the worker process itself, which
keeps one Root (and its Runtime: parsed specs, recently used workflows) for all of its jobs. rq's
forking Worker would make a process per job and throw those away each time. A worker process
builds its root from the environment, with no web app: it needs none.

Each worker beats a heartbeat in Redis while it lives (`Heartbeat`), from a thread of its own, so
it beats in the middle of a job too: when it stops, the scheduler knows within seconds that the
worker died, and delivers again what it held (jobs/scheduler.py).

`gridloop worker` runs the scheduler in a thread beside one worker, or supervises N worker
processes (`--workers N`), each `python -m jobs`, restarting one that dies.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable

from engine.clock import parse_iso
from engine.errors import Conflict

from .root import Root, build_root
from .scheduler import (
    HEARTBEAT_EVERY,
    HEARTBEAT_TTL,
    JOB_TIMEOUT,
    QUEUE,
    TimerScheduler,
    heartbeat_key,
)

log = logging.getLogger(__name__)

PARENT_ENV = "GRIDLOOP_WORKER_PARENT"


def worker_root() -> Root:
    """The root of a worker process, from the environment. No limit on how long a Redis command
    may take: an rq worker waits on Redis for its next job for minutes, and sets its own timeout."""
    return build_root(redis_timeout=None)


# ------------------------------------------------------------------ the job


_ROOT: Root | None = None


def process_root() -> Root:
    """The worker process's one root, made at its first job (or handed in by `use_root`)."""
    global _ROOT
    if _ROOT is None:
        _ROOT = worker_root()
    return _ROOT


def use_root(root: Root) -> None:
    global _ROOT
    _ROOT = root


def fire_case(case_id: int, as_of: str | None = None) -> bool:
    """The rq job: fire case `case_id`'s timers due at `as_of` (ISO; default the worker's clock),
    in the case's transaction. True if the case moved; False if nothing was due any more."""
    root = process_root()
    moment = parse_iso(as_of) if as_of else root.clock.now()
    with root.session() as session:
        try:
            return root.runtime.fire_case_timers(session, case_id, moment)
        except Conflict:
            # The case kept changing under us; it is still due, so the next pass delivers it again.
            log.info("case %s changed while its timers fired; delivered again later", case_id)
            return False


class CasesFailed(RuntimeError):
    """Some cases of a job raised: the job ends failed, so its cases back off before their next
    delivery (the others in it committed and are not due any more)."""


def fire_cases(case_ids: list[int], as_of: str | None = None) -> int:
    """The rq job: fire each case's due timers in turn, each in its own transaction (`fire_case`).
    One case that raises does not stop the others; the job then fails naming it. Returns how many
    cases moved."""
    moved = 0
    failed = []
    for case_id in case_ids:
        try:
            moved += fire_case(case_id, as_of)
        except Exception:  # noqa: BLE001 - one broken case must not hold up the rest
            log.exception("firing the timers of case %s failed", case_id)
            failed.append(case_id)
    if failed:
        raise CasesFailed(f"firing the timers of case(s) {failed} failed; see the log above")
    return moved


# ------------------------------------------------------------------ workers


def make_worker(connection, queues: Iterable[str] = (QUEUE,), name: str | None = None):
    from rq import Queue, SimpleWorker

    return SimpleWorker(
        [Queue(q, connection=connection) for q in queues],
        connection=connection,
        name=name,
        log_job_description=False,
    )


class Heartbeat:
    """A worker's sign of life: the key `gridloop:heartbeat:{worker name}`, set at once and then
    every `every` seconds by a daemon thread, each time to expire `ttl` seconds later, and deleted
    when the worker stops. rq's SimpleWorker runs a job in the worker's own thread and beats
    nothing until the job ends; this thread goes on beating while the job runs, and stops only
    with the process (or a stall of it longer than `ttl`). The scheduler reads the key of the worker rq names in a started
    job: a lapsed key means the job was abandoned."""

    def __init__(
        self,
        connection,
        worker_name: str,
        every: float = HEARTBEAT_EVERY,
        ttl: float = HEARTBEAT_TTL,
    ):
        self.connection = connection
        self.key = heartbeat_key(worker_name)
        self.every = every
        self.ttl_ms = int(ttl * 1000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gridloop-heartbeat", daemon=True)

    def beat(self) -> None:
        self.connection.set(self.key, os.getpid(), px=self.ttl_ms)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - Redis away: the next beat tries again
                log.warning("worker heartbeat failed", exc_info=True)

    def __enter__(self) -> Heartbeat:
        self.beat()  # before the worker takes a job: a started job's worker always has a key
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 5)
        try:
            self.connection.delete(self.key)
        except Exception:  # noqa: BLE001 - it expires by itself
            log.warning("could not delete the worker heartbeat %s", self.key, exc_info=True)


def run_worker(
    root: Root | None = None,
    queues: Iterable[str] = (QUEUE,),
    burst: bool = False,
    log_level: str = "INFO",
) -> bool:
    """Run one rq worker in this process until it is stopped (SIGINT/SIGTERM: it finishes the job
    in hand first) or, with `burst`, until its queues are empty; it beats its heartbeat all the
    while. Its jobs run on `root` (default: the process's root, from the environment)."""
    if root is not None:
        use_root(root)
    worker = make_worker(process_root().redis, queues)
    with Heartbeat(worker.connection, worker.name):
        return worker.work(burst=burst, logging_level=log_level)


def _die_with_parent() -> None:
    """In a child worker process (Linux): SIGTERM, so a warm shutdown, when the supervisor that
    started it dies, even by SIGKILL. Set here after exec rather than in a preexec_fn, which is
    unsafe beside the scheduler thread."""
    parent = os.environ.pop(PARENT_ENV, None)
    if not parent:
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the supervisor died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


def serve(
    root: Root,
    workers: int = 1,
    scheduler: bool = True,
    burst: bool = False,
    log_level: str = "INFO",
    echo: Callable[[str], None] = print,
) -> int:
    """`gridloop worker`: the scheduler in a thread of this process, and `workers` rq workers:
    one runs in this process itself, more run as child processes (`python -m jobs`) that this one
    restarts if they die. With `burst`: one scheduler pass, then the workers drain the queue and
    exit. Returns the exit status. The root must have a Redis URL (`worker_root`)."""
    from .ticker import Ticker

    _die_with_parent()
    _log_to_stderr(log_level)
    root.redis.ping()  # a wrong URL fails here, with a clear message, not in a thread
    use_root(root)
    timer_scheduler = TimerScheduler.of(root)
    stop = threading.Event()
    thread = None
    delivery = None
    if scheduler:
        if burst:
            echo(f"timer scheduler: {timer_scheduler.run_once()}")
        else:
            thread = threading.Thread(
                target=timer_scheduler.run, args=(stop,), name="gridloop-scheduler", daemon=True
            )
            thread.start()
            # The scheduler's process also posts the outbox, so that workers without a web
            # server still notify people (several deliverers are safe: each row is leased).
            delivery = Ticker(root, fire_timers=False)
            delivery.start()
    try:
        if workers <= 0:
            if thread is None:
                return 0
            return _wait_for_signal(stop)
        if workers == 1:
            run_worker(root, burst=burst, log_level=log_level)
            return 0
        return _supervise(workers, burst, log_level, stop, echo)
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=10)
        if delivery is not None:
            delivery.stop()


def _log_to_stderr(level: str) -> None:
    """The scheduler's and the engine's messages beside rq's own (rq sets up its logger itself)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    for name in ("jobs", "engine"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(level.upper())


def _wait_for_signal(stop: threading.Event) -> int:
    """Scheduler only: run until SIGINT or SIGTERM."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    return 0


def child_command(burst: bool, log_level: str) -> list[str]:
    """One worker process, no scheduler: jobs/__main__.py."""
    command = [sys.executable, "-m", "jobs", "--log-level", log_level]
    return command + (["--burst"] if burst else [])


def _supervise(
    workers: int, burst: bool, log_level: str, stop: threading.Event, echo: Callable[[str], None]
) -> int:
    """Start `workers` child worker processes; restart one that dies (unless in burst mode);
    on SIGINT/SIGTERM, pass SIGTERM on and wait for each to finish its job in hand."""

    def on_signal(*_):
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)

    def start() -> subprocess.Popen:
        # A process group of its own: Ctrl-C reaches this supervisor only, which passes one
        # SIGTERM on (a second signal would make rq drop the job in hand).
        env = dict(os.environ, **{PARENT_ENV: str(os.getpid())})
        return subprocess.Popen(child_command(burst, log_level), process_group=0, env=env)

    children = [start() for _ in range(workers)]
    echo(f"{workers} rq worker processes: " + ", ".join(str(c.pid) for c in children))
    status = 0
    try:
        while not stop.is_set():
            for i, child in enumerate(children):
                code = child.poll()
                if code is None or burst:
                    continue
                log.warning("worker process %s exited with %s; starting another", child.pid, code)
                time.sleep(1.0)  # no tight restart loop if something is badly wrong
                children[i] = start()
            if burst and all(c.poll() is not None for c in children):
                break
            stop.wait(0.5)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                code = child.wait(timeout=JOB_TIMEOUT + 30)
            except subprocess.TimeoutExpired:
                child.kill()
                code = child.wait()
            if code and not status:  # killed by a signal: code < 0
                status = code if code > 0 else 1
    return status
