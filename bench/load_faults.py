"""Load with faults (issue 12): many API clients for a while, on PostgreSQL and Redis, while a web
process and an rq worker are each SIGKILLed twice; then no step may be lost or doubled, and every
chain must verify. Also the peak memory (VmHWM) of the web and worker processes at the end.

Run on demand (not a test):
    .venv/bin/python bench/load_faults.py [--seconds 60] [--clients 50] [--replay 30]

The script starts a throwaway PostgreSQL cluster (as tests/postgres_fixture.py does) and a
redis-server, builds a database with the test organisation (tests/conftest.py ORG_YAML, four
grids), and starts `gridloop serve --workers 2` (gunicorn, gthread) and `gridloop worker --workers
2` (rq) against them. Then `--clients` threads, each with a keep-alive connection and the tokens
of one grid's officer, grid leader and district leader, loop until the time is up: open a case
(POST /cases), then complete its five items in turn (accept, handle, feedback, report, review) with
POST /work-items/{id}/complete. Finding the open item of a case is the harness's job and is a
SELECT on the database (not timed). A request that fails (connection reset by a killed web
process) is retried after looking again at what is open: the step may have been committed.

Faults: at 20 % and 55 % of the run one gunicorn worker (a child of the `serve` master, found
through /proc) is SIGKILLed, at 35 % and 70 % one rq worker (a child of `gridloop worker`); the
master and the supervisor start replacements.

Counted afterwards, from the database:
  lost     a 200 answer to a completion whose (case, task) has no task_completed event.
  doubled  a (case, task) with more than one task_completed event (each task runs once a case
           in this loop).
  chains   engine.digests.verify_all over every case, and engine.replay on a sample of cases.
Baseline in the same run: the first --baseline-seconds (default 10) run the same load with no
fault, so the faulted run's steps/s and p95 can be compared with it.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_step import (  # noqa: E402
    ACCEPT_NORMAL,
    GRIDS,
    Client,
    build_database,
    free_port,
    gridloop,
    machine,
    p95,
    postgres,
    redis_server,
    server_env,
    stop,
    tokens,
    wait_up,
)

TASKS = [  # task, role index in GRIDS' trios, form
    ("accept", 0, ACCEPT_NORMAL),
    ("handle", 1, {"outcome": "resolved", "note": "已处理"}),
    ("feedback", 0, {"satisfaction": "satisfied"}),
    ("report", 1, {"summary": "已办结"}),
    ("review", 2, {"approved": True}),
]
FAULTS = [(0.20, "web"), (0.35, "worker"), (0.55, "web"), (0.70, "worker")]


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid`, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def age_s(pid: int) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    start = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start


class Load:
    """The client threads and what they saw."""

    def __init__(self, port: int, pg_dsn: str, token: dict[str, str], clients: int):
        self.port, self.dsn, self.token, self.clients = port, pg_dsn, token, clients
        self.lock = threading.Lock()
        self.ok: list[tuple[str, str, float, float]] = []  # (case, task, at, latency)
        self.opened: list[tuple[str, float, float]] = []
        self.errors: Counter = Counter()
        self.statuses: Counter = Counter()
        self.stop_at = 0.0

    def run(self, seconds: float) -> float:
        self.stop_at = time.monotonic() + seconds
        threads = [threading.Thread(target=self.client, args=(i,)) for i in range(self.clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.monotonic() - started

    def call(self, client: Client, *args):
        """(status, body, took), or None when the request failed (a killed web process resets
        its connections): the caller looks again at what is open."""
        try:
            return client.call(*args)
        except Exception as exc:
            with self.lock:
                self.errors[type(exc).__name__] += 1
            time.sleep(0.05)
            return None

    def client(self, index: int) -> None:
        import psycopg

        grid = list(GRIDS)[index % len(GRIDS)]
        trio = GRIDS[grid]
        client = Client(self.port, timeout=30)
        conn = psycopg.connect(self.dsn, autocommit=True)
        n = 0
        try:
            while time.monotonic() < self.stop_at:
                n += 1
                answer = self.call(
                    client,
                    "POST",
                    "/cases",
                    self.token[trio[0]],
                    {"title": f"负载 {index}-{n}", "description": "—", "grid": grid},
                )
                if answer is None:
                    continue  # unknown: the case may exist; it is verified with the others
                status, body, took = answer
                with self.lock:
                    self.statuses[("open", status)] += 1
                if status != 201:
                    continue
                number = body["number"]
                with self.lock:
                    self.opened.append((number, time.monotonic(), took))
                self.finish(client, conn, number, trio)
        finally:
            client.close()
            conn.close()

    def finish(self, client: Client, conn, number: str, trio) -> None:
        """Complete the case's items in turn, until it is archived or time is up."""
        while time.monotonic() < self.stop_at:
            row = conn.execute(
                'select w.id, w.task from work_item w join "case" c on c.id = w.case_id '
                "where c.number = %s and w.completed_at is null and not w.cancelled "
                "order by w.id limit 1",
                (number,),
            ).fetchone()
            if row is None:
                return  # archived
            item_id, task = row
            role, form = next((r, f) for t, r, f in TASKS if t == task)
            answer = self.call(
                client,
                "POST",
                f"/work-items/{item_id}/complete",
                self.token[trio[role]],
                {"data": form},
            )
            if answer is None:
                continue  # look again: the step may have been committed before the kill
            status, _, took = answer
            with self.lock:
                self.statuses[(task, status)] += 1
                if status == 200:
                    self.ok.append((number, task, time.monotonic(), took))
            if status != 200:
                time.sleep(0.05)


