"""转办: a case reported in the wrong grid goes to the right one. The officer holding its accept, or
the grid leader holding its handling, sends it through the diagram's `transfer` signal; the item
leaves the first grid's inboxes, accept goes to the other grid's officers, and whoever accepts it
there owns it. The owner it had is told."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from apps import bearer
from conftest import ACCEPT_NORMAL, GRID, START
from sqlalchemy import select

from engine import delegation
from engine.access import can_see_case, viewer_of
from engine.clock import iso
from engine.errors import Conflict, Invalid, NotFound
from engine.events import verify
from engine.models import Case, CaseEvent, Notification, Person, Unit, WorkItem
from webapp import services
from webapp.extensions import db

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


# ------------------------------------------------------------------ through the API and the pages


@pytest.fixture
def transfer_app(make_app, bundle):
    return make_app(bundle=bundle)


def _open(app, officer: str = "off1") -> tuple[str, int]:
    """A case opened by `officer` in G01: its number and its accept item's id."""
    with app.app_context():
        person = db.session.scalars(select(Person).where(Person.username == officer)).one()
        case = services(app).runtime.open_case(
            db.session, viewer_of(db.session, person), grid=GRID, title="井盖丢了"
        )
        item = db.session.scalars(select(WorkItem).where(WorkItem.case_id == case.id)).one()
        return case.number, item.id


def test_the_api_transfers_and_answers_400_per_field_and_404_outside(transfer_app):
    client = transfer_app.test_client()
    number, item_id = _open(transfer_app)
    url = f"/api/v1/work-items/{item_id}/transfer"
    off1 = bearer(client, "off1")

    bad = client.post(url, json={"to": "", "note": 7}, headers=off1)
    assert bad.status_code == 400
    assert set(bad.get_json()["error"]["fields"]) == {"to", "note"}
    assert client.post(url, json={"to": GRID}, headers=off1).get_json()["error"]["fields"] == {
        "to": "the case is in this grid already"
    }
    outsider = client.post(url, json={"to": OTHER}, headers=bearer(client, "gl3"))
    assert outsider.status_code == 404

    done = client.post(url, json={"to": OTHER, "note": "二组的"}, headers=off1)
    assert done.status_code == 200, done.get_json()
    assert (done.get_json()["grid"]["code"], done.get_json()["status"]) == (OTHER, "accepting")
    assert client.get(f"/api/v1/cases/{number}", headers=off1).status_code == 404
    seen = client.get(f"/api/v1/cases/{number}", headers=bearer(client, "off2"))
    assert seen.status_code == 200
    again = client.post(url, json={"to": FAR}, headers=bearer(client, "off2"))
    assert again.status_code == 409  # that item was closed by the transfer
    assert (
        "/work-items/{item_id}/transfer" in client.get("/api/v1/openapi.json").get_json()["paths"]
    )


def test_the_task_page_offers_the_transfer_and_sends_the_case(transfer_app):
    client = transfer_app.test_client()
    number, item_id = _open(transfer_app)
    client.post("/login", data={"username": "off1", "password": "pw"})
    page = client.get(f"/tasks/{item_id}").get_data(as_text=True)
    assert 'data-testid="transfer-form"' in page and f'value="{OTHER}"' in page
    assert f'value="{GRID}"' not in page  # not the grid it is in

    refused = client.post(f"/tasks/{item_id}/transfer", data={"to": ""})
    assert refused.status_code == 400
    assert "请选择本镇的网格。" in refused.get_data(as_text=True)

    sent = client.post(f"/tasks/{item_id}/transfer", data={"to": OTHER, "note": "二组的"})
    assert sent.status_code == 302 and sent.headers["Location"].endswith("/")
    inbox = client.get("/").get_data(as_text=True)
    assert f"{number} 已转办至 二组。" in inbox
    with transfer_app.app_context():
        case = db.session.scalars(select(Case).where(Case.number == number)).one()
        assert case.grid.code == OTHER
        assert [
            e.type
            for e in db.session.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id))
        ][-1] == "transferred"


def test_the_district_leaders_handling_page_offers_no_transfer(transfer_app):
    client = transfer_app.test_client()
    with transfer_app.app_context():
        person = db.session.scalars(select(Person).where(Person.username == "off1")).one()
        runtime = services(transfer_app).runtime
        me = viewer_of(db.session, person)
        case = runtime.open_case(db.session, me, grid=GRID, title="路灯")
        item = db.session.scalars(select(WorkItem).where(WorkItem.case_id == case.id)).one()
        runtime.complete(db.session, me, item.id, {**ACCEPT_NORMAL, "severity": "urgent"})
        handle = db.session.scalars(
            select(WorkItem).where(WorkItem.case_id == case.id, WorkItem.completed_at.is_(None))
        ).one()
        handle_id = handle.id
    client.post("/login", data={"username": "dl1", "password": "pw"})
    page = client.get(f"/tasks/{handle_id}").get_data(as_text=True)
    assert 'data-testid="task-form"' in page and 'data-testid="transfer-form"' not in page


def test_a_colleague_covering_for_the_holder_transfers_in_both_names(gl):
    """代理: off1 is away and off1b covers; off1b sends off1's claimed case on, and the event
    names both, as every step through a delegation does."""
    case = gl.open("off1")  # off1 holds its accept
    off1 = gl.session.scalars(select(Person).where(Person.username == "off1")).one()
    today = delegation.today(START)
    delegation.create(gl.session, off1, "off1b", today, today + timedelta(days=1), START)
    gl.session.commit()
    off1b = gl.session.scalars(select(Person).where(Person.username == "off1b")).one()
    covering = viewer_of(gl.session, off1b, START)
    case = gl.runtime.transfer(gl.session, covering, gl.item(case).id, OTHER, None)
    moved = gl.last(case, "transferred")
    assert moved.actor == "off1b" and data(moved)["on_behalf_of"] == "off1"
    assert verify(gl.session, case).ok
