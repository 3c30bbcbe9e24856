"""Residents' contact details stay out of the event chain (DESIGN §6): the reporter lives in its own
table, shown by the rules of §4, and the `opened` event holds only a salted hash of them, so the
chain still covers them and anyone who may see the case recomputes it from the events API alone.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest
from apps import bearer, build_app, dispose_app
from conftest import ORG_YAML

from engine.clock import FixedClock
from engine.events import case_events, verify
from engine.models import Case, Reporter
from webapp.extensions import db

PHONE, NAME = "13812345678", "王大妈"


@pytest.fixture
def app(tmp_path):
    clock = FixedClock(datetime(2026, 11, 23, 2, 0, tzinfo=UTC))
    app = build_app(tmp_path / "reporters.sqlite", ORG_YAML, clock)
    yield app
    dispose_app(app)


def headers(app, username: str) -> dict:
    return bearer(app.test_client(), username)


def open_case(app) -> str:
    response = app.test_client().post(
        "/api/v1/cases",
        json={
            "title": "门前水管破裂",
            "grid": "V01-D1-G01",
            "reporter": {"name": NAME, "phone": PHONE},
        },
        headers=headers(app, "off1"),
    )
    assert response.status_code == 201, response.json
    return response.json["number"]


def recompute(events: list[dict]) -> str:
    """DESIGN §6 in a few lines, from the events API's JSON alone."""
    prev = "0" * 64
    for event in events:
        fields = {k: event[k] for k in ("case", "seq", "at", "type", "actor", "task", "data")}
        fields["diagram"] = event["diagram"]
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        prev = hashlib.sha256((prev + "\n" + text).encode("utf-8")).hexdigest()
        assert prev == event["hash"], event["seq"]
    return prev


def test_the_events_api_carries_no_phone_or_name_and_still_recomputes(app):
    number = open_case(app)
    answer = app.test_client().get(f"/api/v1/cases/{number}/events", headers=headers(app, "dl1"))
    assert answer.status_code == 200
    text = answer.get_data(as_text=True)
    assert PHONE not in text and PHONE[-4:] not in text and NAME not in text
    opened = answer.json["events"][0]
    assert opened["type"] == "opened" and "reporter" not in opened["data"]
    assert len(opened["data"]["reporter_hash"]) == 64
    assert recompute(answer.json["events"]) == answer.json["head"]


def test_the_hash_covers_the_reporter_so_changing_them_is_found(app):
    number = open_case(app)
    with app.app_context():
        case = db.session.query(Case).filter_by(number=number).one()
        reporter = db.session.get(Reporter, case.id)
        assert (reporter.name, reporter.phone) == (NAME, PHONE)
        record = json.dumps(
            {"name": NAME, "phone": PHONE},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        expected = hashlib.sha256((reporter.salt + record).encode("utf-8")).hexdigest()
        data = json.loads(case_events_data(case))
        assert data["reporter_hash"] == expected
        # Two cases by the same reporter get different hashes: the salt is per case.
        assert len(reporter.salt) == 32
        assert verify(db.session, case).ok


def case_events_data(case: Case) -> str:
    return case_events(db.session, case)[0].data


def test_pages_show_the_reporter_by_the_rules_of_access(app):
    number = open_case(app)
    owner = app.test_client()
    owner.post("/login", data={"username": "off1", "password": "pw"})
    assert PHONE in owner.get(f"/cases/{number}").get_data(as_text=True)  # holds the accept
    leader = app.test_client()
    leader.post("/login", data={"username": "dl1", "password": "pw"})
    page = leader.get(f"/cases/{number}").get_data(as_text=True)
    assert PHONE not in page and "138****5678" in page and NAME in page
