"""How fast the inbox is at a million open work items: the demo township, filled up.

Run on demand (not a test):
    .venv/bin/python bench/inbox_scale.py [--items N] [--cases N] [--runs R] [--limit L]
                                          [--deep P] [--old-query] [--explain] [--watch]
                                          [--sqlite-file PATH]
                                          [--postgresql URL | --start-postgresql]

The demo organisation (12 villages, 36 districts, 320 grids, 6 town leaders who each liaise with
two villages) is imported into a fresh SQLite file (or the empty PostgreSQL database at URL, or a
throwaway cluster made like the tests' one, tests/postgres_fixture.py), then --cases cases
(default 200,000) each with --items / --cases open work items (default 1,000,000: five a case) are
written straight into `case` and `work_item` with bulk Core inserts, as the steps would have left
them. Through the engine that would take days and measure the engine, not the inbox.

The cases: as engine/demo.py spreads its own, every sixth in the demo grid V01-D1-G01 (where the
demo's logins work), the others over all 320 grids at random. Their items: by tier 20% info
officer (a fifth of those an owner's feedback item, assigned to the grid's officer), 35% grid
leader, 20% district leader, 15% village secretary, 10% town leadership (a tenth of those a peer
review with a town leader excluded); made over the last 20 days, due 1, 3, 5 or 10 days later,
8% with no deadline, a fifth claimed, those past 80% of their time supervised: a backlog, 69%
overdue and 74% supervised (the order of the walk does not depend on it). Whom each supervision
told, as the repository's diagram tells them (engine/projection.py writes these rows in the
supervision's step, with the same watch_keys rule): the holder (whoever claimed the item, else
its assignee, else its position); for a handle item also the case's owner and the tier above
(the town: none); an officer's item past its deadline the grid leader, a town peer review past
its deadline the town leadership, instead of the holder. Those keys go to work_item_watch and,
for the baseline only, as the text 0012 kept (",u:name,p:role@unit_id,") to a `notified`
column the benchmark adds back to work_item.

Timed, each p50 and p95 over R runs (default 50), one viewer at a time, in the same run:
  first page      engine.inbox.inbox_page(limit=L): what GET /inbox and the inbox page ask
  deep page       the page after following the cursor P-1 pages in (default page 50)
  baseline        the same page's items read by primary key with the same loader options
                  (SELECT ... WHERE id IN (...)): what any page costs however it is found
  old query       --old-query: the query before migration 0010 (one SELECT over inbox_scope
                  ordered by coalesce(due_at, 9999-01-01)), on the same rows, with 0009's two
                  inbox indexes in place of 0010's while it runs; its pages are checked to be
                  the new query's
  watch list      --watch: engine.inbox.watch_items, the 督办 list the inbox page shows above
                  its first page (not inbox_page: the supervised items that concern the viewer
                  but are not theirs to do), reading work_item_watch (migration 0013); its
                  baseline, timed in the same run and checked to give the same items, is the
                  query before 0013 (LIKE over the notified text), old_watch_items below
The viewers: the demo grid's leader (v01.d1.g01.leader: a sixth of all grid leader items), its
information officer (v01.d1.g01.officer, who has assigned feedback items too: two ways in, two
index ranges), and two town leaders: town.leader1, liaison of V01 (with the demo grid) and V02,
sees about 30% of the town items, town.leader6 (V11, V12) about 14%. With --watch also the
information officer of an ordinary grid (v01.d1.g02.officer), for the watch list only: the demo
grid's officer owns a sixth of all cases (33,000 open ones), this one about 500, and the list
reads every open item of the cases one owns. --explain prints the plan of each page query (EXPLAIN QUERY PLAN on SQLite, EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL). SQLite
is left without ANALYZE statistics, as Gridloop's own databases are; PostgreSQL gets VACUUM
ANALYZE after the load, as autovacuum would.

--sqlite-file PATH keeps the SQLite database there and reuses it when it already holds the items
(a file an older version of this benchmark made, without work_item_watch, is refused).
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import (  # noqa: E402
    Column,
    MetaData,
    String,
    event,
    func,
    insert,
    inspect,
    literal,
    literal_column,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.orm import joinedload  # noqa: E402

from engine.access import inbox_scope, viewer_of  # noqa: E402
from engine.clock import FixedClock  # noqa: E402
from engine.demo_org import demo_org  # noqa: E402
from engine.inbox import inbox_page, page_keys, watch_items  # noqa: E402
from engine.models import (  # noqa: E402
    LEVEL_OF_ROLE,
    NO_DEADLINE,
    TIER_ABOVE,
    Case,
    DiagramVersion,
    Person,
    Unit,
    WorkItem,
    WorkItemWatch,
)
from engine.org import import_org_data  # noqa: E402
from engine.passwords import Passwords  # noqa: E402
from engine.projection import person_key, position_key, watch_keys  # noqa: E402
from engine.runtime import Runtime  # noqa: E402
from engine.specs import deploy, load_bundle  # noqa: E402
from engine.storage import create_schema, make_engine, make_sessionmaker  # noqa: E402

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
CATEGORIES = ("resident_request", "dispute", "safety_hazard", "policy", "straw_burning")
ROLES = (  # (role, share of the items, task)
    ("info_officer", 0.20, "accept"),
    ("grid_leader", 0.35, "handle"),
    ("district_leader", 0.20, "handle"),
    ("village_secretary", 0.15, "handle"),
    ("town_leadership", 0.10, "handle"),
)
LIMITS_DAYS = (1, 3, 5, 10)
VIEWERS = ("v01.d1.g01.leader", "v01.d1.g01.officer", "town.leader1", "town.leader6")
WATCH_ONLY = ("v01.d1.g02.officer",)  # owns an ordinary grid's cases: 1/384 of them, not 1/6
DEMO_GRID = "V01-D1-G01"
CHUNK = 20_000  # rows a bulk insert writes at a time


# ------------------------------------------------------------------ the database


def build(url: str, cases: int, items: int, seed: int = 12) -> None:
    engine = make_engine(url)
    create_schema(engine)
    # The text column the watch list read before migration 0013, for the baseline only.
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE work_item ADD COLUMN notified VARCHAR(1000)")
    items_with_text = WorkItem.__table__.to_metadata(MetaData())
    items_with_text.append_column(Column("notified", String(1000)))
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        deploy(session, Runtime(FixedClock(NOW)).registry, load_bundle(ROOT), "system", NOW)
        import_org_data(session, demo_org("bench-only"), Passwords(cheap=True).for_demo())
        session.commit()
        diagram = session.scalar(select(DiagramVersion.id))
        units = {u.id: u for u in session.scalars(select(Unit))}
        grids = sorted((u for u in units.values() if u.level == "grid"), key=lambda u: u.code)
        demo_grid = next(g for g in grids if g.code == DEMO_GRID)
        leaders = sorted(
            session.scalars(select(Person.username).where(Person.username.like("town.leader%")))
        )
        rng = random.Random(seed)
        per_case, extra = divmod(items, cases)  # the first `extra` cases have one more
        step = max(1, CHUNK // (per_case + 1))
        started, made = time.perf_counter(), 0
        for first in range(0, cases, step):
            case_rows, item_rows, watch_rows = [], [], []
            for n in range(first, min(cases, first + step)):
                grid = demo_grid if n % 6 == 0 else rng.choice(grids)
                chain = _chain(units, grid)
                officer = grid.code.lower().replace("-", ".") + ".officer"
                opened = NOW - timedelta(days=20) + timedelta(seconds=20 * 86400 * n / cases)
                case_rows.append(_case_row(n + 1, n, chain, officer, opened, diagram, rng))
                for k in range(per_case + (n < extra)):
                    row = _item_row(n + 1, k, chain, officer, opened, leaders, rng)
                    row["id"] = made + len(item_rows) + 1
                    told = _told(row, chain, officer) if row["supervised_at"] else []
                    row["notified"] = "," + ",".join(told) + "," if told else None
                    item_rows.append(row)
                    item = SimpleNamespace(**row)
                    watch_rows += [
                        {"key": key, "due_key": row["due_key"], "item_id": row["id"]}
                        for key in watch_keys(item, told)
                    ]
            session.execute(insert(Case.__table__), case_rows)
            if item_rows:
                session.execute(insert(items_with_text), item_rows)
            if watch_rows:
                session.execute(insert(WorkItemWatch.__table__), watch_rows)
            session.commit()
            made += len(item_rows)
            _progress(f"{made:,} items, {time.perf_counter() - started:.0f} s")
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    print(file=sys.stderr)


def _chain(units: dict[int, Unit], grid: Unit) -> dict[str, int]:
    district = units[grid.parent_id]
    village = units[district.parent_id]
    return {"grid": grid.id, "district": district.id, "village": village.id,
            "town": village.parent_id}  # fmt: skip


def _case_row(case_id, n, chain, officer, opened, diagram, rng) -> dict:
    return {
        "id": case_id, "number": f"BEN-2026-{n:07d}", "title": "生成的案件", "description": "",
        "category": rng.choice(CATEGORIES), "severity": "normal",
        "town_id": chain["town"], "village_id": chain["village"],
        "district_id": chain["district"], "grid_id": chain["grid"],
        "owner": officer, "status": "handling", "tier": "grid_leader", "due_at": None,
        "opened_at": opened, "closed_at": None, "updated_at": opened, "satisfaction": None,
        "reopen_count": 0, "overdue_marked": False, "event_seq": 0, "event_head": "0" * 64,
        "digested_seq": 0, "escalations": 0, "diagram_id": diagram, "workflow": "",
        "version": 1,
    }  # fmt: skip


def _item_row(case_id, k, chain, officer, opened, leaders, rng) -> dict:
    pick, role, task = rng.random(), *ROLES[-1][::2]
    for name, share, first_task in ROLES:
        if pick < share:
            role, task = name, first_task
            break
        pick -= share
    assignee = excluded = None
    if role == "info_officer" and rng.random() < 0.2:
        task, assignee = "feedback", officer  # the owner's own item
    if role == "town_leadership" and rng.random() < 0.1:
        task, excluded = "review", rng.choice(leaders)
    created = opened + timedelta(minutes=rng.randrange(0, 600))
    due = None if rng.random() < 0.08 else created + timedelta(days=rng.choice(LIMITS_DAYS))
    warn = created + (due - created) * 0.8 if due else None
    supervised = warn if warn is not None and warn <= NOW else None
    unit = chain[LEVEL_OF_ROLE[role]]
    return {
        "case_id": case_id, "task_id": f"bench-{case_id}-{k}", "spec": f"{task}_{role}",
        "task": task, "name": task, "form": task, "role": role, "unit_id": unit,
        "village_id": chain["village"], "assignee": assignee, "excluded": excluded,
        "claimed_by": f"{role}.claimer" if rng.random() < 0.2 else None, "claimed_at": None,
        "created_at": created, "due_at": due, "due_key": due or NO_DEADLINE, "warn_at": warn,
        "supervised_at": supervised,
        "escalated": False, "completed_at": None, "completed_by": None, "cancelled": False,
    }  # fmt: skip


def _told(item: dict, chain: dict[str, int], owner: str) -> list[str]:
    """Whom the item's latest supervision told (see the module's docstring), as keys."""
    role = item["role"]
    if item["due_at"] <= NOW and role == "info_officer":  # due_accept, due_feedback
        return [position_key("grid_leader", chain["grid"])]
    if item["due_at"] <= NOW and item["excluded"]:  # due_review_town_peer
        return [position_key("town_leadership", chain["town"])]
    holder = item["claimed_by"] or item["assignee"]
    told = [person_key(holder) if holder else position_key(role, item["unit_id"])]
    if item["task"] == "handle":  # warn_grid, warn_district, warn_village, warn_town
        told.append(person_key(owner))
        above = TIER_ABOVE.get(role)
        if above:
            told.append(position_key(above, chain[LEVEL_OF_ROLE[above]]))
    return told


def _progress(message: str) -> None:
    print(f"\r  {message}   ", end="", file=sys.stderr, flush=True)


def _holds_items(url: str) -> bool:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if not conn.scalar(text("SELECT count(*) FROM work_item")):
                return False
            if not inspect(conn).has_table("work_item_watch"):
                raise SystemExit(f"{url}: made by an older version of this benchmark; remove it")
            return True
    except SystemExit:
        raise
    except Exception:  # noqa: BLE001 - no schema yet
        return False
    finally:
        engine.dispose()


@contextmanager
def throwaway_postgresql() -> Iterator[str]:
    """A cluster of our own, made and started as the tests make theirs (tests/postgres_fixture.py),
    with shared_buffers at 1 GB so that the million items fit; stopped and removed afterwards.
    Yields the URL of an empty database."""
    sys.path.insert(0, str(ROOT / "tests"))
    import postgres_fixture as pg

    settings = "-c max_wal_size=4GB -c shared_buffers=1GB"
    with pg.throwaway_cluster(settings, prefix="gridloop-bench-pg-") as server:
        yield server.url(server.create(prefix="gridloop_bench"))


# ------------------------------------------------------------------ the queries


def old_inbox_page(session, viewer, now, *, after=None, limit=50):
    """engine.inbox.inbox_page before migration 0010 (no filters): one SELECT over inbox_scope,
    ordered by an expression no index holds."""
    due = func.coalesce(WorkItem.due_at, NO_DEADLINE)
    query = (
        select(WorkItem)
        .options(joinedload(WorkItem.case).joinedload(Case.grid), joinedload(WorkItem.unit))
        .join(Case, Case.id == WorkItem.case_id)
        .where(WorkItem.completed_at.is_(None), inbox_scope(viewer))
    )
    if after is not None:
        last_due, last_id = after
        query = query.where(
            tuple_(due, WorkItem.id)
            > tuple_(literal(last_due, WorkItem.due_at.type), literal(last_id))
        )
    items = list(session.scalars(query.order_by(due, WorkItem.id).limit(limit + 1)))
    if len(items) <= limit:
        return items, None
    last = items[limit - 1]
    return items[:limit], (last.due_at or NO_DEADLINE, last.id)


def old_watch_items(session, viewer, limit: int = 20) -> list[WorkItem]:
    """engine.inbox.watch_items before migration 0013: LIKE over the notified text, which no
    index serves (read from the column this benchmark adds back)."""
    keys = [person_key(viewer.username)] + [
        position_key(role, unit_id) for role, unit_id in viewer.tier_positions()
    ]
    notified = literal_column("work_item.notified")
    concerns = [Case.owner == viewer.username] + [
        notified.like(f"%,{_escape(key)},%", escape="\\") for key in keys
    ]
    query = (
        select(WorkItem)
        .options(joinedload(WorkItem.case).joinedload(Case.grid), joinedload(WorkItem.unit))
        .join(Case, Case.id == WorkItem.case_id)
        .where(
            WorkItem.completed_at.is_(None),
            WorkItem.supervised_at.is_not(None),
            or_(*concerns),
            ~inbox_scope(viewer),
        )
        .order_by(WorkItem.due_key, WorkItem.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def by_ids(session, ids: list[int]) -> list[WorkItem]:
    """The baseline: the page's items by primary key, loaded as the inbox loads them."""
    query = (
        select(WorkItem)
        .options(joinedload(WorkItem.case).joinedload(Case.grid), joinedload(WorkItem.unit))
        .where(WorkItem.id.in_(ids))
        .order_by(WorkItem.due_key, WorkItem.id)
    )
    return list(session.scalars(query))


