"""The engine's service: the use cases of a case, each one step in one transaction.

A step reads the clock once, loads the case (its workflow from the in-process cache, else from the
stored blob), asks engine/step.py what happens (the pure part: SpiffWorkflow and nothing else),
and writes that outcome with SQLAlchemy Core statements: the work items it closed and made ready,
the timers, the hash-chained events, and last the case row, guarded by its version counter. Any
error rolls the whole step back. A step that lost a race (another step changed the case first) is
recognised by exception class or SQLSTATE and retried from scratch; the retry usually answers 409.

The process itself (who handles, when it escalates) is in the diagram and the DMN tables.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from SpiffWorkflow.bpmn import BpmnWorkflow
from sqlalchemy import and_, bindparam, event, exists, insert, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError

from . import campaigns, migration, projection, spiffclock
from .access import Viewer, acting_for, can_see_case
from .clock import SHANGHAI, Clock, iso
from .delegation import recorded
from .errors import Conflict, Forbidden, Invalid, NotFound
from .events import (
    GENESIS,
    reporter_hash,
    reporter_record,
)
from .models import (
    Campaign,
    Case,
    CaseDepartment,
    CaseEvent,
    Counter,
    DiagramVersion,
    Household,
    Reporter,
    Timer,
    Unit,
    Visit,
    WorkItem,
)
from .photos import attach as attach_photos
from .photos import attach_problems as photo_problems
from .projection import StaleCase
from .serializer import make_serializer
from .specs import (
    CAMPAIGN_PROCESS_ID,
    CAMPAIGN_STATUSES,
    OPEN_STATUSES,
    PROCESS_ID,
    Spec,
    SpecRegistry,
    TaskInfo,
)
from .step import Complete, Fire, Migrate, Open, Outcome, Transfer, run_step
from .words import version_choices
from .workcal import CalendarCache, WorkCalendar, load_calendar

log = logging.getLogger(__name__)
# Rows whose timers still fire: an open case, or a campaign's grid instance still at work.
OPEN = frozenset(OPEN_STATUSES) | frozenset(CAMPAIGN_STATUSES)
MAX_ATTEMPTS = 4
MAX_NOTE = 500  # characters of a transfer note

# What a step writes with Core: ORM objects of these kinds that the caller holds go stale.
WRITTEN = (Case, WorkItem, Timer, CaseEvent, CaseDepartment, Reporter)

# The timer table as fire_due_timers reads it: due rows oldest first, DUE_ROWS_PER_READ at a time
# (then on from the last row read), with FOR UPDATE SKIP LOCKED or without any lock; and one
# case's due rows, locked by the step that fires them. SQLAlchemy renders no locking on SQLite.
DUE_ROWS_PER_READ = 500
_AFTER_DUE = bindparam("b_after_due")


def _due_rows(after: bool, skip_locked: bool):
    query = select(Timer.id, Timer.case_id, Timer.due_at).where(
        Timer.due_at <= bindparam("b_as_of")
    )
    if after:
        query = query.where(
            or_(
                Timer.due_at > _AFTER_DUE,
                and_(Timer.due_at == _AFTER_DUE, Timer.id > bindparam("b_after_id")),
            )
        )
    query = query.order_by(Timer.due_at, Timer.id).limit(DUE_ROWS_PER_READ)
    return query.with_for_update(skip_locked=True) if skip_locked else query


DUE_TIMER_ROWS = {(a, s): _due_rows(a, s) for a in (False, True) for s in (False, True)}
CLAIM_DUE_TIMERS = (
    select(Timer.id)
    .where(Timer.case_id == bindparam("b_case"), Timer.due_at <= bindparam("b_now"))
    .with_for_update(skip_locked=True)
)


@dataclass
class StepContext:
    """One step: its instant, its actor and what it appended. Built fresh for every attempt."""

    session: Session
    now: datetime
    actor: str
    calendar: WorkCalendar | None = None
    calendars: CalendarCache | None = None  # the runtime's, kept between steps
    keep_warm: bool = True  # whether the runtime keeps the `hot` workflow after the commit
    hot: tuple[int, int, BpmnWorkflow] | None = None  # (case id, new version, workflow)
    # (case id, the version the step read, the case row's new values)
    written: tuple[int, int, dict] | None = None

    def work_calendar(self) -> WorkCalendar:
        if self.calendar is None:
            if self.calendars is not None:
                self.calendar = self.calendars.load(self.session)
            else:
                self.calendar = load_calendar(self.session)
        return self.calendar

    def deadline(self, hours: float, clock: str) -> str:
        """gl_deadline for diagram code: the instant `hours` of limit run out from this step."""
        urgent = clock == "clock"
        calendar = WorkCalendar() if urgent else self.work_calendar()
        return iso(calendar.add_hours(self.now, hours, urgent))


class Runtime:
    """The engine of one process (web server, worker or CLI). Holds no database state of its own:
    parsed specs by hash, and recently used workflows keyed by case id *and* version."""

    def __init__(self, clock: Clock, registry: SpecRegistry | None = None, hot_cases: int = 2000):
        spiffclock.install()
        self.clock = clock
        self.registry = registry or SpecRegistry()
        self.serializer = make_serializer(self.registry)
        self._hot: OrderedDict[int, tuple[int, BpmnWorkflow]] = OrderedDict()
        self._hot_limit = hot_cases
        self.calendars = CalendarCache()

    # ----------------------------------------------------------------- use cases

    def open_case(self, session: Session, actor: Viewer | None, **fields: Any) -> Case:
        """Open a case in a grid (`fields`: open_in's: title, grid, description, category,
        severity, household, reporter, photos). An information officer of the grid holds its
        accept item at once; a resident's case (actor None) leaves accept unclaimed for the
        grid's officers."""
        case_id = self._run(
            session,
            None,
            actor.username if actor else "system",
            lambda ctx: self.open_in(ctx, actor, **fields),
        )
        return session.get(Case, case_id)

    def open_in(
        self,
        ctx: StepContext,
        actor: Viewer | None,
        *,
        title: str,
        grid: str,
        description: str = "",
        category: str | None = None,
        severity: str | None = None,
        household: str | None = None,
        reporter: dict | None = None,
        photos: list[str] | None = None,
        campaign: tuple[int, str] | None = None,
    ) -> int:
        """open_case's step, inside a step of the caller's: a hazard found on a campaign visit
        opens its case in the visit's transaction. `campaign`: (id, number) of the campaign it
        came from, recorded on the case row and in its `opened` event. Returns the case's id."""
        session = ctx.session
        version = projection.live_version(session, PROCESS_ID)
        if version is None:
            raise Conflict("no diagram is deployed; run `gridloop init-db`")
        spec = self._spec(
            session, SimpleNamespace(diagram_sha=version.sha256, diagram_id=version.id)
        )
        problems = _word_problems(spec, category=category, severity=severity)
        if not isinstance(title, str) or not title.strip():
            problems["title"] = "must not be blank"
        units = projection.grid_chain(session, grid)
        if units is None or (
            actor is not None and ("info_officer", units.grid_id) not in actor.tier_positions()
        ):
            problems["grid"] = (
                "not a grid you serve as information officer" if actor else "unknown grid"
            )
        uploader = actor.username if actor else None
        problems.update(photo_problems(session, uploader, None, photos))
        if problems:
            raise Invalid("the request has errors", dict(sorted(problems.items())))
        data = {
            "title": title,
            "description": description or "",
            "grid": grid,
            "category": category,
            "severity": severity,
            "household": household,
        }
        record = salt = None
        if reporter:
            # The reporter's details stay in their own table; the chain covers them by hash.
            record = reporter_record(reporter.get("name"), reporter.get("phone"))
            salt = secrets.token_hex(16)
            data["reporter_hash"] = reporter_hash(salt, record)
        if photos:  # the chain covers the files by their sha256
            data["photos"] = list(photos)
        if campaign is not None:
            data["campaign"] = campaign[1]
        outcome = run_step(None, spec, Open(data), ctx.now, ctx.deadline)
        row = {
            "number": self._next_number(session, units.town_code, ctx.now),
            "title": title,
            "description": description or "",
            "category": category,
            "severity": severity,
            "household": household,
            "town_id": units.town_id,
            "village_id": units.village_id,
            "district_id": units.district_id,
            "grid_id": units.grid_id,
            "owner": None,
            "status": "accepting",
            "tier": None,
            "due_at": None,
            "opened_at": ctx.now,
            "closed_at": None,
            "updated_at": ctx.now,
            "satisfaction": None,
            "reopen_count": 0,
            "overdue_marked": False,
            "event_seq": 0,
            "event_head": GENESIS,
            "digested_seq": 0,
            "escalations": 0,
            "diagram_id": version.id,
            "process": PROCESS_ID,
            "campaign_id": campaign[0] if campaign is not None else None,
            "workflow": "",
            "version": 1,
        }
        case_id = projection.insert_case(session, row)
        case = SimpleNamespace(id=case_id, diagram_sha=version.sha256, **row)
        if record is not None:
            session.execute(insert(Reporter.__table__).values(case_id=case_id, salt=salt, **record))
        if photos:
            attach_photos(session, actor.username, case_id, photos)

        def claim_accept(items: list[SimpleNamespace]) -> list:
            if actor is None or not items:
                return []
            accept = items[0]
            accept.claimed_by, accept.claimed_at = actor.username, ctx.now
            projection.set_item(session, accept.id, claimed_by=actor.username, claimed_at=ctx.now)
            return [("claimed", accept.task, {"work_item": accept.id})]

        self._write(ctx, case, spec, outcome, claim_accept)
        return case_id

    def claim(self, session: Session, actor: Viewer, item_id: int) -> WorkItem:
        def step(ctx: StepContext) -> int:
            # 代理: an item is held in the name of the delegator it is worked for.
            item, case, holder = self._actionable(ctx.session, actor, item_id)
            if item.claimed_by is None:
                projection.set_item(ctx.session, item.id, claimed_by=holder, claimed_at=ctx.now)
                data = recorded({"work_item": item.id}, actor, holder)
                self._touch(ctx, case, ("claimed", item.task, data))
            return item.id

        return session.get(WorkItem, self._run(session, None, actor.username, step))

    def release(self, session: Session, actor: Viewer, item_id: int) -> WorkItem:
        def step(ctx: StepContext) -> int:
            item, case, holder = self._actionable(ctx.session, actor, item_id, held=False)
            if item.claimed_by != holder:
                raise Conflict(
                    "you do not hold this item"
                    if item.claimed_by is None
                    else f"claimed by {item.claimed_by}"
                )
            projection.set_item(ctx.session, item.id, claimed_by=None, claimed_at=None)
            data = recorded({"work_item": item.id}, actor, holder)
            self._touch(ctx, case, ("released", item.task, data))
            return item.id

        return session.get(WorkItem, self._run(session, None, actor.username, step))

    def complete(self, session: Session, actor: Viewer, item_id: int, data: Any) -> Case:
        """Complete a work item with its form's data. An unclaimed item is claimed in the same
        transaction; only the completion is recorded."""

        def step(ctx: StepContext) -> int:
            session = ctx.session
            item, case, holder = self._actionable(session, actor, item_id)
            spec = self._spec(session, case)
            info = spec.tasks[item.spec]
            form = validate_form(spec, info, data)
            problems = photo_problems(session, actor.username, case.id, form.get("photos"))
            if problems:
                raise Invalid("the form has errors", problems)
            attach_photos(session, actor.username, case.id, form.get("photos"))
            departments = self._departments(session, form)
            workflow = self._load(session, case)
            outcome = run_step(
                workflow, spec, Complete(item.task_id, info.task, dict(form)), ctx.now, ctx.deadline
            )
            _name_both(outcome, "task_completed", actor, holder)
            if info.props.get("owner") == "set":
                case.owner = holder
            for unit in departments:
                named = select(CaseDepartment).where(
                    CaseDepartment.case_id == case.id, CaseDepartment.unit_id == unit.id
                )
                if not session.scalar(select(exists(named))):
                    session.execute(
                        insert(CaseDepartment.__table__).values(case_id=case.id, unit_id=unit.id)
                    )
            self._write(ctx, case, spec, outcome, completed=item, holder=holder)
            return case.id

        case_id = self._run(session, None, actor.username, step)
        return session.get(Case, case_id)

    def transfer(
        self, session: Session, actor: Viewer, item_id: int, to: Any, note: Any = None
    ) -> Case:
        """转办: the holder of a case's accept (or of its handling at the grid, where the diagram
        allows it) sends a case that belongs to another grid there. The item leaves this grid;
        accept goes to the other grid's officers, and whoever accepts it there owns it."""

        def step(ctx: StepContext) -> int:
            session = ctx.session
            item, case, holder = self._actionable(session, actor, item_id)
            problems = {}
            chain = projection.grid_chain(session, to) if isinstance(to, str) else None
            if chain is None or chain.town_id != case.town_id:
                problems["to"] = "not a grid of this town"
            elif chain.grid_id == case.grid_id:
                problems["to"] = "the case is in this grid already"
            if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
                problems["note"] = f"must be at most {MAX_NOTE} characters"  # as forms say it
            if problems:
                raise Invalid("the request has errors", problems)
            spec = self._spec(session, case)
            info = spec.tasks[item.spec]
            data = {"from": projection.unit_code(session, case.grid_id), "to": to, "note": note}
            workflow = self._load(session, case)
            outcome = run_step(
                workflow, spec, Transfer(item.task_id, info.task, data), ctx.now, ctx.deadline
            )
            _name_both(outcome, "transferred", actor, holder)
            projection.move_case(session, case, chain)
            self._write(ctx, case, spec, outcome)
            ctx.written = (case.id, None, {})  # the case moved units: expire a held copy whole
            return case.id

        case_id = self._run(session, None, actor.username, step)
        return session.get(Case, case_id)

    def migrate_case(
        self,
        session: Session,
        actor: str,
        case_id: int,
        to: str,
        source: str | None = None,
        dry_run: bool = False,
    ) -> None:
        """Move an open case to the diagram version with hash `to` in one step (DESIGN §8): a
        `migrated` event {from, to} on the new version, the case row's diagram, its timers
        refreshed, all under the case's version check (a step that lost a race is planned
        again from the new state). `source`: only if the case is on that version. Raises
        migration.Unmovable saying why a case cannot move. A dry run runs the same step on a
        copy restored from the stored blob, never on the cached workflow, and writes nothing."""

        def step(ctx: StepContext) -> None:
            session = ctx.session
            case = projection.case_row(session, case_id)
            if case is None:
                raise NotFound("no such case")
            target = migration.version_by_hash(session, to)
            if target is None:
                raise NotFound("no such diagram version")
            origin = migration.version_by_hash(session, source) if source else None
            if source and origin is None:
                raise NotFound("no such diagram version")
            process = session.scalar(
                select(DiagramVersion.process_id).where(DiagramVersion.id == case.diagram_id)
            )
            migration.precheck(case, target, origin, process)
            old, new = self._spec(session, case), self.registry.get(target)
            if dry_run:
                workflow = self.serializer.deserialize_json(projection.blob(session, case.id))
            else:
                workflow = self._load(session, case)
            outcome = run_step(workflow, new, Migrate(old), ctx.now, ctx.deadline)
            # The moved workflow must load again on the target version, or nothing moves.
            self.serializer.deserialize_json(self.serializer.serialize_json(outcome.workflow))
            if dry_run:
                return
            moved = session.connection().execute(
                update(Case.__table__)
                .where(Case.id == case.id, Case.version == case.version)
                .values(diagram_id=target.id)
            )
            if moved.rowcount != 1:
                raise StaleCase(case.number)
            case.diagram_id, case.diagram_sha = target.id, target.sha256
            self._write(ctx, case, new, outcome)
            ctx.written = (case.id, None, {})  # the case changed version: expire a held copy

        self._run(session, None, actor, step)

    # ----------------------------------------------------------------- campaigns (DESIGN §12)

    def launch_campaign(self, session: Session, actor: Viewer, body: Any) -> Campaign:
        """Launch a campaign and fan it out (engine/campaigns.py): the campaign row and its
        `launched` event, and an instance of the bundle's campaign process opened in every target
        grid, all in one transaction: a launch that fails anywhere launches nothing."""

        def step(ctx: StepContext) -> int:
            session = ctx.session
            plan = campaigns.plan_launch(session, actor, body, ctx.now)
            campaign = campaigns.insert_campaign(session, plan, actor.username, ctx.now)
            spec = self._spec(
                session,
                SimpleNamespace(
                    process=CAMPAIGN_PROCESS_ID,
                    diagram_sha=campaign.diagram_sha,
                    diagram_id=campaign.diagram_id,
                ),
            )
            opening = {
                "campaign": campaign.number,
                "launched_at": iso(ctx.now),
                "due_at": iso(plan.due_at),
            }
            for n, grid in enumerate(plan.grids, 1):
                data = {**opening, "grid": grid.code}
                outcome = run_step(None, spec, Open(data), ctx.now, ctx.deadline)
                row = _instance_row(campaign, grid, n, ctx.now)
                case = SimpleNamespace(
                    id=projection.insert_case(session, row), diagram_sha=campaign.diagram_sha, **row
                )
                self._write(ctx, case, spec, outcome)
            ctx.keep_warm = False  # one workflow of hundreds is not worth keeping warm
            return campaign.id

        campaign_id = self._run(session, None, actor.username, step)
        return session.get(Campaign, campaign_id)

    def record_visit(
        self, session: Session, actor: Viewer, campaign_id: Any, body: Any
    ) -> tuple[Visit, bool]:
        """Record one household's visit (DESIGN §12) in one step: the visit row, the `visited`
        event on its grid's chain and, when the checklist says so, the case a hazard opens.
        Returns the visit and whether it is new: a repeated client_id returns the first."""

        def step(ctx: StepContext) -> tuple[int, bool]:
            session = ctx.session
            campaign = campaigns.visible(session, actor, campaign_id)
            if not campaigns.may_walk(actor):  # who, before what they sent (DESIGN §4)
                # They see the campaign's grids (a leader above them) but record no visits.
                raise campaigns.not_a_walker()
            if not isinstance(body, dict):
                raise Invalid("the request has errors", {"body": "must be a JSON object"})
            household, client_id = body.get("household"), body.get("client_id")
            problems = {}
            if not isinstance(client_id, str) or not 0 < len(client_id) <= campaigns.MAX_CLIENT_ID:
                problems["client_id"] = f"required: at most {campaigns.MAX_CLIENT_ID} characters"
            if not isinstance(household, dict):
                problems["household"] = "must be {grid, number}"
            else:
                if not isinstance(household.get("grid"), str):
                    problems["household.grid"] = "required: a grid's code"
                number = household.get("number")
                if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                    problems["household.number"] = "required: a household's number (1, 2, …)"
            if problems:
                raise Invalid("the request has errors", problems)
            instance = campaigns.walker_grid(session, actor, campaign, household["grid"])
            first = session.scalars(
                select(Visit).where(Visit.campaign_id == campaign.id, Visit.client_id == client_id)
            ).first()
            if first is not None:
                if first.grid_id != instance.grid_id:
                    raise campaigns.client_id_taken()
                return first.id, False
            number = household.get("number")
            house = None
            if isinstance(number, int) and not isinstance(number, bool) and 0 < number < 2**31:
                house = session.scalars(
                    select(Household).where(
                        Household.grid_id == instance.grid_id, Household.number == number
                    )
                ).first()
            if house is None:
                raise NotFound("no such household")
            data = body.get("data")
            problems = campaigns.checklist_problems_of(campaign, data)
            if problems:
                raise Invalid("the checklist has errors", problems)
            event = recorded(
                {"household": number, "client_id": client_id, "data": dict(data)},
                actor,
                instance.holder,
            )
            case_id = None
            hazards = campaigns.opens_case(campaign, data)
            if hazards:
                items = campaign.checklist["properties"]
                officer = (
                    actor if ("info_officer", instance.grid_id) in actor.tier_positions() else None
                )
                case_id = self.open_in(
                    ctx,
                    officer,
                    title=(
                        campaign.title + "：" + "、".join(items[h].get("title", h) for h in hazards)
                    )[:200],
                    grid=household["grid"],
                    # The number only: the opened event keeps it for good (no names, §6).
                    household=f"{number}号",
                    campaign=(campaign.id, campaign.number),
                )
                event["case"] = session.scalar(select(Case.number).where(Case.id == case_id))
            visit_id = session.execute(
                insert(Visit.__table__).returning(Visit.__table__.c.id),
                {
                    "campaign_id": campaign.id,
                    "grid_id": instance.grid_id,
                    "household_id": house.id,
                    "client_id": client_id,
                    "data": dict(data),
                    "recorded_by": actor.username,
                    "at": ctx.now,
                    "case_id": case_id,
                },
            ).scalar_one()
            if campaigns.joins_group(campaign, data) and not house.in_group:
                session.execute(
                    update(Household.__table__)
                    .where(Household.__table__.c.id == house.id)
                    .values(in_group=True)
                )
            self._touch(ctx, projection.case_row(session, instance.id), ("visited", None, event))
            return visit_id, True

        visit_id, new = self._run(session, None, actor.username, step)
        return session.get(Visit, visit_id), new

    def fire_due_timers(
        self, session: Session, as_of: datetime | None = None, limit: int = 500
    ) -> int:
        """Fire, once per case, every timer due at or before `as_of` (default: now), with the
        engine clock set to that instant, for up to `limit` cases, oldest due first. Returns how
        many cases moved.

        Several processes may fire at once (the server's ticker, `gridloop timers fire-due`, a
        second server). What makes each timer fire once is the case's step, not this method: the
        step consumes the case's timer rows in its own transaction, under the case's version check,
        so a second firing of the same case finds nothing due or loses the race and is retried.
        What is here only keeps concurrent firers off each other's cases, on PostgreSQL with
        `FOR UPDATE SKIP LOCKED` (SQLAlchemy renders nothing on SQLite, which runs one writer at
        a time anyway):

        - The batch is picked from the timer rows, oldest first, locking them and skipping rows
          another transaction holds (PostgreSQL refuses FOR UPDATE with DISTINCT or GROUP BY, so
          the rows are read and their case ids deduplicated here). Those locks end with the
          pick's short transaction. Holding them for the batch is not sound: each case's step
          must run in a transaction of its own (`_run` begins one, which on this session ends the
          pick's), and from another connection the step would wait on them for good, since it
          deletes and rewrites exactly those rows, and PostgreSQL cannot see a wait on a
          transaction that is idle in this process as a deadlock.
        - So the claim that lasts is taken again in each case's own transaction: its first
          statement locks the case's due rows with SKIP LOCKED, and the lock lives until the
          commit that consumes them. Another firer's pick skips those rows meanwhile, and its
          step on the case finds them locked and puts the case aside; two firers walking the
          same batch thus take turns instead of computing each case twice.
        - The cases put aside are fired again at the end of the batch, waiting for the lock
          holder, and a pick that skipped everything is done again without skipping: a round
          then reports 0 only when nothing it could see was due, and `catch_up` (round after
          round until one moves nothing) stops only then.

        A user's step on a case whose timers are being fired may meet the firing in the other
        lock order (the firing locks the timer rows first, a step only as it writes them, near
        its end): PostgreSQL then detects the deadlock, and the one it aborts is retried by
        `_run` like any step that lost a race."""
        as_of = as_of or self.clock.now()
        locking = session.connection().dialect.name != "sqlite"
        case_ids = self._due_cases(session, as_of, limit, skip_locked=True)
        if locking and not case_ids:  # every due row is held by a step in flight, or none is due
            case_ids = self._due_cases(session, as_of, limit, skip_locked=False)
        session.rollback()  # end the pick's transaction (and its locks) before the steps begin
        fired = 0
        aside: list[int] = []
        for case_id in case_ids:
            moved = self._fire_batched(session, case_id, as_of, claim=locking)
            if moved is None:
                aside.append(case_id)
            else:
                fired += moved
        for case_id in aside:  # their steps elsewhere are done by now, or about to be: wait
            fired += bool(self._fire_batched(session, case_id, as_of, claim=False))
        return fired

    def _due_cases(
        self, session: Session, as_of: datetime, limit: int, skip_locked: bool
    ) -> list[int]:
        """Up to `limit` ids of cases with a timer due at `as_of`, by their oldest due row. With
        `skip_locked`, rows another transaction holds are skipped (and the rows read are locked
        until the caller's transaction ends); without, nothing is locked or waited for."""
        conn = session.connection()
        picked: dict[int, None] = {}  # insertion-ordered: the oldest due case first
        after: dict[str, Any] = {}
        while len(picked) < limit:
            query = DUE_TIMER_ROWS[bool(after), skip_locked]
            rows = conn.execute(query, {"b_as_of": as_of, **after}).all()
            for row in rows:
                picked.setdefault(row.case_id)
                if len(picked) == limit:
                    break
            if len(rows) < DUE_ROWS_PER_READ:
                break
            after = {"b_after_due": rows[-1].due_at, "b_after_id": rows[-1].id}
        return list(picked)

    def _fire_batched(
        self, session: Session, case_id: int, as_of: datetime, claim: bool
    ) -> bool | None:
        """One case of a batch: True if it moved, None if put aside (claim taken elsewhere).
        Errors are logged, not raised: one broken case must not stop every other escalation."""
        try:
            return self._fire_case(session, case_id, as_of, claim)
        except Conflict:
            log.info("case %s changed while its timers fired; skipped", case_id)
        except Exception:
            log.exception("firing the timers of case %s failed; retried next time", case_id)
        return False

    def fire_case_timers(self, session: Session, case_id: int, as_of: datetime) -> bool:
        """Fire one case's timers due at `as_of` in one step (the rq job's way in); a step on the
        case in flight elsewhere is waited for, not skipped. True if the case moved."""
        return bool(self._fire_case(session, case_id, as_of, claim=False))

    def _fire_case(
        self, session: Session, case_id: int, as_of: datetime, claim: bool
    ) -> bool | None:
        """Fire the case's timers due at `as_of` in one step. With `claim` (PostgreSQL), the step
        first locks the case's due timer rows, skipping rows another transaction holds; when
        some are due but none could be locked, the case is left alone and None returned."""

        def step(ctx: StepContext) -> bool | None:
            session = ctx.session
            claimed = (
                claim
                and session.connection()
                .execute(CLAIM_DUE_TIMERS, {"b_case": case_id, "b_now": ctx.now})
                .first()
                is not None
            )
            held = case_id in self._hot
            found = projection.due_case(session, case_id, ctx.now, not held)
            case, due, stored = found if found is not None else (None, False, None)
            if claim and due and not claimed:
                return None  # another transaction is consuming them right now
            if case is None or case.status not in OPEN:
                projection.drop_timers(session, case_id)
                return False
            if not due:
                return False  # another process fired them first
            spec = self._spec(session, case)
            workflow = self._load(session, case, stored)
            outcome = run_step(workflow, spec, Fire(), ctx.now, ctx.deadline)
            self._write(ctx, case, spec, outcome)
            # A case no step here held is not kept warm because its timer fired: its next step
            # is likely days away, and a burst would fill the cache with thousands of workflows
            # that every garbage collection then walks (3.4 against 2.6 ms a case).
            ctx.keep_warm = held
            return True

        return self._run(session, as_of, "system", step)

    # ----------------------------------------------------------------- the step machinery

    def _run(
        self, session: Session, at: datetime | None, actor: str, step: Callable[[StepContext], Any]
    ) -> Any:
        """Run a step in one transaction; retry it from scratch when a concurrent step changed the
        case first (the retry then sees the new state and usually answers 409 itself)."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            _end_transaction(session)
            ctx = StepContext(session, at or self.clock.now(), actor, calendars=self.calendars)
            try:
                # No autoflush: a step writes when it is done, not whenever it reads, and diagram
                # code that reads (the calendar) never flushes half a step.
                with session.no_autoflush:
                    result = step(ctx)
                session.commit()
            except BaseException as exc:
                session.rollback()
                if ctx.hot is not None:
                    self._hot.pop(ctx.hot[0], None)
                if not is_concurrency(exc):
                    raise
                if attempt == MAX_ATTEMPTS:
                    raise Conflict("the case changed meanwhile; try again") from exc
                continue
            _refresh_held(session, ctx.written)
            if ctx.hot is not None and ctx.keep_warm:
                self._remember(*ctx.hot)
            elif ctx.hot is not None:
                # Not kept; and what another thread left under this case is older than this
                # step (it stepped the version this step read), so it goes too.
                self._hot.pop(ctx.hot[0], None)
            elif ctx.written is not None:  # a claim or release: the workflow did not change
                # Taken out, not read: another thread's step may pop the same entry meanwhile,
                # and must never find it back in the cache while it changes the workflow.
                case_id, old, _values = ctx.written
                hot = self._hot.pop(case_id, None)
                if hot is not None and hot[0] == old:  # the workflow did not change
                    self._remember(case_id, old + 1, hot[1])
            return result
        raise AssertionError("unreachable")

    def _remember(self, case_id: int, version: int, workflow: BpmnWorkflow) -> None:
        workflow.script_engine = None  # it holds the step's context; each step sets its own
        self._hot[case_id] = (version, workflow)
        self._hot.move_to_end(case_id)
        while len(self._hot) > self._hot_limit:
            self._hot.popitem(last=False)

    def _spec(self, session: Session, case) -> Spec:
        """The spec the row runs: its version's case loop, or its campaign process."""
        process = getattr(case, "process", None) or PROCESS_ID
        spec = self.registry.parsed(case.diagram_sha, process)
        if spec is None:
            spec = self.registry.get(session.get(DiagramVersion, case.diagram_id), process)
        return spec

    def _load(self, session: Session, case, stored: str | None = None) -> BpmnWorkflow:
        """The case's workflow: the one this process holds at the case's version, else restored
        from the stored blob (`stored`, when the caller read it already)."""
        hot = self._hot.pop(case.id, None)
        if hot is not None and hot[0] == case.version:
            return hot[1]
        return self.serializer.deserialize_json(stored or projection.blob(session, case.id))

    def check_item(self, session: Session, actor: Viewer, item_id: int) -> None:
        """Raise what working this item would raise for who the actor is (NotFound outside their
        units, Forbidden, Conflict), and nothing for what they sent: an adapter answers those
        before a malformed request's 400 (DESIGN §4)."""
        try:
            self._actionable(session, actor, item_id)
        finally:
            _end_transaction(session)

    def _actionable(self, session: Session, actor: Viewer, item_id: int, held: bool = True):
        """The item and its case as plain rows, if this actor may work it, and the name the
        actor works it in: theirs, or a delegator's (代理) when it is through a delegation. With
        `held`, an item someone else claimed is refused (409)."""
        found = (
            projection.item_and_case(session, item_id)
            if 0 < item_id < 2**31  # an Integer column: 32-bit on PostgreSQL
            else None
        )
        if found is None:
            raise NotFound("no such work item")
        item, case = found
        if not can_see_case(session, actor, case):
            raise NotFound("no such work item")
        if item.completed_at is not None and item.cancelled:
            raise Conflict("this item was closed: the case moved on")
        if item.completed_at is not None:
            raise Conflict("this item was already completed")
        holder = acting_for(session, actor, item)
        if holder is None:
            raise Forbidden("you may see this item but not work it")
        if held and item.claimed_by not in (None, holder):
            raise Conflict(f"claimed by {item.claimed_by}")
        return item, case, holder

    def _touch(self, ctx: StepContext, case, event) -> None:
        """A step that changes no workflow still bumps the case version and appends its event."""
        read = case.version
        ctx.written = (
            case.id,
            read,
            projection.touch(ctx.session, case, ctx.now, ctx.actor, event),
        )

    def _write(
        self,
        ctx: StepContext,
        case,
        spec: Spec,
        outcome: Outcome,
        on_new_items=None,
        completed=None,
        holder=None,
    ):
        blob = self.serializer.serialize_json(outcome.workflow)
        read = case.version
        values = projection.write(
            ctx.session,
            case,
            spec,
            outcome,
            ctx.now,
            ctx.actor,
            blob,
            on_new_items,
            completed,
            holder,
        )
        ctx.written = (case.id, read, values)
        ctx.hot = (case.id, case.version, outcome.workflow)

    def _departments(self, session: Session, form: dict) -> list[Unit]:
        codes = form.get("departments") or []
        units = []
        for i, code in enumerate(codes):
            unit = session.scalars(
                select(Unit).where(Unit.code == code, Unit.level == "department", Unit.active)
            ).first()
            if unit is None:
                raise Invalid(
                    "unknown department", {f"departments[{i}]": f"unknown department '{code}'"}
                )
            units.append(unit)
        return units

    def _next_number(self, session: Session, town_code: str, now: datetime) -> str:
        year = now.astimezone(SHANGHAI).year
        key = f"case:{town_code}:{year}"
        updated = session.execute(
            update(Counter).where(Counter.key == key).values(value=Counter.value + 1)
        ).rowcount
        if not updated:
            session.execute(insert(Counter.__table__).values(key=key, value=1))
        value = session.scalar(select(Counter.value).where(Counter.key == key))
        return f"{town_code}-{year}-{value:06d}"


