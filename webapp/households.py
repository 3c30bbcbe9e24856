"""住户名册: a grid's household register on a phone (DESIGN §12), and GET /api/v1/grids/{code}/
households.

The page lists the grid's households (number, head, phone masked, in the group chat or not) under
a "入群 37/52" progress bar. The grid's information officers and leader add households, correct
them and mark one as in the group with one tap; everyone else whose positions cover the grid reads
it. The rules (who sees, who edits, what a household may hold) are engine/households.py's; this
module parses forms, shows the engine's field messages in the page's words and renders. The API
route lives on the api blueprint, so this module is imported before that blueprint is registered
(webapp/__init__.py).
"""

from __future__ import annotations

from flask import Blueprint, flash, g, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from engine import households
from engine.errors import Conflict, Invalid
from engine.models import Unit

from .api import bp as api_bp
from .api import token_required
from .cases import display_names
from .extensions import db
from .web import login_required, viewer, writes

bp = Blueprint("households", __name__)

# The engine's words for a field, in the page's language.
MESSAGES = {
    households.REQUIRED: _l("Required"),
    households.NOT_A_NUMBER: _l("Enter a whole number from 1 upwards."),
    households.TAKEN: _l("Another household of this grid has this number."),
    households.TOO_LONG: _l("At most %(count)s characters.", count=households.MAX_HEAD),
    households.NOT_A_PHONE: _l(
        "Enter a phone number of %(low)s to %(high)s digits.",
        low=households.PHONE_MIN_DIGITS,
        high=households.PHONE_MAX_DIGITS,
    ),
    households.FULL: _l("This grid cannot take more households."),
    households.FROM_FILE: _l(
        "This household comes from the organisation file; ask the administrator to remove it there."
    ),
    households.VISITED: _l(
        "A campaign visit names this household; it stays as proof of the visit."
    ),
}
FIELDS = ("number", "head", "phone")


def _messages(exc: Invalid) -> dict[str, str]:
    return {f: str(MESSAGES.get(m, _l("Not valid"))) for f, m in (exc.fields or {}).items()}


def _checked(name: str) -> bool:
    return request.form.get(name) in ("1", "on", "true")


# ------------------------------------------------------------------ the pages


@bp.get("/households")
@login_required
def index():
    """Where the menu leads: the register of the viewer's own grid, or the grids they cover."""
    me = viewer()
    own = households.own_grids(me)
    if len(own) == 1:
        grid = db.session.get(Unit, own[0])
        if grid is not None and grid.active:
            return redirect(url_for("households.grid", code=grid.code))
    return render_template("households/index.html", grids=households.grids_of(db.session, me))


def _page(
    code: str,
    *,
    add_form: dict | None = None,
    editing: int | None = None,
    edit_form: dict | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
):
    register = households.read_register(db.session, viewer(), code)
    added_by = display_names({e.added_by for e in register.entries if e.added_by})
    blank = {"number": str(register.next_number), "head": "", "phone": "", "in_group": False}
    return render_template(
        "households/grid.html",
        register=register,
        added_by=added_by,
        add_form=add_form or blank,
        add_errors=errors if editing is None and errors else {},
        editing=editing,
        edit_form=edit_form or {},
        edit_errors=errors if editing is not None and errors else {},
        phone_digits=(households.PHONE_MIN_DIGITS, households.PHONE_MAX_DIGITS),
    ), status


@bp.get("/grids/<code>/households")
@login_required
def grid(code: str):
    return _page(code)


@bp.post("/grids/<code>/households")
@login_required
@writes
def add(code: str):
    form = {k: request.form.get(k, "").strip() for k in FIELDS}
    form["in_group"] = _checked("in_group")
    try:
        entry = households.add_household(
            db.session,
            viewer(),
            code,
            number=form["number"],
            head=form["head"],
            phone=form["phone"],
            in_group=form["in_group"],
        )
    except Invalid as exc:
        db.session.rollback()
        return _page(code, add_form=form, errors=_messages(exc), status=400)
    db.session.commit()
    flash(_("Household %(number)s (%(head)s) was added.", number=entry.number, head=entry.head))
    return redirect(url_for("households.grid", code=code, _anchor=f"h-{entry.number}"))


@bp.post("/grids/<code>/households/<int:number>")
@login_required
@writes
def edit(code: str, number: int):
    form = {k: request.form.get(k, "").strip() for k in ("head", "phone")}
    form["in_group"] = _checked("in_group")
    form["clear_phone"] = _checked("clear_phone")
    phone = None if form["clear_phone"] else (form["phone"] or households.KEEP)
    try:
        entry = households.edit_household(
            db.session,
            viewer(),
            code,
            number,
            head=form["head"],
            phone=phone,
            in_group=form["in_group"],
        )
    except Invalid as exc:
        db.session.rollback()
        return _page(code, editing=number, edit_form=form, errors=_messages(exc), status=400)
    db.session.commit()
    flash(_("Household %(number)s was saved.", number=entry.number))
    return redirect(url_for("households.grid", code=code, _anchor=f"h-{entry.number}"))


@bp.post("/grids/<code>/households/<int:number>/remove")
@login_required
@writes
def remove(code: str, number: int):
    """Remove a household an officer added by mistake (not one from the organisation file, nor
    one a campaign visit names: those are refused with the reason)."""
    try:
        entry = households.remove_household(db.session, viewer(), code, number)
    except Conflict as exc:
        db.session.rollback()
        flash(str(MESSAGES.get(exc.message, exc.message)), "error")
        return redirect(url_for("households.grid", code=code, _anchor=f"h-{number}"))
    db.session.commit()
    flash(_("Household %(number)s was removed.", number=entry.number))
    return redirect(url_for("households.grid", code=code))


@bp.post("/grids/<code>/households/<int:number>/in-group")
@login_required
@writes
def in_group(code: str, number: int):
    """One tap: the form says which way (in_group=1 or 0), so sending it twice changes nothing."""
    entry = households.set_in_group(db.session, viewer(), code, number, _checked("in_group"))
    db.session.commit()
    if entry.in_group:
        flash(_("Household %(number)s is in the group.", number=entry.number))
    else:
        flash(_("Household %(number)s is not in the group.", number=entry.number))
    return redirect(url_for("households.grid", code=code, _anchor=f"h-{entry.number}"))


# ------------------------------------------------------------------ the API


@api_bp.get("/grids/<code>/households")
@token_required
def api_households(code: str):
    """DESIGN §12: {items: [{number, head, phone (masked), in_group}]}, with the grid; 404 for a
    grid outside the caller's units."""
    register = households.read_register(db.session, g.viewer, code)
    return jsonify(
        {
            "grid": {"code": register.grid.code, "name": register.grid.name},
            "items": households.as_json(register.entries),
        }
    )
