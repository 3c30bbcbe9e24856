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
from engine.models import Case, DiagramVersion, Unit
from engine.replay import replay
from engine.specs import DiagramError, live_version, load_bundle
from engine.storage import head_revision, upgrade_schema
from engine.workcal import CalendarFileError, enter_calendar

from . import create_app, services
from .extensions import db


def _app(schema_current: bool = True):
    """The app, its context pushed. With `schema_current`, a database whose schema is not the
    current one is refused with what to do, instead of failing on a missing table mid-command
    (init-db and demo upgrade it themselves)."""
    app = create_app()
    app.app_context().push()
    if schema_current:
        _check_schema(db.engine)
    return app


def _check_schema(engine) -> None:
    """Refuse a database whose schema is not the current one, saying what to do."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        revision = MigrationContext.configure(conn).get_current_revision()
    if revision != head_revision():
        raise click.ClickException(
            f"the database's schema is {revision or 'empty'}, not {head_revision()}: "
            "run `gridloop init-db` first"
        )


def _write(path: Path, content: bytes) -> None:
    """Write a file the command was asked for; a path that cannot be written (no such folder,
    no permission) is refused with exit 1, not a traceback."""
    try:
        path.write_bytes(content)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from exc


class _Refusals(click.Group):
    """Every refusal exits 1 (DESIGN §8: "Everything the API refuses, the CLI refuses the same
    way, with the problems listed and exit status 1"): a bad option value or a missing file too,
    which click would end with 2."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            exc.show()
            sys.exit(1)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Refusals, help="Gridloop: the township's grid case loop.")
def main() -> None:
    pass


# Who deployed a version: the repository's bundle (init-db, demo) or an administrator.
REPOSITORY = "system"


@main.command("init-db", help="Upgrade the schema; deploy the repository's bundle if it changed.")
def init_db() -> None:
    app = _app(schema_current=False)
    click.echo(upgrade_schema(db.engine).summary())
    _deploy(app, services(app).root, REPOSITORY, quiet=False)


def _deploy(
    app,
    root: Path,
    actor: str,
    quiet: bool,
    explicit: bool = False,
    comment: str = "",
    activate: bool = True,
) -> None:
    """Store the bundle under root as a new version if its hash is new, validated exactly as
    POST /diagrams validates it (engine.versions.deploy_bundle, which also records the
    administration log), and make it live if `activate`. Unless asked for explicitly (`diagrams
    deploy`), the repository's bundle is stored only when its hash is new, and made live only
    over an earlier repository bundle, never over a version an administrator deployed (DESIGN
    §8). A refused bundle prints every problem and exits 1, the live version unchanged."""
    from engine.versions import deploy_bundle, is_live

    svc = services(app)
    try:
        bundle = load_bundle(root)
    except UnicodeDecodeError:
        click.echo("diagram rejected, the live version is unchanged:", err=True)
        for path in _not_utf8(root):
            click.echo(f"  {path}: not UTF-8 text", err=True)
        sys.exit(1)
    if not bundle.files:
        raise click.ClickException(f"{root} holds no workflows/bpmn/ or rules/ files")
    live = live_version(db.session)
    held = None  # the administrator's live version the repository's bundle stays behind
    if not explicit:
        stored = db.session.scalar(
            select(DiagramVersion).where(DiagramVersion.sha256 == bundle.sha256)
        )
        if live is not None and live.sha256 != bundle.sha256 and live.deployed_by != REPOSITORY:
            held, activate = live, False
        if stored is not None and live is not None:
            # Not new: stays as it is (an administrator may have rolled back from it).
            if held is not None:
                click.echo(_held_back(held, stored))
            elif not quiet:
                state = "already live" if live.id == stored.id else "already stored, not live"
                click.echo(f"diagram {stored.sha256[:12]} {state} (version {stored.id})")
            db.session.rollback()
            return
    try:
        version, new = deploy_bundle(
            db.session,
            svc.runtime.registry,
            bundle,
            actor,
            svc.runtime.clock.now(),
            comment,
            activate,
        )
    except DiagramError as exc:
        db.session.rollback()
        problems = getattr(exc, "problems", None) or [exc]
        click.echo("diagram rejected, the live version is unchanged:", err=True)
        for problem in problems:
            click.echo(f"  {_problem_line(problem)}", err=True)
        sys.exit(1)
    db.session.commit()
    if held is not None:
        click.echo(_held_back(held, version))
    elif not quiet:
        if new:
            state = "deployed" if activate else "deployed, not live (--no-activate)"
        elif is_live(db.session, version):
            state = "already live" if version.sha256 == (live and live.sha256) else "made live"
        else:
            state = "already stored, not live"
        click.echo(f"diagram {version.sha256[:12]} {state} (version {version.id})")


