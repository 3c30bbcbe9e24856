"""走访: a grid's walk through its households for a campaign (DESIGN §12), on a phone.

GET /campaigns/<id>/walk/<grid> lists the grid's households (number, head, masked phone, in the
group chat or not) under a "已走访 N/M" progress bar, each with the campaign's checklist drawn
from its JSON Schema (a yes/no item is one big toggle, a text item a text field) and a save
button. Only the grid's information officers and its leader walk it (campaigns.walker_grid);
everyone else gets 404.

Saving is offline-safe (static/js/campaign_walk.js): the page's script gives each visit a client
id, keeps it in localStorage first, then POSTs it as JSON to /campaigns/<id>/walk/<grid>/visits
(session and the X-CSRFToken header). A resend carries the same client id, and the engine answers
it with the first visit (200), so a dropped connection never doubles a visit. Answers are JSON:
201/200 the visit (campaigns.visit_json) with the grid's progress, 400 with one message per field
(code "csrf" when the page's token no longer holds: GET .../token gives a fresh one), 401 when
the sign-in has ended, 403/404/409. Without the script the same route takes the plain form (the
page put a client id in it), and answers with the page again.
"""

from __future__ import annotations

import uuid
from functools import wraps
from typing import Any

from flask import (
    Blueprint,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user
from flask_wtf.csrf import CSRFError, generate_csrf
from sqlalchemy import select

from engine import campaigns, households
from engine.errors import Conflict, Forbidden, GridloopError, Invalid, NotFound
from engine.models import Campaign, Case, Visit

from . import errors as error_pages
from .cases import display_names
from .extensions import csrf, db
from .inbox import _error_text
from .security import json_body
from .web import language, login_required, now, runtime, viewer, writes

bp = Blueprint("campaign_walk", __name__)
STATUS_OF = {Forbidden: 403, NotFound: 404, Conflict: 409}


# ------------------------------------------------------------------ errors, as JSON or a page


def _wants_json() -> bool:
    return request.is_json or request.endpoint == "campaign_walk.token"


def _json_error(status: int, code: str, message: str, fields: dict | None = None):
    from .api import error  # the API's error shape: {error: {code, message, fields?}}

    return error(status, code, message, fields)


@bp.errorhandler(GridloopError)
def _engine_error(exc: GridloopError):
    status = STATUS_OF.get(type(exc), 400)
    if not _wants_json():
        return error_pages.page(status, error_pages.shown(exc.message))
    messages = {
        Forbidden: _("Your positions do not let you record visits here."),
        NotFound: _("There is no such household in the grids you walk."),
        Conflict: _("This visit was recorded for another grid."),
    }
    if isinstance(exc, Conflict) and exc.code != "client_id_taken":
        messages[Conflict] = _("Others were saving in this grid just now; it will be sent again.")
    message = messages.get(type(exc)) or _("Please correct the marked fields.")
    fields = {k: _error_text(v, None) for k, v in (exc.fields or {}).items()}
    return _json_error(status, exc.code, str(message), fields or None)


def signed_in_json(view):
    """Like login_required, but a script's request whose sign-in has ended gets 401 (JSON)
    instead of the login page, so the page keeps its queue and offers a sign-in link."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_authenticated:
            if _wants_json():
                return _json_error(
                    401, "unauthorized", _("Your sign-in has ended. Sign in again to send.")
                )
            return redirect(url_for("auth.login", next=request.full_path))
        return view(*args, **kwargs)

    return wrapper


# ------------------------------------------------------------------ the walk


def _walk(campaign_id: int, code: str):
    """The campaign and the viewer's instance in grid `code` (NotFound for anyone who does not
    walk that grid: another grid's officer, a leader above it, an auditor)."""
    me = viewer()
    campaign = campaigns.visible(db.session, me, campaign_id)
    instance = campaigns.walker_grid(db.session, me, campaign, code)
    return campaign, instance


def _progress(campaign: Campaign, code: str) -> dict[str, int]:
    state = next(
        (g for g in campaigns.grid_states(db.session, viewer(), campaign, now()) if g.code == code),
        None,
    )
    if state is None:  # walker_grid found it: the viewer's units hold it
        raise NotFound("no such household")
    return {"covered": min(state.covered, state.households), "total": state.households}


def checklist_items(campaign: Campaign) -> list[dict[str, Any]]:
    """The checklist's items as the page draws them: name, label in this language, kind
    (boolean or string), whether it opens a case, its longest text."""
    items = []
    english = language() == "en"
    for name, prop in (campaign.checklist.get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        label = (prop.get("x-title-en") if english else None) or prop.get("title") or name
        items.append(
            {
                "name": name,
                "label": label,
                "kind": "boolean" if prop.get("type") == "boolean" else "string",
                "opens_case": bool(prop.get(campaigns.OPENS_CASE)),
                "max_length": prop.get("maxLength"),
            }
        )
    return items


def _visits(campaign: Campaign, grid_id: int) -> dict[int, dict[str, Any]]:
    """household number -> its latest visit (who, when, answers, the case it opened) and how
    many visits it has had."""
    from engine.models import Household

    rows = db.session.execute(
        select(Visit, Household.number, Case.number.label("case_number"))
        .join(Household, Household.id == Visit.household_id)
        .outerjoin(Case, Case.id == Visit.case_id)
        .where(Visit.campaign_id == campaign.id, Visit.grid_id == grid_id)
        .order_by(Visit.at, Visit.id)
    ).all()
    found: dict[int, dict[str, Any]] = {}
    for visit, number, case_number in rows:
        seen = found.get(number, {"count": 0, "cases": []})
        cases = seen["cases"] + ([case_number] if case_number else [])
        found[number] = {
            "by": visit.recorded_by,
            "at": visit.at,
            "data": visit.data,
            "case": case_number,
            "cases": cases,
            "count": seen["count"] + 1,
        }
    return found


def _page(
    campaign_id: int,
    code: str,
    *,
    errors_for: int | None = None,
    errors: dict[str, str] | None = None,
    form: dict | None = None,
    status: int = 200,
):
    campaign, instance = _walk(campaign_id, code)
    register = households.read_register(db.session, viewer(), code)
    visits = _visits(campaign, instance.grid_id)
    names = display_names({v["by"] for v in visits.values()} | {viewer().username})
    items = checklist_items(campaign)
    return render_template(
        "campaigns/walk.html",
        campaign=campaign,
        grid=register.grid,
        entries=register.entries,
        visits=visits,
        names=names,
        items=items,
        progress=_progress(campaign, code),
        overdue=now() >= campaign.due_at,
        errors_for=errors_for,
        errors=errors or {},
        form=form or {},
        queue_key=f"gridloop.walk.{campaign.id}.{register.grid.code}.{viewer().username}",
        me=names.get(viewer().username, viewer().username),
        new_client_id=lambda: uuid.uuid4().hex,
    ), status


@bp.get("/campaigns/<int:campaign_id>/walk/<code>")
@login_required
def walk(campaign_id: int, code: str):
    return _page(campaign_id, code)


@bp.get("/campaigns/<int:campaign_id>/walk/<code>/token")
@signed_in_json
def token(campaign_id: int, code: str):
    """A fresh CSRF token for the page's script, when the one the page came with no longer
    holds (its session was renewed); only for someone who walks the grid."""
    _walk(campaign_id, code)
    return jsonify({"csrf": generate_csrf()})


@bp.post("/campaigns/<int:campaign_id>/walk/<code>/visits")
@signed_in_json
@writes
@csrf.exempt  # checked below, so that a script is told in JSON
def record(campaign_id: int, code: str):
    """Record one household's visit: JSON from the page's script, or the plain form."""
    if current_app.config.get("WTF_CSRF_ENABLED", True):
        try:
            csrf.protect()  # Flask-WTF's own check (the token, and the referrer over HTTPS)
        except CSRFError:
            if _wants_json():
                return _json_error(400, "csrf", _("The page has expired. Reload it and try again."))
            return error_pages.page(400)
    if not request.is_json:
        return _record_form(campaign_id, code)
    body = json_body()
    if isinstance(body, dict):
        household = body.get("household")
        if isinstance(household, dict) and household.get("grid") != code:
            raise NotFound("no such household")  # the page's own grid only
    visit, created = runtime().record_visit(db.session, viewer(), campaign_id, body)
    db.session.commit()
    campaign = db.session.get(Campaign, campaign_id)
    answer = _visit_json(visit, code)
    answer["progress"] = _progress(campaign, code)
    answer["recorded_by_name"] = display_names({visit.recorded_by}).get(
        visit.recorded_by, visit.recorded_by
    )
    return jsonify(answer), 201 if created else 200


def _visit_json(visit: Visit, code: str) -> dict:
    from engine.models import Household

    number = db.session.scalar(select(Household.number).where(Household.id == visit.household_id))
    case_number = (
        db.session.scalar(select(Case.number).where(Case.id == visit.case_id))
        if visit.case_id
        else None
    )
    return campaigns.visit_json(visit, code, number, case_number)


def form_answers(campaign: Campaign, form) -> dict[str, Any]:
    """The plain form as checklist data: a yes/no item is true when ticked, false otherwise; an
    empty text item is left out."""
    data: dict[str, Any] = {}
    for item in checklist_items(campaign):
        name = item["name"]
        if item["kind"] == "boolean":
            data[name] = form.get(name) in ("1", "on", "true")
        else:
            text = form.get(name, "").replace("\r\n", "\n").strip()
            if text:
                data[name] = text
    return data


def _record_form(campaign_id: int, code: str):
    campaign, _instance = _walk(campaign_id, code)
    raw_number = request.form.get("number", "")
    digits = raw_number.isascii() and raw_number.isdigit()
    number = int(raw_number) if digits and len(raw_number) < 10 else None
    if number is None:
        raise NotFound("no such household")
    data = form_answers(campaign, request.form)
    client_id = (request.form.get("client_id") or "").strip()[: campaigns.MAX_CLIENT_ID]
    body = {
        "household": {"grid": code, "number": number},
        "data": data,
        "client_id": client_id or uuid.uuid4().hex,
    }
    try:
        visit, _created = runtime().record_visit(db.session, viewer(), campaign_id, body)
    except Invalid as exc:
        db.session.rollback()
        fields = {
            k.removeprefix("data."): _error_text(v, None) for k, v in (exc.fields or {}).items()
        }
        return _page(
            campaign_id,
            code,
            errors_for=number,
            errors=fields,
            form={**data, "number": number},
            status=400,
        )
    db.session.commit()
    answer = _visit_json(visit, code)
    if answer["case"]:
        flash(
            _(
                "Household %(number)s was visited; case %(case)s was opened.",
                number=number,
                case=answer["case"],
            )
        )
    else:
        flash(_("Household %(number)s was visited.", number=number))
    return redirect(
        url_for("campaign_walk.walk", campaign_id=campaign_id, code=code) + f"#h-{number}"
    )
