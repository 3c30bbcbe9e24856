"""The `gridloop` command (DESIGN §8). Every command runs in an app context on the configured
database (GRIDLOOP_DATABASE_URL, default a SQLite file under instance/)."""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
from datetime import datetime
from pathlib import Path

import click
from sqlalchemy import select

from engine.clock import iso, parse_iso
from engine.events import verify
from engine.models import Case, Unit
from engine.specs import DiagramError, deploy, load_bundle
from engine.storage import upgrade_schema
from engine.workcal import CalendarFileError, import_calendar

from . import create_app, services
from .extensions import db


def _app():
    app = create_app()
    app.app_context().push()
    return app


@click.group(help="Gridloop: the township's grid case loop.")
def main() -> None:
    pass


@main.command("init-db", help="Create the tables and deploy the diagrams on disk once.")
def init_db() -> None:
    app = _app()
    click.echo(upgrade_schema(db.engine).summary())
    _deploy(app, quiet=False)


def _deploy(app, quiet: bool) -> None:
    svc = services(app)
    try:
        version, new = deploy(
            db.session,
            svc.runtime.registry,
            load_bundle(svc.root),
            "system",
            svc.runtime.clock.now(),
        )
    except DiagramError as exc:
        db.session.rollback()
        raise click.ClickException(
            f"diagram rejected, the live version is unchanged: {exc}"
        ) from exc
    db.session.commit()
    if not quiet:
        state = "deployed" if new else "already live"
        click.echo(f"diagram {version.sha256[:12]} {state} (version {version.id})")


@main.group(help="Diagram versions.")
def diagrams() -> None:
    pass


@diagrams.command("deploy", help="Store workflows/bpmn/ and rules/ as a new version if changed.")
def diagrams_deploy() -> None:
    _deploy(_app(), quiet=False)


@main.group(help="The organisation: units, people and positions.")
def org() -> None:
    pass


@org.command("import", help="Import an organisation YAML file (idempotent).")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--reset-passwords", is_flag=True, help="Also set passwords of existing people.")
def org_import(file: Path, reset_passwords: bool) -> None:
    from engine.org import OrgFileError, import_org

    app = _app()
    try:
        report = import_org(
            db.session,
            file.read_text(encoding="utf-8"),
            services(app).passwords,
            reset_passwords=reset_passwords,
            now=services(app).runtime.clock.now(),
        )
    except OrgFileError as exc:
        db.session.rollback()
        raise click.ClickException(f"{file}: nothing was imported.\n{exc}") from exc
    db.session.commit()
    click.echo(report.summary())


@main.command(help="Load the demo township and sample cases into an empty database.")
def demo() -> None:
    from engine.demo import load_demo

    app = _app()
    upgrade_schema(db.engine)
    _deploy(app, quiet=True)
    if db.session.scalar(select(Unit.id).limit(1)) is not None:
        click.echo("The database already has an organisation; the demo was not loaded again.")
    else:
        with click.progressbar(length=100, label="Loading the demo township") as bar:
            summary = load_demo(
                db.session, services(app).runtime, services(app).passwords, progress=bar.update
            )
        click.echo(summary)
    from engine.demo import login_table

    click.echo(login_table())


@main.command(help="Serve Gridloop with the in-process timer ticker.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    from .ticker import Ticker

    _check_port(host, port)
    app = _app()
    # With Redis, rq workers fire timers (`gridloop worker`); the server still delivers the outbox.
    ticker = Ticker(app, fire_timers=not os.environ.get("GRIDLOOP_REDIS_URL"))
    ticker.start()
    click.echo(f"Gridloop is serving on http://{host}:{port}/ (Ctrl-C stops it)")
    try:
        app.run(host=host, port=port, threaded=True, use_reloader=False, debug=False)
    finally:
        ticker.stop()


def _check_port(host: str, port: int) -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise click.ClickException(
                f"port {port} on {host} is already in use: stop what is using it, "
                f"or choose another port (PORT=5001 make run, or --port 5001)"
            ) from exc
        raise
    finally:
        probe.close()


@main.command(help="Fire timers with rq on Redis (GRIDLOOP_REDIS_URL): a scheduler and workers.")
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(0), help="rq worker processes."
)
@click.option("--scheduler-only", is_flag=True, help="Only enqueue due timers; run no worker.")
@click.option("--no-scheduler", is_flag=True, help="Only work the queue; enqueue nothing.")
@click.option("--burst", is_flag=True, help="One scheduler pass, drain the queue, then exit.")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def worker(
    workers: int, scheduler_only: bool, no_scheduler: bool, burst: bool, log_level: str
) -> None:
    from . import worker as rq_worker

    url = rq_worker.redis_url()
    if not url:
        raise click.ClickException(
            f"{rq_worker.REDIS_URL_ENV} is not set. Without Redis, the embedded ticker in "
            "`gridloop serve` fires timers once a second (and `gridloop timers fire-due` catches "
            "up); set it, e.g. redis://127.0.0.1:6379/0, to fire them with rq workers."
        )
    if no_scheduler and (scheduler_only or workers == 0):
        raise click.UsageError("nothing to run: --no-scheduler with no worker")
    from redis.exceptions import RedisError

    try:
        status = rq_worker.serve(
            _app(),
            url,
            workers=0 if scheduler_only else workers,
            scheduler=not no_scheduler,
            burst=burst,
            log_level=log_level,
            echo=click.echo,
        )
    except RedisError as exc:
        raise click.ClickException(f"Redis at {url}: {exc}") from exc
    sys.exit(status)


