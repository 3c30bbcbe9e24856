"""代理 (DESIGN §4): a person names a colleague of the same role and unit, or of the tier above,
to work their items between two dates; the colleague sees and does them, each step records both
names (`actor`, and `on_behalf_of` in the event data), and it ends by itself.

Over the JSON API and the pages, with Flask's test client and an injected clock that the tests
move (never sleep). The organisation is conftest's, except that grid leader gl1 leads two grids:
V01-D1-G01 and V02-D1-G01. When gl1 delegates to the district leader dl1 (the tier above, in
V01-D1), dl1 works gl1's items in V02-D1-G01 too, a district that is not theirs: outside the
dates those items and their cases answer 404 to dl1, as anything outside their units does.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime, timedelta

import pytest
from apps import bearer
from conftest import ORG_YAML, START
from sqlalchemy import select

from engine import delegation as delegation_engine
from engine.access import viewer_of
from engine.clock import SHANGHAI
from engine.events import verify
from engine.models import Case, Person, Position, Unit
from webapp.extensions import db

API = "/api/v1"
OWN_GRID = "V01-D1-G01"  # gl1's grid in dl1's district
FAR_GRID = "V02-D1-G01"  # gl1's other grid, outside dl1's units
# Grid leader gl1 also leads V02-D1-G01 (in place of gl3).
DELEGATION_ORG = ORG_YAML.replace(
    "leader: {username: gl3, name: 卫组长, password: pw}", "leader: {username: gl1, name: 孙组长}"
)
assert DELEGATION_ORG != ORG_YAML
ACCEPT = {"valid": True, "category": "resident_request", "severity": "normal"}
RESOLVED = {"outcome": "resolved", "note": "已处理"}
# START is Monday 2026-11-23 10:00 in Asia/Shanghai; the delegation covers Tuesday and Wednesday.
TUESDAY, WEDNESDAY = date(2026, 11, 24), date(2026, 11, 25)
EIGHT = ("case", "seq", "at", "type", "actor", "task", "data", "diagram")


def shanghai(day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """An instant of November 2026 given in Asia/Shanghai."""
    return datetime(2026, 11, day, hour, minute, second, tzinfo=SHANGHAI).astimezone(UTC)


# ------------------------------------------------------------------ fixtures and helpers


@pytest.fixture
def app(make_app):
    return make_app(DELEGATION_ORG)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def as_(client):
    """as_("gl1") -> gl1's Authorization header (one token per person and test)."""
    tokens: dict[str, dict[str, str]] = {}

    def headers(username: str) -> dict[str, str]:
        if username not in tokens:
            tokens[username] = bearer(client, username, "pw")
        return tokens[username]

    return headers


def delegate(client, headers, to: str, first, last):
    body = {"delegate": to, "from": str(first), "to": str(last)}
    return client.post(f"{API}/delegations", json=body, headers=headers)


def delegated(client, as_, delegator: str = "gl1", to: str = "dl1") -> dict:
    response = delegate(client, as_(delegator), to, TUESDAY, WEDNESDAY)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def handle_item(client, as_, grid: str = FAR_GRID) -> tuple[str, int]:
    """A case opened and accepted by the grid's officer: (its number, its handle item's id),
    which waits for the grid's leader."""
    officer = {OWN_GRID: "off1", FAR_GRID: "off3"}[grid]
    opened = client.post(
        f"{API}/cases", json={"grid": grid, "title": "路灯坏了"}, headers=as_(officer)
    )
    assert opened.status_code == 201, opened.get_json()
    number = opened.get_json()["number"]
    item = item_in(client, as_(officer), number)
    accepted = complete(client, as_(officer), item["id"], ACCEPT)
    assert accepted.status_code == 200, accepted.get_json()
    return number, item_in(client, as_("gl1"), number)["id"]