def percentiles(session, work: Callable[[], object], runs: int) -> tuple[float, float]:
    """p50 and p95 in ms; each run in a transaction of its own, with an empty identity map."""
    times = []
    for _ in range(runs):
        session.rollback()
        session.expunge_all()
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    session.rollback()
    return statistics.median(times), statistics.quantiles(times, n=20, method="inclusive")[18]


def explain(session, viewer, after, limit) -> str:
    """The plan of the page query as the database runs it (values inlined: the planners see
    them either way, SQLite's without statistics, PostgreSQL's in its custom plans)."""
    page = page_keys(viewer, NOW, after=after, limit=limit + 1)
    query = (
        select(WorkItem)
        .options(joinedload(WorkItem.case).joinedload(Case.grid), joinedload(WorkItem.unit))
        .where(WorkItem.id.in_(select(page.c.id)))
        .order_by(WorkItem.due_key, WorkItem.id)
    )
    conn = session.connection()
    sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all()
        depth: dict[int, int] = {0: 0}
        lines = []
        for node, parent, _unused, detail in rows:
            depth[node] = depth.get(parent, 0) + 1
            lines.append("  " * depth[node] + detail)
        return "\n".join(lines)
    found = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}").all()
    return "\n".join(row[0] for row in found)


def explain_watch(session, viewer) -> str:
    """The watch list's plan, as `explain` gives the page's: the SELECT watch_items runs, caught
    on its way to the database and asked again with EXPLAIN and the same parameters."""
    caught: list[tuple] = []
    conn = session.connection()

    def catch(_conn, _cursor, statement, parameters, _context, _many):
        caught.append((statement, parameters))

    event.listen(conn, "before_cursor_execute", catch)
    try:
        watch_items(session, viewer)
    finally:
        event.remove(conn, "before_cursor_execute", catch)
    statement, parameters = caught[-1]
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
        depth: dict[int, int] = {0: 0}
        lines = []
        for node, parent, _unused, detail in rows:
            depth[node] = depth.get(parent, 0) + 1
            lines.append("  " * depth[node] + detail)
        return "\n".join(lines)
    analyzed = f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {statement}"
    return "\n".join(row[0] for row in conn.exec_driver_sql(analyzed, parameters).all())


