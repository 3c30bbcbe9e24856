"""The log of cases auditors opened (DESIGN §4): auditors read every case and change none, so what
they read is itself on the record: who, which case, when, and how (the case page, the API, the
events, the dossier, a replay, the step-through viewer).

A read is logged in the same transaction as nothing else: `record` adds the row and commits, so a
page that fails to render afterwards still leaves the trace that the case was opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .access import Viewer
from .models import Case, CaseAccess

HOWS = ("page", "api", "events", "dossier", "replay", "steps")


def record(session: Session, viewer: Viewer, case_id: int, how: str, now: datetime) -> None:
    """Log that an auditor opened a case; nothing for anyone else. Commits."""
    if not viewer.is_auditor:
        return
    if how not in HOWS:
        raise ValueError(f"unknown way of opening a case: {how}")
    session.add(CaseAccess(username=viewer.username, case_id=case_id, at=now, how=how))
    session.commit()


@dataclass(frozen=True)
class Access:
    id: int
    username: str
    case: str
    at: datetime
    how: str


def recent(
    session: Session, limit: int = 50, before: int | None = None, username: str | None = None
) -> list[Access]:
    """The newest entries first (keyset paging on id: `before` is the last id seen)."""
    query = (
        select(CaseAccess.id, CaseAccess.username, Case.number, CaseAccess.at, CaseAccess.how)
        .join(Case, Case.id == CaseAccess.case_id)
        .order_by(CaseAccess.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(CaseAccess.id < before)
    if username:
        query = query.where(CaseAccess.username == username)
    return [Access(*row) for row in session.execute(query)]
