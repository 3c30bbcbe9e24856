"""A real PostgreSQL server for the session: Debian's postgresql, a throwaway cluster made with
initdb in a temporary folder, listening on a free 127.0.0.1 port (and a unix socket in that folder
only), started once with pg_ctl and stopped and removed at the end. `make test` installs the
package (`make services`); the packaged service is never used.

initdb refuses to run as root, so as root (CI, this machine) the cluster belongs to Debian's
`postgres` user and its programs run through `runuser -u postgres --`; as anyone else they run
as that user. The cluster trusts local connections: it listens on loopback only, for one session.

Import the fixtures into a test module: `from postgres_fixture import postgres_databases, postgres_server, postgres_url`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import pytest

SUPERUSER = "gridloop"
_databases = count(1)


@dataclass(frozen=True)
class PostgresServer:
    port: int

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def admin(self):
        """An autocommit psycopg connection to the maintenance database."""
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        )


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    if not found:
        pytest.fail("PostgreSQL is not installed: `make services` (or make test) installs it")
    return Path(found[-1]).parent


def _major(path: str) -> int:
    return int(Path(path).parts[-3])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(command: list[str], as_postgres: bool) -> subprocess.CompletedProcess:
    prefix = ["runuser", "-u", "postgres", "--"] if as_postgres else []
    return subprocess.run(
        prefix + command, capture_output=True, text=True, timeout=120, cwd="/", check=False
    )


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server of our own. A missing server fails the tests: a skip would hide the gap,
    and `make test` installs it."""
    bindir = _bindir()
    as_postgres = os.geteuid() == 0
    # Not under pytest's tmp_path: its folders are private to root, and postgres must reach it.
    workdir = Path(tempfile.mkdtemp(prefix="gridloop-pg-"))
    data, log = workdir / "data", workdir / "server.log"
    if as_postgres:
        account = pwd.getpwnam("postgres")
        os.chown(workdir, account.pw_uid, account.pw_gid)
    try:
        made = _run(
            [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust"]
            + ["--encoding=UTF8", "--locale=C", "--no-sync"],
            as_postgres,
        )
        if made.returncode != 0:
            pytest.fail(f"initdb failed:\n{made.stdout}\n{made.stderr}")
        for _ in range(3):  # the free port can be taken between the probe and the bind
            port = _free_port()
            options = (
                f"-p {port} -c listen_addresses=127.0.0.1 -k {workdir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            started = _run(
                [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options]
                + ["-w", "-t", "60", "start"],
                as_postgres,
            )
            if started.returncode == 0:
                break
        else:
            pytest.fail(f"PostgreSQL did not start:\n{log.read_text() if log.exists() else ''}")
        try:
            yield PostgresServer(port)
        finally:
            _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], as_postgres)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def postgres_databases(postgres_server):
    """Makes new empty databases on the session's server (call it for each URL); all are dropped
    at the end of the test."""
    made: list[str] = []

    def new() -> str:
        name = f"gridloop_test_{next(_databases)}"
        with postgres_server.admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return postgres_server.url(name)

    yield new
    with postgres_server.admin() as admin:
        for name in made:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_databases) -> str:
    """A new empty database on the session's server, dropped after the test."""
    return postgres_databases()
