"""代理 (cover while away): the page under the account menu where a person names a colleague to
work their items for a span of days, sees their current and upcoming delegations (and those naming
them) and revokes one; and the same as JSON under /api/v1/delegations.

The rules are engine/delegation.py's; who then sees and works what is engine/access.py's. The API
routes live here on the api blueprint (webapp/api.py's plumbing: tokens, errors as §8 says), so
this module is imported before that blueprint is registered (webapp/__init__.py).
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, flash, g, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from marshmallow import ValidationError

from engine import delegation
from engine.clock import iso
from engine.errors import Invalid
from engine.models import TIERS, Delegation, Person

from . import schemas
from .api import bp as api_bp
from .api import flatten_messages, parse, token_required
from .cases import display_names
from .extensions import db
from .web import TIER_NAMES, login_required, now, powers, writes

bp = Blueprint("delegation", __name__)

# The engine's words for a field, in the page's language.
MESSAGES = {
    delegation.REQUIRED: _l("Required"),
    delegation.SELF: _l("You cannot delegate to yourself."),
    delegation.UNKNOWN: _l("Choose a colleague from the list."),
    delegation.NOT_A_COLLEAGUE: _l("Choose a colleague from the list."),
    delegation.PAST: _l("The first day must not be in the past."),
    delegation.TOO_FAR: _l(
        "The first day must be within %(count)s days from today.", count=delegation.AHEAD_DAYS
    ),
    delegation.BEFORE_FIRST: _l("The last day must not be before the first day."),
    delegation.TOO_LONG: _l("At most %(count)s days.", count=delegation.MAX_DAYS),
    delegation.OVERLAPS: _l("You have delegated to this colleague for some of these days already."),
}
# What a field that did not parse needs (the form sends text).
BAD_INPUT = {
    "delegate": _l("Choose a colleague from the list."),
    "from": _l("Enter a date."),
    "to": _l("Enter a date."),
}
STATUS_NAMES = {"active": _l("In force"), "upcoming": _l("Not begun")}


# ------------------------------------------------------------------ the page


@bp.route("/account/delegations", methods=["GET", "POST"])
@login_required
@writes
def index():
    person = current_user.person
    delegation.check_may_delegate(person)
    moment = now()
    first = delegation.today(moment)
    form = {"delegate": "", "from": first.isoformat(), "to": (first + timedelta(6)).isoformat()}
    errors: dict[str, str] = {}
    if request.method == "POST":
        form.update({k: request.form.get(k, "").strip() for k in form})
        try:
            body = schemas.DelegationIn().load(form)
        except ValidationError as exc:
            errors = {
                f: str(BAD_INPUT.get(f, _l("Not valid"))) for f in flatten_messages(exc.messages)
            }
        else:
            try:
                row = delegation.create(
                    db.session, person, body["delegate"], body["from_"], body["to"], moment
                )
            except Invalid as exc:  # refused before anything was written
                errors = {
                    f: str(MESSAGES.get(m, _l("Not valid"))) for f, m in (exc.fields or {}).items()
                }
            else:
                db.session.commit()
                span = delegation.span_of(row)
                name = display_names([row.delegate]).get(row.delegate, row.delegate)
                flash(
                    _(
                        "%(name)s works your tasks from %(first)s to %(last)s.",
                        name=name,
                        first=span.first.isoformat(),
                        last=span.last.isoformat(),
                    )
                )
                return redirect(url_for("delegation.index"))
    rows = delegation.current(db.session, person.username, moment)
    names = display_names({r.delegator for r in rows} | {r.delegate for r in rows})
    return render_template(
        "delegation/index.html",
        colleagues=_colleagues(person),
        form=form,
        errors=errors,
        today=first.isoformat(),
        max_days=delegation.MAX_DAYS,
        given=[_view(r, names, moment) for r in rows if r.delegator == person.username],
        received=[_view(r, names, moment) for r in rows if r.delegate == person.username],
    ), 400 if errors else 200


@bp.post("/account/delegations/<int:delegation_id>/revoke")
@login_required
@writes
def revoke(delegation_id: int):
    row = delegation.revoke(db.session, current_user.person, delegation_id, now())
    db.session.commit()
    name = display_names([row.delegate]).get(row.delegate, row.delegate)
    flash(_("The delegation to %(name)s was revoked.", name=name))
    return redirect(url_for("delegation.index"))


def _colleagues(person: Person) -> list[tuple[str, str]]:
    """(username, label) of everyone who may cover for the person: their name and position."""
    found = []
    for colleague in delegation.eligible_delegates(db.session, person):
        where = [
            f"{TIER_NAMES[p.role]} · {p.unit.name}"
            for p in sorted(colleague.positions, key=lambda p: (TIERS.index(p.role), p.unit.code))
            if p.role in TIERS
        ]
        label = _("%(name)s (%(positions)s)", name=colleague.name, positions="; ".join(where))
        found.append((colleague.username, label))
    return found


def _view(row: Delegation, names: dict[str, str], moment) -> dict:
    span = delegation.span_of(row)
    state = delegation.status(row, moment)
    return {
        "id": row.id,
        "delegator": names.get(row.delegator, row.delegator),
        "delegate": names.get(row.delegate, row.delegate),
        "first": span.first.isoformat(),
        "last": span.last.isoformat(),
        "status": state,
        "status_name": STATUS_NAMES.get(state, state),
    }


# ------------------------------------------------------------------ the inbox badge


@bp.app_template_global()
def offers_delegation() -> bool:
    """The account menu's 代理 link: for people whose positions receive work items."""
    return powers().handles


# ------------------------------------------------------------------ the API


def delegation_json(row: Delegation, names: dict[str, str], moment) -> dict:
    span = delegation.span_of(row)
    return {
        "id": row.id,
        "delegator": {"username": row.delegator, "name": names.get(row.delegator)},
        "delegate": {"username": row.delegate, "name": names.get(row.delegate)},
        "from": span.first.isoformat(),
        "to": span.last.isoformat(),
        "starts_at": iso(row.starts_at),
        "ends_at": iso(row.ends_at),
        "created_at": iso(row.created_at),
        "revoked_at": iso(row.revoked_at),
        "status": delegation.status(row, moment),
    }


@api_bp.get("/delegations")
@token_required
def api_list():
    moment = now()
    rows = delegation.current(db.session, g.person.username, moment)
    names = display_names({r.delegator for r in rows} | {r.delegate for r in rows})
    return jsonify({"items": [delegation_json(r, names, moment) for r in rows]})


@api_bp.post("/delegations")
@token_required
@writes
def api_create():
    delegation.check_may_delegate(g.person)  # who may, before what was sent (DESIGN §4)
    body = parse(schemas.DelegationIn)
    moment = now()
    row = delegation.create(
        db.session, g.person, body["delegate"], body["from_"], body["to"], moment
    )
    db.session.commit()
    names = display_names([row.delegator, row.delegate])
    return jsonify(delegation_json(row, names, moment)), 201


@api_bp.delete("/delegations/<int:delegation_id>")
@token_required
@writes
def api_revoke(delegation_id: int):
    """Revoke (the row stays, with revoked_at): only its delegator may."""
    delegation.revoke(db.session, g.person, delegation_id, now())
    db.session.commit()
    return "", 204
