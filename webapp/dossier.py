"""The case dossier (DESIGN §6): one case as a self-contained JSON file that anyone can check
offline with tools/verify_dossier.py, and the same case as a page to print for the files.

GET /api/v1/cases/{number}/dossier answers the JSON to programs (a token); the pages under
/cases/{number}/dossier serve people signed in: the printable page, the same JSON as a download,
and the checker itself, so a county's IT staff need nothing but Python to check what they were
given. Visibility is DESIGN §4's (outside the caller's units a case does not exist: 404), and
every read by an auditor is logged as "dossier". The dossier itself is engine/dossier.py's.
"""

from __future__ import annotations

import json
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, g, render_template, send_file
from flask_babel import format_datetime
from flask_babel import gettext as _

from engine import access_log
from engine import dossier as dossiers
from engine.clock import parse_iso
from engine.events import as_dict, case_events
from engine.models import Case

from . import services as app_services
from .api import bp as api_bp
from .api import case_json, open_items_of, token_required, visible_case
from .cases import EVENT_NAMES, SATISFACTION_NAMES, _visible, display_names
from .extensions import db
from .security import download
from .web import TASK_NAMES, login_required, now, viewer

bp = Blueprint("dossier", __name__)
CHECKER = Path("tools") / "verify_dossier.py"


def dossier_of(case: Case) -> dict:
    """The dossier as the API, the download and `gridloop audit export` all give it."""
    return dossiers.build(db.session, case, case_json(case, open_items_of([case.id])[case.id]))


def filename(case: Case) -> str:
    return f"{case.number}.dossier.json"


def as_download(dossier: dict, name: str) -> Response:
    """The dossier as a JSON attachment that no browser renders (security.download)."""
    body = json.dumps(dossier, ensure_ascii=False, indent=1)
    return download(Response(body, mimetype="application/json"), name)


# ------------------------------------------------------------------ the API


@api_bp.get("/cases/<number>/dossier")
@token_required
def api_dossier(number: str):
    case = visible_case(number)
    access_log.record(db.session, g.viewer, case.id, "dossier", now())
    return as_download(dossier_of(case), filename(case))


# ------------------------------------------------------------------ the pages


@bp.get("/cases/<number>/dossier")
@login_required
def show(number: str):
    """The printable dossier: the case, every event with its hash, the head and the diagram
    versions, and how to check the JSON. Read from the rows, not from the JSON: the page does
    not need the diagram files, only their hashes, which the events name."""
    case = _visible(number)
    access_log.record(db.session, viewer(), case.id, "dossier", now())
    rows = case_events(db.session, case)
    events = [{**as_dict(case.number, row), "hash": row.hash} for row in rows]
    names = display_names([e["actor"] for e in events] + [case.owner])
    return render_template(
        "dossier/show.html",
        case=case,
        names=names,
        events=[event_row(e, names) for e in events],
        head=dossiers.head_of(rows),
        diagrams=dossiers.hashes_in_order(rows) or [case.diagram.sha256],
        satisfaction=SATISFACTION_NAMES.get(case.satisfaction),
        filename=filename(case),
    )


@bp.get("/cases/<number>/dossier.json")
@login_required
def download_json(number: str):
    case = _visible(number)
    access_log.record(db.session, viewer(), case.id, "dossier", now())
    return as_download(dossier_of(case), filename(case))


@bp.get("/dossier/verify_dossier.py")
@login_required
def checker():
    """The standalone checker, so whoever holds a dossier can check it without the repository."""
    path = app_services(current_app).root / CHECKER
    if not path.is_file():  # an installation without the repository's tools/
        abort(404)
    return download(send_file(path, mimetype="text/x-python"), CHECKER.name)


def event_row(event: dict, names: dict[str, str]) -> dict:
    """One row of the printed history: the stored fields, with the time in the town's zone and
    the type, actor and task in words. The data is shown whole, as compact JSON."""
    actor = event["actor"]
    data = event["data"]
    return {
        "seq": event["seq"],
        "at": format_datetime(parse_iso(event["at"]), "yyyy-MM-dd HH:mm:ss"),
        "at_utc": event["at"],
        "type": event["type"],
        "label": str(EVENT_NAMES.get(event["type"], event["type"])),
        "actor": _("System") if actor == "system" else names.get(actor, actor),
        "username": actor,
        "task": str(TASK_NAMES.get(event["task"], event["task"] or "")),
        "data": json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(", ", ": "))
        if data
        else "",
        "hash": event["hash"],
    }
