"""The household register: a phone, whether the household is in the grid's group chat (一户一代表),
and who added it in Gridloop.

Revision ID: 0012_households
Revises: 0011_admin
Create Date: 2026-11-28

DESIGN §9 lists households as `{number, head, phone?, in_group?}`; campaigns (DESIGN §12) walk
them. Existing rows came from organisation files: no phone, not in the group, added_by NULL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_households"
down_revision = "0011_admin"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("household") as batch:
        batch.add_column(sa.Column("phone", sa.String(length=32), nullable=True))
        batch.add_column(
            sa.Column("in_group", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("added_by", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("household") as batch:
        batch.drop_column("added_by")
        batch.drop_column("in_group")
        batch.drop_column("phone")
