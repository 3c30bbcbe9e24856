"""The first run on a fresh clone, as `make run` does it: `gridloop init-db`, `gridloop demo`, then
`gridloop serve --host H --port P`, with no GRIDLOOP_* variable set.

It runs on a clean copy of the repository (tracked and untracked-but-not-ignored files only: no
instance/, .venv or node_modules) with this interpreter, importing the copy's code. The default
database must be <copy>/instance/gridloop.sqlite whether the working directory is the copy or
somewhere else, and the server must answer with pages a demo user can sign in to.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.demo_org import DEMO_LOGINS, DEMO_PASSWORD

# The default database of a fresh clone is a SQLite file: the PostgreSQL pass has nothing to add.
pytestmark = pytest.mark.sqlite_only
REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
# What the console script `gridloop` runs; with PYTHONPATH set to the copy, the copy's code runs
# (the project is installed editable, pointing at the working repository).
GRIDLOOP = [sys.executable, "-c", "from webapp.cli import main; main()"]
COMMAND_TIMEOUT = 300  # seconds; the demo load takes about 30
SERVE_TIMEOUT = 60  # seconds until the server must answer


@dataclass
class FirstRun:
    copy: Path
    elsewhere: Path
    env: dict[str, str]
    init_db: subprocess.CompletedProcess
    demo: subprocess.CompletedProcess
    repo_db_before: tuple | None

    @property
    def database(self) -> Path:
        return self.copy / "instance" / "gridloop.sqlite"

    def assert_set_up(self) -> None:
        """init-db and demo, run as `make run` runs them, both succeeded."""
        for step in (self.init_db, self.demo):
            assert step.returncode == 0, f"{step.args[3:]} failed:\n{step.stdout}"
        assert DEMO_LOGINS[0][1] in self.demo.stdout  # the demo's login table

    def assert_database_in_copy(self) -> None:
        assert self.database.is_file(), sorted(p.name for p in self.copy.glob("instance/*"))
        assert not (self.copy / "instance" / "instance").exists()
        assert not (self.elsewhere / "instance").exists()
        # The working repository's database (if there is one) was not used.
        assert _stat(REPO / "instance" / "gridloop.sqlite") == self.repo_db_before
        with sqlite3.connect(self.database) as conn:  # the demo township is in it
            people = {u for (u,) in conn.execute("select username from person")}
            cases = conn.execute('select count(*) from "case"').fetchone()[0]
        assert {username for _, username in DEMO_LOGINS} <= people and cases > 0


def _stat(path: Path) -> tuple | None:
    """Enough of a file's state to tell whether anything wrote to it."""
    files = [path, path.with_name(path.name + "-wal")]
    states = [(f.stat().st_size, f.stat().st_mtime_ns) if f.exists() else None for f in files]
    return None if states == [None, None] else tuple(states)


def _clean_copy(dest: Path) -> Path:
    """The working tree's tracked and untracked-but-not-ignored files, copied to dest."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listing.split(b"\0")):
        relative = os.fsdecode(name)
        source = REPO / relative
        if not source.exists() and not source.is_symlink():
            continue  # tracked, but deleted in the working tree
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return dest


def _gridloop(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*GRIDLOOP, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> FirstRun:
    """init-db and demo, once, in a clean copy with the copy as working directory (as make run).
    Their results are checked by each test, so a broken first run fails the tests."""
    copy = _clean_copy(tmp_path_factory.mktemp("fresh") / "gridloop")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    assert not (copy / "instance").exists() and not (copy / ".venv").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLOOP_")}
    env["PYTHONPATH"] = str(copy)
    repo_db_before = _stat(REPO / "instance" / "gridloop.sqlite")
    init_db = _gridloop("init-db", cwd=copy, env=env)
    demo = _gridloop("demo", cwd=copy, env=env)
    return FirstRun(copy, elsewhere, env, init_db, demo, repo_db_before)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _opener() -> urllib.request.OpenerDirector:
    """Cookies kept, and no proxy from the environment: only 127.0.0.1 is ever contacted."""
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
    )


def _serve_and_sign_in(run: FirstRun, cwd: Path) -> None:
    """`gridloop serve` from cwd: /login answers with the sign-in page, a demo user signs in and
    the inbox at / answers. The server is stopped whatever happens."""
    port = _free_port()
    base = f"http://{HOST}:{port}"
    log_path = run.copy.parent / f"serve-{port}.log"
    with open(log_path, "w+", encoding="utf-8") as log:
        server = subprocess.Popen(
            [*GRIDLOOP, "serve", "--host", HOST, "--port", str(port)],
            cwd=cwd,
            env=run.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )

        def output() -> str:
            log.flush()
            return log_path.read_text(encoding="utf-8")

        try:
            browser = _opener()
            deadline = time.monotonic() + SERVE_TIMEOUT
            while True:
                assert server.poll() is None, f"serve exited with {server.returncode}:\n{output()}"
                try:
                    page = browser.open(f"{base}/login", timeout=5)
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    assert time.monotonic() < deadline, (
                        f"no answer in {SERVE_TIMEOUT} s:\n{output()}"
                    )
                    time.sleep(0.1)
            assert page.status == 200
            assert page.headers.get_content_type() == "text/html"
            html = page.read().decode("utf-8")
            assert "<form" in html and 'name="password"' in html
            token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
            assert token, html

            username = DEMO_LOGINS[0][1]
            form = {"csrf_token": token.group(1), "username": username}
            form["password"] = DEMO_PASSWORD
            signed_in = browser.open(
                f"{base}/login", data=urllib.parse.urlencode(form).encode(), timeout=30
            )
            assert signed_in.status == 200
            assert urllib.parse.urlsplit(signed_in.geturl()).path == "/"

            inbox = browser.open(f"{base}/", timeout=30)
            assert inbox.status == 200
            assert urllib.parse.urlsplit(inbox.geturl()).path == "/"  # not sent back to /login
            assert inbox.headers.get_content_type() == "text/html"
            assert 'action="/logout"' in inbox.read().decode("utf-8")  # signed in
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)


def test_the_copy_runs_its_own_code_and_keeps_its_database_in_its_instance_folder(first_run):
    first_run.assert_set_up()
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import engine, webapp; print(engine.__file__); print(webapp.__file__)",
        ],
        cwd=first_run.elsewhere,
        env=first_run.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for module_file in where:
        assert Path(module_file).resolve().is_relative_to(first_run.copy.resolve()), where
    first_run.assert_database_in_copy()


def test_make_run_serves_from_the_repository_directory(first_run):
    first_run.assert_set_up()
    _serve_and_sign_in(first_run, cwd=first_run.copy)
    first_run.assert_database_in_copy()


def test_every_command_finds_the_same_database_from_another_directory(first_run):
    first_run.assert_set_up()
    again = _gridloop("init-db", cwd=first_run.elsewhere, env=first_run.env)
    assert again.returncode == 0, again.stdout
    assert "already live" in again.stdout  # the copy's database, not a new one
    _serve_and_sign_in(first_run, cwd=first_run.elsewhere)
    first_run.assert_database_in_copy()
