"""The administrators' process editor (/admin/editor): the bundle of a process — its BPMN diagram,
DMN tables and forms — opened in the browser, edited, kept as a draft and deployed.

The page opens the live version, any stored version (`?version=HASH`) or the administrator's own
draft (`?draft=1`). The editing happens in the browser (static/js/editor/src: bpmn-js's modeler
with a properties panel for SpiffWorkflow's extension elements, dmn-js, CodeMirror); this module
serves the files and answers the page's JSON posts:
- `draft` and `draft/discard` keep or drop the draft (engine/drafts.py);
- `deploy` goes through engine.versions.deploy_bundle, the same validation as the API and the CLI:
  a refused bundle answers 400 with every problem (file, element, message) and the live version
  stays live;
- `preview` draws a form's schema with the templates and field logic of the task page
  (inbox.form_fields, inbox/_field.html), so the preview is what handlers will see.
Version lists, diffs and activation are the versions pages' (/admin/diagrams).
"""

from __future__ import annotations

import json

import jsonschema
from flask import Blueprint, g, render_template, request, url_for
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BuildError

from engine import drafts
from engine.errors import Conflict, Forbidden, GridloopError, Invalid, NotFound
from engine.models import DiagramVersion
from engine.specs import PROCESS_ID, Bundle, DiagramError, live_version
from engine.validation import BundleInvalid, Problem
from engine.versions import deploy_bundle

from .cases import display_names
from .errors import STATUS_OF, page, shown
from .extensions import db
from .inbox import form_fields
from .security import json_body, page_policy
from .web import TIER_NAMES, language, login_required, now, runtime, viewer, when, writes

bp = Blueprint("editor", __name__, url_prefix="/admin/editor")

MAX_COMMENT = 500
# The versions pages (webapp/diagrams.py) list, compare and activate versions: linked to, never
# rebuilt here.
VERSIONS_ENDPOINT, VERSIONS_PATH = "diagrams.index", "/admin/diagrams"
# bpmn-js and dmn-js set some inline style attributes (a few containers, the drag image, the
# licence badge); this page alone allows style attributes. <style> and <script> stay nonce-bound.
STYLE_ATTRIBUTES = "style-src-attr 'unsafe-inline'"


# ------------------------------------------------------------------ who, and errors


def _admin_only() -> None:
    if not viewer().is_admin:
        raise Forbidden(_("Only administrators may open this page."))


def _json_error(status: int, code: str, message: str, **extra):
    body = {"code": code, "message": message, **extra}
    return {"error": body}, status


@bp.errorhandler(GridloopError)
def _engine_error(exc: GridloopError):
    if request.method == "GET":
        return page(STATUS_OF.get(type(exc), 400), shown(exc.message))
    status = STATUS_OF.get(type(exc), 400)
    extra = {"fields": exc.fields} if exc.fields else {}
    return _json_error(status, exc.code, shown(exc.message) or exc.message, **extra)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    """The page's fetch calls get JSON for what Flask refuses (a stale CSRF token, 413)."""
    if request.method == "GET":
        return page(exc.code or 500)
    code = exc.name.lower().replace(" ", "_")
    if exc.code == 400 and "CSRF" in (exc.description or ""):
        message = _("The page has expired. Reload it and try again.")
    elif exc.code == 413:
        message = _("What you sent is larger than Gridloop accepts.")
    else:
        message = exc.description or exc.name
    return _json_error(exc.code or 500, code, message)


# ------------------------------------------------------------------ the page


