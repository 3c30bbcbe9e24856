"""Migration of running cases to another diagram version (DESIGN §8, issue 10 item 4), for
administrators: POST /api/v1/migrations and the page /admin/migrations.

A dry run answers at once, per case, whether it can move and why not; a real run is a background
job (jobs/migrate.py) that the page follows with a progress bar and the API with GET /jobs/{id}.
What can move, and the move itself, are engine/migration.py's.
"""

from __future__ import annotations

import re

from flask import Blueprint, current_app, g, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from marshmallow import Schema, ValidationError, fields, validate

from engine import migration
from engine.access import Viewer
from engine.errors import Forbidden, Invalid, NotFound
from engine.models import Job
from engine.versions import list_versions
from jobs import migrate as migrate_jobs

from . import services
from .api import bp as api_bp
from .api import parse, token_required
from .extensions import db
from .web import login_required, runtime, viewer, writes

bp = Blueprint("migrations", __name__, url_prefix="/admin/migrations")
NUMBERS = re.compile(r"[\s,，;；]+")

# What a page says for each reason a case cannot move (engine/migration.py's codes); the API
# gives the engine's English sentence.
REASONS = {
    "task_removed": _l("It is at %(element)s, which the target version does not have."),
    "task_changed": _l("It is at %(element)s, which the target version changes."),
    "history_removed": _l("It has passed %(element)s, which the target version does not have."),
    "closed": _l("A closed case cannot move."),
    "same_version": _l("It is on the target version already."),
    "not_from": _l("It is not on the chosen source version."),
    "other_process": _l("It runs another process."),
    "not_found": _l("No case has this number."),
    "subprocess": _l("It runs a subprocess, which cannot be moved."),
}


def _may_migrate(me: Viewer) -> None:
    if not me.is_admin:
        raise Forbidden(_("Only administrators may migrate cases."))


class _StrictBoolean(fields.Field):
    """true or false, and nothing a JSON reader would have to guess at ("yes", 1)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


class MigrationIn(Schema):
    to = fields.String(required=True, validate=validate.Length(min=1, max=64))
    source = fields.String(
        data_key="from", load_default=None, allow_none=True, validate=validate.Length(max=64)
    )
    cases = fields.List(
        fields.String(validate=validate.Length(min=1, max=32)),
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=migration.MAX_CASES, error="at most {max} cases"),
    )
    dry_run = _StrictBoolean(required=True)


def _selection(to: str, cases: list[str] | None, source: str | None) -> migration.Selection:
    selection, problems = migration.select_cases(db.session, to, cases, source)
    if selection is None:
        raise Invalid("the request has errors", problems)
    return selection


def _dry_run(me: Viewer, selection: migration.Selection) -> list[migration.Result]:
    return migration.run(db.session, runtime(), me.username, selection, dry_run=True)


def _start(me: Viewer, to: str, cases: list[str] | None, source: str | None) -> int:
    return migrate_jobs.start_migration(
        services(current_app).jobs,
        me.username,
        to,
        cases,
        source,
        inline=current_app.config.get("GRIDLOOP_INLINE_JOBS", False),
    )


def _job(job_id: int) -> Job:
    job = db.session.get(Job, job_id) if 0 < job_id < 2**31 else None
    if job is None or job.kind != migrate_jobs.KIND:
        raise NotFound("no such job")
    return job


# ------------------------------------------------------------------ API


@api_bp.post("/migrations")
@token_required
@writes
def migrations_api():
    _may_migrate(g.viewer)  # before the body is read
    args = parse(MigrationIn)
    selection = _selection(args["to"], args["cases"], args["source"] or None)
    if args["dry_run"]:
        results = _dry_run(g.viewer, selection)
        return jsonify({"results": [r.as_json() for r in results]})
    job_id = _start(g.viewer, args["to"], args["cases"], args["source"] or None)
    return jsonify({"job": job_id}), 202


# ------------------------------------------------------------------ the page


def _page(
    form: dict,
    errors: dict | None = None,
    results: list[migration.Result] | None = None,
    job: Job | None = None,
    status: int = 200,
):
    return (
        render_template(
            "migrations/index.html",
            versions=list_versions(db.session),
            form=form,
            errors=errors or {},
            results=results,
            movable=[r.case for r in results or [] if r.ok],
            job=job,
            job_results=migrate_jobs.as_json(job)["results"] if job is not None else [],
            reason_of=_reason,
        ),
        status,
    )


def _reason(result: dict) -> str:
    """A case's reason in the page's language (the engine's sentence when no word fits)."""
    message = REASONS.get(result.get("code") or "")
    if message is None:
        return result.get("reason") or ""
    return str(message) % {"element": result.get("element") or ""}


@bp.get("")
@login_required
def index():
    _may_migrate(viewer())
    job_id = request.args.get("job", type=int)
    job = _job(job_id) if job_id is not None else None
    return _page({"to": "", "from": "", "cases": ""}, job=job)


@bp.post("")
@login_required
@writes
def run():
    me = viewer()
    _may_migrate(me)
    form = {k: (request.form.get(k) or "").strip() for k in ("to", "from", "cases")}
    numbers = [n.upper() for n in NUMBERS.split(form["cases"]) if n] or None
    errors = {}
    if not form["to"]:
        errors["to"] = _("Choose the version to move to.")
    elif numbers is not None and len(numbers) > migration.MAX_CASES:
        errors["cases"] = _("At most %(count)s cases at a time.", count=migration.MAX_CASES)
    if not errors:
        selection, problems = migration.select_cases(
            db.session, form["to"], numbers, form["from"] or None
        )
        errors = {k: _page_problem(v) for k, v in problems.items()}
    if errors:
        return _page(form, errors, status=400)
    if request.form.get("action") == "run":
        job_id = _start(me, form["to"], numbers, form["from"] or None)
        return redirect(url_for("migrations.index", job=job_id))
    return _page(form, results=_dry_run(me, selection))


def _page_problem(problem: str) -> str:
    return {
        "no diagram version has this hash": _("No version has this hash."),
        "is the target version": _("The source is the target version."),
        "is a version of another process": _("The source is a version of another process."),
    }.get(problem, problem)


@bp.get("/jobs/<int:job_id>.json")
@login_required
def job(job_id: int):
    _may_migrate(viewer())
    return jsonify(migrate_jobs.as_json(_job(job_id)))
