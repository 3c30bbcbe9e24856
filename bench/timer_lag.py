"""How late timers fire on rq and Redis: `gridloop worker` on SQLite, with the real clock.

Run on demand (not a test; about 5 minutes):
    .venv/bin/python bench/timer_lag.py [--spread 500] [--window 20] [--burst 10000]

It starts its own redis-server on a free loopback port (Debian's; `make packages` installs it) and
works on fresh SQLite files in a temp dir (WAL, synchronous=NORMAL, as engine.storage sets them).

  lag    `gridloop worker --workers 1` (the scheduler thread and one rq worker in one process) is
         started and left idle; then --spread urgent cases are opened whose first timer (the 80%
         supervision notice) comes due at evenly spaced real instants over --window seconds. Lag
         is the supervised event's `at` (the worker's clock when its firing step began) minus the
         timer's due instant, per timer; the step's own few milliseconds to commit come on top.
  burst  --burst cases whose supervision timer is already due are written (one case built through
         the engine, then copied row by row with fresh numbers and event chains). N worker
         processes (`gridloop worker --no-scheduler --workers N`) are started and registered; then
         the scheduler (TimerScheduler.run, the loop `gridloop worker` runs in a thread) starts in
         this process. Drain time is from that start to the last firing, for N = 1 and N = 2.
         First, for comparison, the same burst fired in this process with no queue at all
         (Runtime.fire_due_timers): the difference is what rq and Redis cost per case.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis import Redis  # noqa: E402
from rq import Worker  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from engine.access import viewer_of  # noqa: E402
from engine.clock import FixedClock, SystemClock, iso, parse_iso  # noqa: E402
from engine.events import GENESIS, as_dict, chain_hash  # noqa: E402
from engine.models import Case, CaseEvent, Person, Timer, WorkItem  # noqa: E402
from engine.org import import_org  # noqa: E402
from engine.passwords import Passwords  # noqa: E402
from engine.runtime import Runtime  # noqa: E402
from engine.specs import SpecRegistry, deploy, load_bundle  # noqa: E402
from engine.storage import create_schema, make_engine, make_sessionmaker  # noqa: E402
from jobs.scheduler import TimerScheduler  # noqa: E402

GRID = "V01-D1-G01"
ACCEPT_URGENT = {"valid": True, "category": "resident_request", "severity": "urgent"}
ORG = """\
town: {code: XDK, name: 小渡口镇}
leaders: [{username: tl1, name: 张伟, password: pw, liaises: [V01]}]
villages:
  - code: V01
    name: 一村
    secretary: {username: vs1, name: 赵书记, password: pw}
    districts:
      - code: V01-D1
        name: 一片
        leader: {username: dl1, name: 钱片长, password: pw}
        grids:
          - code: V01-D1-G01
            name: 一组
            households: 4
            leader: {username: gl1, name: 孙组长, password: pw}
            officers: [{username: off1, name: 周信息员, password: pw}]
"""


# --------------------------------------------------------------------------- set-up


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: `make packages` installs it")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            return process, url
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.05)
    sys.exit("redis-server did not start")


def base_db(folder: Path) -> Path:
    """Schema, the repository's diagrams and a one-grid organisation."""
    path = folder / "base.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    create_schema(engine)
    session = make_sessionmaker(engine)()
    deploy(session, SpecRegistry(), load_bundle(ROOT), "system", datetime.now(UTC))
    import_org(session, ORG, Passwords(cheap=True))
    session.commit()
    session.close()
    checkpoint(engine)
    engine.dispose()
    return path


def checkpoint(engine) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def copy_db(source: Path, name: str) -> str:
    target = source.with_name(name)
    shutil.copyfile(source, target)
    return f"sqlite:///{target}"


class Opener:
    """Opens and accepts urgent cases at chosen instants, through the engine."""

    def __init__(self, url: str):
        self.engine = make_engine(url)
        self.session = make_sessionmaker(self.engine)()
        self.clock = FixedClock(datetime.now(UTC))
        self.runtime = Runtime(self.clock, SpecRegistry())
        off1 = self.session.scalars(select(Person).where(Person.username == "off1")).one()
        self.officer = viewer_of(self.session, off1)
        self.session.commit()

    def open(self, at: datetime) -> Case:
        self.clock.set(at)
        s = self.session
        case = self.runtime.open_case(s, self.officer, title="路灯", grid=GRID)
        item = s.scalars(select(WorkItem).where(WorkItem.case_id == case.id)).one()
        return self.runtime.complete(s, self.officer, item.id, ACCEPT_URGENT)

    def first_due(self, case: Case) -> datetime:
        return self.session.scalar(
            select(Timer.due_at).where(Timer.case_id == case.id).order_by(Timer.due_at).limit(1)
        )

    def close(self) -> None:
        self.session.close()
        self.engine.dispose()


