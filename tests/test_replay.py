"""Replay (DESIGN §6): every case, whatever path it took, rebuilds from its pinned diagram version
and its events alone to the state that is stored; an altered event is named by its seq."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import timedelta

import pytest
from conftest import ACCEPT_NORMAL
from sqlalchemy import select, update

from engine.events import verify
from engine.models import Case, CaseEvent, WorkItem
from engine.replay import replay

PEOPLE = "off1 off1b off2 off3 off4 gl1 gl2 gl3 gl4 dl1 dl2 vs1 vs2 tl1 tl2".split()
GRIDS = ("V01-D1-G01", "V01-D1-G02", "V02-D1-G01", "V02-D1-G02")
OFFICER = {"V01-D1-G01": "off1", "V01-D1-G02": "off2", "V02-D1-G01": "off3", "V02-D1-G02": "off4"}


def _form(task: str, spec: str, rng: random.Random) -> dict:
    if task == "accept":
        if rng.random() < 0.08:
            return {"valid": False, "note": "不属实"}
        return {
            **ACCEPT_NORMAL,
            "category": rng.choice(["resident_request", "dispute", "safety_hazard"]),
            "severity": rng.choice(["low", "normal", "urgent"]),
        }
    if task == "handle":
        if spec == "handle_town":
            return {"outcome": "resolved", "note": "镇里协调"}
        return {"outcome": rng.choice(["resolved", "resolved", "refer_up"]), "note": "处理情况"}
    if task == "feedback":
        satisfaction = rng.choice(["satisfied", "basically_satisfied", "unsatisfied"])
        return {"satisfaction": satisfaction, "note": "群众不满意，重新办理"}
    if task == "report":
        return {"summary": "已办结"}
    return {"approved": rng.random() < 0.8, "note": "审核"}


def _who(gl, item: WorkItem) -> str | None:
    for name in PEOPLE:
        if any(i.id == item.id for i in gl.inbox(name)):
            return name
    return None


def _walk(gl, rng: random.Random, case: Case, steps: int | None = None) -> None:
    """Take one case along a random path: work, claims, releases, transfers, and time passing
    so that supervisions, escalations and town-level overdue marks happen on the way. At most
    `steps` steps; unless told, some cases stop early, still running."""
    if steps is None:
        steps = rng.randint(1, 6) if rng.random() < 0.2 else 40
    for _ in range(steps):
        case = gl.reload(case)
        items = gl.items(case)
        if not items:
            return
        item = items[0]
        roll = rng.random()
        if roll < 0.2 and item.due_at is not None:  # time passes: 80% or 100% of the limit
            moment = item.warn_at if roll < 0.08 and item.warn_at else item.due_at
            gl.fire(max(gl.clock.now(), moment + timedelta(minutes=1)))
            continue
        who = item.assignee or _who(gl, item)
        if who is None:
            gl.clock.advance(hours=1)
            continue
        viewer = gl.viewer(who)
        if roll < 0.3 and item.claimed_by is None:
            gl.runtime.claim(gl.session, viewer, item.id)
            if rng.random() < 0.3:
                gl.runtime.release(gl.session, viewer, item.id)
            continue
        if roll < 0.34 and item.task == "accept" and case.reopen_count == 0:
            grid = rng.choice([g for g in GRIDS if g != gl.reload(case).grid.code])
            gl.runtime.transfer(gl.session, viewer, item.id, grid, "不属本网格")
            continue
        gl.clock.advance(minutes=rng.randint(5, 300))
        gl.runtime.complete(gl.session, viewer, item.id, _form(item.task, item.spec, rng))


def _make_cases(gl, count: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for n in range(count):
        grid = GRIDS[n % len(GRIDS)]
        officer = OFFICER[grid] if rng.random() < 0.85 else None  # else a resident's report
        case = gl.open(officer, grid, title=f"案件{n}")
        _walk(gl, rng, case)
        cases.append(gl.reload(case))
    return cases


def test_two_hundred_cases_along_every_path_all_replay(gl):
    cases = _make_cases(gl, 200, seed=9)
    paths = Counter()
    for case in cases:
        types = {e.type for e in gl.events(case)}
        paths.update(types)
        paths[case.status] += 1
        if case.reopen_count:
            paths["reopened case"] += 1
        review = [e for e in gl.events(case) if e.task == "review" and e.type == "task_completed"]
        if any(json.loads(e.data).get("approved") is False for e in review):
            paths["returned"] += 1
        if any(
            json.loads(e.data).get("overdue") for e in gl.events(case) if e.type == "supervised"
        ):
            paths["overdue"] += 1
    # The generated cases cover every path the issue names.
    for path in (
        "archived", "rejected", "handling", "escalated", "supervised", "reopened", "transferred",
        "claimed", "released", "returned", "overdue", "reopened case",
    ):  # fmt: skip
        assert paths[path] > 0, (path, paths)
    town_overdue = [
        c for c in cases if any(e.type == "supervised" and e.task == "handle" and
                                json.loads(e.data).get("tier") == "town_leadership"
                                for e in gl.events(c))
    ]  # fmt: skip
    assert town_overdue, "some case is supervised at the town"
    results = {c.number: replay(gl.session, c, gl.runtime.registry) for c in cases}
    bad = {n: r.as_json() for n, r in results.items() if not r.ok}
    assert bad == {}
    assert all(
        r.events_replayed == gl.reload(c).event_seq
        for c, r in zip(cases, results.values(), strict=True)
    )


def test_a_changed_event_is_named_by_verify_and_by_replay(gl):
    (case,) = _make_cases(gl, 1, seed=3)
    case = gl.reload(case)
    assert replay(gl.session, case, gl.runtime.registry).ok
    target = next(e for e in gl.events(case) if e.type == "task_completed")
    data = json.loads(target.data)
    data["note"] = "改过的记录"
    gl.session.execute(
        update(CaseEvent)
        .where(CaseEvent.id == target.id)
        .values(data=json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")))
    )
    gl.session.commit()
    case = gl.reload(case)
    checked = verify(gl.session, case)
    assert (checked.ok, checked.bad_seq) == (False, target.seq)
    result = replay(gl.session, case, gl.runtime.registry)
    assert not result.ok
    assert (result.divergence.seq, result.divergence.field) == (target.seq, "hash")
    assert result.events_replayed == target.seq - 1


def test_a_changed_state_is_named_as_the_field_that_differs(gl):
    case = gl.accepted()
    gl.session.execute(update(Case).where(Case.id == case.id).values(owner="off1b"))
    gl.session.commit()
    result = replay(gl.session, gl.reload(case), gl.runtime.registry)
    assert not result.ok
    d = result.divergence
    assert (d.seq, d.field, d.expected, d.found) == (
        gl.reload(case).event_seq,
        "owner",
        "off1",
        "off1b",
    )


def test_a_missing_work_item_is_found(gl):
    case = gl.accepted()
    item = gl.item(case)
    gl.session.execute(update(WorkItem).where(WorkItem.id == item.id).values(claimed_by="gl2"))
    gl.session.commit()
    result = replay(gl.session, gl.reload(case), gl.runtime.registry)
    assert result.divergence.field == "work_items"


def test_deadlines_recorded_before_a_calendar_change_still_replay(gl, cli_env):
    """An administrator enters a holiday on a day a running case's limit already counted: the
    recorded deadline stands, and the replay uses it."""
    case = gl.accepted()
    due = gl.item(case).due_at
    from engine.models import CalendarYear

    day = due.date().isoformat()
    gl.session.add(CalendarYear(year=due.year, holidays=[day], workdays=[]))
    gl.session.commit()
    result = replay(gl.session, gl.reload(case), gl.runtime.registry)
    assert result.ok, result.as_json()
    assert result.recorded_deadlines >= 1


@pytest.mark.parametrize("frames", [True])
def test_frames_follow_the_events(gl, frames):
    case = gl.accepted()
    result = replay(gl.session, gl.reload(case), gl.runtime.registry, frames=frames)
    assert [f.seq for f in result.frames] == [e.seq for e in gl.events(case)]
    last = result.frames[-1]
    assert last.active == ["handle_grid"]
    assert "accept" in last.done and "dispatch" in last.done
    tables = {d["element"] for f in result.frames for d in f.decisions}
    assert {"intake", "dispatch", "time_limit"} <= tables
    assert gl.session.scalars(select(WorkItem)).first() is not None


def test_steps_taken_through_a_delegation_replay(gl):
    """代理: the delegate acts, the delegator holds; the replay reads both names."""
    from engine import delegation
    from engine.access import viewer_of
    from engine.models import Person

    def person(name):
        return gl.session.scalars(select(Person).where(Person.username == name)).one()

    today = delegation.today(gl.clock.now())
    delegation.create(gl.session, person("gl1"), "dl1", today, today, gl.clock.now())
    gl.session.commit()
    case = gl.accepted()
    cover = viewer_of(gl.session, person("dl1"), gl.clock.now())
    handle = gl.item(case)
    gl.runtime.claim(gl.session, cover, handle.id)
    gl.runtime.release(gl.session, cover, handle.id)
    gl.runtime.claim(gl.session, cover, handle.id)
    assert gl.item(case).claimed_by == "gl1"
    case = gl.runtime.complete(gl.session, cover, handle.id, {"outcome": "resolved"})
    result = replay(gl.session, gl.reload(case), gl.runtime.registry)
    assert result.ok, result.as_json()
    assert json.loads(gl.last(case, "task_completed").data)["on_behalf_of"] == "gl1"


def test_an_event_the_diagram_cannot_run_is_a_divergence_not_an_error(gl):
    """Data altered so that the diagram fails on it (accept without `valid`) is named by seq."""
    case = gl.accepted()
    target = gl.last(case, "task_completed")
    data = {k: v for k, v in json.loads(target.data).items() if k != "valid"}
    gl.session.execute(
        update(CaseEvent)
        .where(CaseEvent.id == target.id)
        .values(data=json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")))
    )
    gl.session.commit()
    result = replay(gl.session, gl.reload(case), gl.runtime.registry)
    assert (result.ok, result.divergence.seq, result.divergence.field) == (
        False,
        target.seq,
        "hash",
    )


def test_an_event_whose_type_was_changed_is_a_divergence_not_an_error(gl):
    """A bookkeeping event made to look like a process event produces nothing when replayed."""
    case = gl.accepted()
    claimed = gl.last(case, "claimed")
    gl.session.execute(
        update(CaseEvent).where(CaseEvent.id == claimed.id).values(type="supervised")
    )
    gl.session.commit()
    result = replay(gl.session, gl.reload(case), gl.runtime.registry)
    assert (result.ok, result.divergence.seq) == (False, claimed.seq)


def test_unreadable_event_data_is_a_divergence_not_an_error(gl):
    case = gl.accepted()
    last = gl.events(case)[-1]
    gl.session.execute(update(CaseEvent).where(CaseEvent.id == last.id).values(data="{not json"))
    gl.session.commit()
    result = replay(gl.session, gl.reload(case), gl.runtime.registry)
    assert (result.ok, result.divergence.seq, result.divergence.found) == (
        False,
        last.seq,
        "unreadable data",
    )
