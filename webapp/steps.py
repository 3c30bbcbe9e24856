"""The step-through viewer (逐步回放): a case walked event by event on its diagram.

Auditors and everyone who may see a case can watch how the record drove the process: after each
event, which diagram elements had run, which user tasks were open, who acted and when, what they
submitted, which decision-table row decided the dispatch or the limit, and the deadline then in
force. Nothing here reads the case's stored state: the frames come from one replay of its events
(engine/replay.py, the same step code every normal step runs), so what the page draws is what the
record proves. Where the replay stops agreeing with the record the frames stop too, and the page
says at which event.

The page is a shell; static/js/steps.js loads the diagram (inbox.diagram_xml) and the frames
(steps.json) and draws them. Every word the script shows comes from the page or from the frames,
already translated here, so the script holds none. Visibility is DESIGN §4's (404 outside the
viewer's units); an auditor's opening of the page is logged once per page view, as "steps".
"""

from __future__ import annotations

import json

from flask import Blueprint, current_app, jsonify, render_template
from flask_babel import format_datetime
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from lxml import etree

from engine import access_log
from engine.clock import parse_iso
from engine.events import as_dict, case_events
from engine.models import Case
from engine.replay import Frame, ReplayResult, replay
from engine.specs import Spec
from engine.words import choices_of

from .cases import _visible, display_names, event_view
from .extensions import db
from .inbox import BOOL_NAMES, FIELD_LABELS, YES_NO
from .web import TASK_NAMES, TIER_NAMES, language, login_required, now, runtime, viewer

bp = Blueprint("steps", __name__)

TIME_FORMAT = "yyyy-MM-dd HH:mm:ss"  # in the town's zone (BABEL_DEFAULT_TIMEZONE)
# What a person typed when opening a case, in the order the page lists it; the rest of an
# `opened` event's data (reporter_hash, tier, due_at …) is the system's and is not "submitted".
OPENED_FIELDS = ("title", "household", "category", "severity", "description")
TRANSFER_FIELDS = ("from", "to", "note")
# Labels of the fields an opened or transferred event holds that no task form names.
OTHER_LABELS = {
    "title": _l("Title"),
    "household": _l("Household"),
    "description": _l("Description"),
    "from": _l("From grid"),
    "to": _l("To grid"),
}
UNREPLAYABLE = ReplayResult(False, 0, None)  # a record the diagram could not run at all


# ------------------------------------------------------------------ the routes


@bp.get("/cases/<number>/steps")
@login_required
def show(number: str):
    """The viewer's page: the case's number and title, and the player. The events come from
    steps.json, which is where an auditor's opening is logged (the page shows no more than the
    case list does)."""
    case = _visible(number)
    return render_template("steps/show.html", case=case)


@bp.get("/cases/<number>/steps.json")
@login_required
def frames(number: str):
    """Every frame the page draws, from one replay of the case with frames kept."""
    case = _visible(number)
    access_log.record(db.session, viewer(), case.id, "steps", now())
    case = db.session.get(Case, case.id)  # the log's commit expired it
    response = jsonify(walk(case))
    response.headers["Cache-Control"] = "private, no-store"  # the case may move on
    return response


# ------------------------------------------------------------------ the frames


def walk(case: Case) -> dict:
    """The case's frames, one per event the replay agreed with, and where it stopped agreeing."""
    events = [as_dict(case.number, row) for row in case_events(db.session, case)]
    result = _replayed(case)
    spec = runtime().registry.get(case.diagram, case.process)
    names = display_names(e["actor"] for e in events)
    tables = table_names(case.diagram.sha256, case.diagram.files)
    body: dict = {
        "case": case.number,
        "events": len(events),
        "frames": [
            frame_json(event, frame, names, spec, tables)
            for event, frame in zip(events, result.frames, strict=False)
        ],
    }
    if result is UNREPLAYABLE:
        body["divergence"] = {
            "seq": None,
            "field": "replay",
            "text": _("The recorded events could not be replayed, so there are no steps to show."),
        }
    elif result.divergence is not None:
        body["divergence"] = {
            **result.divergence.as_json(),
            "text": _(
                "From event %(seq)s on, the record no longer agrees with the diagram "
                "(%(field)s); the steps stop there.",
                seq=result.divergence.seq,
                field=result.divergence.field,
            ),
        }
    return body


def _replayed(case: Case) -> ReplayResult:
    """One replay with frames. A record altered so that the diagram cannot even run it (a form
    field taken out, say) makes the step raise; the page still answers, saying so, since that is
    exactly the record an auditor needs to see refused rather than a server error."""
    try:
        return replay(db.session, case, runtime().registry, frames=True)
    except Exception:
        current_app.logger.exception("replay of %s for the step-through viewer failed", case.number)
        db.session.rollback()
        return UNREPLAYABLE


_TABLES: dict[str, dict[str, str]] = {}  # by diagram version hash; a version never changes


