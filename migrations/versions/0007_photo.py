"""Photos attached to cases: files outside the database, their sha256 in the chain.

Revision ID: 0007_photo
Revises: 0006_delegation
Create Date: 2026-11-28

Officers attach photos when opening, accepting or handling a case. The file is stored under the
instance folder, named by its sha256, and the event that attaches it carries the hash; this table
says which case a file belongs to, who uploaded it and what it is. A new table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_photo"
down_revision = "0006_delegation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "photo",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("uploaded_by", sa.String(length=64), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(), nullable=False),
        sa.Column("content_type", sa.String(length=32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("kept_location", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("case_id", "sha256"),
    )
    op.create_index("ix_photo_sha256", "photo", ["sha256"])
    op.create_index("ix_photo_case_id", "photo", ["case_id"])


def downgrade() -> None:
    op.drop_index("ix_photo_case_id", table_name="photo")
    op.drop_index("ix_photo_sha256", table_name="photo")
    op.drop_table("photo")
