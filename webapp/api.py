"""The JSON API under /api/v1 (DESIGN §8). Each route parses the request, calls one engine use case
and maps engine errors to HTTP: Invalid 400, Forbidden 403, NotFound 404, Conflict 409."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from functools import wraps

from flask import Blueprint, current_app, g, jsonify, request
from marshmallow import Schema, ValidationError
from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import joinedload
from werkzeug.exceptions import HTTPException

from engine.access import case_scope, inbox_scope, viewer_of
from engine.clock import iso
from engine.errors import Conflict, Forbidden, GridloopError, Invalid, NotFound
from engine.events import as_dict, case_events
from engine.models import ApiToken, Case, CaseDepartment, Person, Unit, WorkItem
from engine.org import authenticate

from . import schemas
from .extensions import db
from .openapi import build_openapi

bp = Blueprint("api", __name__, url_prefix="/api/v1")
PAGE = 50
MAX_ID = 2**63 - 1
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
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
    """HTTP errors under /api/ in the §8 shape (errors.py routes them here)."""
    return error(exc.code or 500, exc.name.lower().replace(" ", "_"), exc.description or exc.name)


def services():
    return current_app.extensions["gridloop"]


def runtime():
    return services().runtime


def now() -> datetime:
    return runtime().clock.now()


def parse(schema: type[Schema], source: dict | None = None) -> dict:
    """Load a request body or query with a marshmallow schema; 400 with one message per field."""
    if source is None:
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            raise Invalid("the body must be a JSON object", {"body": "must be a JSON object"})
        source = payload
    try:
        return schema().load(source)
    except ValidationError as exc:
        raise Invalid("the request has errors", _flatten(exc.messages)) from exc


def _flatten(messages, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in messages.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value[0] if isinstance(value, list) else str(value)
    return flat


def token_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return error(401, "unauthorized", "a Bearer token is required")
        digest = hashlib.sha256(header[7:].strip().encode()).hexdigest()
        token = db.session.get(ApiToken, digest)
        person = db.session.get(Person, token.person_id) if token else None
        if token is None or token.expires_at <= now() or person is None or not person.active:
            return error(401, "unauthorized", "the token is invalid or expired")
        g.person = person
        g.viewer = viewer_of(db.session, person)
        return view(*args, **kwargs)

    return wrapper


def encode_cursor(values: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(text: str, *kinds: type) -> list:
    """A cursor this API gave out: a list of the given kinds, ids in the database's range."""
    bad = Invalid("bad cursor", {"cursor": "not a cursor this API gave out"})
    try:
        padded = text + "=" * (-len(text) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded))
    except ValueError as exc:
        raise bad from exc
    if not isinstance(values, list) or len(values) != len(kinds):
        raise bad
    for value, kind in zip(values, kinds, strict=True):
        if type(value) is not kind or (kind is int and not 0 < value <= MAX_ID):
            raise bad
    return values


# ------------------------------------------------------------------ serializers


def case_json(case: Case, open_items: list[WorkItem]) -> dict:
    moment = now()
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
        "due_at": iso(case.due_at),
        "overdue": any(i.due_at is not None and i.due_at < moment for i in open_items),
        "opened_at": iso(case.opened_at),
        "closed_at": iso(case.closed_at),
        "satisfaction": case.satisfaction,
        "reopen_count": case.reopen_count,
        "diagram": case.diagram.sha256,
    }


def open_items_of(case_ids: list[int]) -> dict[int, list[WorkItem]]:
    found: dict[int, list[WorkItem]] = {cid: [] for cid in case_ids}
    if case_ids:
        rows = db.session.scalars(
            select(WorkItem).where(WorkItem.case_id.in_(case_ids), WorkItem.completed_at.is_(None))
        )
        for item in rows:
            found[item.case_id].append(item)
    return found


def item_json(item: WorkItem) -> dict:
    case = item.case
    spec = runtime().registry.get(case.diagram)
    return {
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
        "overdue": item.completed_at is None and item.due_at is not None and item.due_at < now(),
        "claimed_by": item.claimed_by,
        "form": spec.forms[item.form],
    }


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
    body = parse(schemas.TokenIn)
    person = authenticate(db.session, body["username"], body["password"], services().passwords)
    if person is None:
        return error(401, "unauthorized", "wrong username or password")
    token = secrets.token_urlsafe(32)
    moment = now()
    db.session.add(
        ApiToken(
            token_hash=hashlib.sha256(token.encode()).hexdigest(),
            person_id=person.id,
            created_at=moment,
            expires_at=moment + timedelta(hours=current_app.config["GRIDLOOP_TOKEN_HOURS"]),
        )
    )
    db.session.commit()
    return jsonify({"token": token}), 201


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
def open_case():
    body = parse(schemas.CaseIn)
    case = runtime().open_case(db.session, g.viewer, **body)
    return jsonify(case_json(case, open_items_of([case.id])[case.id])), 201


