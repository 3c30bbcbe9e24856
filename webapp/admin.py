"""Administrators' pages. Today: operations — is time running? (timer backlog, outbox, queues)."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template
from flask_babel import gettext as _
from sqlalchemy import select

from engine.backlog import backlog
from engine.errors import Forbidden
from engine.models import Notification
from jobs.status import queue_states

from . import services
from .extensions import db
from .web import login_required, now, viewer

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _admin_only() -> None:
    if not viewer().is_admin:
        raise Forbidden(_("Only administrators may open this page."))


def _queues() -> list[dict] | None:
    """rq's queues when GRIDLOOP_REDIS_URL is set: waiting, running and failed jobs (read through
    the app's jobs root; the page renders whatever Redis does)."""
    return queue_states(services(current_app).jobs)


@bp.get("/ops")
@login_required
def ops():
    _admin_only()
    moment = now()
    failed = db.session.scalars(
        select(Notification)
        .where(Notification.failed_at.is_not(None))
        .order_by(Notification.id.desc())
        .limit(10)
    ).all()
    return render_template(
        "admin/ops.html", state=backlog(db.session, moment), failed=failed, queues=_queues()
    )
