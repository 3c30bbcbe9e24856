"""Shared fixtures: a database on the chosen backend (GRIDLOOP_TEST_DATABASE, see tests/apps.py), a
FixedClock, a Runtime, the repository's bundle deployed and a small organisation imported from a
DESIGN §9 file.

`make test` runs the suite twice: on SQLite files, then on a PostgreSQL cluster of the session's
own. Tests marked `sqlite_only` are about SQLite itself (file modes, WAL, the default database
path): they run in the SQLite pass, and the PostgreSQL pass deselects them and says how many.

The town XDK has two villages. V01 (liaison leader tl1) has district V01-D1 with grids G01 (leader
gl1, officers off1 and off1b) and G02 (gl2, off2); V02 (no liaison leader, so every town leader
sees its town items) has district V02-D1 with grids G01 (gl3, off3) and G02 (gl4, off4). Town
leaders tl1 and tl2, department PS with officer ps1, auditor aud, admin adm.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import apps
import pytest
from apps import BACKEND, Databases, import_test_org
from click.testing import CliRunner
from postgres_fixture import postgres_server  # noqa: F401 - the session's cluster, a fixture
from redis_fixture import redis_server, redis_url  # noqa: F401 - fixtures for the rq tests
from sqlalchemy import func, select

from engine.access import Viewer, inbox_scope, viewer_of
from engine.clock import FixedClock
from engine.models import Case, CaseEvent, Person, Timer, WorkItem
from engine.passwords import Passwords
from engine.runtime import Runtime
from engine.specs import Bundle, Spec, SpecRegistry, deploy, load_bundle, parse_bundle
from engine.storage import create_schema, make_engine, make_sessionmaker
from webapp.cli import main

REPO = Path(__file__).resolve().parents[1]
# Monday 2026-11-23 10:00 in Asia/Shanghai.
START = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
GRID = "V01-D1-G01"

ORG_YAML = """\
town: {code: XDK, name: 小渡口镇}
leaders:
  - {username: tl1, name: 张伟, password: pw, liaises: [V01]}
  - {username: tl2, name: 李强, password: pw}
departments:
  - {code: PS, name: 派出所, officers: [{username: ps1, name: 王警官, password: pw}]}
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
            officers:
              - {username: off1, name: 周信息员, password: pw}
              - {username: off1b, name: 吴信息员, password: pw}
          - code: V01-D1-G02
            name: 二组
            households: 3
            leader: {username: gl2, name: 郑组长, password: pw}
            officers: [{username: off2, name: 冯信息员, password: pw}]
  - code: V02
    name: 二村
    secretary: {username: vs2, name: 陈书记, password: pw}
    districts:
      - code: V02-D1
        name: 一片
        leader: {username: dl2, name: 褚片长, password: pw}
        grids:
          - code: V02-D1-G01
            name: 一组
            households: 3
            leader: {username: gl3, name: 卫组长, password: pw}
            officers: [{username: off3, name: 蒋信息员, password: pw}]
          - code: V02-D1-G02
            name: 二组
            households: 3
            leader: {username: gl4, name: 沈组长, password: pw}
            officers: [{username: off4, name: 韩信息员, password: pw}]
