"""One way to make a test database and one way to build a test app on it.

The database backend is GRIDLOOP_TEST_DATABASE: `sqlite` (the default) or `postgresql`; `make
test` runs the suite once with each. On SQLite a database is a file where the test says; on
PostgreSQL it is a new database in the session's throwaway cluster (tests/postgres_fixture.py),
and the file name the test gave is not used. Either way a database can start as a copy of a
template database (a file copy, or CREATE DATABASE ... TEMPLATE), which is faster than building
it again. tests/conftest.py starts the cluster for the session and hands it to `use_databases`.

A test app is such a database with the repository's bundle deployed and an organisation imported.
The web, API and browser tests differ only in their organisation file.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask
from sqlalchemy import select, update

from engine.clock import Clock
from engine.models import Person
from engine.org import import_org
from engine.passwords import Passwords
from engine.specs import Bundle, deploy, load_bundle
from engine.storage import create_schema
from webapp import create_app, services
from webapp.extensions import db

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("sqlite", "postgresql")
BACKEND = os.environ.get("GRIDLOOP_TEST_DATABASE") or "sqlite"
if BACKEND not in BACKENDS:
    raise RuntimeError(f"GRIDLOOP_TEST_DATABASE={BACKEND!r}: it is one of {', '.join(BACKENDS)}")


class Databases:
    """Makes and drops the tests' databases on the chosen backend. `server` is the session's
    PostgreSQL server (a postgres_fixture.PostgresServer) when the backend is postgresql."""

    def __init__(self, server=None):
        self.server = server

    def new(self, path: Path, template: str | None = None) -> str:
        """The URL of a new database: empty, or a copy of the database at the URL `template`
        (made by this method; nothing may be connected to it while it is copied)."""
        if self.server is None:
            if template is not None:
                shutil.copyfile(template.removeprefix("sqlite:///"), path)
            return f"sqlite:///{path}"
        name = self.server.create(template and template.rsplit("/", 1)[1])
        return self.server.url(name)

    def drop(self, url: str) -> None:
        """Drop a database made by `new` (a SQLite file goes with the test's tmp_path)."""
        if self.server is not None:
            self.server.drop(url.rsplit("/", 1)[1])


class _QmarkConnection:
    """A psycopg connection that takes sqlite3's `?` parameters."""

    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql: str, params=()):
        return self.conn.execute(sql.replace("?", "%s") if params else sql, params or None)


@contextmanager
def connect(url: str) -> Iterator:
    """A plain DB-API connection to a test database, what sqlite3.connect is to a SQLite file, on
    either backend: execute(sql, params) with `?` parameters, committed when the block ends well
    and closed after it."""
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)) as conn:
            with conn:
                yield conn
        return
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        yield _QmarkConnection(conn)


_databases: Databases | None = None


def use_databases(databases: Databases | None) -> None:
    global _databases
    _databases = databases


def databases() -> Databases:
    assert _databases is not None, "tests/conftest.py sets the databases up for the session"
    return _databases


def build_app(
    database: Path,
    org_yaml: str,
    clock: Clock | None = None,
    *,
    csrf: bool = False,
    bundle: Bundle | None = None,
    deployed: bool = True,
) -> Flask:
    """A new app on a new database (see Databases.new: on PostgreSQL `database` is only a name);
    dispose_app drops the database."""
    config = {
        "SQLALCHEMY_DATABASE_URI": databases().new(database),
        "GRIDLOOP_CHEAP_PASSWORDS": True,
        "TESTING": True,
        "WTF_CSRF_ENABLED": csrf,
    }
    app = create_app(config, clock=clock)
    with app.app_context():
        create_schema(db.engine)
        if deployed:
            now = clock.now() if clock else datetime.now(UTC)
            runtime = services(app).runtime
            deploy(db.session, runtime.registry, bundle or load_bundle(REPO), "system", now)
            db.session.commit()
        import_test_org(db.session, org_yaml, Passwords(cheap=True))
        db.session.commit()
        db.session.remove()
    return app


def import_test_org(session, text: str, passwords: Passwords, **options):
    """Import a test organisation whose people have already chosen their passwords: signing in
    as them ("pw") reaches their pages, instead of the change page that people still holding the
    file's initial password are sent to (tests/test_initial_password.py tests that, importing with
    engine.org.import_org itself). The org fixtures use it: build_app and conftest's template_db."""
    report = import_org(session, text, passwords, **options)
    session.execute(update(Person).values(password_initial=False))
    return report


def dispose_app(app: Flask) -> None:
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    databases().drop(app.config["SQLALCHEMY_DATABASE_URI"])


def bearer(client, username: str, password: str = "pw") -> dict[str, str]:
    """Headers with a fresh API token for `username` (POST /api/v1/tokens must answer 201)."""
    response = client.post("/api/v1/tokens", json={"username": username, "password": password})
    assert response.status_code == 201, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['token']}"}


def web_client(app: Flask, username: str, lang: str | None = None):
    """A test client signed in as `username` (password "pw"), in `lang` if given."""
    client = app.test_client()
    response = client.post("/login", data={"username": username, "password": "pw"})
    assert response.status_code == 302, response.get_data(as_text=True)
    if lang:
        client.set_cookie("lang", lang)
    return client


def case_accesses(app: Flask) -> list[tuple[str, str]]:
    """The access log (engine/access_log.py) as (username, how), oldest first."""
    from engine.models import CaseAccess

    with app.app_context():
        rows = db.session.execute(
            select(CaseAccess.username, CaseAccess.how).order_by(CaseAccess.id)
        ).all()
        db.session.remove()
    return [tuple(row) for row in rows]
