"""The JSON API under /api/v1 (DESIGN §8). Each route parses the request, calls one engine use case
and maps engine errors to HTTP: Invalid 400, Forbidden 403, NotFound 404, Conflict 409."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from functools import wraps

from flask import Blueprint, current_app, g, jsonify, request
from marshmallow import Schema, ValidationError
from sqlalchemy import bindparam, select
from sqlalchemy.orm import joinedload
from werkzeug.exceptions import HTTPException

from engine import access_log
from engine.access import case_scope, viewer_of
from engine.case_search import case_page, covered_unit, search_query
from engine.clock import iso
from engine.deadlines import case_deadline, item_overdue
from engine.errors import Conflict, Forbidden, GridloopError, Invalid, NotFound
from engine.events import as_dict, case_events
from engine.inbox import inbox_page
from engine.models import ApiToken, Campaign, Case, Person, WorkItem
from engine.specs import CAMPAIGN_PROCESS_ID

from . import photos, schemas
from . import services as app_services
from .extensions import db
from .openapi import build_openapi
from .paging import decode_cursor, decode_inbox_key, encode_cursor, encode_inbox_key
from .web import now, runtime, words, writes

bp = Blueprint("api", __name__, url_prefix="/api/v1")
PAGE = 50
STATUS_OF = {Invalid: 400, Forbidden: 403, NotFound: 404, Conflict: 409}


# ------------------------------------------------------------------ plumbing


def error(status: int, code: str, message: str, fields: dict | None = None):
    body = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return jsonify({"error": body}), status


@bp.errorhandler(GridloopError)
def _engine_error(exc: GridloopError):
    return error(STATUS_OF.get(type(exc), 400), exc.code, exc.message, exc.fields)


def json_http_error(exc: HTTPException):
    """HTTP errors under /api/ in the §8 shape (errors.py routes them here). A body over
    MAX_CONTENT_LENGTH is refused from its Content-Length, before it is read: 413 too_large."""
    status = exc.code or 500
    if status == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        return error(413, "too_large", f"the request body is over the limit of {limit} bytes")
    return error(status, exc.name.lower().replace(" ", "_"), exc.description or exc.name)


def services():
    return app_services(current_app)


def parse(schema: type[Schema], source: dict | None = None) -> dict:
    """Load a request body or query with a marshmallow schema; 400 with one message per field.
    The body is read by security.json_body: 413 when too large, 400 when it is not UTF-8 JSON
    or nests too deeply."""
    from .security import json_body

    if source is None:
        payload = json_body()
        if not isinstance(payload, dict):
            raise Invalid("the body must be a JSON object", {"body": "must be a JSON object"})
        source = payload
    try:
        return schema().load(source)
    except ValidationError as exc:
        raise Invalid("the request has errors", flatten_messages(exc.messages)) from exc


def parse_for_item(schema: type[Schema], item_id: int) -> dict:
    """parse, for a call on a work item: a body that fails answers what the caller's rights
    answer first (404 outside their units, 403, 409), as a good body would (DESIGN §4: who,
    before what they sent). The check costs nothing on the way of a good body."""
    try:
        return parse(schema)
    except Invalid:
        runtime().check_item(db.session, g.viewer, item_id)
        raise


def flatten_messages(messages, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in messages.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_messages(value, f"{name}."))
        else:
            flat[name] = value[0] if isinstance(value, list) else str(value)
    return flat


# The token, its person and the person's positions with their units, in one SELECT (statement
# built once; the positions would otherwise follow in a second, the relationship's selectin).
TOKEN_AND_PERSON = (
    select(ApiToken, Person)
    .join(Person, Person.id == ApiToken.person_id)
    .where(ApiToken.token_hash == bindparam("b_digest"))
    .options(joinedload(Person.positions))
)


def token_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return error(401, "unauthorized", "a Bearer token is required")
        digest = hashlib.sha256(header[7:].strip().encode()).hexdigest()
        found = db.session.execute(TOKEN_AND_PERSON, {"b_digest": digest}).unique().first()
        token, person = found if found is not None else (None, None)
        if (
            token is None
            or token.expires_at <= now()
            or person is None
            or not person.active
            or token.generation != person.generation  # signed out, password changed, …
        ):
            return error(401, "unauthorized", "the token is invalid or expired")
        g.person, g.token = person, token
        g.viewer = viewer_of(db.session, person, now())
        return view(*args, **kwargs)

    return wrapper


# ------------------------------------------------------------------ serializers


def case_json(case: Case, open_items: list[WorkItem]) -> dict:
    deadline = case_deadline(open_items, now())
    holder = next((i.claimed_by for i in open_items if i.claimed_by), None)
    return {
        "number": case.number,
        "title": case.title,
        "description": case.description,
        "category": case.category,
        "severity": case.severity,
        "status": case.status,
        "tier": case.tier,
        "grid": {"code": case.grid.code, "name": case.grid.name},
        "owner": case.owner,
        "holder": holder,
        "due_at": iso(deadline.due_at),
        "overdue": deadline.overdue,
        "opened_at": iso(case.opened_at),
        "closed_at": iso(case.closed_at),
        "satisfaction": case.satisfaction,
        "reopen_count": case.reopen_count,
        "diagram": case.diagram.sha256,
        "campaign": campaign_ref(case.campaign_id),
    }


def campaign_ref(campaign_id: int | None) -> dict | None:
    """{id, title} of the campaign a case belongs to (a grid's instance, or a case a visit's
    hazard opened; DESIGN §12), else None. session.get reads each campaign once a request."""
    if campaign_id is None:
        return None
    campaign = db.session.get(Campaign, campaign_id)
    return {"id": campaign.id, "title": campaign.title} if campaign is not None else None


def open_items_of(case_ids: list[int]) -> dict[int, list[WorkItem]]:
    found: dict[int, list[WorkItem]] = {cid: [] for cid in case_ids}
    if case_ids:
        rows = db.session.scalars(
            select(WorkItem).where(WorkItem.case_id.in_(case_ids), WorkItem.completed_at.is_(None))
        )
        for item in rows:
            found[item.case_id].append(item)
    return found


# DESIGN §2.1: the category and severity given when a case is opened only prefill accept's form.
PREFILLED = ("category", "severity")


def prefilled(form: dict, case: Case) -> dict:
    """The form a client renders for this case's item: `default` set to what the case was opened
    with, for the fields PREFILLED that the form has (a copy; the spec's schema is shared)."""
    properties = form.get("properties") or {}
    opened = {
        name: getattr(case, name)
        for name in PREFILLED
        if name in properties and getattr(case, name, None) is not None
    }
    if not opened:
        return form
    return {
        **form,
        "properties": {
            **properties,
            **{name: {**properties[name], "default": value} for name, value in opened.items()},
        },
    }


def item_json(item: WorkItem) -> dict:
    case = item.case
    spec = runtime().registry.get(case.diagram, case.process)
    answer = {
        "id": item.id,
        "task": item.task,
        "name": item.name,
        "role": item.role,
        "unit": {"code": item.unit.code, "name": item.unit.name},
        "case": {
            "number": case.number,
            "title": case.title,
            "category": case.category,
            "severity": case.severity,
            "grid": {"code": case.grid.code, "name": case.grid.name},
        },
        "created_at": iso(item.created_at),
        "due_at": iso(item.due_at),
        "overdue": item_overdue(item, now()),
        "claimed_by": item.claimed_by,
        "form": prefilled(spec.forms[item.form], case),
    }
    if case.process == CAMPAIGN_PROCESS_ID:  # DESIGN §12: a campaign's item names no case
        answer["case"] = None
        answer["campaign"] = campaign_ref(case.campaign_id)
    return answer


def visible_case(number: str) -> Case:
    case = db.session.scalars(
        select(Case).where(Case.number == number, case_scope(g.viewer))
    ).first()
    if case is None:
        raise NotFound("no such case")
    return case


# ------------------------------------------------------------------ routes


@bp.post("/tokens")
def create_token():
    """Sign in for a token: the same throttle and bound as the sign-in page (engine.signin).

    While the person still has the organisation file's initial password, the answer adds
    `"password_change_required": true`; a client should then send them to change it (the web
    page /account/password), as the web pages do before anything else. The token works either
    way, and every other answer stays `{"token"}` alone, so existing clients go on as before."""
    body = parse(schemas.TokenIn)
    moment = now()
    attempt = services().signin.attempt(
        db.session, body["username"], body["password"], request.remote_addr, moment
    )
    if attempt.busy:
        response = error(503, "busy", "too many sign-ins at once; try again shortly")
        response[0].headers["Retry-After"] = "5"
        return response
    if attempt.wait_seconds:
        response = error(429, "too_many_attempts", "too many failed attempts; try again later")
        response[0].headers["Retry-After"] = str(attempt.wait_seconds)
        return response
    person = attempt.person
    if person is None:
        return error(401, "unauthorized", "wrong username or password")
    token = secrets.token_urlsafe(32)
    db.session.add(
        ApiToken(
            token_hash=hashlib.sha256(token.encode()).hexdigest(),
            person_id=person.id,
            created_at=moment,
            expires_at=moment + timedelta(hours=current_app.config["GRIDLOOP_TOKEN_HOURS"]),
            generation=person.generation,
        )
    )
    answer = {"token": token}
    if person.password_initial:
        answer["password_change_required"] = True
    db.session.commit()
    return jsonify(answer), 201


@bp.delete("/tokens")
@token_required
def revoke_token():
    """Revoke the calling token (the other tokens and sessions of the person stay)."""
    db.session.delete(g.token)
    db.session.commit()
    return "", 204


@bp.get("/me")
@token_required
def me():
    person = g.person
    return jsonify(
        {
            "username": person.username,
            "name": person.name,
            "positions": [
                {
                    "role": p.role,
                    "unit": {"code": p.unit.code, "name": p.unit.name, "level": p.unit.level},
                }
                for p in sorted(person.positions, key=lambda p: (p.role, p.unit.code))
            ],
        }
    )


@bp.post("/cases")
@token_required
@writes
def open_case():
    if "info_officer" not in g.viewer.roles:  # who, before what they sent (DESIGN §4)
        raise Forbidden("only information officers open cases")
    body = parse(schemas.CaseIn)
    case = runtime().open_case(db.session, g.viewer, **body)
    return jsonify(case_json(case, open_items_of([case.id])[case.id])), 201


@bp.get("/cases")
@token_required
def list_cases():
    """The case browser (engine/case_search.py): the caller's cases narrowed by the query's
    filters, newest first in keyset pages."""
    args = parse(schemas.CaseListArgs, request.args.to_dict())
    if "category" in args and args["category"] not in words().known["category"]:
        raise Invalid("the request has errors", {"category": "not a category of any version"})
    unit = covered_unit(db.session, g.viewer, args["unit"]) if "unit" in args else None
    filters = schemas.CaseListArgs.filters(args, unit)
    after = decode_cursor(args["cursor"], int)[0] if "cursor" in args else None
    query = search_query(g.viewer, filters, now()).options(joinedload(Case.grid))
    cases, last = case_page(db.session, query, after, PAGE)
    items = open_items_of([c.id for c in cases])
    return jsonify(
        {
            "items": [case_json(c, items[c.id]) for c in cases],
            "next_cursor": encode_cursor([last]) if last else None,
        }
    )


@bp.get("/cases/<number>")
@token_required
def get_case(number: str):
    case = visible_case(number)
    access_log.record(db.session, g.viewer, case.id, "api", now())
    return jsonify(case_json(case, open_items_of([case.id])[case.id]))


@bp.get("/cases/<number>/events")
@token_required
def case_events_api(number: str):
    case = visible_case(number)
    access_log.record(db.session, g.viewer, case.id, "events", now())
    rows = case_events(db.session, case)
    events = [{**as_dict(case.number, row), "hash": row.hash} for row in rows]
    return jsonify({"events": events, "head": rows[-1].hash if rows else "0" * 64})


@bp.get("/inbox")
@token_required
def inbox():
    args = parse(schemas.InboxArgs, request.args.to_dict())
    known = words().known["category"]
    if "category" in args and args["category"] not in known:
        raise Invalid("the request has errors", {"category": "not a category of any version"})
    after = decode_inbox_key(args["cursor"]) if "cursor" in args else None
    items, key = inbox_page(
        db.session,
        g.viewer,
        now(),
        overdue=args.get("overdue"),
        category=args.get("category"),
        after=after,
        limit=PAGE,
    )
    return jsonify({"items": [item_json(i) for i in items], "next_cursor": encode_inbox_key(key)})


@bp.post("/work-items/<int:item_id>/claim")
@token_required
@writes
def claim(item_id: int):
    item = runtime().claim(db.session, g.viewer, item_id)
    return jsonify(item_json(item))


@bp.post("/work-items/<int:item_id>/release")
@token_required
@writes
def release(item_id: int):
    item = runtime().release(db.session, g.viewer, item_id)
    return jsonify(item_json(item))


@bp.post("/work-items/<int:item_id>/complete")
@token_required
@writes
def complete(item_id: int):
    body = parse_for_item(schemas.CompleteIn, item_id)
    case = runtime().complete(db.session, g.viewer, item_id, body["data"])
    return jsonify(case_json(case, open_items_of([case.id])[case.id]))


@bp.post("/work-items/<int:item_id>/transfer")
@token_required
@writes
def transfer(item_id: int):
    """转办: send the case of this item (accept, or handling at the grid) to another grid."""
    body = parse_for_item(schemas.TransferIn, item_id)
    case = runtime().transfer(db.session, g.viewer, item_id, body["to"], body["note"])
    return jsonify(case_json(case, open_items_of([case.id])[case.id]))


@bp.get("/openapi.json")
def openapi():
    return jsonify(build_openapi())


@bp.post("/photos")
@token_required
@writes
def upload_photo():
    """One photo (multipart: `file`, optional `keep_location`), before the step that attaches it
    by its sha256 (webapp/photos.py)."""
    return jsonify(photos.upload_json(photos.upload(g.viewer))), 201


@bp.get("/cases/<number>/photos/<sha256>")
@token_required
def case_photo(number: str, sha256: str):
    return photos.serve_case_photo(g.viewer, number, sha256)
