"""The schema is made and changed only by the Alembic migrations in migrations/ (DESIGN §5), the same
on SQLite and PostgreSQL: the migrations make exactly the models' schema, `gridloop init-db`
upgrades a database an earlier Gridloop made in place and keeps its rows, and the quick
create_schema that tests use makes the same schema as the migrations.

Each test that takes `new_database` runs on the backend of the pass (GRIDLOOP_TEST_DATABASE: a
SQLite file, or a database in the session's PostgreSQL cluster; `make test` runs both). The
tests marked sqlite_only are about SQLite's own ALTER TABLE procedure and file modes.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from conftest import REPO
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
)

import engine.storage as storage
from engine.models import Base
from engine.storage import (
    BASELINE,
    create_schema,
    head_revision,
    make_engine,
    migration_connection,
    upgrade_schema,
)
from webapp.cli import main

# What autogenerate compares: besides tables, columns, indexes, unique constraints and foreign
# keys, the column types and server defaults.
COMPARE = {"compare_type": True, "compare_server_default": True}


def _pre_alembic_metadata() -> MetaData:
    """The tables of engine/models.py at commit 384d5f5, the last Gridloop before Alembic, as its
    Base.metadata.create_all made them (models.UTCDateTime is a DateTime in the database). Frozen
    here: the models move on, the databases that Gridloop made then do not."""
    m = MetaData()

    def col(name, type_, null=False, **kw):
        return Column(name, type_, nullable=null, **kw)

    def pk(name="id", type_=Integer, fk=None):
        return Column(name, type_, *([ForeignKey(fk)] if fk else []), primary_key=True)

    def fk(name, target, null=False, index=False):
        return Column(name, Integer, ForeignKey(target), nullable=null, index=index)

    Table(
        "unit",
        m,
        pk(),
        col("code", String(64), unique=True),
        col("name", String(200)),
        col("level", String(16)),
        fk("parent_id", "unit.id", null=True, index=True),
        col("households", Integer),
        col("active", Boolean),
        col("settings", JSON),
    )
    Table(
        "household",
        m,
        pk(),
        fk("grid_id", "unit.id"),
        col("number", Integer),
        col("head", String(100), null=True),
        UniqueConstraint("grid_id", "number"),
    )
    Table(
        "person",
        m,
        pk(),
        col("username", String(64), unique=True),
        col("name", String(100)),
        col("password_hash", String(200)),
        col("active", Boolean),
    )
    Table(
        "position",
        m,
        pk(),
        fk("person_id", "person.id"),
        col("role", String(32)),
        fk("unit_id", "unit.id"),
        UniqueConstraint("person_id", "role", "unit_id"),
        Index("ix_position_role_unit", "role", "unit_id"),
    )
    Table("liaison", m, pk("person_id", fk="person.id"), pk("village_id", fk="unit.id"))
    Table(
        "api_token",
        m,
        pk("token_hash", String(64)),
        fk("person_id", "person.id", index=True),
        col("created_at", DateTime),
        col("expires_at", DateTime),
    )
    Table("calendar_year", m, pk("year"), col("holidays", JSON), col("workdays", JSON))
    Table(
        "diagram_version",
        m,
        pk(),
        col("process_id", String(100), index=True),
        col("sha256", String(64), unique=True),
        col("files", JSON, null=True),
        col("deployed_by", String(64)),
        col("deployed_at", DateTime),
    )
    Table("counter", m, pk("key", String(64)), col("value", Integer))
    Table(
        "case",
        m,
        pk(),
        col("number", String(32), unique=True),
        col("title", String(200)),
        col("description", Text),
        col("category", String(32), null=True),
        col("severity", String(16), null=True),
        col("household", String(100), null=True),
        col("reporter_name", String(100), null=True),
        col("reporter_phone", String(32), null=True),
        fk("town_id", "unit.id"),
        fk("village_id", "unit.id"),
        fk("district_id", "unit.id"),
        fk("grid_id", "unit.id"),
        col("owner", String(64), null=True, index=True),
        col("status", String(16), index=True),
        col("tier", String(32), null=True),
        col("due_at", DateTime, null=True),
        col("opened_at", DateTime),
        col("closed_at", DateTime, null=True),
        col("updated_at", DateTime),
        col("satisfaction", String(32), null=True),
        col("reopen_count", Integer),
        col("overdue_marked", Boolean),
        col("event_seq", Integer),
        col("event_head", String(64)),
        fk("diagram_id", "diagram_version.id"),
        col("workflow", Text, null=True),
        col("version", Integer),
        Index("ix_case_grid_opened", "grid_id", "id"),
        Index("ix_case_district", "district_id", "id"),
        Index("ix_case_village", "village_id", "id"),
    )
    Table("case_department", m, pk("case_id", fk="case.id"), pk("unit_id", fk="unit.id"))
    Table(
        "work_item",
        m,
        pk(),
        fk("case_id", "case.id"),
        col("task_id", String(36)),
        col("spec", String(100)),
        col("task", String(32)),
        col("name", String(200)),
        col("form", String(100)),
        col("role", String(32)),
        fk("unit_id", "unit.id"),
        fk("village_id", "unit.id"),
        col("assignee", String(64), null=True),
        col("excluded", String(64), null=True),
        col("claimed_by", String(64), null=True),
        col("claimed_at", DateTime, null=True),
        col("created_at", DateTime),
        col("due_at", DateTime, null=True),
        col("supervised_at", DateTime, null=True),
        col("escalated", Boolean),
        col("completed_at", DateTime, null=True),
        col("completed_by", String(64), null=True),
        col("cancelled", Boolean),
        Index("ix_work_item_inbox", "role", "unit_id", "completed_at", "due_at", "id"),
        Index("ix_work_item_assignee", "assignee", "completed_at"),
        Index("ix_work_item_case", "case_id", "completed_at"),
    )
    Table(
        "timer",
        m,
        pk(),
        fk("case_id", "case.id", index=True),
        col("due_at", DateTime, index=True),
        col("kind", String(32)),
        col("name", String(100)),
    )
    Table(
        "case_event",
        m,
        pk(),
        fk("case_id", "case.id"),
        col("seq", Integer),
        col("at", String(32)),
        col("type", String(32)),
        col("actor", String(64)),
        col("task", String(32), null=True),
        col("data", Text),
        col("diagram", String(64)),
        col("hash", String(64)),
        UniqueConstraint("case_id", "seq"),
    )
    Table(
        "login_failure",
        m,
        pk(),
        col("key", String(120)),
        col("at", DateTime),
        Index("ix_login_failure_key_at", "key", "at"),
    )
    Table(
        "notification",
        m,
        pk(),
        fk("case_id", "case.id", index=True),
        col("kind", String(32)),
        col("url", String(500)),
        col("format", String(16)),
        col("payload", JSON),
        col("created_at", DateTime),
        col("attempts", Integer),
        col("next_attempt_at", DateTime),
        col("delivered_at", DateTime, null=True),
        col("failed_at", DateTime, null=True),
        col("last_error", String(500), null=True),
        Index("ix_notification_pending", "delivered_at", "next_attempt_at"),
    )
    return m


PRE_ALEMBIC = _pre_alembic_metadata()


def _differences(engine, metadata: MetaData = Base.metadata) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts=COMPARE), metadata)


def _revision(engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _schema(engine) -> dict:
    """Everything the database says about its tables, but for alembic_version, order-free."""
    found = inspect(engine)
    tables = {}
    for name in sorted(set(found.get_table_names()) - {"alembic_version"}):
        tables[name] = {
            "columns": sorted(
                (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                for c in found.get_columns(name)
            ),
            "primary_key": found.get_pk_constraint(name)["constrained_columns"],
            "foreign_keys": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in found.get_foreign_keys(name)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in found.get_indexes(name)
            ),
            "unique": sorted(
                (u["name"] or "", tuple(u["column_names"]))
                for u in found.get_unique_constraints(name)
            ),
        }
    return tables


def test_the_migrations_make_exactly_the_models_schema(new_database, engines):
    engine = engines(new_database())
    result = upgrade_schema(engine)
    assert (result.before, result.after, result.adopted) == (None, head_revision(), False)
    assert _revision(engine) == head_revision()
    assert _differences(engine) == []


def test_the_quick_create_schema_makes_what_the_migrations_make(new_database, engines):
    """Tests build their databases with create_schema (create_all, stamped at head): it must be
    the migrations' schema, to the last index and default."""
    migrated, quick = engines(new_database()), engines(new_database())
    upgrade_schema(migrated)
    create_schema(quick)
    assert _revision(quick) == _revision(migrated) == head_revision()
    assert _schema(quick) == _schema(migrated)


