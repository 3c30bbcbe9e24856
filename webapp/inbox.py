"""Handlers' inbox (我的待办) and task pages: list the open work items of every position the
signed-in person holds, claim and release them, and complete one with its task's form.

The forms are drawn from the task's JSON Schema in the case's pinned diagram version, so a new
version's fields and options appear without a code change. Chinese labels come from the schema
(title, x-enumTitles); other languages use the catalog's names for known fields and values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import aliased, joinedload
from werkzeug.datastructures import MultiDict

from engine import access_log
from engine.access import acting_for, can_see_case, case_scope, sees_reporter_phone, unit_by_code
from engine.deadlines import case_deadline, item_overdue
from engine.errors import Conflict, Forbidden, Invalid, NotFound
from engine.events import as_dict, case_events
from engine.inbox import inbox_page, watch_items
from engine.models import Campaign, Case, Unit, WorkItem
from engine.specs import CAMPAIGN_PROCESS_ID
from engine.words import choices_of

from .api import PREFILLED, open_items_of
from .auth import safe_next
from .cases import display_names, event_view, step_strip
from .extensions import db
from .paging import MAX_ID, decode_inbox_key, encode_inbox_key
from .photos import photo_message
from .web import (
    TIER_NAMES,
    language,
    login_required,
    now,
    powers,
    runtime,
    viewer,
    when,
    words,
    writes,
)

bp = Blueprint("inbox", __name__)
PAGE_SIZE = 20

# English names of form fields and values; Chinese pages use the schema's own words.
FIELD_LABELS = {
    "valid": _l("Is it valid?"),
    "category": _l("Category"),
    "severity": _l("Severity"),
    "note": _l("Note"),
    "outcome": _l("Outcome"),
    "satisfaction": _l("Resident satisfaction"),
    "summary": _l("Summary"),
    "approved": _l("Review decision"),
    "departments": _l("Joint departments"),
    "photos": _l("Photos"),
}
BOOL_NAMES = {
    "valid": (_l("Valid"), _l("Invalid (reject the case)")),
    "approved": (_l("Approve"), _l("Return for rework")),
}
YES_NO = (_l("Yes"), _l("No"))
RADIO_MAX = 3  # enums with this many options or fewer are radio buttons, longer ones a select


# ------------------------------------------------------------------ the inbox


@bp.get("/")
@login_required
def index():
    landing = powers().landing
    if landing != "inbox.index":
        return redirect(url_for(landing))  # no work items ever reach them: their own start page
    me = viewer()
    categories = category_options()
    category = request.args.get("category", "")
    if category not in dict(categories):
        category = ""
    overdue = request.args.get("overdue") == "1"
    cursor = request.args.get("cursor") or None
    moment = now()

    after = _read_cursor(cursor) if cursor else None
    items, key = inbox_page(
        db.session,
        me,
        moment,
        overdue=True if overdue else None,
        category=category or None,
        after=after,
        limit=PAGE_SIZE,
    )
    next_cursor = encode_inbox_key(key)

    groups: dict[tuple[str, int], dict] = {}  # in order of each group's most urgent item
    for item in items:
        group = groups.setdefault(
            (item.role, item.unit_id), {"role": item.role, "unit": item.unit, "items": []}
        )
        group["items"].append(item)
    filters = {"category": category or None, "overdue": "1" if overdue else None}
    watched = [] if cursor else watch_items(db.session, me)
    # 代理: whom each item is worked for, when it is through a delegation (asked once a page).
    behalf = {}
    if me.covers:
        for item in items:
            holder = acting_for(db.session, me, item)
            if holder not in (None, me.username):
                behalf[item.id] = holder
    return render_template(
        "inbox/index.html",
        groups=list(groups.values()),
        watched=watched,
        behalf=behalf,
        names=display_names({i.claimed_by for i in items + watched} | set(behalf.values())),
        categories=categories,
        category=category,
        overdue=overdue,
        filtered=bool(category or overdue),
        later_page=bool(cursor),
        next_url=url_for("inbox.index", cursor=next_cursor, **filters) if next_cursor else None,
        first_url=url_for("inbox.index", **filters),
        moment=moment,
        officer=powers().opens_cases,
        handles=powers().handles,
    )


def _read_cursor(text: str) -> tuple[datetime, int]:
    """A cursor this page gave out, else a plain 400 page."""
    try:
        return decode_inbox_key(text)
    except Invalid:
        abort(400)


def category_options() -> list[tuple[str, str]]:
    """The categories of the live diagram version, labelled for this language."""
    return [(c.value, c.label(language())) for c in words().options("category")]


@bp.post("/work-items/<int:item_id>/claim")
@login_required
@writes
def claim(item_id: int):
    item = _engine(item_id, lambda: runtime().claim(db.session, viewer(), item_id))
    flash(_("You claimed the task of %(number)s.", number=item.case.number))
    return redirect(safe_next(request.form.get("next")))


@bp.post("/work-items/<int:item_id>/release")
@login_required
@writes
def release(item_id: int):
    item = _engine(item_id, lambda: runtime().release(db.session, viewer(), item_id))
    flash(
        _("You released the task of %(number)s; others can claim it now.", number=item.case.number)
    )
    return redirect(safe_next(request.form.get("next")))


# ------------------------------------------------------------------ the task page


@dataclass
class FormField:
    """One input of a task's form, as the template draws it."""

    name: str
    label: str
    widget: str  # radio, select, checkboxes, textarea, text
    required: bool = False
    options: list[tuple[str, str]] = field(default_factory=list)
    value: str | list[str] = ""
    hint: str = ""
    max_length: int | None = None
    error: str = ""


