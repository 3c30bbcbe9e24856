"""The facts figures count (DESIGN §11), kept by the step that makes them true: a case's row in
`case_fact` (opened, accepted and whether validly, archived and at which tier, first escalated or
overdue, first reopened) and one `feedback_fact` row per feedback completion.

Written in the step's transaction from the events the step appends, so the figures agree with the
event chain by construction and never read a workflow. The words are the contract's (DESIGN §3,
§6): the `accept` task's `valid`, the `feedback` task's `satisfaction`, and the event types.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from .models import CaseFact, FeedbackFact, UTCDateTime

FACTS, FEEDBACK = CaseFact.__table__, FeedbackFact.__table__
SATISFIED = ("satisfied", "basically_satisfied")
INSERT_FACT = insert(FACTS)
INSERT_FEEDBACK = insert(FEEDBACK)
ACCEPTED_AT = select(FACTS.c.accepted_at).where(FACTS.c.case_id == bindparam("b_case"))


def on_step(
    session: Session,
    case: Any,
    events: list[tuple[str, str | None, dict]],
    tier: str | None,
    now: datetime,
) -> None:
    """Record what this step's events make true of the case (`tier`: where it stands after)."""
    conn = session.connection()
    values: dict[str, Any] = {}
    for type_, task, data in events:
        data = data if isinstance(data, dict) else {}
        if type_ == "opened":
            conn.execute(
                INSERT_FACT,
                {
                    "case_id": case.id,
                    "town_id": case.town_id,
                    "village_id": case.village_id,
                    "district_id": case.district_id,
                    "grid_id": case.grid_id,
                    "category": data.get("category"),
                    "opened_at": now,
                },
            )
        elif type_ == "task_completed" and task == "accept":
            # The first acceptance counts: a case sent to another grid while it was handled
            # (转办) is accepted again there, and must not move out of the period it was
            # received in.
            conn.execute(
                update(FACTS)
                .where(FACTS.c.case_id == case.id, FACTS.c.accepted_at.is_(None))
                .values(
                    accepted_at=now,
                    valid=data.get("valid") is True,
                    dispatch_us=_micros(case.opened_at, now),
                )
            )
            if data.get("category"):
                values["category"] = data["category"]
        elif type_ == "task_completed" and task == "feedback":
            satisfied = data.get("satisfaction") in SATISFIED
            conn.execute(INSERT_FEEDBACK, {"case_id": case.id, "at": now, "satisfied": satisfied})
        elif type_ == "archived":
            accepted = conn.scalar(ACCEPTED_AT, {"b_case": case.id})
            values.update(archived_at=now, resolved_tier=tier)
            if accepted is not None:
                values["resolution_us"] = _micros(accepted, now)
        if type_ == "escalated" or data.get("overdue") is True:
            values["late_at"] = func.coalesce(FACTS.c.late_at, _instant(now))
        if type_ == "reopened":
            values["reopened_at"] = func.coalesce(FACTS.c.reopened_at, _instant(now))
    if values:
        conn.execute(update(FACTS).where(FACTS.c.case_id == case.id).values(**values))


def _instant(moment: datetime):
    return bindparam(None, moment, type_=UTCDateTime())


def _micros(start: datetime, end: datetime) -> int:
    """Whole microseconds, exactly (timedelta // timedelta is integer arithmetic)."""
    return max(0, (end - start) // timedelta(microseconds=1))
