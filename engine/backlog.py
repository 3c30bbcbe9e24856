"""How far behind time is: pending and overdue timers, the oldest one's lag, the outbox.

Read by `gridloop timers status` and the administrators' operations page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import Notification, Timer


@dataclass(frozen=True)
class Backlog:
    pending: int  # timers not yet fired
    overdue: int  # of those, due at or before now
    oldest_due: datetime | None  # the earliest overdue timer
    lag_seconds: int  # now - oldest_due, 0 when nothing is overdue
    outbox_pending: int
    outbox_failed: int


def backlog(session: Session, now: datetime) -> Backlog:
    pending = session.scalar(select(func.count()).select_from(Timer)) or 0
    overdue, oldest = session.execute(
        select(func.count(), func.min(Timer.due_at)).where(Timer.due_at <= now)
    ).one()
    waiting = session.scalar(
        select(func.count()).where(
            Notification.delivered_at.is_(None), Notification.failed_at.is_(None)
        )
    )
    failed = session.scalar(select(func.count()).where(Notification.failed_at.is_not(None)))
    if isinstance(oldest, str):  # SQLite returns min() of a datetime column as text
        oldest = datetime.fromisoformat(oldest)
    if oldest is not None and oldest.tzinfo is None:  # min() bypasses the column's type
        oldest = oldest.replace(tzinfo=UTC)
    lag = int((now - oldest).total_seconds()) if oldest else 0
    return Backlog(pending, overdue or 0, oldest, lag, waiting or 0, failed or 0)
