"""Work items keep the instant of their 80% supervision beside their deadline.

Revision ID: 0004_work_item_warn_at
Revises: 0003_work_item_notified
Create Date: 2026-11-27

Every user task is now on the clock (DESIGN §2): the event that makes a limited item ready carries
`due_at` and `warn_at`, and the item keeps both, so inboxes and the API show when the supervision
comes without reading workflows. Items made before this revision have none (NULL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_work_item_warn_at"
down_revision = "0003_work_item_notified"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("work_item", sa.Column("warn_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("work_item", "warn_at")
