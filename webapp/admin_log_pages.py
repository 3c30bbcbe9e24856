"""The administration log, read by auditors and administrators (issue 10, item 7): a page at
/audit/admin-log with the entries newest first, a type filter and paging, each entry's data in
words, and the state of the chain; and GET /api/v1/admin-log on the api blueprint (as
webapp/audit.py's routes are).

The log is written by the changes themselves (engine/admin_log.py `record`); nothing here writes.
The chain's state is checked on every view: the log is small (one entry per administrator's
change), and an auditor should never read a state older than the page. Besides the chain on its
own, the page compares the newest head a digest holds, which is what catches a rewrite of the
whole log with recomputed hashes (engine/digests.py `verify_all` does the same for every digest).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from flask import Blueprint, g, jsonify, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select

from engine import admin_log
from engine.access import Viewer
from engine.errors import Forbidden, Invalid
from engine.models import AdminEvent, Digest

from .api import bp as api_bp
from .api import token_required
from .extensions import db
from .web import login_required, viewer

bp = Blueprint("admin_log_pages", __name__, url_prefix="/audit/admin-log")
PAGE = 50
MAX_SEQ = 2**31

TYPE_NAMES = {
    "diagram_deployed": _l("Diagram deployed"),
    "diagram_activated": _l("Diagram version made live"),
    "migration_started": _l("Migration started"),
    "cases_migrated": _l("Cases migrated"),
    "org_exported": _l("Organisation exported"),
    "org_imported": _l("Organisation imported"),
    "person_deactivated": _l("Person deactivated"),
    "person_reactivated": _l("Person reactivated"),
    "password_reset": _l("Password reset"),
    "position_moved": _l("Position moved"),
    "owner_changed": _l("Case owner changed"),
    "calendar_changed": _l("Calendar changed"),
}


def _may_read(me: Viewer) -> None:
    if not (me.is_auditor or me.is_admin):
        raise Forbidden(_("Only auditors and administrators may do this."))


# ------------------------------------------------------------------ the chain's state


def chain_state() -> dict[str, Any]:
    """{ok, entries, seq, head, digest, broken: {seq, reason}}: the chain on its own, then the
    newest digested head (only that one: every later hash depends on every earlier entry, so a
    rewrite of any digested entry changes it)."""
    seq, head = admin_log.head(db.session)
    entries = db.session.scalar(select(func.count()).select_from(AdminEvent)) or 0
    state: dict[str, Any] = {
        "ok": True,
        "entries": entries,
        "seq": seq,
        "head": head,
        "digest": None,
        "broken": None,
    }
    broken = admin_log.check(db.session)
    if broken is not None:
        state.update(ok=False, broken={"seq": broken.seq, "reason": _reason(broken.reason)})
        return state
    digested = _digested_head()
    if digested is not None:
        n, at_seq, at_hash = digested
        state["digest"] = n
        stored = db.session.get(AdminEvent, at_seq)
        if stored is None or stored.hash != at_hash:
            reason = _("does not match digest %(n)s", n=n)
            state.update(ok=False, broken={"seq": at_seq, "reason": reason})
    return state


def _digested_head() -> tuple[int, int, str] | None:
    """(digest n, seq, hash) of the log's head in the newest digest holding one."""
    marker = json.dumps(admin_log.LOG)
    rows = db.session.execute(
        select(Digest.n, Digest.heads)
        .where(Digest.heads.contains(marker))
        .order_by(Digest.n.desc())
        .limit(1)
    ).all()
    for n, text in rows:
        try:
            heads = json.loads(text)
        except ValueError:
            return None
        for head in heads if isinstance(heads, list) else ():
            if isinstance(head, list) and len(head) == 3 and head[0] == admin_log.LOG:
                return n, head[1], head[2]
    return None


def _reason(reason: str) -> str:
    """engine/admin_log.py `check`'s reason in the page's language."""
    fixed = {
        "prev is not the entry before": _l("its prev is not the hash of the entry before"),
        "data unreadable": _l("its data cannot be read"),
        "hash does not match": _l("its hash does not match its content"),
    }
    if reason in fixed:
        return str(fixed[reason])
    if match := re.fullmatch(r"entry (\d+) missing", reason):
        return _("entry %(seq)s is missing", seq=match.group(1))
    return reason


# ------------------------------------------------------------------ an entry in words


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] if re.fullmatch(r"[0-9a-f]{40,64}", text) else text


def _pick(data: dict, *keys: str) -> Any:
    for key in keys:
        if data.get(key) not in (None, ""):
            return data[key]
    return None


def in_words(type_: str, data: dict[str, Any]) -> str:
    """One sentence for an entry, from the fields its kind records; the type's name when the
    fields it needs are not there (the page lists every field beside it anyway)."""
    try:
        sentence = _sentence(type_, data)
    except (KeyError, TypeError, ValueError):
        sentence = None
    return sentence or str(TYPE_NAMES.get(type_, type_))


