"""case_fact keeps its durations in microseconds, so that the figures' averages are exact.

Revision ID: 0015_fact_microseconds
Revises: 0014_campaigns
Create Date: 2026-11-28

avg_dispatch_minutes and avg_resolution_hours (DESIGN §11) are means rounded half up. With each
case's duration cut to whole seconds, a mean could fall on the other side of a rounding point
than the events' own instants give (236.499 minutes against 236.508, shown as 236 for 237).
dispatch_us and resolution_us (BIGINT: a year is 3.2e13 µs) replace dispatch_seconds and
resolution_seconds, filled from the row's own instants (opened_at, accepted_at, archived_at),
which the steps wrote with the same microseconds as the events. The downgrade cuts them back to
whole seconds, as the older code kept them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_fact_microseconds"
down_revision = "0014_campaigns"
branch_labels = None
depends_on = None

CHUNK = 5_000
US = 1_000_000


def _facts(*columns: str) -> sa.TableClause:
    kinds = {"case_id": sa.Integer()}
    return sa.table(
        "case_fact",
        *(sa.column(c, kinds.get(c, sa.DateTime() if c.endswith("_at") else sa.BigInteger()))
          for c in columns),
    )  # fmt: skip


def _micros(start, end) -> int | None:
    if start is None or end is None:
        return None
    delta = end - start
    return max(0, (delta.days * 86_400 + delta.seconds) * US + delta.microseconds)


def upgrade() -> None:
    with op.batch_alter_table("case_fact") as batch:
        batch.add_column(sa.Column("dispatch_us", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("resolution_us", sa.BigInteger(), nullable=True))
    _fill(op.get_bind())
    with op.batch_alter_table("case_fact") as batch:
        batch.drop_column("dispatch_seconds")
        batch.drop_column("resolution_seconds")


def _fill(conn) -> None:
    """dispatch_us and resolution_us of every accepted case, from the row's own instants."""
    facts = _facts("case_id", "opened_at", "accepted_at", "archived_at")
    rows = conn.execute(
        sa.select(facts.c.case_id, facts.c.opened_at, facts.c.accepted_at, facts.c.archived_at)
        .where(facts.c.accepted_at.is_not(None))
        .order_by(facts.c.case_id)
    ).all()
    target = _facts("case_id", "dispatch_us", "resolution_us")
    update = (
        sa.update(target)
        .where(target.c.case_id == sa.bindparam("b_case"))
        .values(dispatch_us=sa.bindparam("b_dispatch"), resolution_us=sa.bindparam("b_resolution"))
    )
    for start in range(0, len(rows), CHUNK):
        conn.execute(
            update,
            [
                {
                    "b_case": case_id,
                    "b_dispatch": _micros(opened, accepted),
                    "b_resolution": _micros(accepted, archived),
                }
                for case_id, opened, accepted, archived in rows[start : start + CHUNK]
            ],
        )


def downgrade() -> None:
    with op.batch_alter_table("case_fact") as batch:
        batch.add_column(sa.Column("dispatch_seconds", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("resolution_seconds", sa.Integer(), nullable=True))
    facts = sa.table(
        "case_fact",
        sa.column("dispatch_seconds", sa.Integer()),
        sa.column("resolution_seconds", sa.Integer()),
        sa.column("dispatch_us", sa.BigInteger()),
        sa.column("resolution_us", sa.BigInteger()),
    )
    op.get_bind().execute(
        sa.update(facts).values(
            dispatch_seconds=facts.c.dispatch_us // US,
            resolution_seconds=facts.c.resolution_us // US,
        )
    )
    with op.batch_alter_table("case_fact") as batch:
        batch.drop_column("dispatch_us")
        batch.drop_column("resolution_us")