auditors: [{username: aud, name: 杨审计, password: pw}]
admins: [{username: adm, name: 朱管理, password: pw}]
"""

ACCEPT_NORMAL = {"valid": True, "category": "resident_request", "severity": "normal"}


# The tests the other pass runs: about SQLite itself, or about PostgreSQL's row locks.
_OTHER_PASS: dict[str, list[str]] = {"sqlite_only": [], "postgresql_only": []}


def pytest_collection_modifyitems(config, items) -> None:
    """Each pass deselects the tests that belong to the other backend (they run there); the
    summary line counts them as deselected, never as skipped."""
    marker = "sqlite_only" if BACKEND == "postgresql" else "postgresql_only"
    other = [item for item in items if item.get_closest_marker(marker)]
    if other:
        config.hook.pytest_deselected(items=other)
        items[:] = [item for item in items if not item.get_closest_marker(marker)]
        _OTHER_PASS[marker] = [item.nodeid for item in other]


def pytest_terminal_summary(terminalreporter) -> None:
    """Which backend this pass ran on (with -q pytest prints no header), and what it left to the
    other pass."""
    line = f"database: {BACKEND} (GRIDLOOP_TEST_DATABASE)"
    for marker, pass_name in (("sqlite_only", "SQLite"), ("postgresql_only", "PostgreSQL")):
        if _OTHER_PASS[marker]:
            count = len(_OTHER_PASS[marker])
            line += f"; {count} {marker} test(s) deselected, run in the {pass_name} pass"
    terminalreporter.write_line(line)


@pytest.fixture(scope="session", autouse=True)
def databases(request) -> Iterator[Databases]:
    """Where every test database is made, for the whole session: SQLite files, or databases in a
    PostgreSQL cluster started for the session (and only when the backend is postgresql)."""
    server = request.getfixturevalue("postgres_server") if BACKEND == "postgresql" else None
    made = Databases(server)
    apps.use_databases(made)
    yield made
    apps.use_databases(None)


@pytest.fixture
def new_db_url(tmp_path, databases):
    """new_db_url("name") -> the URL of a new empty database on the chosen backend (on SQLite,
    tmp_path/name.sqlite); each is dropped at the end of the test."""
    made: list[str] = []

    def new(name: str = "db") -> str:
        made.append(databases.new(tmp_path / f"{name}.sqlite"))
        return made[-1]

    yield new
    for url in made:
        databases.drop(url)


@pytest.fixture(scope="session")
def bundle() -> Bundle:
    return load_bundle(REPO)


@pytest.fixture(scope="module")
def spec(bundle) -> Spec:
    """The repository's case loop, parsed (the step function's tests need no database)."""
    return parse_bundle(bundle)


@pytest.fixture(scope="session")
def registry() -> SpecRegistry:
    """Parsed specs by hash, shared like one server process shares them across requests."""
    return SpecRegistry()


@pytest.fixture(scope="session")
def template_db(tmp_path_factory, databases, bundle, registry) -> Iterator[str]:
    """The URL of a database with the schema, the repository's bundle deployed and the
    organisation imported; each test gets a copy (building it per test costs more than copying
    it)."""
    url = databases.new(tmp_path_factory.mktemp("template") / "gridloop.sqlite")
    engine = make_engine(url)
    create_schema(engine)
    session = make_sessionmaker(engine)()
    deploy(session, registry, bundle, "system", START)
    session.commit()
    import_test_org(session, ORG_YAML, Passwords(cheap=True))
    session.commit()
    session.close()
    if engine.dialect.name == "sqlite":  # everything in the file that is copied
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    yield url
    databases.drop(url)


@pytest.fixture
def new_database(new_db_url):
    """Makes new empty databases on the pass's backend: call it for each URL."""
    numbers = count(1)
    return lambda: new_db_url(f"db{next(numbers)}")


@pytest.fixture
def engines():
    """make_engine(url), disposed of at the end of the test."""
    made = []

    def make(url: str):
        made.append(make_engine(url))
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()


