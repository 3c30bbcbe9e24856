"""Diagram versions for administrators (DESIGN §8; issue 10, item 3): the API's /diagrams calls on
the api blueprint, and the pages under /admin/diagrams — the versions with the live one marked and
the cases running on each, activation (rollback) with a comment after a confirmation, and a
readable diff between any two versions.

Thin adapters over engine/versions.py: deploy_bundle validates (engine/validation.py) and records
the administration log; this module checks that the caller is an administrator, parses what they
sent, commits and renders. Everyone else gets 403, auditors included.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from flask import (
    Blueprint,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from engine import versions
from engine.access import Viewer
from engine.diagram_diff import Change, diff_bundles
from engine.errors import Conflict, Forbidden, Invalid
from engine.models import DiagramVersion, Person
from engine.specs import BUNDLE_DIRS, BUNDLE_MAX_FILES, BUNDLE_SUFFIXES, Bundle, DiagramError
from engine.validation import BundleInvalid, Problem

from .api import bp as api_bp
from .api import parse, token_required
from .extensions import db
from .web import login_required, now, runtime, viewer, writes

bp = Blueprint("diagrams", __name__, url_prefix="/admin/diagrams")

MAX_FILES = BUNDLE_MAX_FILES
MAX_PATH = 200
MAX_COMMENT = 2000
SYSTEM = "system"  # who deployed the repository's bundle (gridloop init-db)


def _admin_only(me: Viewer) -> None:
    if not me.is_admin:
        raise Forbidden(_("Only administrators may manage diagram versions."))


# ------------------------------------------------------------------ input


def _no_nul(text: str) -> None:
    """PostgreSQL's text columns cannot hold NUL: refused as the field's error, not a 500."""
    if "\x00" in text:
        raise ValidationError("may not hold a NUL character")


class DeployIn(Schema):
    files = fields.Dict(keys=fields.Str(), values=fields.Str(), required=True)
    comment = fields.Str(load_default="", validate=[validate.Length(max=MAX_COMMENT), _no_nul])
    activate = fields.Bool(load_default=True)


class ActivateIn(Schema):
    comment = fields.Str(load_default="", validate=[validate.Length(max=MAX_COMMENT), _no_nul])


def bundle_of(files: dict[str, str]) -> Bundle:
    """The bundle a request sends, or Invalid naming the first path that cannot be one of its
    files: a bundle is the whole of workflows/bpmn/ and rules/ (.bpmn, .dmn, .json), by POSIX
    paths from the repository root, as `gridloop diagrams deploy` reads them."""
    if not files:
        raise Invalid("the request has errors", {"files": "a bundle needs at least one file"})
    if len(files) > MAX_FILES:
        raise Invalid("the request has errors", {"files": f"at most {MAX_FILES} files"})
    for path, text in files.items():
        problem = _path_problem(path)
        if problem is None and "\x00" in text:
            problem = "a file may not hold a NUL character"
        if problem:
            raise Invalid("the request has errors", {f"files.{path[:MAX_PATH]}": problem})
    return Bundle(dict(files))


def _path_problem(path: str) -> str | None:
    pure = PurePosixPath(path)
    if (
        not path
        or len(path) > MAX_PATH
        or path != str(pure)
        or pure.is_absolute()
        or any(part in ("", ".", "..") for part in path.split("/"))
        or "\\" in path
        or "\x00" in path
    ):
        return "not a relative POSIX path"
    if not any(path.startswith(folder + "/") for folder in BUNDLE_DIRS):
        return f"a bundle's files lie under {' or '.join(d + '/' for d in BUNDLE_DIRS)}"
    if pure.suffix not in BUNDLE_SUFFIXES:
        return f"a bundle's files end in {', '.join(BUNDLE_SUFFIXES)}"
    return None


def _problems_of(exc: DiagramError) -> list[Problem]:
    if isinstance(exc, BundleInvalid):
        return exc.problems
    return [Problem(exc.file, exc.element, str(exc))]


def invalid_bundle(problems: list[Problem]):
    """400 invalid_bundle with every problem (DESIGN §8)."""
    body = {
        "code": "invalid_bundle",
        "message": "the bundle was refused and the live version is unchanged",
        "problems": [p.as_json() for p in problems],
    }
    return jsonify({"error": body}), 400


def _committed(work):
    """Run a deploy or an activation and commit it. Two administrators changing versions at
    once collide on the version's hash or on the administration log's seq (at a flush or at the
    commit), and the later one is told to retry, nothing of theirs kept."""
    try:
        result = work()
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise Conflict(
            "another administrator changed the diagram versions at the same moment; try again"
        ) from exc
    return result


def _deploy(me: Viewer, files: dict[str, str], comment: str, activate: bool):
    """((version, created), []) when deployed; (None, problems) when refused."""
    bundle = bundle_of(files)
    try:
        done = _committed(
            lambda: versions.deploy_bundle(
                db.session, runtime().registry, bundle, me.username, now(), comment, activate
            )
        )
    except DiagramError as exc:
        db.session.rollback()
        return None, _problems_of(exc)
    return done, []


def _activate(me: Viewer, sha: str, comment: str) -> DiagramVersion:
    version = versions.find_version(db.session, sha)
    return _committed(
        lambda: versions.activate_version(db.session, version, me.username, now(), comment)
    )


# ------------------------------------------------------------------ API


@api_bp.get("/diagrams")
@token_required
def list_api():
    _admin_only(g.viewer)
    return jsonify({"items": [v.as_json() for v in versions.list_versions(db.session)]})


@api_bp.get("/diagrams/<sha256>")
@token_required
def get_api(sha256: str):
    _admin_only(g.viewer)
    version = versions.find_version(db.session, sha256)
    return jsonify(versions.version_info(db.session, version).as_json(files=True))


@api_bp.post("/diagrams")
@token_required
@writes
def deploy_api():
    _admin_only(g.viewer)
    body = parse(DeployIn)
    done, problems = _deploy(g.viewer, body["files"], body["comment"], body["activate"])
    if problems:
        return invalid_bundle(problems)
    version, created = done
    return jsonify(versions.version_info(db.session, version).as_json()), 201 if created else 200


@api_bp.post("/diagrams/<sha256>/activate")
@token_required
@writes
def activate_api(sha256: str):
    _admin_only(g.viewer)
    body = parse(ActivateIn)
    version = _activate(g.viewer, sha256, body["comment"])
    return jsonify(versions.version_info(db.session, version).as_json())


@api_bp.get("/diagrams/<a>/diff/<b>")
@token_required
def diff_api(a: str, b: str):
    _admin_only(g.viewer)
    return jsonify(versions.diff_versions(db.session, a, b).as_json())


# ------------------------------------------------------------------ pages

KIND_NAMES = {
    "process": _l("Process"),
    "collaboration": _l("Collaboration"),
    "participant": _l("Pool"),
    "laneSet": _l("Lane set"),
    "lane": _l("Lane"),
    "startEvent": _l("Start event"),
    "endEvent": _l("End event"),
    "boundaryEvent": _l("Boundary event"),
    "intermediateCatchEvent": _l("Intermediate event"),
    "intermediateThrowEvent": _l("Intermediate event"),
    "userTask": _l("User task"),
    "scriptTask": _l("Script task"),
    "serviceTask": _l("Service task"),
    "businessRuleTask": _l("Business rule task"),
    "manualTask": _l("Manual task"),
    "task": _l("Plain task"),
    "callActivity": _l("Call activity"),
    "subProcess": _l("Subprocess"),
    "exclusiveGateway": _l("Exclusive gateway"),
    "parallelGateway": _l("Parallel gateway"),
    "inclusiveGateway": _l("Inclusive gateway"),
    "eventBasedGateway": _l("Event-based gateway"),
    "sequenceFlow": _l("Sequence flow"),
    "signal": _l("Signal definition"),
    "message": _l("Message definition"),
    "error": _l("Error definition"),
    "textAnnotation": _l("Annotation"),
    "association": _l("Association"),
    "decision": _l("Decision"),
    "decisionTable": _l("Decision table"),
    "input": _l("Table input"),
    "output": _l("Table output"),
    "inputData": _l("Input data"),
    "rule": _l("Rule row"),
    "form": _l("Form as a whole"),
    "field": _l("Form field"),
}
CHILD_NAMES = {
    "conditionExpression": _l("Condition"),
    "script": _l("Script"),
    "preScript": _l("Script before"),
    "postScript": _l("Script after"),
    "timerEventDefinition/timeDate": _l("Timer (date)"),
    "timerEventDefinition/timeDuration": _l("Timer (duration)"),
    "timerEventDefinition/timeCycle": _l("Timer (cycle)"),
    "incoming": _l("Incoming flows"),
    "outgoing": _l("Outgoing flows"),
    "flowNodeRef": _l("Elements in the lane"),
    "documentation": _l("Documentation"),
    "inputExpression/text": _l("Input expression"),
}
ATTRIBUTE_NAMES = {
    "name": _l("Element name"),
    "sourceRef": _l("Flow from"),
    "targetRef": _l("Flow to"),
    "attachedToRef": _l("Attached to"),
    "cancelActivity": _l("Interrupting"),
    "hitPolicy": _l("Hit policy"),
    "label": _l("Column label"),
    "default": _l("Default flow"),
}


def change_label(change: Change) -> str:
    """What a changed facet is, in the page's language."""
    if change.what == "attribute":
        known = ATTRIBUTE_NAMES.get(change.name)
        return str(known) if known else _("Attribute %(name)s", name=change.name)
    if change.what == "property":
        return _("Property %(name)s", name=change.name)
    if change.what == "child":
        known = CHILD_NAMES.get(change.name)
        return str(known) if known else change.name
    if change.what == "input":
        return _("Input: %(column)s", column=change.name)
    if change.what == "output":
        return _("Output: %(column)s", column=change.name)
    if change.what == "annotation":
        return _("Annotation %(n)s", n=change.name)
    if change.what == "description":
        return _("Row description")
    if change.what == "required":
        return _("Field required")
    if change.what in ("schema", "form"):
        return _("Schema keyword %(name)s", name=change.name)
    return change.name


