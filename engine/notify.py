"""Notifications: who hears about a step, written to the outbox in the step's transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from .models import Case, WorkItem


def on_step(
    session: Session,
    case: Case,
    events: list[tuple[str, str | None, dict]],
    new_items: list[WorkItem],
    now: datetime,
) -> None:
    """Called by every step after its work items and events are known. Adds outbox rows only."""