def _instance_row(campaign, grid, n: int, now: datetime) -> dict[str, Any]:
    """A campaign's grid instance as a case row (process `campaign`, DESIGN §12)."""
    return {
        "number": campaigns.instance_number(campaign.number, n),
        "title": campaign.title,
        "description": "",
        "category": None,
        "severity": None,
        "household": None,
        "town_id": grid.town_id,
        "village_id": grid.village_id,
        "district_id": grid.district_id,
        "grid_id": grid.id,
        "owner": None,
        "status": "returning",
        "tier": None,
        "due_at": None,
        "opened_at": now,
        "closed_at": None,
        "updated_at": now,
        "satisfaction": None,
        "reopen_count": 0,
        "overdue_marked": False,
        "event_seq": 0,
        "event_head": GENESIS,
        "digested_seq": 0,
        "escalations": 0,
        "diagram_id": campaign.diagram_id,
        "process": CAMPAIGN_PROCESS_ID,
        "campaign_id": campaign.id,
        "workflow": "",
        "version": 1,
    }


def _name_both(outcome: Outcome, kind: str, actor: Viewer, holder: str) -> None:
    """A step taken through a delegation (代理) names the delegator in its own event's data."""
    for type_, _task, data in outcome.events:
        if type_ == kind:
            data.update(recorded({}, actor, holder))


