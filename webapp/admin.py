"""Administrators' pages. Today: operations — is time running? (timer backlog, outbox, queues)."""

from __future__ import annotations

import os

from flask import Blueprint, render_template
from flask_babel import gettext as _
from sqlalchemy import select

from engine.backlog import backlog
from engine.errors import Forbidden
from engine.models import Notification

from .extensions import db
from .web import login_required, now, viewer

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _admin_only() -> None:
    if not viewer().is_admin:
        raise Forbidden(_("Only administrators may open this page."))


def _queues() -> list[dict] | None:
    """rq's queues when GRIDLOOP_REDIS_URL is set: waiting, running and failed jobs."""
    url = os.environ.get("GRIDLOOP_REDIS_URL")
    if not url:
        return None
    try:
        from redis import Redis
        from rq import Queue

        connection = Redis.from_url(url, socket_timeout=2)
        return [
            {
                "name": queue.name,
                "waiting": queue.count,
                "running": queue.started_job_registry.count,
                "failed": queue.failed_job_registry.count,
            }
            for queue in Queue.all(connection=connection)
        ]
    except Exception as exc:  # the page must render even when Redis is down
        return [{"name": "redis", "error": str(exc)[:200]}]


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