def test_the_baseline_is_the_schema_gridloop_made_before_alembic(new_database, engines):
    before_alembic, baseline = engines(new_database()), engines(new_database())
    PRE_ALEMBIC.create_all(before_alembic)
    upgrade_schema(baseline, BASELINE)
    assert _revision(baseline) == BASELINE
    assert _schema(baseline) == _schema(before_alembic)
    assert _differences(baseline, PRE_ALEMBIC) == []


def _seed(engine) -> dict:
    """A town with a village and a person holding a position there: rows that must survive the
    upgrade as they are."""
    unit, person, position = (PRE_ALEMBIC.tables[n] for n in ("unit", "person", "position"))
    with engine.begin() as conn:
        for row in (
            dict(id=1, code="XDK", name="小渡口镇", level="town", parent_id=None),
            dict(id=2, code="V01", name="一村", level="village", parent_id=1),
        ):
            conn.execute(unit.insert().values(households=40, active=True, settings={}, **row))
        conn.execute(
            person.insert().values(
                id=7, username="vs1", name="赵书记", password_hash="argon2$x", active=True
            )
        )
        conn.execute(
            position.insert().values(id=3, person_id=7, role="village_secretary", unit_id=2)
        )
    return _rows(engine)


def _rows(engine) -> dict:
    unit, person, position = (PRE_ALEMBIC.tables[n] for n in ("unit", "person", "position"))
    with engine.connect() as conn:
        return {
            "unit": conn.execute(
                select(
                    unit.c.id, unit.c.code, unit.c.name, unit.c.parent_id, unit.c.households
                ).order_by(unit.c.id)
            ).all(),
            "person": conn.execute(
                select(person.c.id, person.c.username, person.c.name, person.c.password_hash)
            ).all(),
            "position": conn.execute(
                select(position.c.person_id, position.c.role, position.c.unit_id)
            ).all(),
        }


