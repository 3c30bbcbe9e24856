"""Whom a supervision told becomes rows (work_item_watch) in place of the text work_item.notified.

Revision ID: 0013_watch
Revises: 0012_households
Create Date: 2026-11-30

The 督办 watch list (engine/inbox.py watch_items) looked for the items that concern a person with
`notified LIKE '%,key,%'` over a comma-joined text: no index serves that, so every first inbox
page read every supervised open item (1–3 s at a million items). work_item_watch holds one row
per key an open item's latest supervision told, its primary key (key, due_key, item_id) the walk
the list makes, due_key copied from the item (it never changes). Filled here from the open,
supervised items' texts, split on commas, without the keys engine/projection.py watch_keys
leaves out (the item's own position when the item is unassigned, excludes nobody and is not a
town item: in the inbox of everyone it could match, so on no one's watch list). Closed items get
none: the engine deletes an item's rows when it closes. Then the column goes.

The downgrade puts the texts back from the rows; a key left out was on no watch list, so the
lists the older code shows are the same.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_watch"
down_revision = "0012_households"
branch_labels = None
depends_on = None

CHUNK = 5_000  # items read and rows written at a time

ITEMS = sa.table(
    "work_item",
    sa.column("id", sa.Integer()),
    sa.column("role", sa.String()),
    sa.column("unit_id", sa.Integer()),
    sa.column("assignee", sa.String()),
    sa.column("excluded", sa.String()),
    sa.column("due_key", sa.DateTime()),
    sa.column("supervised_at", sa.DateTime()),
    sa.column("completed_at", sa.DateTime()),
    sa.column("notified", sa.String()),
)
WATCH = sa.table(
    "work_item_watch",
    sa.column("key", sa.String()),
    sa.column("due_key", sa.DateTime()),
    sa.column("item_id", sa.Integer()),
)


def watch_keys(item, told: list[str]) -> list[str]:
    """engine.projection.watch_keys as of this revision (frozen here: the engine moves on)."""
    own = f"p:{item.role}@{item.unit_id}"
    everyones = item.assignee is None and item.excluded is None and item.role != "town_leadership"
    return [key for key in dict.fromkeys(told) if not (everyones and key == own)]


def upgrade() -> None:
    op.create_table(
        "work_item_watch",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("due_key", sa.DateTime(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["work_item.id"]),
        sa.PrimaryKeyConstraint("key", "due_key", "item_id"),
    )
    op.create_index("ix_work_item_watch_item", "work_item_watch", ["item_id"])
    conn = op.get_bind()
    watched = (
        sa.select(ITEMS)
        .where(
            ITEMS.c.notified.is_not(None),
            ITEMS.c.supervised_at.is_not(None),
            ITEMS.c.completed_at.is_(None),
        )
        .order_by(ITEMS.c.id)
        .limit(CHUNK)
    )
    after = 0
    while True:  # by id ranges: a million items never sit in memory at once
        items = conn.execute(watched.where(ITEMS.c.id > after)).all()
        if not items:
            break
        rows = [
            {"key": key, "due_key": item.due_key, "item_id": item.id}
            for item in items
            for key in watch_keys(item, [k for k in item.notified.split(",") if k])
        ]
        if rows:
            conn.execute(WATCH.insert(), rows)
        after = items[-1].id
    with op.batch_alter_table("work_item") as batch:
        batch.drop_column("notified")


def downgrade() -> None:
    with op.batch_alter_table("work_item") as batch:
        batch.add_column(sa.Column("notified", sa.String(length=1000), nullable=True))
    conn = op.get_bind()
    told: dict[int, list[str]] = {}
    for item_id, key in conn.execute(
        sa.select(WATCH.c.item_id, WATCH.c.key).order_by(WATCH.c.item_id, WATCH.c.key)
    ):
        told.setdefault(item_id, []).append(key)
    if told:
        conn.execute(
            ITEMS.update().where(ITEMS.c.id == sa.bindparam("b_id")),
            [{"b_id": i, "notified": "," + ",".join(keys) + ","} for i, keys in told.items()],
        )
    op.drop_index("ix_work_item_watch_item", table_name="work_item_watch")
    op.drop_table("work_item_watch")