def table_names(sha256: str, files: dict[str, str]) -> dict[str, str]:
    """Decision tables by id -> the name their decision has in the bundle (办理时限): the replay
    names a table by its id, which is for programs."""
    if sha256 not in _TABLES:
        found: dict[str, str] = {}
        for path, text in sorted(files.items()):
            if not path.endswith(".dmn"):
                continue
            parser = etree.XMLParser(resolve_entities=False)
            for decision in etree.fromstring(text.encode("utf-8"), parser).iter("{*}decision"):
                for table in decision.iter("{*}decisionTable"):
                    if table.get("id") and decision.get("name"):
                        found[table.get("id")] = decision.get("name")
        _TABLES[sha256] = found
    return _TABLES[sha256]


def frame_json(
    event: dict, frame: Frame, names: dict[str, str], spec: Spec, tables: dict[str, str]
) -> dict:
    """One frame: the event as the case page tells it, and the diagram as it stood after it."""
    told = event_view(event, names)
    data = event["data"] if isinstance(event["data"], dict) else {}
    return {
        "seq": event["seq"],
        "at": event["at"],
        "at_text": format_datetime(parse_iso(event["at"]), TIME_FORMAT),
        "type": event["type"],
        "actor": event["actor"],
        "actor_name": told["actor"],
        "task": event["task"],
        "data": data,
        "fields": submitted(event, frame, spec),
        "summary": " · ".join([told["label"], *told["details"]]),
        "ran": frame.ran,
        "done": frame.done,
        "active": frame.active,
        "active_names": [task_label(spec, element) for element in frame.active],
        "due_at": frame.due_at,
        "due_text": format_datetime(parse_iso(frame.due_at), TIME_FORMAT) if frame.due_at else None,
        "decisions": [decision_json(d, tables) for d in frame.decisions],
    }


def task_label(spec: Spec, element: str) -> str:
    """An open user task as people name it: 处置 · 网格长."""
    info = spec.tasks.get(element)
    if info is None:
        return element
    task = str(TASK_NAMES.get(info.task, info.task))
    return f"{task} · {TIER_NAMES[info.lane]}" if info.lane in TIER_NAMES else task


def decision_json(decision: dict, tables: dict[str, str]) -> dict:
    """A matched decision-table row, with its one-line form: 办理时限 第5行."""
    outputs = decision.get("outputs") or {}
    table = tables.get(decision["table"], decision["table"])
    return {
        **decision,
        "table_name": table,
        "title": _("%(table)s, row %(row)s", table=table, row=decision["row"]),
        "outputs_text": ", ".join(f"{k}={_plain(v)}" for k, v in outputs.items()),
    }


def _plain(value) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


# ------------------------------------------------------------------ what was submitted


def submitted(event: dict, frame: Frame, spec: Spec) -> list[dict]:
    """What a person gave in this event, labelled and with values in words, as the task's form
    shows them: a completed task's form fields, what was typed when opening, a transfer's grids.
    Events the process records of itself (supervised, escalated …) submit nothing."""
    data = event["data"] if isinstance(event["data"], dict) else {}
    kind = event["type"]
    if kind == "task_completed":
        props = _form_of(spec, event["task"], frame).get("properties", {})
        keys = [k for k in props if k in data]
    elif kind == "opened":
        props = _form_of(spec, "accept", frame).get("properties", {})
        keys = [k for k in OPENED_FIELDS if data.get(k) not in (None, "")]
    elif kind == "transferred":
        props = {}
        keys = [k for k in TRANSFER_FIELDS if data.get(k) not in (None, "")]
    else:
        return []
    return [
        {"name": k, "label": _label(k, props.get(k, {})), "value": _value(k, data[k], props)}
        for k in keys
    ]


def _form_of(spec: Spec, task: str | None, frame: Frame) -> dict:
    """The form of the user task an event names: the element that ran in its step (handle_town
    has the departments field, handle_grid does not), else any element of that task."""
    infos = [info for info in spec.tasks.values() if info.task == task]
    ran = [info for info in infos if info.spec in frame.ran]
    for info in ran + infos:
        if info.form in spec.forms:
            return spec.forms[info.form]
    return {}


def _label(name: str, prop: dict) -> str:
    """Chinese from the form's own title; other languages from the catalog (as the task page)."""
    title = prop.get("title")
    if language() == "zh" and title:
        return title
    return str(FIELD_LABELS.get(name) or OTHER_LABELS.get(name) or title or name)


def _value(name: str, value, props: dict) -> str:
    prop = props.get(name, {})
    if isinstance(value, bool):
        yes, no = BOOL_NAMES.get(name, YES_NO)
        return str(yes if value else no)
    if isinstance(value, list):
        if prop.get("x-widget") == "photos":
            return str(len(value))
        return "、".join(_value(name, v, props) for v in value)
    labels = {c.value: c.label(language()) for c in choices_of(prop)}
    return labels.get(str(value), "" if value is None else str(value))
