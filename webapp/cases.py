"""Case pages: a case, the cases I accepted (我首接的案件), and opening a new case.

Routes stay thin: they scope every read with engine.access.case_scope (outside the viewer's units a
case does not exist: 404), call engine/ to change anything and reuse the JSON API's serializers for
the derived facts (holder, overdue), so a case reads the same in the API and on the page.
"""

from __future__ import annotations

import re
from datetime import datetime

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from engine import access_log
from engine.access import acting_for, case_scope, sees_reporter_phone
from engine.case_search import (
    CLOSED,
    CaseFilters,
    case_page,
    covered_unit,
    covered_units,
    search_query,
)
from engine.case_search import STATUSES as SEARCH_STATUSES
from engine.deadlines import case_deadline
from engine.errors import Forbidden, Invalid, NotFound
from engine.events import as_dict, case_events
from engine.models import Campaign, Case, CaseDepartment, Household, Person, Unit, WorkItem

from . import schemas
from .api import case_json, flatten_messages, open_items_of
from .extensions import db
from .paging import decode_cursor, encode_cursor
from .photos import photo_errors, submitted
from .web import (
    STATUS_NAMES,
    STEPS,
    TASK_NAMES,
    TIER_NAMES,
    case_list_title,
    category_label,
    language,
    login_required,
    now,
    powers,
    runtime,
    severity_label,
    viewer,
    words,
    writes,
)

bp = Blueprint("cases", __name__)
PAGE = 20

EVENT_NAMES = {
    "opened": _l("Case opened"),
    "claimed": _l("Claimed"),
    "released": _l("Released"),
    "task_completed": _l("Completed"),
    "supervised": _l("Supervised"),
    "escalated": _l("Escalated"),
    "reopened": _l("Reopened"),
    "archived": _l("Case archived"),
    "rejected": _l("Case rejected"),
    "transferred": _l("Sent to another grid"),
    "migrated": _l("Moved to another version of the process"),
    "owner_changed": _l("Handed to another officer"),
    # A campaign's grid (engine/campaigns.py): a household's visit, the leader's confirmation.
    "visited": _l("Household visited"),
    "confirmed": _l("Return confirmed"),
}
SATISFACTION_NAMES = {
    "satisfied": _l("Satisfied"),
    "basically_satisfied": _l("Basically satisfied"),
    "unsatisfied": _l("Unsatisfied"),
}
OUTCOME_NAMES = {
    "resolved": _l("Resolved"),
    "refer_up": _l("Referred up"),
}
STEP_INDEX = {"accepting": 0, "handling": 1, "feedback": 2, "reporting": 3, "archived": 5}


# ------------------------------------------------------------------ reading


def _visible(number: str) -> Case:
    """The case if it is within the viewer's units; otherwise it does not exist."""
    case = db.session.scalars(
        select(Case)
        .options(joinedload(Case.grid))
        .where(Case.number == number, case_scope(viewer()))
    ).first()
    if case is None:
        raise NotFound(_("No such case in your units."))
    return case


def display_names(usernames) -> dict[str, str]:
    """Display names of people by username (deactivated people keep theirs)."""
    wanted = {u for u in usernames if u and u != "system"}
    if not wanted:
        return {}
    rows = db.session.execute(
        select(Person.username, Person.name).where(Person.username.in_(wanted))
    )
    return dict(rows.all())


def step_strip(status: str) -> list[tuple[str, str]]:
    """(step label, css class) for the five steps of the loop, for progress strips."""
    if status == "rejected":
        return [(label, "rejected") for _key, label in STEPS]
    now_index = STEP_INDEX.get(status, 0)
    return [
        (label, "done" if i < now_index else "now" if i == now_index else "")
        for i, (_key, label) in enumerate(STEPS)
    ]


def _summary(case: Case, items: list[WorkItem]) -> dict:
    """What a list row or the case page says about where the case is now."""
    facts = case_json(case, items)
    deadline = case_deadline(items, runtime().clock.now())
    open_item = items[0] if items else None
    return {
        "case": case,
        "open_items": items,
        "holder": facts["holder"],
        "overdue": deadline.overdue,
        "due_at": deadline.due_at,
        # During accepting the case has no handling tier yet: it is with the grid's officers.
        "tier": case.tier or (open_item.role if open_item else None),
        "task": open_item.task if open_item else None,
        "steps": step_strip(case.status),
    }


