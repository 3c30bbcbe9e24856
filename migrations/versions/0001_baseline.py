"""baseline: the schema Gridloop made before Alembic (engine/models.py at commit 384d5f5).

Revision ID: 0001_baseline
Revises:
Create Date: 2026-11-27

On an empty database this creates every table. On a database that an earlier Gridloop made with
create_all (tables present, no alembic_version table), it creates only the tables that are missing
and leaves the existing ones as they are: running it there is how such a database is adopted, after
which Alembic records it at this revision and later revisions apply as on any other. A column that
an earlier Gridloop added to an existing table before Alembic existed is not repaired.

Datetimes are engine.models.UTCDateTime in the models, which stores a naive UTC DateTime.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    offline = op.get_context().as_sql  # `alembic upgrade --sql`: no database to look at
    existing = set() if offline else set(sa.inspect(op.get_bind()).get_table_names())

    def table(name: str, *items, indexes: Sequence[tuple[str, list[str]]] = ()) -> None:
        """Create the table and its (non-unique) indexes, unless an earlier Gridloop made it."""
        if name in existing:
            return
        op.create_table(name, *items)
        for index, columns in indexes:
            op.create_index(index, name, columns)

    table(
        "calendar_year",
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("holidays", sa.JSON(), nullable=False),
        sa.Column("workdays", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("year"),
    )
    table(
        "counter",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    table(
        "diagram_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("process_id", sa.String(length=100), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("files", sa.JSON(), nullable=True),
        sa.Column("deployed_by", sa.String(length=64), nullable=False),
        sa.Column("deployed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sha256"),
        indexes=[("ix_diagram_version_process_id", ["process_id"])],
    )
    table(
        "login_failure",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        indexes=[("ix_login_failure_key_at", ["key", "at"])],
    )
    table(
        "person",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    table(
        "unit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("households", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["parent_id"], ["unit.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code"),
        indexes=[("ix_unit_parent_id", ["parent_id"])],
    )
    table(
        "api_token",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["person_id"], ["person.id"]),
        sa.PrimaryKeyConstraint("token_hash"),
        indexes=[("ix_api_token_person_id", ["person_id"])],
    )
    table(
        "case",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=True),
        sa.Column("household", sa.String(length=100), nullable=True),
        sa.Column("reporter_name", sa.String(length=100), nullable=True),
        sa.Column("reporter_phone", sa.String(length=32), nullable=True),
        sa.Column("town_id", sa.Integer(), nullable=False),
        sa.Column("village_id", sa.Integer(), nullable=False),
        sa.Column("district_id", sa.Integer(), nullable=False),
        sa.Column("grid_id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=True),
        sa.Column("due_at", sa.DateTime(), nullable=True),
        sa.Column("opened_at", sa.DateTime(), nullable=False),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("satisfaction", sa.String(length=32), nullable=True),
        sa.Column("reopen_count", sa.Integer(), nullable=False),
        sa.Column("overdue_marked", sa.Boolean(), nullable=False),
        sa.Column("event_seq", sa.Integer(), nullable=False),
        sa.Column("event_head", sa.String(length=64), nullable=False),
        sa.Column("diagram_id", sa.Integer(), nullable=False),
        sa.Column("workflow", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["diagram_id"], ["diagram_version.id"]),
        sa.ForeignKeyConstraint(["district_id"], ["unit.id"]),
        sa.ForeignKeyConstraint(["grid_id"], ["unit.id"]),
        sa.ForeignKeyConstraint(["town_id"], ["unit.id"]),
        sa.ForeignKeyConstraint(["village_id"], ["unit.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("number"),
        indexes=[
            ("ix_case_district", ["district_id", "id"]),
            ("ix_case_grid_opened", ["grid_id", "id"]),
            ("ix_case_owner", ["owner"]),
            ("ix_case_status", ["status"]),
            ("ix_case_village", ["village_id", "id"]),
        ],
    )
    table(
        "household",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("grid_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("head", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(["grid_id"], ["unit.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("grid_id", "number"),
    )
    table(
        "liaison",
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("village_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["person_id"], ["person.id"]),
        sa.ForeignKeyConstraint(["village_id"], ["unit.id"]),
        sa.PrimaryKeyConstraint("person_id", "village_id"),
    )
    table(
        "position",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["person_id"], ["person.id"]),
        sa.ForeignKeyConstraint(["unit_id"], ["unit.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("person_id", "role", "unit_id"),
        indexes=[("ix_position_role_unit", ["role", "unit_id"])],
    )
    table(
        "case_department",
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"]),
        sa.ForeignKeyConstraint(["unit_id"], ["unit.id"]),
        sa.PrimaryKeyConstraint("case_id", "unit_id"),
    )
    table(
        "case_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("diagram", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("case_id", "seq"),
    )
    table(
        "notification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("failed_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"]),
        sa.PrimaryKeyConstraint("id"),
        indexes=[
            ("ix_notification_case_id", ["case_id"]),
            ("ix_notification_pending", ["delivered_at", "next_attempt_at"]),
        ],
    )
    table(
        "timer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"]),
        sa.PrimaryKeyConstraint("id"),
        indexes=[
            ("ix_timer_case_id", ["case_id"]),
            ("ix_timer_due_at", ["due_at"]),
        ],
    )
    table(
        "work_item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("spec", sa.String(length=100), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("form", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.Column("village_id", sa.Integer(), nullable=False),
        sa.Column("assignee", sa.String(length=64), nullable=True),
        sa.Column("excluded", sa.String(length=64), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=True),
        sa.Column("supervised_at", sa.DateTime(), nullable=True),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.Column("completed_by", sa.String(length=64), nullable=True),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"]),
        sa.ForeignKeyConstraint(["unit_id"], ["unit.id"]),
        sa.ForeignKeyConstraint(["village_id"], ["unit.id"]),
        sa.PrimaryKeyConstraint("id"),
        indexes=[
            ("ix_work_item_assignee", ["assignee", "completed_at"]),
            ("ix_work_item_case", ["case_id", "completed_at"]),
            ("ix_work_item_inbox", ["role", "unit_id", "completed_at", "due_at", "id"]),
        ],
    )


def downgrade() -> None:
    for name in (
        "work_item",
        "timer",
        "notification",
        "case_event",
        "case_department",
        "position",
        "liaison",
        "household",
        "case",
        "api_token",
        "unit",
        "person",
        "login_failure",
        "diagram_version",
        "counter",
        "calendar_year",
    ):
        op.drop_table(name)
