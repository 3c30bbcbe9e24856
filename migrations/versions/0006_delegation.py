"""Delegations: a person's items worked by a colleague for a span of dates (代理).

Revision ID: 0006_delegation
Revises: 0005_person_password_initial
Create Date: 2026-11-28

DESIGN §4: a person may delegate their items to a colleague of the same role and unit, or of the
tier above, for a span of dates; within it the colleague sees and does them. A new table; nothing
existing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_delegation"
down_revision = "0005_person_password_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delegation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delegator", sa.String(length=64), nullable=False),
        sa.Column("delegate", sa.String(length=64), nullable=False),
        sa.Column("starts_at", sa.DateTime(), nullable=False),
        sa.Column("ends_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_delegation_delegator", "delegation", ["delegator"])
    op.create_index("ix_delegation_delegate", "delegation", ["delegate", "ends_at"])


def downgrade() -> None:
    op.drop_index("ix_delegation_delegate", table_name="delegation")
    op.drop_index("ix_delegation_delegator", table_name="delegation")
    op.drop_table("delegation")
