"""Campaigns (工作任务, DESIGN §12): work the town pushes down to every household of its grids.

A town leader launches a campaign to any mix of villages, districts and grids. The launch fans
out in one transaction: the campaign row and its `launched` event, and for every target grid an
instance of the bundle's `campaign` process, opened with engine/step.py's run_step like a case
and kept as a `case` row of process `campaign` (case.campaign_id names the campaign). So each
grid steps, is supervised at 80% of the span, escalates at the due time, chains its events and
replays on its own row, with the case loop's code, and no two grids contend for one workflow.

The campaign row sums its grids: each grid step that returns, confirms or is supervised appends
the matching event to the campaign's own chain (campaign_event, DESIGN §6 form), in the grid
step's transaction and under the campaign's head (a step that loses that race is retried whole);
the step that confirms the last grid, or the first step at or after the due time, closes the
campaign, listing the grids that are missing.

Officers record one visit per household against the campaign's checklist (a JSON Schema). A
visit carries the client's id, so a resend returns the same visit; coverage counts households,
not visits. A checklist boolean marked `x-opens-case` that a visit sets opens a case in the main
loop in the visit's transaction, its accept held by the officer, linked both ways. The visit is
also a `visited` event on its grid's chain, so the chain covers what was recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import jsonschema
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.orm import Session

from .access import Viewer, case_scope, held_positions
from .clock import SHANGHAI, iso, parse_iso
from .errors import Conflict, Forbidden, Invalid, NotFound
from .events import GENESIS, chained_rows, check_data
from .models import (
    Campaign,
    CampaignEvent,
    Case,
    Counter,
    Household,
    Unit,
    Visit,
    WorkItem,
)
from .privacy import mask_phone
from .specs import CAMPAIGN_PROCESS_ID, live_version

KINDS = ("publicity", "patrol", "survey", "group_drive")  # DESIGN §12
MAX_TITLE = 200
MAX_INSTRUCTIONS = 5000
MAX_TARGETS = 500
MAX_CHECKLIST_ITEMS = 50
MAX_CLIENT_ID = 64
MAX_SPAN = timedelta(days=366)  # from launch to due
OPENS_CASE = "x-opens-case"
# A yes/no item whose yes marks the household as in the grid's group chat (一户一代表): a group
# drive has one; launching one without it adds IN_GROUP_ITEM.
SETS_IN_GROUP = "x-in-group"
IN_GROUP_ITEM = {
    "type": "boolean",
    "title": "已入群",
    "x-title-en": "A representative joined the group chat",
    SETS_IN_GROUP: True,
}
# The keywords a checklist and each of its items may use.
CHECKLIST_KEYS = frozenset(
    {"$schema", "type", "title", "x-title-en", "description", "properties", "required"}
    | {"additionalProperties"}
)
ITEM_KEYS = frozenset(
    {"type", "title", "x-title-en", "description", "maxLength", "minLength"}
    | {OPENS_CASE, SETS_IN_GROUP}
)
# The grid instance's events the campaign's chain records, by (type, task): a 100% supervision
# (`overdue`) is the campaign's `escalated`.
RETURNED, CONFIRMED, CLOSED, LAUNCHED = "returned", "confirmed", "closed", "launched"
VISITED = "visited"
# Who records visits: the grid's information officers and its leader.
WALKERS = ("info_officer", "grid_leader")

CAMPAIGNS = Campaign.__table__
CAMPAIGN_EVENTS = CampaignEvent.__table__


# --------------------------------------------------------------------------- launching


@dataclass(frozen=True)
class Plan:
    """A launch that passed its checks: what the fan-out writes."""

    title: str
    instructions: str
    kind: str
    targets: list[str]
    due_at: datetime
    checklist: dict
    town: Unit
    grids: list[Any]  # rows (id, code, district_id, village_id, town_id)


def town_of(viewer: Viewer) -> int | None:
    """The town the viewer leads (镇联点班子), if any: only town leaders launch campaigns."""
    for role, unit_id, level in viewer.positions:
        if role == "town_leadership" and level == "town":
            return unit_id
    return None


def plan_launch(session: Session, viewer: Viewer, body: Any, now: datetime) -> Plan:
    """Check a launch request (DESIGN §12's POST /campaigns body); every problem by its field."""
    town_id = town_of(viewer)
    if town_id is None:
        raise Forbidden("only town leaders launch campaigns")
    if not isinstance(body, dict):
        raise Invalid("the request has errors", {"body": "must be a JSON object"})
    problems: dict[str, str] = {}
    title = body.get("title")
    if not isinstance(title, str) or not title.strip():
        problems["title"] = "required"
    elif len(title) > MAX_TITLE:
        problems["title"] = f"must be at most {MAX_TITLE} characters"
    instructions = body.get("instructions", "")
    if instructions is None:
        instructions = ""
    if not isinstance(instructions, str):
        problems["instructions"] = "must be text"
    elif len(instructions) > MAX_INSTRUCTIONS:
        problems["instructions"] = f"must be at most {MAX_INSTRUCTIONS} characters"
    kind = body.get("kind")
    if kind not in KINDS:
        problems["kind"] = "must be one of: " + ", ".join(KINDS)
    due_at = _instant(body.get("due_at"), now, problems)
    checklist = body.get("checklist")
    problems.update(checklist_problems(checklist))
    targets = body.get("targets")
    grids: list[Any] = []
    if (
        not isinstance(targets, list)
        or not targets
        or not all(isinstance(t, str) and t for t in targets)
    ):
        problems["targets"] = "must be a list of unit codes"
    elif len(targets) > MAX_TARGETS:
        problems["targets"] = f"must name at most {MAX_TARGETS} units"
    else:
        targets = list(dict.fromkeys(targets))
        grids = _target_grids(session, town_id, targets, problems)
    if problems:
        raise Invalid("the request has errors", dict(sorted(problems.items())))
    return Plan(
        title=title.strip(),
        instructions=instructions,
        kind=kind,
        targets=targets,
        due_at=due_at,
        checklist=_completed(checklist, kind),
        town=session.get(Unit, town_id),
        grids=grids,
    )


def _completed(checklist: dict, kind: str) -> dict:
    """The checklist as launched: a visit answers its items and nothing else (what it sends goes
    into the chain), and a group drive asks whether the household joined the group chat."""
    checklist = {**checklist, "additionalProperties": False}
    items = checklist["properties"]
    if kind == "group_drive" and not any(i.get(SETS_IN_GROUP) for i in items.values()):
        checklist["properties"] = {**items, "in_group": dict(IN_GROUP_ITEM)}
    return checklist


def joins_group(campaign: Campaign, data: dict) -> bool:
    """Whether this visit's answer says the household joined the group chat."""
    items = campaign.checklist.get("properties", {})
    return any(
        isinstance(item, dict) and item.get(SETS_IN_GROUP) and data.get(name) is True
        for name, item in items.items()
    )


def _instant(value: Any, now: datetime, problems: dict[str, str]) -> datetime | None:
    if not isinstance(value, str):
        problems["due_at"] = "required: an ISO 8601 time with its offset"
        return None
    try:
        due = parse_iso(value)
    except (ValueError, OverflowError):  # OverflowError: beyond year 9999 in UTC
        problems["due_at"] = "must be an ISO 8601 time with its offset"
        return None
    if due.tzinfo is None:
        problems["due_at"] = "must be an ISO 8601 time with its offset"
    elif due <= now:
        problems["due_at"] = "must be in the future"
    elif due - now > MAX_SPAN:
        problems["due_at"] = "must be within a year"
    return due


def checklist_problems(checklist: Any) -> dict[str, str]:
    """A checklist is a JSON Schema for one household's visit: an object whose properties are
    the items, each a boolean (yes/no) or a string (text); `x-opens-case` only on a boolean."""
    if not isinstance(checklist, dict):
        return {"checklist": "must be a JSON Schema object"}
    # Only the words a checklist needs: no $ref (the validator would fetch it), no pattern (a
    # regular expression can take a worker for ever), nothing a visit's check could trip over.
    unknown = sorted(set(checklist) - CHECKLIST_KEYS)
    if unknown:
        return {"checklist": "unsupported keywords: " + ", ".join(unknown)}
    try:
        jsonschema.Draft202012Validator.check_schema(checklist)
        check_data(checklist, "checklist")  # it goes into the chain: no decimals
    except jsonschema.SchemaError as exc:
        return {"checklist": f"is not a valid JSON Schema: {exc.message}"}
    except (TypeError, ValueError) as exc:
        return {"checklist": str(exc)}
    items = checklist.get("properties")
    if checklist.get("type") != "object" or not isinstance(items, dict) or not items:
        return {"checklist": "must be an object schema with at least one item in properties"}
    if len(items) > MAX_CHECKLIST_ITEMS:
        return {"checklist": f"must have at most {MAX_CHECKLIST_ITEMS} items"}
    problems = {}
    for name, item in items.items():
        where = f"checklist.properties.{name}"
        if not isinstance(item, dict) or item.get("type") not in ("boolean", "string"):
            problems[where] = "an item must be a boolean (yes/no) or a string (text)"
        elif set(item) - ITEM_KEYS:
            problems[where] = "unsupported keywords: " + ", ".join(sorted(set(item) - ITEM_KEYS))
        elif (item.get(OPENS_CASE) or item.get(SETS_IN_GROUP)) and item.get("type") != "boolean":
            problems[where] = f"{OPENS_CASE} and {SETS_IN_GROUP} are for yes/no items only"
    return problems


def _target_grids(
    session: Session, town_id: int, targets: list[str], problems: dict[str, str]
) -> list[Any]:
    """Every active grid under the target units (villages, districts, grids of the town)."""
    units = {
        u.code: u
        for u in session.scalars(select(Unit).where(Unit.code.in_(targets), Unit.active)).all()
    }
    wanted: dict[str, set[int]] = {"grid": set(), "district": set(), "village": set()}
    for i, code in enumerate(targets):
        unit = units.get(code)
        if unit is None or unit.level not in wanted and unit.id != town_id:
            problems[f"targets[{i}]"] = f"'{code}' is not a village, district or grid of the town"
            continue
        if unit.id == town_id:
            wanted["village"].update(
                session.scalars(select(Unit.id).where(Unit.parent_id == town_id)).all()
            )
        else:
            wanted[unit.level].add(unit.id)
    grid, district, village = (Unit.__table__.alias(n) for n in ("g", "d", "v"))
    query = (
        select(
            grid.c.id,
            grid.c.code,
            district.c.id.label("district_id"),
            village.c.id.label("village_id"),
            village.c.parent_id.label("town_id"),
        )
        .join(district, district.c.id == grid.c.parent_id)
        .join(village, village.c.id == district.c.parent_id)
        .where(
            grid.c.level == "grid",
            grid.c.active,
            or_(
                grid.c.id.in_(wanted["grid"] or [-1]),
                district.c.id.in_(wanted["district"] or [-1]),
                village.c.id.in_(wanted["village"] or [-1]),
            ),
        )
        .order_by(grid.c.code)
    )
    rows = session.execute(query).all()
    outside = [r.code for r in rows if r.town_id != town_id]
    if outside:
        problems["targets"] = "units outside your town: " + ", ".join(outside[:5])
    elif (
        not rows
        and "targets" not in problems
        and not any(k.startswith("targets[") for k in problems)
    ):
        problems["targets"] = "the units named have no active grid"
    return rows


def next_number(session: Session, town_code: str, now: datetime) -> str:
    """The campaign's number: town code, year in Asia/Shanghai, T and a sequence (XDK-2026-T0007)."""
    year = now.astimezone(SHANGHAI).year
    key = f"campaign:{town_code}:{year}"
    if not session.execute(
        update(Counter).where(Counter.key == key).values(value=Counter.value + 1)
    ).rowcount:
        session.execute(insert(Counter.__table__).values(key=key, value=1))
    value = session.scalar(select(Counter.value).where(Counter.key == key))
    return f"{town_code}-{year}-T{value:04d}"


def insert_campaign(session: Session, plan: Plan, actor: str, now: datetime) -> SimpleNamespace:
    """The campaign row with its `launched` event (the fan-out's first write)."""
    version = live_version(session, "case_loop")
    if version is None:
        raise Conflict("no diagram is deployed; run `gridloop init-db`")
    row = {
        "number": next_number(session, plan.town.code, now),
        "title": plan.title,
        "instructions": plan.instructions,
        "kind": plan.kind,
        "checklist": plan.checklist,
        "targets": plan.targets,
        "town_id": plan.town.id,
        "launched_by": actor,
        "launched_at": now,
        "due_at": plan.due_at,
        "status": "open",
        "closed_at": None,
        "diagram_id": version.id,
        "event_seq": 0,
        "event_head": GENESIS,
        "digested_seq": 0,
    }
    campaign_id = session.execute(insert(CAMPAIGNS).returning(CAMPAIGNS.c.id), row).scalar_one()
    campaign = SimpleNamespace(id=campaign_id, diagram_sha=version.sha256, **row)
    data = {
        "title": plan.title,
        "instructions": plan.instructions,
        "kind": plan.kind,
        "targets": plan.targets,
        "due_at": iso(plan.due_at),
        "checklist": plan.checklist,
        "grids": [g.code for g in plan.grids],
    }
    _append(session, campaign, now, actor, [(LAUNCHED, None, data)])
    return campaign


def instance_number(campaign_number: str, n: int) -> str:
    """A grid instance's number, its chain's name: the campaign's and the grid's place in it."""
    return f"{campaign_number}-{n:03d}"


# --------------------------------------------------------------------------- the chain


def _append(session: Session, campaign, now: datetime, actor: str, events, **values) -> None:
    """Chain events onto the campaign's head, moving the head under a check that it is still the
    one read: a concurrent grid step that appended first makes this step retry (StaleCase)."""
    from .projection import StaleCase  # projection calls on_grid_step: import at call time

    rows, seq, head = chained_rows(
        campaign.number,
        campaign.event_seq,
        campaign.event_head,
        iso(now),
        actor,
        campaign.diagram_sha,
        events,
    )
    conn = session.connection()
    conn.execute(insert(CAMPAIGN_EVENTS), [{"campaign_id": campaign.id, **r} for r in rows])
    moved = conn.execute(
        update(CAMPAIGNS)
        .where(CAMPAIGNS.c.id == campaign.id, CAMPAIGNS.c.event_seq == campaign.event_seq)
        .values(event_seq=seq, event_head=head, **values)
    )
    if moved.rowcount != 1:
        raise StaleCase(campaign.number)
    campaign.event_seq, campaign.event_head = seq, head
    for name, value in values.items():
        setattr(campaign, name, value)


def events_of(
    session: Session, campaign: Campaign, viewer: Viewer | None = None
) -> list[dict[str, Any]]:
    """The campaign's chain as the events API gives it: each event with its hash. A `viewer` who
    does not cover the whole campaign (its town's leaders and auditors do) reads the campaign's
    own events (launched, closed) and those of its grids they cover: another grid's return,
    confirmation and supervisions, and who did them, are outside their units (DESIGN §4). The
    seq numbers then have gaps; the chain verifies whole, for those who read it whole."""
    import json

    rows = session.scalars(
        select(CampaignEvent)
        .where(CampaignEvent.campaign_id == campaign.id)
        .order_by(CampaignEvent.seq)
    ).all()
    if viewer is not None and not viewer.is_auditor and town_of(viewer) != campaign.town_id:
        mine = set(
            session.scalars(
                select(Unit.code)
                .join(Case, Case.grid_id == Unit.id)
                .where(
                    Case.campaign_id == campaign.id,
                    Case.process == CAMPAIGN_PROCESS_ID,
                    case_scope(viewer),
                )
            )
        )
    else:
        mine = None
    events = [
        {
            "case": campaign.number,
            "seq": r.seq,
            "at": r.at,
            "type": r.type,
            "actor": r.actor,
            "task": r.task,
            "data": json.loads(r.data),
            "diagram": r.diagram,
            "hash": r.hash,
        }
        for r in rows
    ]
    if mine is None:
        return events
    return [e for e in events if e["data"].get("grid") in mine | {None}]


def _campaign_row(session: Session, campaign_id: int) -> SimpleNamespace | None:
    from .models import DiagramVersion

    row = (
        session.connection()
        .execute(
            select(CAMPAIGNS, DiagramVersion.sha256.label("diagram_sha"))
            .join(DiagramVersion, DiagramVersion.id == CAMPAIGNS.c.diagram_id)
            .where(CAMPAIGNS.c.id == campaign_id)
        )
        .first()
    )
    return SimpleNamespace(**row._mapping) if row is not None else None


def on_grid_step(session: Session, case, events, closed: bool, now: datetime, actor: str) -> None:
    """What a grid instance's step tells its campaign (engine/projection.py calls this in the
    step's transaction): its return, confirmation and supervisions go on the campaign's chain,
    and the campaign closes when its last grid is confirmed or once its due time has come."""
    told = []
    for type_, task, data in events:
        if type_ == "task_completed" and task == "campaign_return":
            told.append((RETURNED, task, {}))
        elif type_ == "confirmed":
            told.append((CONFIRMED, None, {}))
        elif type_ == "supervised":
            kind = "escalated" if data.get("overdue") else "supervised"
            told.append((kind, task, {"due_at": data.get("due_at")}))
    if not told and not closed:
        return  # nothing the campaign sums (a launch's opening, a claim)
    campaign = _campaign_row(session, case.campaign_id)
    if campaign is None:
        return
    grid = session.scalar(select(Unit.code).where(Unit.id == case.grid_id))
    told = [(type_, task, {"grid": grid, **data}) for type_, task, data in told]
    values: dict[str, Any] = {}
    if campaign.status == "open":
        others_open = session.scalar(
            select(func.count())
            .select_from(Case)
            .where(
                Case.campaign_id == campaign.id,
                Case.process == CAMPAIGN_PROCESS_ID,
                Case.id != case.id,
                Case.closed_at.is_(None),
            )
        )
        if (closed and not others_open) or now >= campaign.due_at:
            missing = _missing(session, campaign.id, case.id if closed else None)
            figures = _totals(session, campaign.id)
            told.append((CLOSED, None, {"missing": missing, **figures}))
            values = {"status": "closed", "closed_at": now}
    if told:
        _append(session, campaign, now, actor, told, **values)


def _missing(session: Session, campaign_id: int, just_closed: int | None) -> list[str]:
    """The target grids not yet confirmed (the step's own instance counts as confirmed when it
    just closed: its row is written after this)."""
    rows = session.execute(
        select(Unit.code)
        .join(Case, Case.grid_id == Unit.id)
        .where(
            Case.campaign_id == campaign_id,
            Case.process == CAMPAIGN_PROCESS_ID,
            Case.closed_at.is_(None),
            Case.id != (just_closed or -1),
        )
        .order_by(Unit.code)
    ).all()
    return [r.code for r in rows]


def _totals(session: Session, campaign_id: int) -> dict[str, int]:
    grids = select(Case.grid_id).where(
        Case.campaign_id == campaign_id, Case.process == CAMPAIGN_PROCESS_ID
    )
    total = session.scalar(
        select(func.count()).select_from(Household).where(Household.grid_id.in_(grids))
    )
    covered = session.scalar(
        select(func.count(func.distinct(Visit.household_id))).where(
            Visit.campaign_id == campaign_id
        )
    )
    return {"households_total": int(total or 0), "households_covered": int(covered or 0)}


# --------------------------------------------------------------------------- reading


def visible(session: Session, viewer: Viewer, campaign_id: Any) -> Campaign:
    """The campaign if one of its grids lies in the viewer's units (town leaders: all of their
    town's), else NotFound."""
    if not isinstance(campaign_id, int) or not 0 < campaign_id < 2**31:
        raise NotFound("no such campaign")
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or not (
        viewer.is_auditor
        or town_of(viewer) == campaign.town_id
        or session.scalar(select(_instances(campaign.id, viewer).exists()))
    ):
        raise NotFound("no such campaign")
    return campaign


def _instances(campaign_id: int, viewer: Viewer | None = None):
    query = select(Case).where(Case.campaign_id == campaign_id, Case.process == CAMPAIGN_PROCESS_ID)
    return query.where(case_scope(viewer)) if viewer is not None else query


def listed(
    session: Session, viewer: Viewer, before: int | None = None, limit: int | None = None
) -> list[Campaign]:
    """The campaigns with a grid in the viewer's units, newest first: those older than the
    campaign id `before`, at most `limit` of them (a town runs hundreds a year)."""
    town = town_of(viewer)
    mine = select(Case.campaign_id).where(Case.process == CAMPAIGN_PROCESS_ID, case_scope(viewer))
    conditions = [Campaign.id.in_(mine)]
    if town is not None:
        conditions.append(Campaign.town_id == town)
    if viewer.is_auditor:
        conditions = [Campaign.id.is_not(None)]
    query = select(Campaign).where(or_(*conditions)).order_by(Campaign.id.desc())
    if before is not None:
        query = query.where(Campaign.id < before)
    return list(session.scalars(query.limit(limit) if limit is not None else query))


def progress(
    session: Session, viewer: Viewer, campaign_list: list[Campaign]
) -> dict[int, tuple[int, int]]:
    """(households covered, households in all) of each campaign over the grids the viewer's
    units hold, for a list of campaigns in three grouped reads."""
    ids = [c.id for c in campaign_list]
    if not ids:
        return {}
    whole = {c.id for c in campaign_list if viewer.is_auditor or town_of(viewer) == c.town_id}
    rows = session.execute(
        select(Case.campaign_id, Case.grid_id, case_scope(viewer).label("mine")).where(
            Case.campaign_id.in_(ids), Case.process == CAMPAIGN_PROCESS_ID
        )
    ).all()
    grids: dict[int, set[int]] = {i: set() for i in ids}
    for campaign_id, grid_id, mine in rows:
        if mine or campaign_id in whole:
            grids[campaign_id].add(grid_id)
    every = set().union(*grids.values())
    households = dict(
        session.execute(
            select(Household.grid_id, func.count())
            .where(Household.grid_id.in_(every or {-1}))
            .group_by(Household.grid_id)
        ).all()
    )
    covered = session.execute(
        select(Visit.campaign_id, Visit.grid_id, func.count(func.distinct(Visit.household_id)))
        .where(Visit.campaign_id.in_(ids))
        .group_by(Visit.campaign_id, Visit.grid_id)
    ).all()
    done: dict[tuple[int, int], int] = {(c, g): n for c, g, n in covered}
    return {
        i: (
            sum(min(done.get((i, g), 0), households.get(g, 0)) for g in grids[i]),
            sum(households.get(g, 0) for g in grids[i]),
        )
        for i in ids
    }


@dataclass(frozen=True)
class GridState:
    id: int
    code: str
    name: str
    case_id: int
    number: str  # the grid instance's chain (replay, dossier and step-through read it)
    status: str
    supervised: bool
    returned: bool
    late: bool
    households: int
    covered: int
    district_id: int
    village_id: int


def grid_states(
    session: Session, viewer: Viewer, campaign: Campaign, now: datetime
) -> list[GridState]:
    """The campaign's grids the viewer's units hold, with what each has done."""
    rows = session.execute(
        select(
            Case.id,
            Case.number,
            Case.grid_id,
            Case.district_id,
            Case.village_id,
            Case.status,
            Case.closed_at,
        ).where(
            Case.campaign_id == campaign.id,
            Case.process == CAMPAIGN_PROCESS_ID,
            case_scope(viewer) if town_of(viewer) != campaign.town_id else Case.id.is_not(None),
        )
    ).all()
    if not rows:
        return []
    case_ids = [r.id for r in rows]
    grid_ids = [r.grid_id for r in rows]
    units = {
        u.id: u
        for u in session.execute(
            select(Unit.id, Unit.code, Unit.name).where(Unit.id.in_(grid_ids))
        ).all()
    }
    supervised = set(
        session.scalars(
            select(WorkItem.case_id)
            .where(WorkItem.case_id.in_(case_ids), WorkItem.supervised_at.is_not(None))
            .distinct()
        ).all()
    )
    households = dict(
        session.execute(
            select(Household.grid_id, func.count())
            .where(Household.grid_id.in_(grid_ids))
            .group_by(Household.grid_id)
        ).all()
    )
    covered = dict(
        session.execute(
            select(Visit.grid_id, func.count(func.distinct(Visit.household_id)))
            .where(Visit.campaign_id == campaign.id)
            .group_by(Visit.grid_id)
        ).all()
    )
    states = []
    for r in rows:
        returned = r.status == "confirmed"
        late = (r.closed_at is None and now >= campaign.due_at) or (
            r.closed_at is not None and r.closed_at > campaign.due_at
        )
        unit = units[r.grid_id]
        states.append(
            GridState(
                id=r.grid_id,
                code=unit.code,
                name=unit.name,
                case_id=r.id,
                number=r.number,
                status=r.status,
                supervised=r.id in supervised,
                returned=returned,
                late=late,
                households=int(households.get(r.grid_id, 0)),
                covered=int(covered.get(r.grid_id, 0)),
                district_id=r.district_id,
                village_id=r.village_id,
            )
        )
    return sorted(states, key=lambda s: s.code)


def as_json(campaign: Campaign, grids: list[GridState]) -> dict[str, Any]:
    return {
        "id": campaign.id,
        "number": campaign.number,
        "title": campaign.title,
        "instructions": campaign.instructions,
        "kind": campaign.kind,
        "targets": campaign.targets,
        "checklist": campaign.checklist,
        "launched_by": campaign.launched_by,
        "launched_at": iso(campaign.launched_at),
        "due_at": iso(campaign.due_at),
        "status": campaign.status,
        "closed_at": iso(campaign.closed_at) if campaign.closed_at else None,
        "households_total": sum(g.households for g in grids),
        "households_covered": sum(g.covered for g in grids),
        "grids": [
            {
                "code": g.code,
                "name": g.name,
                "status": g.status,
                "supervised": g.supervised,
                "returned": g.returned,
                "late": g.late,
                "households_total": g.households,
                "households_covered": g.covered,
            }
            for g in grids
        ],
    }


# --------------------------------------------------------------------------- coverage


LEVEL_BELOW = {"town": "village", "village": "district", "district": "grid"}


def coverage(
    session: Session, viewer: Viewer, campaign: Campaign, unit_code: str | None, now: datetime
) -> dict[str, Any]:
    """DESIGN §12's coverage of one unit (the town by default) over the grids the viewer's
    units hold: households covered of the total, grids returned, the late grids, and the same
    for each unit one level below (`children`), for the heat table town → village → district →
    grid."""
    unit = session.get(Unit, campaign.town_id)
    if unit_code is not None:
        unit = session.scalars(select(Unit).where(Unit.code == unit_code)).first()
        if (
            unit is None
            or unit.level not in ("town", "village", "district", "grid")
            or (unit.level == "town" and unit.id != campaign.town_id)
        ):
            raise NotFound("no such unit")
    grids = [g for g in grid_states(session, viewer, campaign, now) if _under(g, unit)]
    figures = _figures(unit, grids)
    below = LEVEL_BELOW.get(unit.level)
    children = []
    if below is not None:
        key = {"village": "village_id", "district": "district_id", "grid": "id"}[below]
        groups: dict[int, list[GridState]] = {}
        for g in grids:
            groups.setdefault(getattr(g, key), []).append(g)
        names = {
            u.id: u
            for u in session.execute(
                select(Unit.id, Unit.code, Unit.name, Unit.level).where(Unit.id.in_(groups))
            ).all()
        }
        children = sorted(
            (_figures(names[uid], members) for uid, members in groups.items()),
            key=lambda f: f["unit"]["code"],
        )
    return {**figures, "children": children}


def _under(grid: GridState, unit) -> bool:
    return unit.level == "town" or unit.id in (grid.id, grid.district_id, grid.village_id)


def _figures(unit, grids: list[GridState]) -> dict[str, Any]:
    return {
        "unit": {"code": unit.code, "name": unit.name, "level": unit.level},
        "households_total": sum(g.households for g in grids),
        "households_covered": sum(min(g.covered, g.households) for g in grids),
        "grids_total": len(grids),
        "grids_returned": sum(g.returned for g in grids),
        "late": [g.code for g in grids if g.late],
    }


def unreached(
    session: Session,
    viewer: Viewer,
    campaign: Campaign,
    unit_code: str | None,
    now: datetime,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The households of the campaign's grids (in the unit, the viewer's) not visited yet
    (未走访), and for a group drive (一户一代表) those not in the group chat either (未入群), to
    be caught up one by one; the first `limit` of them in grid and number order."""
    grids = coverage_grids(session, viewer, campaign, unit_code, now)
    if not grids:
        return []
    codes = {g.id: g.code for g in grids}
    visited = select(Visit.household_id).where(Visit.campaign_id == campaign.id)
    behind = Household.id.not_in(visited)
    if campaign.kind == "group_drive":
        behind = or_(behind, Household.in_group.is_(False))
    query = (
        select(Household, Household.id.in_(visited).label("visited"))
        .where(Household.grid_id.in_(codes), behind)
        .order_by(Household.grid_id, Household.number)
    )
    rows = session.execute(query.limit(limit) if limit is not None else query).all()
    return [
        {
            "grid": codes[h.grid_id],
            "number": h.number,
            "head": h.head,
            "phone": mask_phone(h.phone),
            "in_group": bool(h.in_group),
            "visited": bool(seen),
        }
        for h, seen in rows
    ]


def coverage_grids(
    session: Session, viewer: Viewer, campaign: Campaign, unit_code: str | None, now: datetime
) -> list[GridState]:
    unit = None
    if unit_code is not None:
        unit = session.scalars(select(Unit).where(Unit.code == unit_code)).first()
        if unit is None:
            raise NotFound("no such unit")
    grids = grid_states(session, viewer, campaign, now)
    return [g for g in grids if unit is None or _under(g, unit)]


# --------------------------------------------------------------------------- visits


def client_id_taken() -> Conflict:
    """The one refusal of a visit that sending it again cannot change (the walk's queue drops
    it); any other 409 (a step that kept losing races) is worth sending again."""
    refusal = Conflict("this client_id names a visit of another grid")
    refusal.code = "client_id_taken"
    return refusal


def may_walk(viewer: Viewer) -> bool:
    """Whether the viewer walks any grid (records visits at all), in their own name or, while a
    delegation runs, for a colleague (代理)."""
    return any(role in WALKERS for role, _unit, _level in held_positions(viewer))


def not_a_walker() -> Forbidden:
    """The refusal of a visit by someone who sees the grid but does not walk it (DESIGN §4:
    what the caller may see but not do)."""
    return Forbidden("only the grid's information officers and its leader record visits")


def walker_grid(session: Session, viewer: Viewer, campaign: Campaign, grid_code: Any):
    """The campaign's instance in a grid the viewer walks (its information officer or leader),
    else NotFound (Forbidden for a grid they cover but do not walk): another grid's households are
    not theirs to see or tick."""
    if not isinstance(grid_code, str):
        raise NotFound("no such household")
    row = session.execute(
        select(Case.id, Case.grid_id)
        .join(Unit, Unit.id == Case.grid_id)
        .where(
            Case.campaign_id == campaign.id,
            Case.process == CAMPAIGN_PROCESS_ID,
            Unit.code == grid_code,
        )
    ).first()
    if row is None:
        raise NotFound("no such household")
    holder = walks_for(viewer, row.grid_id)
    if holder is None:
        if session.scalar(select(Case.id).where(Case.id == row.id, case_scope(viewer))):
            # A grid they cover but do not walk (a grid leader's district, say): 403, as for
            # anything they see but may not do (DESIGN §4).
            raise not_a_walker()
        raise NotFound("no such household")
    return SimpleNamespace(id=row.id, grid_id=row.grid_id, holder=holder)


def walks_for(viewer: Viewer, grid_id: int) -> str | None:
    """In whose name the viewer walks the grid: their own, a delegator's while a delegation runs
    (代理: the visit's event names both), or None."""
    if any(role in WALKERS and unit == grid_id for role, unit, _l in viewer.positions):
        return viewer.username
    for cover in viewer.covers:
        if any(role in WALKERS and unit == grid_id for role, unit, _l in cover.positions):
            return cover.delegator
    return None


def checklist_problems_of(campaign: Campaign, data: Any) -> dict[str, str]:
    from .runtime import form_problems

    if not isinstance(data, dict):
        return {"data": "must be an object"}
    return {
        f"data.{k}" if k != "data" else k: v
        for k, v in form_problems(jsonschema.Draft202012Validator(campaign.checklist), data).items()
    }


def opens_case(campaign: Campaign, data: dict) -> list[str]:
    """The checklist's x-opens-case items this visit's answer sets."""
    items = campaign.checklist.get("properties", {})
    return [
        name
        for name, item in items.items()
        if isinstance(item, dict) and item.get(OPENS_CASE) and data.get(name) is True
    ]


def visit_json(visit: Visit, grid_code: str, number: int, case_number: str | None) -> dict:
    return {
        "id": visit.id,
        "client_id": visit.client_id,
        "household": {"grid": grid_code, "number": number},
        "data": {**visit.data, **({"case": case_number} if case_number else {})},
        "recorded_by": visit.recorded_by,
        "at": iso(visit.at),
        "case": case_number,
    }


def hazard_cases(session: Session, viewer: Viewer, campaign: Campaign) -> list[Case]:
    """The cases the campaign's visits opened (hazards, disputes), those the viewer may read,
    newest first: the campaign's side of the link both ways (DESIGN §12)."""
    return list(
        session.scalars(
            select(Case)
            .where(
                Case.campaign_id == campaign.id,
                Case.process != CAMPAIGN_PROCESS_ID,
                case_scope(viewer),
            )
            .order_by(Case.id.desc())
            .limit(200)
        )
    )