@bp.get("/")
@login_required
def index():
    _admin_only()
    process = request.args.get("process") or PROCESS_ID
    me = viewer()
    live = live_version(db.session, process)
    draft = drafts.draft_of(db.session, me.username, process)
    opened_draft = request.args.get("draft") == "1"
    version = None
    if opened_draft:
        if draft is None:
            raise NotFound(_("You have no draft of this process."))
        files, base = draft.files, draft.base_sha
    else:
        sha = request.args.get("version")
        version = _version(process, sha) if sha else live
        files = dict(version.files) if version is not None else {}
        base = version.sha256 if version is not None else None
    data = {
        "process": process,
        "base": base,
        "files": files,
        "urls": {
            "draft": url_for("editor.save_draft"),
            "discard": url_for("editor.discard_draft"),
            "deploy": url_for("editor.deploy"),
            "preview": url_for("editor.preview"),
            "live": url_for("editor.index", process=process),
        },
        "messages": _messages(),
        "words": vendor_words(),
        # Lanes are drawn with the tiers' names (DESIGN §1); the lane's name stays the tier.
        "tiers": {tier: str(name) for tier, name in TIER_NAMES.items()},
    }
    html = render_template(
        "editor/index.html",
        data=data,
        process=process,
        live=live,
        version=version,
        draft=draft,
        opened_draft=opened_draft,
        base=base,
        versions_url=_versions_url(),
        deployer=_deployer(version),
    )
    return html, 200, {"Content-Security-Policy": _policy()}


def _deployer(version: DiagramVersion | None) -> str:
    if version is None:
        return ""
    if version.deployed_by == "system":
        return _("System")
    return display_names({version.deployed_by}).get(version.deployed_by, version.deployed_by)


def _versions_url() -> str:
    try:
        return url_for(VERSIONS_ENDPOINT)
    except BuildError:
        return VERSIONS_PATH


def _policy() -> str:
    return page_policy(g.get("csp_nonce")) + "; " + STYLE_ATTRIBUTES


def _version(process: str, sha: str) -> DiagramVersion:
    version = db.session.scalars(
        select(DiagramVersion).where(
            DiagramVersion.sha256 == sha, DiagramVersion.process_id == process
        )
    ).first()
    if version is None:
        raise NotFound(_("There is no such version of this process."))
    return version


def _messages() -> dict[str, str]:
    """What static/js/editor says, in this page's language ({name} placeholders are filled in by
    the script)."""
    return {
        "diagrams": _("Process diagrams"),
        "rules": _("Decision tables"),
        "forms": _("Forms"),
        "other": _("Other files"),
        "changed": _("Changed since opened"),
        "form_code": _("The form's definition"),
        "open_failed": _("This file could not be opened: {message}"),
        "preview_failed": _("The preview cannot draw this form: {message}"),
        "form_name_bad": _(
            "A form's name is lower-case letters, digits and underscores, starting with a letter."
        ),
        "saving": _("Saving the draft…"),
        "saved": _("Draft saved at {time}."),
        "save_failed": _("The draft was not saved: {message}"),
        "discard_confirm": _("Discard your draft? The edits in it are lost."),
        "comment_required": _("Say in the comment what this version changes."),
        "deploying": _("Checking the bundle and deploying…"),
        "deployed": _("Deployed: version {hash} is live. New cases start on it."),
        "unchanged": _("Nothing new: these files are version {hash} already."),
        "reactivated": _(
            "These files are version {hash}, stored before: it is live again. New cases start on it."
        ),
        "unchanged_not_live": _(
            "Nothing new: these files are version {hash}, which is not the live version. "
            "Make it live on the versions page."
        ),
        "see_version": _("See the version"),
        "refused": _(
            "Not deployed: {count} problem(s) to fix. The live version is unchanged. "
            "Click a problem to go to it."
        ),
        "deploy_failed": _("Not deployed: {message}"),
        "whole_bundle": _("The whole bundle"),
        "too_large": _("What you sent is larger than Gridloop accepts."),
        "failed": _("The server could not be reached. Try again."),
    }


# ------------------------------------------------------------------ drafts


def _process(body: dict) -> str:
    process = body.get("process") or PROCESS_ID
    if not isinstance(process, str) or len(process) > 100:
        raise Invalid(_("Unknown process."), {"process": "must be a process id"})
    return process


def _body() -> dict:
    body = json_body()
    if not isinstance(body, dict):
        raise Invalid(_("The request must be a JSON object."), {"body": "must be an object"})
    return body


def _base(body: dict) -> str | None:
    base = body.get("base")
    return base if isinstance(base, str) and len(base) == 64 else None


