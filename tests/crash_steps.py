"""Runs case steps forever on a prepared database, for tests/test_crash.py to kill with SIGKILL.

    python tests/crash_steps.py DATABASE_URL SEED START_ISO

The database must already hold the schema, the deployed bundle and the tests' organisation
(tests/conftest.py ORG_YAML). The script builds a Runtime on a FixedClock that it moves itself,
and then, until it is killed, opens cases in the four grids, claims, releases and completes
their work items with forms picked at random (every outcome of every form: refer up, reopen,
return a review, reject a case, name a department) and fires the timers that fall due as the
clock moves on, so supervisions and escalations happen too. It starts from whatever an earlier
(killed) run left: the clock resumes at the latest step in the database, and the first step
works the oldest open item, so a restarted process goes on with old cases, not only new ones.

One line per event on stdout, flushed at once:
    ready <clock>                      set up, about to step
    begin <action> <case number|->     a step is about to start
    flushing                           the step is computed; its rows are about to be flushed
                                       (the session's before_commit)
    committing                         the rows are flushed; COMMIT is about to be sent (the
                                       engine's commit event)
    committed <case number> <seq>      a step returned: that case's chain has `seq` events
Anything unexpected (an exception, an error logged by the engine) ends the process with a
traceback on stderr and a non-zero status, which the test tells apart from its own SIGKILL.

The helpers (viewers, who may act on an item, a form for an item) are shared with the test.
"""

from __future__ import annotations

import logging
import random
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import event, func, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from engine.access import Viewer, may_act, viewer_of  # noqa: E402
from engine.clock import FixedClock, iso, parse_iso  # noqa: E402
from engine.models import Case, Person, Timer, WorkItem  # noqa: E402
from engine.runtime import Runtime  # noqa: E402
from engine.specs import SpecRegistry  # noqa: E402
from engine.storage import make_engine, make_sessionmaker  # noqa: E402

# The grids of the tests' organisation and their information officers (tests/conftest.py).
OFFICERS = {
    "V01-D1-G01": ("off1", "off1b"),
    "V01-D1-G02": ("off2",),
    "V02-D1-G01": ("off3",),
    "V02-D1-G02": ("off4",),
}
CATEGORIES = ("resident_request", "dispute", "safety_hazard", "policy")
SEVERITIES = ("low", "normal", "normal", "urgent")
MIN_OPEN, MAX_OPEN = 3, 10  # open cases the loop keeps going


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def load_viewers(session: Session) -> dict[str, Viewer]:
    people = session.scalars(select(Person).order_by(Person.username))
    return {p.username: viewer_of(session, p) for p in people}


def actor_for(
    session: Session, viewers: dict[str, Viewer], item: WorkItem, rng: random.Random
) -> Viewer:
    """Who completes (or claims) an open item: its holder, else anyone who may act on it."""
    if item.claimed_by is not None:
        return viewers[item.claimed_by]
    names = sorted(viewers)
    rng.shuffle(names)
    for name in names:
        if may_act(session, viewers[name], item):
            return viewers[name]
    raise AssertionError(f"nobody may act on item {item.id} ({item.task}, {item.role})")


def form_for(item: WorkItem, rng: random.Random) -> dict:
    """A valid submission of the item's form, its branch picked at random."""
    r = rng.random()
    if item.form == "accept":
        if r < 0.08:
            return {"valid": False, "note": "重复上报"}
        return {
            "valid": True,
            "category": rng.choice(CATEGORIES),
            "severity": rng.choice(SEVERITIES),
        }
    if item.form == "handle":
        if r < 0.3:
            return {"outcome": "refer_up", "note": "超出权限"}
        return {"outcome": "resolved", "note": "已处理"}
    if item.form == "handle_town":
        if r < 0.25:
            return {"outcome": "resolved", "departments": ["PS"]}
        return {"outcome": "resolved"}
    if item.form == "feedback":
        if r < 0.2:
            return {"satisfaction": "unsatisfied", "note": "不满意"}
        return {"satisfaction": "satisfied" if r < 0.7 else "basically_satisfied"}
    if item.form == "report":
        return {"summary": "办结"}
    if item.form == "review":
        if r < 0.2:
            return {"approved": False, "note": "材料不全"}
        return {"approved": True}
    raise AssertionError(f"no form for {item.form!r}")