@bp.route("/tasks/<int:item_id>", methods=["GET", "POST"])
@login_required
@writes
def task(item_id: int):
    item = _visible_item(item_id)
    if item.completed_at is not None:
        raise _conflict(item_id)
    schema = runtime().registry.get(item.case.diagram, item.case.process).forms[item.form]
    if request.method == "GET":
        # The task page shows the whole case: an auditor's opening is logged, as on the case page.
        access_log.record(db.session, viewer(), item.case_id, "page", now())
        item = _visible_item(item_id)  # the log's commit expired it
        return _task_page(item, schema, _initial_values(item, schema))
    number, campaign_id = item.case.number, item.case.campaign_id
    campaign_item = item.case.process == CAMPAIGN_PROCESS_ID
    try:
        _engine(
            item_id,
            lambda: runtime().complete(
                db.session, viewer(), item_id, form_data(schema, request.form)
            ),
        )
    except Invalid as exc:
        values = _submitted_values(schema, request.form)
        return _task_page(item, schema, values, exc.fields or {}), 400
    flash(_("Submitted."))
    if campaign_item:  # a grid's return or confirmation: back to its campaign
        return redirect(url_for("campaigns.show", campaign_id=campaign_id))
    return redirect(url_for("cases.show", number=number))


@bp.post("/tasks/<int:item_id>/transfer")
@login_required
@writes
def transfer(item_id: int):
    """转办: send the case to the grid it belongs to. The sender usually cannot see it afterwards,
    so they land back in their inbox."""
    item = _visible_item(item_id)
    if item.completed_at is not None:
        raise _conflict(item_id)
    number = item.case.number
    to = request.form.get("to") or None
    note = (request.form.get("note") or "").strip() or None
    try:
        _engine(item_id, lambda: runtime().transfer(db.session, viewer(), item_id, to, note))
    except Invalid as exc:
        schema = runtime().registry.get(item.case.diagram, item.case.process).forms[item.form]
        errors = {k: _error_text(v, None) for k, v in (exc.fields or {}).items()}
        page = _task_page(item, schema, _initial_values(item, schema), transfer_errors=errors)
        return page, 400
    grid = unit_by_code(db.session, to)
    flash(_("%(number)s was sent to %(grid)s.", number=number, grid=grid.name if grid else to))
    return redirect(url_for("inbox.index"))


