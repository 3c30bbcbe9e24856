"""The inbox query: open work items a person may see, most urgent first, in keyset pages.

One query serves the JSON API and the inbox page. It reads only work_item and case rows, never a
workflow, and walks the ix_work_item_inbox index in (deadline, id) order.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, literal, or_, select, tuple_
from sqlalchemy.orm import Session, joinedload

from .access import Viewer, inbox_scope
from .deadlines import overdue_clause
from .models import Case, WorkItem
from .projection import person_key, position_key

# Items without a deadline sort after every dated one.
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


def inbox_page(
    session: Session,
    viewer: Viewer,
    now: datetime,
    *,
    overdue: bool | None = None,
    category: str | None = None,
    after: tuple[datetime, int] | None = None,
    limit: int = 50,
) -> tuple[list[WorkItem], tuple[datetime, int] | None]:
    """One page of the viewer's open items and the key to pass as `after` for the next page
    (None on the last page). `overdue` True keeps items past due, False the others."""
    due = func.coalesce(WorkItem.due_at, FAR_FUTURE)
    query = (
        select(WorkItem)
        .options(joinedload(WorkItem.case).joinedload(Case.grid), joinedload(WorkItem.unit))
        .join(Case, Case.id == WorkItem.case_id)
        .where(WorkItem.completed_at.is_(None), inbox_scope(viewer))
    )
    if overdue is not None:
        query = query.where(overdue_clause(now) if overdue else ~overdue_clause(now))
    if category:
        query = query.where(Case.category == category)
    if after is not None:
        # The cursor's instant is bound with the column's type (naive UTC), as the column holds
        # it: an aware value would reach PostgreSQL as timestamptz and be compared in the
        # session's time zone.
        last_due, last_id = after
        query = query.where(
            tuple_(due, WorkItem.id)
            > tuple_(literal(last_due, WorkItem.due_at.type), literal(last_id))
        )
    items = list(session.scalars(query.order_by(due, WorkItem.id).limit(limit + 1)))
    if len(items) <= limit:
        return items, None
    last = items[limit - 1]
    return items[:limit], (last.due_at or FAR_FUTURE, last.id)


def watch_items(session: Session, viewer: Viewer, limit: int = 20) -> list[WorkItem]:
    """Supervised (督办) open items that are not the viewer's to do but concern them: cases they
    own, and items whose latest supervision told them or a position they hold (whom it tells is
    the diagram's `notify` property). Most overdue first."""
    keys = [person_key(viewer.username)] + [
        position_key(role, unit_id) for role, unit_id in viewer.tier_positions()
    ]
    concerns = [Case.owner == viewer.username] + [
        WorkItem.notified.like(f"%,{_escape(key)},%", escape="\\") for key in keys
    ]
    query = (
        select(WorkItem)
        .options(joinedload(WorkItem.case).joinedload(Case.grid), joinedload(WorkItem.unit))
        .join(Case, Case.id == WorkItem.case_id)
        .where(
            WorkItem.completed_at.is_(None),
            WorkItem.supervised_at.is_not(None),
            or_(*concerns),
            ~inbox_scope(viewer),
        )
        .order_by(func.coalesce(WorkItem.due_at, FAR_FUTURE), WorkItem.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def _escape(text: str) -> str:
    """A LIKE pattern's literal text (usernames may hold _ or %)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
