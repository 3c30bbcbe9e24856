"""What a step costs through the HTTP API: `gridloop serve` on one process, then on two gunicorn
workers (`--workers 2`), on SQLite and (with --postgresql) on PostgreSQL.

Run on demand (not a test):
    .venv/bin/python bench/http_step.py [--cases N] [--threads T] [--postgresql | --both]

For each backend one database is built: the schema, the repository's bundle deployed, the test
organisation (tests/conftest.py ORG_YAML: two villages, four grids) imported with cheap passwords,
and 2 × (N + warm-up) cases opened through engine.runtime.Runtime, each waiting at its accept item
for the officer of its grid. Then, for each server in turn (one process, then gunicorn with two
workers), started as a subprocess on that database:

  baseline  GET /api/v1/me, N times: token check and one person read, no step. Same server,
            same client threads, just before the completions.
  complete  POST /api/v1/work-items/{id}/complete (accept, normal severity) on N of the prepared
            cases, one each: a whole persisted step through the API.

T client threads (default 4) share the requests, each on one keep-alive connection (http.client),
and each uses the token of the officer of the case's grid. The first requests of a server are a
warm-up and are not timed (a web process parses the specs and fills its caches on first use).
Median and p95 are per request, seen by the client; completions/s is N over the wall time of the
timed phase. The aim (issue 12) on one process: median ≤ 3 ms and ≥ 250 completions/s.

PostgreSQL is a throwaway cluster started as tests/postgres_fixture.py starts it (in memory, fsync
off); SQLite is a file in a temporary folder (WAL, as engine.storage sets it). No Redis: the
server's ticker fires timers itself, and none fall due during the run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from sqlalchemy import select, update  # noqa: E402

from engine.access import viewer_of  # noqa: E402
from engine.clock import SystemClock  # noqa: E402
from engine.models import Person, WorkItem  # noqa: E402
from engine.org import import_org  # noqa: E402
from engine.passwords import Passwords  # noqa: E402
from engine.runtime import Runtime  # noqa: E402
from engine.specs import SpecRegistry, deploy, load_bundle  # noqa: E402
from engine.storage import create_schema, make_engine, make_sessionmaker  # noqa: E402

ACCEPT_NORMAL = {"valid": True, "category": "resident_request", "severity": "normal"}
GRIDS = {  # grid: (officer, grid leader, district leader), as in tests/test_serve_workers.py
    "V01-D1-G01": ("off1", "gl1", "dl1"),
    "V01-D1-G02": ("off2", "gl2", "dl1"),
    "V02-D1-G01": ("off3", "gl3", "dl2"),
    "V02-D1-G02": ("off4", "gl4", "dl2"),
}
WARM = 20  # untimed requests of each kind at the start of each server
START_TIMEOUT = 90


def org_yaml() -> str:
    from conftest import ORG_YAML

    return ORG_YAML


# ------------------------------------------------------------------ services


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def postgres():
    """A throwaway PostgreSQL cluster, started as the tests start theirs; yields a
    PostgresServer (url(name), create())."""
    import postgres_fixture as pg

    with pg.throwaway_cluster(prefix="gridloop-bench-pg-") as server:
        yield server


@contextmanager
def redis_server():
    """A redis-server of our own on a free port, no persistence; yields its URL."""
    from redis import Redis

    workdir = tempfile.mkdtemp(prefix="gridloop-bench-redis-")
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except Exception:
            if time.monotonic() > deadline:
                process.kill()
                raise SystemExit("redis-server did not start") from None
            time.sleep(0.05)
    client.close()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def build_database(url: str) -> None:
    """Schema, the repository's bundle and the test organisation (people past their initial
    password, as tests/apps.py import_test_org leaves them)."""
    engine = make_engine(url)
    create_schema(engine)
    session = make_sessionmaker(engine)()
    deploy(session, SpecRegistry(), load_bundle(ROOT), "system", datetime.now(UTC))
    session.commit()
    import_org(session, org_yaml(), Passwords(cheap=True))
    session.execute(update(Person).values(password_initial=False))
    session.commit()
    session.close()
    engine.dispose()


def open_cases(url: str, count: int, title: str = "bench") -> list[tuple[str, int]]:
    """`count` cases opened on the real clock, spread over the four grids, each waiting at its
    accept item; [(grid, accept item id)]."""
    engine = make_engine(url)
    session = make_sessionmaker(engine)()
    runtime = Runtime(SystemClock(), SpecRegistry())
    officers = {
        grid: viewer_of(
            session, session.scalars(select(Person).where(Person.username == trio[0])).one()
        )
        for grid, trio in GRIDS.items()
    }
    made = []
    grids = list(GRIDS)
    for i in range(count):
        grid = grids[i % len(grids)]
        case = runtime.open_case(session, officers[grid], title=f"{title} {i}", grid=grid)
        item = session.scalars(
            select(WorkItem.id).where(WorkItem.case_id == case.id, WorkItem.task == "accept")
        ).one()
        made.append((grid, item))
    session.close()
    engine.dispose()
    return made


def gridloop(env: dict, log: Path, *args: str) -> subprocess.Popen:
    """`gridloop ARGS` in its own process group, its output in a file."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "webapp.cli", *args],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def server_env(db_url: str, redis: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GRIDLOOP_REDIS_URL", None)
    env.update(
        GRIDLOOP_DATABASE_URL=db_url,
        GRIDLOOP_SECRET_KEY="bench",
        GRIDLOOP_CHEAP_PASSWORDS="1",
        PYTHONPATH=str(ROOT),
    )
    if redis:
        env["GRIDLOOP_REDIS_URL"] = redis
    return env


# ------------------------------------------------------------------ HTTP


