"""A real PostgreSQL server for the session: Debian's postgresql, a throwaway cluster made with
initdb in a temporary folder (in memory, under /dev/shm, where there is one), listening on a free
127.0.0.1 port (and a unix socket in that folder only), started once with pg_ctl and stopped and
removed at the end. `make test` installs the package (`make services`); the packaged service is
never used. Durability is off (fsync, synchronous_commit, full_page_writes): nothing outlives the
session.

initdb refuses to run as root, so as root (CI, this machine) the cluster belongs to Debian's
`postgres` user and its programs run through `runuser -u postgres --`; as anyone else they run
as that user. The cluster trusts local connections: it listens on loopback only, for one session.

tests/conftest.py imports the `postgres_server` fixture for every test: it starts when the pass's
backend is PostgreSQL (GRIDLOOP_TEST_DATABASE=postgresql) or when a test asks for
`postgres_databases` or `postgres_url`. A test module must not import `postgres_server` itself
(that would define a second session fixture, and a second server).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path

import pytest

SUPERUSER = "gridloop"
_databases = count(1)


class PostgresServer:
    """The session's server: URLs of its databases, and databases made and dropped on it through
    one autocommit connection to the maintenance database, kept for the session."""

    def __init__(self, port: int):
        self.port = port
        self._admin = None

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def admin(self):
        """An autocommit psycopg connection to the maintenance database."""
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        )

    def _execute(self, sql: str) -> None:
        if self._admin is None or self._admin.closed:
            self._admin = self.admin()
        self._admin.execute(sql)

    def create(self, template: str | None = None, prefix: str = "gridloop_test") -> str:
        """A new database, empty or a copy of `template` (a database of this server that nobody
        is connected to: copying one is much faster than building it again); its name."""
        name = f"{prefix}_{next(_databases)}"
        copy = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
        self._execute(f'CREATE DATABASE "{name}"{copy}')
        return name

    def drop(self, name: str) -> None:
        """Drop a database, closing whatever connections are still open to it."""
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    if not found:
        pytest.fail("PostgreSQL is not installed: `make services` (or make test) installs it")
    return Path(found[-1]).parent


def _major(path: str) -> int:
    return int(Path(path).parts[-3])


def _memory_folder() -> str | None:
    """/dev/shm when it is a writable tmpfs folder, else None (the usual temporary folder)."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(command: list[str], as_postgres: bool) -> subprocess.CompletedProcess:
    prefix = ["runuser", "-u", "postgres", "--"] if as_postgres else []
    return subprocess.run(
        prefix + command, capture_output=True, text=True, timeout=120, cwd="/", check=False
    )


class ClusterError(RuntimeError):
    """initdb or pg_ctl failed; the message holds their output."""


@contextmanager
def throwaway_cluster(settings: str = "", prefix: str = "gridloop-pg-") -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of our own, made with initdb, started on a free loopback port, stopped
    and removed afterwards. `settings` adds server options (`-c shared_buffers=1GB`); the tests
    and the benchmarks (bench/) all start theirs here."""
    bindir = _bindir()
    as_postgres = os.geteuid() == 0
    # Not under pytest's tmp_path: its folders are private to root, and postgres must reach it.
    # In memory where there is a tmpfs: CREATE DATABASE copies files, about 25 times faster there
    # than on this machine's disk (12 ms against 300), and every test makes a database or two.
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=_memory_folder()))
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
            raise ClusterError(f"initdb failed:\n{made.stdout}\n{made.stderr}")
        for _ in range(3):  # the free port can be taken between the probe and the bind
            port = _free_port()
            options = (
                f"-p {port} -c listen_addresses=127.0.0.1 -k {workdir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_wal_size=256MB -c max_connections=200 "
                # The town's zone rather than UTC: SQL that leaned on the server's zone would show.
                f"-c timezone=Asia/Shanghai {settings}"
            )
            started = _run(
                [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options]
                + ["-w", "-t", "60", "start"],
                as_postgres,
            )
            if started.returncode == 0:
                break
        else:
            raise ClusterError(
                f"PostgreSQL did not start:\n{log.read_text() if log.exists() else ''}"
            )
        server = PostgresServer(port)
        try:
            yield server
        finally:
            server.close()
            _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], as_postgres)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server of our own. A missing server fails the tests: a skip would hide the gap,
    and `make test` installs it."""
    try:
        with throwaway_cluster() as server:
            yield server
    except ClusterError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def postgres_databases(postgres_server):
    """Makes new empty databases on the session's server (call it for each URL); all are dropped
    at the end of the test."""
    made: list[str] = []

    def new() -> str:
        made.append(postgres_server.create())
        return postgres_server.url(made[-1])

    yield new
    for name in made:
        postgres_server.drop(name)


@pytest.fixture
def postgres_url(postgres_databases) -> str:
    """A new empty database on the session's server, dropped after the test."""
    return postgres_databases()