def warn_offset(base: Path) -> timedelta:
    """From accepting an urgent case to its first (80%) timer: clock hours, so a constant.
    Measured on a throwaway copy of the database."""
    opener = Opener(copy_db(base, "probe.sqlite"))
    at = datetime(2026, 1, 5, 2, tzinfo=UTC)
    case = opener.open(at)
    offset = opener.first_due(case) - at
    opener.close()
    return offset


def clone(url: str, template_id: int, count: int) -> None:
    """`count` copies of a case, in one transaction: case row, work items, timers and events,
    each copy with its own number and a recomputed event chain."""
    engine = make_engine(url)
    cases, items, timers, events = (m.__table__ for m in (Case, WorkItem, Timer, CaseEvent))

    def rows(table, order=None):
        query = select(table).where(table.c.case_id == template_id)
        found = conn.execute(query.order_by(order) if order is not None else query).mappings()
        return [{k: v for k, v in r.items() if k != "id"} for r in found]

    with engine.begin() as conn:
        case = dict(conn.execute(select(cases).where(cases.c.id == template_id)).mappings().one())
        its, tms, evs = rows(items), rows(timers), rows(events, events.c.seq)
        first = conn.execute(select(cases.c.id).order_by(cases.c.id.desc())).first()[0] + 1
        new_cases, new_items, new_timers, new_events = [], [], [], []
        for n in range(count):
            case_id, number, head = first + n, f"XDK-BENCH-{n:06d}", GENESIS
            for ev in evs:
                head = chain_hash(head, as_dict(number, CaseEvent(**ev)))
                new_events.append({**ev, "case_id": case_id, "hash": head})
            new_cases.append({**case, "id": case_id, "number": number, "event_head": head})
            new_items += [{**r, "case_id": case_id} for r in its]
            new_timers += [{**t, "case_id": case_id} for t in tms]
        for table, values in (
            (cases, new_cases),
            (items, new_items),
            (timers, new_timers),
            (events, new_events),
        ):
            conn.execute(insert(table), values)
    checkpoint(engine)
    engine.dispose()


# --------------------------------------------------------------------------- runs


def env_for(url: str, redis_url: str) -> dict[str, str]:
    return dict(
        os.environ,
        GRIDLOOP_DATABASE_URL=url,
        GRIDLOOP_REDIS_URL=redis_url,
        GRIDLOOP_SECRET_KEY="bench",
        PYTHONPATH=str(ROOT),
    )


def start_workers(url: str, redis_url: str, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "webapp.cli", "worker", "--log-level", "WARNING", *args]
    return subprocess.Popen(cmd, env=env_for(url, redis_url), cwd=ROOT, start_new_session=True)


def wait_registered(redis_url: str, count: int, timeout: float = 60) -> None:
    connection = Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while Worker.count(connection=connection) < count:
        if time.monotonic() > deadline:
            sys.exit("the rq workers did not register")
        time.sleep(0.1)


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def fired_at(url: str) -> dict[int, datetime]:
    """Case id -> the `at` of its supervised event."""
    with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30) as conn:
        rows = conn.execute("select case_id, at from case_event where type = 'supervised'")
        return {case_id: parse_iso(at) for case_id, at in rows}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run_lag(base: Path, redis_url: str, spread: int, window: float) -> dict:
    url = copy_db(base, "lag.sqlite")
    offset = warn_offset(base)
    Redis.from_url(redis_url).flushall()
    worker = start_workers(url, redis_url, "--workers", "1")
    try:
        wait_registered(redis_url, 1)
        opener = Opener(url)
        margin = 5.0 + spread * 0.03  # opening a case takes ~20 ms; all open before the first due
        t0 = datetime.now(UTC) + timedelta(seconds=margin)
        due: dict[int, datetime] = {}
        late_opened = 0
        for i in range(spread):
            target = t0 + timedelta(seconds=window * i / spread)
            case = opener.open(target - offset)
            due[case.id] = opener.first_due(case)
            opener.session.rollback()
            if datetime.now(UTC) >= target:
                late_opened += 1
        opener.close()
        deadline = time.monotonic() + margin + window + 120
        while len(fired := fired_at(url)) < spread:
            if time.monotonic() > deadline:
                sys.exit(f"only {len(fired)} of {spread} timers fired")
            time.sleep(0.2)
    finally:
        stop(worker)
    lags = [(fired[c] - d).total_seconds() for c, d in due.items()]
    return {
        "timers": spread,
        "window": window,
        "late_opened": late_opened,
        "p50": pct(lags, 50),
        "p99": pct(lags, 99),
        "max": max(lags),
        "mean": statistics.fmean(lags),
    }