# ------------------------------------------------------------------ the run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--cases", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--limit", type=int, default=20, help="a page's items (the inbox page's)")
    parser.add_argument("--deep", type=int, default=50, help="the deep page's number")
    parser.add_argument("--old-query", action="store_true")
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--watch", action="store_true", help="time watch_items too")
    parser.add_argument("--sqlite-file", metavar="PATH")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--postgresql", metavar="URL", help="an empty database")
    where.add_argument("--start-postgresql", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, _database(args, folder) as url:
        if _holds_items(url):
            print("reusing the items already in the database", file=sys.stderr)
        else:
            print(f"writing {args.cases:,} cases, {args.items:,} items ...", file=sys.stderr)
            build(url, args.cases, args.items)
        rows, plans = measure(url, args)
        backend = make_engine(url).dialect
        version = _server_version(url)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; database: {backend.name} {version}"
    )
    print(
        f"{args.items:,} open items over {args.cases:,} cases; page of {args.limit}; "
        f"deep page = page {args.deep}; p50 and p95 over {args.runs} runs"
    )
    print()
    print("| viewer | visible items | page | query | p50 | p95 | × baseline p50 |")
    print("|---|---:|---|---|---:|---:|---:|")
    for viewer, visible, page, query, p50, p95, base in rows:
        ratio = f"{p50 / base:.1f}" if base else ""
        print(
            f"| {viewer} | {visible:,} | {page} | {query} | {p50:.2f} ms | {p95:.2f} ms | {ratio} |"
        )
    for title, plan in plans:
        print(f"\n{title}\n{plan}")
    return 0