def transfer_targets(case: Case) -> list[tuple[str, list[tuple[str, str]]]]:
    """The grids a case may be sent to: every other active grid of its town, by village."""
    grid, district, village = (aliased(Unit) for _ in range(3))
    rows = db.session.execute(
        select(village.name, grid.code, district.name, grid.name)
        .join(district, district.id == grid.parent_id)
        .join(village, village.id == district.parent_id)
        .where(
            grid.level == "grid",
            grid.active,
            grid.id != case.grid_id,
            village.parent_id == case.town_id,
        )
        .order_by(village.code, grid.code)
    ).all()
    by_village: dict[str, list[tuple[str, str]]] = {}
    for village_name, code, district_name, grid_name in rows:
        by_village.setdefault(village_name, []).append((code, f"{district_name} · {grid_name}"))
    return list(by_village.items())


@bp.get("/cases/<number>/diagram.bpmn")
@login_required
def diagram_xml(number: str):
    """The BPMN of the diagram version the case is pinned to, for the page's diagram viewer.
    Served as a download that no browser renders or runs when opened directly (the viewer's
    fetch() ignores Content-Disposition)."""
    from .security import download

    case = db.session.scalars(
        select(Case).where(Case.number == number, case_scope(viewer()))
    ).first()
    if case is None:
        abort(404)
    files = case.diagram.files
    bpmn = [text for path, text in sorted(files.items()) if path.endswith(".bpmn")]
    text = next((t for t in bpmn if f'id="{case.process}"' in t), bpmn[0] if bpmn else None)
    if text is None:
        abort(404)
    response = Response(lanes_for_people(text), mimetype="application/xml")
    # A case's version never changes; the lane names follow the page's language.
    response.headers["Cache-Control"] = "private, max-age=3600"
    response.vary.add("Cookie")
    return download(response, f"{case.number}.bpmn")


BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"


def lanes_for_people(xml: str) -> bytes:
    """The diagram as the viewer draws it: each lane named by its tier in this page's language.
    The stored version keeps the tier names the engine reads (DESIGN §1)."""
    root = etree.fromstring(xml.encode("utf-8"), etree.XMLParser(resolve_entities=False))
    for lane in root.iter(f"{{{BPMN_NS}}}lane"):
        name = lane.get("name")
        if name in TIER_NAMES:
            lane.set("name", str(TIER_NAMES[name]))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _visible_item(item_id: int) -> WorkItem:
    item = (
        db.session.get(WorkItem, item_id, options=[joinedload(WorkItem.case)])
        if 0 < item_id <= MAX_ID
        else None
    )
    if item is None or not can_see_case(db.session, viewer(), item.case):
        raise NotFound(_("There is no task %(id)s in your units.", id=item_id))
    return item


def _engine(item_id: int, call):
    """Run an engine use case; its refusals become pages that say what happened, in words."""
    try:
        return call()
    except NotFound as exc:
        raise NotFound(_("There is no task %(id)s in your units.", id=item_id)) from exc
    except Forbidden as exc:
        raise Forbidden(_("Your positions let you see this task but not work on it.")) from exc
    except Conflict as exc:
        raise _conflict(item_id) from exc


