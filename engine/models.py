"""Tables (DESIGN §5). Portable SQL only: the same models run on SQLite and PostgreSQL.

People are referred to by username in cases, work items and events: usernames never change, a
deactivated person keeps theirs, and events name actors the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column, relationship

TIERS = ("info_officer", "grid_leader", "district_leader", "village_secretary", "town_leadership")
# The handling tiers (info officers never handle), each with the tier it escalates to.
TIER_ABOVE = dict(zip(TIERS[1:], TIERS[2:], strict=False))
LEVEL_OF_ROLE = {
    "info_officer": "grid",
    "grid_leader": "grid",
    "district_leader": "district",
    "village_secretary": "village",
    "town_leadership": "town",
    "department_officer": "department",
    "auditor": "town",
    "admin": "town",
}
LEVELS = ("town", "village", "district", "grid", "department")


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the database keeps."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Unit(Base):
    __tablename__ = "unit"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    level: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("unit.id"), index=True)
    households: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Notification settings and the like; free-form so later issues need no migration for them.
    settings: Mapped[dict] = mapped_column(JSON, default=dict)

    parent: Mapped[Unit | None] = relationship(remote_side="Unit.id")


class Household(Base):
    __tablename__ = "household"
    __table_args__ = (UniqueConstraint("grid_id", "number"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    grid_id: Mapped[int] = mapped_column(ForeignKey("unit.id"))
    number: Mapped[int] = mapped_column(Integer)
    head: Mapped[str | None] = mapped_column(String(100))
    # A resident's phone (personal data: shown masked, 138****1234, DESIGN §12).
    phone: Mapped[str | None] = mapped_column(String(32))
    # 一户一代表: a representative of the household has joined the grid's group chat.
    in_group: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Who added it in Gridloop (a grid officer); None: from the organisation file, which wins on
    # re-import for the households it lists, while officer-added ones stay (DESIGN §12).
    added_by: Mapped[str | None] = mapped_column(String(64))


class Person(Base):
    __tablename__ = "person"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Sessions and tokens carry the generation they were made in; signing out, a password change
    # or reset and deactivation bump it, which ends every older session and token at once.
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The person still signs in with the password the organisation file gave them (set when the
    # import creates them or resets it with --reset-passwords); the web pages ask for a new one
    # until they choose their own.
    password_initial: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    positions: Mapped[list[Position]] = relationship(back_populates="person", lazy="selectin")

    def end_sessions(self) -> None:
        """Every session and API token the person has stops working (the caller commits)."""
        self.generation += 1


class Position(Base):
    __tablename__ = "position"
    __table_args__ = (
        UniqueConstraint("person_id", "role", "unit_id"),
        Index("ix_position_role_unit", "role", "unit_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id"))
    role: Mapped[str] = mapped_column(String(32))
    unit_id: Mapped[int] = mapped_column(ForeignKey("unit.id"))

    person: Mapped[Person] = relationship(back_populates="positions")
    unit: Mapped[Unit] = relationship(lazy="joined")


class Liaison(Base):
    """A town leader's liaison villages (镇联点)."""

    __tablename__ = "liaison"
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id"), primary_key=True)
    village_id: Mapped[int] = mapped_column(ForeignKey("unit.id"), primary_key=True)


class ApiToken(Base):
    __tablename__ = "api_token"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class CalendarYear(Base):
    """Holidays and make-up working days an administrator entered for a year."""

    __tablename__ = "calendar_year"
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    holidays: Mapped[list] = mapped_column(JSON, default=list)
    workdays: Mapped[list] = mapped_column(JSON, default=list)
    # Who entered it and when ({"by": username, "at": iso}); None for rows from before the log.
    entered: Mapped[dict | None] = mapped_column(JSON)


