"""工作任务: the town leader's campaign pages (DESIGN §12) on a phone.

- GET /campaigns: the campaigns the viewer's units hold, each with its coverage bar; town leaders
  get a button to launch one.
- GET/POST /campaigns/new (town leaders): title, instructions, kind, the target units as a
  checkbox tree of the town (a village covers its grids), the due time in Asia/Shanghai and a
  checklist builder. The builder's rows are ordinary form fields (item-N-label, item-N-type,
  item-N-opens), so the page works without JavaScript (a "more rows" button adds blank rows);
  with it, static/js/campaign_builder.js adds and removes rows in place and writes the checklist's
  JSON Schema into the hidden `checklist` field, which the server then reads instead of the rows.
  Either way the server rebuilds the schema from the items: item_1.. each with its title, a
  boolean (yes/no, `x-opens-case` where ticked) or a string of at most 500 characters.
- GET /campaigns/<id>: the campaign, its coverage heat table (?unit= drills town → village →
  district → grid), the late grids and the households not reached yet, phones masked.
- GET /campaigns/<id>/coverage.xlsx: the heat table at every level, and the unreached households.

The rules (who launches, what a launch needs, who sees which grids) are engine/campaigns.py's;
this module parses forms, says the engine's field problems in the page's words and renders.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from engine import campaigns
from engine.access import held_positions
from engine.clock import SHANGHAI, iso
from engine.errors import Forbidden, Invalid, NotFound
from engine.models import Campaign, Unit

from .exports import Sheet, xlsx_response
from .extensions import db
from .web import login_required, now, runtime, viewer, writes

bp = Blueprint("campaigns", __name__)

KIND_NAMES = {
    "publicity": _l("Publicity"),
    "patrol": _l("Patrol"),
    "survey": _l("Survey"),
    "group_drive": _l("Group drive (one household, one representative)"),
}
CAMPAIGN_STATUS = {"open": _l("Under way"), "closed": _l("Ended")}
LEVEL_NAMES = {
    "town": _l("Town"),
    "village": _l("Village"),
    "district": _l("District"),
    "grid": _l("Grid"),
}
ITEM_TYPES = {"boolean": _l("Yes/no"), "string": _l("Text")}
TEXT_MAX = 500  # a text item's answer
LABEL_MAX = 200
UNREACHED_SHOWN = 200  # on the page; the workbook lists them all
PAGE = 20  # campaigns a list page shows, newest first
BLANK_ROWS = 3
MORE_ROWS = 5
ROW_FIELD = re.compile(r"^item-(\d{1,3})-(label|type|opens)$")


def _town_leader():
    """The town the viewer leads, else 403 with words (only town leaders launch)."""
    town_id = campaigns.town_of(viewer())
    if town_id is None:
        raise Forbidden(_("Only town leaders launch campaigns."))
    return db.session.get(Unit, town_id)


def _visible(campaign_id: int) -> Campaign:
    return campaigns.visible(db.session, viewer(), campaign_id)


def percent(covered: int, total: int) -> int | None:
    return None if not total else int(covered * 100 / total)


def heat(covered: int, total: int) -> str:
    """The heat table's colour class by the share of households covered."""
    share = percent(covered, total)
    if share is None:
        return "cp-heat-none"
    if share >= 100:
        return "cp-heat-5"
    return f"cp-heat-{min(share // 20, 4)}"


# ------------------------------------------------------------------ the list


@bp.get("/campaigns")
@login_required
def index():
    me = viewer()
    before = request.args.get("before", type=int)
    if before is not None and not 0 < before < 2**31:  # not an id: the first page
        before = None
    page = campaigns.listed(db.session, me, before=before, limit=PAGE + 1)
    more, page = len(page) > PAGE, page[:PAGE]
    figures = campaigns.progress(db.session, me, page)
    rows = [(c, *figures[c.id]) for c in page]
    return render_template(
        "campaigns/index.html",
        rows=rows,
        older=page[-1].id if more else None,
        launches=campaigns.town_of(me) is not None,
        KIND_NAMES=KIND_NAMES,
        CAMPAIGN_STATUS=CAMPAIGN_STATUS,
    )


