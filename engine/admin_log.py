"""The administration log: what administrators did, on a record nobody can quietly change.

Every deploy, activation, migration, organisation change, password reset, deactivation and
calendar change appends one entry, in the same transaction as the change itself. Entries are
hash-chained exactly like a case's events (engine/events.py): an entry is an event of DESIGN §6's
form, {"case": "admin", "seq", "at", "type", "actor", "task": null, "data", "diagram": null}, and
hash = sha256(prev + "\\n" + canonical), so whatever checks a case's chain checks this one. The
daily digests carry the log's head as one more head, named `admin` (no case number looks like
it), so a rewrite of the whole log is caught like a rewrite of a case.

Data holds what was changed (usernames, unit codes, hashes, counts), never a password.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .clock import iso
from .events import GENESIS, chain_hash, check_data
from .models import AdminEvent, Counter

LOG = "admin"  # the log's name in the chain and in the digests' heads (DESIGN §6)
DIGESTED = "admin_log_digested"  # Counter key: the seq the latest digest holds

# What an entry's type may be. A new kind of change adds its word here.
TYPES = frozenset(
    {
        "diagram_deployed",
        "diagram_activated",
        "migration_started",
        "cases_migrated",
        "org_imported",
        "org_exported",
        "person_deactivated",
        "person_reactivated",
        "password_reset",
        "position_moved",
        "owner_changed",
        "calendar_changed",
    }
)


def entry_dict(row: AdminEvent) -> dict[str, Any]:
    """The hashed fields of a stored entry."""
    return {
        "case": LOG,
        "seq": row.seq,
        "at": row.at,
        "type": row.type,
        "actor": row.actor,
        "task": None,
        "data": json.loads(row.data),
        "diagram": None,
    }


def head(session: Session) -> tuple[int, str]:
    """(seq, hash) of the newest entry; (0, GENESIS) for an empty log."""
    last = session.scalars(select(AdminEvent).order_by(AdminEvent.seq.desc()).limit(1)).first()
    return (last.seq, last.hash) if last else (0, GENESIS)


def record(
    session: Session, now: datetime, actor: str, type_: str, data: dict[str, Any]
) -> AdminEvent:
    """Append an entry; the caller commits it with the change it records. Two administrators
    appending at once collide on seq, and the loser's whole transaction rolls back."""
    if type_ not in TYPES:
        raise ValueError(f"unknown administration event {type_!r}")
    check_data(data)
    seq, prev = head(session)
    row = AdminEvent(
        seq=seq + 1,
        at=iso(now),
        actor=actor,
        type=type_,
        data=json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
        prev=prev,
        hash="",
    )
    row.hash = chain_hash(prev, entry_dict(row))
    session.add(row)
    session.flush()
    return row


def as_json(row: AdminEvent) -> dict[str, Any]:
    return {**entry_dict(row), "prev": row.prev, "hash": row.hash}


def entries(
    session: Session, before: int | None = None, limit: int = 50, type_: str | None = None
) -> list[AdminEvent]:
    """Newest first, `limit` of them, older than seq `before` if given."""
    query = select(AdminEvent).order_by(AdminEvent.seq.desc()).limit(limit)
    if before is not None:
        query = query.where(AdminEvent.seq < before)
    if type_ is not None:
        query = query.where(AdminEvent.type == type_)
    return list(session.scalars(query))


@dataclass(frozen=True)
class Broken:
    seq: int
    reason: str


def check(session: Session) -> Broken | None:
    """The first entry whose chain is broken: a changed entry, a missing or reordered one."""
    prev = GENESIS
    expected = 1
    for row in session.scalars(select(AdminEvent).order_by(AdminEvent.seq)):
        if row.seq != expected:
            return Broken(expected, f"entry {expected} missing")
        if row.prev != prev:
            return Broken(row.seq, "prev is not the entry before")
        try:
            body = entry_dict(row)
        except ValueError:
            return Broken(row.seq, "data unreadable")
        if chain_hash(prev, body) != row.hash:
            return Broken(row.seq, "hash does not match")
        prev, expected = row.hash, expected + 1
    return None


def hashes(session: Session) -> dict[int, str]:
    return dict(session.execute(select(AdminEvent.seq, AdminEvent.hash)).tuples().all())


def undigested(session: Session) -> list | None:
    """The head to put in the next digest, [LOG, seq, hash], when the log grew since the last."""
    seq, last = head(session)
    done = session.get(Counter, DIGESTED)
    if seq == 0 or (done is not None and done.value >= seq):
        return None
    return [LOG, seq, last]


def mark_digested(session: Session, seq: int) -> None:
    done = session.get(Counter, DIGESTED)
    if done is None:
        session.add(Counter(key=DIGESTED, value=seq))
    elif done.value < seq:
        done.value = seq
