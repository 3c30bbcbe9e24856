"""Reporters out of the event chain; sessions and tokens carry a generation.

Revision ID: 0002_reporters_out_of_chain
Revises: 0001_baseline
Create Date: 2026-11-27

Residents' names and phones were kept on the case row and, whole, in each case's `opened` event,
where anyone who could see the case read them through the events API. They move to the `reporter`
table; the event keeps `reporter_hash`, sha256 of a new per-case salt and the reporter's canonical
JSON (DESIGN §6). Changing an event changes its hash and every hash after it, so each such chain
is recomputed, and a `chain_rewrite` row records its head before and after: the old events are the
new ones with each reporter_hash replaced by the reporter it hashes, which `gridloop audit verify`
rebuilds and checks against the recorded old head (and an auditor against any digest they kept).

The formulas are written out here rather than imported, so this revision keeps doing what it did
when engine/ changes later.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002_reporters_out_of_chain"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None

GENESIS = "0" * 64
REASON = "reporter moved out of the event chain (migration 0002)"

cases = sa.table(
    "case",
    sa.column("id", sa.Integer),
    sa.column("number", sa.String),
    sa.column("reporter_name", sa.String),
    sa.column("reporter_phone", sa.String),
    sa.column("event_head", sa.String),
)
events = sa.table(
    "case_event",
    sa.column("id", sa.Integer),
    sa.column("case_id", sa.Integer),
    sa.column("seq", sa.Integer),
    sa.column("at", sa.String),
    sa.column("type", sa.String),
    sa.column("actor", sa.String),
    sa.column("task", sa.String),
    sa.column("data", sa.Text),
    sa.column("diagram", sa.String),
    sa.column("hash", sa.String),
)


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev: str, event: dict) -> str:
    return hashlib.sha256((prev + "\n" + canonical(event)).encode("utf-8")).hexdigest()


def upgrade() -> None:
    op.add_column(
        "person", sa.Column("generation", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column(
        "api_token", sa.Column("generation", sa.Integer(), server_default="0", nullable=False)
    )
    op.create_table(
        "reporter",
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"]),
        sa.PrimaryKeyConstraint("case_id"),
    )
    op.create_table(
        "chain_rewrite",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("old_seq", sa.Integer(), nullable=False),
        sa.Column("old_head", sa.String(length=64), nullable=False),
        sa.Column("new_head", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_chain_rewrite_case_id", "chain_rewrite", ["case_id"])
    if not op.get_context().as_sql:
        move_reporters(op.get_bind())
    with op.batch_alter_table("case") as batch:
        batch.drop_column("reporter_name")
        batch.drop_column("reporter_phone")


def move_reporters(conn) -> None:
    """Each case with a reporter: the reporter row, its events re-chained, the rewrite recorded."""
    now = datetime.now(UTC).replace(tzinfo=None)
    reported = conn.execute(
        sa.select(cases).where(
            sa.or_(cases.c.reporter_name.is_not(None), cases.c.reporter_phone.is_not(None))
        )
    ).all()
    for case in reported:
        salt = secrets.token_hex(16)
        record = {"name": case.reporter_name, "phone": case.reporter_phone}
        rows = conn.execute(
            sa.select(events).where(events.c.case_id == case.id).order_by(events.c.seq)
        ).all()
        prev, old_head, changed = GENESIS, GENESIS, False
        for row in rows:
            data = json.loads(row.data)
            if isinstance(data, dict) and isinstance(data.get("reporter"), dict):
                # The chain covers what the event held, which is what the case row was given.
                record = {
                    "name": data["reporter"].get("name"),
                    "phone": data["reporter"].get("phone"),
                }
                data = {k: v for k, v in data.items() if k != "reporter"}
                digest = hashlib.sha256((salt + canonical(record)).encode("utf-8")).hexdigest()
                data["reporter_hash"] = digest
                changed = True
            event = {
                "case": case.number,
                "seq": row.seq,
                "at": row.at,
                "type": row.type,
                "actor": row.actor,
                "task": row.task,
                "data": data,
                "diagram": row.diagram,
            }
            new_hash = chain_hash(prev, event)
            if changed:
                conn.execute(
                    events.update()
                    .where(events.c.id == row.id)
                    .values(data=canonical(data), hash=new_hash)
                )
            prev, old_head = new_hash, row.hash
        conn.execute(
            sa.table(
                "reporter",
                sa.column("case_id"),
                sa.column("name"),
                sa.column("phone"),
                sa.column("salt"),
            )
            .insert()
            .values(case_id=case.id, salt=salt, **record)
        )
        if changed:
            conn.execute(cases.update().where(cases.c.id == case.id).values(event_head=prev))
            conn.execute(
                sa.table(
                    "chain_rewrite",
                    sa.column("case_id"),
                    sa.column("at"),
                    sa.column("reason"),
                    sa.column("old_seq"),
                    sa.column("old_head"),
                    sa.column("new_head"),
                )
                .insert()
                .values(
                    case_id=case.id,
                    at=now,
                    reason=REASON,
                    old_seq=rows[-1].seq,
                    old_head=old_head,
                    new_head=prev,
                )
            )


def downgrade() -> None:
    raise NotImplementedError(
        "0002 moved reporters out of recomputed event chains; restore a backup to go back"
    )