def test_init_db_upgrades_a_database_made_before_alembic_in_place(new_database, engines, gridloop):
    url = new_database()
    engine = engines(url)
    PRE_ALEMBIC.create_all(engine)
    rows = _seed(engine)
    assert "alembic_version" not in inspect(engine).get_table_names()

    first = gridloop(url, "init-db")
    assert f"upgraded in place from before Alembic to {head_revision()}" in first
    assert _revision(engine) == head_revision()
    assert _differences(engine) == []
    assert _rows(engine) == rows

    again = gridloop(url, "init-db")
    assert f"at {head_revision()}, up to date" in again
    assert _rows(engine) == rows
    assert _differences(engine) == []


def test_init_db_adds_the_tables_an_older_gridloop_did_not_have(new_database, engines, gridloop):
    url = new_database()
    engine = engines(url)
    older = MetaData()
    for table in PRE_ALEMBIC.sorted_tables:
        if table.name not in ("notification", "login_failure"):
            table.to_metadata(older)
    older.create_all(engine)
    rows = _seed(engine)

    gridloop(url, "init-db")
    assert {"notification", "login_failure"} <= set(inspect(engine).get_table_names())
    assert _differences(engine) == []
    assert _rows(engine) == rows


def test_init_db_on_an_empty_database_runs_the_migrations(new_database, engines, gridloop):
    url = new_database()
    assert f"upgraded from empty to {head_revision()}" in gridloop(url, "init-db")
    assert _differences(engines(url)) == []