# ------------------------------------------------------------------ launching


@dataclass
class Row:
    """One checklist item as the builder shows it."""

    label: str = ""
    type: str = "boolean"
    opens: bool = False

    @property
    def blank(self) -> bool:
        return not self.label.strip() and not self.opens


def _town_tree(town: Unit) -> list[dict[str, Any]]:
    """The town's active villages → districts → grids, for the targets' checkbox tree."""
    units = db.session.execute(
        select(Unit.id, Unit.code, Unit.name, Unit.level, Unit.parent_id)
        .where(Unit.active, Unit.level.in_(("village", "district", "grid")))
        .order_by(Unit.code)
    ).all()
    children: dict[int, list] = {}
    for unit in units:
        children.setdefault(unit.parent_id, []).append(unit)

    def node(unit) -> dict[str, Any]:
        return {
            "code": unit.code,
            "name": unit.name,
            "level": unit.level,
            "children": [node(c) for c in children.get(unit.id, []) if unit.level != "grid"],
        }

    return [node(v) for v in children.get(town.id, []) if v.level == "village"]


def _covered_targets(town: Unit, tree: list[dict], chosen: list[str]) -> list[str]:
    """The chosen codes without those an ancestor already covers (a village covers its
    grids), in the tree's order; codes not in the tree are kept for the engine to refuse."""
    wanted = set(chosen)
    if town.code in wanted:
        return [town.code]
    kept: list[str] = []
    known: set[str] = set()

    def walk(nodes: list[dict], covered: bool) -> None:
        for n in nodes:
            known.add(n["code"])
            mine = n["code"] in wanted
            if mine and not covered:
                kept.append(n["code"])
            walk(n["children"], covered or mine)

    walk(tree, False)
    return kept + [c for c in dict.fromkeys(chosen) if c not in known]


def _rows_from_form() -> list[Row]:
    """The builder's rows: from the hidden JSON Schema when the script wrote one, else from the
    item-N fields (the page without JavaScript)."""
    written = request.form.get("checklist", "").strip()
    if written:
        rows = _rows_from_schema(written)
        if rows is not None:
            return rows
    found: dict[int, Row] = {}
    for key in request.form:
        match = ROW_FIELD.match(key)
        if match is None:
            continue
        row = found.setdefault(int(match.group(1)), Row())
        value = request.form.get(key, "")
        if match.group(2) == "label":
            row.label = value.strip()
        elif match.group(2) == "type":
            row.type = value
        else:
            row.opens = value in ("1", "on", "true")
    return [found[n] for n in sorted(found)]


def _rows_from_schema(text: str) -> list[Row] | None:
    try:
        schema = json.loads(text)
    except ValueError:
        return None
    items = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(items, dict):
        return None
    rows = []
    for item in items.values():
        if not isinstance(item, dict):
            return None
        rows.append(
            Row(
                label=str(item.get("title") or "").strip(),
                type=str(item.get("type") or ""),
                opens=item.get(campaigns.OPENS_CASE) is True,
            )
        )
    return rows


def checklist_of(rows: list[Row]) -> tuple[dict[str, Any], dict[int, str]]:
    """The checklist's JSON Schema from the builder's rows (blank rows left out), and each bad
    row's message by its place among the rows (1-based)."""
    properties: dict[str, Any] = {}
    problems: dict[int, str] = {}
    for place, row in enumerate(rows, 1):
        if row.blank:
            continue
        if row.type not in ITEM_TYPES:
            problems[place] = _("Choose yes/no or text.")
        elif not row.label.strip():
            problems[place] = _("Give this item a label.")
        elif len(row.label) > LABEL_MAX:
            problems[place] = _("A label may be at most %(count)s characters.", count=LABEL_MAX)
        elif row.opens and row.type != "boolean":
            problems[place] = _("Only a yes/no item can open a case.")
        item: dict[str, Any] = {"title": row.label.strip(), "type": row.type}
        if row.type == "string":
            item["maxLength"] = TEXT_MAX
        if row.opens and row.type == "boolean":
            item[campaigns.OPENS_CASE] = True
        properties[f"item_{len(properties) + 1}"] = item
    return {"type": "object", "properties": properties}, problems