def _conflict(item_id: int) -> Conflict:
    """A 409 that tells what happened to the item meanwhile."""
    item = db.session.get(WorkItem, item_id)
    if item is not None and item.completed_at is not None:
        if item.cancelled:
            return Conflict(
                _("This task was closed because the case moved on (for example, it was escalated).")
            )
        name = display_names({item.completed_by}).get(item.completed_by, item.completed_by)
        return Conflict(
            _(
                "This task was already completed by %(name)s (%(time)s).",
                name=name,
                time=when(item.completed_at),
            )
        )
    if item is not None and item.claimed_by not in (None, viewer().username):
        name = display_names({item.claimed_by}).get(item.claimed_by, item.claimed_by)
        return Conflict(_("This task is claimed by %(name)s.", name=name))
    if item is not None and item.claimed_by is None and request.endpoint == "inbox.release":
        return Conflict(_("You do not hold this task."))
    return Conflict(_("The case changed meanwhile. Please try again."))


def _campaign_of(case: Case) -> Campaign | None:
    """The campaign a grid's instance belongs to (its task page shows the campaign, not a case)."""
    if case.process != CAMPAIGN_PROCESS_ID or case.campaign_id is None:
        return None
    return db.session.get(Campaign, case.campaign_id)


def _task_page(
    item: WorkItem,
    schema: dict,
    values: dict,
    engine_errors: dict | None = None,
    transfer_errors: dict | None = None,
):
    me = viewer()
    holder = acting_for(db.session, me, item)  # whose name `me` works it in, or None
    case = item.case
    fields = form_fields(schema, values)
    general = _attach_errors(fields, engine_errors or {})
    events = [as_dict(case.number, row) for row in case_events(db.session, case)]
    names = display_names({e["actor"] for e in events} | {item.claimed_by, case.owner})
    open_items = open_items_of([case.id])[case.id]
    transferable = item.spec in runtime().registry.get(case.diagram, case.process).transferable
    return render_template(
        "inbox/task.html",
        transferable=transferable,
        transfer_targets=transfer_targets(case) if transferable else [],
        transfer_errors=transfer_errors or {},
        item=item,
        case=case,
        fields=fields,
        general_errors=general,
        has_errors=bool(engine_errors),
        events=[event_view(e, names) for e in events],
        names=names,
        can_act=holder is not None,
        mine=item.claimed_by == (holder or me.username),  # 代理: held in a delegator's name
        reveal=sees_reporter_phone(me, case, open_items),
        overdue=item_overdue(item, now()),
        case_deadline=case_deadline(open_items, now()),
        steps=step_strip(case.status),
        campaign=_campaign_of(case),
    )


# ------------------------------------------------------------------ forms from JSON Schema


def _label(name: str, prop: dict) -> str:
    title = prop.get("title")
    if language() == "zh" and title:
        return title
    return str(FIELD_LABELS.get(name) or title or name)


def _options(name: str, prop: dict) -> list[tuple[str, str]]:
    """(value, label) of an enum, labelled by the form itself (x-enumTitles, x-enumTitles-en),
    or of a boolean."""
    if prop.get("type") == "boolean":
        yes, no = BOOL_NAMES.get(name, YES_NO)
        return [("true", str(yes)), ("false", str(no))]
    return [(c.value, c.label(language())) for c in choices_of(prop)]


def form_fields(schema: dict, values: dict) -> list[FormField]:
    required = set(schema.get("required", []))
    fields: dict[str, FormField] = {}
    for name, prop in schema.get("properties", {}).items():
        kind = prop.get("type")
        if kind == "array" and prop.get("x-source") == "departments":
            widget, options = "checkboxes", _departments()
        elif kind == "array" and prop.get("x-widget") == "photos":
            widget, options = "photos", []  # drawn by templates/photos/_macros.html
        elif kind == "boolean" or "enum" in prop:
            options = _options(name, prop)
            widget = "radio" if len(options) <= RADIO_MAX else "select"
        else:
            widget = "textarea" if prop.get("x-widget") == "textarea" else "text"
            options = []
        default = [] if widget in ("checkboxes", "photos") else ""
        fields[name] = FormField(
            name=name,
            label=_label(name, prop),
            widget=widget,
            required=name in required,
            options=options,
            value=values.get(name, default),
            hint=prop.get("description", "") if language() == "zh" else "",
            max_length=prop.get("maxLength"),
        )
    for name, conditions in _required_when(schema).items():
        if name not in fields or fields[name].required:
            continue
        notes = []
        for other, value in conditions:
            if other not in fields:
                continue
            label = dict(fields[other].options).get(_as_value(value), str(value))
            notes.append(
                _("Required when %(field)s is “%(value)s”.", field=fields[other].label, value=label)
            )
        fields[name].hint = " ".join(filter(None, [fields[name].hint, *notes]))
    return list(fields.values())


