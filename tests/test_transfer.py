"""转办: a case reported in the wrong grid goes to the right one. The officer holding its accept, or
the grid leader holding its handling, sends it through the diagram's `transfer` signal; the item
leaves the first grid's inboxes, accept goes to the other grid's officers, and whoever accepts it
there owns it. The owner it had is told."""

from __future__ import annotations

import json

import pytest
from conftest import ACCEPT_NORMAL, GRID, START
from sqlalchemy import select

from engine.access import can_see_case
from engine.clock import iso
from engine.errors import Conflict, Invalid, NotFound
from engine.events import verify
from engine.models import Notification, Unit

OTHER = "V01-D1-G02"  # the same district's other grid: leader gl2, officer off2
FAR = "V02-D1-G01"  # another village's grid: leader gl3, officer off3


def data(event) -> dict:
    return json.loads(event.data)


def unit_code(gl, unit_id: int) -> str:
    return gl.session.get(Unit, unit_id).code


def transfer(gl, username: str, case, to: str, note: str | None = "不属于本网格"):
    return gl.runtime.transfer(gl.session, gl.viewer(username), gl.item(case).id, to, note)


def test_an_officer_sends_a_case_at_accept_to_the_right_grid(gl):
    case = gl.open("off1", title="井盖丢了")
    first = gl.item(case)
    assert [i.id for i in gl.inbox("off1")] == [first.id]

    case = transfer(gl, "off1", case, OTHER, "在二组地界")
    assert unit_code(gl, case.grid_id) == OTHER and case.owner is None
    assert (case.status, case.tier) == ("accepting", None)
    moved = gl.last(case, "transferred")
    assert (moved.actor, moved.task) == ("off1", "accept")
    accept = gl.item(case)
    assert data(moved) == {
        "from": GRID,
        "to": OTHER,
        "note": "在二组地界",
        # it makes the new accept item ready, so it records that item's limit (DESIGN §2)
        "tier": "info_officer",
        "due_at": iso(accept.due_at),
        "warn_at": iso(accept.warn_at),
    }

    # The first grid's inboxes lose it; the other grid's officers get a fresh accept item.
    old = gl.session.get(type(first), first.id)
    assert old.cancelled and old.completed_at is not None
    assert gl.inbox("off1") == [] and gl.inbox("off1b") == []
    (accept,) = gl.inbox("off2")
    assert (accept.task, accept.role, unit_code(gl, accept.unit_id)) == (
        "accept",
        "info_officer",
        OTHER,
    )
    assert accept.claimed_by is None and accept.due_at is not None  # accept's limit anew
    assert not can_see_case(gl.session, gl.viewer("gl1"), case)
    assert can_see_case(gl.session, gl.viewer("gl2"), case)

    # Whoever accepts it there owns it; handling starts at that grid.
    case = gl.complete("off2", case, ACCEPT_NORMAL)
    assert (case.owner, case.status, case.tier) == ("off2", "handling", "grid_leader")
    assert unit_code(gl, gl.item(case).unit_id) == OTHER
    assert verify(gl.session, case).ok


def test_a_grid_leader_sends_a_case_in_handling_and_its_owner_is_told(gl):
    village = gl.session.scalars(select(Unit).where(Unit.code == "V01")).one()
    village.settings = {"notify": [{"url": "https://hooks.example/v01", "format": "json"}]}
    gl.session.commit()
    case = gl.accepted()  # off1 owns it; it waits at gl1
    assert case.owner == "off1"
    before = len(gl.session.scalars(select(Notification)).all())

    case = transfer(gl, "gl1", case, OTHER)
    assert case.owner is None and unit_code(gl, case.grid_id) == OTHER
    assert (case.status, gl.last(case, "transferred").task) == ("accepting", "handle")
    gl.session.expire_all()
    told = gl.session.scalars(select(Notification).order_by(Notification.id)).all()[before:]
    kinds = {row.kind: row.payload for row in told}
    assert kinds["transferred"]["recipients"] == ["off1"]
    assert kinds["transferred"]["to"] == OTHER
    assert "转办" in kinds["transferred"]["text"]
    assert kinds["assigned"]["recipients"] == [f"info_officer@{OTHER}"]

    assert gl.inbox("gl1") == []
    case = gl.complete("off2", case, ACCEPT_NORMAL)
    assert case.owner == "off2"
    assert [i.role for i in gl.inbox("gl2")] == ["grid_leader"]
    assert verify(gl.session, case).ok


def test_a_case_can_go_to_another_village_of_the_town(gl):
    case = gl.open(None, title="居民来电")  # a resident's case: accept unclaimed
    case = transfer(gl, "off1", case, FAR)
    assert unit_code(gl, case.village_id) == "V02"
    (accept,) = gl.inbox("off3")
    assert accept.task == "accept"
    assert not can_see_case(gl.session, gl.viewer("vs1"), case)
    assert can_see_case(gl.session, gl.viewer("vs2"), case)


@pytest.mark.parametrize(
    ("to", "note", "field"),
    [
        ("NOPE", None, "to"),
        (GRID, None, "to"),  # where it is already
        (None, None, "to"),
        (OTHER, "长" * 501, "note"),
    ],
)
def test_bad_transfers_are_refused_field_by_field_and_change_nothing(gl, to, note, field):
    case = gl.open("off1")
    events = len(gl.events(case))
    with pytest.raises(Invalid) as refused:
        transfer(gl, "off1", case, to, note)
    assert set(refused.value.fields) == {field}
    case = gl.reload(case)
    assert unit_code(gl, case.grid_id) == GRID and len(gl.events(case)) == events


def test_only_the_holders_of_a_transferable_step_may_send_it(gl):
    case = gl.open("off1")
    with pytest.raises(NotFound):  # another grid's leader does not see it at all
        transfer(gl, "gl2", case, OTHER)
    case = gl.complete("off1", case, {**ACCEPT_NORMAL, "severity": "urgent"})
    assert gl.item(case).role == "district_leader"
    with pytest.raises(Conflict):  # the diagram has no transfer on the district's handling
        transfer(gl, "dl1", case, OTHER)
    assert unit_code(gl, gl.reload(case).grid_id) == GRID


def test_a_transferred_case_keeps_its_number_and_its_clock(gl):
    case = gl.open("off1")
    number = case.number
    gl.clock.advance(minutes=30)
    case = transfer(gl, "off1", case, OTHER)
    accept = gl.item(case)
    assert case.number == number
    assert accept.created_at == START.replace(minute=30)
    assert sorted(t.name for t in gl.timers(case)) == ["due_accept", "warn_accept"]
