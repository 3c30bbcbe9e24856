"""The upgrade walk: a database that the previous release made and worked in is upgraded in place by
`gridloop init-db`, and a case the old release opened and accepted is then taken to its archive by
the current engine, its event chain checking out end to end (`gridloop audit verify`).

The previous release is the repository at OLD_RELEASE, the last commit before this series of
changes, whose models are the schema of the baseline revision (0001_baseline). Its code is taken
out with `git archive` and run in a process of its own (PYTHONPATH on that copy, this interpreter and
its packages): its `gridloop init-db` (create_all, the diagrams deployed) and `gridloop org import`,
then its engine opens a case with a resident's name and phone and accepts it. Nothing here builds
old rows by hand: they are what the old code wrote, on the pass's backend (SQLite or PostgreSQL).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from conftest import ACCEPT_NORMAL, GRID, ORG_YAML, REPO
from sqlalchemy import inspect, select
from test_migrations import COMPARE, PRE_ALEMBIC

from engine.access import viewer_of
from engine.clock import FixedClock
from engine.events import verify
from engine.inbox import watch_items
from engine.models import Case, CaseEvent, ChainRewrite, DiagramVersion, Person, Reporter, WorkItem
from engine.runtime import Runtime
from engine.specs import SpecRegistry
from engine.storage import head_revision, make_engine, make_sessionmaker
from webapp.cli import main

OLD_RELEASE = "8ce0015"  # "One definition of the tier above and below …", before Alembic
OPENED = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai
NAME, PHONE = "王大妈", "13812345678"

# Run by the old release's code: its init-db and org import, then its engine opens a case as the
# grid's information officer and accepts it. Prints what it made as JSON.
OLD_SCRIPT = """
import json, sys
from datetime import datetime
from sqlalchemy import select
from engine.access import viewer_of
from engine.clock import FixedClock
from engine.models import Person, WorkItem
from engine.runtime import Runtime
from engine.storage import make_engine, make_sessionmaker
from webapp.cli import main