def _end_transaction(session: Session) -> None:
    """Start the step in a transaction of its own. A caller's read-only transaction ends with a
    commit, which (unlike a rollback) leaves the objects it holds loaded; a transaction in which
    the caller wrote anything (pending, flushed or executed) is rolled back, as before: a step
    never commits someone else's half-done work."""
    if session.new or session.dirty or session.deleted or session.info.get(WROTE):
        session.rollback()
        return
    try:
        session.commit()
    except Exception:  # a transaction that already failed: nothing of it may be kept
        session.rollback()


WROTE = "gridloop_wrote"  # session.info: the caller wrote in the current transaction


@event.listens_for(Session, "after_flush")
def _flushed(session: Session, _context) -> None:
    session.info[WROTE] = True


@event.listens_for(Session, "do_orm_execute")
def _executed(state) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info[WROTE] = True


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction) -> None:
    if transaction.parent is None:  # the outermost transaction: committed or rolled back
        session.info.pop(WROTE, None)


def _refresh_held(session: Session, written: tuple[int, int, dict] | None) -> None:
    """The step wrote with Core, past the ORM, so objects the caller holds are stale. A held case
    that was what the step read takes the values just written (no reload); one older than that
    (another process moved the case in between) is expired, like the items, events and timers,
    and reloads when read. Organisation rows stay: a step never writes them."""
    for key, obj in list(session.identity_map.items()):
        # The identity key holds the primary key: reading obj.id could load an expired object.
        if written is not None and key[0] is Case and key[1] == (written[0],):
            _, read, values = written
            if obj.__dict__.get("version") != read:
                session.expire(obj)
                continue
            for name, value in values.items():
                if name == "workflow":
                    session.expire(obj, ["workflow"])
                else:
                    set_committed_value(obj, name, value)
        elif isinstance(obj, WRITTEN):
            session.expire(obj)


