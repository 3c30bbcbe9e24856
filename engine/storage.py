"""Database set-up and the unit of work: one transaction per step, or nothing of it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from .models import Base

# The repository's instance/ folder: the default database, the secret key and compiled catalogs.
# Absolute, so the default database is the same file whatever the working directory (and Flask-
# SQLAlchemy, which resolves a relative SQLite path against the app's instance folder, leaves it be).
INSTANCE_DIR = Path(__file__).resolve().parents[1] / "instance"
DEFAULT_SQLITE = INSTANCE_DIR / "gridloop.sqlite"


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
    and a busy timeout so concurrent writers wait instead of failing at once."""
    if engine.dialect.name == "sqlite":

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


def create_schema(engine: Engine) -> None:
    Base.metadata.create_all(engine)


@contextmanager
def unit_of_work(session: Session) -> Iterator[Session]:
    """Commit everything done inside, or roll all of it back and re-raise."""
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