class EngineErrors(logging.Handler):
    """Errors the engine logs instead of raising (fire_due_timers goes on past a broken case)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Steps:
    def __init__(self, session: Session, runtime: Runtime, clock: FixedClock, rng, errors):
        self.session, self.runtime, self.clock, self.rng = session, runtime, clock, rng
        self.errors = errors
        self.viewers = load_viewers(session)
        session.rollback()

    def committed(self, case: Case) -> None:
        say(f"committed {case.number} {case.event_seq}")

    def open_items(self) -> list[WorkItem]:
        return list(
            self.session.scalars(
                select(WorkItem).where(WorkItem.completed_at.is_(None)).order_by(WorkItem.id)
            )
        )

    def step(self, first: bool) -> None:
        s, rng = self.session, self.rng
        items = self.open_items()
        cases = {i.case_id for i in items}
        r = rng.random()
        if first and items:
            self.work(items[0])
        elif len(cases) < MIN_OPEN or (len(cases) < MAX_OPEN and r < 0.15):
            self.open()
        elif r < 0.27 and s.scalar(select(func.min(Timer.due_at))) is not None:
            self.fire()
        else:
            self.work(rng.choice(items))
        self.clock.advance(minutes=rng.randint(1, 90))

    def open(self) -> None:
        rng = self.rng
        grid = rng.choice(sorted(OFFICERS))
        officer = None if rng.random() < 0.1 else self.viewers[rng.choice(OFFICERS[grid])]
        say("begin open -")
        case = self.runtime.open_case(
            self.session,
            officer,
            title=f"路灯坏了 {rng.randrange(10**6)}",
            grid=grid,
            category=rng.choice(CATEGORIES),
            severity=rng.choice(SEVERITIES),
        )
        self.committed(case)

    def work(self, item: WorkItem) -> None:
        s, rng = self.session, self.rng
        actor = actor_for(s, self.viewers, item, rng)
        number = s.get(Case, item.case_id).number
        r = rng.random()
        if item.claimed_by is None and r < 0.25:
            say(f"begin claim {number}")
            claimed = self.runtime.claim(s, actor, item.id)
            self.committed(s.get(Case, claimed.case_id))
        elif item.claimed_by is not None and r < 0.08:
            say(f"begin release {number}")
            released = self.runtime.release(s, actor, item.id)
            self.committed(s.get(Case, released.case_id))
        else:
            form = form_for(item, rng)
            say(f"begin complete {number}")
            self.committed(self.runtime.complete(s, actor, item.id, form))

    def fire(self) -> None:
        """Move the clock to the next due timer (if it is ahead) and fire what is due then."""
        s = self.session
        due = s.scalar(select(func.min(Timer.due_at)))
        as_of = max(self.clock.now(), due)
        self.clock.set(as_of)
        due_cases = select(Timer.case_id).where(Timer.due_at <= as_of)
        before = dict(
            s.execute(select(Case.id, Case.event_seq).where(Case.id.in_(due_cases))).all()
        )
        s.rollback()
        say(f"begin fire {iso(as_of)}")
        self.runtime.fire_due_timers(s, as_of=as_of)
        if self.errors.records:
            raise RuntimeError(f"the engine logged: {self.errors.records[0].getMessage()}")
        after = s.execute(
            select(Case.id, Case.number, Case.event_seq).where(Case.id.in_(list(before)))
        ).all()
        s.rollback()
        for case_id, number, seq in after:
            if seq != before[case_id]:
                say(f"committed {number} {seq}")


def main(argv: list[str]) -> int:
    url, seed, start = argv[0], int(argv[1]), parse_iso(argv[2])
    errors = EngineErrors()
    logging.getLogger("engine").addHandler(errors)
    engine = make_engine(url)
    session = make_sessionmaker(engine)()
    latest: datetime | None = session.scalar(select(func.max(Case.updated_at)))
    clock = FixedClock(max(start, latest) if latest else start)
    session.rollback()
    runtime = Runtime(clock, SpecRegistry())
    steps = Steps(session, runtime, clock, random.Random(seed), errors)
    event.listen(session, "before_commit", lambda _session: say("flushing"))
    event.listen(engine, "commit", lambda _conn: say("committing"))
    say(f"ready {iso(clock.now())}")
    first = True
    while True:
        steps.step(first)
        first = False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