@bp.post("/draft")
@login_required
@writes
def save_draft():
    _admin_only()
    body = _body()
    moment = now()
    draft = drafts.save_draft(
        db.session, viewer().username, _process(body), body.get("files"), _base(body), moment
    )
    db.session.commit()
    return {"saved_at": draft.updated_at.isoformat(), "saved_at_text": when(draft.updated_at)}


@bp.post("/draft/discard")
@login_required
@writes
def discard_draft():
    _admin_only()
    body = _body()
    dropped = drafts.discard_draft(db.session, viewer().username, _process(body))
    db.session.commit()
    return {"discarded": dropped}


# ------------------------------------------------------------------ deploy


@bp.post("/deploy")
@login_required
@writes
def deploy():
    _admin_only()
    body = _body()
    process = _process(body)
    files = drafts.check_files(body.get("files"))
    comment = body.get("comment")
    if not isinstance(comment, str) or not comment.strip():
        raise Invalid(_("Say in the comment what this version changes."), {"comment": "required"})
    comment = comment.strip()
    if "\x00" in comment:  # PostgreSQL's text columns cannot hold it
        raise Invalid(
            _("The comment holds a character that cannot be stored."),
            {"comment": "may not hold a NUL character"},
        )
    if len(comment) > MAX_COMMENT:
        raise Invalid(
            _("The comment is at most 500 characters."),
            {"comment": f"at most {MAX_COMMENT} characters"},
        )
    me = viewer()
    before = live_version(db.session, process)
    try:
        version, created = deploy_bundle(
            db.session,
            runtime().registry,
            Bundle(files),
            me.username,
            now(),
            comment,
            activate=True,
        )
        drafts.discard_draft(db.session, me.username, process)
        db.session.commit()
    except IntegrityError:
        # Another administrator deployed or activated at the same moment: the two collide on
        # the version's hash or the administration log's seq (at a flush or at the commit),
        # and nothing of this deploy is kept.
        db.session.rollback()
        raise Conflict(
            _("Another administrator changed the versions at the same moment. Deploy again.")
        ) from None
    except DiagramError as exc:
        db.session.rollback()
        problems = (
            exc.problems
            if isinstance(exc, BundleInvalid)
            else [Problem(exc.file, exc.element, str(exc))]
        )
        return _json_error(
            400,
            "invalid_bundle",
            _("The bundle was not deployed: the live version is unchanged."),
            problems=[p.as_json() for p in problems],
        )
    live = live_version(db.session, version.process_id)
    is_live = live is not None and live.sha256 == version.sha256
    answer = {
        "hash": version.sha256,
        "created": created,
        "live": is_live,
        # An older version's files again: deploying them made that version live (a rollback).
        "activated": not created and is_live and (before is None or before.id != version.id),
        "url": _versions_url(),
    }
    return answer, 201 if created else 200


# ------------------------------------------------------------------ form preview


@bp.post("/preview")
@login_required
def preview():
    """A form's schema drawn as the task page draws it, with what a fresh task would show
    (defaults, and the one choice of a one-value enum); a schema that is no JSON or no valid JSON
    Schema answers 400 saying why, for the editor's lint gutter."""
    _admin_only()
    body = _body()
    text = body.get("schema")
    if not isinstance(text, str):
        raise Invalid(_("The form's schema is missing."), {"schema": "required"})
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise Invalid(_("The form is not valid JSON."), {"schema": str(exc)}) from None
    if not isinstance(schema, dict):
        raise Invalid(_("A form's schema must be a JSON object."), {"schema": "not an object"})
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        raise Invalid(
            _("The form is not a valid JSON Schema."), {"schema": f"{where}: {exc.message}"}
        ) from None
    try:
        fields = form_fields(schema, _fresh_values(schema))
        html = render_template("editor/_preview.html", fields=fields, schema=schema)
    except (AttributeError, TypeError, KeyError) as exc:
        raise Invalid(
            _("The task page cannot draw this form."), {"schema": f"{type(exc).__name__}: {exc}"}
        ) from None
    return {"html": html, "language": language()}


