"""The demo township: the organisation of demo_org.py plus a few hundred sample cases.

Sample cases are driven through the real engine on a simulated clock over the last ten days, then
every timer due by now is fired, so supervision, escalation and town-level overdue cases appear the
way they would in a live town. The organisation is deterministic; case times are relative to now.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from .access import other_liaisons, viewer_of
from .clock import FixedClock
from .demo_org import DEMO_LOGINS, DEMO_PASSWORD, demo_org
from .models import Household, Person, Position, Unit, WorkItem
from .org import import_org_data
from .passwords import Passwords
from .runtime import Runtime

SAMPLE_CASES = 300
TITLES = {
    "resident_request": ["路灯损坏需要维修", "自来水压力不足", "申请低保政策咨询", "村道坑洼积水"],
    "dispute": ["邻里宅基地边界纠纷", "土地承包费用争议", "婚姻家庭矛盾调解", "养殖异味引发纠纷"],
    "safety_hazard": ["危房墙体开裂", "河堤渗水隐患", "电线私拉乱接", "液化气瓶存放不当"],
    "policy": ["医保缴费政策宣传", "惠农补贴申领说明", "垃圾分类宣传"],
    "straw_burning": ["田间发现秸秆焚烧", "秸秆堆放靠近林地"],
    "flood_drought": ["沟渠堵塞影响排涝", "旱情导致灌溉困难"],
    "fireworks": ["禁燃区燃放烟花爆竹"],
}
# How far each sample case goes: a list of actions on its successive work items.
PLANS = [
    ([], 12),
    (["accept"], 20),
    (["accept", "refer"], 10),
    (["accept", "refer", "refer"], 6),
    (["accept", "refer", "refer", "refer"], 5),
    (["accept", "resolve"], 12),
    (["accept", "resolve", "satisfied"], 8),
    (["accept", "resolve", "satisfied", "report"], 8),
    (["accept", "resolve", "satisfied", "report", "approve"], 12),
    (["accept", "resolve", "unsatisfied"], 4),
    (["reject"], 3),
]


def load_demo(
    session: Session,
    runtime: Runtime,
    passwords: Passwords,
    progress: Callable[[int], None] | None = None,
    cases: int = SAMPLE_CASES,
) -> str:
    """Import the demo organisation and drive sample cases; commits as it goes."""
    tick = progress or (lambda _n: None)
    # Demo accounts only: each of the ~705 gets its own hash, at the REDUCED demo cost
    # (passwords.DEMO_PARAMETERS; they all share the published demo password). Real imports hash
    # at the default cost, and a demo hash is upgraded to it on the account's first login.
    import_org_data(session, demo_org(DEMO_PASSWORD), passwords.for_demo())
    # The demo's logins are published (README, `gridloop demo`): its people are not asked to
    # change the shared password on their first sign-in, as people of a real township are.
    session.execute(update(Person).values(password_initial=False))
    session.commit()
    tick(20)
    now = runtime.clock.now()
    sim = Runtime(FixedClock(now - timedelta(days=10)), runtime.registry, hot_cases=50)
    rng = random.Random(2024)
    grids = list(session.scalars(select(Unit).where(Unit.level == "grid").order_by(Unit.code)))
    demo_grid = next(g for g in grids if g.code == "V01-D1-G01")
    starts = sorted(rng.uniform(0, 9.5 * 24) for _ in range(cases))
    plans = [p for p, weight in PLANS for _ in range(weight)]
    for n, hours in enumerate(starts):
        grid = demo_grid if n % 6 == 0 else rng.choice(grids)
        plan = plans[n % len(plans)] if n % 6 == 0 else rng.choice(plans)
        sim.clock.set(now - timedelta(days=10) + timedelta(hours=hours))
        _drive(session, sim, rng, grid, plan, now)
        if n % max(1, cases // 60) == 0:
            tick(1)
    _demo_campaign(session, sim, rng, now)
    while runtime.fire_due_timers(session, as_of=now):
        pass
    tick(100)
    return f"Loaded the demo township with {cases} sample cases and a campaign."


# The demo's campaign (工作任务, DESIGN §12): launched six days ago to the first village, due in
# four days; the demo grid (V01-D1-G01) walked to 60 % with its return in the officer's inbox,
# the next grid returned and confirmed, the others part-walked, one hazard found on a visit.
DEMO_CAMPAIGN = {
    "title": "秸秆禁烧入户宣传",
    "instructions": "逐户宣传秸秆禁烧政策，发放告知书；发现焚烧隐患当场登记。",
    "kind": "patrol",
    "targets": ["V01"],
    "checklist": {
        "type": "object",
        "properties": {
            "told": {"type": "boolean", "title": "已宣传禁烧政策", "x-title-en": "Told"},
            "leaflet": {"type": "boolean", "title": "已发放告知书", "x-title-en": "Leaflet given"},
            "burning": {
                "type": "boolean",
                "title": "发现焚烧隐患",
                "x-title-en": "Burning hazard found",
                "x-opens-case": True,
            },
            "note": {"type": "string", "title": "备注", "x-title-en": "Note", "maxLength": 200},
        },
    },
}


def _demo_campaign(session: Session, sim: Runtime, rng: random.Random, now) -> None:
    from .clock import iso
    from .models import Case

    sim.clock.set(now - timedelta(days=6))
    leader = session.scalars(select(Person).where(Person.username == "town.leader1")).one()
    body = {**DEMO_CAMPAIGN, "due_at": iso(now + timedelta(days=4))}
    campaign = sim.launch_campaign(session, viewer_of(session, leader), body)
    grids = list(
        session.execute(
            select(Case.id, Unit.code, Unit.id.label("grid_id"))
            .join(Unit, Unit.id == Case.grid_id)
            .where(Case.campaign_id == campaign.id, Case.process == "campaign")
            .order_by(Unit.code)
        )
    )
    for n, (case_id, code, grid_id) in enumerate(grids):
        officer = viewer_of(session, _holder(session, "info_officer", grid_id))
        numbers = session.scalars(
            select(Household.number).where(Household.grid_id == grid_id).order_by(Household.number)
        ).all()
        share = 1.0 if n == 1 else 0.6 if n == 0 else rng.uniform(0.05, 0.4)
        for k, number in enumerate(numbers[: int(len(numbers) * share)]):
            sim.clock.set(now - timedelta(days=5) + timedelta(minutes=37 * k + 5 * n))
            data = {"told": True, "leaflet": rng.random() < 0.9}
            if n == 2 and k == 3:
                data["burning"] = True
            sim.record_visit(
                session,
                officer,
                campaign.id,
                {"household": {"grid": code, "number": number}, "data": data,
                 "client_id": f"demo-{code}-{number}"},
            )  # fmt: skip
        if n == 1:  # one grid has walked every household, returned and been confirmed
            sim.clock.set(now - timedelta(days=2))
            item = session.scalars(
                select(WorkItem).where(WorkItem.case_id == case_id, WorkItem.completed_at.is_(None))
            ).one()
            sim.complete(session, officer, item.id, {"note": "全组已逐户宣传并发放告知书。"})
            item = session.scalars(
                select(WorkItem).where(WorkItem.case_id == case_id, WorkItem.completed_at.is_(None))
            ).one()
            leader_of_grid = viewer_of(session, _holder(session, "grid_leader", grid_id))
            sim.complete(session, leader_of_grid, item.id, {"confirmation": "confirmed"})


def _drive(
    session: Session, sim: Runtime, rng: random.Random, grid: Unit, plan: list[str], until
) -> None:
    category = rng.choice(list(TITLES))
    severity = rng.choices(["low", "normal", "urgent"], weights=[3, 6, 1])[0]
    officer = _holder(session, "info_officer", grid.id)
    households = list(session.scalars(select(Household).where(Household.grid_id == grid.id)))
    household = rng.choice(households) if households else None
    resident = rng.random() < 0.2
    case = sim.open_case(
        session,
        None if resident else viewer_of(session, officer),
        title=rng.choice(TITLES[category]),
        grid=grid.code,
        description="（演示数据）群众反映情况，需核实处理。",
        category=category,
        severity=severity,
        household=f"{household.number}号 {household.head}" if household else None,
        reporter={"name": household.head if household else "村民", "phone": "13800001234"},
    )
    for action in plan:
        sim.clock.advance(hours=rng.uniform(0.5, 6))
        if sim.clock.now() >= until:
            return
        sim.fire_case_timers(session, case.id, sim.clock.now())
        item = session.scalars(
            select(WorkItem).where(WorkItem.case_id == case.id, WorkItem.completed_at.is_(None))
        ).first()
        if item is None:
            return
        actor = _actor(session, item, officer)
        if actor is None:
            return
        if item.role == "town_leadership" and action == "refer":
            action = "coordinate"  # nothing is above the town: it coordinates departments instead
        data = _form(item.task, action, category, severity)
        if data is None:
            return
        sim.complete(session, viewer_of(session, actor), item.id, data)


def _form(task: str, action: str, category: str, severity: str) -> dict | None:
    if task == "accept":
        if action == "reject":
            return {"valid": False, "note": "重复反映，已合并处理"}
        return {"valid": True, "category": category, "severity": severity, "note": "已核实"}
    if task == "handle":
        if action == "coordinate":
            return {"outcome": "resolved", "note": "镇级协调派出所联合处置", "departments": ["PS"]}
        if action == "refer":
            return {"outcome": "refer_up", "note": "超出本级权限，提请上级协调"}
        return {"outcome": "resolved", "note": "已现场处置完毕"}
    if task == "feedback":
        if action == "unsatisfied":
            return {"satisfaction": "unsatisfied", "note": "群众认为问题未彻底解决"}
        return {"satisfaction": "satisfied", "note": "回访群众表示满意"}
    if task == "report":
        return {"summary": "事项已办结，群众满意，申请归档"}
    if task == "review":
        return {"approved": True, "note": "同意归档"}
    return None


def _holder(session: Session, role: str, unit_id: int) -> Person | None:
    return session.scalars(
        select(Person)
        .join(Position)
        .where(Position.role == role, Position.unit_id == unit_id, Person.active)
        .order_by(Person.id)
    ).first()


def _actor(session: Session, item: WorkItem, officer: Person | None) -> Person | None:
    if item.assignee:
        return session.scalars(select(Person).where(Person.username == item.assignee)).first()
    if item.claimed_by:
        return session.scalars(select(Person).where(Person.username == item.claimed_by)).first()
    query = (
        select(Person)
        .join(Position)
        .where(Position.role == item.role, Position.unit_id == item.unit_id, Person.active)
        .order_by(Person.id)
    )
    if item.excluded:
        query = query.where(Person.username != item.excluded)
    if item.role == "town_leadership":
        liaisons = other_liaisons(item.village_id, item.excluded)
        if session.scalar(select(exists(liaisons))):
            query = query.where(Person.id.in_(liaisons))
    return session.scalars(query).first()


def login_table() -> str:
    rows = [("tier", "username")] + [(tier, user) for tier, user in DEMO_LOGINS]
    width = max(len(t) for t, _ in rows) + 2
    lines = [f"{t:<{width}}{u}" for t, u in rows]
    lines.insert(1, "-" * (width + 24))
    return "\n".join(lines) + f"\n\nEvery demo account's password: {DEMO_PASSWORD}"
