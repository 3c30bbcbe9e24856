"""What the figures count, kept per case by each step (DESIGN §11).

Revision ID: 0009_case_facts
Revises: 0008_audit
Create Date: 2026-11-28

- `case_fact`: one row per case: the units it was opened in, its category, when it was opened,
  accepted (and whether as valid), archived (and at which tier), first escalated or overdue and
  first reopened, and the opened→accepted and accepted→archived durations in seconds. Indexed by
  each unit level and the acceptance time, which every figure filters by.
- `feedback_fact`: one row per feedback completion, satisfied or not.

Existing cases are filled in from their events, as the steps would have written them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0009_case_facts"
down_revision = "0008_audit"
branch_labels = None
depends_on = None

SATISFIED = ("satisfied", "basically_satisfied")


def upgrade() -> None:
    op.create_table(
        "case_fact",
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("town_id", sa.Integer(), nullable=False),
        sa.Column("village_id", sa.Integer(), nullable=False),
        sa.Column("district_id", sa.Integer(), nullable=False),
        sa.Column("grid_id", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=True),
        sa.Column("opened_at", sa.DateTime(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(), nullable=True),
        sa.Column("valid", sa.Boolean(), nullable=True),
        sa.Column("dispatch_seconds", sa.Integer(), nullable=True),
        sa.Column("archived_at", sa.DateTime(), nullable=True),
        sa.Column("resolution_seconds", sa.Integer(), nullable=True),
        sa.Column("resolved_tier", sa.String(length=32), nullable=True),
        sa.Column("late_at", sa.DateTime(), nullable=True),
        sa.Column("reopened_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"]),
        sa.PrimaryKeyConstraint("case_id"),
    )
    for level in ("town", "village", "district", "grid"):
        op.create_index(f"ix_case_fact_{level}", "case_fact", [f"{level}_id", "accepted_at"])
    op.create_table(
        "feedback_fact",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("satisfied", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_feedback_fact_at", "feedback_fact", ["at"])
    op.create_index("ix_feedback_fact_case_id", "feedback_fact", ["case_id"])
    _backfill(op.get_bind())


def _instant(text: str) -> datetime:
    """An event's `at` as a naive UTC datetime, as the UTCDateTime columns store it."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)


def _backfill(conn) -> None:
    units = {
        code: (uid, parent)
        for uid, code, parent in conn.execute(sa.text("SELECT id, code, parent_id FROM unit"))
    }
    by_id = {uid: parent for uid, parent in units.values()}
    cases = {
        row[0]: row
        for row in conn.execute(
            sa.text('SELECT id, town_id, village_id, district_id, grid_id, tier FROM "case"')
        )
    }
    facts: dict[int, dict] = {}
    feedback: list[dict] = []
    events = conn.execute(
        sa.text("SELECT case_id, type, task, data, at FROM case_event ORDER BY case_id, seq")
    )
    for case_id, type_, task, text, at in events:
        data = json.loads(text) if text else {}
        data = data if isinstance(data, dict) else {}
        when = _instant(at)
        fact = facts.get(case_id)
        if type_ == "opened":
            row = cases[case_id]
            chain = [row[4], row[3], row[2], row[1]]
            grid = units.get(data.get("grid") or "")
            if grid is not None:  # the units it was opened in, if it moved since
                district = by_id.get(grid[0])
                village = by_id.get(district) if district else None
                town = by_id.get(village) if village else None
                if district and village and town:
                    chain = [grid[0], district, village, town]
            fact = facts[case_id] = {
                "case_id": case_id,
                "grid_id": chain[0],
                "district_id": chain[1],
                "village_id": chain[2],
                "town_id": chain[3],
                "category": data.get("category"),
                "opened_at": when,
                "accepted_at": None,
                "valid": None,
                "dispatch_seconds": None,
                "archived_at": None,
                "resolution_seconds": None,
                "resolved_tier": None,
                "late_at": None,
                "reopened_at": None,
            }
        if fact is None:
            continue
        if type_ == "task_completed" and task == "accept":
            if fact["accepted_at"] is None:  # the first acceptance counts (a transfer repeats it)
                fact["accepted_at"], fact["valid"] = when, data.get("valid") is True
                seconds = (when - fact["opened_at"]).total_seconds()
                fact["dispatch_seconds"] = max(0, int(seconds))
            if data.get("category"):
                fact["category"] = data["category"]
        elif type_ == "task_completed" and task == "feedback":
            satisfied = data.get("satisfaction") in SATISFIED
            feedback.append({"case_id": case_id, "at": when, "satisfied": satisfied})
        elif type_ == "archived":
            fact["archived_at"], fact["resolved_tier"] = when, cases[case_id][5]
            if fact["accepted_at"] is not None:
                seconds = (when - fact["accepted_at"]).total_seconds()
                fact["resolution_seconds"] = max(0, int(seconds))
        if (type_ == "escalated" or data.get("overdue") is True) and fact["late_at"] is None:
            fact["late_at"] = when
        if type_ == "reopened" and fact["reopened_at"] is None:
            fact["reopened_at"] = when
    if facts:
        columns = [
            sa.column(name, sa.DateTime() if name.endswith("_at") else None)
            for name in next(iter(facts.values()))
        ]
        conn.execute(sa.insert(sa.table("case_fact", *columns)), list(facts.values()))
    if feedback:
        table = sa.table(
            "feedback_fact",
            sa.column("case_id"),
            sa.column("at", sa.DateTime()),
            sa.column("satisfied", sa.Boolean()),
        )
        conn.execute(sa.insert(table), feedback)


def downgrade() -> None:
    op.drop_index("ix_feedback_fact_case_id", table_name="feedback_fact")
    op.drop_index("ix_feedback_fact_at", table_name="feedback_fact")
    op.drop_table("feedback_fact")
    for level in ("town", "village", "district", "grid"):
        op.drop_index(f"ix_case_fact_{level}", table_name="case_fact")
    op.drop_table("case_fact")
