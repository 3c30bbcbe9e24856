"""The event chain (DESIGN §6), recomputed the way an outsider would: from the stored rows as plain
data, with nothing but hashlib and json."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from conftest import START
from sqlalchemy import text

from engine.clock import iso
from engine.events import check_data, verify
from engine.runtime import Runtime
from engine.specs import live_version

GENESIS = "0" * 64
AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def rows_of(session, number: str) -> list[dict]:
    """The events as the events API gives them: the eight fields plus hash."""
    result = session.execute(
        text(
            "SELECT c.number, e.seq, e.at, e.type, e.actor, e.task, e.data, e.diagram, e.hash "
            'FROM case_event e JOIN "case" c ON c.id = e.case_id '
            "WHERE c.number = :number ORDER BY e.seq"
        ),
        {"number": number},
    )
    events = []
    for number_, seq, at, type_, actor, task, data, diagram, hash_ in result:
        event = {
            "case": number_,
            "seq": seq,
            "at": at,
            "type": type_,
            "actor": actor,
            "task": task,
            "data": json.loads(data),
            "diagram": diagram,
        }
        events.append({"event": event, "hash": hash_})
    return events


def recompute(events: list[dict], ensure_ascii: bool = False) -> tuple[str, int | None]:
    """(head, first seq whose stored hash does not match) — hashlib and json only."""
    prev = GENESIS
    for row in events:
        canonical = json.dumps(
            row["event"], sort_keys=True, separators=(",", ":"), ensure_ascii=ensure_ascii
        )
        digest = hashlib.sha256((prev + "\n" + canonical).encode("utf-8")).hexdigest()
        if digest != row["hash"]:
            return prev, row["event"]["seq"]
        prev = digest
    return prev, None


def busy_case(gl):
    """A case with a bit of everything: claims, escalation, reopening, a returned review."""
    case = gl.open("off1", title="村口路灯坏了，晚上很黑", description="居民王某反映")
    case = gl.complete(
        "off1", case, {"valid": True, "category": "resident_request", "severity": "low"}
    )
    item = gl.item(case)
    gl.clock.advance(hours=1)
    gl.runtime.claim(gl.session, gl.viewer("gl1"), item.id)
    gl.fire(item.due_at)  # supervised + escalated to the district
    case = gl.reload(case)
    case = gl.complete("dl1", case, {"outcome": "resolved", "note": "已更换灯泡"})
    case = gl.complete("off1", case, {"satisfaction": "unsatisfied", "note": "还是不亮"})
    case = gl.complete("dl1", case, {"outcome": "resolved", "note": "换了线路"})
    case = gl.complete("off1", case, {"satisfaction": "satisfied"})
    case = gl.complete("dl1", case, {"summary": "办结"})
    case = gl.complete("vs1", case, {"approved": False, "note": "照片缺失"})
    case = gl.complete("dl1", case, {"outcome": "resolved", "note": "补照片"})
    case = gl.complete("off1", case, {"satisfaction": "basically_satisfied"})
    case = gl.complete("dl1", case, {"summary": "补充后办结"})
    gl.clock.advance(minutes=30)
    case = gl.complete("vs1", case, {"approved": True})
    assert case.status == "archived"
    return case


def test_chain_recomputes_from_the_rows_with_hashlib_and_json(gl):
    case = busy_case(gl)
    events = rows_of(gl.session, case.number)
    types = [r["event"]["type"] for r in events]
    assert types[0] == "opened" and types[-1] == "archived"
    assert {"claimed", "supervised", "escalated", "reopened", "task_completed"} <= set(types)
    assert [r["event"]["seq"] for r in events] == list(range(1, len(events) + 1))
    sha = live_version(gl.session).sha256
    for row in events:
        event = row["event"]
        assert AT.fullmatch(event["at"]), event["at"]
        assert event["diagram"] == sha
        assert event["actor"]
    head, bad = recompute(events)
    assert bad is None
    assert head == events[-1]["hash"]
    result = verify(gl.session, case)
    assert (result.ok, result.events, result.head) == (True, len(events), head)


def test_chinese_text_is_hashed_as_utf8_not_escaped(gl):
    case = gl.open("off1", title="邻里纠纷：噪音扰民")
    events = rows_of(gl.session, case.number)
    assert events[0]["event"]["data"]["title"] == "邻里纠纷：噪音扰民"
    assert recompute(events)[1] is None
    assert recompute(events, ensure_ascii=True)[1] == 1


def test_event_data_holds_no_floats(gl):
    case = busy_case(gl)

    def walk(value):
        assert not isinstance(value, float), value
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for row in rows_of(gl.session, case.number):
        walk(row["event"]["data"])
    with pytest.raises(TypeError):
        check_data({"limit_hours": 19.2})


TAMPERING = [
    (5, "data", '{"approved":true}'),
    (3, "data", '{"category":"resident_request","severity":"low","valid":true}'),
    (7, "actor", "intruder"),
    (5, "at", "2026-11-23T02:00:00.000000Z"),
    (9, "type", "archived"),
    (2, "task", "handle"),
    (4, "diagram", "0" * 64),
]


def test_an_altered_row_is_named_by_its_seq(gl):
    case = busy_case(gl)
    assert verify(gl.session, case).ok
    for seq, column, value in TAMPERING:
        original = gl.session.execute(
            text(f"SELECT {column} FROM case_event WHERE case_id = :id AND seq = :seq"),
            {"id": case.id, "seq": seq},
        ).scalar_one()
        assert original != value, (seq, column)
        update = text(f"UPDATE case_event SET {column} = :value WHERE case_id = :id AND seq = :seq")
        gl.session.execute(update, {"value": value, "id": case.id, "seq": seq})
        gl.session.commit()
        result = verify(gl.session, case)
        assert (result.ok, result.bad_seq) == (False, seq), (seq, column)
        assert recompute(rows_of(gl.session, case.number))[1] == seq
        gl.session.execute(update, {"value": original, "id": case.id, "seq": seq})
        gl.session.commit()
        assert verify(gl.session, case).ok


def test_a_rewritten_row_breaks_the_chain_at_the_next_event(gl):
    """Rewriting one event and its own hash is not enough: the next event names the old hash."""
    case = busy_case(gl)
    events = rows_of(gl.session, case.number)
    target = events[2]
    forged = dict(target["event"], data={**target["event"]["data"], "note": "伪造"})
    prev = events[1]["hash"]
    canonical = json.dumps(forged, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    forged_hash = hashlib.sha256((prev + "\n" + canonical).encode()).hexdigest()
    gl.session.execute(
        text("UPDATE case_event SET data = :data, hash = :hash WHERE case_id = :id AND seq = 3"),
        {
            "data": json.dumps(
                forged["data"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ),
            "hash": forged_hash,
            "id": case.id,
        },
    )
    gl.session.commit()
    result = verify(gl.session, case)
    assert (result.ok, result.bad_seq) == (False, 4)


def test_a_deleted_event_is_reported_missing(gl):
    case = busy_case(gl)
    gl.session.execute(
        text("DELETE FROM case_event WHERE case_id = :id AND seq = 5"), {"id": case.id}
    )
    gl.session.commit()
    result = verify(gl.session, case)
    assert (result.ok, result.bad_seq) == (False, 5)


def test_chains_are_per_case(gl):
    a = gl.accepted()
    b = gl.accepted("off2", grid="V01-D1-G02")
    ea, eb = rows_of(gl.session, a.number), rows_of(gl.session, b.number)
    assert ea[0]["event"]["seq"] == eb[0]["event"]["seq"] == 1
    assert ea[0]["hash"] != eb[0]["hash"], "the case number is part of every event"
    assert recompute(ea)[1] is None and recompute(eb)[1] is None


class TickingClock:
    """A clock that moves one second every time it is read."""

    def __init__(self, at: datetime):
        self.at = at

    def now(self) -> datetime:
        self.at += timedelta(seconds=1)
        return self.at


def test_a_step_reads_the_clock_once(gl, registry):
    clock = TickingClock(START)
    runtime = Runtime(clock, registry)
    case = runtime.open_case(gl.session, gl.viewer("off1"), title="t", grid="V01-D1-G01")
    opened, claimed = rows_of(gl.session, case.number)
    assert opened["event"]["at"] == claimed["event"]["at"]
    accept = gl.item(case)
    assert accept.created_at == case.opened_at == accept.claimed_at

    case = runtime.complete(
        gl.session,
        gl.viewer("off1"),
        accept.id,
        {"valid": True, "category": "dispute", "severity": "urgent"},
    )
    completed = rows_of(gl.session, case.number)[-1]["event"]
    at = datetime.fromisoformat(completed["at"].replace("Z", "+00:00"))
    handle = gl.item(case)
    assert handle.created_at == at
    assert completed["data"]["due_at"] == iso(at + timedelta(hours=4))
    assert handle.due_at == at + timedelta(hours=4)

    clock.at = handle.due_at + timedelta(minutes=10)
    assert runtime.fire_due_timers(gl.session) == 1
    fired = rows_of(gl.session, case.number)[-2:]
    assert [r["event"]["type"] for r in fired] == ["supervised", "escalated"]
    assert fired[0]["event"]["at"] == fired[1]["event"]["at"]
    at = datetime.fromisoformat(fired[1]["event"]["at"].replace("Z", "+00:00"))
    assert fired[1]["event"]["data"]["due_at"] == iso(at + timedelta(hours=8))
    assert gl.item(gl.reload(case)).created_at == at
    assert at.tzinfo == UTC or at.utcoffset() == timedelta(0)