# SQLSTATEs and SQLite result codes that mean "another transaction got there first": retry.
RETRY_SQLSTATES = frozenset({"40001", "40P01", "23505", "55P03"})
# SQLITE_BUSY and SQLITE_LOCKED (with their extended codes), SQLITE_CONSTRAINT_UNIQUE and
# SQLITE_CONSTRAINT_PRIMARYKEY (two steps appending the same seq, or numbering the same counter).
SQLITE_RETRY_PRIMARY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
SQLITE_RETRY_EXTENDED = frozenset({2067, 1555})


def is_concurrency(exc: BaseException | None) -> bool:
    """Whether a failed step lost a race, by exception class or SQLSTATE, never by message."""
    if isinstance(exc, StaleCase | StaleDataError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate is not None:
        return sqlstate in RETRY_SQLSTATES
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in SQLITE_RETRY_PRIMARY or code in SQLITE_RETRY_EXTENDED
    return False


def _word_problems(spec: Spec, **given: str | None) -> dict[str, str]:
    """A category or severity given when opening must be one the version's accept form offers
    (they only prefill it); the bundle, not Python, says which there are."""
    fields = {}
    for name, value in given.items():
        allowed = [c.value for c in version_choices(spec, name)]
        if value is not None and value not in allowed:
            fields[name] = "must be one of: " + ", ".join(allowed)
    return fields


def validate_form(spec: Spec, info: TaskInfo, data: Any) -> dict:
    """Validate submitted data against the task's JSON Schema: one message per field."""
    if not isinstance(data, dict):
        raise Invalid("data must be an object", {"data": "must be an object"})
    fields = form_problems(spec.validators[info.form], data)
    if fields:
        raise Invalid("the form has errors", fields)
    return data


def form_problems(validator, data: Any) -> dict[str, str]:
    """What a JSON Schema validator finds wrong with `data`: one message per field."""
    fields: dict[str, str] = {}
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.path)):
        for name, message in _field_messages(error):
            fields.setdefault(name, message)
    return fields


def _field_messages(error) -> list[tuple[str, str]]:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required":
        missing = [f for f in error.validator_value if f not in (error.instance or {})]
        return [(_join(path, f), "required") for f in missing]
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        return [(_join(path, k), "unknown field") for k in error.instance if k not in allowed]
    if error.validator in ("if", "allOf", "anyOf", "oneOf"):
        found = []
        for sub in error.context or []:
            found.extend(_field_messages(sub))
        return found or [(path or "data", error.message)]
    messages = {
        "enum": lambda: "must be one of: " + ", ".join(map(str, error.validator_value)),
        "const": lambda: f"must be {error.validator_value!r}",
        "type": lambda: f"must be of type {error.validator_value}",
        "pattern": lambda: (
            "must not be empty" if error.validator_value == r"\S" else "is not in the expected form"
        ),
        "maxItems": lambda: f"must have at most {error.validator_value} items",
        "minLength": lambda: "must not be empty",
        "maxLength": lambda: f"must be at most {error.validator_value} characters",
        "uniqueItems": lambda: "must not repeat",
    }
    message = messages.get(error.validator, lambda: error.message)()
    return [(path or "data", message)]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
