"""Campaigns over the JSON API (工作任务, DESIGN §12): launch, list, read, record a visit, the
campaign's chain and its coverage, all under /api/v1 on the api blueprint (so this module is
imported before that blueprint is registered, webapp/__init__.py).

Each route parses the request, checks who may do it before what they sent, and calls one engine
use case (engine/runtime.py's launch_campaign and record_visit, engine/campaigns.py's reads);
engine errors become HTTP in api.py: Invalid 400 with one message per field, Forbidden 403,
NotFound 404 (a campaign or household outside the caller's units), Conflict 409.

A campaign's work items (campaign_return, campaign_confirm) are ordinary items: they are in
GET /inbox (with `case: null` and `campaign: {id, title}`) and are completed through
POST /work-items/{id}/complete like any other.
"""

from __future__ import annotations

from flask import g, jsonify, request
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from engine import campaigns
from engine.case_search import covered_unit
from engine.errors import Forbidden
from engine.events import GENESIS
from engine.models import Case, Household, Unit, Visit

from .api import bp, parse, token_required
from .extensions import db
from .paging import decode_cursor, encode_cursor
from .security import json_body
from .web import now, runtime, writes

UNREACHED = 500  # households listed at most in one coverage answer (`unreached_more` says if cut)


PAGE = 20  # campaigns in one GET /campaigns answer


class ListArgs(Schema):
    """GET /campaigns: where the previous page ended."""

    cursor = fields.String(validate=validate.Length(min=1, max=200))


class CoverageArgs(Schema):
    """GET /campaigns/{id}/coverage: the unit (the campaign's town by default) and whether to
    list the households not reached yet."""

    unit = fields.String(validate=validate.Length(min=1, max=64))
    households = fields.Boolean(load_default=False)


def _campaign_json(campaign) -> dict:
    """DESIGN §12's campaign: its fields and the grids of it the caller's units hold."""
    return campaigns.as_json(campaign, campaigns.grid_states(db.session, g.viewer, campaign, now()))


def _visit_json(visit: Visit) -> dict:
    grid = db.session.scalar(select(Unit.code).where(Unit.id == visit.grid_id))
    number = db.session.scalar(select(Household.number).where(Household.id == visit.household_id))
    case = (
        db.session.scalar(select(Case.number).where(Case.id == visit.case_id))
        if visit.case_id is not None
        else None
    )
    return campaigns.visit_json(visit, grid, number, case)


@bp.post("/campaigns")
@token_required
@writes
def campaign_launch():
    """A town leader launches a campaign to villages, districts and grids: 201 campaign."""
    if campaigns.town_of(g.viewer) is None:  # who, before what they sent (DESIGN §4)
        raise Forbidden("only town leaders launch campaigns")
    campaign = runtime().launch_campaign(db.session, g.viewer, json_body())
    return jsonify(_campaign_json(campaign)), 201


@bp.get("/campaigns")
@token_required
def campaign_list():
    """The campaigns with a grid in the caller's units, newest first, PAGE at a time: pass
    `next_cursor` back as `cursor` for the older ones."""
    args = parse(ListArgs, request.args.to_dict())
    before = decode_cursor(args["cursor"], int)[0] if "cursor" in args else None
    items = campaigns.listed(db.session, g.viewer, before=before, limit=PAGE + 1)
    more, items = len(items) > PAGE, items[:PAGE]
    return jsonify(
        {
            "items": [_campaign_json(c) for c in items],
            "next_cursor": encode_cursor([items[-1].id]) if more else None,
        }
    )


@bp.get("/campaigns/<int:campaign_id>")
@token_required
def campaign_get(campaign_id: int):
    return jsonify(_campaign_json(campaigns.visible(db.session, g.viewer, campaign_id)))


@bp.post("/campaigns/<int:campaign_id>/visits")
@token_required
@writes
def campaign_visit(campaign_id: int):
    """One household's visit: 201, or 200 with the same visit for a client_id already sent."""
    body = json_body()
    visit, created = runtime().record_visit(db.session, g.viewer, campaign_id, body)
    return jsonify(_visit_json(visit)), 201 if created else 200


@bp.get("/campaigns/<int:campaign_id>/events")
@token_required
def campaign_events(campaign_id: int):
    """The campaign's own chain, shaped like a case's events answer: {events, head}; for a
    caller who covers part of the campaign, its own and their grids' events, and the whole
    chain's head."""
    campaign = campaigns.visible(db.session, g.viewer, campaign_id)
    events = campaigns.events_of(db.session, campaign, g.viewer)
    return jsonify({"events": events, "head": campaign.event_head or GENESIS})


@bp.get("/campaigns/<int:campaign_id>/coverage")
@token_required
def campaign_coverage(campaign_id: int):
    """Coverage of a unit the caller covers (the town by default) over the caller's grids;
    with ?households=1 also `unreached`: the first UNREACHED households not visited (for a group
    drive, or not in the group chat), in grid and number order, and `unreached_more`."""
    campaign = campaigns.visible(db.session, g.viewer, campaign_id)
    args = parse(CoverageArgs, request.args.to_dict())
    code = args.get("unit")
    if code is not None:
        covered_unit(db.session, g.viewer, code)  # 404 for a unit outside the caller's
    moment = now()
    answer = campaigns.coverage(db.session, g.viewer, campaign, code, moment)
    if args["households"]:
        rows = campaigns.unreached(
            db.session, g.viewer, campaign, code, moment, limit=UNREACHED + 1
        )
        answer["unreached"] = rows[:UNREACHED]
        answer["unreached_more"] = len(rows) > UNREACHED
    return jsonify(answer)
