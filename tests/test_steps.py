"""The step-through viewer (webapp/steps.py): steps.json has one frame per event, and each frame's
open tasks are the work items the service had open after that event; the dispatch and time-limit
rows that decided are named; who may see it and whose viewing is logged; both languages.

The organisation is conftest's ORG_YAML: the case is in V01-D1-G01 (officer off1, leader gl1,
district leader dl1, secretary vs1); gl3 leads a grid of the other village; aud audits. Time is
the app's FixedClock, moved on between steps, never slept.
"""

from __future__ import annotations

import json

import pytest
from apps import bearer, case_accesses, web_client
from conftest import GRID
from sqlalchemy import select

from engine.clock import iso
from engine.models import Case, CaseEvent, WorkItem
from webapp.extensions import db

API = "/api/v1"
ACCEPT = {"valid": True, "category": "resident_request", "severity": "normal", "note": "已核实"}
# The loop to archive: who completes what, in order.
LOOP = [
    ("off1", ACCEPT),
    ("gl1", {"outcome": "refer_up", "note": "需要片长协调"}),
    ("dl1", {"outcome": "resolved", "note": "已修好"}),
    ("off1", {"satisfaction": "satisfied"}),
    ("dl1", {"summary": "路灯已更换"}),
    ("vs1", {"approved": True}),
]


class Driver:
    """Takes a case round the loop over the JSON API and keeps, after each step, how many events
    the case had and which work items were open (their element ids) and the earliest deadline:
    what the frame of that step's last event must show."""

    def __init__(self, app, clock):
        self.app, self.clock, self.client, self.tokens = app, clock, app.test_client(), {}
        self.after: dict[int, tuple[list[str], str | None]] = {}

    def headers(self, username: str) -> dict[str, str]:
        if username not in self.tokens:
            self.tokens[username] = bearer(self.client, username)
        return self.tokens[username]

    def open(self) -> str:
        response = self.client.post(
            f"{API}/cases",
            json={"grid": GRID, "title": "路灯坏了", "description": "村口路灯不亮"},
            headers=self.headers("off1"),
        )
        assert response.status_code == 201, response.get_json()
        number = response.get_json()["number"]
        self.note(number)
        return number

    def complete(self, username: str, number: str, data: dict) -> None:
        self.clock.advance(hours=1)
        inbox = self.client.get(f"{API}/inbox", headers=self.headers(username)).get_json()
        [item] = [i for i in inbox["items"] if i["case"]["number"] == number]
        response = self.client.post(
            f"{API}/work-items/{item['id']}/complete",
            json={"data": data},
            headers=self.headers(username),
        )
        assert response.status_code == 200, response.get_json()
        self.note(number)

    def archived(self) -> str:
        number = self.open()
        for username, data in LOOP:
            self.complete(username, number, data)
        return number

    def note(self, number: str) -> None:
        """What the service holds now: the open items' element ids, by the case's last seq."""
        with self.app.app_context():
            case = db.session.scalars(select(Case).where(Case.number == number)).one()
            items = db.session.scalars(
                select(WorkItem).where(WorkItem.case_id == case.id, WorkItem.completed_at.is_(None))
            ).all()
            last = max(
                db.session.scalars(select(CaseEvent.seq).where(CaseEvent.case_id == case.id))
            )
            dues = [iso(i.due_at) for i in items if i.due_at is not None]
            self.after[last] = (sorted(i.spec for i in items), min(dues) if dues else None)
            db.session.remove()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def driver(app, clock) -> Driver:
    return Driver(app, clock)


@pytest.fixture
def done(driver) -> str:
    return driver.archived()


def frames_of(client, number: str) -> dict:
    response = client.get(f"/cases/{number}/steps.json")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "private, no-store"
    return response.get_json()


# ------------------------------------------------------------------ the frames