def _due(day: str, clock: str) -> tuple[str | None, str | None]:
    """The due date and time (Asia/Shanghai) as an aware ISO time, or a message."""
    if not day or not clock:
        return None, _("Enter a due date and time.")
    try:
        when = datetime.combine(date.fromisoformat(day), time.fromisoformat(clock), SHANGHAI)
        return iso(when), None
    except (ValueError, OverflowError):  # OverflowError: a year 1 in Asia/Shanghai is before UTC's
        return None, _("Enter the date as YYYY-MM-DD and the time as HH:MM.")


def _messages(problems: dict[str, str], targets: list[str]) -> dict[str, str]:
    """The engine's field problems (engine/campaigns.py plan_launch) in the page's words, by
    the form's fields."""
    said: dict[str, str] = {}
    for field, problem in problems.items():
        if field == "title":
            said["title"] = (
                _("Enter a title.")
                if problem == "required"
                else _("The title may be at most %(count)s characters.", count=campaigns.MAX_TITLE)
            )
        elif field == "instructions":
            said["instructions"] = _(
                "The instructions may be at most %(count)s characters.",
                count=campaigns.MAX_INSTRUCTIONS,
            )
        elif field == "kind":
            said["kind"] = _("Choose what kind of campaign this is.")
        elif field == "due_at":
            said["due"] = (
                _("The due time must be in the future.")
                if "future" in problem
                else _("The due time must be within a year.")
                if "within a year" in problem
                else _("Enter a due date and time.")
            )
        elif field.startswith("targets["):
            index = int(field[len("targets[") : -1])
            code = targets[index] if index < len(targets) else ""
            said.setdefault(
                "targets", _("%(code)s is not a village, district or grid of your town.", code=code)
            )
        elif field == "targets":
            if "outside" in problem:
                said["targets"] = _("Some of the chosen units are outside your town.")
            elif "no active grid" in problem:
                said["targets"] = _("The chosen units have no active grid.")
            elif "at most" in problem:
                said["targets"] = _(
                    "Choose at most %(count)s units; a village covers all its grids.",
                    count=campaigns.MAX_TARGETS,
                )
            else:
                said["targets"] = _("Choose at least one village, district or grid.")
        elif field == "checklist" and "at least one item" in problem:
            said["checklist"] = _("Add at least one checklist item.")
        elif field == "checklist" and "at most" in problem:
            said["checklist"] = _(
                "A checklist has at most %(count)s items.", count=campaigns.MAX_CHECKLIST_ITEMS
            )
        elif field.startswith("checklist"):
            said.setdefault("checklist", _("The checklist is not valid."))
        else:
            said.setdefault("form", _("The campaign could not be launched as entered."))
    return said


def _blank_form() -> dict[str, Any]:
    due = (now().astimezone(SHANGHAI) + timedelta(days=7)).date()
    return {
        "title": "",
        "instructions": "",
        "kind": "",
        "targets": [],
        "due_date": due.isoformat(),
        "due_time": "18:00",
    }


def _render(town: Unit, tree, form, rows: list[Row], errors, row_errors, status: int = 200):
    shown = rows + [Row() for _ in range(max(BLANK_ROWS, 5 - len(rows)))]
    chosen = set(form["targets"])
    return render_template(
        "campaigns/new.html",
        town=town,
        tree=tree,
        form=form,
        chosen=chosen,
        rows=shown,
        errors=errors,
        row_errors=row_errors,
        KIND_NAMES=KIND_NAMES,
        ITEM_TYPES=ITEM_TYPES,
        LABEL_MAX=LABEL_MAX,
    ), status