def kind_label(kind: str) -> str:
    known = KIND_NAMES.get(kind)
    return str(known) if known else kind


def shown_value(value: str | None) -> str:
    """A facet's value as the page shows it: whether a field is required, in words."""
    if value == "yes":
        return _("required")
    if value == "no":
        return _("optional")
    return value or ""


@bp.context_processor
def _helpers() -> dict:
    return {
        "change_label": change_label,
        "kind_label": kind_label,
        "shown_value": shown_value,
        "SYSTEM": SYSTEM,
    }


def _names(usernames: set[str]) -> dict[str, str]:
    """Who deployed, by name: "system" (the repository's bundle) in the page's language."""
    if not usernames:
        return {}
    rows = db.session.execute(
        select(Person.username, Person.name).where(Person.username.in_(usernames))
    )
    names = dict(rows.tuples().all())
    if SYSTEM in usernames:
        names[SYSTEM] = _("System")
    return names


def _page_admin() -> Viewer:
    me = viewer()
    _admin_only(me)
    return me


@bp.get("")
@login_required
def index():
    _page_admin()
    infos = versions.list_versions(db.session)
    live = next((i for i in infos if i.live), None)
    # The compare form starts on "what the newest version changed from the live one" (or from
    # the one before it, when the newest is live).
    pick_b = infos[0].hash if infos else None
    pick_a = (
        live.hash if live and live.hash != pick_b else infos[1].hash if len(infos) > 1 else None
    )
    return render_template(
        "diagrams/index.html",
        infos=infos,
        live=live,
        pick_a=pick_a,
        pick_b=pick_b,
        names=_names({i.version.deployed_by for i in infos}),
    )


