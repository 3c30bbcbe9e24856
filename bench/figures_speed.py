"""How fast the figures are at a county's scale: the demo township with a year of generated history.

Run on demand (not a test):
    .venv/bin/python bench/figures_speed.py [--cases N] [--repeat R] [--postgresql URL]

The demo organisation (320 grids) is imported into a fresh SQLite file (or the empty PostgreSQL
database at URL), then N cases (default 20,000) of 2026 are written straight into the tables the
figures read, as the steps would have left them: `case`, `case_fact` (90% accepted as valid, 85%
of those archived, some escalated, overdue or reopened), `feedback_fact`, and an open work item for
every case still open (a fifth of them past due). Writing them through the engine would take an
hour and measure the engine, not the figures.

Timed, each the median of R runs, with its baseline in the same run:
  town dashboard  engine.figures.figures(town, this year): every figure, the villages' and the
                  categories' (what GET /stats and the dashboard ask)
  grid dashboard  the same for one grid
  baseline        SELECT count(*) FROM case WHERE town_id = ... (or grid_id = ...): the plainest
                  query over the same cases
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select  # noqa: E402

from engine.clock import FixedClock  # noqa: E402
from engine.demo_org import demo_org  # noqa: E402
from engine.figures import Period, figures  # noqa: E402
from engine.models import Case, CaseFact, DiagramVersion, FeedbackFact, Unit, WorkItem  # noqa: E402
from engine.org import import_org_data  # noqa: E402
from engine.passwords import Passwords  # noqa: E402
from engine.runtime import Runtime  # noqa: E402
from engine.specs import deploy, load_bundle  # noqa: E402
from engine.storage import create_schema, make_engine, make_sessionmaker  # noqa: E402

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
YEAR = Period(date(2026, 1, 1), date(2026, 11, 27))
CATEGORIES = ("resident_request", "dispute", "safety_hazard", "policy", "straw_burning")
TIERS = ("grid_leader", "district_leader", "village_secretary", "town_leadership")


def build(url: str, cases: int, seed: int = 11):
    engine = make_engine(url)
    create_schema(engine)
    sessions = make_sessionmaker(engine)
    runtime = Runtime(FixedClock(NOW))
    with sessions() as session:
        deploy(session, runtime.registry, load_bundle(ROOT), "system", NOW)
        import_org_data(session, demo_org("bench-only"), Passwords(cheap=True).for_demo())
        session.commit()
        diagram = session.scalar(select(DiagramVersion.id))
        grids = session.execute(
            select(Unit.id, Unit.parent_id).where(Unit.level == "grid").order_by(Unit.code)
        ).all()
        parent = dict(session.execute(select(Unit.id, Unit.parent_id)).tuples().all())
        rng = random.Random(seed)
        for start in range(0, cases, 2000):
            _write(session, rng, diagram, grids, parent, range(start, min(cases, start + 2000)))
            session.commit()
    return sessions


def _write(session, rng, diagram, grids, parent, numbers) -> None:
    case_rows, fact_rows, feedback_rows, items = [], [], [], []
    first = session.scalar(select(func.coalesce(func.max(Case.id), 0)))
    for offset, n in enumerate(numbers, start=1):
        case_id = first + offset
        grid, district = grids[n % len(grids)]
        village = parent[district]
        town = parent[village]
        opened = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(330 * 24 * 60))
        opened = min(opened, NOW - timedelta(hours=2))
        accepted = opened + timedelta(minutes=rng.randrange(5, 240))
        valid = rng.random() < 0.9
        archived = accepted + timedelta(hours=rng.randrange(2, 200)) if valid else None
        if archived is not None and (archived > NOW or rng.random() > 0.85):
            archived = None
        status = "archived" if archived else ("rejected" if not valid else "handling")
        category = rng.choice(CATEGORIES)
        case_rows.append(
            {
                "id": case_id, "number": f"BEN-2026-{n:07d}", "title": "生成的案件",
                "description": "", "category": category, "severity": "normal",
                "town_id": town, "village_id": village, "district_id": district, "grid_id": grid,
                "owner": None, "status": status, "tier": rng.choice(TIERS), "due_at": None,
                "opened_at": opened, "closed_at": archived, "updated_at": archived or accepted,
                "satisfaction": None, "reopen_count": 0, "overdue_marked": False,
                "event_seq": 0, "event_head": "0" * 64, "digested_seq": 0, "escalations": 0,
                "diagram_id": diagram, "workflow": "", "version": 1,
            }
        )  # fmt: skip
        late = accepted + timedelta(hours=30) if rng.random() < 0.12 else None
        reopened = accepted + timedelta(hours=40) if archived and rng.random() < 0.05 else None
        fact_rows.append(
            {
                "case_id": case_id, "town_id": town, "village_id": village,
                "district_id": district, "grid_id": grid, "category": category,
                "opened_at": opened, "accepted_at": accepted, "valid": valid,
                "dispatch_us": (accepted - opened) // timedelta(microseconds=1),
                "archived_at": archived,
                "resolution_us": (archived - accepted) // timedelta(microseconds=1) if archived else None,
                "resolved_tier": rng.choice(TIERS) if archived else None,
                "late_at": late, "reopened_at": reopened,
            }
        )  # fmt: skip
        if archived:
            feedback_rows.append(
                {"case_id": case_id, "at": archived - timedelta(hours=1),
                 "satisfied": rng.random() < 0.93}
            )  # fmt: skip
        elif valid:
            due = accepted + timedelta(hours=rng.choice((24, 72, 2000)))
            items.append(
                {
                    "case_id": case_id, "task_id": f"bench-{case_id}", "spec": "handle_grid",
                    "task": "handle", "name": "处置", "form": "handle", "role": "grid_leader",
                    "unit_id": grid, "village_id": village, "created_at": accepted,
                    "due_at": due, "escalated": False, "cancelled": False,
                }
            )  # fmt: skip
    session.execute(insert(Case.__table__), case_rows)
    session.execute(insert(CaseFact.__table__), fact_rows)
    if feedback_rows:
        session.execute(insert(FeedbackFact.__table__), feedback_rows)
    if items:
        session.execute(insert(WorkItem.__table__), items)


def timed(work, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--postgresql", metavar="URL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.postgresql or f"sqlite:///{os.path.join(folder, 'figures.sqlite')}"
        print(f"writing {args.cases} cases of 2026 ...", file=sys.stderr)
        sessions = build(url, args.cases)
        with sessions() as session:
            town = session.scalars(select(Unit).where(Unit.level == "town")).one()
            grid = session.scalars(select(Unit).where(Unit.code == "V01-D1-G01")).one()
            rows = []
            for name, unit, column in (
                ("town", town, Case.town_id),
                ("grid", grid, Case.grid_id),
            ):
                count = select(func.count()).select_from(Case).where(column == unit.id)
                base = timed(lambda count=count: session.scalar(count), args.repeat)
                dash = timed(lambda unit=unit: figures(session, unit, YEAR, NOW), args.repeat)
                found = figures(session, unit, YEAR, NOW)
                rows.append((name, session.scalar(count), found["received"], base, dash))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"database: {url.split(':', 1)[0]}; {args.cases} cases; median of {args.repeat} runs")
    print()
    print("| dashboard | cases | received | SELECT count(*) | figures() | × baseline |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, cases, received, base, dash in rows:
        print(
            f"| {name} | {cases:,} | {received:,} | {base * 1000:.2f} ms | {dash * 1000:.1f} ms "
            f"| {dash / base:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