def test_one_frame_per_event_each_showing_the_items_open_after_it(app, driver, done):
    body = frames_of(web_client(app, "gl1"), done)
    events = driver.client.get(f"{API}/cases/{done}/events", headers=driver.headers("gl1"))
    seqs = [e["seq"] for e in events.get_json()["events"]]
    frames = body["frames"]
    assert body["case"] == done and "divergence" not in body
    assert [f["seq"] for f in frames] == seqs and body["events"] == len(seqs)
    assert [f["type"] for f in frames] == [e["type"] for e in events.get_json()["events"]]
    by_seq = {f["seq"]: f for f in frames}
    assert set(driver.after) <= set(by_seq)
    for seq, (specs, due_at) in driver.after.items():
        assert by_seq[seq]["active"] == specs, (seq, by_seq[seq]["type"])
        assert by_seq[seq]["due_at"] == due_at, seq
    # The steps the loop took, by the open task after each: accept, then handling at the grid.
    assert frames[0]["type"] == "opened" and frames[0]["active"] == ["accept"]
    accepted = next(f for f in frames if f["task"] == "accept" and f["type"] == "task_completed")
    assert by_seq[min(s for s in driver.after if s >= accepted["seq"])]["active"] == ["handle_grid"]
    assert frames[-1]["type"] == "archived" and frames[-1]["active"] == []
    assert frames[-1]["due_at"] is None
    # What had run only grows, and what ran in a step is part of it.
    for before, after in zip(frames, frames[1:], strict=False):
        assert set(before["done"]) <= set(after["done"])
        assert set(after["ran"]) <= set(after["done"])


def test_the_dispatch_and_the_time_limit_rows_are_named(app, done):
    frames = frames_of(web_client(app, "gl1"), done)["frames"]
    accepted = next(f for f in frames if f["task"] == "accept" and f["type"] == "task_completed")
    decided = {d["element"]: d for f in frames for d in f["decisions"]}
    assert {"dispatch", "time_limit"} <= set(decided)
    mine = {d["element"]: d for d in accepted["decisions"]}
    assert mine["dispatch"]["table_name"] == "派单：起始办理层级"
    assert mine["time_limit"]["title"] == f"办理时限 第{mine['time_limit']['row']}行"
    assert mine["dispatch"]["outputs"] == {"tier": "grid_leader"}
    assert mine["dispatch"]["row"] >= 1 and mine["dispatch"]["description"]
    assert mine["time_limit"]["outputs"]["limit_hours"] == 24
    assert "limit_hours=24" in mine["time_limit"]["outputs_text"]
    assert accepted["due_at"] and accepted["due_text"]


def completed(frames: list[dict], task: str) -> dict:
    return next(f for f in frames if f["type"] == "task_completed" and f["task"] == task)


def test_a_frame_tells_the_event_as_the_case_page_does(app, done):
    frames = frames_of(web_client(app, "gl1"), done)["frames"]
    opened, accepted = frames[0], completed(frames, "accept")
    assert opened["actor"] == "off1" and opened["actor_name"] == "周信息员"
    assert opened["at_text"] == "2026-11-23 10:00:00", "in Asia/Shanghai"
    assert opened["summary"] == "登记"
    assert {f["name"]: f["value"] for f in opened["fields"]} == {
        "title": "路灯坏了",
        "description": "村口路灯不亮",
    }
    assert accepted["summary"] == "完成：受理 · 一般 · 转至网格长"
    fields = {f["label"]: f["value"] for f in accepted["fields"]}
    assert fields == {"是否有效": "有效", "类别": "民情信息", "紧急程度": "一般", "说明": "已核实"}
    assert accepted["data"]["category"] == "resident_request"
    assert accepted["active_names"] == ["处置 · 网格长"]
    assert accepted["due_text"] == "2026-11-24 11:00:00", "24 working hours, Asia/Shanghai"
    assert completed(frames, "review")["fields"] == [
        {"name": "approved", "label": "审核通过", "value": "通过"}
    ]
    claimed = next(f for f in frames if f["type"] == "claimed")
    assert claimed["fields"] == [] and claimed["ran"] == [] and claimed["decisions"] == []