def _sentence(type_: str, data: dict[str, Any]) -> str | None:
    who = _pick(data, "username", "person", "who")
    if type_ == "diagram_deployed" and data.get("hash"):
        args = {"hash": _short(data["hash"]), "process": data.get("process") or "?"}
        if data.get("live"):
            return _("Deployed version %(hash)s of %(process)s and made it live.", **args)
        return _("Deployed version %(hash)s of %(process)s without making it live.", **args)
    if type_ == "diagram_activated" and data.get("hash"):
        return _(
            "Made version %(hash)s of %(process)s live.",
            hash=_short(data["hash"]),
            process=data.get("process") or "?",
        )
    if type_ == "migration_started" and data.get("to"):
        return _(
            "Started moving %(cases)s case(s) to version %(to)s.",
            cases=data.get("cases", "?"),
            to=_short(data["to"]),
        )
    if type_ == "cases_migrated" and data.get("to"):
        return _(
            "Moved %(moved)s case(s) to version %(to)s; %(refused)s could not move.",
            moved=data.get("moved", "?"),
            to=_short(data["to"]),
            refused=data.get("refused", 0),
        )
    if type_ == "org_exported":
        return _(
            "Took a copy of the organisation file (%(format)s).", format=data.get("format", "?")
        )
    if type_ == "org_imported":
        return _("Imported the organisation file.")
    if type_ == "person_deactivated" and who:
        return _("Deactivated %(who)s: they can no longer sign in.", who=who)
    if type_ == "person_reactivated" and who:
        return _("Reactivated %(who)s.", who=who)
    if type_ == "password_reset" and who:
        return _(
            "Reset the password of %(who)s; they choose a new one at the next sign-in.", who=who
        )
    if type_ == "position_moved" and who:
        return _("Moved a position of %(who)s.", who=who)
    if type_ == "owner_changed" and data.get("case") and data.get("to"):
        return _(
            "Case %(case)s now belongs to %(to)s (was %(from)s).",
            case=data["case"],
            to=data["to"],
            **{"from": data.get("from") or "?"},
        )
    if type_ == "calendar_changed" and data.get("year"):
        return _(
            "Entered the %(year)s holiday arrangement: %(holidays)s holidays, %(workdays)s make-up working days.",
            year=data["year"],
            holidays=data.get("holidays", "?"),
            workdays=data.get("workdays", "?"),
        )
    return None


def _fields(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Every recorded field as (name, text), for the entry's details."""
    shown = []
    for key in sorted(data):
        value = data[key]
        if isinstance(value, str | int) and not isinstance(value, bool):
            text = str(value)
        else:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        shown.append((key, text))
    return shown


# Actors that are no person: the repository's bundle (init-db) and the command line.
ACTOR_NAMES = {"system": _l("System"), "cli": _l("Command line")}


def _row(row: AdminEvent, broken_seq: int | None) -> dict[str, Any]:
    try:
        data = json.loads(row.data)
        if not isinstance(data, dict):
            data = {"data": data}
    except ValueError:
        data = {}
    return {
        "seq": row.seq,
        "at": _when(row.at),
        "actor": str(ACTOR_NAMES.get(row.actor, row.actor)),
        "type": row.type,
        "type_name": TYPE_NAMES.get(row.type, row.type),
        "words": in_words(row.type, data),
        "fields": _fields(data),
        "hash": row.hash,
        "broken": broken_seq is not None and row.seq == broken_seq,
    }


def _when(at: str) -> datetime | str:
    try:
        return datetime.fromisoformat(at)
    except ValueError:
        return at


# ------------------------------------------------------------------ the page


def _page_args() -> tuple[int | None, str | None]:
    """The page is forgiving: a position or type it cannot use shows the newest entries."""
    before = request.args.get("before", type=int)
    before = before if before is not None and 0 < before < MAX_SEQ else None
    kind = request.args.get("type") or None
    return before, kind if kind in admin_log.TYPES else None


@bp.get("")
@login_required
def index():
    _may_read(viewer())
    before, kind = _page_args()
    rows = admin_log.entries(db.session, before=before, limit=PAGE + 1, type_=kind)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    state = chain_state()
    broken_seq = state["broken"]["seq"] if state["broken"] else None
    return render_template(
        "admin_log/index.html",
        state=state,
        rows=[_row(r, broken_seq) for r in rows],
        kind=kind,
        types=sorted(
            ((t, str(TYPE_NAMES.get(t, t))) for t in admin_log.TYPES), key=lambda pair: pair[1]
        ),
        next_before=rows[-1].seq if more and rows else None,
        first_page=before is None,
    )


# ------------------------------------------------------------------ API


@api_bp.get("/admin-log")
@token_required
def admin_log_api():
    """{items: [entry with prev and hash], head: {seq, hash}}, newest first, PAGE at a time:
    `before` a seq (the next page is before the last item's seq), `type` one kind of entry."""
    _may_read(g.viewer)
    raw_before = request.args.get("before")
    kind = request.args.get("type") or None
    fields: dict[str, str] = {}
    before = None
    if raw_before not in (None, ""):
        if not re.fullmatch(r"[0-9]{1,10}", raw_before) or not 0 < int(raw_before) < MAX_SEQ:
            fields["before"] = "must be a positive whole number (a seq)"
        else:
            before = int(raw_before)
    if kind is not None and kind not in admin_log.TYPES:
        fields["type"] = "must be one of: " + ", ".join(sorted(admin_log.TYPES))
    if fields:
        raise Invalid("the request has errors", fields)
    rows = admin_log.entries(db.session, before=before, limit=PAGE, type_=kind)
    seq, head = admin_log.head(db.session)
    return jsonify({"items": [_entry_json(r) for r in rows], "head": {"seq": seq, "hash": head}})


def _entry_json(row: AdminEvent) -> dict[str, Any]:
    """The entry as stored; an entry whose data no longer reads as JSON (changed in the database)
    is still listed, its data as the stored text, for the auditor to see."""
    try:
        return admin_log.as_json(row)
    except ValueError:
        return {
            "case": admin_log.LOG,
            "seq": row.seq,
            "at": row.at,
            "type": row.type,
            "actor": row.actor,
            "task": None,
            "data": row.data,
            "diagram": None,
            "prev": row.prev,
            "hash": row.hash,
        }