def inbox(client, headers) -> list[dict]:
    response = client.get(f"{API}/inbox", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def item_in(client, headers, number: str) -> dict:
    found = [i for i in inbox(client, headers) if i["case"]["number"] == number]
    assert len(found) == 1, found
    return found[0]


def numbers_in(client, headers) -> set[str]:
    return {i["case"]["number"] for i in inbox(client, headers)}


def complete(client, headers, item_id: int, data: dict):
    return client.post(f"{API}/work-items/{item_id}/complete", json={"data": data}, headers=headers)


def events(client, headers, number: str) -> list[dict]:
    response = client.get(f"{API}/cases/{number}/events", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["events"]


def chain_holds(evts: list[dict]) -> bool:
    """DESIGN §6, recomputed from the events API as any client would."""
    prev = "0" * 64
    for event in evts:
        body = {key: event[key] for key in EIGHT}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256((prev + "\n" + text).encode("utf-8")).hexdigest()
        if digest != event["hash"]:
            return False
        prev = digest
    return True


def verified(app, number: str) -> bool:
    with app.app_context():
        case = db.session.query(Case).filter_by(number=number).one()
        return verify(db.session, case).ok


def error_of(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert set(body) == {"error"}, body
    return body["error"]


# ------------------------------------------------------------------ the dates


def test_a_delegate_completes_an_item_during_the_dates_and_gets_404_after_them(
    app, client, as_, clock
):
    made = delegated(client, as_)
    assert made["status"] == "upcoming"
    assert (made["from"], made["to"]) == ("2026-11-24", "2026-11-25")
    # Whole days in Asia/Shanghai: from the first day's midnight to the midnight after the last.
    assert made["starts_at"] == "2026-11-23T16:00:00.000000Z"
    assert made["ends_at"] == "2026-11-25T16:00:00.000000Z"
    assert made["delegator"] == {"username": "gl1", "name": "孙组长"}
    assert made["delegate"] == {"username": "dl1", "name": "钱片长"}
    done, _done_item = handle_item(client, as_)
    left, left_item = handle_item(client, as_)
    dl1 = as_("dl1")

    # Before the first day: gl1's items in a district not dl1's do not exist for dl1.
    assert not {done, left} & numbers_in(client, dl1)
    error_of(client.post(f"{API}/work-items/{left_item}/claim", headers=dl1), 404)
    error_of(client.get(f"{API}/cases/{done}", headers=dl1), 404)

    clock.set(shanghai(24, 9))  # Tuesday morning
    assert {done, left} <= numbers_in(client, dl1)
    assert client.get(f"{API}/cases/{done}", headers=dl1).status_code == 200
    item = item_in(client, dl1, done)
    response = complete(client, dl1, item["id"], RESOLVED)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "feedback"

    history = events(client, as_("gl1"), done)
    last = [e for e in history if e["type"] == "task_completed"][-1]
    assert (last["task"], last["actor"]) == ("handle", "dl1")
    assert last["data"]["on_behalf_of"] == "gl1"
    assert last["data"]["outcome"] == "resolved"
    assert chain_holds(history)
    assert verified(app, done)

    clock.set(shanghai(25, 23, 59, 59))  # the last second of Wednesday: still covered
    assert left in numbers_in(client, dl1)

    clock.set(shanghai(26))  # Thursday, midnight: over, by itself
    assert not {done, left} & numbers_in(client, dl1)
    error_of(client.post(f"{API}/work-items/{left_item}/claim", headers=dl1), 404)
    error_of(complete(client, dl1, left_item, RESOLVED), 404)
    error_of(client.get(f"{API}/cases/{left}", headers=dl1), 404)
    error_of(client.get(f"{API}/cases/{done}/events", headers=dl1), 404)
    # gl1, back, still has the item.
    back = complete(client, as_("gl1"), left_item, RESOLVED)
    assert back.status_code == 200, back.get_json()
    mine = [e for e in events(client, as_("gl1"), left) if e["type"] == "task_completed"][-1]
    assert mine["actor"] == "gl1" and "on_behalf_of" not in mine["data"]


def test_a_delegation_ends_by_itself(client, as_, clock):
    made = delegated(client, as_)
    clock.set(shanghai(24, 12))
    for username in ("gl1", "dl1"):
        listed = client.get(f"{API}/delegations", headers=as_(username)).get_json()["items"]
        assert [(d["id"], d["status"]) for d in listed] == [(made["id"], "active")], username
    clock.set(shanghai(26, 0, 0, 1))
    for username in ("gl1", "dl1"):
        assert client.get(f"{API}/delegations", headers=as_(username)).get_json()["items"] == []
    # Nothing was written when it ended: it is over because the clock says so.
    error_of(client.delete(f"{API}/delegations/{made['id']}", headers=as_("gl1")), 409)


def test_revoking_ends_it(client, as_, clock):
    made = delegated(client, as_)
    number, item_id = handle_item(client, as_)
    clock.set(shanghai(24, 9))
    assert number in numbers_in(client, as_("dl1"))
    url = f"{API}/delegations/{made['id']}"
    error_of(client.delete(url, headers=as_("dl1")), 403)  # the delegate sees it, may not revoke
    error_of(client.delete(url, headers=as_("gl2")), 404)  # others: as if it did not exist
    error_of(client.delete(f"{API}/delegations/999999", headers=as_("gl1")), 404)
    revoked = client.delete(url, headers=as_("gl1"))
    assert revoked.status_code == 204, revoked.get_data(as_text=True)
    assert number not in numbers_in(client, as_("dl1"))
    error_of(complete(client, as_("dl1"), item_id, RESOLVED), 404)
    assert client.get(f"{API}/delegations", headers=as_("gl1")).get_json()["items"] == []
    error_of(client.delete(url, headers=as_("gl1")), 409)


def test_the_delegator_still_works_their_own_items_meanwhile(client, as_, clock):
    delegated(client, as_)
    near, near_item = handle_item(client, as_, OWN_GRID)
    far, far_item = handle_item(client, as_, FAR_GRID)
    clock.set(shanghai(24, 9))
    gl1 = as_("gl1")
    assert {near, far} <= numbers_in(client, gl1)
    for number, item_id in ((near, near_item), (far, far_item)):
        response = complete(client, gl1, item_id, RESOLVED)
        assert response.status_code == 200, response.get_json()
        last = [e for e in events(client, gl1, number) if e["type"] == "task_completed"][-1]
        assert last["actor"] == "gl1" and "on_behalf_of" not in last["data"]


def test_a_claim_through_a_delegation_is_held_in_the_delegators_name(client, as_, clock):
    delegated(client, as_)
    number, item_id = handle_item(client, as_)
    clock.set(shanghai(24, 9))
    dl1 = as_("dl1")
    claimed = client.post(f"{API}/work-items/{item_id}/claim", headers=dl1)
    assert claimed.status_code == 200, claimed.get_json()
    # Held for gl1, so that it is still theirs when the delegation ends.
    assert claimed.get_json()["claimed_by"] == "gl1"
    released = client.post(f"{API}/work-items/{item_id}/release", headers=dl1)
    assert released.status_code == 200, released.get_json()
    steps = [e for e in events(client, as_("gl1"), number) if e["type"] in ("claimed", "released")]
    assert [(e["type"], e["actor"], e["data"]) for e in steps[-2:]] == [
        ("claimed", "dl1", {"work_item": item_id, "on_behalf_of": "gl1"}),
        ("released", "dl1", {"work_item": item_id, "on_behalf_of": "gl1"}),
    ]


def test_a_colleague_of_the_same_role_and_unit_covers_claimed_and_owner_items(
    app, client, as_, clock
):
    """off1b stands in for off1 (both officers of V01-D1-G01): the accept item off1 holds since
    opening, and later off1's feedback as the case's owner."""
    delegated(client, as_, "off1", "off1b")
    opened = client.post(
        f"{API}/cases", json={"grid": OWN_GRID, "title": "井盖缺失"}, headers=as_("off1")
    )
    number = opened.get_json()["number"]
    off1b = as_("off1b")
    accept = item_in(client, off1b, number)
    assert accept["claimed_by"] == "off1"
    error_of(complete(client, off1b, accept["id"], ACCEPT), 409)  # not yet: off1 holds it

    clock.set(shanghai(24, 9))
    done = complete(client, off1b, accept["id"], ACCEPT)
    assert done.status_code == 200, done.get_json()
    # Work done for someone is theirs: off1 owns the case (首接负责) and will do its feedback.
    assert done.get_json()["owner"] == "off1"
    handle = item_in(client, as_("gl1"), number)
    assert complete(client, as_("gl1"), handle["id"], RESOLVED).status_code == 200
    feedback = item_in(client, off1b, number)
    assert feedback["task"] == "feedback"
    closed = complete(client, off1b, feedback["id"], {"satisfaction": "satisfied"})
    assert closed.status_code == 200, closed.get_json()
    history = events(client, as_("off1"), number)
    completions = [
        (e["task"], e["actor"], e["data"].get("on_behalf_of"))
        for e in history
        if e["type"] == "task_completed"
    ]
    assert completions == [
        ("accept", "off1b", "off1"),
        ("handle", "gl1", None),
        ("feedback", "off1b", "off1"),
    ]
    assert chain_holds(history) and verified(app, number)


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("who", "to", "first", "last", "field"),
    [
        ("gl1", "gl2", TUESDAY, WEDNESDAY, "delegate"),  # the same role in another unit
        ("gl2", "dl2", TUESDAY, WEDNESDAY, "delegate"),  # the tier above, of another district
        ("gl1", "vs1", TUESDAY, WEDNESDAY, "delegate"),  # two tiers above
        ("gl1", "off1", TUESDAY, WEDNESDAY, "delegate"),  # a lower tier
        ("dl1", "gl1", TUESDAY, WEDNESDAY, "delegate"),  # a lower tier
        ("gl1", "gl1", TUESDAY, WEDNESDAY, "delegate"),  # oneself
        ("gl1", "nobody", TUESDAY, WEDNESDAY, "delegate"),
        ("gl1", "dl1", WEDNESDAY, TUESDAY, "to"),  # the end before the start
        ("gl1", "dl1", date(2026, 11, 22), TUESDAY, "from"),  # Sunday, past
        ("gl1", "dl1", TUESDAY, date(2027, 2, 22), "to"),  # 91 days
        ("gl1", "dl1", "2026-02-30", TUESDAY, "from"),  # not a date
        ("gl1", "dl1", date(2028, 1, 1), date(2028, 1, 2), "from"),  # more than a year ahead
    ],
)
def test_refused_delegations_answer_400_with_a_message_for_the_field(
    client, as_, who, to, first, last, field
):
    error = error_of(delegate(client, as_(who), to, first, last), 400)
    assert set(error["fields"]) == {field}, error
    assert isinstance(error["fields"][field], str) and error["fields"][field]
    assert client.get(f"{API}/delegations", headers=as_(who)).get_json()["items"] == []


def test_bad_bodies_answer_400_per_field_and_never_500(client, as_):
    gl1 = as_("gl1")
    missing = error_of(client.post(f"{API}/delegations", json={}, headers=gl1), 400)
    assert set(missing["fields"]) == {"delegate", "from", "to"}
    body = {"delegate": "dl1", "from": "2026-11-24", "to": "2026-11-25", "hours": 3}
    unknown = error_of(client.post(f"{API}/delegations", json=body, headers=gl1), 400)
    assert set(unknown["fields"]) == {"hours"}
    huge = {"delegate": "dl1", "from": "9999-12-31", "to": "9999-12-31"}
    assert set(
        error_of(client.post(f"{API}/delegations", json=huge, headers=gl1), 400)["fields"]
    ) == {"from"}
    wrong = {"delegate": 7, "from": 20261124, "to": None}
    assert set(
        error_of(client.post(f"{API}/delegations", json=wrong, headers=gl1), 400)["fields"]
    ) == {"delegate", "from", "to"}
    assert error_of(client.post(f"{API}/delegations", data="[]", headers=gl1), 400)
    overlap = delegated(client, as_)
    again = error_of(delegate(client, gl1, "dl1", WEDNESDAY, date(2026, 11, 27)), 400)
    assert set(again["fields"]) == {"from"}
    assert overlap["id"]


def test_who_may_delegate_is_checked_before_what_they_sent(client, as_):
    for username in ("aud", "adm", "ps1"):  # no tier position: no items to pass on
        error_of(client.post(f"{API}/delegations", json={}, headers=as_(username)), 403)
    assert client.get(f"{API}/delegations").status_code == 401


def test_the_openapi_document_lists_the_delegation_calls(client):
    document = client.get(f"{API}/openapi.json").get_json()
    assert {"get", "post"} <= set(document["paths"]["/delegations"])
    assert "delete" in document["paths"]["/delegations/{delegation_id}"]
    assert {"DelegationIn", "DelegationOut", "DelegationPage"} <= set(
        document["components"]["schemas"]
    )


# ------------------------------------------------------------------ the pages


def web_login(app, username: str):
    client = app.test_client()
    response = client.post("/login", data={"username": username, "password": "pw"})
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def test_the_page_delegates_lists_and_revokes_in_chinese(app, client, as_, clock):
    gl1 = web_login(app, "gl1")
    page = gl1.get("/account/delegations")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<h1>代理</h1>" in html and 'data-testid="account-delegation"' in html
    assert 'value="dl1"' in html and 'value="off1b"' not in html and 'value="gl2"' not in html
    assert 'name="csrf_token"' in html

    refused = gl1.post(
        "/account/delegations", data={"delegate": "dl1", "from": "2026-11-25", "to": "2026-11-24"}
    )
    assert refused.status_code == 400
    assert "结束日期不能早于开始日期。" in refused.get_data(as_text=True)
    empty = gl1.post("/account/delegations", data={"delegate": "", "from": "", "to": ""})
    assert empty.status_code == 400
    assert "请从列表中选择同事。" in empty.get_data(as_text=True)

    made = gl1.post(
        "/account/delegations", data={"delegate": "dl1", "from": "2026-11-24", "to": "2026-11-25"}
    )
    assert made.status_code == 302
    listed = gl1.get("/account/delegations").get_data(as_text=True)
    assert "2026-11-24 至 2026-11-25" in listed and "钱片长" in listed
    row = re.search(r'data-testid="given-item" data-id="(\d+)" data-status="upcoming"', listed)
    assert row, listed
    dl1_page = web_login(app, "dl1").get("/account/delegations").get_data(as_text=True)
    assert 'data-testid="received-item"' in dl1_page and "孙组长" in dl1_page

    # The inbox marks what dl1 works for gl1: 代 孙组长.
    number, _item = handle_item(client, as_)
    clock.set(shanghai(24, 9))
    inbox_page = web_login(app, "dl1").get("/").get_data(as_text=True)
    assert 'data-testid="badge-behalf"' in inbox_page and "代 孙组长" in inbox_page
    assert number in inbox_page

    revoked = gl1.post(f"/account/delegations/{row.group(1)}/revoke")
    assert revoked.status_code == 302
    assert 'data-testid="given-item"' not in gl1.get("/account/delegations").get_data(as_text=True)
    assert number not in web_login(app, "dl1").get("/").get_data(as_text=True)
    assert web_login(app, "dl1").post(
        f"/account/delegations/{row.group(1)}/revoke"
    ).status_code in (
        403,
        409,
    )


def test_the_page_speaks_english_on_request_and_is_not_for_auditors(app):
    gl1 = web_login(app, "gl1")
    gl1.set_cookie("lang", "en")
    html = gl1.get("/account/delegations").get_data(as_text=True)
    assert "<h1>Delegation</h1>" in html and "Colleagues covering for me" in html
    auditor = web_login(app, "aud")
    assert auditor.get("/account/delegations").status_code == 403
    assert 'data-testid="account-delegation"' not in auditor.get("/cases").get_data(as_text=True)


def test_the_task_page_lets_the_delegate_complete_an_item_the_delegator_holds(
    app, client, as_, clock
):
    delegated(client, as_, "off1", "off1b")
    opened = client.post(
        f"{API}/cases", json={"grid": OWN_GRID, "title": "井盖缺失"}, headers=as_("off1")
    )
    accept = item_in(client, as_("off1"), opened.get_json()["number"])
    off1b = web_login(app, "off1b")
    before = off1b.get(f"/tasks/{accept['id']}").get_data(as_text=True)
    assert 'data-testid="not-yours"' in before  # Monday: off1 holds it, and off1b covers nobody
    clock.set(shanghai(24, 9))
    inbox_page = off1b.get("/").get_data(as_text=True)
    assert "代 周信息员" in inbox_page and 'data-testid="release"' in inbox_page
    during = off1b.get(f"/tasks/{accept['id']}").get_data(as_text=True)
    assert 'data-testid="not-yours"' not in during and 'data-testid="task-form"' in during
    done = off1b.post(f"/tasks/{accept['id']}", data={**ACCEPT, "valid": "true"})
    assert done.status_code == 302, done.get_data(as_text=True)


def test_a_delegation_passes_nothing_on_once_the_colleague_holds_another_post(gl):
    """The colleague rule is checked whenever a delegation is used, not only when it is made:
    moved to another grid, the delegate stops seeing the delegator's items at once."""
    off1 = gl.session.scalars(select(Person).where(Person.username == "off1")).one()
    today = delegation_engine.today(START)
    delegation_engine.create(gl.session, off1, "off1b", today, today + timedelta(days=2), START)
    gl.session.commit()
    off1b = gl.session.scalars(select(Person).where(Person.username == "off1b")).one()
    assert [c.delegator for c in viewer_of(gl.session, off1b, START).covers] == ["off1"]

    post = gl.session.scalars(select(Position).where(Position.person_id == off1b.id)).one()
    post.unit_id = gl.session.scalars(select(Unit).where(Unit.code == "V02-D1-G01")).one().id
    gl.session.commit()
    gl.session.expire_all()
    off1b = gl.session.scalars(select(Person).where(Person.username == "off1b")).one()
    assert viewer_of(gl.session, off1b, START).covers == ()


def test_completing_an_unclaimed_item_for_a_delegator_claims_it_in_their_name(gl):
    """As a claim through a delegation does: the item is held in the delegator's name, while the
    completion names who did it."""
    gl1 = gl.session.scalars(select(Person).where(Person.username == "gl1")).one()
    today = delegation_engine.today(START)
    delegation_engine.create(gl.session, gl1, "dl1", today, today + timedelta(days=2), START)
    gl.session.commit()
    case = gl.accepted()
    handle = gl.item(case)
    dl1 = gl.session.scalars(select(Person).where(Person.username == "dl1")).one()
    gl.runtime.complete(
        gl.session, viewer_of(gl.session, dl1, START), handle.id, {"outcome": "resolved"}
    )
    done = gl.session.get(type(handle), handle.id)
    gl.session.refresh(done)
    assert (done.claimed_by, done.completed_by) == ("gl1", "dl1")
