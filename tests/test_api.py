"""The JSON API under /api/v1 (DESIGN §4 and §8), exercised the way a client would: over HTTP with
Flask's test client, asserting only on status codes and JSON bodies.

The fixtures here are self-contained (names prefixed `api_`) so they do not depend on, or clash
with, tests/conftest.py. The organisation: town XDK with two villages.
  V01 (liaison leader tl1): district V01-D1 (dl1) with grid V01-D1-G01 (leader gl1, officers off1
      and off1b); secretary vs1.
  V02 (no liaison: every town leader sees its town items): district V02-D1 (dl2) with grids
      V02-D1-G01 and V02-D1-G02, both led by gl2 (one person, two positions); officer off2 in
      G01; secretary vs2.
Town leaders tl1 and tl2, department PS with officer ps1, auditor aud.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apps import bearer, build_app, dispose_app

from engine.clock import FixedClock
from engine.specs import load_bundle
from webapp.extensions import db

REPO_ROOT = Path(__file__).resolve().parents[1]
API = "/api/v1"
PASSWORD = "pw-秘密"
# Monday 2026-11-23 10:00 in Asia/Shanghai.
API_START = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
G01 = "V01-D1-G01"

API_ORG = f"""\
town: {{code: XDK, name: 小渡口镇}}
leaders:
  - {{username: tl1, name: 张伟, password: "{PASSWORD}", liaises: [V01]}}
  - {{username: tl2, name: 李强, password: "{PASSWORD}"}}
departments:
  - {{code: PS, name: 派出所, officers: [{{username: ps1, name: 王警官, password: "{PASSWORD}"}}]}}
villages:
  - code: V01
    name: 一村
    secretary: {{username: vs1, name: 赵书记, password: "{PASSWORD}"}}
    districts:
      - code: V01-D1
        name: 一片
        leader: {{username: dl1, name: 钱片长, password: "{PASSWORD}"}}
        grids:
          - code: V01-D1-G01
            name: 一组
            households: 5
            leader: {{username: gl1, name: 孙组长, password: "{PASSWORD}"}}
            officers:
              - {{username: off1, name: 周信息员, password: "{PASSWORD}"}}
              - {{username: off1b, name: 吴信息员, password: "{PASSWORD}"}}
  - code: V02
    name: 二村
    secretary: {{username: vs2, name: 陈书记, password: "{PASSWORD}"}}
    districts:
      - code: V02-D1
        name: 一片
        leader: {{username: dl2, name: 褚片长, password: "{PASSWORD}"}}
        grids:
          - code: V02-D1-G01
            name: 一组
            households: 3
            leader: {{username: gl2, name: 卫组长, password: "{PASSWORD}"}}
            officers: [{{username: off2, name: 蒋信息员, password: "{PASSWORD}"}}]
          - code: V02-D1-G02
            name: 二组
            households: 3
            leader: {{username: gl2, name: 卫组长}}
auditors: [{{username: aud, name: 杨审计, password: "{PASSWORD}"}}]
"""

CASE_FIELDS = {
    "number",
    "title",
    "description",
    "category",
    "severity",
    "status",
    "tier",
    "grid",
    "owner",
    "holder",
    "due_at",
    "overdue",
    "opened_at",
    "closed_at",
    "satisfaction",
    "reopen_count",
    "diagram",
    "campaign",  # DESIGN §12: {id, title} of a case a campaign's visit opened, else null
}
ITEM_FIELDS = {
    "id",
    "task",
    "name",
    "role",
    "unit",
    "case",
    "created_at",
    "due_at",
    "overdue",
    "claimed_by",
    "form",
}
ITEM_CASE_FIELDS = {"number", "title", "category", "severity", "grid"}
EVENT_FIELDS = {"case", "seq", "at", "type", "actor", "task", "data", "diagram", "hash"}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")
NUMBER = re.compile(r"^XDK-2026-\d{6}$")
ACCEPT = {"valid": True, "category": "resident_request", "severity": "normal"}


# ------------------------------------------------------------------ fixtures and helpers


@pytest.fixture(scope="module")
def api_bundle():
    return load_bundle(REPO_ROOT)


@pytest.fixture
def api_clock() -> FixedClock:
    return FixedClock(API_START)


@pytest.fixture
def api_app(tmp_path, api_clock, api_bundle):
    app = build_app(tmp_path / "api.sqlite", API_ORG, api_clock, bundle=api_bundle)
    yield app
    dispose_app(app)


@pytest.fixture
def api_client(api_app):
    return api_app.test_client()


def login(client, username: str, password: str = PASSWORD) -> dict[str, str]:
    return bearer(client, username, password)


@pytest.fixture
def api_as(api_client):
    """api_as("gl1") -> the Authorization header of gl1 (logged in once per test)."""
    tokens: dict[str, dict[str, str]] = {}

    def headers(username: str) -> dict[str, str]:
        if username not in tokens:
            tokens[username] = login(api_client, username)
        return tokens[username]

    return headers


def assert_error(response, status: int, fields: set[str] | None = None) -> dict:
    """The response is a JSON error of `status` shaped {error: {code, message, fields?}}."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.is_json, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "fields"}
    if fields is not None:
        assert set(error.get("fields", {})) == fields, error
        assert all(isinstance(m, str) and m for m in error["fields"].values()), error
    return error