def _fresh_values(schema: dict) -> dict:
    """What a task's form starts with before anyone types (inbox._initial_values, without a
    case to prefill from)."""
    values: dict = {}
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        if "default" in prop:
            default = prop["default"]
            values[name] = (
                ("true" if default else "false") if isinstance(default, bool) else str(default)
            )
        elif name in required and len(prop.get("enum", [])) == 1:
            values[name] = str(prop["enum"][0])
    return values


# ------------------------------------------------------------------ the editors' own words

# What bpmn-js, dmn-js and the properties panel show most (the palette, the context pad, the
# replace menu, panel groups and fields, the decision table's headings and menus), and the labels
# of our own panel groups (static/js/editor/src/spiff-provider.js). Each is the library's English
# text, which is its key in the page's `translate` (static/js/editor/src/translate.js); anything
# not listed stays as the library has it.
VENDOR_WORDS = (
    # bpmn-js: palette and context pad
    _l("Activate hand tool"),
    _l("Activate lasso tool"),
    _l("Activate create/remove space tool"),
    _l("Activate global connect tool"),
    _l("Create start event"),
    _l("Create intermediate/boundary event"),
    _l("Create end event"),
    _l("Create gateway"),
    _l("Create task"),
    _l("Create expanded sub-process"),
    _l("Create data object reference"),
    _l("Create data store reference"),
    _l("Create group"),
    _l("Create pool/participant"),
    _l("Append end event"),
    _l("Append gateway"),
    _l("Append task"),
    _l("Append intermediate/boundary event"),
    _l("Add text annotation"),
    _l("Change element"),
    _l("Connect to other element"),
    _l("Connect using association"),
    _l("Delete"),
    _l("Add lane above"),
    _l("Add lane below"),
    _l("Divide into two lanes"),
    _l("Divide into three lanes"),
    _l("Toggle non-interrupting"),
    # bpmn-js: the replace menu
    _l("User task"),
    _l("Service task"),
    _l("Script task"),
    _l("Business rule task"),
    _l("Send task"),
    _l("Receive task"),
    _l("Manual task"),
    _l("Call activity"),
    _l("Start event"),
    _l("End event"),
    _l("Intermediate throw event"),
    _l("Exclusive gateway"),
    _l("Parallel gateway"),
    _l("Inclusive gateway"),
    _l("Event-based gateway"),
    _l("Sequence flow"),
    _l("Default flow"),
    _l("Conditional flow"),
    _l("Sub-process"),
    _l("Sub-process (collapsed)"),
    _l("Sub-process (expanded)"),
    _l("Ad-hoc sub-process"),
    _l("Parallel multi-instance"),
    _l("Sequential multi-instance"),
    _l("Loop"),
    # the properties panel
    _l("General"),
    _l("Name"),
    _l("ID"),
    _l("Value"),
    _l("Documentation"),
    _l("Element documentation"),
    _l("Process documentation"),
    _l("Process name"),
    _l("Process ID"),
    _l("Participant Name"),
    _l("Collaboration"),
    _l("Search in diagram"),
    _l("Open pop-up editor"),
    _l("Executable"),
    _l("Timer"),
    _l("Type"),
    _l("Date"),
    _l("Duration"),
    _l("Cycle"),
    _l("Signal"),
    _l("Global signal reference"),
    _l("Create new ..."),
    _l("<none>"),
    _l("<empty>"),
    _l("Properties"),
    _l("Select an element to edit its properties."),
    _l("Multiple elements are selected. Select a single element to edit its properties."),
    _l("ID must be unique."),
    _l("ID must not be empty."),
    _l("ID must not contain spaces."),
    _l("ID must be a valid QName."),
    _l("Section contains edits"),
    _l("Toggle section"),
    _l("Create new list item"),
    _l("List contains {numOfItems} item"),
    _l("List contains {numOfItems} items"),
    # the panel's header names the selected element's type
    _l("User Task"),
    _l("Business Rule Task"),
    _l("Script Task"),
    _l("Service Task"),
    _l("Exclusive Gateway"),
    _l("Parallel Gateway"),
    _l("Inclusive Gateway"),
    _l("Sequence Flow"),
    _l("Conditional Flow"),
    _l("Default Flow"),
    _l("Start Event"),
    _l("End Event"),
    _l("Lane"),
    _l("Participant"),
    _l("Process"),
    _l("Timer Boundary Event"),
    _l("Timer Boundary Event (Non Interrupting)"),
    _l("Signal Boundary Event"),
    # our panel groups (spiff-provider.js)
    _l("Gridloop task"),
    _l("Task (task)"),
    _l("Case status while open (status)"),
    _l("Form (formKey)"),
    _l("(not in this bundle)"),
    _l("Decision"),
    _l("Called decision (calledDecisionId)"),
    _l("Script"),
    _l("Script (Python)"),
    _l("Pre- and post-scripts"),
    _l("Before the task (preScript)"),
    _l("After the task (postScript)"),
    _l("Condition"),
    _l("Condition (Python)"),
    _l("Other properties"),
    # dmn-js: the decision table
    _l("Hit policy:"),
    _l("Unique"),
    _l("First"),
    _l("Priority"),
    _l("Collect"),
    _l("Rule order"),
    _l("Output order"),
    _l("Collect (Sum)"),
    _l("Collect (Min)"),
    _l("Collect (Max)"),
    _l("Collect (Count)"),
    _l("No overlap is possible and all rules are disjoint. Only a single rule can be matched"),
    _l("Rules may overlap. The first matching rule will be chosen"),
    _l("Rules may overlap. The one with the highest priority will be chosen"),
    _l("Rules may overlap. Their output have to match"),
    _l("Collects the values of all matching rules"),
    _l("Collects the values of all matching rules in rule order"),
    _l("Collects the values of all matching rules in decreasing output priority order"),
    _l("Collects the values of all matching rules and sums up to a single value"),
    _l("Collects the values of all matching rules and uses the lowest value"),
    _l("Collects the values of all matching rules and uses the highest value"),
    _l("Collects the values of all matching rules and counts the number of them"),
    _l("Edit input"),
    _l("Edit output"),
    _l("Decision name: "),
    _l("Input label: "),
    _l("Output label: "),
    _l("Input expression: "),
    _l("Output name: "),
    _l("Hit policy"),
    _l("When"),
    _l("And"),
    _l("Then"),
    _l("Annotation"),
    _l("Annotations"),
    _l("Input"),
    _l("Output"),
    _l("Move rule"),
    _l("Add rule"),
    _l("Add rule above"),
    _l("Add rule below"),
    _l("Remove rule"),
    _l("Copy rule"),
    _l("Cut rule"),
    _l("Paste rule above"),
    _l("Paste rule below"),
    _l("Add input"),
    _l("Add output"),
    _l("Add input column left"),
    _l("Add input column right"),
    _l("Add output column left"),
    _l("Add output column right"),
    _l("Remove input column"),
    _l("Remove output column"),
    _l("Input label"),
    _l("Input expression"),
    _l("Input type"),
    _l("Output label"),
    _l("Output name"),
    _l("Output type"),
    _l("Expression language"),
    _l("Add cell description"),
    _l("Remove cell description"),
    _l("Decision name"),
    _l("Resize"),
    _l("Edit string"),
    _l("Edit number"),
    _l("Edit boolean"),
    _l("Strings must be in double quotes"),
)


# Library words that other pages translate in another sense ("Task" is a to-do item on the
# overdue board), under messages of their own.
VENDOR_ALIASES = {
    "Task": _l("Task (a BPMN element)"),
    "Any": _l("Any (a hit policy)"),
}


def vendor_words() -> dict[str, str]:
    """{the library's English: this page's words}; empty on an English page."""
    if language() != "zh":
        return {}
    with force_locale("en"):
        english = [str(word) for word in VENDOR_WORDS]
    words = {key: str(word) for key, word in zip(english, VENDOR_WORDS, strict=True)}
    words.update({key: str(word) for key, word in VENDOR_ALIASES.items()})
    return words
