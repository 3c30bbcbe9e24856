"""A case's dossier (DESIGN §6): one case as a self-contained JSON file that anyone can check with
tools/verify_dossier.py and nothing else.

It carries the case, every event with its chain hash, the head, and the files of every diagram
version the case ran on, so both the chain and the bundle hashes can be recomputed offline. The
case's JSON is handed in by the caller (the web layer owns that serializer; engine/ imports no
Flask), so the dossier's `case` reads exactly like GET /api/v1/cases/{number}.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .events import GENESIS, as_dict, case_events
from .models import Case, CaseEvent, DiagramVersion

FORMAT = "gridloop-dossier/1"


def build(session: Session, case: Case, case_json: dict[str, Any]) -> dict[str, Any]:
    """The dossier of `case`. `diagrams` is added only when the events name another version
    than the pinned one (a migrated case), so an ordinary dossier carries its bundle once."""
    rows = case_events(session, case)
    dossier: dict[str, Any] = {
        "format": FORMAT,
        "case": case_json,
        "events": [{**as_dict(case.number, row), "hash": row.hash} for row in rows],
        "head": head_of(rows),
        "diagram": bundle_json(case.diagram),
    }
    used = hashes_in_order(rows)
    if used and used != [case.diagram.sha256]:
        dossier["diagrams"] = [bundle_json(v) for v in versions(session, used)]
    return dossier


def head_of(rows: list[CaseEvent]) -> dict[str, Any]:
    """The chain's last seq and hash; a case without events has the genesis head."""
    if not rows:
        return {"seq": 0, "hash": GENESIS}
    return {"seq": rows[-1].seq, "hash": rows[-1].hash}


def hashes_in_order(rows: list[CaseEvent]) -> list[str]:
    """The diagram hashes the events name, each once, in the order of first use."""
    return list(dict.fromkeys(row.diagram for row in rows))


def versions(session: Session, hashes: list[str]) -> list[DiagramVersion]:
    """The stored versions with these hashes, in the given order. A hash with no stored version
    is left out; the checker then reports the events that name it."""
    found = {
        v.sha256: v
        for v in session.scalars(select(DiagramVersion).where(DiagramVersion.sha256.in_(hashes)))
    }
    return [found[h] for h in hashes if h in found]


def bundle_json(version: DiagramVersion) -> dict[str, Any]:
    """A version as {hash, files}, under the hash the events name it by. That stored name is
    not recomputed here: files that no longer match it must fail the checker, not be renamed."""
    return {"hash": version.sha256, "files": dict(version.files)}
