"""Database set-up and the unit of work: one transaction per step, or nothing of it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from .models import Base

# The repository's instance/ folder: the default database, the secret key and compiled catalogs.
# Absolute, so the default database is the same file whatever the working directory (and Flask-
# SQLAlchemy, which resolves a relative SQLite path against the app's instance folder, leaves it be).
INSTANCE_DIR = Path(__file__).resolve().parents[1] / "instance"
DEFAULT_SQLITE = INSTANCE_DIR / "gridloop.sqlite"
# The Alembic migrations (DESIGN §5), found from this file, never from the working directory.
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
BASELINE = "0001_baseline"  # the schema of the last Gridloop before Alembic
# PostgreSQL: one schema upgrade at a time, under this transaction-level advisory lock.
_UPGRADE_LOCK = int.from_bytes(b"gridloop")


def database_url() -> str:
    """GRIDLOOP_DATABASE_URL, or else the SQLite file instance/gridloop.sqlite of the repository
    (its folder is created if missing)."""
    url = os.environ.get("GRIDLOOP_DATABASE_URL")
    if url:
        return url
    DEFAULT_SQLITE.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_SQLITE}"


def configure_engine(engine: Engine) -> Engine:
    """SQLite: WAL with synchronous=NORMAL (each commit survives a process crash), foreign keys,
    and a busy timeout so concurrent writers wait instead of failing at once. A database file
    that does not exist yet is created readable and writable by its owner only (0600) on the
    first connection, before SQLite would create it with the umask's mode: it holds password
    hashes and residents' details. SQLite gives its -wal and -shm files the same mode."""
    if engine.dialect.name == "sqlite":
        path = _sqlite_file(engine)
        if path is not None:

            @event.listens_for(engine, "do_connect")
            def _private_file(_dialect, _record, _cargs, _cparams):
                _create_private(path)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=15000")
            cur.close()

    return engine


def make_engine(url: str | None = None, **options) -> Engine:
    url = url or database_url()
    if url.startswith("sqlite"):
        options.setdefault("connect_args", {"timeout": 15})
    return configure_engine(create_engine(url, **options))


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def _sqlite_file(engine: Engine) -> str | None:
    """The path of a SQLite engine's database file; None for an in-memory or URI database."""
    url = engine.url
    if url.query.get("uri") in ("true", "1") or url.database in (None, "", ":memory:"):
        return None
    return url.database


def _create_private(path: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:  # it exists (left as it is), or its folder is missing (SQLite will say so)
        return
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
    finally:
        os.close(fd)


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code: the repository's migrations/ and no alembic.ini,
    so it works from any working directory. With a connection, migrations/env.py runs on it."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision in migrations/ (one head: two would be an unmerged branch)."""
    head = _scripts().get_current_head()
    assert head is not None, f"no migrations in {MIGRATIONS_DIR}"
    return head


@dataclass(frozen=True)
class SchemaUpgrade:
    before: str | None  # the revision the database was at; None: no alembic_version table
    after: str
    adopted: bool  # it had Gridloop's tables but no alembic_version: made before Alembic

    def summary(self) -> str:
        if self.before == self.after:
            return f"database schema at {self.after}, up to date"
        if self.adopted:
            return f"database schema upgraded in place from before Alembic to {self.after}"
        return f"database schema upgraded from {self.before or 'empty'} to {self.after}"


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection to run migrations on, in one transaction that commits when the block ends
    well and rolls back otherwise: all of the migrations or none of them, SQLite too (its DDL is
    transactional once BEGIN is explicit). upgrade_schema and migrations/env.py use it.

    On SQLite, foreign keys are off while the migrations run, as SQLite's ALTER TABLE procedure
    asks (a batch migration copies a table, drops it and renames the copy, and dropping a table
    that others refer to would fail), and foreign_key_check must find nothing before the commit.
    BEGIN IMMEDIATE takes the write lock first, so a second upgrade waits and then finds the work
    done. On PostgreSQL, an advisory lock does the same."""
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # ignored inside a transaction
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK})
        try:
            yield conn
            if sqlite:
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"the migrations broke foreign keys: {broken[:5]}")
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


def upgrade_schema(engine: Engine, revision: str = "head") -> SchemaUpgrade:
    """Bring the database to the current schema (or to `revision`) with the Alembic migrations in
    migrations/, in-process on this engine, in one transaction (migration_connection). This is
    what `gridloop init-db` and `gridloop demo` run.

    - An empty database is migrated from nothing.
    - A database at an Alembic revision is upgraded from there; at head, nothing changes.
    - A database that an earlier Gridloop made with create_all (its tables, no alembic_version
      table) is upgraded in place, keeping its data: the baseline migration creates only the
      baseline tables that are missing, Alembic records the database at the baseline (the
      stamp), and the later migrations upgrade it from there. Columns that were added to
      existing tables before Alembic existed (an older Gridloop's create_all never added them)
      are not repaired.
    """
    with migration_connection(engine) as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        ours = set(Base.metadata.tables) & set(inspect(conn).get_table_names())
        command.upgrade(alembic_config(conn), revision)
        after = MigrationContext.configure(conn).get_current_revision()
    assert after is not None
    return SchemaUpgrade(before=before, after=after, adopted=before is None and bool(ours))


def create_schema(engine: Engine) -> None:
    """The current schema, quickly: what tests and benchmarks use for their throwaway databases.

    On an empty database, the models' tables (Base.metadata.create_all) recorded at the head
    revision, which costs about half of running the migrations (and less as they grow: each
    adds its own cost to every throwaway database); tests/test_migrations.py proves
    that the migrations make exactly the models' schema, so the two cannot drift. Any other
    database goes through upgrade_schema, like `gridloop init-db`."""
    with engine.connect() as conn:
        empty = not inspect(conn).get_table_names()
    if not empty:
        upgrade_schema(engine)
        return
    with engine.begin() as conn:
        Base.metadata.create_all(conn)
        MigrationContext.configure(conn).stamp(_scripts(), head_revision())


@contextmanager
def unit_of_work(session: Session) -> Iterator[Session]:
    """Commit everything done inside, or roll all of it back and re-raise."""
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