def burst_db(base: Path, size: int) -> Path:
    url = copy_db(base, "burst-template.sqlite")
    offset = warn_offset(base)
    opener = Opener(url)
    # Accepted long enough ago that the supervision timer is due, the escalation not yet.
    template = opener.open(datetime.now(UTC) - offset - timedelta(minutes=5))
    template_id = template.id
    opener.close()
    started = time.perf_counter()
    clone(url, template_id, size - 1)
    print(f"  copied {size - 1} cases in {time.perf_counter() - started:.1f} s", flush=True)
    return Path(url.removeprefix("sqlite:///"))


def run_in_process(template: Path, size: int) -> dict:
    """The same burst with no queue: one process fires every due case in turn
    (Runtime.fire_due_timers, as `gridloop timers fire-due` does). The difference to one rq worker
    is what the queue costs per case."""
    url = copy_db(template, "burst-in-process.sqlite")
    engine = make_engine(url)
    session = make_sessionmaker(engine)()
    runtime = Runtime(SystemClock())
    started = time.perf_counter()
    fired = runtime.fire_due_timers(session, limit=size)
    drain = time.perf_counter() - started
    session.close()
    engine.dispose()
    if fired != size:
        sys.exit(f"in process: only {fired} of {size} fired")
    return {"drain": drain, "rate": size / drain}


def run_burst(template: Path, redis_url: str, size: int, workers: int) -> dict:
    url = copy_db(template, f"burst-{workers}.sqlite")
    connection = Redis.from_url(redis_url)
    connection.flushall()
    process = start_workers(url, redis_url, "--no-scheduler", "--workers", str(workers))
    try:
        wait_registered(redis_url, workers)
        engine = make_engine(url)
        scheduler = TimerScheduler(connection, make_sessionmaker(engine), SystemClock())
        halt = threading.Event()
        t0 = datetime.now(UTC)
        thread = threading.Thread(target=scheduler.run, args=(halt,), daemon=True)
        thread.start()
        deadline = time.monotonic() + 900
        path = url.removeprefix("sqlite:///")
        while True:
            with sqlite3.connect(path, timeout=30) as conn:
                done = conn.execute(
                    "select count(*) from case_event where type = 'supervised'"
                ).fetchone()[0]
            if done >= size:
                break
            if time.monotonic() > deadline:
                sys.exit(f"only {done} of {size} fired")
            time.sleep(0.25)
        halt.set()
        thread.join()
        engine.dispose()
    finally:
        stop(process)
    fired = fired_at(url)
    counts = list(fired.values())
    last = max(counts)
    drain = (last - t0).total_seconds()
    first = (min(counts) - t0).total_seconds()
    return {"workers": workers, "drain": drain, "first": first, "rate": size / drain}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spread", type=int, default=500, help="timers due over the window")
    parser.add_argument("--window", type=float, default=20.0, help="seconds they come due over")
    parser.add_argument("--burst", type=int, default=10_000, help="timers due at once")
    args = parser.parse_args(argv)

    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )
    with tempfile.TemporaryDirectory(prefix="gridloop-lag-") as tmp:
        folder = Path(tmp)
        redis_process, redis_url = start_redis(folder)
        try:
            base = base_db(folder)
            print(f"lag: {args.spread} timers due over {args.window:.0f} s, scheduler + 1 worker")
            lag = run_lag(base, redis_url, args.spread, args.window)
            print(
                f"  lag p50 {lag['p50']:.3f} s, p99 {lag['p99']:.3f} s, max {lag['max']:.3f} s, "
                f"mean {lag['mean']:.3f} s ({lag['late_opened']} case(s) opened after their due)"
            )
            print(f"burst: {args.burst} timers due at once")
            template = burst_db(base, args.burst)
            alone = run_in_process(template, args.burst)
            print(
                f"  in process, no queue: drained in {alone['drain']:.1f} s "
                f"({alone['rate']:.0f} timers/s, {1000 / alone['rate']:.1f} ms per case)",
                flush=True,
            )
            for workers in (1, 2):
                result = run_burst(template, redis_url, args.burst, workers)
                print(
                    f"  {workers} worker(s): drained in {result['drain']:.1f} s "
                    f"({result['rate']:.0f} timers/s; first fired after {result['first']:.2f} s)",
                    flush=True,
                )
        finally:
            redis_process.terminate()
            redis_process.wait()
    print(f"as of {iso(datetime.now(UTC))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