def _required_when(schema: dict) -> dict[str, list[tuple[str, object]]]:
    """The schema's if/then rules of the form 'if X is V then F is required'."""
    found: dict[str, list[tuple[str, object]]] = {}
    for rule in [schema, *schema.get("allOf", [])]:
        condition = rule.get("if", {}).get("properties", {})
        for name in rule.get("then", {}).get("required", []):
            for other, test in condition.items():
                if "const" in test:
                    found.setdefault(name, []).append((other, test["const"]))
    return found


def _as_value(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _departments() -> list[tuple[str, str]]:
    units = db.session.scalars(
        select(Unit).where(Unit.level == "department", Unit.active).order_by(Unit.code)
    )
    return [(u.code, u.name) for u in units]


def _initial_values(item: WorkItem, schema: dict) -> dict:
    values: dict = {}
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        if "default" in prop:
            values[name] = _as_value(prop["default"])
        elif name in required and len(prop.get("enum", [])) == 1:
            values[name] = str(prop["enum"][0])  # the only choice (resolved, at town)
        if name in PREFILLED and getattr(item.case, name, None):
            values[name] = getattr(item.case, name)
    return values


def _submitted_values(schema: dict, form: MultiDict) -> dict:
    return {
        name: form.getlist(name) if prop.get("type") == "array" else form.get(name, "")
        for name, prop in schema.get("properties", {}).items()
    }


def form_data(schema: dict, form: MultiDict) -> dict:
    """The posted form as the task's typed data: booleans, lists, and no empty optional text."""
    data: dict = {}
    for name, prop in schema.get("properties", {}).items():
        kind = prop.get("type")
        if kind == "array":
            chosen = [v for v in form.getlist(name) if v]
            if chosen:
                data[name] = chosen
            continue
        raw = form.get(name, "").replace("\r\n", "\n").strip()
        if kind == "boolean" and raw in ("true", "false"):
            data[name] = raw == "true"
        elif raw:
            data[name] = raw  # a stray value gets the schema's own message
    return data


def _attach_errors(fields: list[FormField], messages: dict[str, str]) -> list[str]:
    """Put each engine message next to its field, in this language; the rest go on top."""
    by_name = {f.name: f for f in fields}
    general = []
    for key, message in messages.items():
        name = re.split(r"[.\[]", key, maxsplit=1)[0]
        target = by_name.get(name)
        text = _error_text(message, target)
        if target is None:
            general.append(text)
        elif not target.error:
            target.error = text
    return general


def _error_text(message: str, target: FormField | None) -> str:
    if target is not None and target.widget == "photos":
        return photo_message(message)
    if message == "required":
        return _("This field is required.")
    if message == "must not be empty":
        return _("This field must not be empty.")
    if message.startswith("must be one of:"):
        choices = " / ".join(label for _v, label in target.options) if target else ""
        return _("Choose one of: %(choices)s", choices=choices)
    longest = re.fullmatch(r"must be at most (\d+) characters", message)
    if longest:
        return _("At most %(count)s characters.", count=longest.group(1))
    if message.startswith("unknown department"):
        return _("Choose departments from the list.")
    if message == "must not repeat":
        return _("Choose each option only once.")
    if message == "not a grid of this town":
        return _("Choose a grid of this town.")
    if message == "the case is in this grid already":
        return _("The case is in this grid already.")
    return _("This value is not valid.")