def faults(serve, workers, seconds: float, start: float, log: list) -> None:
    for fraction, what in FAULTS:
        delay = start + fraction * seconds - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        parent = serve.pid if what == "web" else workers.pid
        pids = children(parent)
        if what == "worker":  # `python -m jobs` processes; not a helper the supervisor runs
            pids = [p for p in pids if b"jobs" in Path(f"/proc/{p}/cmdline").read_bytes()]
        if not pids:
            log.append((round(time.monotonic() - start, 1), what, None))
            continue
        victim = random.choice(pids)
        os.kill(victim, signal.SIGKILL)
        log.append((round(time.monotonic() - start, 1), what, victim))


def verify(url: str, load: Load, sample: int) -> dict:
    from sqlalchemy import select

    from engine.digests import verify_all
    from engine.models import Case, CaseEvent
    from engine.replay import replay
    from engine.specs import SpecRegistry
    from engine.storage import make_engine, make_sessionmaker

    engine = make_engine(url)
    session = make_sessionmaker(engine)()
    try:
        numbers = dict(session.execute(select(Case.id, Case.number)).all())
        completed = Counter(
            (numbers[case_id], task)
            for case_id, task in session.execute(
                select(CaseEvent.case_id, CaseEvent.task).where(CaseEvent.type == "task_completed")
            )
        )
        answered = Counter((number, task) for number, task, _, _ in load.ok)
        lost = sum(1 for key in answered if key not in completed)
        doubled = sum(n - 1 for n in completed.values() if n > 1)
        doubled_answers = sum(n - 1 for n in answered.values() if n > 1)
        report = verify_all(session)
        registry = SpecRegistry()
        cases = session.scalars(select(Case)).all()
        chosen = random.Random(12).sample(cases, min(sample, len(cases)))
        replay_bad = [c.number for c in chosen if not replay(session, c, registry).ok]
        return {
            "cases": len(numbers),
            "events": report.events,
            "lost": lost,
            "doubled": doubled,
            "doubled_answers": doubled_answers,
            "verify_ok": report.ok,
            "problems": [p.as_json() for p in report.problems[:5]],
            "replayed": len(chosen),
            "replay_bad": replay_bad,
        }
    finally:
        session.close()
        engine.dispose()


def memory(serve, workers) -> list[tuple[str, int, float, int, int]]:
    rows = []
    for what, parent in (("web master", serve.pid), ("worker supervisor", workers.pid)):
        rows.append(
            (what, parent, age_s(parent), status_kb(parent, "VmHWM"), status_kb(parent, "VmRSS"))
        )
    for what, parent in (("gunicorn worker", serve.pid), ("rq worker", workers.pid)):
        for pid in children(parent):
            rows.append((what, pid, age_s(pid), status_kb(pid, "VmHWM"), status_kb(pid, "VmRSS")))
    return rows


def summary(load: Load, wall: float, since: float = 0.0, until: float = float("inf")) -> dict:
    steps = [lat for _, _, at, lat in load.ok if since <= at < until]
    return {
        "steps": len(steps),
        "rate": len(steps) / wall,
        "median": statistics.median(steps) * 1000 if steps else 0,
        "p95": p95(steps) * 1000 if len(steps) > 1 else 0,
    }