@pytest.mark.sqlite_only
def test_sqlite_migrations_copy_referenced_tables_and_are_all_or_nothing(tmp_path, engines):
    """What a later revision may do on SQLite: a batch operation copies a table that others refer
    to, drops the old one and renames the copy. It runs with foreign keys off, in one
    transaction, and foreign_key_check decides whether it commits."""
    engine = engines(f"sqlite:///{tmp_path}/batch.sqlite")
    PRE_ALEMBIC.create_all(engine)
    rows = _seed(engine)

    with migration_connection(engine) as conn:
        with Operations(MigrationContext.configure(conn)).batch_alter_table(
            "person", recreate="always"
        ) as batch:
            batch.alter_column("name", type_=String(120))
    assert _rows(engine) == rows
    types = {c["name"]: str(c["type"]) for c in inspect(engine).get_columns("person")}
    assert types["name"] == "VARCHAR(120)"

    class HalfWay(Exception):
        pass

    tables = set(inspect(engine).get_table_names())
    with pytest.raises(HalfWay), migration_connection(engine) as conn:
        ops = Operations(MigrationContext.configure(conn))
        ops.create_table("scratch", Column("id", Integer, primary_key=True))
        with ops.batch_alter_table("unit") as batch:  # SQLite's own ALTER TABLE ADD COLUMN
            batch.add_column(Column("extra", Integer))
        with ops.batch_alter_table("person", recreate="always") as batch:
            batch.alter_column("name", type_=String(100))
        raise HalfWay  # a migration failing after it changed tables
    assert set(inspect(engine).get_table_names()) == tables
    assert "extra" not in {c["name"] for c in inspect(engine).get_columns("unit")}
    types = {c["name"]: str(c["type"]) for c in inspect(engine).get_columns("person")}
    assert types["name"] == "VARCHAR(120)"

    with pytest.raises(RuntimeError, match="broke foreign keys"):
        with migration_connection(engine) as conn:
            conn.exec_driver_sql("DELETE FROM person")  # position still refers to it
    assert _rows(engine) == rows
    with engine.connect() as conn:  # the pooled connection has its foreign keys back
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_the_alembic_command_line_finds_the_database_and_sees_no_drift(tmp_path, new_database):
    """`alembic -c alembic.ini upgrade head`, then `alembic check` (autogenerate finds nothing to
    do), from another working directory, on GRIDLOOP_DATABASE_URL."""
    env = dict(os.environ, GRIDLOOP_DATABASE_URL=new_database())
    for args in (["upgrade", "head"], ["check"]):
        done = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert "No new upgrade operations detected" in done.stdout + done.stderr


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.sqlite_only
def test_gridloop_creates_sqlite_files_for_its_owner_only(tmp_path, monkeypatch, gridloop):
    old_umask = os.umask(0o022)  # what would make SQLite's own files 0644
    try:
        named = tmp_path / "named.sqlite"
        gridloop(f"sqlite:///{named}", "init-db")
        assert _mode(named) == 0o600
        for extra in (named.with_name(named.name + "-wal"), named.with_name(named.name + "-shm")):
            if extra.exists():
                assert _mode(extra) == 0o600

        # The default database, instance/gridloop.sqlite (here under tmp_path).
        default = tmp_path / "instance" / "gridloop.sqlite"
        monkeypatch.setattr(storage, "DEFAULT_SQLITE", default)
        monkeypatch.setenv("GRIDLOOP_SECRET_KEY", "test")
        monkeypatch.setenv("GRIDLOOP_DATABASE_URL", "")
        runner = CliRunner()
        result = runner.invoke(main, ["init-db"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert _mode(default) == 0o600

        # A file that already exists keeps its mode.
        shared = tmp_path / "shared.sqlite"
        shared.touch(mode=0o640)
        shared.chmod(0o640)
        engine = make_engine(f"sqlite:///{shared}")
        with engine.connect():
            pass
        engine.dispose()
        assert _mode(shared) == 0o640
    finally:
        os.umask(old_umask)
