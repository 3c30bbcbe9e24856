"""One deadline for each work item and one for each case (DESIGN §8), decided here and nowhere else.

A work item's deadline is fixed when it becomes ready: the instant its limit runs out. A town item's
daily supervision repeats after that instant but never moves it. A case's deadline is the earliest
deadline of its open items, so the inbox, the task page, the case page and the API always agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_
from sqlalchemy.sql.elements import ColumnElement

from .models import WorkItem


@dataclass(frozen=True)
class Deadline:
    due_at: datetime | None
    overdue: bool


def item_overdue(item: WorkItem, now: datetime) -> bool:
    """Open and past its deadline by the clock, or its 100% timer has fired already
    (`timers fire-due --as-of` may run ahead of the clock): a supervision recorded at or after the
    deadline is that timer."""
    if item.completed_at is not None or item.due_at is None:
        return False
    return item.due_at < now or (
        item.supervised_at is not None and item.supervised_at >= item.due_at
    )


def overdue_clause(now: datetime) -> ColumnElement[bool]:
    """item_overdue as SQL, for open items (the inbox's filter). Never NULL, so it can be negated."""
    return and_(
        WorkItem.due_at.is_not(None),
        or_(
            WorkItem.due_at < now,
            and_(WorkItem.supervised_at.is_not(None), WorkItem.supervised_at >= WorkItem.due_at),
        ),
    )


def case_deadline(open_items: Iterable[WorkItem], now: datetime) -> Deadline:
    items = [i for i in open_items if i.completed_at is None]
    dues = [i.due_at for i in items if i.due_at is not None]
    return Deadline(min(dues) if dues else None, any(item_overdue(i, now) for i in items))
