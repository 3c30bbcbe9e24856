"""The case loop as its users live it: accept, handle, feedback, report, review, archive — who holds
what at each step, who may act, and what bad input does (nothing)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from conftest import ACCEPT_NORMAL, GRID, START
from sqlalchemy import select

from engine.access import can_see_case
from engine.errors import Conflict, Forbidden, Invalid, NotFound
from engine.models import Unit

TUE_10 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # Monday 10:00 + 24 working hours


def unit_code(gl, item) -> str:
    return gl.session.get(Unit, item.unit_id).code


# ------------------------------------------------------------------ the whole loop


def test_officer_takes_a_case_through_the_whole_loop(gl):
    case = gl.open("off1", title="路灯坏了", category="resident_request", severity="normal")
    assert case.number == "XDK-2026-000001"
    assert (case.status, case.tier, case.owner, case.closed_at) == ("accepting", None, None, None)
    accept = gl.item(case)
    assert (accept.task, accept.role, unit_code(gl, accept)) == ("accept", "info_officer", GRID)
    assert accept.claimed_by == "off1", "the opening officer holds the accept item at once"
    assert gl.types(case) == ["opened", "claimed"]
    # Accept is on the clock too: 4 working hours from Monday 10:00, supervised at 80%.
    assert (accept.warn_at, accept.due_at) == (
        TUE_10 - timedelta(hours=20, minutes=48),
        TUE_10 - timedelta(hours=20),
    )
    assert case.due_at == accept.due_at

    gl.clock.advance(minutes=5)
    case = gl.complete("off1", case, ACCEPT_NORMAL)
    assert (case.status, case.tier, case.owner) == ("handling", "grid_leader", "off1")
    handle = gl.item(case)
    assert (handle.task, handle.role, unit_code(gl, handle)) == ("handle", "grid_leader", GRID)
    assert handle.claimed_by is None
    assert handle.due_at == TUE_10 + timedelta(minutes=5)
    assert case.due_at == handle.due_at

    gl.clock.advance(hours=1)
    item = gl.runtime.claim(gl.session, gl.viewer("gl1"), handle.id)
    assert item.claimed_by == "gl1", "the holder of the handle item"
    assert gl.types(case)[-1] == "claimed"

    gl.clock.advance(hours=2)
    case = gl.complete("gl1", case, {"outcome": "resolved", "note": "换了灯泡"})
    assert (case.status, case.tier, case.owner) == ("feedback", "grid_leader", "off1")
    feedback = gl.item(case)
    assert (feedback.task, feedback.assignee) == ("feedback", "off1")
    # The owner's visit back: 24 working hours from Monday 13:05, so Tuesday 13:05.
    assert feedback.due_at == TUE_10 + timedelta(hours=3, minutes=5) == case.due_at
    assert feedback.warn_at == feedback.created_at + timedelta(hours=19, minutes=12)

    case = gl.complete("off1", case, {"satisfaction": "satisfied"})
    assert (case.status, case.tier, case.satisfaction) == ("reporting", "grid_leader", "satisfied")
    report = gl.item(case)
    assert (report.task, report.role, unit_code(gl, report)) == ("report", "grid_leader", GRID)

    case = gl.complete("gl1", case, {"summary": "已修复"})
    assert case.status == "reporting"
    review = gl.item(case)
    assert (review.task, review.role, unit_code(gl, review)) == (
        "review",
        "district_leader",
        "V01-D1",
    )

    gl.clock.advance(hours=1)
    case = gl.complete("dl1", case, {"approved": True, "note": "同意归档"})
    assert case.status == "archived"
    assert case.closed_at == gl.clock.now()
    assert case.owner == "off1" and case.tier == "grid_leader"
    assert gl.items(case) == []
    assert gl.timers(case) == []
    assert gl.types(case) == [
        "opened",
        "claimed",
        "task_completed",
        "claimed",
        "task_completed",
        "task_completed",
        "task_completed",
        "task_completed",
        "archived",
    ]
    done = [(i.task, i.completed_by, i.cancelled) for i in gl.all_items(case)]
    assert done == [
        ("accept", "off1", False),
        ("handle", "gl1", False),
        ("feedback", "off1", False),
        ("report", "gl1", False),
        ("review", "dl1", False),
    ]


def test_archived_case_is_frozen(gl):
    case = gl.accepted()
    case = gl.complete("gl1", case, {"outcome": "resolved"})
    case = gl.complete("off1", case, {"satisfaction": "basically_satisfied"})
    case = gl.complete("gl1", case, {"summary": "ok"})
    review = gl.item(case)
    case = gl.complete("dl1", case, {"approved": True})
    events = len(gl.events(case))
    with pytest.raises(Conflict):
        gl.runtime.complete(gl.session, gl.viewer("dl1"), review.id, {"approved": True})
    with pytest.raises(Conflict):
        gl.runtime.claim(gl.session, gl.viewer("dl1"), review.id)
    gl.clock.advance(days=30)
    assert gl.runtime.fire_due_timers(gl.session) == 0
    case = gl.reload(case)
    assert case.status == "archived"
    assert len(gl.events(case)) == events and gl.types(case)[-1] == "archived"


def test_opening_prefills_but_never_completes_accept(gl):
    case = gl.open("off1", category="dispute", severity="urgent")
    assert case.status == "accepting"
    assert gl.item(case).task == "accept"
    assert json.loads(gl.events(case)[0].data)["category"] == "dispute"


def test_officer_cannot_open_a_case_in_another_grid(gl):
    with pytest.raises(Invalid) as err:
        gl.open("off2", grid=GRID)
    assert "grid" in err.value.fields
    with pytest.raises(Invalid):
        gl.open(None, grid="NOPE")
    assert gl.counts()["case"] == 0


# ------------------------------------------------------------------ resident intake


def test_resident_case_waits_unclaimed_and_whoever_accepts_owns_it(gl):
    case = gl.open(None, title="邻里噪音")
    assert case.status == "accepting" and case.owner is None
    accept = gl.item(case)
    assert accept.claimed_by is None
    assert gl.events(case)[0].actor == "system"
    assert gl.types(case) == ["opened"]

    assert [i.id for i in gl.inbox("off1")] == [accept.id]
    assert [i.id for i in gl.inbox("off1b")] == [accept.id]
    for outsider in ("off2", "gl1", "dl1", "tl1", "aud", "off3"):
        assert gl.inbox(outsider) == [], outsider

    case = gl.complete("off1b", case, ACCEPT_NORMAL)
    assert case.owner == "off1b"
    accept = gl.all_items(case)[0]
    assert (accept.claimed_by, accept.completed_by) == ("off1b", "off1b")
    assert gl.types(case) == ["opened", "task_completed"], "completion records no claim"
    assert gl.inbox("off1") == [] and gl.inbox("off1b") == []
    assert [i.task for i in gl.inbox("gl1")] == ["handle"]

    case = gl.complete("gl1", case, {"outcome": "resolved"})
    feedback = gl.item(case)
    assert feedback.assignee == "off1b"
    assert [i.id for i in gl.inbox("off1b")] == [feedback.id]
    assert gl.inbox("off1") == [], "owner tasks are the owner's alone"
    with pytest.raises((Forbidden, NotFound)):
        gl.runtime.complete(
            gl.session, gl.viewer("off1"), feedback.id, {"satisfaction": "satisfied"}
        )
    case = gl.complete("off1b", case, {"satisfaction": "satisfied"})
    assert case.status == "reporting"


# ------------------------------------------------------------------ refer up


def test_refer_up_climbs_every_tier_and_stops_at_town(gl):
    case = gl.accepted()
    climb = [
        ("gl1", "district_leader", "V01-D1"),
        ("dl1", "village_secretary", "V01"),
        ("vs1", "town_leadership", "XDK"),
    ]
    for actor, tier, unit in climb:
        gl.clock.advance(hours=1)
        case = gl.complete(actor, case, {"outcome": "refer_up", "note": "超出权限"})
        item = gl.item(case)
        assert (case.status, case.tier) == ("handling", tier)
        assert (item.task, item.role, unit_code(gl, item)) == ("handle", tier, unit)
        assert item.created_at == gl.clock.now()
    cancelled = [i for i in gl.all_items(case) if i.cancelled]
    assert cancelled == [], "referring up completes items, it cancels none"

    town_item = gl.item(case)
    version, events = case.version, len(gl.events(case))
    with pytest.raises(Invalid) as err:
        gl.complete("tl1", case, {"outcome": "refer_up", "note": "再上报"})
    assert "outcome" in err.value.fields
    case = gl.reload(case)
    assert (case.version, case.status, case.tier) == (version, "handling", "town_leadership")
    assert len(gl.events(case)) == events
    assert gl.item(case).id == town_item.id and town_item.completed_at is None


def test_refer_up_needs_a_note(gl):
    case = gl.accepted()
    with pytest.raises(Invalid) as err:
        gl.complete("gl1", case, {"outcome": "refer_up"})
    assert set(err.value.fields) == {"note"}
    with pytest.raises(Invalid) as err:
        gl.complete("gl1", case, {"outcome": "refer_up", "note": "   "})
    assert set(err.value.fields) == {"note"}
    assert gl.reload(case).tier == "grid_leader"


# ------------------------------------------------------------------ feedback and review


def test_unsatisfied_reopens_at_same_tier_then_one_tier_up(gl):
    case = gl.accepted()
    case = gl.complete("gl1", case, {"outcome": "resolved"})
    gl.clock.advance(hours=3)
    case = gl.complete("off1", case, {"satisfaction": "unsatisfied", "note": "灯还是不亮"})
    assert (case.status, case.tier, case.reopen_count) == ("handling", "grid_leader", 1)
    reopened = gl.last(case, "reopened")
    assert json.loads(reopened.data)["reopen_count"] == 1
    handle = gl.item(case)
    assert (handle.role, unit_code(gl, handle)) == ("grid_leader", GRID)
    assert handle.due_at == TUE_10 + timedelta(hours=3), "a fresh limit from the reopening"

    case = gl.complete("gl1", case, {"outcome": "resolved"})
    case = gl.complete("off1", case, {"satisfaction": "unsatisfied", "note": "仍不满意"})
    assert (case.status, case.tier, case.reopen_count) == ("handling", "district_leader", 2)
    reopened = [json.loads(e.data)["reopen_count"] for e in gl.events(case) if e.type == "reopened"]
    assert reopened == [1, 2]
    handle = gl.item(case)
    assert (handle.role, unit_code(gl, handle)) == ("district_leader", "V01-D1")

    case = gl.complete("dl1", case, {"outcome": "resolved"})
    case = gl.complete("off1", case, {"satisfaction": "satisfied"})
    report = gl.item(case)
    assert (report.task, report.role) == ("report", "district_leader")
    case = gl.complete("dl1", case, {"summary": "片长办结"})
    assert gl.item(case).role == "village_secretary"
    case = gl.complete("vs1", case, {"approved": True})
    assert (case.status, case.reopen_count) == ("archived", 2)


def test_unsatisfied_needs_a_note(gl):
    case = gl.accepted()
    case = gl.complete("gl1", case, {"outcome": "resolved"})
    with pytest.raises(Invalid) as err:
        gl.complete("off1", case, {"satisfaction": "unsatisfied"})
    assert set(err.value.fields) == {"note"}
    assert gl.reload(case).status == "feedback"


def test_second_unsatisfied_at_town_stays_at_town_marked_overdue(gl):
    case = gl.accepted()
    for actor in ("gl1", "dl1", "vs1"):
        case = gl.complete(actor, case, {"outcome": "refer_up", "note": "上报"})
    for round_ in (1, 2):
        case = gl.complete("tl1", case, {"outcome": "resolved"})
        case = gl.complete("off1", case, {"satisfaction": "unsatisfied", "note": "不满意"})
        assert (case.tier, case.reopen_count) == ("town_leadership", round_)
        assert gl.item(case).role == "town_leadership"
    assert case.overdue_marked is True


def test_returned_review_goes_back_to_the_resolving_tier_and_through_feedback(gl):
    case = gl.accepted()
    case = gl.complete("gl1", case, {"outcome": "refer_up", "note": "需要片长"})
    case = gl.complete("dl1", case, {"outcome": "resolved"})
    case = gl.complete("off1", case, {"satisfaction": "satisfied"})
    case = gl.complete("dl1", case, {"summary": "片长办结"})
    review = gl.item(case)
    assert (review.role, unit_code(gl, review)) == ("village_secretary", "V01")

    gl.clock.advance(hours=2)
    case = gl.complete("vs1", case, {"approved": False, "note": "材料不全"})
    assert (case.status, case.tier) == ("handling", "district_leader")
    handle = gl.item(case)
    assert (handle.task, handle.role) == ("handle", "district_leader")
    assert handle.created_at == gl.clock.now()
    assert handle.due_at > gl.clock.now()
    assert case.reopen_count == 0, "a returned review is not a reopening"

    case = gl.complete("dl1", case, {"outcome": "resolved", "note": "补齐材料"})
    assert case.status == "feedback" and gl.item(case).assignee == "off1"
    case = gl.complete("off1", case, {"satisfaction": "satisfied"})
    case = gl.complete("dl1", case, {"summary": "补充后办结"})
    case = gl.complete("vs1", case, {"approved": True})
    assert case.status == "archived"
    tasks = [(i.task, i.role) for i in gl.all_items(case)]
    assert tasks.count(("feedback", "info_officer")) == 2
    assert tasks.count(("review", "village_secretary")) == 2


def test_town_review_is_done_by_another_town_leader(gl):
    # V02 has no liaison leader: both town leaders see its town items.
    case = gl.accepted("off3", grid="V02-D1-G01")
    for actor in ("gl3", "dl2", "vs2"):
        case = gl.complete(actor, case, {"outcome": "refer_up", "note": "上报"})
    handle = gl.item(case)
    assert {i.id for i in gl.inbox("tl1")} == {i.id for i in gl.inbox("tl2")} == {handle.id}
    case = gl.complete("tl1", case, {"outcome": "resolved"})
    case = gl.complete("off3", case, {"satisfaction": "satisfied"})
    case = gl.complete("tl1", case, {"summary": "镇级办结"})
    review = gl.item(case)
    assert review.excluded == "tl1"
    assert gl.inbox("tl1") == []
    assert [i.id for i in gl.inbox("tl2")] == [review.id]
    with pytest.raises((Forbidden, NotFound)):
        gl.runtime.complete(gl.session, gl.viewer("tl1"), review.id, {"approved": True})
    case = gl.complete("tl2", case, {"approved": True})
    assert case.status == "archived"


def test_a_liaison_leaders_own_town_case_is_reviewed_by_another_town_leader(gl):
    """V01's only liaison leader tl1 resolves and reports at town: the review goes to the other
    town leaders, not back to tl1 (DESIGN §2.5: "a town leader other than the resolver where
    there is one"); tl1 can neither see nor complete it."""
    case = gl.accepted()
    for actor in ("gl1", "dl1", "vs1"):
        case = gl.complete(actor, case, {"outcome": "refer_up", "note": "上报"})
    assert gl.inbox("tl2") == []  # the village's town items are its liaison leader's
    case = gl.complete("tl1", case, {"outcome": "resolved"})
    case = gl.complete("off1", case, {"satisfaction": "satisfied"})
    case = gl.complete("tl1", case, {"summary": "镇级办结"})
    review = gl.item(case)
    assert (review.task, review.excluded) == ("review", "tl1")
    assert gl.inbox("tl1") == []
    assert [i.id for i in gl.inbox("tl2")] == [review.id]
    # The administrators' coverage check agrees that someone sees it (its liaison subqueries
    # once lost their tie to the item, two levels down, and called it seen by nobody).
    from engine.coverage import flagged_items

    assert flagged_items(gl.session) == ([], 0, 0)
    with pytest.raises((Forbidden, NotFound)):
        gl.runtime.complete(gl.session, gl.viewer("tl1"), review.id, {"approved": True})
    case = gl.complete("tl2", case, {"approved": True})
    assert case.status == "archived"


def test_a_sole_town_leader_reviews_their_own_case(gl):
    """With no other town leader, the resolver reviews: someone must."""
    from sqlalchemy import update

    from engine.models import Person

    gl.session.execute(update(Person).where(Person.username == "tl2").values(active=False))
    gl.session.commit()
    case = gl.accepted()
    for actor in ("gl1", "dl1", "vs1"):
        case = gl.complete(actor, case, {"outcome": "refer_up", "note": "上报"})
    case = gl.complete("tl1", case, {"outcome": "resolved"})
    case = gl.complete("off1", case, {"satisfaction": "satisfied"})
    case = gl.complete("tl1", case, {"summary": "镇级办结"})
    review = gl.item(case)
    assert review.excluded is None
    case = gl.complete("tl1", case, {"approved": True})
    assert case.status == "archived"


def test_town_items_of_a_liaison_village_go_to_its_liaison_leader(gl):
    case = gl.accepted()
    for actor in ("gl1", "dl1", "vs1"):
        case = gl.complete(actor, case, {"outcome": "refer_up", "note": "上报"})
    handle = gl.item(case)
    assert [i.id for i in gl.inbox("tl1")] == [handle.id]
    assert gl.inbox("tl2") == []
    with pytest.raises(Forbidden):
        gl.runtime.claim(gl.session, gl.viewer("tl2"), handle.id)


def test_town_leader_names_departments_who_then_read_the_case(gl):
    case = gl.accepted()
    for actor in ("gl1", "dl1", "vs1"):
        case = gl.complete(actor, case, {"outcome": "refer_up", "note": "上报"})
    ps1 = gl.viewer("ps1")
    assert not can_see_case(gl.session, ps1, case)
    with pytest.raises(Invalid) as err:
        gl.complete("tl1", case, {"outcome": "resolved", "departments": ["NOPE"]})
    assert "departments[0]" in err.value.fields
    assert not can_see_case(gl.session, ps1, gl.reload(case))
    case = gl.complete("tl1", case, {"outcome": "resolved", "departments": ["PS"]})
    assert can_see_case(gl.session, ps1, case)
    with pytest.raises(Forbidden):
        gl.runtime.complete(gl.session, ps1, gl.item(case).id, {"satisfaction": "satisfied"})


# ------------------------------------------------------------------ rejection


def test_invalid_case_is_rejected(gl):
    case = gl.open("off1")
    gl.clock.advance(minutes=20)
    case = gl.complete("off1", case, {"valid": False, "note": "重复上报"})
    assert case.status == "rejected"
    assert case.closed_at == gl.clock.now()
    assert case.owner == "off1"
    assert gl.items(case) == [] and gl.timers(case) == []
    assert gl.types(case)[-2:] == ["task_completed", "rejected"]
    assert gl.last(case, "rejected").at == gl.last(case, "task_completed").at


def test_rejecting_needs_a_note(gl):
    case = gl.open("off1")
    for data in ({"valid": False}, {"valid": False, "note": ""}, {"valid": False, "note": " \n"}):
        with pytest.raises(Invalid) as err:
            gl.complete("off1", case, data)
        assert set(err.value.fields) == {"note"}, data
    case = gl.reload(case)
    assert case.status == "accepting" and gl.item(case).completed_at is None


# ------------------------------------------------------------------ who may act


def test_scoping_of_a_grid_item(gl):
    case = gl.accepted()
    handle = gl.item(case)
    data = {"outcome": "resolved"}
    # Another grid's leader: the case does not exist for them.
    for outsider in ("gl2", "gl3", "off2", "dl2", "vs2"):
        viewer = gl.viewer(outsider)
        with pytest.raises(NotFound):
            gl.runtime.claim(gl.session, viewer, handle.id)
        with pytest.raises(NotFound):
            gl.runtime.complete(gl.session, viewer, handle.id, data)
        with pytest.raises(NotFound):
            gl.runtime.release(gl.session, viewer, handle.id)
    # An auditor reads every case and changes none.
    auditor = gl.viewer("aud")
    assert can_see_case(gl.session, auditor, case)
    with pytest.raises(Forbidden):
        gl.runtime.complete(gl.session, auditor, handle.id, data)
    with pytest.raises(Forbidden):
        gl.runtime.claim(gl.session, auditor, handle.id)
    # The district leader of the case's district sees the case but may not act on a grid item.
    for above in ("dl1", "vs1", "tl1"):
        viewer = gl.viewer(above)
        assert can_see_case(gl.session, viewer, case)
        with pytest.raises(Forbidden):
            gl.runtime.complete(gl.session, viewer, handle.id, data)
        with pytest.raises(Forbidden):
            gl.runtime.claim(gl.session, viewer, handle.id)
    # The officer who owns the case may not handle it either.
    with pytest.raises(Forbidden):
        gl.runtime.complete(gl.session, gl.viewer("off1"), handle.id, data)
    with pytest.raises(NotFound):
        gl.runtime.complete(gl.session, gl.viewer("gl1"), 10_000, data)

    case = gl.reload(case)
    assert (case.status, case.tier) == ("handling", "grid_leader")
    assert gl.item(case).claimed_by is None
    assert gl.types(case) == ["opened", "claimed", "task_completed"]


def test_feedback_only_by_the_owner(gl):
    case = gl.accepted("off1")
    case = gl.complete("gl1", case, {"outcome": "resolved"})
    feedback = gl.item(case)
    data = {"satisfaction": "satisfied"}
    for other in ("off1b", "gl1", "dl1", "aud"):
        with pytest.raises((Forbidden, NotFound)):
            gl.runtime.complete(gl.session, gl.viewer(other), feedback.id, data)
    with pytest.raises(NotFound):
        gl.runtime.complete(gl.session, gl.viewer("off2"), feedback.id, data)
    assert gl.reload(case).status == "feedback"
    case = gl.complete("off1", case, data)
    assert case.status == "reporting"


# ------------------------------------------------------------------ claims


def test_claim_makes_an_item_exclusive(gl):
    case = gl.open(None)
    accept = gl.item(case)
    off1, off1b = gl.viewer("off1"), gl.viewer("off1b")

    gl.clock.advance(minutes=1)
    item = gl.runtime.claim(gl.session, off1, accept.id)
    assert (item.claimed_by, item.claimed_at) == ("off1", gl.clock.now())
    claimed = gl.last(case, "claimed")
    assert (claimed.actor, claimed.task, json.loads(claimed.data)) == (
        "off1",
        "accept",
        {"work_item": accept.id},
    )
    # Others still see it, with claimed_by; their claim, release or completion answers 409.
    seen = gl.inbox("off1b")
    assert [(i.id, i.claimed_by) for i in seen] == [(accept.id, "off1")]
    events = len(gl.events(case))
    with pytest.raises(Conflict):
        gl.runtime.claim(gl.session, off1b, accept.id)
    with pytest.raises(Conflict):
        gl.runtime.complete(gl.session, off1b, accept.id, ACCEPT_NORMAL)
    with pytest.raises(Conflict):
        gl.runtime.release(gl.session, off1b, accept.id)
    assert len(gl.events(gl.reload(case))) == events
    # Claiming again is harmless and records nothing.
    gl.runtime.claim(gl.session, off1, accept.id)
    assert len(gl.events(gl.reload(case))) == events

    gl.clock.advance(minutes=1)
    item = gl.runtime.release(gl.session, off1, accept.id)
    assert item.claimed_by is None and item.claimed_at is None
    released = gl.last(case, "released")
    assert (released.actor, json.loads(released.data)) == ("off1", {"work_item": accept.id})
    with pytest.raises(Conflict):
        gl.runtime.release(gl.session, off1, accept.id)

    gl.runtime.claim(gl.session, off1b, accept.id)
    case = gl.runtime.complete(gl.session, off1b, accept.id, ACCEPT_NORMAL)
    assert case.owner == "off1b"
    assert gl.types(case) == [
        "opened",
        "claimed",
        "released",
        "claimed",
        "task_completed",
    ]


def test_claims_and_releases_bump_the_case_version(gl):
    case = gl.accepted()
    handle = gl.item(case)
    version = case.version
    gl.clock.advance(seconds=1)
    gl.runtime.claim(gl.session, gl.viewer("gl1"), handle.id)
    assert gl.reload(case).version == version + 1
    gl.clock.advance(seconds=1)
    gl.runtime.release(gl.session, gl.viewer("gl1"), handle.id)
    assert gl.reload(case).version == version + 2


# ------------------------------------------------------------------ bad form data


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        ({"valid": True}, {"category": "required", "severity": "required"}),
        ({"valid": True, "category": "dispute"}, {"severity": "required"}),
        ({**ACCEPT_NORMAL, "colour": "red"}, {"colour": "unknown field"}),
        ({**ACCEPT_NORMAL, "category": "alien"}, {"category": None}),
        ({**ACCEPT_NORMAL, "severity": "critical"}, {"severity": None}),
        ({**ACCEPT_NORMAL, "valid": "yes"}, {"valid": None}),
        ({}, {"valid": "required"}),
        ({"category": "alien", "valid": True, "extra": 1}, None),
    ],
)
def test_bad_accept_data_is_refused_field_by_field_and_changes_nothing(gl, data, fields):
    case = gl.open("off1")
    before = (case.version, case.status, len(gl.events(case)), gl.counts())
    accept = gl.item(case)
    with pytest.raises(Invalid) as err:
        gl.complete("off1", case, data)
    got = err.value.fields
    assert got, "one message per field"
    assert all(isinstance(m, str) and m for m in got.values())
    if fields is None:
        assert {"category", "severity", "extra"} <= set(got)
    else:
        assert set(got) == set(fields)
        for name, message in fields.items():
            if message is not None:
                assert got[name] == message
            if data.get(name) in ("alien", "critical"):
                assert "must be one of" in got[name]
    case = gl.reload(case)
    assert (case.version, case.status, len(gl.events(case)), gl.counts()) == before
    item = gl.item(case)
    assert item.id == accept.id and item.completed_at is None and item.completed_by is None


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"outcome": "maybe"}, "outcome"),
        ({}, "outcome"),
        ({"outcome": "resolved", "departments": ["PS"]}, "departments"),
        ({"outcome": "resolved", "note": 5}, "note"),
        ("resolved", "data"),
    ],
)
def test_bad_handle_data_is_refused(gl, data, field):
    case = gl.accepted()
    before = (case.version, len(gl.events(case)), gl.counts())
    with pytest.raises(Invalid) as err:
        gl.complete("gl1", case, data)
    assert field in err.value.fields
    case = gl.reload(case)
    assert (case.version, len(gl.events(case)), gl.counts()) == before
    assert gl.item(case).completed_at is None and gl.item(case).claimed_by is None


def test_accept_with_valid_data_sets_category_and_severity(gl):
    case = gl.open(None, category="resident_request", severity="low")
    case = gl.complete("off1", case, {"valid": True, "category": "dispute", "severity": "normal"})
    assert (case.category, case.severity) == ("dispute", "normal")
    assert gl.reload(case).opened_at == START
    assert gl.session.scalars(select(Unit).where(Unit.code == GRID)).one().id == case.grid_id


def test_case_numbers_count_per_town_and_shanghai_year(gl):
    first = gl.open("off1")
    second = gl.open("off2", grid="V01-D1-G02")
    assert (first.number, second.number) == ("XDK-2026-000001", "XDK-2026-000002")
    gl.clock.set(datetime(2026, 12, 31, 16, 30, tzinfo=UTC))  # 1 January 2027, 00:30 in Shanghai
    assert gl.open("off3", grid="V02-D1-G01").number == "XDK-2027-000001"
