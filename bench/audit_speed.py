"""What auditing costs on the demo township: `audit verify` (every chain, against every digest) and
replay (every case rebuilt from its events through the step function).

Run on demand (not a test):
    .venv/bin/python bench/audit_speed.py [--cases N] [--rounds R] [--postgresql URL]

The demo township (320 grids, N sample cases, default the demo's 300) is loaded once into a fresh
SQLite file (or the PostgreSQL database at URL, which must be empty), one digest is made, and then
each round times, on the same database:

  baseline  reading every event of every case (one SELECT, rows materialised): what any check
            must at least do
  verify    engine.digests.verify_all: each chain recomputed and compared with every digest
  replay    engine.replay.replay on every case: SpiffWorkflow runs each case again

Rounds alternate the order, and the median round is reported, with verify and replay as ratios of
the baseline measured in the same round: these machines are noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from engine import digests  # noqa: E402
from engine.clock import FixedClock  # noqa: E402
from engine.demo import SAMPLE_CASES, load_demo  # noqa: E402
from engine.models import Case, CaseEvent  # noqa: E402
from engine.passwords import Passwords  # noqa: E402
from engine.replay import replay  # noqa: E402
from engine.runtime import Runtime  # noqa: E402
from engine.specs import deploy, load_bundle  # noqa: E402
from engine.storage import create_schema, make_engine, make_sessionmaker  # noqa: E402

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def build(url: str, cases: int):
    engine = make_engine(url)
    create_schema(engine)
    sessions = make_sessionmaker(engine)
    runtime = Runtime(FixedClock(NOW))
    with sessions() as session:
        deploy(session, runtime.registry, load_bundle(ROOT), "system", NOW)
        session.commit()
        load_demo(session, runtime, Passwords(cheap=True), cases=cases)
        digests.make(session, NOW, "bench")
        session.commit()
    return sessions, runtime


def time_baseline(sessions) -> tuple[float, int]:
    with sessions() as session:
        start = time.perf_counter()
        rows = session.execute(
            select(CaseEvent.case_id, CaseEvent.seq, CaseEvent.data, CaseEvent.hash).order_by(
                CaseEvent.case_id, CaseEvent.seq
            )
        ).all()
        return time.perf_counter() - start, len(rows)


def time_verify(sessions) -> tuple[float, int]:
    with sessions() as session:
        start = time.perf_counter()
        report = digests.verify_all(session)
        elapsed = time.perf_counter() - start
    assert report.ok, report.as_json()
    return elapsed, report.events


def time_replay(sessions, runtime) -> tuple[float, int]:
    with sessions() as session:
        cases = session.scalars(select(Case).order_by(Case.id)).all()
        start = time.perf_counter()
        events = 0
        for case in cases:
            result = replay(session, case, runtime.registry)
            assert result.ok, (case.number, result.as_json())
            events += result.events_replayed
        return time.perf_counter() - start, events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=SAMPLE_CASES)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgresql", metavar="URL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.postgresql or f"sqlite:///{os.path.join(folder, 'audit.sqlite')}"
        print(f"loading the demo township with {args.cases} cases ...", file=sys.stderr)
        sessions, runtime = build(url, args.cases)
        rounds = []
        for n in range(args.rounds):
            timings = {}
            order = ["baseline", "verify", "replay"]
            for name in order if n % 2 == 0 else reversed(order):
                if name == "baseline":
                    timings[name] = time_baseline(sessions)
                elif name == "verify":
                    timings[name] = time_verify(sessions)
                else:
                    timings[name] = time_replay(sessions, runtime)
            rounds.append(timings)
        report(rounds, args, url)
    return 0


def report(rounds: list[dict], args, url: str) -> None:
    events = rounds[0]["baseline"][1]
    base = statistics.median(r["baseline"][0] for r in rounds)
    verify = statistics.median(r["verify"][0] for r in rounds)
    replayed = statistics.median(r["replay"][0] for r in rounds)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"database: {url.split(':', 1)[0]}; {args.cases} cases, {events} events; "
          f"median of {args.rounds} rounds")  # fmt: skip
    print()
    print("| what | total | per event | events/s | × baseline |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in (("baseline: read every event", base), ("audit verify", verify),
                          ("replay every case", replayed)):  # fmt: skip
        print(
            f"| {name} | {seconds * 1000:.0f} ms | {seconds / events * 1e6:.1f} µs "
            f"| {events / seconds:,.0f} | {seconds / base:.1f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