@bp.get("/cases")
@token_required
def list_cases():
    args = parse(schemas.CaseListArgs, request.args.to_dict())
    query = select(Case).options(joinedload(Case.grid)).where(case_scope(g.viewer))
    if "status" in args:
        query = query.where(Case.status == args["status"])
    if "unit" in args:
        query = query.where(_in_unit(args["unit"]))
    if "cursor" in args:
        (last_id,) = decode_cursor(args["cursor"], int)
        query = query.where(Case.id < last_id)
    cases = list(db.session.scalars(query.order_by(Case.id.desc()).limit(PAGE + 1)))
    more = len(cases) > PAGE
    cases = cases[:PAGE]
    items = open_items_of([c.id for c in cases])
    return jsonify(
        {
            "items": [case_json(c, items[c.id]) for c in cases],
            "next_cursor": encode_cursor([cases[-1].id]) if more else None,
        }
    )


def _in_unit(code: str):
    unit = db.session.scalars(select(Unit).where(Unit.code == code)).first()
    if unit is None:
        raise Invalid("unknown unit", {"unit": "unknown unit"})
    if unit.level == "department":
        return Case.id.in_(select(CaseDepartment.case_id).where(CaseDepartment.unit_id == unit.id))
    column = {
        "town": Case.town_id,
        "village": Case.village_id,
        "district": Case.district_id,
        "grid": Case.grid_id,
    }[unit.level]
    return column == unit.id


@bp.get("/cases/<number>")
@token_required
def get_case(number: str):
    case = visible_case(number)
    return jsonify(case_json(case, open_items_of([case.id])[case.id]))


@bp.get("/cases/<number>/events")
@token_required
def case_events_api(number: str):
    case = visible_case(number)
    rows = case_events(db.session, case)
    events = [{**as_dict(case.number, row), "hash": row.hash} for row in rows]
    return jsonify({"events": events, "head": rows[-1].hash if rows else "0" * 64})


@bp.get("/inbox")
@token_required
def inbox():
    args = parse(schemas.InboxArgs, request.args.to_dict())
    due = func.coalesce(WorkItem.due_at, FAR_FUTURE)
    query = (
        select(WorkItem)
        .options(joinedload(WorkItem.case).joinedload(Case.grid), joinedload(WorkItem.unit))
        .join(Case, Case.id == WorkItem.case_id)
        .where(WorkItem.completed_at.is_(None), inbox_scope(g.viewer))
    )
    if "overdue" in args:
        moment = now()
        query = query.where(
            WorkItem.due_at < moment
            if args["overdue"]
            else func.coalesce(WorkItem.due_at, FAR_FUTURE) >= moment
        )
    if "category" in args:
        query = query.where(Case.category == args["category"])
    if "cursor" in args:
        last_text, last_id = decode_cursor(args["cursor"], str, int)
        try:
            last_due = datetime.fromisoformat(last_text)
        except ValueError as exc:
            raise Invalid("bad cursor", {"cursor": "not a cursor this API gave out"}) from exc
        if last_due.tzinfo is None:
            raise Invalid("bad cursor", {"cursor": "not a cursor this API gave out"})
        query = query.where(tuple_(due, WorkItem.id) > tuple_(last_due, last_id))
    items = list(db.session.scalars(query.order_by(due, WorkItem.id).limit(PAGE + 1)))
    more = len(items) > PAGE
    items = items[:PAGE]
    cursor = None
    if more:
        last = items[-1]
        cursor = encode_cursor([(last.due_at or FAR_FUTURE).isoformat(), last.id])
    return jsonify({"items": [item_json(i) for i in items], "next_cursor": cursor})


@bp.post("/work-items/<int:item_id>/claim")
@token_required
def claim(item_id: int):
    item = runtime().claim(db.session, g.viewer, item_id)
    return jsonify(item_json(item))


@bp.post("/work-items/<int:item_id>/release")
@token_required
def release(item_id: int):
    item = runtime().release(db.session, g.viewer, item_id)
    return jsonify(item_json(item))


@bp.post("/work-items/<int:item_id>/complete")
@token_required
def complete(item_id: int):
    body = parse(schemas.CompleteIn)
    case = runtime().complete(db.session, g.viewer, item_id, body["data"])
    return jsonify(case_json(case, open_items_of([case.id])[case.id]))


@bp.get("/openapi.json")
def openapi():
    return jsonify(build_openapi())