org_file, opened_at, grid, accept, name, phone = sys.argv[1:]
main(["init-db"], standalone_mode=False)
main(["org", "import", org_file], standalone_mode=False)
engine = make_engine()
session = make_sessionmaker(engine)()
runtime = Runtime(FixedClock(datetime.fromisoformat(opened_at)))
off1 = session.scalars(select(Person).where(Person.username == "off1")).one()
officer = viewer_of(session, off1)
case = runtime.open_case(
    session, officer, title="水管破裂", grid=grid, reporter={"name": name, "phone": phone}
)
item = session.scalars(select(WorkItem).where(WorkItem.case_id == case.id)).one()
case = runtime.complete(session, officer, item.id, json.loads(accept))
number, status, diagram_id = case.number, case.status, case.diagram_id
# The 80% supervision (督办) of the grid leader's item, due 19.2 h later; not yet the 100%.
supervised = runtime.fire_due_timers(session, as_of=datetime.fromisoformat(opened_at).replace(hour=22))
print(json.dumps({"number": number, "status": status, "diagram_id": diagram_id, "supervised": supervised}))
session.close()
engine.dispose()
"""


@pytest.fixture(scope="module")
def old_release(tmp_path_factory) -> Path:
    """The previous release's files, from git (a clone without that commit fails here, loudly)."""
    folder = tmp_path_factory.mktemp("old-release")
    archive = subprocess.run(
        ["git", "archive", "--format=tar", OLD_RELEASE],
        cwd=REPO,
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert archive.returncode == 0, f"git archive {OLD_RELEASE}: {archive.stderr.decode()}"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        # Our own commit's files; the "data" filter where this Python has it (3.11.4 and later:
        # Debian 12's python3 is 3.11.2).
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(folder, **safe)
    assert (folder / "engine" / "storage.py").is_file()
    assert not (folder / "migrations").exists(), "the old release predates Alembic"
    return folder


def _run_old_release(old_release: Path, url: str, tmp_path: Path) -> dict:
    org_file = tmp_path / "org.yaml"
    org_file.write_text(ORG_YAML, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLOOP_")}
    env.update(
        PYTHONPATH=str(old_release),  # before the editable install's finder: the old code runs
        GRIDLOOP_DATABASE_URL=url,
        GRIDLOOP_SECRET_KEY="test",
        GRIDLOOP_CHEAP_PASSWORDS="1",
    )
    args = [org_file, OPENED.isoformat(), GRID, json.dumps(ACCEPT_NORMAL), NAME, PHONE]
    done = subprocess.run(
        [sys.executable, "-c", OLD_SCRIPT, *map(str, args)],
        cwd=old_release,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    probe = subprocess.run(
        [sys.executable, "-c", "import engine; print(engine.__file__)"],
        cwd=old_release,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip().startswith(str(old_release)), probe.stdout
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def gridloop(monkeypatch):
    """The current `gridloop ...` through click on GRIDLOOP_DATABASE_URL."""
    monkeypatch.setenv("GRIDLOOP_CHEAP_PASSWORDS", "1")
    runner = CliRunner()

    def run(url: str, *args: str) -> str:
        monkeypatch.setenv("GRIDLOOP_DATABASE_URL", url)
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    return run


class Walk:
    """The current engine on the upgraded database, one step a session as the API runs them."""

    def __init__(self, url: str, at: datetime):
        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)
        self.clock = FixedClock(at)
        self.runtime = Runtime(self.clock, SpecRegistry())

    def item(self, session, case_id: int) -> WorkItem:
        (item,) = session.scalars(
            select(WorkItem).where(WorkItem.case_id == case_id, WorkItem.completed_at.is_(None))
        )
        return item

    def complete(self, username: str, case_id: int, data: dict, claim: bool = False) -> Case:
        self.clock.advance(minutes=30)
        with self.sessions() as session:
            person = session.scalars(select(Person).where(Person.username == username)).one()
            actor = viewer_of(session, person)
            item_id = self.item(session, case_id).id
            if claim:
                self.runtime.claim(session, actor, item_id)
            return self.runtime.complete(session, actor, item_id, data)

    def close(self) -> None:
        self.engine.dispose()


def test_a_case_the_old_release_accepted_is_archived_after_the_upgrade(
    old_release, new_db_url, tmp_path, gridloop
):
    url = new_db_url("old-release")
    made = _run_old_release(old_release, url, tmp_path)
    assert made["status"] == "handling" and made["supervised"] == 1

    # What the old release left: its create_all schema, which is the baseline's, and no Alembic.
    engine = make_engine(url)
    try:
        assert "alembic_version" not in inspect(engine).get_table_names()
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts=COMPARE)
            assert compare_metadata(context, PRE_ALEMBIC) == []
    finally:
        engine.dispose()

    upgraded = gridloop(url, "init-db")
    assert f"upgraded in place from before Alembic to {head_revision()}" in upgraded

    walk = Walk(url, OPENED + timedelta(hours=21))
    try:
        with walk.sessions() as session:
            case = session.scalars(select(Case).where(Case.number == made["number"])).one()
            case_id = case.id
            assert (case.status, case.tier, case.diagram_id) == (
                "handling",
                "grid_leader",
                made["diagram_id"],
            )
            reporter = session.get(Reporter, case_id)
            assert (reporter.name, reporter.phone) == (NAME, PHONE)
            assert session.scalars(select(ChainRewrite.case_id)).all() == [case_id]
            # init-db deployed the current bundle; the case stays on the version it began on.
            newest = session.scalar(select(DiagramVersion.id).order_by(DiagramVersion.id.desc()))
            assert newest >= made["diagram_id"]
            # The supervision the old release recorded still reaches the district leader's
            # 督办 list (0003 backfilled whom it told), and not the grid leader's, whose item it is.
            for username, watches in (("dl1", True), ("vs1", False), ("gl1", False)):
                person = session.scalars(select(Person).where(Person.username == username)).one()
                watched = [i.case_id for i in watch_items(session, viewer_of(session, person))]
                assert (case_id in watched) == watches, username

        walk.complete("gl1", case_id, {"outcome": "resolved", "note": "换了水管"}, claim=True)
        walk.complete("off1", case_id, {"satisfaction": "satisfied"})
        walk.complete("gl1", case_id, {"summary": "已修复"})
        case = walk.complete("dl1", case_id, {"approved": True, "note": "同意归档"})
        assert case.status == "archived" and case.closed_at == walk.clock.now()
        assert case.diagram_id == made["diagram_id"]

        with walk.sessions() as session:
            types = list(
                session.scalars(
                    select(CaseEvent.type)
                    .where(CaseEvent.case_id == case_id)
                    .order_by(CaseEvent.seq)
                )
            )
            assert types[:3] == ["opened", "claimed", "task_completed"]  # the old release's
            assert types[-1] == "archived"
            assert verify(session, session.get(Case, case_id)).ok
    finally:
        walk.close()

    assert "1 case(s) checked, 0 broken" in gridloop(url, "audit", "verify")
