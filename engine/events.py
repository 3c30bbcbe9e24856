"""The hash-chained case history (DESIGN §6).

hash = sha256(prev + "\\n" + canonical), canonical being the event's eight fields as sorted, compact,
non-ASCII-preserving JSON. Anyone holding the events API's JSON can recompute it in a few lines.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Case, CaseEvent, ChainRewrite, Reporter

GENESIS = "0" * 64


def canonical(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev: str, event: dict[str, Any]) -> str:
    return hashlib.sha256((prev + "\n" + canonical(event)).encode("utf-8")).hexdigest()


def reporter_hash(salt: str, reporter: dict[str, Any]) -> str:
    """What an event records of a reporter: sha256 of the case's salt and the reporter's
    canonical JSON ({name, phone}). The salt stays with the reporter, out of the chain, so the hash
    cannot be reversed by trying every phone number."""
    return hashlib.sha256((salt + canonical(reporter)).encode("utf-8")).hexdigest()


def reporter_record(name: str | None, phone: str | None) -> dict[str, Any]:
    return {"name": name, "phone": phone}


def check_data(value: Any, path: str = "data") -> None:
    """Event data holds no floats, so every language writes the same canonical text."""
    if isinstance(value, float):
        raise TypeError(f"{path} is a float; event data holds no floats")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path} has a non-string key")
            check_data(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_data(item, f"{path}[{i}]")
    elif value is not None and not isinstance(value, str | int | bool):
        raise TypeError(f"{path} holds a {type(value).__name__}")


def as_dict(case_number: str, row: CaseEvent) -> dict[str, Any]:
    """The eight hashed fields of a stored event."""
    return {
        "case": case_number,
        "seq": row.seq,
        "at": row.at,
        "type": row.type,
        "actor": row.actor,
        "task": row.task,
        "data": json.loads(row.data),
        "diagram": row.diagram,
    }


def next_event(
    prev: str,
    case_number: str,
    seq: int,
    at: str,
    type_: str,
    actor: str,
    task: str | None,
    data: dict,
    diagram: str,
) -> tuple[dict[str, Any], str]:
    """The event with these fields, as it is hashed, and its hash after `prev` (DESIGN §6)."""
    check_data(data)
    event = {
        "case": case_number,
        "seq": seq,
        "at": at,
        "type": type_,
        "actor": actor,
        "task": task,
        "data": data,
        "diagram": diagram,
    }
    return event, chain_hash(prev, event)


def chained_rows(
    number: str,
    seq: int,
    head: str,
    at: str,
    actor: str,
    diagram: str,
    events: list[tuple[str, str | None, dict]],
) -> tuple[list[dict[str, Any]], int, str]:
    """The stored rows of `events` chained after (seq, head) of the chain named `number` (a case
    or a campaign): their fields as hashed (`data` as its canonical text) and each hash; returns
    the rows and the new (seq, head). The caller adds the row's owner (case_id, campaign_id)."""
    rows = []
    for type_, task, data in events:
        seq += 1
        _event, head = next_event(head, number, seq, at, type_, actor, task, data, diagram)
        rows.append(
            {
                "seq": seq,
                "at": at,
                "type": type_,
                "actor": actor,
                "task": task,
                "data": canonical(data),
                "diagram": diagram,
                "hash": head,
            }
        )
    return rows, seq, head


class Chain:
    """Appends to one case's chain within the current step's transaction. The head (last seq and
    hash) lives on the case row, so it moves under the case's version check."""

    def __init__(self, session: Session, case: Case):
        self.session, self.case = session, case
        self.seq, self.head = case.event_seq or 0, case.event_head or GENESIS

    @classmethod
    def open(cls, session: Session, case: Case) -> Chain:
        return cls(session, case)

    def append(
        self, at: str, type_: str, actor: str, task: str | None, data: dict, diagram: str
    ) -> CaseEvent:
        event, digest = next_event(
            self.head, self.case.number, self.seq + 1, at, type_, actor, task, data, diagram
        )
        row = CaseEvent(
            case_id=self.case.id,
            seq=event["seq"],
            at=at,
            type=type_,
            actor=actor,
            task=task,
            data=canonical(data),
            diagram=diagram,
            hash=digest,
        )
        self.session.add(row)
        self.seq, self.head = event["seq"], digest
        self.case.event_seq, self.case.event_head = self.seq, self.head
        return row


@dataclass
class Verification:
    ok: bool
    events: int
    head: str
    bad_seq: int | None = None
    reason: str | None = None


def case_events(session: Session, case: Case) -> list[CaseEvent]:
    return list(
        session.scalars(
            select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.seq)
        )
    )


def verify(session: Session, case: Case) -> Verification:
    """Recompute the chain from the stored fields; name the first event that does not match. A
    chain a migration recomputed must also lead, rebuilt as it was, to the head it had then."""
    rows = case_events(session, case)
    bad = check_chain(case.number, rows)
    if bad is None:
        rewrites = session.scalars(select(ChainRewrite).where(ChainRewrite.case_id == case.id))
        for rewrite in rewrites:
            bad = check_rewrite(session, case, rows, rewrite)
            if bad is not None:
                break
    head = rows[-1].hash if rows else GENESIS
    if bad is not None:
        good = [row.hash for row in rows if row.seq < bad[0]]
        return Verification(False, len(rows), good[-1] if good else GENESIS, bad[0], bad[1])
    return Verification(True, len(rows), head)


def check_chain(case_number: str, rows: list[CaseEvent]) -> tuple[int, str] | None:
    """A chain on its own: seqs from 1 without a gap, each hash recomputed from the stored
    fields. None when it holds, else (the first bad seq, why)."""
    prev = GENESIS
    for expected_seq, row in enumerate(rows, start=1):
        if row.seq != expected_seq:
            return expected_seq, "missing event"
        try:
            digest = chain_hash(prev, as_dict(case_number, row))
        except ValueError:
            return row.seq, "unreadable data"
        if digest != row.hash:
            return row.seq, "hash mismatch"
        prev = row.hash
    return None


def check_rewrite(
    session: Session, case: Case, rows: list[CaseEvent], rewrite: ChainRewrite
) -> tuple[int, str] | None:
    """Rebuild the events as they were before a migration moved the reporter out of them, and
    check that they lead to the head recorded then. None when they do, else (seq, reason)."""
    reporter = session.get(Reporter, case.id)
    prev = GENESIS
    for row in rows[: rewrite.old_seq]:
        event = as_dict(case.number, row)
        data = event["data"]
        if isinstance(data, dict) and "reporter_hash" in data:
            if reporter is None:
                return row.seq, "reporter missing for a rewritten event"
            record = reporter_record(reporter.name, reporter.phone)
            if reporter_hash(reporter.salt, record) != data["reporter_hash"]:
                return row.seq, "reporter does not match its hash"
            data = {k: v for k, v in data.items() if k != "reporter_hash"}
            event["data"] = {**data, "reporter": record}
        prev = chain_hash(prev, event)
    if len(rows) < rewrite.old_seq or prev != rewrite.old_head:
        return rewrite.old_seq, "the chain before its rewrite does not lead to the recorded head"
    if rows[rewrite.old_seq - 1].hash != rewrite.new_head:
        return rewrite.old_seq, "the rewritten chain does not lead to the recorded new head"
    return None
