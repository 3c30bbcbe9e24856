"""Campaigns (工作任务, DESIGN §12): the campaign, its event chain, the household visits, and on
each case row the process it runs and the campaign it belongs to.

Revision ID: 0014_campaigns
Revises: 0013_watch
Create Date: 2026-11-28

A campaign's grid instance is a `case` row of process `campaign`, so that it steps, escalates,
chains and replays with the case loop's code; every row before this revision is a case
(`case_loop`). case.campaign_id has no FOREIGN KEY: SQLite would copy the whole case table to
add one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_campaigns"
down_revision = "0013_watch"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("instructions", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("checklist", sa.JSON(), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("town_id", sa.Integer(), nullable=False),
        sa.Column("launched_by", sa.String(length=64), nullable=False),
        sa.Column("launched_at", sa.DateTime(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("diagram_id", sa.Integer(), nullable=False),
        sa.Column("event_seq", sa.Integer(), nullable=False),
        sa.Column("event_head", sa.String(length=64), nullable=False),
        sa.Column("digested_seq", sa.Integer(), nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(["town_id"], ["unit.id"]),
        sa.ForeignKeyConstraint(["diagram_id"], ["diagram_version.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("number"),
    )
    op.create_table(
        "campaign_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("diagram", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_id", "seq"),
    )
    op.create_table(
        "visit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("grid_id", sa.Integer(), nullable=False),
        sa.Column("household_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("recorded_by", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"]),
        sa.ForeignKeyConstraint(["grid_id"], ["unit.id"]),
        sa.ForeignKeyConstraint(["household_id"], ["household.id"]),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_id", "client_id"),
    )
    op.create_index("ix_visit_campaign_grid", "visit", ["campaign_id", "grid_id", "household_id"])
    with op.batch_alter_table("case") as batch:
        batch.add_column(
            sa.Column("process", sa.String(length=32), nullable=False, server_default="case_loop")
        )
        batch.add_column(sa.Column("campaign_id", sa.Integer(), nullable=True))
    op.create_index("ix_case_campaign_id", "case", ["campaign_id"])


def downgrade() -> None:
    op.drop_index("ix_case_campaign_id", table_name="case")
    with op.batch_alter_table("case") as batch:
        batch.drop_column("campaign_id")
        batch.drop_column("process")
    op.drop_index("ix_visit_campaign_grid", table_name="visit")
    op.drop_table("visit")
    op.drop_table("campaign_event")
    op.drop_table("campaign")