def _event_time(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


def event_view(event: dict, names: dict[str, str]) -> dict:
    """One timeline row: what happened, who did it, when, and a short detail."""
    data = event["data"] or {}
    details: list[str] = []
    if event["type"] == "task_completed":
        if data.get("valid") is False:
            details.append(_("Not valid"))
        if data.get("outcome") in OUTCOME_NAMES:
            details.append(str(OUTCOME_NAMES[data["outcome"]]))
        if data.get("satisfaction") in SATISFACTION_NAMES:
            details.append(str(SATISFACTION_NAMES[data["satisfaction"]]))
        if "approved" in data:
            details.append(_("Approved") if data["approved"] else _("Returned"))
        if event["task"] == "accept" and data.get("severity"):
            details.append(severity_label(data["severity"]))
    if event["type"] in ("escalated", "task_completed") and data.get("tier") in TIER_NAMES:
        details.append(_("now at %(tier)s", tier=TIER_NAMES[data["tier"]]))
    if event["type"] == "supervised" and data.get("overdue"):
        details.append(_("past the deadline"))
    if event["type"] == "transferred" and data.get("to"):
        details.append(_("%(old)s → %(new)s", old=data.get("from") or "—", new=data["to"]))
    if event["type"] == "visited" and isinstance(data.get("household"), int):
        details.append(_("household %(number)s", number=data["household"]))
    if event["type"] == "reopened" and data.get("reopen_count"):
        details.append(_("reopened %(count)s times", count=data["reopen_count"]))
    label = str(EVENT_NAMES.get(event["type"], event["type"]))
    if event["task"] in TASK_NAMES and event["type"] in ("claimed", "released", "task_completed"):
        label = _("%(what)s: %(task)s", what=label, task=TASK_NAMES[event["task"]])
    actor = event["actor"]
    return {
        "seq": event["seq"],
        "type": event["type"],
        "label": label,
        "actor": _("System") if actor == "system" else names.get(actor, actor),
        "at": _event_time(event["at"]),
        "details": details,
        "text": data.get("note") or data.get("summary") or "",
        "photos": [p for p in data.get("photos") or [] if isinstance(p, str)],
    }


def _may_take(me, item) -> bool:
    """Whether `me` may work the item now: theirs (or a delegator's) and held by nobody else."""
    holder = acting_for(db.session, me, item)
    return holder is not None and item.claimed_by in (None, holder)


@bp.get("/cases/<number>")
@login_required
def show(number: str):
    me = viewer()
    case = _visible(number)
    access_log.record(db.session, me, case.id, "page", now())
    items = open_items_of([case.id])[case.id]
    summary = _summary(case, items)
    rows = case_events(db.session, case)
    events = [as_dict(case.number, row) for row in rows]
    names = display_names([e["actor"] for e in events] + [case.owner, summary["holder"]])
    actionable = next((i for i in items if _may_take(me, i)), None)
    reveal = sees_reporter_phone(me, case, items)
    departments = list(
        db.session.scalars(
            select(Unit.name)
            .join(CaseDepartment, CaseDepartment.unit_id == Unit.id)
            .where(CaseDepartment.case_id == case.id)
            .order_by(Unit.code)
        )
    )
    return render_template(
        "cases/show.html",
        s=summary,
        case=case,
        names=names,
        actionable=actionable,
        reveal=reveal,
        departments=departments,
        events=[event_view(e, names) for e in events],
        satisfaction=SATISFACTION_NAMES.get(case.satisfaction),
        # A hazard found on a campaign's visit links back to its campaign (DESIGN §12).
        campaign=db.session.get(Campaign, case.campaign_id) if case.campaign_id else None,
    )


# What the case lists filter by: open cases first, then the closed ones.
LIST_FILTERS = {
    "open": _l("Open"),
    "archived": _l("Archived"),
    "rejected": _l("Rejected"),
    "all": _l("All"),
}
MINE_FILTERS = {
    "open": _l("Open"),
    "feedback": _l("Waiting for my feedback"),
    "closed": _l("Closed cases"),
}


def _page_of(query, cursor: str | None) -> tuple[list[Case], str | None]:
    """One page of cases, newest first, and the cursor of the next page (None on the last)."""
    after = decode_cursor(cursor, int)[0] if cursor else None
    cases, last = case_page(db.session, query, after, PAGE)
    return cases, encode_cursor([last]) if last else None


def _chosen(filters: dict) -> str:
    value = request.args.get("show", "")
    return value if value in filters else next(iter(filters))


# ------------------------------------------------------------------ the case browser

# The search form's fields, named as GET /api/v1/cases names them (engine/case_search.py).
SEARCH_FIELDS = (
    "number",
    "unit",
    "person",
    "person_as",
    "category",
    "status",
    "from",
    "to",
    "overdue",
    "escalated",
)
ANY_STATUS = "all"  # the form's "every status"; without a status the list shows open cases
PERSON_AS_NAMES = {
    "any": _l("Owner, handler or actor"),
    "owner": _l("Owner"),
    "handler": _l("Handler"),
    "actor": _l("Took a step"),
}
SEARCH_MESSAGES = {
    "number": _l("Type the start of a case number, at most 32 characters."),
    "person": _l("Type a username or a full name, at most 100 characters."),
    "person_as": _l("Choose from the list."),
    "unit": _l("Choose from the list."),
    "category": _l("Choose a category from the list."),
    "status": _l("Choose a status from the list."),
    "from": _l("Give a day as YYYY-MM-DD."),
    "to": _l("Give a day as YYYY-MM-DD."),
    "overdue": _l("Choose from the list."),
    "escalated": _l("Give a whole number from 1 to 1000."),
}


def _search_form() -> dict[str, str]:
    """The filters as the query gives them, blanks left out; the legacy ?show= tabs choose the
    status when the form did not, and with neither the list shows open cases."""
    form = {
        name: request.args[name].strip()
        for name in SEARCH_FIELDS
        if request.args.get(name, "").strip()
    }
    if "status" not in form:
        show = _chosen(LIST_FILTERS)
        form["status"] = ANY_STATUS if show == "all" else show
    if form.get("person_as") == "any" or "person" not in form:
        form.pop("person_as", None)
    return form


def _search_filters(me, form: dict[str, str]) -> CaseFilters:
    """CaseFilters from the form, validated as the API validates its query; Invalid with one
    translated message per bad field. A unit outside the viewer's units is NotFound (404)."""
    given = {k: v for k, v in form.items() if not (k == "status" and v == ANY_STATUS)}
    try:
        args = schemas.CaseListArgs().load(given)
    except ValidationError as exc:
        raise Invalid(_("Check the filters."), _search_messages(exc.messages)) from exc
    if "category" in args and args["category"] not in words().known["category"]:
        raise Invalid(_("Check the filters."), {"category": str(SEARCH_MESSAGES["category"])})
    unit = covered_unit(db.session, me, args["unit"]) if "unit" in args else None
    return schemas.CaseListArgs.filters(args, unit)


def _search_messages(messages: dict) -> dict[str, str]:
    """marshmallow's English messages, replaced by the page's own for each field."""
    found = {}
    for field, texts in flatten_messages(messages).items():
        if field == "to" and texts == schemas.CaseListArgs.DAYS_OUT_OF_ORDER:
            found[field] = _("The last day is before the first.")
        else:
            found[field] = str(SEARCH_MESSAGES.get(field, _("Choose from the list.")))
    return found


def _unit_label(unit: Unit) -> str:
    """A unit with the units above it up to the village: 一村 · 一片 · 一组."""
    names, node = [], unit
    while node is not None and node.level != "town":
        names.append(node.name)
        node = node.parent
    return " · ".join(reversed(names))


def _search_choices(me, form: dict[str, str]) -> dict:
    """The options of the form's lists: the viewer's units, the live bundle's categories (and a
    retired one the query names), the statuses and the ways a person is linked to a case."""
    categories = [(c.value, c.label(language())) for c in words().options("category")]
    chosen = form.get("category")
    if chosen and chosen not in dict(categories) and chosen in words().known["category"]:
        categories.append((chosen, category_label(chosen)))
    statuses = [(ANY_STATUS, _("All statuses")), ("open", LIST_FILTERS["open"])]
    return {
        "units": [(u.code, _unit_label(u)) for u in covered_units(db.session, me)],
        "categories": categories,
        "statuses": statuses + [(key, STATUS_NAMES[key]) for key in SEARCH_STATUSES],
        "person_as": list(PERSON_AS_NAMES.items()),
    }


def _search_links(form: dict[str, str], next_cursor: str | None) -> dict:
    """Where the tabs and the pager lead (each keeps the other filters), and the way back to the
    list as it first opens."""
    tabs = [
        (value, label, url_for("cases.index", **{**form, "status": value}))
        for value, label in LIST_FILTERS.items()
    ]
    return {
        "tabs": tabs,
        "newest": url_for("cases.index", **form),
        "next": url_for("cases.index", **form, cursor=next_cursor) if next_cursor else None,
        "reset": url_for("cases.index"),
        "all": url_for("cases.index", **{**form, "status": ANY_STATUS}),
    }


def _narrowed(form: dict[str, str]) -> int:
    """How many filters the list is narrowed by beyond the open cases it shows at first."""
    return len(set(form) - {"status", "person_as"}) + (form["status"] != "open")


@bp.get("/cases")
@login_required
def index():
    """The case browser: every case the viewer's positions cover (all of them for auditors, the
    joint cases of a department, the cases of a leader's units), narrowed by the search form."""
    me = viewer()
    form = _search_form()
    cursor = request.args.get("cursor")
    errors: dict[str, str] = {}
    rows: list[dict] = []
    next_cursor = None
    try:
        filters = _search_filters(me, form)
    except Invalid as exc:
        errors = exc.fields or {}
    else:
        query = search_query(me, filters, now()).options(joinedload(Case.grid))
        cases, next_cursor = _page_of(query, cursor)
        items = open_items_of([c.id for c in cases])
        rows = [_summary(c, items[c.id]) for c in cases]
    page = render_template(
        "cases/index.html",
        title=case_list_title(),
        rows=rows,
        names=display_names(s["holder"] for s in rows),
        form=form,
        errors=errors,
        choices=_search_choices(me, form),
        links=_search_links(form, next_cursor),
        narrowed=_narrowed(form),
        first_page=not cursor,
        auditor=me.is_auditor,
        department=me.roles <= {"department_officer", "admin"} and not me.is_auditor,
    )
    return page, 400 if errors else 200


@bp.get("/cases/mine")
@login_required
def mine():
    me = viewer()
    show = _chosen(MINE_FILTERS)
    query = select(Case).options(joinedload(Case.grid)).where(Case.owner == me.username)
    if show == "open":
        query = query.where(Case.status.not_in(CLOSED))
    elif show == "closed":
        query = query.where(Case.status.in_(CLOSED))
    else:  # waiting for my feedback: the owner's open feedback item
        query = query.where(
            Case.id.in_(
                select(WorkItem.case_id).where(
                    WorkItem.assignee == me.username,
                    WorkItem.task == "feedback",
                    WorkItem.completed_at.is_(None),
                )
            )
        )
    cursor = request.args.get("cursor")
    cases, next_cursor = _page_of(query.where(case_scope(me)), cursor)
    accepting = []
    if not cursor and show == "open":
        accepting = list(
            db.session.scalars(
                select(Case)
                .options(joinedload(Case.grid))
                .join(WorkItem, WorkItem.case_id == Case.id)
                .where(
                    WorkItem.task == "accept",
                    WorkItem.completed_at.is_(None),
                    WorkItem.claimed_by == me.username,
                    case_scope(me),
                )
                .order_by(Case.id.desc())
                .limit(PAGE)
            )
        )
    items = open_items_of([c.id for c in cases + accepting])
    owned = [_summary(c, items[c.id]) for c in cases]
    waiting = [_summary(c, items[c.id]) for c in accepting]
    names = display_names(s["holder"] for s in owned + waiting)
    return render_template(
        "cases/mine.html",
        owned=owned,
        waiting=waiting,
        names=names,
        filters=MINE_FILTERS,
        show=show,
        first_page=not cursor,
        next_cursor=next_cursor,
        is_officer=powers().opens_cases,
    )


# ------------------------------------------------------------------ opening


def _officer_grids() -> list[Unit]:
    ids = [unit for role, unit, _level in viewer().positions if role == "info_officer"]
    if not ids:
        return []
    return list(
        db.session.scalars(select(Unit).where(Unit.id.in_(ids), Unit.active).order_by(Unit.code))
    )


def _grid_label(grid: Unit) -> str:
    district = db.session.get(Unit, grid.parent_id) if grid.parent_id else None
    village = db.session.get(Unit, district.parent_id) if district and district.parent_id else None
    return " · ".join(u.name for u in (village, district, grid) if u is not None)


def household_label(number: int, head: str | None) -> str:
    """How a household is written on a case: "12号 张三" (the head when the roll has one)."""
    return f"{number}号 {head}" if head else f"{number}号"


def _households(grids: list[Unit]) -> dict[str, list[Household]]:
    by_id = {g.id: g.code for g in grids}
    found: dict[str, list[Household]] = {g.code: [] for g in grids}
    if by_id:
        rows = db.session.scalars(
            select(Household)
            .where(Household.grid_id.in_(list(by_id)))
            .order_by(Household.grid_id, Household.number)
        )
        for row in rows:
            found[by_id[row.grid_id]].append(row)
    return found


HOUSE_NUMBER = re.compile(r"^\s*(\d{1,6})\s*号?\s*(.*?)\s*$")


def _household(text: str, households: list[Household]) -> tuple[str | None, str | None]:
    """Normalize what was typed: a number ("12", "12号") or a head's name becomes "12号 张三";
    other text (a place, say) is kept as typed. Returns (value, error)."""
    text = text.strip()
    if not text:
        return None, None
    match = HOUSE_NUMBER.match(text)
    if match:
        number, rest = int(match.group(1)), match.group(2)
        found = next((h for h in households if h.number == number), None)
        if found is None:
            return text, _("This grid has no household number %(number)s.", number=number)
        if not rest or rest == (found.head or ""):
            return household_label(found.number, found.head), None
        return text, None
    heads = [h for h in households if h.head and h.head == text]
    if len(heads) == 1:
        return household_label(heads[0].number, heads[0].head), None
    return text, None


def _field_message(field: str, value: str) -> str:
    if not value or not str(value).strip():
        return _("Required")
    return str(
        {
            "title": _l("At most 200 characters."),
            "description": _l("At most 4000 characters."),
            "household": _l("At most 100 characters."),
            "reporter.name": _l("At most 100 characters."),
            "reporter.phone": _l("Enter a phone number (digits)."),
            "category": _l("Choose a category from the list."),
            "severity": _l("Choose a severity."),
            "grid": _l("Choose one of the grids you serve."),
        }.get(field, _l("Not valid"))
    )


@bp.route("/cases/new", methods=["GET", "POST"])
@login_required
@writes
def new():
    grids = _officer_grids()
    if not grids:
        raise Forbidden(
            _("Only information officers open cases. Ask your grid's information officer.")
        )
    households = _households(grids)
    form = {
        "grid": grids[0].code,
        "title": "",
        "category": "",
        "severity": "normal",
        "household": "",
        "description": "",
        "reporter_name": "",
        "reporter_phone": "",
    }
    errors: dict[str, str] = {}
    photos = submitted(request.form) if request.method == "POST" else []
    if request.method == "POST":
        form.update({k: request.form.get(k, "").strip() for k in form})
        household, problem = _household(form["household"], households.get(form["grid"], []))
        if problem:
            errors["household"] = problem
        payload: dict = {"grid": form["grid"], "description": form["description"]}
        for key in ("title", "category", "severity"):
            if form[key]:
                payload[key] = form[key]
        if household:
            payload["household"] = household
        reporter = {k: form[f"reporter_{k}"] for k in ("name", "phone") if form[f"reporter_{k}"]}
        if reporter:
            payload["reporter"] = reporter
        if photos:
            payload["photos"] = photos
        body = None
        try:
            body = schemas.CaseIn().load(payload)
        except ValidationError as exc:
            for field in flatten_messages(exc.messages):
                value = form.get(field.replace(".", "_"), "")
                errors.setdefault(field.replace(".", "_"), _field_message(field, value))
            errors.update(photo_errors(flatten_messages(exc.messages)))
        if body is not None and not errors:
            try:
                case = runtime().open_case(db.session, viewer(), **body)
            except Invalid as exc:
                for field in exc.fields or {"grid": ""}:
                    key = field.replace(".", "_")
                    errors.setdefault(key, _field_message(field, form.get(key, "x")))
                errors.update(photo_errors(exc.fields))
            else:
                flash(_("Case registered."))
                return redirect(url_for("cases.show", number=case.number))
    status = 400 if errors else 200
    return render_template(
        "cases/new.html",
        grids=[(g, _grid_label(g)) for g in grids],
        households=households,
        household_label=household_label,
        form=form,
        errors=errors,
        photos=photos,
    ), status