class Client:
    """One keep-alive connection to the API; call() answers (status, body, seconds)."""

    def __init__(self, port: int, timeout: float = 60):
        self.port, self.timeout = port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, token: str | None = None, body=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        headers = {}
        data = None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        try:
            self.conn.request(method, "/api/v1" + path, data, headers)
            response = self.conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        took = time.perf_counter() - started
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        return response.status, json.loads(raw or b"null"), took

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def wait_up(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server stopped:\n{log.read_text()[-3000:]}")
        try:
            client = Client(port, timeout=5)
            if client.call("GET", "/openapi.json")[0] == 200:
                client.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the server did not come up:\n{log.read_text()[-3000:]}")


def tokens(port: int, usernames) -> dict[str, str]:
    client = Client(port)
    found = {}
    for name in usernames:
        status, body, _ = client.call("POST", "/tokens", body={"username": name, "password": "pw"})
        assert status == 201, body
        found[name] = body["token"]
    client.close()
    return found


def drive(port: int, jobs: list, threads: int) -> tuple[list[float], float, list]:
    """Run `jobs` [(method, path, token, body)] from `threads` client threads, each on its own
    connection; the latencies of the 2xx answers, the wall time, and the failures."""
    latencies: list[float] = []
    failures: list = []
    lock = threading.Lock()
    position = iter(range(len(jobs)))

    def work() -> None:
        client = Client(port)
        mine, bad = [], []
        while True:
            with lock:
                i = next(position, None)
            if i is None:
                break
            method, path, token, body = jobs[i]
            status, answer, took = client.call(method, path, token, body)
            if 200 <= status < 300:
                mine.append(took)
            else:
                bad.append((path, status, answer))
        client.close()
        with lock:
            latencies.extend(mine)
            failures.extend(bad)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies, time.perf_counter() - started, failures


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def measure_server(url: str, workers: int, cases: list, threads: int, folder: Path) -> dict:
    """Start `gridloop serve [--workers N]` on `url`, warm it up, time the baseline then the
    completions of `cases` [(grid, item id)]; the figures."""
    port = free_port()
    log = folder / f"serve-{workers}.log"
    args = ["serve", "--port", str(port)] + (["--workers", str(workers)] if workers > 1 else [])
    server = gridloop(server_env(url), log, *args)
    try:
        wait_up(port, server, log)
        officer = {grid: trio[0] for grid, trio in GRIDS.items()}
        token = tokens(port, sorted(officer.values()))
        grid0 = next(iter(GRIDS))
        me = [("GET", "/me", token[officer[grid0]], None)]
        complete = [
            ("POST", f"/work-items/{item}/complete", token[officer[grid]], {"data": ACCEPT_NORMAL})
            for grid, item in cases
        ]
        warm, timed = complete[:WARM], complete[WARM:]
        # Warm-up: every thread's connection, both kinds of request, on every web process.
        drive(port, me * WARM * workers, threads)
        _, _, failed = drive(port, warm, threads)
        assert not failed, failed[:3]
        base, base_wall, failed = drive(port, me * len(timed), threads)
        assert not failed, failed[:3]
        done, wall, failed = drive(port, timed, threads)
        assert not failed, failed[:3]
    finally:
        stop(server)
    return {
        "base_median": statistics.median(base) * 1000,
        "base_p95": p95(base) * 1000,
        "base_rate": len(base) / base_wall,
        "median": statistics.median(done) * 1000,
        "p95": p95(done) * 1000,
        "rate": len(done) / wall,
        "n": len(done),
    }


def run_backend(name: str, url: str, args, folder: Path) -> list[tuple[str, str, dict]]:
    build_database(url)
    per_server = args.cases + WARM
    t0 = time.perf_counter()
    prepared = open_cases(url, 2 * per_server)
    print(f"{name}: {len(prepared)} cases prepared in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    for i, workers in enumerate((1, 2)):
        label = "1 process (werkzeug, threaded)" if workers == 1 else "gunicorn, 2 workers × 4 th."
        mine = prepared[i * per_server : (i + 1) * per_server]
        figures = measure_server(url, workers, mine, args.threads, folder)
        print(f"{name} / {label}: {figures}", flush=True)
        rows.append((name, label, figures))
    return rows


def machine() -> str:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}"


def report(rows, args) -> None:
    print()
    print(
        f"HTTP step: {args.cases} completions (accept) and {args.cases} GET /me per server, "
        f"{args.threads} client threads on keep-alive connections; {machine()}"
    )
    print()
    print(
        "| database | server | GET /me median | GET /me p95 | GET /me /s "
        "| complete median | complete p95 | completions/s | median × /me |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, label, f in rows:
        print(
            f"| {name} | {label} | {f['base_median']:.2f} ms | {f['base_p95']:.2f} ms "
            f"| {f['base_rate']:.0f} | **{f['median']:.2f} ms** | {f['p95']:.2f} ms "
            f"| **{f['rate']:.0f}** | {f['median'] / f['base_median']:.1f} |"
        )
    print()
    print("Aim on one process: median ≤ 3 ms and ≥ 250 completions/s.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=400, help="timed completions per server")
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--postgresql", action="store_true", help="PostgreSQL only")
    which.add_argument("--both", action="store_true", help="SQLite, then PostgreSQL")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gridloop-http-step-") as tmp:
        folder = Path(tmp)
        if not args.postgresql:
            rows += run_backend("SQLite", f"sqlite:///{folder / 'bench.sqlite'}", args, folder)
        if args.postgresql or args.both:
            with postgres() as server:
                url = server.url(server.create(prefix="gridloop_bench"))
                rows += run_backend("PostgreSQL", url, args, folder)
    report(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