@bp.route("/campaigns/new", methods=["GET", "POST"])
@login_required
@writes
def new():
    town = _town_leader()
    tree = _town_tree(town)
    if request.method == "GET":
        return _render(town, tree, _blank_form(), [], {}, {})
    form = {
        key: request.form.get(key, "").strip()
        for key in ("title", "instructions", "kind", "due_date", "due_time")
    }
    form["instructions"] = request.form.get("instructions", "").strip("\r\n")
    form["targets"] = [t for t in request.form.getlist("targets") if t]
    rows = [r for r in _rows_from_form() if not r.blank]
    if request.form.get("more"):  # without JavaScript: more blank rows, nothing launched
        return _render(town, tree, form, rows + [Row()] * MORE_ROWS, {}, {})
    checklist, row_errors = checklist_of(rows)
    due_at, due_problem = _due(form["due_date"], form["due_time"])
    targets = _covered_targets(town, tree, form["targets"])
    body = {
        "title": form["title"],
        "instructions": form["instructions"],
        "kind": form["kind"],
        "targets": targets,
        "due_at": due_at,
        "checklist": checklist,
    }
    errors: dict[str, str] = {}
    try:
        campaigns.plan_launch(db.session, viewer(), body, now())  # reads only: every problem
    except Invalid as exc:
        errors = _messages(exc.fields or {}, targets)
    db.session.rollback()
    if due_problem:
        errors["due"] = due_problem
    if row_errors:
        errors["checklist"] = _("Correct the marked checklist items.")
    if not errors:
        try:
            campaign = runtime().launch_campaign(db.session, viewer(), body)
        except Invalid as exc:  # something changed since the check (a unit deactivated)
            errors = _messages(exc.fields or {}, targets) or {
                "form": _("The campaign could not be launched as entered.")
            }
        else:
            flash(
                _(
                    "The campaign %(number)s was launched to %(count)s grids.",
                    number=campaign.number,
                    count=_grid_count(campaign),
                )
            )
            return redirect(url_for("campaigns.show", campaign_id=campaign.id))
    return _render(town, tree, form, rows, errors, row_errors, status=400)


def _grid_count(campaign: Campaign) -> int:
    return len(campaigns.grid_states(db.session, viewer(), campaign, now()))


# ------------------------------------------------------------------ one campaign


def _unit_param() -> str | None:
    code = request.args.get("unit", "").strip()
    return code or None


def _trail(unit_code: str, town_id: int) -> list[Unit]:
    """The units from the town down to the one shown, for the heat table's breadcrumbs."""
    unit = db.session.scalars(select(Unit).where(Unit.code == unit_code)).first()
    trail = []
    while unit is not None:
        trail.append(unit)
        if unit.id == town_id:
            break
        unit = unit.parent
    return list(reversed(trail))


def _walks(grids) -> list[Any]:
    """The campaign's grids the viewer walks (their information officer or leader)."""
    mine = {
        unit_id for role, unit_id, _level in held_positions(viewer()) if role in campaigns.WALKERS
    }
    return [g for g in grids if g.id in mine]


@bp.get("/campaigns/<int:campaign_id>")
@login_required
def show(campaign_id: int):
    me, at = viewer(), now()
    campaign = _visible(campaign_id)
    code = _unit_param()
    figures = campaigns.coverage(db.session, me, campaign, code, at)
    if code is not None and not figures["grids_total"]:
        raise NotFound(_("This unit holds none of the campaign's grids that you cover."))
    grids = campaigns.grid_states(db.session, me, campaign, at)
    names = {g.code: g.name for g in grids}
    # One more than is shown tells whether there are more (the workbook lists them all).
    unreached = campaigns.unreached(db.session, me, campaign, code, at, limit=UNREACHED_SHOWN + 1)
    town = db.session.get(Unit, campaign.town_id)
    return render_template(
        "campaigns/show.html",
        campaign=campaign,
        figures=figures,
        trail=_trail(figures["unit"]["code"], campaign.town_id),
        town=town,
        names=names,
        late=[(c, names.get(c, c)) for c in figures["late"]],
        unreached=unreached[:UNREACHED_SHOWN],
        unreached_more=len(unreached) > UNREACHED_SHOWN,
        group_drive=campaign.kind == "group_drive",
        hazards=campaigns.hazard_cases(db.session, me, campaign),
        # Auditors reach each grid's own chain (events, replay, dossier) from here.
        records=campaigns.coverage_grids(db.session, me, campaign, code, at)
        if me.is_auditor
        else [],
        walks=_walks(grids),
        checklist=campaign.checklist.get("properties", {}),
        unit_code=code,
        percent=percent,
        heat=heat,
        KIND_NAMES=KIND_NAMES,
        CAMPAIGN_STATUS=CAMPAIGN_STATUS,
        LEVEL_NAMES=LEVEL_NAMES,
        ITEM_TYPES=ITEM_TYPES,
        OPENS_CASE=campaigns.OPENS_CASE,
    )


