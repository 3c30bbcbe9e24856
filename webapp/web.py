"""What the HTML blueprints share: the signed-in person, the runtime, and how times, phones and
statuses are shown. Routes stay thin: parse, call engine/, render."""

from __future__ import annotations

from datetime import datetime
from functools import wraps

from flask import current_app, g, redirect, request, url_for
from flask_babel import format_datetime, format_timedelta, get_locale, gettext, lazy_gettext
from flask_login import current_user

from engine.access import Viewer, viewer_of
from engine.runtime import Runtime

from .extensions import db

TIER_NAMES = {
    "info_officer": lazy_gettext("Information officer"),
    "grid_leader": lazy_gettext("Grid leader"),
    "district_leader": lazy_gettext("District leader"),
    "village_secretary": lazy_gettext("Village party secretary"),
    "town_leadership": lazy_gettext("Town liaison leadership"),
    "department_officer": lazy_gettext("Department officer"),
    "auditor": lazy_gettext("Auditor"),
    "admin": lazy_gettext("Administrator"),
}
STATUS_NAMES = {
    "accepting": lazy_gettext("Accepting"),
    "handling": lazy_gettext("Handling"),
    "feedback": lazy_gettext("Feedback"),
    "reporting": lazy_gettext("Reporting"),
    "archived": lazy_gettext("Archived"),
    "rejected": lazy_gettext("Rejected"),
}
TASK_NAMES = {
    "accept": lazy_gettext("Accept"),
    "handle": lazy_gettext("Handle"),
    "feedback": lazy_gettext("Feedback"),
    "report": lazy_gettext("Report"),
    "review": lazy_gettext("Review"),
}
CATEGORY_NAMES = {
    "resident_request": lazy_gettext("Resident request"),
    "dispute": lazy_gettext("Dispute"),
    "safety_hazard": lazy_gettext("Safety hazard"),
    "policy": lazy_gettext("Policy"),
    "straw_burning": lazy_gettext("Straw burning"),
    "flood_drought": lazy_gettext("Flood and drought"),
    "fireworks": lazy_gettext("Fireworks"),
}
SEVERITY_NAMES = {
    "low": lazy_gettext("Low"),
    "normal": lazy_gettext("Normal"),
    "urgent": lazy_gettext("Urgent"),
}
# The five steps of the loop, for progress strips: 受理 → 处置 → 反馈 → 上报 → 归档.
STEPS = (
    ("accepting", lazy_gettext("Accept")),
    ("handling", lazy_gettext("Handle")),
    ("feedback", lazy_gettext("Feedback")),
    ("reporting", lazy_gettext("Report")),
    ("archived", lazy_gettext("Archive")),
)


def runtime() -> Runtime:
    return current_app.extensions["gridloop"].runtime


def now() -> datetime:
    return runtime().clock.now()


def viewer() -> Viewer:
    """The signed-in person as the engine sees them, built once per request."""
    if "web_viewer" not in g:
        g.web_viewer = viewer_of(db.session, current_user.person)
    return g.web_viewer


def login_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_authenticated:
            return redirect(url_for("auth.login", next=request.full_path))
        return view(*args, **kwargs)

    return wrapper


def when(value: datetime | None) -> str:
    """An absolute time in the town's zone (Asia/Shanghai)."""
    return format_datetime(value, "yyyy-MM-dd HH:mm") if value else ""


def due_in(value: datetime | None) -> str:
    """A deadline relative to now: '3 hours left' / 'overdue by 1 day'."""
    if value is None:
        return ""
    delta = value - now()
    if delta.total_seconds() >= 0:
        return gettext("%(left)s left", left=format_timedelta(delta, threshold=1.1))
    return gettext("overdue by %(late)s", late=format_timedelta(-delta, threshold=1.1))


def masked_phone(phone: str | None, reveal: bool) -> str:
    """Residents' numbers are for the owner and auditors; others see 138****1234."""
    if not phone:
        return ""
    if reveal or len(phone) < 7:
        return phone
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


def register_filters(app) -> None:
    app.jinja_env.filters.update(when=when, due_in=due_in, masked_phone=masked_phone)
    app.jinja_env.globals.update(
        TIER_NAMES=TIER_NAMES,
        STATUS_NAMES=STATUS_NAMES,
        TASK_NAMES=TASK_NAMES,
        CATEGORY_NAMES=CATEGORY_NAMES,
        SEVERITY_NAMES=SEVERITY_NAMES,
        STEPS=STEPS,
        now=now,
        get_locale=get_locale,
    )
