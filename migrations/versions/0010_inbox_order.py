"""Work items keep the inbox's order as a column, and the inbox indexes end with it.

Revision ID: 0010_inbox_order
Revises: 0009_case_facts
Create Date: 2026-11-29

The inbox lists a person's open items by deadline, items without one last, then by id. Ordered by
the expression coalesce(due_at, 9999-01-01), no index could give that order, so every page read
and sorted all of a person's open items (a grid leader's thousands, a town leader's tens of
thousands at a million open items). `due_key` holds that value: written when an item is made
(engine/projection.py), filled here for the rows already there, never NULL. The two indexes the
inbox reads become (role, unit_id, due_key, id) and (assignee, due_key, id), partial indexes of
the open items (WHERE completed_at IS NULL, the same SQL on SQLite and PostgreSQL), so that a
page walks each of them in order and stops after a page's rows. With completed_at as a leading
column instead, PostgreSQL would not see that order: to its planner IS NULL is no equality.
Every query on these columns asks for open items, so none loses its index.

9999-01-01 is bound as a DateTime parameter, so that SQLite stores it in the same text form as
every other instant SQLAlchemy writes (the inbox compares these texts).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0010_inbox_order"
down_revision = "0009_case_facts"
branch_labels = None
depends_on = None

NO_DEADLINE = datetime(9999, 1, 1)  # engine.models.NO_DEADLINE, as stored (naive UTC)
OPEN_ITEMS = {  # engine.models.OPEN_ITEMS: CREATE INDEX ... WHERE completed_at IS NULL
    "sqlite_where": sa.text("completed_at IS NULL"),
    "postgresql_where": sa.text("completed_at IS NULL"),
}


def upgrade() -> None:
    op.drop_index("ix_work_item_inbox", table_name="work_item")
    op.drop_index("ix_work_item_assignee", table_name="work_item")
    with op.batch_alter_table("work_item") as batch:
        batch.add_column(sa.Column("due_key", sa.DateTime(), nullable=True))
    items = sa.table("work_item", sa.column("due_at", sa.DateTime()), sa.column("due_key"))
    far = sa.bindparam("no_deadline", NO_DEADLINE, type_=sa.DateTime())
    op.execute(items.update().values(due_key=sa.func.coalesce(items.c.due_at, far)))
    with op.batch_alter_table("work_item") as batch:
        batch.alter_column("due_key", existing_type=sa.DateTime(), nullable=False)
    op.create_index(
        "ix_work_item_inbox", "work_item", ["role", "unit_id", "due_key", "id"], **OPEN_ITEMS
    )
    op.create_index(
        "ix_work_item_assignee", "work_item", ["assignee", "due_key", "id"], **OPEN_ITEMS
    )


def downgrade() -> None:
    op.drop_index("ix_work_item_assignee", table_name="work_item")
    op.drop_index("ix_work_item_inbox", table_name="work_item")
    with op.batch_alter_table("work_item") as batch:
        batch.drop_column("due_key")
    op.create_index(
        "ix_work_item_inbox", "work_item", ["role", "unit_id", "completed_at", "due_at", "id"]
    )
    op.create_index("ix_work_item_assignee", "work_item", ["assignee", "completed_at"])