def _not_utf8(root: Path) -> list[str]:
    """The bundle files under root (as load_bundle finds them) that are not UTF-8 text."""
    from engine.specs import BUNDLE_DIRS, BUNDLE_SUFFIXES

    bad = []
    for folder in BUNDLE_DIRS:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and path.suffix in BUNDLE_SUFFIXES:
                try:
                    path.read_bytes().decode("utf-8")
                except UnicodeDecodeError:
                    bad.append(path.relative_to(root).as_posix())
    return bad


def _held_back(live, version) -> str:
    return (
        f"the live diagram {live.sha256[:12]} was deployed by {live.deployed_by}; the "
        f"repository's changed bundle is stored as {version.sha256[:12]} (version {version.id}) "
        "but was not deployed over it (`gridloop diagrams deploy` makes it live)"
    )


def _problem_line(problem) -> str:
    """`file, element 'id': message` for a validation Problem or a DiagramError."""
    where = ", ".join(
        part
        for part in (
            getattr(problem, "file", None) or "",
            f"element '{problem.element}'" if getattr(problem, "element", None) else "",
        )
        if part
    )
    message = getattr(problem, "message", None) or str(problem)
    return f"{where}: {message}" if where else message


@main.group(help="Diagram versions.")
def diagrams() -> None:
    pass


