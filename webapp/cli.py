"""The `gridloop` command (DESIGN §8), on the configured database (GRIDLOOP_DATABASE_URL, default a
SQLite file under instance/). Most commands run in an app context; the background ones (`worker`,
`timers`) are adapters over the jobs package's root and build no web app."""

from __future__ import annotations

import errno
import json
import socket
import sys
from datetime import datetime
from pathlib import Path

import click
from sqlalchemy import select

from engine import digests
from engine.clock import iso, parse_iso
from engine.digests import verify_all
from engine.models import Case, Unit
from engine.replay import replay
from engine.specs import DiagramError, deploy, live_version, load_bundle
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


# Who deployed a version: the repository's bundle (init-db, demo) or an administrator.
REPOSITORY = "system"


@main.command("init-db", help="Upgrade the schema; deploy the repository's bundle if it changed.")
def init_db() -> None:
    app = _app()
    click.echo(upgrade_schema(db.engine).summary())
    _deploy(app, services(app).root, REPOSITORY, quiet=False)


def _deploy(app, root: Path, actor: str, quiet: bool, explicit: bool = False) -> None:
    """Store the bundle under root as a new version (it is then live) if its hash is new. Unless
    asked for explicitly (`diagrams deploy`), the repository's bundle never goes live over a
    version an administrator deployed."""
    svc = services(app)
    bundle = load_bundle(root)
    if not bundle.files:
        raise click.ClickException(f"{root} holds no workflows/bpmn/ or rules/ files")
    live = live_version(db.session)
    fresh = live is None or live.sha256 != bundle.sha256
    if not explicit and fresh and live is not None and live.deployed_by != REPOSITORY:
        db.session.rollback()
        click.echo(
            f"the live diagram {live.sha256[:12]} was deployed by {live.deployed_by}; the "
            "repository's changed bundle was not deployed over it (`gridloop diagrams deploy` does)"
        )
        return
    try:
        version, new = deploy(
            db.session, svc.runtime.registry, bundle, actor, svc.runtime.clock.now()
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


@diagrams.command(
    "deploy", help="Store DIR's workflows/bpmn/ and rules/ (default: the repository's) if changed."
)
@click.argument(
    "directory",
    required=False,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
def diagrams_deploy(directory: Path | None) -> None:
    app = _app()
    root = directory.resolve() if directory else services(app).root
    _deploy(app, root, REPOSITORY if directory is None else "cli", quiet=False, explicit=True)


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
    _deploy(app, services(app).root, REPOSITORY, quiet=True)
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


@main.command(help="Serve Gridloop: one process with the in-process ticker, or N web processes.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Web processes. Above 1: gunicorn, with the ticker in its master process.",
)
def serve(host: str, port: int, workers: int) -> None:
    from jobs.ticker import Ticker

    _check_port(host, port)
    if workers > 1:
        from . import server

        server.serve(host, port, workers, echo=click.echo)
        return
    app = _app()
    # The app's background root: without Redis the ticker fires timers; with it, rq workers do
    # (`gridloop worker`) and the ticker only delivers the outbox.
    ticker = Ticker(services(app).jobs)
    ticker.start()
    click.echo(f"Gridloop is serving on http://{host}:{port}/ (Ctrl-C stops it)")
    try:
        app.run(host=host, port=port, threaded=True, use_reloader=False, debug=False)
    finally:
        ticker.stop()


def _check_port(host: str, port: int) -> None:
    if port_in_use(host, port):
        raise click.ClickException(
            f"port {port} on {host} is already in use: stop what is using it, "
            f"or choose another port (PORT=5001 make run, or --port 5001)"
        )


def port_in_use(host: str, port: int) -> bool:
    """Whether the server could not bind (host, port), asked before the app is built so that a
    busy port gets a clear message. The probe binds as werkzeug's server then does, with
    SO_REUSEADDR: a port whose last server stopped a moment ago, its connections still in
    TIME_WAIT, is free to serve on again; a socket listening on it still refuses the bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as werkzeug chooses
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return True
        raise
    finally:
        probe.close()
    return False


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
    from jobs import worker as rq_worker
    from jobs.root import REDIS_URL_ENV

    if no_scheduler and (scheduler_only or workers == 0):
        raise click.UsageError("nothing to run: --no-scheduler with no worker")
    from redis.exceptions import RedisError

    with rq_worker.worker_root() as root:
        if root.redis_url is None:
            raise click.ClickException(
                f"{REDIS_URL_ENV} is not set. Without Redis, the embedded ticker in "
                "`gridloop serve` fires timers once a second (and `gridloop timers fire-due` "
                "catches up); set it, e.g. redis://127.0.0.1:6379/0, to fire them with rq workers."
            )
        try:
            status = rq_worker.serve(
                root,
                workers=0 if scheduler_only else workers,
                scheduler=not no_scheduler,
                burst=burst,
                log_level=log_level,
                echo=click.echo,
            )
        except RedisError as exc:
            raise click.ClickException(f"Redis at {root.redis_url}: {exc}") from exc
    sys.exit(status)


@main.group(help="Timers.")
def timers() -> None:
    pass


@timers.command("fire-due", help="Fire every timer due at or before TIME (default: now).")
@click.option("--as-of", "as_of", help="ISO time, e.g. 2026-12-01T08:00:00+08:00")
def fire_due(as_of: str | None) -> None:
    from jobs.root import build_root
    from jobs.ticker import catch_up

    moment = _parse_time(as_of) if as_of else None
    with build_root() as root:
        moment = moment or root.clock.now()
        total = catch_up(root, moment)
    click.echo(f"fired the due timers of {total} case(s) as of {iso(moment)}")


@timers.command("status", help="Pending and overdue timers, and the lag of the oldest overdue.")
@click.option("--as-of", "as_of", help="ISO time (default: now).")
@click.option("--max-lag", type=float, help="Exit 1 when the oldest overdue timer lags more (s).")
def timers_status(as_of: str | None, max_lag: float | None) -> None:
    from jobs.root import build_root
    from jobs.status import timers_status as status_of

    moment = _parse_time(as_of) if as_of else None
    with build_root() as root:
        state, lines = status_of(root, moment or root.clock.now())
    for line in lines:
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


@audit.command("verify", help="Check every chain on its own and against every digest.")
@click.argument("case_number", required=False)
def audit_verify(case_number: str | None) -> None:
    _app()
    if case_number and db.session.scalar(select(Case.id).where(Case.number == case_number)) is None:
        raise click.ClickException(f"no case {case_number}")
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=total, label="verifying", file=sys.stderr)
            bar.__enter__()
        bar.update(done - bar.pos)

    try:
        report = verify_all(db.session, case_number, progress)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    for problem in report.problems:
        if problem.case == "digest":
            click.echo(f"digest {problem.seq}: BROKEN ({problem.reason})")
        else:
            click.echo(f"{problem.case}: BROKEN at seq {problem.seq} ({problem.reason})")
    if case_number and report.ok:
        click.echo(f"{case_number}: ok, {report.events} events")
    click.echo(
        f"{report.cases} case(s) checked, {len(report.problems)} broken "
        f"({report.events} events, {report.digests} digest(s))"
    )
    if not report.ok:
        sys.exit(1)


@audit.command("replay", help="Rebuild a case from its events and compare with what is stored.")
@click.argument("case_number")
def audit_replay(case_number: str) -> None:
    app = _app()
    case = db.session.scalars(select(Case).where(Case.number == case_number)).first()
    if case is None:
        raise click.ClickException(f"no case {case_number}")
    result = replay(db.session, case, services(app).runtime.registry)
    click.echo(json.dumps(result.as_json(), ensure_ascii=False))
    if not result.ok:
        sys.exit(1)


@audit.command("digest", help="Append a digest of the chains that grew since the last one.")
def audit_digest() -> None:
    app = _app()
    made = digests.make(db.session, services(app).jobs.clock.now(), REPOSITORY)
    db.session.commit()
    click.echo(f"digest {made.n}: {made.hash} ({made.cases} case(s))")


# ------------------------------------------------------------------ audit export (the dossier)


@audit.command("export", help="Write a case's dossier (DESIGN §6) as JSON, to FILE or stdout.")
@click.argument("case_number")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write here instead of stdout.",
)
def audit_export(case_number: str, out: Path | None) -> None:
    """The same dossier as GET /api/v1/cases/{number}/dossier; check it with
    tools/verify_dossier.py. Whoever runs the command holds the database: nothing is logged."""
    from .dossier import dossier_of

    _app()
    case = db.session.scalars(select(Case).where(Case.number == case_number)).first()
    if case is None:
        raise click.ClickException(f"no case {case_number}")
    text = json.dumps(dossier_of(case), ensure_ascii=False, indent=1)
    if out is None:
        click.echo(text)
        return
    out.write_text(text + "\n", encoding="utf-8")
    click.echo(f"{case.number}: dossier written to {out}", err=True)


if __name__ == "__main__":
    main()
