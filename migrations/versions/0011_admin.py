"""Administrators' records: version comments and activation, drafts, the administration log.

Revision ID: 0011_admin
Revises: 0010_inbox_order
Create Date: 2026-11-28

- `diagram_version.comment` and `activated_at`: a version is no longer live because it is the
  newest; the live version of a process is the one activated last, so that rollback is activating
  an older one and a version can be stored without going live. Every existing version counts as
  activated when it was deployed, which keeps the newest one live, as before.
- `diagram_draft`: an administrator's unfinished edit in the browser editors.
- `admin_event`: the administration log, hash-chained like a case's events (engine/admin_log.py).
- `calendar_year.entered`: who entered a year's arrangement, and when.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_admin"
down_revision = "0010_inbox_order"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("diagram_version") as batch:
        batch.add_column(sa.Column("comment", sa.Text(), nullable=True))
        batch.add_column(sa.Column("activated_at", sa.DateTime(), nullable=True))
    op.execute(sa.text("UPDATE diagram_version SET activated_at = deployed_at"))
    op.create_table(
        "diagram_draft",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("process_id", sa.String(length=100), nullable=False),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("base_sha", sa.String(length=64), nullable=True),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_diagram_draft_author", "diagram_draft", ["author"])
    op.create_table(
        "admin_event",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("prev", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("calendar_year") as batch:
        batch.add_column(sa.Column("entered", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calendar_year") as batch:
        batch.drop_column("entered")
    op.drop_table("admin_event")
    op.drop_index("ix_diagram_draft_author", table_name="diagram_draft")
    op.drop_table("diagram_draft")
    with op.batch_alter_table("diagram_version") as batch:
        batch.drop_column("activated_at")
        batch.drop_column("comment")