# ------------------------------------------------------------------ the workbook


def level_figures(me, campaign: Campaign, at: datetime) -> list[dict[str, Any]]:
    """The heat table at every level the viewer covers: the town, its villages, districts and
    grids (each unit after its parent), with campaigns.coverage's figures."""
    grids = campaigns.grid_states(db.session, me, campaign, at)
    ids = {campaign.town_id} | {g.village_id for g in grids} | {g.district_id for g in grids}
    units = {
        u.id: u
        for u in db.session.execute(
            select(Unit.id, Unit.code, Unit.name, Unit.level).where(Unit.id.in_(ids))
        ).all()
    }

    def figures(unit, members, parent: str) -> dict[str, Any]:
        return {
            "level": unit.level,
            "code": unit.code,
            "name": unit.name,
            "parent": parent,
            "households_total": sum(g.households for g in members),
            "households_covered": sum(min(g.covered, g.households) for g in members),
            "grids_total": len(members),
            "grids_returned": sum(g.returned for g in members),
            "late": [g.code for g in members if g.late],
        }

    town = units[campaign.town_id]
    rows = [figures(town, grids, "")]
    by_village: dict[int, list] = {}
    for g in grids:
        by_village.setdefault(g.village_id, []).append(g)
    for village_id in sorted(by_village, key=lambda i: units[i].code):
        village = units[village_id]
        members = by_village[village_id]
        rows.append(figures(village, members, town.code))
        by_district: dict[int, list] = {}
        for g in members:
            by_district.setdefault(g.district_id, []).append(g)
        for district_id in sorted(by_district, key=lambda i: units[i].code):
            district = units[district_id]
            rows.append(figures(district, by_district[district_id], village.code))
            for g in by_district[district_id]:
                rows.append(figures(SimpleUnit(g.code, g.name, "grid"), [g], district.code))
    return rows


@dataclass(frozen=True)
class SimpleUnit:
    code: str
    name: str
    level: str


@bp.get("/campaigns/<int:campaign_id>/coverage.xlsx")
@login_required
def coverage_xlsx(campaign_id: int):
    me, at = viewer(), now()
    campaign = _visible(campaign_id)
    rows = level_figures(me, campaign, at)
    heat_sheet = Sheet(
        title=_("Visit coverage"),
        header=[
            _("Level"),
            _("Unit code"),
            _("Unit name"),
            _("Parent unit"),
            _("Household count"),
            _("Households visited"),
            _("Coverage %"),
            _("Grid count"),
            _("Grids returned"),
            _("Late grids"),
            _("Late grid codes"),
        ],
        rows=[
            [
                str(LEVEL_NAMES[r["level"]]),
                r["code"],
                r["name"],
                r["parent"],
                r["households_total"],
                r["households_covered"],
                percent(r["households_covered"], r["households_total"]),
                r["grids_total"],
                r["grids_returned"],
                len(r["late"]),
                "、".join(r["late"]),
            ]
            for r in rows
        ],
        bold_rows={0},
    )
    names = {r["code"]: r["name"] for r in rows if r["level"] == "grid"}
    yes, no = _("Yes"), _("No")
    unreached_sheet = Sheet(
        title=_("Households to follow up"),
        header=[
            _("Grid code"),
            _("Grid"),
            _("Household number"),
            _("Head of household"),
            _("Phone"),
            _("Visited"),
            _("In the group chat"),
        ],
        rows=[
            [
                h["grid"],
                names.get(h["grid"], ""),
                h["number"],
                h["head"] or "",
                h["phone"] or "",
                yes if h["visited"] else no,
                yes if h["in_group"] else no,
            ]
            for h in campaigns.unreached(db.session, me, campaign, None, at)
        ],
    )
    return xlsx_response([heat_sheet, unreached_sheet], f"{campaign.number}-coverage.xlsx")
