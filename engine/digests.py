"""Daily anchors and the verification of every chain (DESIGN §6).

A digest is `{"n", "made_at", "prev", "heads"}`, hashed as the sha256 of its canonical JSON; heads
are `[case_number, seq, hash]` for every case whose chain grew since the digest before, so a digest
stays small however many cases are closed. Each case row remembers the seq its latest digest holds
(`digested_seq`); a partial index over the rows where the chain has grown past it makes finding
them cheap. Whoever keeps a digest's hash outside Gridloop (printed, posted) can then catch a
rewrite of a whole chain: the event at a digested seq must still have the digested hash.

`verify_all` checks the digests' own chain, every case's chain on its own (engine/events.py), and
every case against every digest that names it, and names the first bad seq of each case.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, time

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from . import admin_log
from .clock import SHANGHAI, iso
from .events import GENESIS, canonical, check_chain, check_rewrite
from .models import Campaign, CampaignEvent, Case, CaseEvent, ChainRewrite, Digest

CHUNK = 500  # cases verified per query


SYSTEM = "system"  # who makes the nightly digest (and `gridloop audit digest`)


def digest_hash(n: int, made_at: str, prev: str, heads: list) -> str:
    body = {"n": n, "made_at": made_at, "prev": prev, "heads": heads}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


def latest(session: Session) -> Digest | None:
    return session.scalars(select(Digest).order_by(Digest.n.desc()).limit(1)).first()


def make(session: Session, now: datetime, made_by: str) -> Digest:
    """Append the next digest with the heads of every chain that grew since the one before. The
    caller commits; two digests made at once collide on `n`, and the loser's commit fails."""
    last = latest(session)
    # Sorted here, not in SQL: ORDER BY number would tempt the planner into walking the whole
    # number index instead of the small partial index of grown chains.
    rows = sorted(
        session.execute(
            select(Case.id, Case.number, Case.event_seq, Case.event_head).where(
                Case.event_seq > Case.digested_seq
            )
        ).all(),
        key=lambda row: row.number,
    )
    # A campaign's own chain (engine/campaigns.py) is anchored like a case's, by its number.
    grown = session.execute(
        select(Campaign.id, Campaign.number, Campaign.event_seq, Campaign.event_head).where(
            Campaign.event_seq > Campaign.digested_seq
        )
    ).all()
    heads = sorted(
        ([number, seq, head] for _id, number, seq, head in (*rows, *grown)),
        key=lambda h: h[0],
    )
    log_head = admin_log.undigested(session)  # the administration log is one more chain
    if log_head is not None:
        heads.append(log_head)
        admin_log.mark_digested(session, log_head[1])
    n = last.n + 1 if last else 1
    prev = last.hash if last else GENESIS
    made_at = iso(now)
    digest = Digest(
        n=n,
        made_at=made_at,
        made_by=made_by,
        prev=prev,
        hash=digest_hash(n, made_at, prev, heads),
        cases=len(rows),
        heads=canonical(heads),
    )
    session.add(digest)
    for case_id, _number, seq, _head in rows:
        # The seq read above: a step that appended meanwhile is in the next digest.
        session.execute(
            update(Case)
            .where(Case.id == case_id, Case.digested_seq < seq)
            .values(digested_seq=seq)
            .execution_options(synchronize_session=False)
        )
    for campaign_id, _number, seq, _head in grown:
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.digested_seq < seq)
            .values(digested_seq=seq)
            .execution_options(synchronize_session=False)
        )
    session.flush()
    return digest


def daily_due(session: Session, now: datetime) -> bool:
    """Whether today's anchor is still to make: none was made since the last midnight in Asia/
    Shanghai (by anyone: an auditor's digest after midnight counts as the day's)."""
    midnight = datetime.combine(now.astimezone(SHANGHAI).date(), time(0), SHANGHAI)
    last = latest(session)
    return last is None or last.made_at < iso(midnight)


def make_daily(session: Session, now: datetime) -> Digest | None:
    """The day's digest if it is due (the ticker and the rq scheduler call this); commits."""
    if not daily_due(session, now):
        return None
    digest = make(session, now, SYSTEM)
    session.commit()
    return digest


def as_json(digest: Digest, heads: bool = False) -> dict:
    out = {
        "n": digest.n,
        "made_at": digest.made_at,
        "made_by": digest.made_by,
        "prev": digest.prev,
        "hash": digest.hash,
        "cases": digest.cases,
    }
    if heads:
        out["heads"] = json.loads(digest.heads)
    return out


# ----------------------------------------------------------------------------- verification


@dataclass
class Problem:
    case: str  # a case number, or "digest"
    seq: int  # the first bad seq (for "digest": the digest's n)
    reason: str

    def as_json(self) -> dict:
        return {"case": self.case, "seq": self.seq, "reason": self.reason}


@dataclass
class Report:
    cases: int = 0
    events: int = 0
    digests: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict:
        return {
            "ok": self.ok,
            "cases": self.cases,
            "events": self.events,
            "digests": self.digests,
            "problems": [p.as_json() for p in self.problems],
        }


Progress = Callable[[int, int], None]


