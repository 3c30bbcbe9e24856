"""The inbox query: open work items a person may see, most urgent first, in keyset pages.

One query serves the JSON API and the inbox page. It reads only work_item and case rows, never a
workflow. The order is (due_key, id): due_key is the item's deadline, or NO_DEADLINE (after every
dated item) when it has none, kept as a column (migration 0010) so that the indexes hold it.

What a person sees is `inbox_scope` (engine/access.py): items assigned to them, and unassigned
items of each (role, unit) they hold, their own or a delegator's. A single ORDER BY over that OR
would read and sort all of them. The page is instead the union of one branch per index range:
`assignee = name` (ix_work_item_assignee) for the viewer and each delegator, and `role = r AND
unit_id = u` (ix_work_item_inbox) for each position, both indexes of open items only. Each branch
walks its range in (due_key, id) order from the cursor, keeps the rows inbox_scope keeps, and
stops at a page's rows; the union is ordered and cut to a page. The branches together cover
inbox_scope and each keeps only what it keeps, so the page holds exactly the items of the one
big query, in the same order. A town leader's branch also reads the town items of villages
they are not liaison of, and skips them (in bench/inbox_scale.py's town, 4 to 10 rows read for
each row kept); every other branch reads about a page's rows.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, and_, false, func, literal, select, tuple_, union
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.sql.elements import ColumnElement

from .access import Viewer, inbox_scope
from .deadlines import overdue_clause
from .models import NO_DEADLINE, Case, WorkItem, WorkItemWatch
from .projection import person_key, position_key

# Items without a deadline sort after every dated one (the cursor carries this instant for them).
FAR_FUTURE = NO_DEADLINE


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
    page = page_keys(viewer, now, overdue=overdue, category=category, after=after, limit=limit + 1)
    query = (
        select(WorkItem)
        .options(joinedload(WorkItem.case).joinedload(Case.grid), joinedload(WorkItem.unit))
        .where(WorkItem.id.in_(select(page.c.id)))
        .order_by(WorkItem.due_key, WorkItem.id)
    )
    items = list(session.scalars(query))
    if len(items) <= limit:
        return items, None
    last = items[limit - 1]
    return items[:limit], (last.due_key, last.id)


def page_keys(
    viewer: Viewer,
    now: datetime,
    *,
    overdue: bool | None = None,
    category: str | None = None,
    after: tuple[datetime, int] | None = None,
    limit: int,
):
    """The (id, due_key) of the first `limit` items of the page, as a subquery (not ordered)."""
    # inbox_scope is a filter on each branch's rows, wrapped so that PostgreSQL takes it as one:
    # bare, its OR would be split over both indexes into a bitmap scan that reads every item of
    # the branch and sorts them (the role and unit terms, counted twice, make it look cheap).
    # It is never NULL, so coalesce changes nothing else.
    visible = func.coalesce(inbox_scope(viewer), false())
    conditions: list[ColumnElement[bool]] = [WorkItem.completed_at.is_(None), visible]
    if overdue is True:
        conditions.append(overdue_clause(now))
    elif overdue is False:
        # Not overdue implies due at or after now (NO_DEADLINE for none): the walk starts there.
        conditions += [~overdue_clause(now), WorkItem.due_key >= now]
    if after is not None:
        # The cursor's instant is bound with the column's type (naive UTC), as the column holds
        # it: an aware value would reach PostgreSQL as timestamptz and be compared in the
        # session's time zone.
        last_due, last_id = after
        conditions.append(
            tuple_(WorkItem.due_key, WorkItem.id)
            > tuple_(literal(last_due, WorkItem.due_key.type), literal(last_id))
        )
    branches = []
    for branch in _branches(viewer):
        query: Select = select(WorkItem.id, WorkItem.due_key).where(branch, *conditions)
        if category:
            query = query.join(Case, Case.id == WorkItem.case_id).where(Case.category == category)
        branches.append(query.order_by(WorkItem.due_key, WorkItem.id).limit(limit))
    if len(branches) == 1:
        return branches[0].subquery("page")
    # Each branch keeps its own ORDER BY and LIMIT inside a subquery (SQLite allows neither on
    # a member of a compound SELECT); UNION drops an item that two branches found.
    members = [select(b.c.id, b.c.due_key) for b in (q.subquery() for q in branches)]
    merged = union(*members).subquery("branches")
    return (
        select(merged.c.id, merged.c.due_key)
        .order_by(merged.c.due_key, merged.c.id)
        .limit(limit)
        .subquery("page")
    )


def _branches(viewer: Viewer) -> list[ColumnElement[bool]]:
    """One index range for each way inbox_scope lets the viewer see an item: assigned to them or
    to a delegator they cover (ix_work_item_assignee), or at a position either holds
    (ix_work_item_inbox). Every item inbox_scope keeps is in one of them at least."""
    names = dict.fromkeys([viewer.username] + [cover.delegator for cover in viewer.covers])
    positions = dict.fromkeys(
        viewer.tier_positions() + [p for cover in viewer.covers for p in cover.tier_positions()]
    )
    return [WorkItem.assignee == name for name in names] + [
        and_(WorkItem.role == role, WorkItem.unit_id == unit_id) for role, unit_id in positions
    ]


def watch_items(session: Session, viewer: Viewer, limit: int = 20) -> list[WorkItem]:
    """Supervised (督办) open items that are not the viewer's to do but concern them: cases they
    own, and items whose latest supervision told them or a position they hold (whom it tells is
    the diagram's `notify` property). Most overdue first: (due_key, id), as the inbox.

    Like the inbox page, a union of branches that each walk an index in that order and stop
    after `limit` kept rows: one per key of the viewer (their username, each position they
    hold) over work_item_watch's primary key (key, due_key, item_id), and one over the cases
    they own (ix_case_owner, then each case's items). Each keeps the open, supervised items
    that are not in the viewer's inbox."""
    keys = [person_key(viewer.username)] + [
        position_key(role, unit_id) for role, unit_id in viewer.tier_positions()
    ]
    kept = (
        WorkItem.completed_at.is_(None),
        WorkItem.supervised_at.is_not(None),
        ~inbox_scope(viewer),
    )
    branches: list[Select] = [
        select(WorkItemWatch.item_id.label("id"), WorkItemWatch.due_key)
        .join(WorkItem, WorkItem.id == WorkItemWatch.item_id)
        .where(WorkItemWatch.key == key, *kept)
        .order_by(WorkItemWatch.due_key, WorkItemWatch.item_id)
        .limit(limit)
        for key in dict.fromkeys(keys)
    ]
    branches.append(
        select(WorkItem.id, WorkItem.due_key)
        .join(Case, Case.id == WorkItem.case_id)
        .where(Case.owner == viewer.username, *kept)
        .order_by(WorkItem.due_key, WorkItem.id)
        .limit(limit)
    )
    members = [select(b.c.id, b.c.due_key) for b in (q.subquery() for q in branches)]
    merged = union(*members).subquery("branches")
    page = select(merged.c.id).order_by(merged.c.due_key, merged.c.id).limit(limit).subquery("page")
    query = (
        select(WorkItem)
        .options(joinedload(WorkItem.case).joinedload(Case.grid), joinedload(WorkItem.unit))
        .where(WorkItem.id.in_(select(page.c.id)))
        .order_by(WorkItem.due_key, WorkItem.id)
    )
    return list(session.scalars(query))