def tamper(app, number: str, seq: int, change) -> None:
    """Rewrite one stored event's data behind the chain's back."""
    with app.app_context():
        case = db.session.scalars(select(Case).where(Case.number == number)).one()
        row = db.session.scalars(
            select(CaseEvent).where(CaseEvent.case_id == case.id, CaseEvent.seq == seq)
        ).one()
        row.data = json.dumps(change(json.loads(row.data)), ensure_ascii=False)
        db.session.commit()
        db.session.remove()


def test_a_record_that_stops_agreeing_gives_the_frames_up_to_there(app, done):
    tamper(app, done, 3, lambda data: {**data, "note": "未核实"})
    body = frames_of(web_client(app, "aud"), done)
    assert [f["seq"] for f in body["frames"]] == [1, 2]
    assert body["divergence"]["seq"] == 3 and body["divergence"]["field"] == "hash"
    assert "第 3 条事件" in body["divergence"]["text"]


def test_a_record_the_diagram_cannot_run_still_answers(app, done):
    """accept's data without `valid`: the diagram's gateway cannot decide, so the step raises."""
    tamper(app, done, 3, lambda data: {"outcome": "resolved"})
    body = frames_of(web_client(app, "aud"), done)
    assert body["divergence"]["text"]
    assert [f["seq"] for f in body["frames"]] in ([], [1, 2])


# ------------------------------------------------------------------ who sees it


def test_outside_a_grid_leaders_units_the_viewer_does_not_exist(app, done):
    client = web_client(app, "gl3")
    assert client.get(f"/cases/{done}/steps").status_code == 404
    assert client.get(f"/cases/{done}/steps.json").status_code == 404
    assert case_accesses(app) == []


def test_an_auditors_viewing_is_logged_once_a_page_a_leaders_is_not(app, done):
    """The page's fetch of its events is the opening that is logged (the page alone shows only
    the case's number and title, as the case list does)."""
    leader = web_client(app, "gl1")
    assert leader.get(f"/cases/{done}/steps").status_code == 200
    frames_of(leader, done)
    assert case_accesses(app) == []
    auditor = web_client(app, "aud")
    assert auditor.get(f"/cases/{done}/steps").status_code == 200
    assert case_accesses(app) == []
    frames_of(auditor, done)  # the page's own fetch of the events
    assert case_accesses(app) == [("aud", "steps")]


def test_the_viewer_needs_a_sign_in(app, done):
    for path in (f"/cases/{done}/steps", f"/cases/{done}/steps.json"):
        response = app.test_client().get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]


# ------------------------------------------------------------------ the page


def test_the_page_is_in_chinese_and_the_case_page_links_to_it(app, done):
    client = web_client(app, "gl1")
    html = client.get(f"/cases/{done}/steps").get_data(as_text=True)
    assert "逐步回放" in html and "上一步" in html and "Step through" not in html
    assert f'data-frames-url="/cases/{done}/steps.json"' in html
    assert f'data-diagram-url="/cases/{done}/diagram.bpmn"' in html
    assert 'data-msg-pause="暂停"' in html
    assert "js/steps.js" in html and "bpmn-navigated-viewer" in html
    case_page = client.get(f"/cases/{done}").get_data(as_text=True)
    assert f'href="/cases/{done}/steps"' in case_page


def test_the_page_and_its_frames_are_in_english_on_request(app, done):
    client = web_client(app, "gl1", lang="en")
    html = client.get(f"/cases/{done}/steps").get_data(as_text=True)
    assert "Step through" in html and "Previous step" in html and "逐步回放" not in html
    assert 'data-msg-pause="Pause"' in html
    frames = frames_of(client, done)["frames"]
    accepted = completed(frames, "accept")
    assert accepted["summary"].startswith("Completed: Accept")
    fields = {f["label"]: f["value"] for f in accepted["fields"]}
    assert fields["Category"] == "Resident request" and fields["Severity"] == "Normal"
    assert fields["Is it valid?"] == "Valid"
    assert frames[0]["actor_name"] == "周信息员"
    [limit] = [d for d in accepted["decisions"] if d["element"] == "time_limit"]
    assert limit["title"] == f"办理时限, row {limit['row']}"
