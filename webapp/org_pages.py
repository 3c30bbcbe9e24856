"""The organisation for administrators (/admin/org): the hierarchy town → villages → districts →
grids with who holds each position and each grid's households; the coverage report (定格定人定责);
the open cases whose owner was deactivated or left the grid, to hand to another officer; people
(deactivate, reactivate, reset a password, move a position); and the organisation file, uploaded
(.yaml or .xlsx, nothing imported on error) or downloaded.

Administrators only: a signed-in non-administrator gets 403 on every page. The rules are in
engine/org_admin.py, engine/coverage.py and engine/org_xlsx.py; every change they make goes into
the administration log in the same transaction as the change, committed here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy import func, or_, select
from sqlalchemy.orm import selectinload

from engine import admin_log, coverage, org_admin, org_xlsx
from engine.clock import SHANGHAI
from engine.errors import Conflict, Forbidden, GridloopError, Invalid, NotFound
from engine.models import TIERS, Case, Household, Liaison, Person, Position, Unit
from engine.org import OrgFileError
from engine.specs import OPEN_STATUSES

from . import services
from .errors import shown
from .extensions import csrf, db
from .security import download
from .web import TIER_NAMES, login_required, now, viewer, writes

bp = Blueprint("org", __name__, url_prefix="/admin/org")

UPLOAD_BODY = 16 * 1024 * 1024  # an organisation file with every household's head: a few MB
PEOPLE_PAGE = 100
LEVEL_NAMES = {
    "town": _l("Town"),
    "department": _l("Department"),
    "village": _l("Village"),
    "district": _l("District"),
    "grid": _l("Grid"),
}
MISSING_NAMES = {
    "village_secretary": _l("no village party secretary"),
    "liaison": _l("no liaison town leader"),
    "district_leader": _l("no district leader"),
    "grid_leader": _l("no grid leader"),
    "info_officer": _l("no information officer"),
}
REASON_NAMES = {
    "nobody": _l("Nobody can see it"),
    "owner_deactivated": _l("Owner deactivated: the grid's officers see it"),
    "deactivated": _l("Owner deactivated"),
    "left_grid": _l("Owner no longer serves this grid"),
}
# What an import changed (engine/org.py ImportReport), in words.
REPORT_NAMES = {
    "units_created": _l("Units added"),
    "units_updated": _l("Units changed"),
    "units_deactivated": _l("Units closed"),
    "people_created": _l("People added"),
    "people_updated": _l("People changed"),
    "people_deactivated": _l("People deactivated"),
    "people_reactivated": _l("People reactivated"),
    "positions_added": _l("Positions added"),
    "positions_removed": _l("Positions removed"),
    "liaisons_added": _l("Liaisons added"),
    "liaisons_removed": _l("Liaisons removed"),
    "households_added": _l("Households added"),
    "households_updated": _l("Households changed"),
    "households_removed": _l("Households removed"),
    "passwords_set": _l("Passwords set"),
    "claims_released": _l("Claimed items given back"),
}
# The engine's refusals, in the page's language.
MESSAGES = {
    org_admin.CANNOT_MOVE: _l("This position cannot be moved."),
    org_admin.NOT_THAT_LEVEL: _l("Choose a unit of the position's level."),
    org_admin.HELD_THERE: _l("The person holds this position there already."),
    org_admin.TAKEN: _l("That unit has one already: move or deactivate its holder first."),
    org_admin.NOT_AN_OFFICER: _l("Choose an active information officer of the case's grid."),
}
ROLE_ORDER = {role: i for i, role in enumerate((*TIERS[::-1], "department_officer", "auditor",
                                                 "admin"))}  # fmt: skip


def _admin_only() -> None:
    if not viewer().is_admin:
        raise Forbidden(_("Only administrators may open this page."))


def _refusal(exc: GridloopError) -> str:
    """An engine refusal in words for the page."""
    if exc.message in MESSAGES:
        return str(MESSAGES[exc.message])
    return shown(exc.message) or _("That could not be done.")


# ------------------------------------------------------------------ the hierarchy


@dataclass
class Node:
    unit: Unit
    holders: dict[str, list[Person]] = field(default_factory=dict)  # role -> people
    children: list[Node] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)  # what coverage finds missing
    unseen: int = 0  # open items nobody active sees, here and below
    liaisons: list[Person] = field(default_factory=list)  # villages: liaison town leaders


def _tree() -> tuple[Node | None, list[Node]]:
    """The active town with its villages, districts and grids, and the departments."""
    units = {u.id: u for u in db.session.scalars(select(Unit).where(Unit.active))}
    nodes = {unit_id: Node(unit) for unit_id, unit in units.items()}
    positions = db.session.execute(
        select(Position.role, Position.unit_id, Person).join(
            Person, Person.id == Position.person_id
        )
    ).all()
    for role, unit_id, person in sorted(positions, key=lambda r: (r[2].username,)):
        if unit_id in nodes:
            nodes[unit_id].holders.setdefault(role, []).append(person)
    for village_id, person in db.session.execute(
        select(Liaison.village_id, Person).join(Person, Person.id == Liaison.person_id)
    ):
        if village_id in nodes:
            nodes[village_id].liaisons.append(person)
    gaps = defaultdict(list)
    for gap in coverage.gaps(db.session):
        gaps[gap.code].append(str(MISSING_NAMES[gap.missing]))
    unseen = coverage.unseen_by_unit(db.session)
    for unit_id, node in nodes.items():
        node.gaps = gaps.get(node.unit.code, [])
        node.unseen = unseen.get(unit_id, 0)
    town = None
    departments = []
    for node in sorted(nodes.values(), key=lambda n: n.unit.code):
        parent = nodes.get(node.unit.parent_id) if node.unit.parent_id else None
        if node.unit.level == "town":
            town = town or node
        elif node.unit.level == "department":
            departments.append(node)
        elif parent is not None:
            parent.children.append(node)
    for node in _walk(town):  # the items nobody sees, counted on each unit above them too
        node.unseen += sum(child.unseen for child in node.children)
    return town, departments


def _walk(node: Node | None):
    """Nodes bottom-up (children before their parent)."""
    if node is None:
        return
    for child in node.children:
        yield from _walk(child)
    yield node


@bp.get("")
@login_required
def index():
    _admin_only()
    town, departments = _tree()
    return render_template("org/index.html", town=town, departments=departments)


@bp.get("/grids/<code>")
@login_required
def grid(code: str):
    _admin_only()
    unit = db.session.scalars(select(Unit).where(Unit.code == code, Unit.level == "grid")).first()
    if unit is None:
        raise NotFound(_("No such grid."))
    households = db.session.scalars(
        select(Household).where(Household.grid_id == unit.id).order_by(Household.number)
    ).all()
    holders = db.session.execute(
        select(Position.role, Person)
        .join(Person, Person.id == Position.person_id)
        .where(Position.unit_id == unit.id)
        .order_by(Person.username)
    ).all()
    chain = []
    parent = unit.parent
    while parent is not None:
        chain.append(parent)
        parent = parent.parent
    return render_template(
        "org/grid.html",
        unit=unit,
        chain=chain[::-1],
        households=households,
        positions=sorted(holders, key=lambda r: ROLE_ORDER.get(r[0], 99)),
        orphaned=coverage.orphaned_cases(db.session, grid_code=unit.code),
    )


# ------------------------------------------------------------------ coverage


@bp.get("/coverage")
@login_required
def coverage_page():
    _admin_only()
    found = coverage.report(db.session)
    return render_template(
        "org/coverage.html",
        report=found,
        missing_names=MISSING_NAMES,
        reason_names=REASON_NAMES,
        level_names=LEVEL_NAMES,
    )


# ------------------------------------------------------------------ owners to reassign


@bp.get("/owners")
@login_required
def owners():
    _admin_only()
    return _owners_page()


def _owners_page(error: str | None = None, failed: str | None = None, status: int = 200):
    cases = coverage.orphaned_cases(db.session)
    return render_template(
        "org/owners.html", cases=cases, reason_names=REASON_NAMES, error=error, failed=failed
    ), status


@bp.post("/owners/<number>")
@login_required
@writes
def reassign(number: str):
    _admin_only()
    to = request.form.get("to", "").strip()
    try:
        org_admin.reassign_owner(db.session, now(), current_user.person.username, number, to)
    except (Invalid, Conflict) as exc:
        db.session.rollback()
        return _owners_page(_refusal(exc), number, 400 if isinstance(exc, Invalid) else 409)
    db.session.commit()
    name = _name_of(to)
    flash(_("Case %(number)s now belongs to %(name)s.", number=number, name=name))
    return redirect(url_for("org.owners"))


def _name_of(username: str) -> str:
    return db.session.scalar(select(Person.name).where(Person.username == username)) or username


# ------------------------------------------------------------------ people


@bp.get("/people")
@login_required
def people():
    _admin_only()
    q = request.args.get("q", "").replace("\x00", "").strip()[:100]  # PostgreSQL: no NUL
    state = request.args.get("state", "")
    query = select(Person).options(selectinload(Person.positions)).order_by(Person.username)
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(Person.username.like(pattern, escape="\\"), Person.name.like(pattern, escape="\\"))
        )
    if state == "inactive":
        query = query.where(Person.active.is_(False))
    found = db.session.scalars(query.limit(PEOPLE_PAGE + 1)).all()
    return render_template(
        "org/people.html",
        people=found[:PEOPLE_PAGE],
        more=len(found) > PEOPLE_PAGE,
        q=q,
        state=state,
    )


@bp.get("/people/<username>")
@login_required
def person(username: str):
    _admin_only()
    return _person_page(org_admin.person_named(db.session, username))


def _person_page(person: Person, error: str | None = None, status: int = 200, **extra):
    positions = sorted(person.positions, key=lambda p: (ROLE_ORDER.get(p.role, 99), p.unit.code))
    targets = {}
    for position in positions:
        if position.role in org_admin.MOVABLE:
            level = position.unit.level
            targets[position.id] = db.session.execute(
                select(Unit.code, Unit.name)
                .where(Unit.active, Unit.level == level, Unit.id != position.unit_id)
                .order_by(Unit.code)
            ).all()
    liaises = db.session.scalars(
        select(Unit.code)
        .join(Liaison, Liaison.village_id == Unit.id)
        .where(Liaison.person_id == person.id)
        .order_by(Unit.code)
    ).all()
    owned = db.session.scalar(
        select(func.count()).where(Case.owner == person.username, Case.status.in_(OPEN_STATUSES))
    )
    return render_template(
        "org/person.html",
        person=person,
        positions=positions,
        targets=targets,
        liaises=liaises,
        owned=owned,
        error=error,
        **extra,
    ), status


def _act(username: str, action) -> Response | tuple:
    """Run an engine change on a person, commit it, or show the person page with the refusal."""
    target = org_admin.person_named(db.session, username)
    try:
        message = action(target)
    except (Invalid, Conflict) as exc:
        db.session.rollback()
        target = org_admin.person_named(db.session, username)
        return _person_page(target, _refusal(exc), 400 if isinstance(exc, Invalid) else 409)
    db.session.commit()
    flash(message)
    return redirect(url_for("org.person", username=username))


@bp.post("/people/<username>/deactivate")
@login_required
@writes
def deactivate(username: str):
    _admin_only()

    def action(target: Person) -> str:
        done = org_admin.deactivate(db.session, now(), current_user.person.username, username)
        return _(
            "%(name)s can no longer sign in. Claims given back: %(claims)s; open cases they own: %(cases)s.",
            name=target.name,
            claims=done.claims_released,
            cases=done.open_cases_owned,
        )

    return _act(username, action)


@bp.post("/people/<username>/reactivate")
@login_required
@writes
def reactivate(username: str):
    _admin_only()

    def action(target: Person) -> str:
        org_admin.reactivate(db.session, now(), current_user.person.username, username)
        return _("%(name)s can sign in again.", name=target.name)

    return _act(username, action)


@bp.post("/people/<username>/move")
@login_required
@writes
def move(username: str):
    _admin_only()
    role = request.form.get("role", "")
    source = request.form.get("from", "")
    target_code = request.form.get("to", "")

    def action(target: Person) -> str:
        released = org_admin.move_position(
            db.session,
            now(),
            current_user.person.username,
            username,
            role,
            source,
            target_code,
        )
        return _(
            "%(name)s is now %(role)s of %(unit)s. Claims given back: %(claims)s.",
            name=target.name,
            role=TIER_NAMES.get(role, role),
            unit=target_code,
            claims=released,
        )

    return _act(username, action)


@bp.post("/people/<username>/password")
@login_required
@writes
def reset_password(username: str):
    """The new password is shown on this answer only (never in a redirect or a flash, which the
    session cookie would carry); the person must choose their own at the next sign-in."""
    _admin_only()
    target = org_admin.person_named(db.session, username)
    temporary = org_admin.reset_password(
        db.session,
        now(),
        current_user.person.username,
        username,
        services(current_app).passwords,
    )
    db.session.commit()
    return render_template("org/password.html", person=target, temporary=temporary)


# ------------------------------------------------------------------ the organisation file


@bp.get("/import")
@login_required
def import_page():
    _admin_only()
    return _import_page()


def _import_page(status: int = 200, **values):
    values.setdefault("problems", None)
    values.setdefault("imported", None)
    return render_template("org/import.html", **values), status


@bp.post("/import")
@login_required
@writes
@csrf.exempt  # checked below, once the body may be as large as an organisation file
def import_upload():
    _admin_only()  # who may, before the body (the CSRF token's form) is read
    request.max_content_length = UPLOAD_BODY
    if current_app.config.get("WTF_CSRF_ENABLED", True):
        try:
            csrf.protect()
        except CSRFError:
            return _import_page(400, problems=[_("The page has expired. Reload it and try again.")])
    sent = request.files.get("file")
    fmt = org_xlsx.format_of(sent.filename or "") if sent is not None else None
    if sent is None or fmt is None:
        return _import_page(400, problems=[_("Choose a .yaml or .xlsx organisation file.")])
    content = sent.stream.read(UPLOAD_BODY + 1)
    try:
        imported = org_xlsx.import_file(
            db.session,
            content,
            fmt,
            services(current_app).passwords,
            actor=current_user.person.username,
            now=now(),
            reset_passwords=request.form.get("reset_passwords") == "1",
        )
    except OrgFileError as exc:
        db.session.rollback()
        problems = [_problem(*problem) for problem in exc.errors]
        return _import_page(400, problems=problems, filename=sent.filename)
    db.session.commit()
    changes = [(REPORT_NAMES.get(k, k), v) for k, v in asdict(imported.report).items() if v]
    return _import_page(imported=imported, changes=changes, filename=sent.filename)


def _problem(line: int, path: str, message: str) -> str:
    where = [_("line %(line)s", line=line)] if line else []
    if path:
        where.append(path)
    return ": ".join([*where, message])


@bp.get("/export.<fmt>")
@login_required
def export(fmt: str):
    _admin_only()
    if fmt not in org_xlsx.FORMATS:
        raise NotFound(_("No such format."))
    content = org_xlsx.export_file(db.session, fmt)
    # The file holds residents' phones: who took a copy is on the record.
    admin_log.record(db.session, now(), viewer().username, "org_exported", {"format": fmt})
    db.session.commit()
    day = now().astimezone(SHANGHAI).date().isoformat()
    kind = org_xlsx.XLSX_TYPE if fmt == "xlsx" else org_xlsx.YAML_TYPE
    return download(Response(content, content_type=kind), f"organisation-{day}.{fmt}")