@contextmanager
def _database(args, folder: str) -> Iterator[str]:
    if args.start_postgresql:
        with throwaway_postgresql() as url:
            yield url
    elif args.postgresql:
        yield args.postgresql
    else:
        yield f"sqlite:///{args.sqlite_file or os.path.join(folder, 'inbox.sqlite')}"


def _server_version(url: str) -> str:
    engine = make_engine(url)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            found = conn.scalar(text("SELECT sqlite_version()"))
        else:
            found = conn.scalar(text("SHOW server_version"))
    engine.dispose()
    return str(found).split()[0]


def measure(url: str, args) -> tuple[list[tuple], list[tuple[str, str]]]:
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    rows, plans, old_pages = [], [], []
    with sessions() as session:
        for username in VIEWERS + (WATCH_ONLY if args.watch else ()):
            person = session.scalars(select(Person).where(Person.username == username)).one()
            viewer = viewer_of(session, person, NOW)
            visible = session.scalar(
                select(func.count())
                .select_from(WorkItem)
                .where(WorkItem.completed_at.is_(None), inbox_scope(viewer))
            )
            if username in VIEWERS:  # (WATCH_ONLY: the watch list only)
                first, key = inbox_page(session, viewer, NOW, limit=args.limit)
                pages = [("first page", None, [i.id for i in first])]
                deep_after, page = None, 1
                while key is not None and page < args.deep:
                    deep_after, page = key, page + 1
                    _items, key = inbox_page(session, viewer, NOW, after=key, limit=args.limit)
                deep = inbox_page(session, viewer, NOW, after=deep_after, limit=args.limit)[0]
                pages.append((f"page {page}", deep_after, [i.id for i in deep]))

                def new_page(after, viewer=viewer):
                    return inbox_page(session, viewer, NOW, after=after, limit=args.limit)

                for name, after, ids in pages:
                    base = percentiles(session, lambda ids=ids: by_ids(session, ids), args.runs)
                    new = percentiles(session, lambda after=after: new_page(after), args.runs)
                    rows.append((username, visible, name, "baseline: by id", *base, 0))
                    rows.append((username, visible, name, "inbox_page", *new, base[0]))
                    old_pages.append((username, viewer, visible, name, after, ids, base[0]))
                    if args.explain:
                        plan = explain(session, viewer, after, args.limit)
                        plans.append((f"### {username}, {name}", plan))
                        session.rollback()
            if args.watch:
                listed = [i.id for i in watch_items(session, viewer)]
                if [i.id for i in old_watch_items(session, viewer)] != listed:
                    raise AssertionError(f"the old watch list differs for {username}")
                base = percentiles(session, lambda ids=listed: by_ids(session, ids), args.runs)
                watch = percentiles(session, lambda v=viewer: watch_items(session, v), args.runs)
                old = percentiles(session, lambda v=viewer: old_watch_items(session, v), args.runs)
                rows.append((username, visible, "watch list", "baseline: by id", *base, 0))
                rows.append((username, visible, "watch list", "watch_items", *watch, base[0]))
                rows.append((username, visible, "watch list", "old LIKE (0012)", *old, base[0]))
                if args.explain:
                    plans.append((f"### {username}, watch list", explain_watch(session, viewer)))
                    session.rollback()
            _progress(f"{username} done")
        if args.old_query:
            with old_indexes(session):
                for username, viewer, visible, name, after, ids, base in old_pages:

                    def old_page(after=after, viewer=viewer):
                        return old_inbox_page(session, viewer, NOW, after=after, limit=args.limit)

                    if [i.id for i in old_page()[0]] != ids:
                        raise AssertionError(f"the old query's {name} differs for {username}")
                    old = percentiles(session, old_page, args.runs)
                    rows.append((username, visible, name, "old query (0009 indexes)", *old, base))
                    _progress(f"old query: {username}, {name}")
    print(file=sys.stderr)
    engine.dispose()
    order: dict[tuple[str, str], int] = {}
    for n, row in enumerate(rows):  # each viewer's pages in the order they were first timed
        order.setdefault((row[0], row[2]), n)
    return sorted(rows, key=lambda r: order[(r[0], r[2])]), plans


# The inbox indexes as revision 0009 had them, for the old query.
NEW_INDEXES = {
    "ix_work_item_inbox": "(role, unit_id, due_key, id) WHERE completed_at IS NULL",
    "ix_work_item_assignee": "(assignee, due_key, id) WHERE completed_at IS NULL",
}
OLD_INDEXES = {
    "ix_work_item_inbox": "(role, unit_id, completed_at, due_at, id)",
    "ix_work_item_assignee": "(assignee, completed_at)",
}


@contextmanager
def old_indexes(session) -> Iterator[None]:
    """The old query timed on the indexes it was written for (on 0010's partial indexes it would
    scan every open item): 0009's in place of 0010's while the block runs."""

    def make(indexes: dict[str, str]) -> None:
        session.rollback()
        for name, columns in indexes.items():
            session.execute(text(f"DROP INDEX {name}"))
            session.execute(text(f"CREATE INDEX {name} ON work_item {columns}"))
        session.commit()
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ANALYZE work_item"))
            session.commit()

    _progress("making the 0009 indexes")
    make(OLD_INDEXES)
    try:
        yield
    finally:
        _progress("making the 0010 indexes again")
        make(NEW_INDEXES)


if __name__ == "__main__":
    sys.exit(main())
