"""Auditors' pages and API (DESIGN §4, §6, §8): replay a case, the daily digests, verification
runs with progress, and the log of cases auditors opened.

Auditors and administrators run replays, digests and verifications; anyone signed in may read the
digests (their hashes are meant to be published). The API routes live on the api blueprint, as
webapp/delegation.py's do.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from engine import access_log, digests
from engine.access import Viewer
from engine.clock import parse_iso
from engine.errors import Conflict, Forbidden, NotFound
from engine.models import Case, Digest, Job
from engine.replay import replay
from jobs import audit as audit_jobs
from jobs import migrate as migrate_jobs

from . import services
from .api import bp as api_bp
from .api import token_required
from .extensions import db
from .paging import decode_cursor, encode_cursor
from .web import login_required, now, powers, runtime, viewer

bp = Blueprint("audit", __name__, url_prefix="/audit")


@bp.context_processor
def _helpers() -> dict:
    """What the audit pages show in the page's language: when a digest was made (stored as ISO
    text), who made it ("system": the nightly run), how an auditor opened a case, and whether
    the viewer may open the cases the pages name (an administrator audits, and reads no case)."""
    return {
        "made_at": lambda text: parse_iso(text) if text else None,
        "maker": lambda name: _("System") if name == digests.SYSTEM else name,
        "HOW": {
            "page": _("case page"),
            "api": _("API"),
            "events": _("events"),
            "dossier": _("dossier"),
            "replay": _("replay"),
            "steps": _("step-through"),
        },
        # Also on the error page of a request that failed before sign-in was checked.
        "links_cases": current_user.is_authenticated and powers().reads_cases,
    }


PAGE = 50


def _may_audit(me: Viewer) -> None:
    if not (me.is_auditor or me.is_admin):
        raise Forbidden(_("Only auditors and administrators may do this."))


def _case(number: str) -> Case:
    """Auditors and administrators replay any case by its number."""
    case = db.session.scalars(select(Case).where(Case.number == number)).first()
    if case is None:
        raise NotFound("no such case")
    return case


def _replay(me: Viewer, number: str) -> dict:
    case = _case(number)
    access_log.record(db.session, me, case.id, "replay", now())
    return replay(db.session, db.session.get(Case, case.id), runtime().registry).as_json()


def _make_digest(me: Viewer) -> Digest:
    try:
        made = digests.make(db.session, now(), me.username)
        db.session.commit()
    except IntegrityError as exc:  # another digest was made at the same moment
        db.session.rollback()
        raise Conflict("another digest was being made; try again") from exc
    return made


def _start_verification(me: Viewer) -> int:
    root = services(current_app).jobs
    return audit_jobs.start_verification(
        root, me.username, inline=current_app.config.get("GRIDLOOP_INLINE_JOBS", False)
    )


def _digest_page(before: int | None) -> tuple[list[Digest], int | None]:
    query = select(Digest).order_by(Digest.n.desc()).limit(PAGE + 1)
    if before is not None:
        query = query.where(Digest.n < before)
    rows = list(db.session.scalars(query))
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    return rows, rows[-1].n if more else None


def _last_verification() -> Job | None:
    return db.session.scalars(
        select(Job).where(Job.kind == audit_jobs.KIND).order_by(Job.id.desc()).limit(1)
    ).first()


def _bounded(value: int | None) -> int | None:
    """A keyset position from the query string, if it is one an id can be (else the first page)."""
    return value if value is not None and 0 < value < 2**31 else None


def _job(job_id: int) -> Job:
    job = db.session.get(Job, job_id) if 0 < job_id < 2**31 else None
    if job is None:
        raise NotFound("no such job")
    return job


# ------------------------------------------------------------------ API


@api_bp.post("/cases/<number>/replay")
@token_required
def replay_api(number: str):
    _may_audit(g.viewer)
    return jsonify(_replay(g.viewer, number))


@api_bp.get("/digests")
@token_required
def digests_api():
    _may_audit(g.viewer)  # heads name every case that grew: not for every signed-in person
    # The keyset cursors every list of the API gives out and checks (webapp/paging.py).
    cursor = request.args.get("cursor")
    before = decode_cursor(cursor, int)[0] if cursor is not None else None
    rows, next_n = _digest_page(before)
    return jsonify(
        {
            "items": [digests.as_json(d) for d in rows],
            "next_cursor": encode_cursor([next_n]) if next_n else None,
        }
    )


@api_bp.get("/digests/<int:n>")
@token_required
def digest_api(n: int):
    _may_audit(g.viewer)
    digest = db.session.get(Digest, n) if 0 < n < 2**31 else None
    if digest is None:
        raise NotFound("no such digest")
    return jsonify(digests.as_json(digest, heads=True))


@api_bp.post("/digests")
@token_required
def make_digest_api():
    _may_audit(g.viewer)
    return jsonify(digests.as_json(_make_digest(g.viewer), heads=True)), 201


@api_bp.post("/verifications")
@token_required
def verify_api():
    _may_audit(g.viewer)
    job_id = _start_verification(g.viewer)
    return jsonify({"job": job_id}), 202


@api_bp.get("/jobs/<int:job_id>")
@token_required
def job_api(job_id: int):
    _may_audit(g.viewer)
    job = _job(job_id)
    if job.kind == migrate_jobs.KIND:  # a migration run: {state, done, total, results}
        return jsonify(migrate_jobs.as_json(job))
    return jsonify(audit_jobs.as_json(job))


# ------------------------------------------------------------------ pages


@bp.get("")
@login_required
def index():
    me = viewer()
    _may_audit(me)
    rows, next_n = _digest_page(_bounded(request.args.get("before", type=int)))
    return render_template(
        "audit/index.html",
        digests=rows,
        next_n=next_n,
        job=_last_verification(),
        accesses=access_log.recent(db.session, limit=20),
    )


@bp.post("/digests")
@login_required
def make_digest():
    made = _make_digest(_audit_viewer())
    flash(_("Digest %(n)s made: %(count)s case(s).", n=made.n, count=made.cases), "ok")
    return redirect(url_for("audit.index"))


@bp.post("/verifications")
@login_required
def verify():
    _start_verification(_audit_viewer())
    return redirect(url_for("audit.index") + "#verification")


@bp.get("/jobs/<int:job_id>.json")
@login_required
def job(job_id: int):
    _may_audit(viewer())
    return jsonify(audit_jobs.as_json(_job(job_id)))


@bp.get("/digests/<int:n>")
@login_required
def digest(n: int):
    _may_audit(viewer())
    row = db.session.get(Digest, n) if 0 < n < 2**31 else None
    if row is None:
        raise NotFound(_("No such digest."))
    return render_template("audit/digest.html", d=digests.as_json(row, heads=True))


@bp.get("/access")
@login_required
def access():
    _may_audit(viewer())
    before = _bounded(request.args.get("before", type=int))
    rows = access_log.recent(db.session, limit=PAGE + 1, before=before)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    return render_template(
        "audit/access.html", rows=rows, next_before=rows[-1].id if more and rows else None
    )


@bp.post("/replay")
@login_required
def replay_page():
    me = _audit_viewer()
    number = (request.form.get("number") or "").strip().upper()
    if not number:
        flash(_("Enter the number of the case to replay."), "error")
        return redirect(url_for("audit.index"))
    try:
        result = _replay(me, number)
    except NotFound:
        flash(_("No case %(number)s.", number=number), "error")
        return redirect(url_for("audit.index"))
    return render_template("audit/replay.html", number=number, r=result)


def _audit_viewer() -> Viewer:
    me = viewer()
    _may_audit(me)
    return me