def run_phase(port, dsn, token, clients, seconds, serve=None, workers=None):
    load = Load(port, dsn, token, clients)
    log: list = []
    killer = None
    if serve is not None:
        start = time.monotonic()
        killer = threading.Thread(target=faults, args=(serve, workers, seconds, start, log))
        killer.start()
    wall = load.run(seconds)
    if killer:
        killer.join()
    return load, wall, log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="length of the faulted run")
    parser.add_argument("--clients", type=int, default=50, help="concurrent API clients")
    parser.add_argument("--baseline-seconds", type=float, default=10, help="no-fault run first")
    parser.add_argument("--replay", type=int, default=30, help="cases replayed afterwards")
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gridloop-load-") as tmp, postgres() as pg:
        folder = Path(tmp)
        url = pg.url(pg.create(prefix="gridloop_load"))
        dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
        build_database(url)
        with redis_server() as redis:
            env = server_env(url, redis)
            port = free_port()
            logs = {name: folder / f"{name}.log" for name in ("serve", "worker")}
            serve = gridloop(env, logs["serve"], "serve", "--workers", "2", "--port", str(port))
            workers = gridloop(
                env, logs["worker"], "worker", "--workers", "2", "--log-level", "WARNING"
            )
            try:
                wait_up(port, serve, logs["serve"])
                people = sorted({p for trio in GRIDS.values() for p in trio})
                token = tokens(port, people)
                base, base_wall, _ = run_phase(
                    port, dsn, token, args.clients, args.baseline_seconds
                )
                print(f"baseline: {summary(base, base_wall)}", flush=True)
                load, wall, log = run_phase(
                    port, dsn, token, args.clients, args.seconds, serve, workers
                )
                print(f"faulted: {summary(load, wall)} kills {log}", flush=True)
                time.sleep(1)
                mem = memory(serve, workers)
            finally:
                stop(serve)
                stop(workers)
        checked = verify(url, load, args.replay)
        base_checked = verify(url, base, 0)
    report(args, base, base_wall, load, wall, log, mem, checked, base_checked)
    ok = (
        checked["lost"] == 0
        and checked["doubled"] == 0
        and base_checked["lost"] == 0
        and checked["verify_ok"]
        and not checked["replay_bad"]
    )
    return 0 if ok else 1


def report(args, base, base_wall, load, wall, log, mem, checked, base_checked) -> None:
    b, f = summary(base, base_wall), summary(load, wall)
    print()
    print(
        f"Load with faults: {args.clients} clients, baseline {args.baseline_seconds:.0f} s with no "
        f"fault, then {args.seconds:.0f} s with 2 web and 2 rq worker SIGKILLs; "
        f"PostgreSQL + Redis, serve --workers 2, worker --workers 2; {machine()}"
    )
    print()
    print(
        "| run | cases opened | steps (200) | steps/s | median | p95 | failed requests "
        "| lost | doubled |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, run, s, c in (
        ("baseline, no faults", base, b, base_checked),
        ("4 SIGKILLs", load, f, checked),
    ):
        print(
            f"| {name} | {len(run.opened)} | {s['steps']} | {s['rate']:.1f} | "
            f"{s['median']:.0f} ms | {s['p95']:.0f} ms | {sum(run.errors.values())} | "
            f"**{c['lost']}** | **{c['doubled']}** |"
        )
    print()
    print(
        f"Kills (s into the run, what, pid): {log}. Non-2xx answers: "
        f"{ {k: v for k, v in load.statuses.items() if k[1] >= 300} or 'none' }. "
        f"Connection errors: {dict(load.errors) or 'none'}."
    )
    print(
        f"Afterwards: {checked['cases']} cases, {checked['events']} events; verify_all "
        f"{'ok' if checked['verify_ok'] else 'FAILED ' + str(checked['problems'])}; "
        f"{checked['replayed']} cases replayed, "
        f"{len(checked['replay_bad'])} differ {checked['replay_bad'][:5]}; "
        f"{checked['doubled_answers']} (case, task) answered 200 twice."
    )
    print()
    print("| process | pid | age at the end | peak RSS (VmHWM) | RSS at the end |")
    print("|---|---:|---:|---:|---:|")
    for what, pid, age, hwm, rss in mem:
        print(f"| {what} | {pid} | {age:.0f} s | {hwm / 1024:.0f} MB | {rss / 1024:.0f} MB |")


if __name__ == "__main__":
    sys.exit(main())
