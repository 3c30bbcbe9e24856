"""What a campaign over the whole demo township costs (issue 13 item 7): launching it to every
grid (320 grids, about 16,000 households) and reading its coverage, each beside a baseline run in
the same process on the same database (these machines are noisy).

Run on demand (not a test):
    .venv/bin/python bench/campaign_scale.py [--rounds R] [--postgresql]

Each round, on a fresh copy of the demo township's organisation:

  launch     Runtime.launch_campaign to the town: the campaign row and its `launched` event, and
             one instance of the campaign diagram opened in each of the 320 grids (a case row,
             its return item, its timers, its `opened` event), in one transaction
  baseline   Runtime.open_case 32 times (one case, one transaction each), scaled to 320: what
             opening one case loop instance per grid would cost
  coverage   what the coverage page reads: campaigns.coverage for the town (its villages as
             children), the grids' states, and the households not yet reached, with half the
             households visited
  read       the baseline for coverage: reading every household row of the town once
  page       GET /campaigns/<id> for the town leader through Flask's test client: the coverage
             page whole (heat table of the villages, late grids, the first 200 households not
             reached), median of five after one warm-up
  register   the baseline for the page: GET /grids/<code>/households, one grid's register page

The aims are absolute (launch under 5 s, the coverage page under 1 s); ratios say how the work
compares with the baseline on this machine.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select, update  # noqa: E402

from engine import campaigns  # noqa: E402
from engine.access import viewer_of  # noqa: E402
from engine.clock import FixedClock, iso  # noqa: E402
from engine.demo_org import demo_org  # noqa: E402
from engine.models import Household, Person, Unit, Visit  # noqa: E402
from engine.org import import_org_data  # noqa: E402
from engine.passwords import Passwords  # noqa: E402
from engine.runtime import Runtime  # noqa: E402
from engine.specs import deploy, load_bundle  # noqa: E402
from engine.storage import create_schema, make_engine, make_sessionmaker  # noqa: E402

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
CHECKLIST = {
    "type": "object",
    "properties": {
        "told": {"type": "boolean", "title": "已宣传"},
        "burning": {"type": "boolean", "title": "发现焚烧隐患", "x-opens-case": True},
        "note": {"type": "string", "title": "备注", "maxLength": 500},
    },
}
BASELINE_CASES = 32


@contextmanager
def database(postgresql: bool):
    if postgresql:
        sys.path.insert(0, str(ROOT / "tests"))
        import postgres_fixture as pg

        with pg.throwaway_cluster("", prefix="gridloop-bench-pg-") as server:
            yield lambda: server.url(server.create(prefix="gridloop_bench"))
    else:
        with tempfile.TemporaryDirectory(prefix="gridloop-bench-") as folder:
            count = iter(range(1000))
            yield lambda: f"sqlite:///{folder}/campaign{next(count)}.db"


def township(url: str):
    engine = make_engine(url)
    create_schema(engine)
    sessions = make_sessionmaker(engine)
    runtime = Runtime(FixedClock(NOW))
    with sessions() as session:
        deploy(session, runtime.registry, load_bundle(ROOT), "system", NOW)
        import_org_data(session, demo_org("bench-only"), Passwords(cheap=True).for_demo())
        # Past their first password, as in the demo, so the pages open without asking for one.
        session.execute(update(Person).values(password_initial=False))
        session.commit()
    return engine, sessions, runtime


def viewer(session, username: str):
    person = session.scalars(select(Person).where(Person.username == username)).one()
    return viewer_of(session, person)


def timed(work):
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def pages(url: str, leader: str, campaign_id: int, grid: str) -> tuple[float, float]:
    """The coverage page as the town leader's browser gets it (Flask's test client, the whole
    request: sign-in cookie, the engine's reads, the template), the median of five, and the
    baseline: one grid's household register page (about 50 rows) for its leader."""
    import os

    os.environ.update(
        GRIDLOOP_DATABASE_URL=url, GRIDLOOP_SECRET_KEY="bench", GRIDLOOP_CHEAP_PASSWORDS="1"
    )
    from webapp import create_app

    app = create_app()
    app.config["WTF_CSRF_ENABLED"] = False

    def signed_in(username: str):
        client = app.test_client()
        answer = client.post("/login", data={"username": username, "password": "bench-only"})
        assert answer.status_code == 302, answer.get_data(as_text=True)[:300]
        return client

    def median_get(client, path: str) -> float:
        times = []
        for _ in range(6):
            seconds, answer = timed(lambda: client.get(path))
            assert answer.status_code == 200, (path, answer.status_code)
            times.append(seconds)
        return statistics.median(times[1:])  # the first fills the caches

    grid_leader = f"{grid.lower().replace('-', '.')}.leader"
    return (
        median_get(signed_in(leader), f"/campaigns/{campaign_id}"),
        median_get(signed_in(grid_leader), f"/grids/{grid}/households"),
    )


