"""Migration 0015: case_fact's durations go from whole seconds to microseconds, filled from the
rows' own instants, and back to whole seconds on a downgrade (on SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta

from alembic import command
from sqlalchemy import JSON, Boolean, DateTime, Integer, MetaData, String, Text, select

from engine.storage import alembic_config, head_revision, migration_connection, upgrade_schema

OPENED = datetime(2026, 3, 2, 1, 0, 0, 250_000)  # naive UTC, as the column keeps it
DISPATCH = timedelta(minutes=236, seconds=29, microseconds=900_000)
RESOLUTION = timedelta(days=40, hours=3, microseconds=7)  # beyond 32 bits of microseconds


def _filler(column, n: int):
    """A value for a NOT NULL column of a row made only to hang a case_fact on."""
    kind = column.type
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, Integer):
        return 1  # unit 1, diagram version 1, counts
    if isinstance(kind, DateTime):
        return OPENED
    if isinstance(kind, JSON):
        return {}
    if isinstance(kind, String | Text):
        return f"x{n}"[: getattr(kind, "length", None) or 32]
    raise AssertionError(f"no filler for {column.name}: {kind}")


def _insert(conn, table, **given):
    row = dict(given)
    for column in table.columns:
        if column.name not in row and not column.nullable and column.server_default is None:
            row[column.name] = _filler(column, given.get("id", 1))
    conn.execute(table.insert().values(**row))


def test_durations_become_exact_microseconds_and_go_back_to_seconds(new_database, engines):
    engine = engines(new_database())
    upgrade_schema(engine, "0014_campaigns")
    meta = MetaData()
    meta.reflect(engine, only=("unit", "diagram_version", "case", "case_fact"))
    unit, version, case, fact = (
        meta.tables[n] for n in ("unit", "diagram_version", "case", "case_fact")
    )
    accepted, archived = OPENED + DISPATCH, OPENED + DISPATCH + RESOLUTION
    with engine.begin() as conn:
        _insert(conn, unit, id=1, code="XDK", level="town", parent_id=None)
        _insert(conn, version, id=1)
        for n in (1, 2):
            _insert(conn, case, id=n, number=f"XDK-2026-00000{n}", town_id=1, village_id=1,
                    district_id=1, grid_id=1)  # fmt: skip
        common = dict(town_id=1, village_id=1, district_id=1, grid_id=1, opened_at=OPENED)
        conn.execute(fact.insert().values(
            case_id=1, accepted_at=accepted, dispatch_seconds=14189,
            archived_at=archived, resolution_seconds=int(RESOLUTION.total_seconds()), **common,
        ))  # fmt: skip
        conn.execute(fact.insert().values(case_id=2, **common))  # opened, never accepted

    assert upgrade_schema(engine).after == head_revision()
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT case_id, dispatch_us, resolution_us FROM case_fact ORDER BY case_id"
        ).all()
    assert [tuple(r) for r in rows] == [
        (1, DISPATCH // timedelta(microseconds=1), RESOLUTION // timedelta(microseconds=1)),
        (2, None, None),
    ]

    with migration_connection(engine) as conn:
        command.downgrade(alembic_config(conn), "0014_campaigns")
    meta = MetaData()
    meta.reflect(engine, only=("case_fact",))
    fact = meta.tables["case_fact"]
    with engine.connect() as conn:
        back = conn.execute(
            select(fact.c.case_id, fact.c.dispatch_seconds, fact.c.resolution_seconds).order_by(
                fact.c.case_id
            )
        ).all()
    assert [tuple(r) for r in back] == [
        (1, 14189, int(RESOLUTION.total_seconds())),
        (2, None, None),
    ]
