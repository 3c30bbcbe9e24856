"""Every user task is on the clock (DESIGN §2), not only handling: accept, feedback, report and
review each get a limit from rules/time_limit.dmn. At 80% a `supervised` event tells whoever holds
the item; at 100% a `supervised` event with `overdue: true` tells the tier above the task's lane in
the case's units, the item is overdue from then on, and the case stays where it is: only handling
changes tier. The clock moves; nothing sleeps."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from conftest import ACCEPT_NORMAL, GRID, START

from engine.clock import iso
from engine.deadlines import item_overdue
from engine.inbox import watch_items
from webapp.cli import main

US = timedelta(microseconds=1)
URGENT = {**ACCEPT_NORMAL, "severity": "urgent"}


def data(event) -> dict:
    return json.loads(event.data)


# Each path brings a case to the item under test, from START (Monday 10:00 in Shanghai; Monday to
# Wednesday are working days, so a working-hour limit here is the same span of clock hours).
def at_accept(gl):
    return gl.open("off1", category="resident_request", severity="normal")


def at_accept_urgent(gl):
    return gl.open("off1", category="safety_hazard", severity="urgent")


def at_resident_accept(gl):
    return gl.open(None)  # a resident's case: nobody holds accept yet


def at_feedback(gl):
    case = gl.accepted()
    return gl.complete("gl1", case, {"outcome": "resolved"})


def at_feedback_urgent(gl):
    case = gl.open("off1")
    case = gl.complete("off1", case, URGENT)  # urgent cases start at the district
    return gl.complete("dl1", case, {"outcome": "resolved"})


def at_report(gl):
    case = at_feedback(gl)
    return gl.complete("off1", case, {"satisfaction": "satisfied"})


def at_review(gl):
    case = at_report(gl)
    return gl.complete("gl1", case, {"summary": "已修复"})


def at_town_review(gl):
    """Resolved at town by its liaison leader: another town leader reviews it."""
    case = gl.open("off1")
    case = gl.complete("off1", case, {**URGENT, "category": "safety_hazard"})  # the village
    case = gl.complete("vs1", case, {"outcome": "refer_up", "note": "需镇里协调"})
    case = gl.complete("tl1", case, {"outcome": "resolved"})
    case = gl.complete("off1", case, {"satisfaction": "satisfied"})
    return gl.complete("tl1", case, {"summary": "已办结"})


# (path, task, the item's role, its holder as the 80% notice names it, limit in hours, the tier
# above as the 100% notice names it, the case's status and tier meanwhile)
STEPS = [
    (at_accept, "accept", "info_officer", "off1", 4, f"grid_leader@{GRID}", "accepting", None),
    (
        at_accept_urgent,
        "accept",
        "info_officer",
        "off1",
        1,
        f"grid_leader@{GRID}",
        "accepting",
        None,
    ),
    (
        at_resident_accept,
        "accept",
        "info_officer",
        f"info_officer@{GRID}",
        4,
        f"grid_leader@{GRID}",
        "accepting",
        None,
    ),
    (
        at_feedback,
        "feedback",
        "info_officer",
        "off1",
        24,
        f"grid_leader@{GRID}",
        "feedback",
        "grid_leader",
    ),
    (
        at_feedback_urgent,
        "feedback",
        "info_officer",
        "off1",
        4,
        f"grid_leader@{GRID}",
        "feedback",
        "district_leader",
    ),
    (
        at_report,
        "report",
        "grid_leader",
        f"grid_leader@{GRID}",
        8,
        "district_leader@V01-D1",
        "reporting",
        "grid_leader",
    ),
    (
        at_review,
        "review",
        "district_leader",
        "district_leader@V01-D1",
        16,
        "village_secretary@V01",
        "reporting",
        "grid_leader",
    ),
    (
        at_town_review,
        "review",
        "town_leadership",
        "town_leadership@XDK",
        4,
        "town_leadership@XDK",
        "reporting",
        "town_leadership",
    ),
]


@pytest.mark.parametrize(
    ("path", "task", "role", "holder", "hours", "above", "status", "tier"),
    STEPS,
    ids=[
        "accept",
        "accept-urgent",
        "resident-accept",
        "feedback",
        "feedback-urgent",
        "report",
        "review",
        "town-review",
    ],
)
def test_an_item_is_supervised_at_80_and_overdue_at_100_without_changing_tier(
    gl, path, task, role, holder, hours, above, status, tier
):
    case = path(gl)
    item = gl.item(case)
    assert (item.task, item.role) == (task, role)

    # The limit comes from the table and the event that made the item ready records it.
    assert item.due_at == item.created_at + timedelta(hours=hours)
    assert item.warn_at == item.created_at + timedelta(hours=hours * 0.8)
    assert gl.reload(case).due_at == item.due_at
    made = [e for e in gl.events(case) if data(e).get("due_at") == iso(item.due_at)][-1]
    assert (data(made)["warn_at"], data(made)["tier"]) == (iso(item.warn_at), role)
    assert sorted(t.kind for t in gl.timers(case)) == ["due", "warn"]

    # 80%: the holder is told; the item is not overdue yet.
    assert gl.fire(item.warn_at - US) == 0
    assert gl.fire(item.warn_at) == 1
    case = gl.reload(case)
    warned = gl.events(case)[-1]
    assert (warned.type, warned.task, warned.at) == ("supervised", task, iso(item.warn_at))
    assert data(warned) == {"tier": role, "due_at": iso(item.due_at), "notify": [holder]}
    assert not item_overdue(gl.item(case), gl.clock.now())

    # 100%: the tier above is told, the item is overdue, the case stays at its tier and status.
    assert gl.fire(item.due_at) == 1
    case = gl.reload(case)
    due = gl.events(case)[-1]
    assert (due.type, due.task, due.at) == ("supervised", task, iso(item.due_at))
    assert data(due) == {
        "tier": role,
        "due_at": iso(item.due_at),
        "overdue": True,
        "notify": [above],
    }
    same = gl.item(case)
    assert same.id == item.id and item_overdue(same, gl.clock.now())
    assert (case.status, case.tier) == (status, tier)
    assert "escalated" not in gl.types(case)
    assert not case.overdue_marked  # marking the whole case overdue is the town's handling rule
    assert gl.timers(case) == []  # nothing repeats
    assert gl.fire(item.due_at + timedelta(days=30)) == 0


def test_the_tier_above_finds_an_overdue_accept_on_its_supervision_list(gl):
    """The grid leader does not hold accept, but once it is overdue it is on their 督办 list;
    the officer who holds it sees it in the inbox, overdue."""
    case = at_accept(gl)
    item = gl.item(case)
    assert [i.id for i in watch_items(gl.session, gl.viewer("gl1"))] == []
    gl.fire(item.warn_at)
    assert [i.id for i in watch_items(gl.session, gl.viewer("gl1"))] == []  # 80%: the holder only
    gl.fire(item.due_at)
    assert [i.id for i in watch_items(gl.session, gl.viewer("gl1"))] == [item.id]
    assert [i.id for i in watch_items(gl.session, gl.viewer("dl1"))] == []
    (mine,) = gl.inbox("off1")
    assert mine.id == item.id and item_overdue(mine, gl.clock.now())


def test_accepting_late_still_starts_the_handling_limit_from_then(gl):
    """An overdue accept is only supervised: accepting it afterwards dispatches as usual."""
    case = at_accept(gl)
    accept = gl.item(case)
    gl.fire(accept.due_at + timedelta(hours=1))
    case = gl.complete("off1", case, ACCEPT_NORMAL)
    handle = gl.item(case)
    assert (case.status, case.tier, handle.task) == ("handling", "grid_leader", "handle")
    assert handle.created_at == START + timedelta(hours=5)
    assert handle.due_at == handle.created_at + timedelta(hours=24)
    assert sorted(t.name for t in gl.timers(case)) == ["due_grid", "warn_grid"]


def test_timers_fire_due_supervises_an_accept_past_80_and_100_percent(gl, cli_env):
    """The catch-up command, as an operator runs it after downtime, moves an overdue accept the
    same way: two notices, the second overdue to the grid leader, and no change of tier."""
    case = at_accept(gl)
    item = gl.item(case)
    gl.session.commit()
    warned = cli_env.invoke(main, ["timers", "fire-due", "--as-of", iso(item.warn_at)])
    assert warned.exit_code == 0, warned.output
    overdue = cli_env.invoke(main, ["timers", "fire-due", "--as-of", iso(item.due_at)])
    assert overdue.exit_code == 0, overdue.output
    case = gl.reload(case)
    notices = [data(e) for e in gl.events(case) if e.type == "supervised"]
    assert [n.get("overdue", False) for n in notices] == [False, True]
    assert notices[1]["notify"] == [f"grid_leader@{GRID}"]
    assert (case.status, case.tier) == ("accepting", None)
