"""What auditors need: daily digests, the log of cases auditors opened, background jobs with
progress, and what the case browser searches by.

Revision ID: 0008_audit
Revises: 0007_photo
Create Date: 2026-11-28

- `digest`: the daily anchors of DESIGN §6, one row per digest, its heads as the canonical JSON
  that was hashed.
- `case.digested_seq`: the seq of the case's event that the latest digest naming it holds. A partial
  index over the cases whose chain grew since (event_seq > digested_seq) lets a digest find them
  without reading every case, however many are closed.
- `case.escalations`: how many times a case was escalated, kept by each step (the case browser's
  "escalated at least N times"); filled in from the events here.
- `case_access`: who opened which case, when and how, for the cases auditors open (DESIGN §4).
- `job`: a background job's progress (a verification run), readable while it runs.
- An index on case_event(actor) for "cases this person acted on".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_audit"
down_revision = "0007_photo"
branch_labels = None
depends_on = None

GREW = sa.text("event_seq > digested_seq")


def upgrade() -> None:
    op.create_table(
        "digest",
        sa.Column("n", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("made_at", sa.String(length=32), nullable=False),
        sa.Column("made_by", sa.String(length=64), nullable=False),
        sa.Column("prev", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("cases", sa.Integer(), nullable=False),
        sa.Column("heads", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("n"),
    )
    with op.batch_alter_table("case") as batch:
        batch.add_column(
            sa.Column("digested_seq", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("escalations", sa.Integer(), nullable=False, server_default="0"))
    op.create_index(
        "ix_case_undigested",
        "case",
        ["id"],
        sqlite_where=GREW,
        postgresql_where=GREW,
    )
    op.create_index("ix_case_opened_at", "case", ["opened_at", "id"])
    op.execute(
        sa.text(
            'UPDATE "case" SET escalations = (SELECT count(*) FROM case_event '
            "WHERE case_event.case_id = \"case\".id AND case_event.type = 'escalated')"
        )
    )
    op.create_index("ix_case_event_actor", "case_event", ["actor", "case_id"])
    op.create_table(
        "case_access",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("how", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_access_at", "case_access", ["at", "id"])
    op.create_index("ix_case_access_case_id", "case_access", ["case_id"])
    op.create_table(
        "job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_job_kind", "job", ["kind", "id"])


def downgrade() -> None:
    op.drop_index("ix_job_kind", table_name="job")
    op.drop_table("job")
    op.drop_index("ix_case_access_case_id", table_name="case_access")
    op.drop_index("ix_case_access_at", table_name="case_access")
    op.drop_table("case_access")
    op.drop_index("ix_case_event_actor", table_name="case_event")
    op.drop_index("ix_case_opened_at", table_name="case")
    op.drop_index("ix_case_undigested", table_name="case")
    with op.batch_alter_table("case") as batch:
        batch.drop_column("escalations")
        batch.drop_column("digested_seq")
    op.drop_table("digest")
