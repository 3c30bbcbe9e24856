"""The `gridloop` command as an administrator uses it: each command on a real database (a SQLite
file, or PostgreSQL in its pass)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from apps import connect
from click.testing import CliRunner
from conftest import ORG_YAML, REPO
from sqlalchemy import select

from engine.access import inbox_scope, viewer_of
from engine.clock import FixedClock
from engine.demo import load_demo
from engine.demo_org import DEMO_LOGINS
from engine.models import Case, CaseEvent, Person, WorkItem
from engine.passwords import Passwords
from engine.runtime import Runtime
from engine.specs import SpecRegistry, deploy, load_bundle
from engine.storage import create_schema, make_engine, make_sessionmaker
from webapp.cli import main


@pytest.fixture
def cli(tmp_path, monkeypatch, new_db_url):
    url = new_db_url("cli")
    monkeypatch.setenv("GRIDLOOP_DATABASE_URL", url)
    monkeypatch.setenv("GRIDLOOP_CHEAP_PASSWORDS", "1")
    runner = CliRunner()

    def run(*args: str, ok: bool = True):
        result = runner.invoke(main, list(args), catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    run("init-db")
    run.url = url
    run.tmp = tmp_path
    return run


def _org_file(tmp_path, text: str = ORG_YAML):
    path = tmp_path / "org.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_init_db_deploys_once_and_again_only_when_the_bundle_changes(cli):
    again = cli("init-db")
    assert "already live" in again.output
    assert "already live" in cli("diagrams", "deploy").output


def test_org_import_reports_the_line_of_a_bad_file_and_imports_nothing(cli):
    bad = ORG_YAML.replace("name: 一组", "nmae: 一组", 1)
    result = cli("org", "import", _org_file(cli.tmp, bad), ok=False)
    assert result.exit_code != 0
    assert "nothing was imported" in result.output
    assert "nmae" in result.output and "line " in result.output
    with connect(cli.url) as conn:
        assert conn.execute("select count(*) from person").fetchone() == (0,)

    good = cli("org", "import", _org_file(cli.tmp))
    assert "created" in good.output
    with connect(cli.url) as conn:
        assert conn.execute("select count(*) from person where active").fetchone()[0] > 10


def test_calendar_import_accepts_a_year_and_rejects_a_bad_date(cli):
    good = cli.tmp / "2027.yaml"
    good.write_text("year: 2027\nholidays: [2027-01-01]\nworkdays: []\n", encoding="utf-8")
    assert "2027: 1 holidays" in cli("calendar", "import", str(good)).output

    bad = cli.tmp / "bad.json"
    bad.write_text(json.dumps({"year": 2027, "holidays": ["2027-02-30"], "workdays": []}))
    result = cli("calendar", "import", str(bad), ok=False)
    assert result.exit_code != 0 and "holidays[0]" in result.output


def _open_case(db_url: str, at: datetime) -> str:
    engine = make_engine(db_url)
    session = make_sessionmaker(engine)()
    runtime = Runtime(FixedClock(at))
    officer = session.scalars(select(Person).where(Person.username == "off1")).one()
    case = runtime.open_case(session, viewer_of(session, officer), title="路灯", grid="V01-D1-G01")
    item = session.scalars(select(WorkItem).where(WorkItem.case_id == case.id)).one()
    runtime.complete(
        session,
        viewer_of(session, officer),
        item.id,
        {"valid": True, "category": "resident_request", "severity": "urgent"},
    )
    number = case.number
    session.close()
    engine.dispose()
    return number


def test_fire_due_as_of_escalates_once_and_audit_verify_names_a_tampered_event(cli):
    cli("org", "import", _org_file(cli.tmp))
    url = cli.url
    number = _open_case(url, datetime(2026, 11, 23, 2, 0, tzinfo=UTC))  # urgent: district, 4 h

    fired = cli("timers", "fire-due", "--as-of", "2026-11-23T15:00:00+08:00")
    assert "1 case(s)" in fired.output
    again = cli("timers", "fire-due", "--as-of", "2026-11-23T15:00:00+08:00")
    assert "0 case(s)" in again.output
    with connect(cli.url) as conn:
        types = [t for (t,) in conn.execute("select type from case_event order by seq")]
        tier = conn.execute('select tier from "case"').fetchone()[0]
    assert types.count("escalated") == 1 and tier == "village_secretary"

    assert "ok" in cli("audit", "verify", number).output
    with connect(cli.url) as conn:
        conn.execute("update case_event set actor = 'mallory' where seq = 2")
    result = cli("audit", "verify", number, ok=False)
    assert result.exit_code == 1
    assert f"{number}: BROKEN at seq 2" in result.output


def test_bad_values_missing_files_and_an_old_schema_are_refused_with_exit_1(
    cli, tmp_path, monkeypatch, new_db_url
):
    """DESIGN §8: everything refused exits 1 with the problem said: a bad or empty --as-of, a
    file that is not there, a folder that is not there to write to (a CLI sweep found exit 2,
    an empty --as-of taken as now, and tracebacks)."""
    for as_of in ("yesterday", "", "2026-12-01T08:00:00"):
        result = cli("timers", "fire-due", "--as-of", as_of, ok=False)
        assert result.exit_code == 1 and "ISO time" in result.output, as_of
    result = cli("org", "import", str(tmp_path / "missing.yaml"), ok=False)
    assert result.exit_code == 1 and "does not exist" in result.output
    cli("org", "import", _org_file(tmp_path))
    result = cli("org", "export", str(tmp_path / "no" / "such" / "org.yaml"), ok=False)
    assert result.exit_code == 1 and "cannot write" in result.output
    assert not isinstance(result.exception, OSError)
    monkeypatch.setenv("GRIDLOOP_DATABASE_URL", new_db_url("empty"))  # never initialised
    for command in (("diagrams", "list"), ("audit", "verify"), ("timers", "fire-due")):
        result = cli(*command, ok=False)
        assert result.exit_code == 1, command
        assert "run `gridloop init-db` first" in result.output, command


def test_serve_refuses_a_busy_port_with_a_clear_message(cli):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("serve", "--port", str(port), ok=False)
    assert result.exit_code != 0
    assert f"port {port}" in result.output and "already in use" in result.output


def test_serve_may_start_again_at_once_on_a_port_its_last_run_left_in_time_wait():
    """Stopping `gridloop serve` leaves the connections it closed in TIME_WAIT for a minute.
    werkzeug's server binds with SO_REUSEADDR, so it could serve again at once; the busy-port
    probe must bind the same way, or it refuses the restart while nothing listens."""
    import errno
    import socket
    import time

    from webapp.cli import port_in_use

    def server_socket() -> socket.socket:  # as werkzeug makes its listening socket
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return sock

    with server_socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()  # the server closes first, so its end of the connection waits in TIME_WAIT
        client.close()

    def plain_bind_refused() -> bool:  # the probe as it was: no SO_REUSEADDR
        with socket.socket() as plain:
            try:
                plain.bind(("127.0.0.1", port))
            except OSError as exc:
                return exc.errno == errno.EADDRINUSE
            return False

    deadline = time.monotonic() + 5
    while not plain_bind_refused():  # the client's FIN moves the server's end to TIME_WAIT
        assert time.monotonic() < deadline, "the port never showed a connection in TIME_WAIT"
        time.sleep(0.01)

    assert not port_in_use("127.0.0.1", port)  # nothing listens: serve may start
    with server_socket() as restarted:  # and the server itself can bind it
        restarted.bind(("127.0.0.1", port))
        restarted.listen()
        assert port_in_use("127.0.0.1", port)  # a live listener is still refused


def test_demo_gives_every_handler_tier_work_in_its_inbox(new_db_url):
    engine = make_engine(new_db_url("demo"))
    create_schema(engine)
    session = make_sessionmaker(engine)()
    now = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    runtime = Runtime(FixedClock(now), SpecRegistry())
    deploy(session, runtime.registry, load_bundle(REPO), "system", now)
    session.commit()

    load_demo(session, runtime, Passwords(cheap=True), cases=120)

    statuses = set(session.scalars(select(Case.status)))
    assert statuses >= {"accepting", "handling", "feedback", "reporting", "archived"}
    assert session.scalar(select(CaseEvent.id).where(CaseEvent.type == "escalated").limit(1))
    for tier, username in DEMO_LOGINS[:5]:
        person = session.scalars(select(Person).where(Person.username == username)).one()
        open_items = session.scalars(
            select(WorkItem).where(
                WorkItem.completed_at.is_(None), inbox_scope(viewer_of(session, person))
            )
        ).all()
        assert open_items, f"the demo {tier} {username} has an empty inbox"