def one_round(url: str, seed: int) -> dict[str, float]:
    engine, sessions, runtime = township(url)
    try:
        with sessions() as session:
            town = session.scalars(select(Unit).where(Unit.level == "town")).one()
            leader = session.scalars(
                select(Person.username).where(Person.username.like("town.leader%"))
            ).first()
            grids = session.scalars(
                select(Unit.code).where(Unit.level == "grid").order_by(Unit.code)
            ).all()
            body = {
                "title": "秸秆禁烧宣传",
                "instructions": "逐户宣传",
                "kind": "patrol",
                "targets": [town.code],
                "due_at": iso(NOW + timedelta(days=10)),
                "checklist": CHECKLIST,
            }
            launch, campaign = timed(
                lambda: runtime.launch_campaign(session, viewer(session, leader), body)
            )
            officers = {}
            for code in grids[:BASELINE_CASES]:
                officers[code] = session.scalar(
                    select(Person.username).where(
                        Person.username == f"{code.lower().replace('-', '.')}.officer"
                    )
                )
            picked = [(c, o) for c, o in officers.items() if o]
            if not picked:  # fall back to a resident's case (no officer claims accept)
                picked = [(c, None) for c in grids[:BASELINE_CASES]]
            opens = []
            for code, officer in picked:
                actor = viewer(session, officer) if officer else None
                seconds, _case = timed(
                    lambda c=code, a=actor: runtime.open_case(session, a, title="路灯坏了", grid=c)
                )
                opens.append(seconds)
            baseline = sum(opens) / len(opens) * len(grids)
            # Half the households visited, written directly: the coverage read is measured.
            rng = random.Random(seed)
            houses = session.execute(select(Household.id, Household.grid_id)).all()
            visited = rng.sample(houses, len(houses) // 2)
            session.execute(
                insert(Visit.__table__),
                [
                    {
                        "campaign_id": campaign.id,
                        "grid_id": grid_id,
                        "household_id": house_id,
                        "client_id": f"bench-{house_id}",
                        "data": {"told": True},
                        "recorded_by": "bench",
                        "at": NOW,
                        "case_id": None,
                    }
                    for house_id, grid_id in visited
                ],
            )
            session.commit()
            me = viewer(session, leader)

            def coverage_page():
                figures = campaigns.coverage(session, me, campaign, None, NOW)
                left = campaigns.unreached(session, me, campaign, None, NOW)
                return figures, left

            cover, (figures, left) = timed(coverage_page)
            read, rows = timed(lambda: session.execute(select(Household)).all())
            page, register = pages(url, leader, campaign.id, grids[0])
            assert figures["grids_total"] == len(grids)
            assert figures["households_covered"] == len(visited)
            assert len(rows) == figures["households_total"]
            total = session.scalar(select(func.count()).select_from(Household))
            return {
                "grids": len(grids),
                "households": total,
                "launch": launch,
                "baseline": baseline,
                "coverage": cover,
                "read": read,
                "page": page,
                "register": register,
                "unreached": len(left),
            }
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgresql", action="store_true")
    args = parser.parse_args()
    with database(args.postgresql) as new_url:
        rounds = [one_round(new_url(), seed) for seed in range(args.rounds)]
    first = rounds[0]
    print(
        f"# campaign over the demo township: {first['grids']} grids, {first['households']} households"
    )
    print(
        f"# {'PostgreSQL' if args.postgresql else 'SQLite'}, Python {platform.python_version()}, {args.rounds} rounds (median)"
    )
    for name, base in (("launch", "baseline"), ("coverage", "read"), ("page", "register")):
        work = statistics.median(r[name] for r in rounds)
        ref = statistics.median(r[base] for r in rounds)
        ratio = statistics.median(r[name] / r[base] for r in rounds)
        print(
            f"{name:9s} {work * 1000:9.0f} ms   {base} {ref * 1000:8.0f} ms   ratio {ratio:5.2f}x"
        )
    print(f"households not yet reached listed: {first['unreached']}")


if __name__ == "__main__":
    main()