@bp.get("/compare")
@login_required
def compare():
    """The list's "compare" form: two versions chosen, then their diff."""
    _page_admin()
    a, b = request.args.get("a", ""), request.args.get("b", "")
    versions.find_version(db.session, a)
    versions.find_version(db.session, b)
    return redirect(url_for("diagrams.diff", a=a, b=b))


@bp.get("/<a>/diff/<b>")
@login_required
def diff(a: str, b: str):
    _page_admin()
    old, new = versions.find_version(db.session, a), versions.find_version(db.session, b)
    infos = {i.hash: i for i in versions.list_versions(db.session)}
    return render_template(
        "diagrams/diff.html",
        old=infos[old.sha256],
        new=infos[new.sha256],
        d=diff_bundles(old.files, new.files),
        names=_names({old.deployed_by, new.deployed_by}),
    )


@bp.get("/<sha256>/activate")
@login_required
def confirm_activate(sha256: str):
    _page_admin()
    version = versions.find_version(db.session, sha256)
    infos = versions.list_versions(db.session)
    target = next(i for i in infos if i.version.id == version.id)
    live = next((i for i in infos if i.live and i.version.process_id == version.process_id), None)
    summary = diff_bundles(live.version.files, version.files) if live else None
    return render_template(
        "diagrams/activate.html",
        target=target,
        live=live,
        summary=summary,
        names=_names({version.deployed_by} | ({live.version.deployed_by} if live else set())),
        max_comment=MAX_COMMENT,
    )


@bp.post("/<sha256>/activate")
@login_required
@writes
def activate(sha256: str):
    me = _page_admin()
    comment = (request.form.get("comment") or "").strip()
    if len(comment) > MAX_COMMENT:
        raise Invalid(_("The comment is too long."))
    if "\x00" in comment:
        raise Invalid(_("The comment holds a character that cannot be stored."))
    version = _activate(me, sha256, comment)
    flash(_("Version %(hash)s is live: new cases start on it.", hash=version.sha256[:12]))
    return redirect(url_for("diagrams.index"))
