"""Work items remember whom their latest supervision told.

Revision ID: 0003_work_item_notified
Revises: 0002_reporters_out_of_chain
Create Date: 2026-11-27

The 督办 watch list showed a supervised item to the tier above its own, a rule written in Python.
Whom a supervision tells is the diagram's `notify` property (DESIGN §1); the step now records the
people and positions it told on the item (`notified`: ",u:name,p:role@unit_id,"), and the watch list
reads that. Items supervised before this revision get what the old rule would have shown: the
tier above the item's, at the case's unit of that tier (the rule is written out here, so this
revision keeps doing what it did when engine/ changes later).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_work_item_notified"
down_revision = "0002_reporters_out_of_chain"
branch_labels = None
depends_on = None

ABOVE = {
    "grid_leader": ("district_leader", "district_id"),
    "district_leader": ("village_secretary", "village_id"),
    "village_secretary": ("town_leadership", "town_id"),
}

items = sa.table(
    "work_item",
    sa.column("id", sa.Integer),
    sa.column("case_id", sa.Integer),
    sa.column("role", sa.String),
    sa.column("supervised_at", sa.DateTime),
    sa.column("completed_at", sa.DateTime),
    sa.column("notified", sa.String),
)
cases = sa.table(
    "case",
    sa.column("id", sa.Integer),
    sa.column("district_id", sa.Integer),
    sa.column("village_id", sa.Integer),
    sa.column("town_id", sa.Integer),
)


def upgrade() -> None:
    op.add_column("work_item", sa.Column("notified", sa.String(length=1000), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(
            items.c.id, items.c.role, cases.c.district_id, cases.c.village_id, cases.c.town_id
        )
        .join(cases, cases.c.id == items.c.case_id)
        .where(items.c.supervised_at.is_not(None), items.c.completed_at.is_(None))
    ).all()
    for row in rows:
        above = ABOVE.get(row.role)
        if above is not None:
            role, column = above
            bind.execute(
                sa.update(items)
                .where(items.c.id == row.id)
                .values(notified=f",p:{role}@{getattr(row, column)},")
            )


def downgrade() -> None:
    op.drop_column("work_item", "notified")