class DiagramVersion(Base):
    __tablename__ = "diagram_version"
    id: Mapped[int] = mapped_column(primary_key=True)
    process_id: Mapped[str] = mapped_column(String(100), index=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # POSIX path from the repository root -> content. Deferred: steps need only the hash, and the
    # bundle is parsed once per process by the SpecRegistry.
    files: Mapped[dict] = deferred(mapped_column(JSON))
    deployed_by: Mapped[str] = mapped_column(String(64))
    deployed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    comment: Mapped[str | None] = mapped_column(Text, default="")
    # When it was last made live (deployed or activated); the live version of a process is the
    # one activated last. None: stored but never live (`deploy --no-activate`).
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DiagramDraft(Base):
    """An administrator's unfinished edit of a process's bundle: files not yet validated, kept
    so that an edit survives a closed tab. Deploying goes through the same validation as ever."""

    __tablename__ = "diagram_draft"
    id: Mapped[int] = mapped_column(primary_key=True)
    process_id: Mapped[str] = mapped_column(String(100))
    author: Mapped[str] = mapped_column(String(64), index=True)
    base_sha: Mapped[str | None] = mapped_column(String(64))  # the version it started from
    files: Mapped[dict] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AdminEvent(Base):
    """What administrators did (DESIGN §6 for the chain): one append-only log, hash-chained like a
    case's events, its head included in the daily digests (engine/admin_log.py). `at` and `data`
    keep the exact text that was hashed."""

    __tablename__ = "admin_event"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[str] = mapped_column(Text)
    prev: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Counter(Base):
    """Sequences that must not repeat (case numbers per town and year)."""

    __tablename__ = "counter"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class Case(Base):
    __tablename__ = "case"
    __table_args__ = (
        Index("ix_case_grid_opened", "grid_id", "id"),
        Index("ix_case_district", "district_id", "id"),
        Index("ix_case_village", "village_id", "id"),
        Index("ix_case_opened_at", "opened_at", "id"),
        # The cases whose chain grew since the latest digest that names them: a digest reads
        # only these, however many cases are closed (DESIGN §6).
        Index(
            "ix_case_undigested",
            "id",
            sqlite_where=text("event_seq > digested_seq"),
            postgresql_where=text("event_seq > digested_seq"),
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str | None] = mapped_column(String(32))
    severity: Mapped[str | None] = mapped_column(String(16))
    household: Mapped[str | None] = mapped_column(String(100))
    town_id: Mapped[int] = mapped_column(ForeignKey("unit.id"))
    village_id: Mapped[int] = mapped_column(ForeignKey("unit.id"))
    district_id: Mapped[int] = mapped_column(ForeignKey("unit.id"))
    grid_id: Mapped[int] = mapped_column(ForeignKey("unit.id"))
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    tier: Mapped[str | None] = mapped_column(String(32))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    satisfaction: Mapped[str | None] = mapped_column(String(32))
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    overdue_marked: Mapped[bool] = mapped_column(Boolean, default=False)
    # The head of the event chain, kept on the row the version counter guards: appending needs no
    # extra read, and two steps can never both append the same seq.
    event_seq: Mapped[int] = mapped_column(Integer, default=0)
    event_head: Mapped[str] = mapped_column(String(64), default="0" * 64)
    # The seq of this case's head in the latest digest that names it (0: in none yet).
    digested_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    escalations: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    diagram_id: Mapped[int] = mapped_column(ForeignKey("diagram_version.id"))
    # The process of the bundle the row runs: `case_loop` for a case, `campaign` for one grid's
    # instance of a campaign (DESIGN §12), which is a row here so that it steps, escalates, chains
    # and replays as a case does. Lists and figures of cases read case_loop rows only.
    process: Mapped[str] = mapped_column(
        String(32), default="case_loop", server_default="case_loop"
    )
    # The campaign a grid's instance belongs to, or that a hazard found on a visit came from.
    # (No FOREIGN KEY: SQLite would copy the whole case table to add one.)
    campaign_id: Mapped[int | None] = mapped_column(Integer, index=True)
    workflow: Mapped[str] = deferred(mapped_column(Text))
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    __mapper_args__ = {"version_id_col": version}

    grid: Mapped[Unit] = relationship(foreign_keys=[grid_id])
    diagram: Mapped[DiagramVersion] = relationship(lazy="joined")
    reporter: Mapped[Reporter | None] = relationship(uselist=False)


# A case lies under one unit at each level of the chain (DESIGN §4), named by one of its columns.
CASE_UNIT_COLUMN = {
    "town": "town_id",
    "village": "village_id",
    "district": "district_id",
    "grid": "grid_id",
}


def case_unit(case: Case | type[Case], level: str):
    """The case's unit at `level`: on a loaded case its unit id, on the Case class the column for
    SQL (`case_unit(Case, "village") == unit_id`). KeyError for a level no case lies under (a
    department): test `level in CASE_UNIT_COLUMN` first where one can come."""
    return getattr(case, CASE_UNIT_COLUMN[level])


class Reporter(Base):
    """The resident who reported a case, kept out of the event chain (DESIGN §6): the `opened`
    event holds only reporter_hash, sha256(salt + canonical JSON of {name, phone}), so the chain
    still covers these details and anyone who may see a case can recompute it from the events."""

    __tablename__ = "reporter"
    case_id: Mapped[int] = mapped_column(ForeignKey("case.id"), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(100))
    phone: Mapped[str | None] = mapped_column(String(32))
    salt: Mapped[str] = mapped_column(String(64))


class ChainRewrite(Base):
    """A case chain that a migration had to recompute (reporters moved out of the events), with
    the head it had before, so an auditor holding an older digest can check the old chain: the old
    events are the new ones with each reporter_hash replaced by the reporter it hashes."""

    __tablename__ = "chain_rewrite"
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("case.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(String(200))
    old_seq: Mapped[int] = mapped_column(Integer)
    old_head: Mapped[str] = mapped_column(String(64))
    new_head: Mapped[str] = mapped_column(String(64))


class CaseDepartment(Base):
    """Departments a town leader named to join the handling (联办)."""

    __tablename__ = "case_department"
    case_id: Mapped[int] = mapped_column(ForeignKey("case.id"), primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("unit.id"), primary_key=True)


# Where an item without a deadline sorts: after every dated one (work_item.due_key).
NO_DEADLINE = datetime(9999, 1, 1, tzinfo=UTC)


# The inbox indexes hold open items only: completed ones, most of the table in time, never show.
# (A partial index, the same SQL on both databases. As a leading column, completed_at IS NULL
# would not give PostgreSQL the (due_key, id) order: IS NULL is no equality to its planner.)
OPEN_ITEMS = {
    "sqlite_where": text("completed_at IS NULL"),
    "postgresql_where": text("completed_at IS NULL"),
}


def _due_key(context) -> datetime:
    """An inserted item's due_key, unless the insert gives one: its due_at, else NO_DEADLINE."""
    return context.get_current_parameters().get("due_at") or NO_DEADLINE


class WorkItem(Base):
    """`due_key` is the inbox's order, coalesce(due_at, NO_DEADLINE), kept as a column so that the
    inbox indexes hold it: a page walks the open items of a (role, unit) or of an assignee in
    (due_key, id) order and stops after a page's rows (engine/inbox.py). due_at never changes
    once the item is made."""

    __tablename__ = "work_item"
    __table_args__ = (
        Index("ix_work_item_inbox", "role", "unit_id", "due_key", "id", **OPEN_ITEMS),
        Index("ix_work_item_assignee", "assignee", "due_key", "id", **OPEN_ITEMS),
        Index("ix_work_item_case", "case_id", "completed_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("case.id"))
    task_id: Mapped[str] = mapped_column(String(36))  # SpiffWorkflow task UUID
    spec: Mapped[str] = mapped_column(String(100))  # diagram element id
    task: Mapped[str] = mapped_column(String(32))  # logical name (accept, handle, ...)
    name: Mapped[str] = mapped_column(String(200))
    form: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(32))
    unit_id: Mapped[int] = mapped_column(ForeignKey("unit.id"))
    village_id: Mapped[int] = mapped_column(ForeignKey("unit.id"))
    assignee: Mapped[str | None] = mapped_column(String(64))  # owner-only tasks
    excluded: Mapped[str | None] = mapped_column(String(64))  # e.g. the resolver, for a peer review
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_key: Mapped[datetime] = mapped_column(UTCDateTime, default=_due_key)
    warn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # its 80% supervision
    supervised_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # whom: WorkItemWatch
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)  # arrived by escalation
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_by: Mapped[str | None] = mapped_column(String(64))
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)

    case: Mapped[Case] = relationship()
    unit: Mapped[Unit] = relationship(foreign_keys=[unit_id])


class WorkItemWatch(Base):
    """Whom an open item's latest supervision (督办) told: one row per person ("u:name") or
    position ("p:role@unit_id") key, written by engine/projection.py in the supervision's step,
    replaced by the next supervision of the item and deleted when the item closes. The 督办
    watch list (engine/inbox.py watch_items) walks a key's rows in the inbox's order, which is
    why due_key (fixed once the item is made) is copied here: the primary key (key, due_key,
    item_id) is that walk. The item's own position is left out when the item is unassigned,
    excludes nobody and is not a town item: everyone at that position has it in their inbox,
    so it is on no one's watch list through that key (projection.watch_keys)."""

    __tablename__ = "work_item_watch"
    __table_args__ = (Index("ix_work_item_watch_item", "item_id"),)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    due_key: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    item_id: Mapped[int] = mapped_column(
        ForeignKey("work_item.id"), primary_key=True, autoincrement=False
    )


class Timer(Base):
    __tablename__ = "timer"
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("case.id"), index=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(100))


class ChainedEvent:
    """The stored fields of an event of a chain (DESIGN §6), a case's or a campaign's: `at` and
    `data` keep the exact text that was hashed."""

    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    task: Mapped[str | None] = mapped_column(String(32))
    data: Mapped[str] = mapped_column(Text)
    diagram: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class CaseEvent(ChainedEvent, Base):
    """Append-only and hash-chained (DESIGN §6)."""

    __tablename__ = "case_event"
    __table_args__ = (
        UniqueConstraint("case_id", "seq"),
        Index("ix_case_event_actor", "actor", "case_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("case.id"))


class LoginFailure(Base):
    """Failed logins, kept briefly so that guessing is rate-limited per account and per address."""

    __tablename__ = "login_failure"
    __table_args__ = (Index("ix_login_failure_key_at", "key", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(120))  # "user:NAME" or "addr:IP"
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class Notification(Base):
    """The outbox: written in the step's transaction, delivered later by a worker with retries.
    A delivery that fails never blocks or rolls back the case."""

    __tablename__ = "notification"
    __table_args__ = (Index("ix_notification_pending", "delivered_at", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("case.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # assigned, supervised, escalated
    url: Mapped[str] = mapped_column(String(500))
    format: Mapped[str] = mapped_column(String(16))  # json, wecom
    payload: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # gave up after retries
    last_error: Mapped[str | None] = mapped_column(String(500))


class Delegation(Base):
    """代理: a person's items are also worked by a colleague (same role and unit, or the tier
    above) from `starts_at` until `ends_at` (DESIGN §4); it ends by itself. Each step the
    colleague takes records both names (`actor`, and `on_behalf_of` in the event data)."""

    __tablename__ = "delegation"
    __table_args__ = (Index("ix_delegation_delegate", "delegate", "ends_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    delegator: Mapped[str] = mapped_column(String(64), index=True)  # whose items
    delegate: Mapped[str] = mapped_column(String(64))  # who may work them
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Photo(Base):
    """A photo attached to a case: the file lives outside the database (under the instance
    folder, named by its sha256); the sha256 goes into the event that attached it, so the chain
    covers the file. A photo uploaded before its case exists (while opening) has no case yet."""

    __tablename__ = "photo"
    __table_args__ = (UniqueConstraint("case_id", "sha256"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("case.id"), index=True)
    uploaded_by: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    content_type: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    kept_location: Mapped[bool] = mapped_column(Boolean, default=False)


class Digest(Base):
    """A daily anchor (DESIGN §6): the heads of the chains that grew since the digest before,
    hashed with that digest's hash. `made_at` and `heads` keep the exact text that was hashed."""

    __tablename__ = "digest"
    n: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    made_at: Mapped[str] = mapped_column(String(32))
    made_by: Mapped[str] = mapped_column(String(64))
    prev: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    cases: Mapped[int] = mapped_column(Integer)
    heads: Mapped[str] = mapped_column(Text)


class CaseAccess(Base):
    """A case an auditor opened: who, which case, when and how (page, api, events, dossier,
    replay). Auditors read every case, so what they read is itself on the record (DESIGN §4)."""

    __tablename__ = "case_access"
    __table_args__ = (Index("ix_case_access_at", "at", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    case_id: Mapped[int] = mapped_column(ForeignKey("case.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    how: Mapped[str] = mapped_column(String(16))


class Job(Base):
    """A background job that people watch: its progress (done of total) and, when it ends, its
    result. Whoever runs it (a thread of the web server, an rq worker) writes the row as it goes."""

    __tablename__ = "job"
    __table_args__ = (Index("ix_job_kind", "kind", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))  # queued, running, done, failed
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict | None] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CaseFact(Base):
    """What the figures (DESIGN §11) count about a case, kept by each step that changes it, so
        that figures are indexed aggregates and never read workflows or events. A case counts under
        the units it was opened in; durations are kept in microseconds (the events' own precision, so
    averages are exact), summed portably by any database."""

    __tablename__ = "case_fact"
    __table_args__ = (
        Index("ix_case_fact_town", "town_id", "accepted_at"),
        Index("ix_case_fact_village", "village_id", "accepted_at"),
        Index("ix_case_fact_district", "district_id", "accepted_at"),
        Index("ix_case_fact_grid", "grid_id", "accepted_at"),
    )
    case_id: Mapped[int] = mapped_column(ForeignKey("case.id"), primary_key=True)
    town_id: Mapped[int] = mapped_column(Integer)
    village_id: Mapped[int] = mapped_column(Integer)
    district_id: Mapped[int] = mapped_column(Integer)
    grid_id: Mapped[int] = mapped_column(Integer)
    category: Mapped[str | None] = mapped_column(String(32))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # accept completed
    valid: Mapped[bool | None] = mapped_column(Boolean)  # what accept said
    dispatch_us: Mapped[int | None] = mapped_column(BigInteger)  # opened → accepted, µs
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolution_us: Mapped[int | None] = mapped_column(BigInteger)  # accepted → archived, µs
    resolved_tier: Mapped[str | None] = mapped_column(String(32))
    late_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # first escalation or overdue
    reopened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # first reopening


class FeedbackFact(Base):
    """One feedback completion (回访): when, and whether the resident was satisfied."""

    __tablename__ = "feedback_fact"
    __table_args__ = (Index("ix_feedback_fact_at", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("case.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    satisfied: Mapped[bool] = mapped_column(Boolean)


class Campaign(Base):
    """工作任务 (DESIGN §12): work the town pushes down to every household of its target grids. Each
    target grid runs its own instance of the campaign diagram (a `case` row of process
    `campaign`); this row sums them. Its own events (launched, each grid's supervised, escalated,
    returned and confirmed, closed) are a chain like a case's, in campaign_event."""

    __tablename__ = "campaign"
    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    instructions: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(16))  # publicity, patrol, survey, group_drive
    checklist: Mapped[dict] = mapped_column(JSON)  # a JSON Schema for one household's visit
    targets: Mapped[list] = mapped_column(JSON)  # the unit codes it was launched to
    town_id: Mapped[int] = mapped_column(ForeignKey("unit.id"))
    launched_by: Mapped[str] = mapped_column(String(64))
    launched_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))  # open, closed
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    diagram_id: Mapped[int] = mapped_column(ForeignKey("diagram_version.id"))
    event_seq: Mapped[int] = mapped_column(Integer, default=0)
    event_head: Mapped[str] = mapped_column(String(64), default="0" * 64)
    # The seq of this chain's head in the latest digest that names it (0: in none yet).
    digested_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class CampaignEvent(ChainedEvent, Base):
    """A campaign's chain (DESIGN §6 form, `case` holding the campaign's number)."""

    __tablename__ = "campaign_event"
    __table_args__ = (UniqueConstraint("campaign_id", "seq"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id"))


class Visit(Base):
    """One household visited for a campaign, against its checklist. `client_id` is made by the
    officer's browser, so a visit sent again after a dropped connection is the same visit;
    coverage counts households, not visits. `case_id`: the case a hazard on it opened."""

    __tablename__ = "visit"
    __table_args__ = (
        UniqueConstraint("campaign_id", "client_id"),
        Index("ix_visit_campaign_grid", "campaign_id", "grid_id", "household_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id"))
    grid_id: Mapped[int] = mapped_column(ForeignKey("unit.id"))
    household_id: Mapped[int] = mapped_column(ForeignKey("household.id"))
    client_id: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict] = mapped_column(JSON)
    recorded_by: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("case.id"))