def verify_all(
    session: Session, case_number: str | None = None, progress: Progress | None = None
) -> Report:
    """Check the digests' chain, then each case's chain on its own and against every digest
    naming it; `progress(done, total)` is called as cases are checked."""
    report = Report()
    expected = _digested_heads(session, report)
    query = select(Case.id, Case.number).order_by(Case.id)
    if case_number is not None:
        query = query.where(Case.number == case_number)
    cases = session.execute(query).all()
    total = len(cases)
    if progress:
        progress(0, total)
    rewritten = set(session.scalars(select(ChainRewrite.case_id).distinct()))
    for start in range(0, total, CHUNK):
        chunk = cases[start : start + CHUNK]
        events = _events_of(session, [case_id for case_id, _n in chunk])
        for case_id, number in chunk:
            rows = events.get(case_id, [])
            report.cases += 1
            report.events += len(rows)
            bad = _check_case(session, case_id, number, rows, case_id in rewritten)
            digest_bad = _check_against(rows, expected.get(number, ()))
            found = [b for b in (bad, digest_bad) if b is not None]
            if found:
                seq, reason = min(found)
                report.problems.append(Problem(number, seq, reason))
        if progress:
            progress(min(start + CHUNK, total), total)
    log_heads = expected.pop(admin_log.LOG, [])
    if case_number is None:
        _check_admin_log(session, report, log_heads)
        present = {number for _id, number in cases} | _check_campaigns(session, report, expected)
        # A chain a digest names must still exist.
        for number, heads in sorted(expected.items()):
            if number not in present:
                seq, _head, n = min(heads)
                report.problems.append(Problem(number, 1, f"named by digest {n}, missing"))
    return report


def _check_admin_log(
    session: Session, report: Report, log_heads: list[tuple[int, str, int]]
) -> None:
    """The administration log's chain on its own and against every digest that holds its head."""
    found = []
    broken = admin_log.check(session)
    if broken is not None:
        found.append((broken.seq, broken.reason))
    by_seq = admin_log.hashes(session)
    found += [
        (seq, f"does not match digest {n}") for seq, head, n in log_heads if by_seq.get(seq) != head
    ]
    if found:
        seq, reason = min(found)
        report.problems.append(Problem(admin_log.LOG, seq, reason))


def _check_campaigns(session: Session, report: Report, expected: dict) -> set[str]:
    """Each campaign's own chain on its own and against every digest naming it; returns their
    numbers."""
    numbers = set()
    for campaign_id, number in session.execute(
        select(Campaign.id, Campaign.number).order_by(Campaign.id)
    ):
        numbers.add(number)
        rows = list(
            session.scalars(
                select(CampaignEvent)
                .where(CampaignEvent.campaign_id == campaign_id)
                .order_by(CampaignEvent.seq)
            )
        )
        report.events += len(rows)
        found = [
            b
            for b in (check_chain(number, rows), _check_against(rows, expected.get(number, ())))
            if b is not None
        ]
        if found:
            seq, reason = min(found)
            report.problems.append(Problem(number, seq, reason))
    return numbers


def _digested_heads(session: Session, report: Report) -> dict[str, list[tuple[int, str, int]]]:
    """Every head every digest holds, by case, after checking the digests' own chain."""
    expected: dict[str, list[tuple[int, str, int]]] = {}
    prev = GENESIS
    for digest in session.scalars(select(Digest).order_by(Digest.n)):
        report.digests += 1
        heads = _heads(digest.heads)
        if heads is None:
            report.problems.append(Problem("digest", digest.n, "heads unreadable"))
            prev = digest.hash
            continue
        if digest.n != report.digests:
            report.problems.append(Problem("digest", digest.n, f"digest {report.digests} missing"))
        elif digest.prev != prev:
            report.problems.append(Problem("digest", digest.n, "prev is not the digest before"))
        elif digest_hash(digest.n, digest.made_at, digest.prev, heads) != digest.hash:
            report.problems.append(Problem("digest", digest.n, "hash does not match"))
        prev = digest.hash
        for number, seq, head in heads:
            expected.setdefault(number, []).append((seq, head, digest.n))
    return expected


def _heads(text: str) -> list | None:
    """A digest's stored heads, or None when they are not a list of [number, seq, hash]."""
    try:
        heads = json.loads(text)
    except ValueError:
        return None
    ok = isinstance(heads, list) and all(
        isinstance(h, list)
        and len(h) == 3
        and isinstance(h[0], str)
        and isinstance(h[1], int)
        and isinstance(h[2], str)
        for h in heads
    )
    return heads if ok else None


def _events_of(session: Session, case_ids: list[int]) -> dict[int, list[CaseEvent]]:
    found: dict[int, list[CaseEvent]] = {}
    rows = session.scalars(
        select(CaseEvent)
        .where(CaseEvent.case_id.in_(case_ids))
        .order_by(CaseEvent.case_id, CaseEvent.seq)
    )
    for row in rows:
        found.setdefault(row.case_id, []).append(row)
    return found


def _check_case(
    session: Session, case_id: int, number: str, rows: list[CaseEvent], rewritten: bool
) -> tuple[int, str] | None:
    """The chain on its own, and as it was before a migration rewrote it (engine/events.py)."""
    bad = check_chain(number, rows)
    if bad is not None:
        return bad
    if rewritten:
        case = session.get(Case, case_id)
        for rewrite in session.scalars(select(ChainRewrite).where(ChainRewrite.case_id == case_id)):
            bad = check_rewrite(session, case, rows, rewrite)
            if bad is not None:
                return bad
    return None


def _check_against(
    rows: list[CaseEvent], heads: Iterable[tuple[int, str, int]]
) -> tuple[int, str] | None:
    """Each digested head must still be there with the same hash."""
    by_seq = {row.seq: row.hash for row in rows}
    bad = [(seq, f"does not match digest {n}") for seq, head, n in heads if by_seq.get(seq) != head]
    return min(bad) if bad else None