@pytest.fixture
def gridloop(monkeypatch, tmp_path):
    """`gridloop ...` through click, on GRIDLOOP_DATABASE_URL, from a working directory that is
    not the repository's (no alembic.ini, no migrations/ there)."""
    monkeypatch.setenv("GRIDLOOP_CHEAP_PASSWORDS", "1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    runner = CliRunner()

    def run(url: str, *args: str, ok: bool = True) -> str:
        monkeypatch.setenv("GRIDLOOP_DATABASE_URL", url)
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    return run


@pytest.fixture
def db_url(tmp_path, databases, template_db) -> Iterator[str]:
    """A copy of template_db for this test, dropped after it."""
    url = databases.new(tmp_path / "gridloop.sqlite", template=template_db)
    yield url
    databases.drop(url)


@pytest.fixture
def db_engine(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def make_session(db_engine):
    return make_sessionmaker(db_engine)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def cli_env(db_url, monkeypatch):
    """A click runner for `gridloop ...` on the test's database, without Redis."""
    monkeypatch.setenv("GRIDLOOP_DATABASE_URL", db_url)
    monkeypatch.setenv("GRIDLOOP_CHEAP_PASSWORDS", "1")
    monkeypatch.delenv("GRIDLOOP_REDIS_URL", raising=False)
    return CliRunner()


@pytest.fixture
def make_app(tmp_path, clock):
    """make_app(org=ORG_YAML, **build_app options) -> the web app on a fresh database of the pass's
    backend, on the test's clock unless another is given; disposed of after the test."""
    made = []

    def make(org: str = ORG_YAML, **options):
        options.setdefault("clock", clock)
        app = apps.build_app(tmp_path / f"app{len(made) + 1}.sqlite", org, **options)
        made.append(app)
        return app

    yield make
    for app in made:
        apps.dispose_app(app)


@pytest.fixture
def runtime(clock, registry) -> Runtime:
    return Runtime(clock, registry)


@pytest.fixture
def session(make_session):
    s = make_session()
    yield s
    s.close()


class Loop:
    """Helpers that drive cases the way the API would, and read what a user would see."""

    def __init__(self, session, runtime: Runtime, clock: FixedClock):
        self.session, self.runtime, self.clock = session, runtime, clock

    def viewer(self, username: str) -> Viewer:
        person = self.session.scalars(select(Person).where(Person.username == username)).one()
        return viewer_of(self.session, person)

    def open(self, officer: str | None = "off1", grid: str = GRID, **fields) -> Case:
        fields.setdefault("title", "路灯坏了")
        actor = self.viewer(officer) if officer else None
        return self.runtime.open_case(self.session, actor, grid=grid, **fields)

    def reload(self, case: Case) -> Case:
        self.session.rollback()
        self.session.expire_all()
        return self.session.get(Case, case.id)

    def items(self, case: Case) -> list[WorkItem]:
        """The case's open work items."""
        return list(
            self.session.scalars(
                select(WorkItem)
                .where(WorkItem.case_id == case.id, WorkItem.completed_at.is_(None))
                .order_by(WorkItem.id)
            )
        )

    def item(self, case: Case) -> WorkItem:
        """The case's one open work item."""
        items = self.items(case)
        assert len(items) == 1, [(i.task, i.role) for i in items]
        return items[0]

    def all_items(self, case: Case) -> list[WorkItem]:
        return list(
            self.session.scalars(
                select(WorkItem).where(WorkItem.case_id == case.id).order_by(WorkItem.id)
            )
        )

    def inbox(self, username: str) -> list[WorkItem]:
        viewer = self.viewer(username)
        return list(
            self.session.scalars(
                select(WorkItem)
                .where(inbox_scope(viewer), WorkItem.completed_at.is_(None))
                .order_by(WorkItem.id)
            )
        )

    def complete(self, username: str, case: Case, data: dict) -> Case:
        """Complete the case's one open item as `username`."""
        return self.runtime.complete(self.session, self.viewer(username), self.item(case).id, data)

    def events(self, case: Case) -> list[CaseEvent]:
        return list(
            self.session.scalars(
                select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.seq)
            )
        )

    def types(self, case: Case) -> list[str]:
        return [e.type for e in self.events(case)]

    def last(self, case: Case, type_: str) -> CaseEvent:
        found = [e for e in self.events(case) if e.type == type_]
        assert found, f"no {type_} event in {self.types(case)}"
        return found[-1]

    def timers(self, case: Case) -> list[Timer]:
        return list(
            self.session.scalars(
                select(Timer).where(Timer.case_id == case.id).order_by(Timer.due_at)
            )
        )

    def counts(self) -> dict[str, int]:
        return {
            model.__tablename__: self.session.scalar(select(func.count()).select_from(model))
            for model in (Case, CaseEvent, WorkItem, Timer)
        }

    def fire(self, at: datetime | None = None) -> int:
        """Move the clock to `at` (if given) and fire what is due, as the ticker would."""
        if at is not None:
            self.clock.set(at)
        return self.runtime.fire_due_timers(self.session)

    # ------------------------------------------------------------ common paths

    def accepted(self, officer: str = "off1", grid: str = GRID, **accept) -> Case:
        """A case opened and accepted by `officer`; it waits in handling."""
        case = self.open(officer, grid)
        return self.complete(officer, case, {**ACCEPT_NORMAL, **accept})


def snapshot(gl: Loop, case: Case):
    """Everything a step may change about a case, to compare before and after a failed step."""
    case = gl.reload(case)
    items = [
        (i.id, i.claimed_by, i.completed_at, i.completed_by, i.cancelled, i.supervised_at)
        for i in gl.all_items(case)
    ]
    timers = [(t.id, t.due_at, t.kind) for t in gl.timers(case)]
    row = (case.version, case.status, case.tier, case.owner, case.due_at, case.workflow)
    return gl.counts(), row, items, timers, [e.hash for e in gl.events(case)]


@pytest.fixture
def gl(session, runtime, clock) -> Loop:
    return Loop(session, runtime, clock)


def changed(bundle: Bundle, path: str, old: str, new: str, count: int = 1, once: bool = False):
    """The bundle with `old` replaced by `new` in one file (the first `count` times). `old` must
    be there (exactly once, with `once`), and the file must change."""
    text = bundle.files[path]
    if once:
        assert text.count(old) == 1, f"{old!r} not once in {path}"
    else:
        assert old in text, f"{old!r} not in {path}"
    files = {**bundle.files, path: text.replace(old, new, count)}
    assert files[path] != text
    return Bundle(files)
