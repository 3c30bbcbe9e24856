"""What the HTML blueprints share: the signed-in person, the runtime, and how times, phones and
statuses are shown. Routes stay thin: parse, call engine/, render."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import wraps

from flask import current_app, g, redirect, request, url_for
from flask_babel import format_datetime, format_timedelta, get_locale, gettext, lazy_gettext
from flask_login import current_user
from sqlalchemy import exists, select

from engine.access import Viewer, viewer_of
from engine.deadlines import item_overdue
from engine.errors import Forbidden
from engine.models import Case
from engine.privacy import mask_phone
from engine.runtime import Runtime
from engine.words import Vocabulary, vocabulary
from engine.workcal import missing_arrangement

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
    # A campaign's grid instance (workflows/bpmn/campaign.bpmn).
    "returning": lazy_gettext("Walking and returning"),
    "confirming": lazy_gettext("Confirming the return"),
    "confirmed": lazy_gettext("Confirmed"),
}
TASK_NAMES = {
    "accept": lazy_gettext("Accept"),
    "handle": lazy_gettext("Handle"),
    "feedback": lazy_gettext("Feedback"),
    "report": lazy_gettext("Report"),
    "review": lazy_gettext("Review"),
    "campaign_return": lazy_gettext("Walk and return"),
    "campaign_confirm": lazy_gettext("Confirm the grid's return"),
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


def words() -> Vocabulary:
    """The process's words (categories, severities) from the deployed bundles, once a request."""
    if "web_words" not in g:
        g.web_words = vocabulary(db.session, runtime().registry)
    return g.web_words


def language() -> str:
    return "zh" if get_locale().language == "zh" else "en"


def category_label(value: str | None) -> str:
    return words().label("category", value, language())


def severity_label(value: str | None) -> str:
    return words().label("severity", value, language())


def viewer() -> Viewer:
    """The signed-in person as the engine sees them, built once per request."""
    if "web_viewer" not in g:
        g.web_viewer = viewer_of(db.session, current_user.person, now())
    return g.web_viewer


@dataclass(frozen=True)
class Powers:
    """What a signed-in person's positions let them do on these pages: the menu offers only
    these, and each person lands where their work is (DESIGN §4)."""

    handles: bool  # holds a tier position, so work items reach them
    opens_cases: bool  # an information officer: opens cases, accepts them and owns them
    owns_cases: bool  # follows cases to the end (首接负责)
    reads_cases: bool  # a case list to browse: auditors, departments, leaders of units
    administers: bool
    audits: bool = False  # replays, digests, verification: auditors and administrators

    @property
    def landing(self) -> str:
        if self.handles:
            return "inbox.index"
        if self.reads_cases:
            return "cases.index"
        if self.administers:
            return "admin.ops"
        return "inbox.index"


def powers() -> Powers:
    """The signed-in person's Powers, worked out once per request."""
    if "web_powers" not in g:
        me = viewer()
        opens = "info_officer" in me.roles
        owns = opens or db.session.scalar(select(exists().where(Case.owner == me.username)))
        g.web_powers = Powers(
            handles=bool(me.tier_positions()),
            opens_cases=opens,
            owns_cases=bool(owns),
            reads_cases=me.is_auditor
            or any(role not in ("admin", "info_officer") for role in me.roles),
            administers=me.is_admin,
            audits=me.is_auditor or me.is_admin,
        )
    return g.web_powers


def menu() -> list[tuple[str, str]]:
    """(endpoint, label) of the pages this person may use, in the order the header shows them."""
    p = powers()
    links = []
    if p.handles:
        links.append(("inbox.index", gettext("My inbox")))
    if p.owns_cases:
        links.append(("cases.mine", gettext("Cases I accepted")))
    if p.opens_cases:
        links.append(("cases.new", gettext("New case")))
    if {"info_officer", "grid_leader"} & viewer().roles:  # the grid's register (住户名册)
        links.append(("households.index", gettext("Household register")))
    if p.handles or viewer().is_auditor:  # 工作任务: the campaigns their units hold
        links.append(("campaigns.index", gettext("Campaigns")))
    if p.reads_cases:
        links.append(("cases.index", case_list_title()))
    if p.reads_cases and (p.handles or p.audits):  # covers a unit (a leader) or audits
        links.append(("dashboards.index", gettext("Figures")))
        links.append(("board.index", gettext("Overdue board")))
    if p.administers:
        # The process (versions, editing, moving cases), then people and time, then operations.
        links.append(("diagrams.index", gettext("Diagrams")))
        links.append(("editor.index", gettext("Process editor")))
        links.append(("migrations.index", gettext("Migrate cases")))
        links.append(("org.index", gettext("Organisation")))
        links.append(("calendar_pages.index", gettext("Calendar")))
        links.append(("admin.ops", gettext("Operations")))
    if p.audits:
        links.append(("audit.index", gettext("Audit")))
    return links


def calendar_warning() -> int | None:
    """The year whose holiday arrangement administrators should enter now (from 1 November, when
    the chinese-calendar data stops before it), for the banner on every page; None for everyone
    who is not a signed-in administrator. Worked out once per request."""
    if "web_calendar_warning" not in g:
        g.web_calendar_warning = (
            missing_arrangement(db.session, now())
            if current_user.is_authenticated and powers().administers
            else None
        )
    return g.web_calendar_warning


def case_list_title() -> str:
    me = viewer()
    if me.is_auditor:
        return gettext("All cases")
    if me.roles <= {"department_officer", "admin"}:
        return gettext("Joint cases")
    return gettext("Cases in my units")


def login_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_authenticated:
            return redirect(url_for("auth.login", next=request.full_path))
        return view(*args, **kwargs)

    return wrapper


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def writes(view):
    """A route that changes a case or the organisation (DESIGN §4): auditors read every case and
    change none, so theirs answers 403 before anything they sent is read. Goes under the route's
    sign-in decorator (`login_required` or the API's `token_required`); GET stays open."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if request.method not in SAFE_METHODS:
            me = g.viewer if "viewer" in g else viewer()
            if me.is_auditor:
                raise Forbidden(gettext("Auditors read cases and change none."))
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
    """Residents' numbers are for the owner and auditors; others see 138****1234 (the one rule:
    engine/privacy.py)."""
    if reveal:
        return phone or ""
    return mask_phone(phone)


def register_filters(app) -> None:
    app.jinja_env.filters.update(when=when, due_in=due_in, masked_phone=masked_phone)
    # `item is overdue`: the one definition (engine.deadlines), by this request's clock.
    app.jinja_env.tests["overdue"] = lambda item: item_overdue(item, now())
    app.jinja_env.globals.update(
        TIER_NAMES=TIER_NAMES,
        STATUS_NAMES=STATUS_NAMES,
        TASK_NAMES=TASK_NAMES,
        category_label=category_label,
        severity_label=severity_label,
        words=words,
        language=language,
        STEPS=STEPS,
        menu=menu,
        calendar_warning=calendar_warning,
        now=now,
        get_locale=get_locale,
    )