@diagrams.command(
    "deploy",
    help="Validate DIR's workflows/bpmn/ and rules/ (default: the repository's) and store them "
    "as a new version if changed; it is made live unless --no-activate.",
)
@click.argument(
    "directory",
    required=False,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option("--comment", default="", help="Why: shown in the version list and the log.")
@click.option("--no-activate", is_flag=True, help="Store the version without making it live.")
def diagrams_deploy(directory: Path | None, comment: str, no_activate: bool) -> None:
    app = _app()
    root = directory.resolve() if directory else services(app).root
    _deploy(
        app,
        root,
        REPOSITORY if directory is None else "cli",
        quiet=False,
        explicit=True,
        comment=comment,
        activate=not no_activate,
    )


@diagrams.command("list", help="Every version, newest first: live, cases running and in all.")
def diagrams_list() -> None:
    from engine.versions import list_versions

    _app()
    infos = list_versions(db.session)
    if not infos:
        click.echo("no diagram is deployed; run `gridloop init-db`")
        return
    for info in infos:
        v = info.version
        line = (
            # The whole hash: `cases migrate --to HASH` and the API take it as it is.
            f"{'*' if info.live else ' '} {v.sha256}  {iso(v.deployed_at)}  {v.deployed_by}"
            f"  open {info.cases_open} / total {info.cases_total}"
            f"  {'live' if info.live else 'never live' if v.activated_at is None else 'stored'}"
        )
        if v.comment:
            line += f"  {v.comment}"
        click.echo(line)


@main.group(help="The organisation: units, people and positions.")
def org() -> None:
    pass


@org.command("import", help="Import an organisation file, .yaml or .xlsx (idempotent).")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--reset-passwords", is_flag=True, help="Also set passwords of existing people.")
def org_import(file: Path, reset_passwords: bool) -> None:
    from engine.org import OrgFileError
    from engine.org_xlsx import format_of, import_file

    fmt = format_of(file.name) or "yaml"  # a file without a known suffix is read as YAML
    app = _app()
    try:
        imported = import_file(
            db.session,
            file.read_bytes(),
            fmt,
            services(app).passwords,
            actor="cli",
            now=services(app).runtime.clock.now(),
            reset_passwords=reset_passwords,
        )
    except OrgFileError as exc:
        db.session.rollback()
        raise click.ClickException(f"{file}: nothing was imported.\n{exc}") from exc
    db.session.commit()
    click.echo(imported.report.summary())


@main.command(help="Load the demo township and sample cases into an empty database.")
def demo() -> None:
    from engine.demo import load_demo

    app = _app(schema_current=False)
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
        _check_schema(root.engine)
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

    moment = _parse_time(as_of) if as_of is not None else None
    with build_root() as root:
        _check_schema(root.engine)
        moment = moment or root.clock.now()
        total = catch_up(root, moment)
    click.echo(f"fired the due timers of {total} case(s) as of {iso(moment)}")


@timers.command("status", help="Pending and overdue timers, and the lag of the oldest overdue.")
@click.option("--as-of", "as_of", help="ISO time (default: now).")
@click.option("--max-lag", type=float, help="Exit 1 when the oldest overdue timer lags more (s).")
def timers_status(as_of: str | None, max_lag: float | None) -> None:
    from jobs.root import build_root
    from jobs.status import timers_status as status_of

    moment = _parse_time(as_of) if as_of is not None else None
    with build_root() as root:
        _check_schema(root.engine)
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
    app = _app()
    try:
        data = (
            json.loads(file.read_text(encoding="utf-8"))
            if file.suffix == ".json"
            else _yaml(file.read_text(encoding="utf-8"))
        )
        # On the administration log like an entry on the calendar page, by "cli".
        row = enter_calendar(db.session, data, services(app).runtime.clock.now(), "cli")
    except CalendarFileError as exc:
        db.session.rollback()
        raise click.ClickException(f"{file}: {exc}") from exc
    except ValueError as exc:
        raise click.ClickException(f"{file}: not a calendar file ({exc})") from exc
    except RecursionError as exc:  # JSON arrays inside arrays past Python's limit
        raise click.ClickException(f"{file}: not a calendar file (nested too deeply)") from exc
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
    _write(out, (text + "\n").encode("utf-8"))
    click.echo(f"{case.number}: dossier written to {out}", err=True)


# ------------------------------------------------------------------ migration of running cases


def _command_group(name: str, help_text: str) -> click.Group:
    """The `gridloop NAME` group, shared with any other feature that adds commands to it."""
    found = main.commands.get(name)
    if isinstance(found, click.Group):
        return found
    group = click.Group(name, help=help_text)
    main.add_command(group)
    return group


@_command_group("cases", "Cases.").command(
    "migrate",
    help="Move running cases (CASE..., or every open case on --from, or on any other version) "
    "to the diagram version --to. Exit status 1 if a case cannot move.",
)
@click.option("--to", "to", required=True, help="The hash of the version to move to.")
@click.option("--from", "source", help="Only cases on this version.")
@click.option("--dry-run", is_flag=True, help="Only say which cases can move; change nothing.")
@click.argument("numbers", nargs=-1)
def cases_migrate(to: str, source: str | None, dry_run: bool, numbers: tuple[str, ...]) -> None:
    from engine import migration
    from jobs.migrate import start_migration

    app = _app()
    chosen = [n.upper() for n in numbers] or None
    selection, problems = migration.select_cases(db.session, to, chosen, source)
    if selection is None:
        db.session.rollback()
        raise click.ClickException(
            "nothing was migrated:\n" + "\n".join(f"  {k}: {v}" for k, v in problems.items())
        )
    svc = services(app)
    if dry_run:
        results = [
            r.as_json()
            for r in migration.run(db.session, svc.runtime, "cli", selection, dry_run=True)
        ]
    else:
        db.session.commit()  # the run goes through the jobs root's sessions
        job_id = start_migration(svc.jobs, "cli", to, chosen, source, inline=True)
        results = _finished_migration(svc.jobs, job_id)
    for r in results:
        state = "ok" if r["ok"] else f"cannot move: {r['reason']}"
        click.echo(f"{r['case']}: {state}")
    moved = sum(1 for r in results if r["ok"])
    if dry_run:
        click.echo(f"dry run: {moved} of {len(results)} case(s) can move; nothing changed")
    else:
        click.echo(f"{moved} moved, {len(results) - moved} refused")
    if moved < len(results):
        sys.exit(1)


def _finished_migration(root, job_id: int) -> list[dict]:
    """The results of a migration job that ran here (inline)."""
    from engine.models import Job
    from jobs.migrate import as_json

    with root.session() as session:
        job = session.get(Job, job_id)
        if job.state != "done":
            raise click.ClickException(f"the migration failed: {(job.result or {}).get('error')}")
        return as_json(job)["results"]


# ------------------------------------------------------------------ the organisation file: export


@org.command("export", help="Write the organisation to FILE, as .yaml or .xlsx by its name.")
@click.argument("file", type=click.Path(dir_okay=False, writable=True, path_type=Path))
def org_export(file: Path) -> None:
    """The same file as the organisation page's download: importing it changes nothing."""
    from engine.errors import NotFound
    from engine.org_xlsx import export_file, format_of

    fmt = format_of(file.name)
    if fmt is None:
        raise click.ClickException(f"{file}: the name must end in .yaml, .yml or .xlsx")
    from engine import admin_log

    app = _app()
    try:
        content = export_file(db.session, fmt)
    except NotFound as exc:
        raise click.ClickException(exc.message) from exc
    _write(file, content)
    # The file holds residents' phones: who took a copy is on the record.
    now = services(app).runtime.clock.now()
    admin_log.record(db.session, now, "cli", "org_exported", {"format": fmt})
    db.session.commit()
    click.echo(f"organisation written to {file}")


if __name__ == "__main__":
    main()
