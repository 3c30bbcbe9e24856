"""Migration 0002 on a database an earlier Gridloop filled: reporters leave the case row and the
event chain, each rewritten chain is recomputed and recorded with its old head, and `gridloop
audit verify` rebuilds the old chain from the new one and the reporter table and checks it.
On SQLite and PostgreSQL. Fixtures are test_migrations'.
"""

# ruff: noqa: F401, F811

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import inspect, select, text
from test_migrations import PRE_ALEMBIC

from engine.events import GENESIS, canonical, chain_hash
from engine.models import ChainRewrite, Reporter

NAME, PHONE = "王大妈", "13812345678"
AT = datetime(2026, 11, 20, 2, 0)


def _old_case(engine) -> str:
    """A case as Gridloop kept it before 0002: the reporter on the row and whole in the opened
    event, then two more events; its chain head. Returns the head."""
    t = PRE_ALEMBIC.tables
    events = [
        (
            "opened",
            None,
            {"title": "水管破裂", "grid": "G1", "reporter": {"name": NAME, "phone": PHONE}},
        ),
        ("claimed", "accept", {"work_item": 1}),
        ("task_completed", "accept", {"valid": True, "category": "dispute", "severity": "low"}),
    ]
    with engine.begin() as conn:
        for row in (
            dict(id=1, code="XDK", name="镇", level="town", parent_id=None),
            dict(id=2, code="V1", name="村", level="village", parent_id=1),
            dict(id=3, code="D1", name="片", level="district", parent_id=2),
            dict(id=4, code="G1", name="组", level="grid", parent_id=3),
        ):
            conn.execute(t["unit"].insert().values(households=0, active=True, settings={}, **row))
        # No explicit id: init-db deploys a version afterwards, from PostgreSQL's sequence.
        diagram_id = conn.execute(
            t["diagram_version"]
            .insert()
            .values(process_id="p", sha256="d" * 64, files={}, deployed_by="system", deployed_at=AT)
        ).inserted_primary_key[0]
        head = GENESIS
        for seq, (type_, task, data) in enumerate(events, start=1):
            event = {
                "case": "XDK-2026-000001",
                "seq": seq,
                "at": "2026-11-20T02:00:00.000000Z",
                "type": type_,
                "actor": "off1",
                "task": task,
                "data": data,
                "diagram": "d" * 64,
            }
            head = chain_hash(head, event)
            if seq == 1:
                conn.execute(
                    t["case"]
                    .insert()
                    .values(
                        id=1,
                        number="XDK-2026-000001",
                        title="水管破裂",
                        description="",
                        reporter_name=NAME,
                        reporter_phone=PHONE,
                        town_id=1,
                        village_id=2,
                        district_id=3,
                        grid_id=4,
                        status="handling",
                        opened_at=AT,
                        updated_at=AT,
                        reopen_count=0,
                        overdue_marked=False,
                        event_seq=0,
                        event_head=GENESIS,
                        diagram_id=diagram_id,
                        workflow="",
                        version=1,
                    )
                )
            conn.execute(
                t["case_event"]
                .insert()
                .values(
                    case_id=1,
                    seq=seq,
                    at=event["at"],
                    type=type_,
                    actor="off1",
                    task=task,
                    data=canonical(data),
                    diagram="d" * 64,
                    hash=head,
                )
            )
        conn.execute(t["case"].update().values(event_seq=len(events), event_head=head, version=2))
    return head


def test_reporters_leave_the_chain_and_the_rewrite_can_be_checked(new_database, engines, gridloop):
    url = new_database()
    engine = engines(url)
    PRE_ALEMBIC.create_all(engine)
    old_head = _old_case(engine)

    gridloop(url, "init-db")
    assert "reporter_phone" not in {c["name"] for c in inspect(engine).get_columns("case")}
    with engine.connect() as conn:
        data = [
            json.loads(d) for (d,) in conn.execute(text("select data from case_event order by seq"))
        ]
        reporter = conn.execute(select(Reporter.__table__)).one()
        rewrite = conn.execute(select(ChainRewrite.__table__)).one()
        new_head = conn.execute(text('select event_head from "case"')).scalar()
    assert "reporter" not in data[0] and len(data[0]["reporter_hash"]) == 64
    assert PHONE not in json.dumps(data, ensure_ascii=False)
    assert (reporter.name, reporter.phone) == (NAME, PHONE)
    assert (rewrite.old_seq, rewrite.old_head, rewrite.new_head) == (3, old_head, new_head)
    assert new_head != old_head
    assert "1 case(s) checked, 0 broken" in gridloop(url, "audit", "verify")

    # The reporter table is now what the old chain rests on: change it and verify says where.
    with engine.begin() as conn:
        conn.execute(Reporter.__table__.update().values(phone="13900000000"))
    broken = gridloop(url, "audit", "verify", ok=False)
    assert "BROKEN at seq 1" in broken and "reporter does not match its hash" in broken
