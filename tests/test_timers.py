"""Time limits as the tiers feel them: supervision (督办) at 80%, escalation at 100%, working days,
urgent clock hours, and catching up with `fire_due_timers(as_of=...)`. The clock moves; nothing
sleeps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from conftest import ACCEPT_NORMAL, GRID, START

from engine import projection
from engine.clock import iso
from engine.models import Unit
from engine.runtime import Runtime
from engine.workcal import import_calendar

SH = ZoneInfo("Asia/Shanghai")
US = timedelta(microseconds=1)


def sh(*args: int) -> datetime:
    """An instant given in Shanghai wall-clock time, as UTC."""
    return datetime(*args, tzinfo=SH).astimezone(UTC)


def data(event) -> dict:
    return json.loads(event.data)


def unit_code(gl, item) -> str:
    return gl.session.get(Unit, item.unit_id).code


# (tier, unit, 80% instant, 100% instant, who the notice goes to besides handler and owner)
NORMAL_CLIMB = [
    ("grid_leader", GRID, sh(2026, 11, 24, 5, 12), sh(2026, 11, 24, 10), "district_leader@V01-D1"),
    (
        "district_leader",
        "V01-D1",
        sh(2026, 11, 26, 0, 24),
        sh(2026, 11, 26, 10),
        "village_secretary@V01",
    ),
    (
        "village_secretary",
        "V01",
        sh(2026, 11, 30, 19, 36),
        sh(2026, 12, 1, 10),
        "town_leadership@XDK",
    ),
]


def test_supervision_at_80_and_escalation_at_100_climb_every_tier(gl):
    case = gl.accepted()
    item = gl.item(case)
    gl.runtime.claim(gl.session, gl.viewer("gl1"), item.id)
    assert [(t.kind, t.due_at) for t in gl.timers(case)] == [
        ("warn", sh(2026, 11, 24, 5, 12)),
        ("due", sh(2026, 11, 24, 10)),
    ]

    for tier, unit, warn_at, due_at, above in NORMAL_CLIMB:
        item = gl.item(case)
        assert (item.role, unit_code(gl, item), item.due_at) == (tier, unit, due_at)
        handler = item.claimed_by or f"{tier}@{unit}"

        # A microsecond before 80%: nothing.
        notices = gl.types(case).count("supervised")
        assert gl.fire(warn_at - US) == 0
        assert gl.types(case).count("supervised") == notices
        assert gl.item(case).supervised_at is None

        # 80%: a supervision notice, the item stays where it is.
        assert gl.fire(warn_at) == 1
        case = gl.reload(case)
        notice = gl.events(case)[-1]
        assert (notice.type, notice.actor, notice.at) == ("supervised", "system", iso(warn_at))
        assert data(notice) == {
            "tier": tier,
            "due_at": iso(due_at),
            "notify": [handler, "off1", above],
        }
        same = gl.item(case)
        assert (same.id, same.supervised_at, same.completed_at) == (item.id, warn_at, None)
        assert case.tier == tier and case.status == "handling"
        assert [t.kind for t in gl.timers(case)] == ["due"]
        assert gl.fire(due_at - US) == 0

        # 100%: escalated one tier up, with a fresh limit from this instant.
        assert gl.fire(due_at) == 1
        case = gl.reload(case)
        escalated = gl.events(case)[-1]
        assert (escalated.type, escalated.at) == ("escalated", iso(due_at))
        old = gl.session.get(type(item), item.id)
        assert old.cancelled and old.completed_at == due_at and old.completed_by is None
        new = gl.item(case)
        assert new.created_at == due_at
        assert new.role != tier and new.task == "handle"
        assert case.tier == new.role and case.due_at == new.due_at
        assert data(escalated) == {
            "from": tier,
            "tier": new.role,
            "due_at": iso(new.due_at),
            "warn_at": iso(new.warn_at),
        }
        assert (
            gl.types(case).count("escalated")
            == NORMAL_CLIMB.index((tier, unit, warn_at, due_at, above)) + 1
        )

    # At town: 120 working hours from Tuesday 1 December 10:00.
    town = gl.item(case)
    assert (town.role, unit_code(gl, town)) == ("town_leadership", "XDK")
    assert town.due_at == sh(2026, 12, 8, 10)
    assert gl.fire(sh(2026, 12, 7, 10)) == 1
    case = gl.reload(case)
    assert data(gl.events(case)[-1]) == {
        "tier": "town_leadership",
        "due_at": iso(sh(2026, 12, 8, 10)),
        "notify": ["town_leadership@XDK", "off1"],
    }
    assert not case.overdue_marked

    # Town at 100%: nothing above; the case is marked overdue and the item stays open.
    assert gl.fire(sh(2026, 12, 8, 10)) == 1
    case = gl.reload(case)
    last = gl.events(case)[-1]
    assert last.type == "supervised" and data(last)["overdue"] is True
    assert case.overdue_marked is True
    assert (case.status, case.tier) == ("handling", "town_leadership")
    assert gl.item(case).id == town.id
    assert "escalated" not in gl.types(case)[-2:]
    # From its deadline on, a town item is supervised daily until it is resolved.
    assert [(t.kind, t.due_at) for t in gl.timers(case)] == [("due", sh(2026, 12, 9, 10))]

    events = len(gl.events(case))
    assert gl.fire(sh(2026, 12, 30, 10)) == 1  # 22 daily repeats due: one notice, 21 missed
    case = gl.reload(case)
    assert len(gl.events(case)) == events + 1
    assert data(gl.events(case)[-1])["missed"] == 21
    assert [t.due_at for t in gl.timers(case)] == [sh(2026, 12, 31, 10)]
    case = gl.complete("tl1", case, {"outcome": "resolved"})
    assert case.status == "feedback"
    assert sorted(t.name for t in gl.timers(case)) == ["due_feedback", "warn_feedback"]


URGENT_CLIMB = [
    ("district_leader", sh(2026, 11, 23, 13, 12), sh(2026, 11, 23, 14)),
    ("village_secretary", sh(2026, 11, 23, 20, 24), sh(2026, 11, 23, 22)),
    ("town_leadership", sh(2026, 11, 24, 17, 12), sh(2026, 11, 24, 22)),
]


def test_urgent_limits_are_clock_hours_at_every_tier(gl):
    case = gl.accepted(category="dispute", severity="urgent")
    assert case.tier == "district_leader", "urgent cases start with the district leader"
    for tier, warn_at, due_at in URGENT_CLIMB:
        item = gl.item(case)
        assert (item.role, item.due_at) == (tier, due_at)
        assert [t.due_at for t in gl.timers(case)] == [warn_at, due_at]
        assert gl.fire(warn_at) == 1
        assert gl.fire(due_at) == 1
        case = gl.reload(case)
        types = gl.types(case)
        assert types[-2] == "supervised"
        assert types[-1] == ("supervised" if tier == "town_leadership" else "escalated")
    assert case.overdue_marked and case.tier == "town_leadership"


def test_urgent_safety_hazard_starts_with_the_village_secretary(gl):
    case = gl.accepted(category="safety_hazard", severity="urgent")
    item = gl.item(case)
    assert (case.tier, item.role, unit_code(gl, item)) == (
        "village_secretary",
        "village_secretary",
        "V01",
    )
    assert item.due_at == START + timedelta(hours=8)


def test_low_and_normal_cases_start_with_the_grid_leader(gl):
    for severity in ("low", "normal"):
        case = gl.accepted(category="safety_hazard", severity=severity)
        assert gl.item(case).role == "grid_leader"
        assert gl.item(case).due_at == sh(2026, 11, 24, 10)


def test_a_weekend_stretches_a_working_time_limit(gl):
    gl.clock.set(sh(2026, 11, 27, 15))  # Friday afternoon
    case = gl.accepted()
    item = gl.item(case)
    # 9 hours left on Friday, then Monday's first 15.
    assert item.due_at == sh(2026, 11, 30, 15)
    assert [t.due_at for t in gl.timers(case)] == [sh(2026, 11, 30, 10, 12), item.due_at]
    assert gl.fire(sh(2026, 11, 28, 15)) == 0
    assert gl.fire(sh(2026, 11, 29, 23, 59)) == 0
    assert gl.reload(case).tier == "grid_leader"
    assert gl.types(case)[-1] == "task_completed"


def test_a_case_accepted_on_saturday_starts_counting_on_monday(gl):
    gl.clock.set(sh(2026, 11, 28, 10))
    case = gl.accepted()
    assert gl.item(case).due_at == sh(2026, 12, 1, 0)


def test_urgent_cases_do_not_wait_for_monday(gl):
    gl.clock.set(sh(2026, 11, 27, 15))  # Friday afternoon
    urgent = gl.accepted(category="dispute", severity="urgent")
    hazard = gl.accepted(category="safety_hazard", severity="urgent")
    assert gl.item(urgent).due_at == sh(2026, 11, 27, 19)
    assert gl.item(hazard).due_at == sh(2026, 11, 27, 23)
    # Saturday morning: both escalated overnight, without waiting for a working day.
    assert gl.fire(sh(2026, 11, 28, 9)) == 2
    assert gl.reload(urgent).tier == "village_secretary"
    assert gl.reload(hazard).tier == "town_leadership"
    assert gl.item(urgent).due_at == sh(2026, 11, 28, 17)
    assert gl.item(hazard).due_at == sh(2026, 11, 29, 9)


def test_national_day_holidays_stretch_a_limit(gl):
    gl.clock.set(sh(2026, 9, 30, 10))  # the Wednesday before the National Day week
    case = gl.accepted()
    assert gl.item(case).due_at == sh(2026, 10, 8, 10)


def test_holidays_entered_by_an_administrator_count(gl):
    import_calendar(gl.session, {"year": 2026, "holidays": ["2026-11-24"], "workdays": []})
    gl.session.commit()
    case = gl.accepted()
    assert gl.item(case).due_at == sh(2026, 11, 25, 10)
    assert data(gl.last(case, "task_completed"))["due_at"] == iso(sh(2026, 11, 25, 10))


def test_a_resolved_case_leaves_no_handling_timers_behind(gl):
    """Resolving ends the handle item's timers; only the feedback item's own two remain, and
    when they fire they supervise the visit back without moving the case to another tier."""
    case = gl.accepted()
    assert gl.fire(sh(2026, 11, 24, 5, 12)) == 1
    case = gl.complete("gl1", case, {"outcome": "resolved"})
    assert sorted((t.kind, t.name) for t in gl.timers(case)) == [
        ("due", "due_feedback"),
        ("warn", "warn_feedback"),
    ]
    assert gl.fire(sh(2026, 12, 24, 10)) == 1
    case = gl.reload(case)
    assert (case.status, case.tier) == ("feedback", "grid_leader")
    assert "escalated" not in gl.types(case)


@pytest.mark.parametrize("clock_behind", [True, False])
def test_fire_as_of_a_late_instant_moves_one_tier_with_a_limit_from_then(gl, clock_behind):
    case = gl.accepted()
    late = sh(2026, 12, 7, 10)  # two weeks on: past the grid's and any district deadline
    if not clock_behind:
        gl.clock.set(late + timedelta(hours=5))
    before = len(gl.events(case))
    assert gl.runtime.fire_due_timers(gl.session, as_of=late) == 1
    case = gl.reload(case)
    fired = gl.events(case)[before:]
    assert [e.type for e in fired] == ["supervised", "escalated"]
    assert {e.at for e in fired} == {iso(late)}
    assert data(fired[0])["due_at"] == iso(sh(2026, 11, 24, 10))
    assert data(fired[1]) == {
        "from": "grid_leader",
        "tier": "district_leader",
        "due_at": iso(sh(2026, 12, 9, 10)),
        "warn_at": iso(sh(2026, 12, 9, 0, 24)),  # 80% of 48 working hours: 38.4 h
    }
    assert case.tier == "district_leader"
    item = gl.item(case)
    assert (item.role, item.created_at, item.due_at) == (
        "district_leader",
        late,
        sh(2026, 12, 9, 10),
    )
    assert min(t.due_at for t in gl.timers(case)) > late

    # Again as of the same instant: nothing is due any more, the case stays one tier up.
    assert gl.runtime.fire_due_timers(gl.session, as_of=late) == 0
    assert gl.reload(case).tier == "district_leader"
    assert len(gl.events(case)) == before + 2

    # A later catch-up moves it one more tier, from its own instant.
    later = sh(2026, 12, 31, 10)
    assert gl.runtime.fire_due_timers(gl.session, as_of=later) == 1
    case = gl.reload(case)
    assert case.tier == "village_secretary"
    assert gl.item(case).created_at == later


def test_fire_as_of_moves_each_due_case_once(gl):
    a = gl.accepted()
    b = gl.accepted("off2", grid="V01-D1-G02")
    c = gl.accepted("off3", grid="V02-D1-G01")
    gl.clock.advance(hours=23)
    fresh = gl.accepted("off4", grid="V02-D1-G02")  # due a day later than the others
    assert gl.runtime.fire_due_timers(gl.session, as_of=sh(2026, 11, 24, 12)) == 3
    assert [gl.reload(x).tier for x in (a, b, c, fresh)] == [
        "district_leader",
        "district_leader",
        "district_leader",
        "grid_leader",
    ]
    assert gl.types(fresh)[-1] == "task_completed"


def test_a_firing_keeps_warm_only_the_cases_this_process_was_working_on(gl):
    """A worker draining a burst of timers must not fill its memory with workflows nobody there
    works on (every garbage collection walks them); a process that held a case keeps it."""
    a = gl.accepted()
    b = gl.accepted("off2", grid="V01-D1-G02")
    gl.clock.advance(hours=30)
    assert gl.runtime.fire_due_timers(gl.session) == 2  # climbed to the district leaders
    held = {case_id: version for case_id, (version, _wf) in gl.runtime._hot.items()}
    assert held == {a.id: gl.reload(a).version, b.id: gl.reload(b).version}

    worker = Runtime(gl.clock, gl.runtime.registry)
    gl.clock.advance(days=3)
    assert worker.fire_due_timers(gl.session) == 2
    assert [gl.reload(x).tier for x in (a, b)] == ["village_secretary", "village_secretary"]
    assert len(worker._hot) == 0


def test_a_firing_never_leaves_an_older_workflow_in_the_cache(gl):
    """The web process's ticker fires a case it did not hold while a request thread of the same
    process caches the case at the version the firing read (its step committed just before). The
    firing must not leave that older workflow under its own new version: the next step would
    run on it and write it back, and the escalation would be lost."""
    case = gl.accepted()
    gl.runtime._hot.clear()  # not held here (evicted, or stepped on another server)
    load = gl.runtime._load

    def load_while_another_thread_caches(session, row, stored=None):
        workflow = load(session, row, stored)
        older = gl.runtime.serializer.deserialize_json(stored or projection.blob(session, row.id))
        gl.runtime._hot[row.id] = (row.version, older)  # the request thread's _remember
        return workflow

    gl.runtime._load = load_while_another_thread_caches
    gl.clock.advance(hours=30)
    assert gl.runtime.fire_due_timers(gl.session) == 1
    gl.runtime._load = load
    assert gl.reload(case).tier == "district_leader"
    assert case.id not in gl.runtime._hot

    gl.clock.advance(days=3)  # the district leader's limit runs out too
    assert gl.runtime.fire_due_timers(gl.session) == 1
    assert gl.reload(case).tier == "village_secretary"


def test_every_step_that_starts_a_limit_records_its_deadline(gl):
    """Replay must not depend on calendar data that changes later: each step that starts a limit
    records the deadline, its 80% instant and the tier it computed. Every user task has one."""
    case = gl.open("off1")  # opening starts accept's limit
    case = gl.complete("off1", case, ACCEPT_NORMAL)  # accept starts the grid's handling limit
    gl.clock.advance(hours=1)
    case = gl.complete("gl1", case, {"outcome": "refer_up", "note": "片长协调"})
    gl.fire(gl.item(case).due_at)  # escalation starts the village limit
    case = gl.reload(case)
    gl.clock.advance(hours=2)
    case = gl.complete("vs1", case, {"outcome": "resolved"})
    case = gl.complete("off1", case, {"satisfaction": "unsatisfied", "note": "不满意"})  # reopen
    case = gl.complete("vs1", case, {"outcome": "resolved"})
    case = gl.complete("off1", case, {"satisfaction": "satisfied"})
    case = gl.complete("vs1", case, {"summary": "办结"})
    gl.clock.advance(hours=1)
    case = gl.complete("tl1", case, {"approved": False, "note": "退回"})  # returned review
    assert case.status == "handling"

    items = sorted(gl.all_items(case), key=lambda i: i.id)
    assert [i.task for i in items] == [
        "accept",
        "handle",
        "handle",
        "handle",
        "feedback",
        "handle",
        "feedback",
        "report",
        "review",
        "handle",
    ]
    assert all(i.due_at is not None and i.warn_at is not None for i in items)
    starting = [e for e in gl.events(case) if "due_at" in data(e) and e.type != "supervised"]
    assert [(e.type, e.task) for e in starting] == [
        ("opened", None),
        ("task_completed", "accept"),
        ("task_completed", "handle"),
        ("escalated", None),
        ("task_completed", "handle"),
        ("reopened", None),
        ("task_completed", "handle"),
        ("task_completed", "feedback"),
        ("task_completed", "report"),
        ("task_completed", "review"),
    ]
    for event, item in zip(starting, items, strict=True):
        assert data(event)["due_at"] == iso(item.due_at)
        assert data(event)["warn_at"] == iso(item.warn_at)
        assert data(event)["tier"] == item.role
        assert event.at == iso(item.created_at)


def _at_town(gl):
    """An urgent safety hazard starts at the village (8 clock hours); refer it up to the town,
    whose urgent limit is 24 clock hours."""
    case = gl.accepted(category="safety_hazard", severity="urgent")
    case = gl.complete("vs1", case, {"outcome": "refer_up", "note": "需镇里协调"})
    assert case.tier == "town_leadership"
    return case


def test_a_town_item_is_supervised_daily_for_60_days_and_then_still_runs_to_the_end(gl):
    case = _at_town(gl)
    deadline = gl.item(case).due_at
    assert deadline == START + timedelta(hours=24)
    for day in range(61):  # the deadline itself, then 60 daily repeats
        assert gl.fire(deadline + timedelta(days=day)) == 1
    case = gl.reload(case)
    supervised = [data(e) for e in gl.events(case) if e.type == "supervised"]
    overdue = [d for d in supervised if d.get("overdue")]
    assert len(overdue) == 61 and all(d["missed"] == 0 for d in overdue)
    assert gl.item(case).supervised_at == deadline + timedelta(days=60)

    # SpiffWorkflow's task iterator stops at depth 1000; daily repeats must not get near it.
    case = gl.complete("tl1", case, {"outcome": "resolved", "note": "已协调解决"})
    case = gl.complete("off1", case, {"satisfaction": "satisfied"})
    case = gl.complete("tl1", case, {"summary": "已办结"})
    # V01's only liaison leader resolved it: another town leader reviews (DESIGN §2.5).
    case = gl.complete("tl2", case, {"approved": True})
    assert case.status == "archived"


def test_a_catch_up_run_ten_days_late_records_one_supervision_with_ten_missed(gl):
    case = _at_town(gl)
    deadline = gl.item(case).due_at
    assert gl.fire(deadline) == 1  # at the deadline: overdue, first notice
    before = len(gl.events(gl.reload(case)))

    late = deadline + timedelta(days=11)  # the repeats of days 1..11 are all due
    assert gl.fire(late) == 1
    case = gl.reload(case)
    new = gl.events(case)[before:]
    assert [e.type for e in new] == ["supervised"]
    assert data(new[0])["missed"] == 10 and data(new[0])["overdue"] is True
    assert [t.due_at for t in gl.timers(case)] == [deadline + timedelta(days=12)]
    assert gl.fire(late) == 0  # the same run again finds nothing due