def open_case(client, headers, grid: str = G01, **body) -> dict:
    body.setdefault("title", "路灯坏了")
    body.setdefault("description", "村口路灯不亮")
    response = client.post(f"{API}/cases", json={"grid": grid, **body}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def inbox(client, headers, **params) -> list[dict]:
    response = client.get(f"{API}/inbox", query_string=params, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def item_of(client, headers, number: str) -> dict:
    """The one item of case `number` in this user's inbox."""
    found = [i for i in inbox(client, headers) if i["case"]["number"] == number]
    assert len(found) == 1, found
    return found[0]


def complete(client, headers, item_id: int, data) -> object:
    return client.post(f"{API}/work-items/{item_id}/complete", json={"data": data}, headers=headers)


def complete_ok(client, headers, number: str, data: dict) -> dict:
    item = item_of(client, headers, number)
    response = complete(client, headers, item["id"], data)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def get_case(client, headers, number: str) -> dict:
    response = client.get(f"{API}/cases/{number}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def events(client, headers, number: str) -> dict:
    response = client.get(f"{API}/cases/{number}/events", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def accepted(client, api_as, officer: str = "off1", grid: str = G01, **accept) -> dict:
    """A case opened and accepted by `officer`; it waits in handling."""
    case = open_case(client, api_as(officer), grid)
    return complete_ok(client, api_as(officer), case["number"], {**ACCEPT, **accept})


def archived(client, api_as) -> str:
    """A case run through the whole loop (grid refers up, district resolves); its number."""
    number = accepted(client, api_as)["number"]
    complete_ok(client, api_as("gl1"), number, {"outcome": "refer_up", "note": "需要片长协调"})
    complete_ok(client, api_as("dl1"), number, {"outcome": "resolved", "note": "已修好"})
    complete_ok(client, api_as("off1"), number, {"satisfaction": "satisfied"})
    complete_ok(client, api_as("dl1"), number, {"summary": "路灯已更换"})
    case = complete_ok(client, api_as("vs1"), number, {"approved": True})
    assert case["status"] == "archived"
    return number


def all_pages(client, headers, path: str, **params) -> list[list[dict]]:
    pages, cursor = [], None
    for _ in range(20):
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        response = client.get(f"{API}{path}", query_string=query, headers=headers)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert set(body) == {"items", "next_cursor"}
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError(f"{path}: next_cursor never became null after 20 pages")


def cursor_of(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


# ------------------------------------------------------------------ POST /tokens


def test_token_is_created_for_the_right_password_and_opens_the_api(api_client):
    response = api_client.post(f"{API}/tokens", json={"username": "off1", "password": PASSWORD})
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"token"}
    assert isinstance(body["token"], str) and len(body["token"]) >= 20
    me = api_client.get(f"{API}/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200
    assert me.get_json()["username"] == "off1"


def test_wrong_password_and_unknown_user_answer_the_same_401(api_client):
    wrong = api_client.post(f"{API}/tokens", json={"username": "off1", "password": "nope"})
    unknown = api_client.post(f"{API}/tokens", json={"username": "nobody", "password": PASSWORD})
    error = assert_error(wrong, 401)
    assert_error(unknown, 401)
    assert wrong.get_json() == unknown.get_json()
    assert "fields" not in error


def test_token_with_missing_or_bad_fields_is_400_per_field(api_client):
    for body, fields in [
        ({}, {"username", "password"}),
        ({"username": "off1"}, {"password"}),
        ({"password": PASSWORD}, {"username"}),
        ({"username": 12, "password": ["x"]}, {"username", "password"}),
        ({"username": "", "password": PASSWORD}, {"username"}),
    ]:
        assert_error(api_client.post(f"{API}/tokens", json=body), 400, fields)


def test_token_with_a_non_json_object_body_is_400(api_client):
    for data, content_type in [
        ("username=off1&password=pw", "application/x-www-form-urlencoded"),
        ('{"username": "off1", "password": ', "application/json"),
        ('["off1", "pw"]', "application/json"),
        ('"off1"', "application/json"),
        ("", "application/json"),
        ("off1:pw", "text/plain"),
    ]:
        response = api_client.post(f"{API}/tokens", data=data, content_type=content_type)
        assert_error(response, 400)


# ------------------------------------------------------------------ authentication


def test_missing_or_bad_token_is_401(api_client):
    for path in ("/me", "/cases", "/inbox"):
        for header in (
            None,
            "Bearer",
            "Bearer ",
            "Bearer not-a-token",
            "Basic b2ZmMTpwdw==",
            "bearer not-a-token",
        ):
            headers = {"Authorization": header} if header is not None else {}
            error = assert_error(api_client.get(f"{API}{path}", headers=headers), 401)
            assert "fields" not in error, (path, header)


def test_a_token_expires(api_client, api_clock):
    headers = login(api_client, "off1")
    assert api_client.get(f"{API}/me", headers=headers).status_code == 200
    api_clock.advance(days=31)
    assert_error(api_client.get(f"{API}/me", headers=headers), 401)
    response = api_client.post(f"{API}/cases", json={"title": "t", "grid": G01}, headers=headers)
    assert_error(response, 401)
    # Logging in again gives a fresh token.
    assert api_client.get(f"{API}/me", headers=login(api_client, "off1")).status_code == 200


# ------------------------------------------------------------------ GET /me


def test_me_lists_positions_with_role_and_unit(api_client, api_as):
    me = api_client.get(f"{API}/me", headers=api_as("gl1")).get_json()
    assert me == {
        "username": "gl1",
        "name": "孙组长",
        "positions": [
            {"role": "grid_leader", "unit": {"code": G01, "name": "一组", "level": "grid"}}
        ],
    }
    # One person leading two grids holds two positions.
    me = api_client.get(f"{API}/me", headers=api_as("gl2")).get_json()
    assert me["username"] == "gl2"
    assert sorted(me["positions"], key=lambda p: p["unit"]["code"]) == [
        {"role": "grid_leader", "unit": {"code": "V02-D1-G01", "name": "一组", "level": "grid"}},
        {"role": "grid_leader", "unit": {"code": "V02-D1-G02", "name": "二组", "level": "grid"}},
    ]
    me = api_client.get(f"{API}/me", headers=api_as("tl1")).get_json()
    assert me["positions"] == [
        {"role": "town_leadership", "unit": {"code": "XDK", "name": "小渡口镇", "level": "town"}}
    ]
    me = api_client.get(f"{API}/me", headers=api_as("ps1")).get_json()
    assert [(p["role"], p["unit"]["level"]) for p in me["positions"]] == [
        ("department_officer", "department")
    ]


# ------------------------------------------------------------------ the loop over HTTP


def test_the_whole_loop_over_http(api_client, api_as, api_clock):
    off1, gl1, dl1, vs1 = api_as("off1"), api_as("gl1"), api_as("dl1"), api_as("vs1")

    # accept 受理: opened by the officer, who holds its accept item.
    response = api_client.post(
        f"{API}/cases",
        json={
            "title": "路灯坏了",
            "description": "村口路灯不亮",
            "grid": G01,
            "household": "3",
            "reporter": {"name": "刘大爷", "phone": "138 0000 0000"},
        },
        headers=off1,
    )
    assert response.status_code == 201, response.get_json()
    case = response.get_json()
    assert set(case) == CASE_FIELDS
    assert NUMBER.match(case["number"]) and case["number"] == "XDK-2026-000001"
    number = case["number"]
    assert case["title"] == "路灯坏了" and case["description"] == "村口路灯不亮"
    assert case["status"] == "accepting"
    assert case["owner"] is None
    assert case["holder"] == "off1"
    assert case["grid"] == {"code": G01, "name": "一组"}
    assert case["opened_at"] == "2026-11-23T02:00:00.000000Z"
    assert case["closed_at"] is None and case["satisfaction"] is None
    assert case["overdue"] is False and case["reopen_count"] == 0
    assert re.fullmatch(r"[0-9a-f]{64}", case["diagram"])
    assert get_case(api_client, off1, number) == case

    [item] = inbox(api_client, off1)
    assert set(item) == ITEM_FIELDS
    assert item["task"] == "accept" and item["role"] == "info_officer"
    assert isinstance(item["id"], int) and isinstance(item["name"], str) and item["name"]
    assert item["unit"] == {"code": G01, "name": "一组"}
    assert set(item["case"]) == ITEM_CASE_FIELDS
    assert item["case"]["number"] == number and item["case"]["grid"]["code"] == G01
    assert ISO_UTC.match(item["created_at"])
    assert item["overdue"] is False
    assert item["claimed_by"] == "off1"
    form = item["form"]
    assert form["type"] == "object"
    assert {"valid", "category", "severity", "note"} <= set(form["properties"])
    # The other officer of the grid sees the item, claimed by off1.
    [seen] = inbox(api_client, api_as("off1b"))
    assert seen["id"] == item["id"] and seen["claimed_by"] == "off1"

    response = complete(api_client, off1, item["id"], {**ACCEPT, "note": "已核实"})
    assert response.status_code == 200, response.get_json()
    case = response.get_json()
    assert set(case) == CASE_FIELDS
    assert case["status"] == "handling"
    assert case["tier"] == "grid_leader"
    assert case["owner"] == "off1"
    assert case["holder"] is None
    assert case["category"] == "resident_request" and case["severity"] == "normal"
    assert case["due_at"] is not None and ISO_UTC.match(case["due_at"])
    assert inbox(api_client, off1) == []

    # handle 处置 at the grid: claimed, then referred up.
    handle = item_of(api_client, gl1, number)
    assert handle["task"] == "handle" and handle["role"] == "grid_leader"
    assert handle["claimed_by"] is None
    assert handle["due_at"] == case["due_at"]
    response = api_client.post(f"{API}/work-items/{handle['id']}/claim", headers=gl1)
    assert response.status_code == 200, response.get_json()
    claimed = response.get_json()
    assert set(claimed) == ITEM_FIELDS
    assert claimed["id"] == handle["id"] and claimed["claimed_by"] == "gl1"
    assert get_case(api_client, off1, number)["holder"] == "gl1"

    api_clock.advance(minutes=30)
    response = complete(
        api_client, gl1, handle["id"], {"outcome": "refer_up", "note": "需要片长协调"}
    )
    assert response.status_code == 200, response.get_json()
    case = response.get_json()
    assert case["status"] == "handling" and case["tier"] == "district_leader"
    assert case["holder"] is None and case["owner"] == "off1"
    assert inbox(api_client, gl1) == []

    # The district leader resolves without claiming first.
    handle = item_of(api_client, dl1, number)
    assert handle["task"] == "handle" and handle["role"] == "district_leader"
    assert handle["unit"] == {"code": "V01-D1", "name": "一片"}
    case = complete_ok(api_client, dl1, number, {"outcome": "resolved", "note": "已修好"})
    assert case["status"] == "feedback" and case["tier"] == "district_leader"

    # feedback 反馈: only the owner sees it.
    assert inbox(api_client, api_as("off1b")) == []
    feedback = item_of(api_client, off1, number)
    assert feedback["task"] == "feedback"
    case = complete_ok(api_client, off1, number, {"satisfaction": "satisfied"})
    assert case["status"] == "reporting" and case["satisfaction"] == "satisfied"

    # report 上报 by the resolving tier, review by the tier above.
    report = item_of(api_client, dl1, number)
    assert report["task"] == "report"
    case = complete_ok(api_client, dl1, number, {"summary": "路灯已更换"})
    assert case["status"] == "reporting"
    review = item_of(api_client, vs1, number)
    assert review["task"] == "review" and review["role"] == "village_secretary"
    assert review["unit"] == {"code": "V01", "name": "一村"}

    api_clock.advance(hours=1)
    case = complete_ok(api_client, vs1, number, {"approved": True, "note": "同意归档"})
    assert case["status"] == "archived"
    assert case["closed_at"] == "2026-11-23T03:30:00.000000Z"
    assert case["owner"] == "off1" and case["holder"] is None and case["overdue"] is False
    assert get_case(api_client, api_as("aud"), number) == case
    for user in ("off1", "gl1", "dl1", "vs1"):
        assert inbox(api_client, api_as(user)) == [], user

    # Completing an unclaimed item records only the completion (no claimed event for dl1).
    chain = events(api_client, off1, number)["events"]
    assert [(e["type"], e["actor"]) for e in chain if e["type"] == "claimed"] == [
        ("claimed", "off1"),
        ("claimed", "gl1"),
    ]
    assert [e["task"] for e in chain if e["type"] == "task_completed"] == [
        "accept",
        "handle",
        "handle",
        "feedback",
        "report",
        "review",
    ]
    assert chain[-1]["type"] == "archived"


def test_claim_and_release(api_client, api_as):
    number = accepted(api_client, api_as)["number"]
    gl1 = api_as("gl1")
    item = item_of(api_client, gl1, number)
    claim = api_client.post(f"{API}/work-items/{item['id']}/claim", headers=gl1)
    assert claim.status_code == 200 and claim.get_json()["claimed_by"] == "gl1"
    # Claiming again is harmless for the holder.
    again = api_client.post(f"{API}/work-items/{item['id']}/claim", headers=gl1)
    assert again.status_code == 200 and again.get_json()["claimed_by"] == "gl1"
    release = api_client.post(f"{API}/work-items/{item['id']}/release", headers=gl1)
    assert release.status_code == 200, release.get_json()
    assert set(release.get_json()) == ITEM_FIELDS
    assert release.get_json()["claimed_by"] is None
    assert item_of(api_client, gl1, number)["claimed_by"] is None
    assert get_case(api_client, gl1, number)["holder"] is None
    # Releasing what you do not hold is a conflict.
    assert_error(api_client.post(f"{API}/work-items/{item['id']}/release", headers=gl1), 409)


# ------------------------------------------------------------------ the event chain


def test_events_chain_recomputes_from_the_json_alone(api_client, api_as):
    number = archived(api_client, api_as)
    body = events(api_client, api_as("aud"), number)
    assert set(body) == {"events", "head"}
    chain = body["events"]
    assert len(chain) >= 8
    assert [e["seq"] for e in chain] == list(range(1, len(chain) + 1))
    assert chain[0]["type"] == "opened" and chain[-1]["type"] == "archived"
    assert chain[0]["data"]["title"] == "路灯坏了"  # non-ASCII text is hashed as UTF-8

    prev = "0" * 64
    for event in chain:
        assert set(event) == EVENT_FIELDS, event
        assert event["case"] == number
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", event["at"])
        unhashed = {k: v for k, v in event.items() if k != "hash"}
        canonical = json.dumps(unhashed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        prev = hashlib.sha256((prev + "\n" + canonical).encode("utf-8")).hexdigest()
        assert event["hash"] == prev, f"event {event['seq']} ({event['type']}) does not chain"
    assert body["head"] == prev
    # Every reader with access sees the same chain.
    assert events(api_client, api_as("off1"), number) == body


# ------------------------------------------------------------------ scoping (DESIGN §4)


def test_other_village_sees_nothing_404(api_client, api_as):
    number = accepted(api_client, api_as)["number"]
    item = item_of(api_client, api_as("gl1"), number)
    gl2 = api_as("gl2")
    assert_error(api_client.get(f"{API}/cases/{number}", headers=gl2), 404)
    assert_error(api_client.get(f"{API}/cases/{number}/events", headers=gl2), 404)
    assert_error(api_client.post(f"{API}/work-items/{item['id']}/claim", headers=gl2), 404)
    assert_error(api_client.post(f"{API}/work-items/{item['id']}/release", headers=gl2), 404)
    assert_error(complete(api_client, gl2, item["id"], {"outcome": "resolved"}), 404)
    # Indistinguishable from a case or an item that does not exist.
    assert_error(api_client.get(f"{API}/cases/XDK-2026-999999", headers=gl2), 404)
    missing = complete(api_client, gl2, 999999, {"outcome": "resolved"})
    assert assert_error(missing, 404) == assert_error(
        complete(api_client, gl2, item["id"], {"outcome": "resolved"}), 404
    )
    assert api_client.get(f"{API}/cases", headers=gl2).get_json()["items"] == []
    assert inbox(api_client, gl2) == []
    # A department not named on the case does not see it either.
    assert_error(api_client.get(f"{API}/cases/{number}", headers=api_as("ps1")), 404)
    # Nothing happened to the item.
    assert item_of(api_client, api_as("gl1"), number)["claimed_by"] is None


def test_auditor_reads_but_cannot_act_403(api_client, api_as):
    number = accepted(api_client, api_as)["number"]
    item = item_of(api_client, api_as("gl1"), number)
    aud = api_as("aud")
    assert get_case(api_client, aud, number)["number"] == number
    assert [
        c["number"] for c in api_client.get(f"{API}/cases", headers=aud).get_json()["items"]
    ] == [number]
    assert events(api_client, aud, number)["events"]
    assert_error(complete(api_client, aud, item["id"], {"outcome": "resolved"}), 403)
    assert_error(api_client.post(f"{API}/work-items/{item['id']}/claim", headers=aud), 403)
    assert inbox(api_client, aud) == []
    case = get_case(api_client, aud, number)
    assert case["status"] == "handling" and case["tier"] == "grid_leader"


def test_district_leader_sees_but_cannot_complete_a_grid_item_403(api_client, api_as):
    number = accepted(api_client, api_as)["number"]
    item = item_of(api_client, api_as("gl1"), number)
    dl1 = api_as("dl1")
    assert get_case(api_client, dl1, number)["tier"] == "grid_leader"
    assert inbox(api_client, dl1) == []
    assert_error(complete(api_client, dl1, item["id"], {"outcome": "resolved"}), 403)
    assert_error(api_client.post(f"{API}/work-items/{item['id']}/claim", headers=dl1), 403)
    assert get_case(api_client, dl1, number)["status"] == "handling"


def test_who_is_asking_is_answered_before_what_they_sent(api_client, api_as):
    """DESIGN §4: who may do something is checked before what they sent is validated. A role
    that may never open cases gets 403 for POST /cases whatever the body; a malformed completion
    or transfer of someone else's item answers what a good one would (404 outside the caller's
    units, 403, 409), and a malformed one of one's own item the 400."""
    for who in ("gl1", "dl1", "vs1", "tl1", "ps1"):
        for body in ({}, {"x": 1}, {"title": "t", "grid": "V01-D1-G01"}):
            assert_error(api_client.post(f"{API}/cases", json=body, headers=api_as(who)), 403)
        assert_error(api_client.post(f"{API}/cases", data="not json", headers=api_as(who)), 403)
    number = accepted(api_client, api_as)["number"]
    item = item_of(api_client, api_as("gl1"), number)["id"]
    for path in ("complete", "transfer"):
        url = f"{API}/work-items/{item}/{path}"
        for body in ({}, {"data": 5, "to": 7}, ["x"]):
            assert_error(api_client.post(url, json=body, headers=api_as("gl2")), 404)
            assert_error(api_client.post(url, json=body, headers=api_as("dl1")), 403)
            assert_error(api_client.post(url, json=body, headers=api_as("gl1")), 400)
    assert_error(
        api_client.post(f"{API}/work-items/999999/complete", json={}, headers=api_as("gl1")), 404
    )
    # Nothing moved, and the officer still opens cases.
    assert get_case(api_client, api_as("gl1"), number)["status"] == "handling"
    assert open_case(api_client, api_as("off1"))["status"] == "accepting"


def test_item_claimed_by_someone_else_is_409(api_client, api_as):
    # off1 opens the case and so holds its accept item; the grid's other officer is refused.
    number = open_case(api_client, api_as("off1"))["number"]
    off1b = api_as("off1b")
    item = item_of(api_client, off1b, number)
    assert item["claimed_by"] == "off1"
    assert_error(complete(api_client, off1b, item["id"], ACCEPT), 409)
    assert_error(api_client.post(f"{API}/work-items/{item['id']}/claim", headers=off1b), 409)
    assert_error(api_client.post(f"{API}/work-items/{item['id']}/release", headers=off1b), 409)
    case = get_case(api_client, off1b, number)
    assert case["status"] == "accepting" and case["owner"] is None and case["holder"] == "off1"


def test_completing_twice_is_409(api_client, api_as):
    number = accepted(api_client, api_as)["number"]
    gl1 = api_as("gl1")
    item = item_of(api_client, gl1, number)
    first = complete(api_client, gl1, item["id"], {"outcome": "resolved", "note": "好了"})
    assert first.status_code == 200
    count = len(events(api_client, gl1, number)["events"])
    assert_error(
        complete(api_client, gl1, item["id"], {"outcome": "resolved", "note": "好了"}), 409
    )
    assert_error(api_client.post(f"{API}/work-items/{item['id']}/claim", headers=gl1), 409)
    assert len(events(api_client, gl1, number)["events"]) == count
    assert get_case(api_client, gl1, number)["status"] == "feedback"


# ------------------------------------------------------------------ validation


def test_bad_accept_data_is_400_per_field_and_changes_nothing(api_client, api_as):
    off1 = api_as("off1")
    number = open_case(api_client, off1)["number"]
    item = item_of(api_client, off1, number)
    before = events(api_client, off1, number)
    for data, fields in [
        ({"valid": True}, {"category": "required", "severity": "required"}),
        ({"valid": True, "category": "dispute"}, {"severity": "required"}),
        ({"valid": False}, {"note": "required"}),
        ({}, {"valid": "required"}),
    ]:
        error = assert_error(complete(api_client, off1, item["id"], data), 400, set(fields))
        assert error["fields"] == fields, data
    assert events(api_client, off1, number) == before
    case = get_case(api_client, off1, number)
    assert case["status"] == "accepting" and case["owner"] is None
    assert case["category"] is None and case["tier"] is None


def test_bad_handle_data_is_400_per_field_and_changes_nothing(api_client, api_as):
    number = accepted(api_client, api_as)["number"]
    gl1 = api_as("gl1")
    item = item_of(api_client, gl1, number)
    before = events(api_client, gl1, number)
    for data, fields in [
        ({"outcome": "refer_up"}, {"note"}),
        ({"outcome": "refer_up", "note": "   "}, {"note"}),
        ({"outcome": "maybe"}, {"outcome"}),
        ({"note": "x"}, {"outcome"}),
        ({"outcome": "resolved", "departments": ["PS"]}, {"departments"}),
        ({"outcome": "resolved", "colour": "red"}, {"colour"}),
        ({"outcome": "resolved", "note": 5}, {"note"}),
    ]:
        assert_error(complete(api_client, gl1, item["id"], data), 400, fields)
    assert events(api_client, gl1, number) == before
    case = get_case(api_client, gl1, number)
    assert case["status"] == "handling" and case["tier"] == "grid_leader"
    # The refused completions did not claim the item either.
    assert item_of(api_client, gl1, number)["claimed_by"] is None
    assert case["holder"] is None


def test_bad_new_case_is_400_per_field(api_client, api_as):
    off1 = api_as("off1")
    for body, fields in [
        ({}, {"title", "grid"}),
        ({"grid": G01}, {"title"}),
        ({"title": "路灯坏了"}, {"grid"}),
        ({"title": "", "grid": G01}, {"title"}),
        ({"title": "路灯坏了", "grid": G01, "colour": "red"}, {"colour"}),
        ({"title": "路灯坏了", "grid": G01, "category": "gossip"}, {"category"}),
        ({"title": "路灯坏了", "grid": G01, "severity": "panic"}, {"severity"}),
        ({"title": "路灯坏了", "grid": "V02-D1-G01"}, {"grid"}),
        ({"title": "路灯坏了", "grid": "NO-SUCH-GRID"}, {"grid"}),
        ({"title": "路灯坏了", "grid": "V01-D1"}, {"grid"}),
        ({"title": 7, "grid": G01}, {"title"}),
    ]:
        response = api_client.post(f"{API}/cases", json=body, headers=off1)
        assert_error(response, 400, fields)
    assert api_client.get(f"{API}/cases", headers=off1).get_json()["items"] == []
    assert inbox(api_client, off1) == []


def test_new_case_in_a_grid_not_the_officers_is_400_grid(api_client, api_as):
    # off2 is an information officer, of another grid (gl1, no officer at all, gets 403: see
    # test_who_is_asking_is_answered_before_what_they_sent).
    response = api_client.post(
        f"{API}/cases", json={"title": "t", "grid": G01}, headers=api_as("off2")
    )
    assert_error(response, 400, {"grid"})


def test_refer_up_at_town_is_400_outcome(api_client, api_as):
    # Urgent safety hazards start at the village; the village refers up to town.
    case = accepted(api_client, api_as, category="safety_hazard", severity="urgent")
    number = case["number"]
    assert case["tier"] == "village_secretary"
    case = complete_ok(api_client, api_as("vs1"), number, {"outcome": "refer_up", "note": "上报镇"})
    assert case["tier"] == "town_leadership" and case["status"] == "handling"
    # V01's liaison leader gets the item; the other town leader does not.
    tl1, tl2 = api_as("tl1"), api_as("tl2")
    item = item_of(api_client, tl1, number)
    assert item["role"] == "town_leadership" and item["unit"]["code"] == "XDK"
    assert inbox(api_client, tl2) == []
    before = events(api_client, tl1, number)
    response = complete(api_client, tl1, item["id"], {"outcome": "refer_up", "note": "再上报"})
    assert_error(response, 400, {"outcome"})
    assert events(api_client, tl1, number) == before
    case = get_case(api_client, tl1, number)
    assert case["tier"] == "town_leadership" and case["status"] == "handling"
    # Resolving at town works.
    case = complete_ok(api_client, tl1, number, {"outcome": "resolved", "note": "已处理"})
    assert case["status"] == "feedback" and case["tier"] == "town_leadership"


# ------------------------------------------------------------------ lists and inboxes


def test_cases_pagination_follows_next_cursor_until_null(api_client, api_as):
    off1 = api_as("off1")
    opened = {open_case(api_client, off1, title=f"事项{i}")["number"] for i in range(55)}
    assert len(opened) == 55
    pages = all_pages(api_client, off1, "/cases")
    assert len(pages) >= 2
    assert len(pages[0]) <= 50
    seen = [c["number"] for page in pages for c in page]
    assert len(seen) == len(set(seen)), "a case was listed twice"
    assert set(seen) == opened
    for page in pages:
        for case in page:
            assert set(case) == CASE_FIELDS
    # The same holds from the district's view and for the inbox of the grid's other officer.
    assert {
        c["number"] for p in all_pages(api_client, api_as("dl1"), "/cases") for c in p
    } == opened
    items = [i for p in all_pages(api_client, api_as("off1b"), "/inbox") for i in p]
    assert len(items) == len({i["id"] for i in items}) == 55
    assert {i["case"]["number"] for i in items} == opened


def test_bad_cursor_is_400(api_client, api_as):
    for path in ("/cases", "/inbox"):
        for cursor in ("!!!", "not-a-cursor", cursor_of({"id": 3}), cursor_of("x")):
            response = api_client.get(
                f"{API}{path}", query_string={"cursor": cursor}, headers=api_as("off1")
            )
            assert_error(response, 400, {"cursor"})


def test_forged_cursor_is_400_not_500(api_app, api_client, api_as):
    """A cursor is client input: one that decodes to a list of the wrong shape is still a 400."""
    api_app.config["PROPAGATE_EXCEPTIONS"] = False  # a crash shows as 500, not as a traceback
    far = "9999-01-01T00:00:00+00:00"
    answers = {}
    for path, name, value in [
        ("/cases", "empty", []),
        ("/cases", "text", ["x"]),
        ("/cases", "two-values", [1, 2]),
        ("/cases", "null", [None]),
        ("/cases", "huge", [10**30]),
        ("/inbox", "empty", []),
        ("/inbox", "one-value", [far]),
        ("/inbox", "huge", [far, 10**30]),
    ]:
        response = api_client.get(
            f"{API}{path}", query_string={"cursor": cursor_of(value)}, headers=api_as("off1")
        )
        answers[f"{path} {name}"] = response.status_code
    assert answers == dict.fromkeys(answers, 400)


def test_cases_filter_by_status_and_unit(api_client, api_as):
    done = archived(api_client, api_as)
    open_number = accepted(api_client, api_as)["number"]
    fresh = open_case(api_client, api_as("off1"))["number"]
    other = open_case(api_client, api_as("off2"), grid="V02-D1-G01")["number"]
    aud = api_as("aud")

    def numbers(**params):
        response = api_client.get(f"{API}/cases", query_string=params, headers=aud)
        assert response.status_code == 200, response.get_json()
        return {c["number"] for c in response.get_json()["items"]}

    assert numbers() == {done, open_number, fresh, other}
    assert numbers(status="archived") == {done}
    assert numbers(status="handling") == {open_number}
    assert numbers(status="accepting") == {fresh, other}
    assert numbers(status="rejected") == set()
    assert numbers(unit="V02") == {other}
    assert numbers(unit="V01-D1", status="accepting") == {fresh}
    for case in api_client.get(
        f"{API}/cases", query_string={"status": "archived"}, headers=aud
    ).get_json()["items"]:
        assert case["status"] == "archived" and case["closed_at"] is not None
    assert_error(api_client.get(f"{API}/cases?status=lost", headers=aud), 400, {"status"})


def test_inbox_overdue_ordering_and_category(api_client, api_as, api_clock):
    """dl1's inbox holds four district items; B (urgent, 4 clock hours) passes its due time."""
    dl1 = api_as("dl1")
    # t0: A normal, referred up by the grid (district limit: 48 working hours).
    a = accepted(api_client, api_as)["number"]
    complete_ok(api_client, api_as("gl1"), a, {"outcome": "refer_up", "note": "片长协调"})
    # t0: B urgent dispute starts at the district (4 clock hours).
    b = accepted(api_client, api_as, category="dispute", severity="urgent")["number"]
    api_clock.advance(hours=1)
    # t0+1h: C urgent policy (due t0+5h) and D normal referred up (due after A).
    c = accepted(api_client, api_as, category="policy", severity="urgent")["number"]
    d = accepted(api_client, api_as)["number"]
    complete_ok(api_client, api_as("gl1"), d, {"outcome": "refer_up", "note": "片长协调"})

    items = inbox(api_client, dl1)
    by_case = {i["case"]["number"]: i for i in items}
    assert set(by_case) == {a, b, c, d}
    assert not any(i["overdue"] for i in items)
    due_b = datetime.fromisoformat(by_case[b]["due_at"].replace("Z", "+00:00"))
    due_c = datetime.fromisoformat(by_case[c]["due_at"].replace("Z", "+00:00"))
    assert due_b < due_c < datetime.fromisoformat(by_case[a]["due_at"].replace("Z", "+00:00"))
    assert inbox(api_client, dl1, overdue="true") == []

    # Move past B's due time, before C's; no timers fire.
    api_clock.set(due_b + timedelta(minutes=1))
    assert api_clock.now() < due_c
    overdue = inbox(api_client, dl1, overdue="true")
    assert [i["case"]["number"] for i in overdue] == [b]
    assert overdue[0]["overdue"] is True
    assert get_case(api_client, dl1, b)["overdue"] is True
    assert get_case(api_client, dl1, c)["overdue"] is False
    not_overdue = inbox(api_client, dl1, overdue="false")
    assert [i["case"]["number"] for i in not_overdue] == [c, a, d]
    assert not any(i["overdue"] for i in not_overdue)
    # Overdue first, then the nearest due time (not the order the items were created in).
    assert [i["case"]["number"] for i in inbox(api_client, dl1)] == [b, c, a, d]

    disputes = inbox(api_client, dl1, category="dispute")
    assert [i["case"]["number"] for i in disputes] == [b]
    assert disputes[0]["case"]["category"] == "dispute"
    assert inbox(api_client, dl1, category="fireworks") == []
    assert_error(
        api_client.get(f"{API}/inbox", query_string={"category": "gossip"}, headers=dl1),
        400,
        {"category"},
    )
    assert_error(
        api_client.get(f"{API}/inbox", query_string={"overdue": "maybe"}, headers=dl1),
        400,
        {"overdue"},
    )


# ------------------------------------------------------------------ OpenAPI and errors


def test_openapi_document_lists_every_path(api_client):
    response = api_client.get(f"{API}/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.")
    expected = {
        "/tokens": {"post"},
        "/me": {"get"},
        "/cases": {"get", "post"},
        "/cases/{number}": {"get"},
        "/cases/{number}/events": {"get"},
        "/inbox": {"get"},
        "/work-items/{item_id}/claim": {"post"},
        "/work-items/{item_id}/release": {"post"},
        "/work-items/{item_id}/complete": {"post"},
    }
    paths = doc["paths"]
    # Paths are given relative to the server URL /api/v1.
    assert any(s["url"].rstrip("/").endswith("/api/v1") for s in doc.get("servers", []))
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))


def test_the_openapi_document_lists_every_route_the_api_serves(api_app, api_client):
    """Every route under /api/v1 is in the document, with its methods: a client generated
    from it reaches the whole API (GET /stats was once missing)."""
    import re

    paths = api_client.get(f"{API}/openapi.json").get_json()["paths"]
    missing = []
    for rule in api_app.url_map.iter_rules():
        if not rule.rule.startswith(API + "/") or rule.rule == f"{API}/openapi.json":
            continue
        path = re.sub(r"<(?:[a-z]+:)?(\w+)>", r"{\1}", rule.rule[len(API) :])
        methods = {m.lower() for m in rule.methods} - {"head", "options"}
        if not methods <= set(paths.get(path, ())):
            missing.append((path, sorted(methods - set(paths.get(path, ())))))
    assert missing == [], missing


def test_unknown_api_path_is_a_json_404(api_client, api_as):
    for path in ("/nope", "/cases/XDK-2026-000001/nope", "/work-items/abc/complete"):
        assert_error(api_client.get(f"{API}{path}", headers=api_as("off1")), 404)
    assert_error(api_client.post(f"{API}/work-items/abc/complete", json={"data": {}}), 404)
    assert_error(api_client.delete(f"{API}/me", headers=api_as("off1")), 405)


def test_malformed_complete_is_400_never_500(api_app, api_client, api_as):
    api_app.config["PROPAGATE_EXCEPTIONS"] = False
    off1 = api_as("off1")
    number = open_case(api_client, off1)["number"]
    item = item_of(api_client, off1, number)
    url = f"{API}/work-items/{item['id']}/complete"
    for kwargs in (
        {"json": {"data": "x"}},
        {"json": {"data": None}},
        {"json": {"data": []}},
        {"json": {"data": {"valid": "yes"}}},
        {"json": {"data": {"valid": True, "category": 1.5, "severity": "normal"}}},
        {"json": {"data": ACCEPT, "extra": 1}},
        {"json": {}},
        {"json": []},
        {"json": "data"},
        {"data": '{"data": {"valid": tru', "content_type": "application/json"},
        {"data": "", "content_type": "application/json"},
        {"data": "data=1", "content_type": "application/x-www-form-urlencoded"},
    ):
        assert_error(api_client.post(url, headers=off1, **kwargs), 400)
    assert get_case(api_client, off1, number)["status"] == "accepting"
    assert len(events(api_client, off1, number)["events"]) == 2  # opened, claimed
    assert item_of(api_client, off1, number)["claimed_by"] == "off1"


def test_out_of_range_work_item_id_is_404_never_500(api_app, api_client, api_as):
    api_app.config["PROPAGATE_EXCEPTIONS"] = False
    answers = {}
    for item_id in (
        "0",
        "2147483648",
        "9223372036854775807",
        "9223372036854775808",
        "1" + "0" * 30,
    ):
        for action in ("claim", "release", "complete"):
            response = api_client.post(
                f"{API}/work-items/{item_id}/{action}", json={"data": {}}, headers=api_as("gl1")
            )
            answers[f"{action} {item_id}"] = response.status_code
    assert answers == dict.fromkeys(answers, 404)


def test_malformed_new_case_is_400_never_500(api_app, api_client, api_as):
    api_app.config["PROPAGATE_EXCEPTIONS"] = False
    off1 = api_as("off1")
    for kwargs in (
        {"json": []},
        {"json": None},
        {"data": "{", "content_type": "application/json"},
        {"json": {"title": "t", "grid": G01, "reporter": "刘大爷"}},
        {"json": {"title": "t", "grid": G01, "reporter": {"phone": "call me"}}},
        {"json": {"title": "t" * 201, "grid": G01}},
        {"json": {"title": ["t"], "grid": {"code": G01}}},
    ):
        assert_error(api_client.post(f"{API}/cases", headers=off1, **kwargs), 400)
    assert api_client.get(f"{API}/cases", headers=off1).get_json()["items"] == []


def test_the_embedded_ticker_escalates_a_case_whose_limit_passed(
    api_app, api_client, api_as, api_clock
):
    """The server's ticker fires due timers through the same engine path as `timers fire-due`,
    on the app's jobs root: the Runtime and the clock the requests use."""
    from jobs.ticker import Ticker
    from webapp import services

    officer = api_as("off1")
    case = api_client.post(
        "/api/v1/cases",
        json={
            "title": "河堤渗水",
            "grid": "V01-D1-G01",
            "category": "safety_hazard",
            "severity": "urgent",
        },
        headers=officer,
    ).get_json()
    item = api_client.get("/api/v1/inbox", headers=officer).get_json()["items"][0]
    data = {"valid": True, "category": "safety_hazard", "severity": "urgent"}
    done = api_client.post(
        f"/api/v1/work-items/{item['id']}/complete", json={"data": data}, headers=officer
    ).get_json()
    assert done["tier"] == "village_secretary"  # urgent hazards start at the village, 8 clock hours

    ticker = Ticker(services(api_app).jobs)
    assert ticker.tick() == 0
    api_clock.advance(hours=8, seconds=1)
    assert ticker.tick() == 1
    after = api_client.get(f"/api/v1/cases/{case['number']}", headers=officer).get_json()
    assert after["tier"] == "town_leadership"
    types = [
        e["type"]
        for e in api_client.get(
            f"/api/v1/cases/{case['number']}/events", headers=officer
        ).get_json()["events"]
    ]
    assert types[-2:] == ["supervised", "escalated"]
    assert ticker.tick() == 0


def test_the_embedded_ticker_delivers_notifications_from_the_outbox(
    api_app, api_client, api_as, monkeypatch
):
    """Without Redis, `gridloop serve` posts the outbox on its own thread."""
    monkeypatch.setenv("GRIDLOOP_WEBHOOK_ALLOW", "127.0.0.1")  # the receiver is on loopback
    from sqlalchemy import select
    from test_notify import Receiver

    from engine.models import Unit
    from jobs.ticker import Ticker
    from webapp import services

    receiver = Receiver()
    try:
        with api_app.app_context():
            grid = db.session.scalars(select(Unit).where(Unit.code == "V01-D1-G01")).one()
            grid.settings = {"notify": [{"url": receiver.url(), "format": "wecom"}]}
            db.session.commit()
        officer = api_as("off1")
        api_client.post(
            "/api/v1/cases", json={"title": "路灯坏了", "grid": "V01-D1-G01"}, headers=officer
        )
        item = api_client.get("/api/v1/inbox", headers=officer).get_json()["items"][0]
        data = {"valid": True, "category": "resident_request", "severity": "normal"}
        api_client.post(
            f"/api/v1/work-items/{item['id']}/complete", json={"data": data}, headers=officer
        )

        ticker = Ticker(services(api_app).jobs)
        assert ticker.deliver() == 1
        (body,) = receiver.bodies()
        assert body["msgtype"] == "text" and body["text"]["content"].startswith("【待办】")
        assert ticker.deliver() == 0  # delivered once
    finally:
        receiver.close()


def test_accepts_form_starts_from_what_the_case_was_opened_with(api_client, api_as):
    """DESIGN §2.1: category and severity given when opening only prefill accept's form. A case
    opened urgent offered a form defaulting to normal, which a client rendering defaults would
    have sent back, lowering the severity."""
    off1 = api_as("off1")
    urgent = open_case(api_client, off1, category="safety_hazard", severity="urgent")["number"]
    plain = open_case(api_client, off1)["number"]
    form = item_of(api_client, off1, urgent)["form"]["properties"]
    assert (form["category"]["default"], form["severity"]["default"]) == (
        "safety_hazard",
        "urgent",
    )
    form = item_of(api_client, off1, plain)["form"]["properties"]  # the schema's own defaults
    assert "default" not in form["category"] and form["severity"].get("default") == "normal"


def test_a_blank_title_is_400_and_opens_nothing(api_client, api_as):
    off1 = api_as("off1")
    for title in (" ", "\u3000\n\t"):
        response = api_client.post(f"{API}/cases", json={"title": title, "grid": G01}, headers=off1)
        assert_error(response, 400, {"title"})
    assert api_client.get(f"{API}/cases", headers=off1).get_json()["items"] == []