@main.group(help="Timers.")
def timers() -> None:
    pass


@timers.command("fire-due", help="Fire every timer due at or before TIME (default: now).")
@click.option("--as-of", "as_of", help="ISO time, e.g. 2026-12-01T08:00:00+08:00")
def fire_due(as_of: str | None) -> None:
    app = _app()
    runtime = services(app).runtime
    moment = _parse_time(as_of) if as_of else runtime.clock.now()
    total = 0
    while True:
        moved = runtime.fire_due_timers(db.session, as_of=moment)
        total += moved
        if moved == 0:
            break
    click.echo(f"fired the due timers of {total} case(s) as of {iso(moment)}")


@timers.command("status", help="Pending and overdue timers, and the lag of the oldest overdue.")
@click.option("--as-of", "as_of", help="ISO time (default: now).")
@click.option("--max-lag", type=float, help="Exit 1 when the oldest overdue timer lags more (s).")
def timers_status(as_of: str | None, max_lag: float | None) -> None:
    from engine.backlog import backlog

    from . import worker as rq_worker

    app = _app()
    moment = _parse_time(as_of) if as_of else services(app).runtime.clock.now()
    state = backlog(db.session, moment)
    db.session.rollback()
    url = rq_worker.redis_url()
    queue = None
    if url:
        from redis.exceptions import RedisError

        try:
            queue = rq_worker.queue_counts(url)
        except RedisError as exc:
            click.echo(f"queue: Redis at {url} did not answer ({exc})")
    for line in rq_worker.status_lines(state, moment, queue):
        click.echo(line)
    if max_lag is not None and state.lag_seconds > max_lag:
        sys.exit(1)


def _parse_time(text: str) -> datetime:
    try:
        return parse_iso(text)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: give an ISO time with a zone ({exc})") from exc


@main.group("calendar", help="Working-day calendar.")
def calendar_group() -> None:
    pass


@calendar_group.command("import", help="Import a year's holidays and make-up working days.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def calendar_import(file: Path) -> None:
    _app()
    try:
        data = (
            json.loads(file.read_text(encoding="utf-8"))
            if file.suffix == ".json"
            else _yaml(file.read_text(encoding="utf-8"))
        )
        row = import_calendar(db.session, data)
    except CalendarFileError as exc:
        db.session.rollback()
        raise click.ClickException(f"{file}: {exc}") from exc
    except ValueError as exc:
        raise click.ClickException(f"{file}: not a calendar file ({exc})") from exc
    db.session.commit()
    click.echo(f"{row.year}: {len(row.holidays)} holidays, {len(row.workdays)} make-up workdays")


def _yaml(text: str):
    """The calendar file's data. Anchors and aliases (a "billion laughs" file), syntax errors
    and over-deep nesting raise YamlFileError, a ValueError naming the line, before the
    `json.dumps` below could expand anything."""
    from engine.safeyaml import load_yaml

    # YAML reads unquoted dates as dates; the calendar file format wants YYYY-MM-DD text.
    return json.loads(json.dumps(load_yaml(text), default=str))


@main.group(help="Audit.")
def audit() -> None:
    pass


@audit.command("verify", help="Recompute event chains; name the first altered event.")
@click.argument("case_number", required=False)
def audit_verify(case_number: str | None) -> None:
    _app()
    query = select(Case).order_by(Case.id)
    if case_number:
        query = query.where(Case.number == case_number)
    bad = checked = 0
    for case in db.session.scalars(query):
        checked += 1
        result = verify(db.session, case)
        if not result.ok:
            bad += 1
            click.echo(f"{case.number}: BROKEN at seq {result.bad_seq} ({result.reason})")
        elif case_number:
            click.echo(f"{case.number}: ok, {result.events} events, head {result.head}")
    if case_number and checked == 0:
        raise click.ClickException(f"no case {case_number}")
    click.echo(f"{checked} case(s) checked, {bad} broken")
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
