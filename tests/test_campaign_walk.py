"""走访 (DESIGN §12): a grid's walk through its households for a campaign, as its officers use it on
a phone (webapp/campaign_walk.py). The page is for the grid's information officers and leader
only; the page's JSON route records a visit, answers a resent client id with the same visit (200),
refuses bad checklist data field by field, names the case a hazard opened, checks the CSRF token in
the header (and hands out a fresh one), answers 401 once the sign-in has ended; the plain form
works without the script; the inbox links a campaign's return item to the walk.

The organisation is conftest's: grid V01-D1-G01 (officers off1 and off1b, leader gl1) has four
households; off2 serves V01-D1-G02."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from apps import web_client
from conftest import START
from sqlalchemy import func, select

from engine.access import viewer_of
from engine.clock import iso
from engine.models import Case, Person, Visit
from webapp import services
from webapp.extensions import db

G01 = "V01-D1-G01"
CHECKLIST = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "told": {"type": "boolean", "title": "已宣传", "x-title-en": "Told"},
        "burning": {"type": "boolean", "title": "发现焚烧隐患", "x-opens-case": True},
        "note": {"type": "string", "title": "备注", "maxLength": 20},
    },
    "required": ["told"],
}


def launch(app, targets=(G01,)) -> int:
    with app.app_context():
        person = db.session.scalars(select(Person).where(Person.username == "tl1")).one()
        body = {
            "title": "秸秆禁烧宣传",
            "instructions": "逐户宣传禁烧政策\n发现隐患当场登记",
            "kind": "patrol",
            "targets": list(targets),
            "due_at": iso(START + timedelta(days=10)),
            "checklist": CHECKLIST,
        }
        campaign = services(app).runtime.launch_campaign(
            db.session, viewer_of(db.session, person), body
        )
        db.session.commit()
        campaign_id = campaign.id
        db.session.remove()
    return campaign_id


@pytest.fixture
def walk(make_app):
    app = make_app()
    return app, launch(app)


def text_of(response) -> str:
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", response.get_data(as_text=True), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def visits(app) -> list[tuple[int, str, str]]:
    with app.app_context():
        rows = db.session.execute(
            select(Visit.household_id, Visit.client_id, Visit.recorded_by).order_by(Visit.id)
        ).all()
        db.session.remove()
    return [tuple(r) for r in rows]


def body(number=1, client_id="c-1", grid=G01, **data):
    return {
        "household": {"grid": grid, "number": number},
        "data": {"told": True, **data},
        "client_id": client_id,
    }


def test_the_walk_page_is_for_the_grids_officers_and_leader_only(walk):
    app, campaign_id = walk
    url = f"/campaigns/{campaign_id}/walk/{G01}"
    page = web_client(app, "off1").get(url)
    assert page.status_code == 200
    text = text_of(page)
    assert "秸秆禁烧宣传" in text and "逐户宣传禁烧政策" in text
    assert "已走访 0/4" in text
    assert text.count("保存") >= 4 and "已宣传" in text and "发现焚烧隐患" in text
    assert page.get_data(as_text=True).count('data-testid="household"') == 4
    assert web_client(app, "gl1").get(url).status_code == 200
    for username in ("off2", "gl2", "adm", "ps1"):  # the grid is outside their units
        assert web_client(app, username).get(url).status_code == 404, username
    for username in ("dl1", "tl1", "aud"):  # they see the grid, and record no visits
        assert web_client(app, username).get(url).status_code == 403, username
    off1 = web_client(app, "off1")
    for other in (
        f"/campaigns/{campaign_id}/walk/V01-D1-G02",  # not a target, nor off1's
        f"/campaigns/{campaign_id + 1}/walk/{G01}",
        f"/campaigns/{campaign_id}/walk/NOPE",
    ):
        assert off1.get(other).status_code == 404, other
    # Another grid's officer cannot record a visit or take a token either.
    off2 = web_client(app, "off2")
    assert off2.post(f"{url}/visits", json=body()).status_code == 404
    assert off2.get(f"{url}/token").status_code == 404
    assert visits(app) == []


def test_the_page_route_records_a_visit_and_a_resend_is_the_same_visit(walk):
    app, campaign_id = walk
    off1 = web_client(app, "off1")
    url = f"/campaigns/{campaign_id}/walk/{G01}/visits"
    first = off1.post(url, json=body(number=2, client_id="phone-1"))
    assert first.status_code == 201, first.get_json()
    answer = first.get_json()
    assert answer["household"] == {"grid": G01, "number": 2}
    assert answer["client_id"] == "phone-1" and answer["recorded_by"] == "off1"
    assert answer["progress"] == {"covered": 1, "total": 4}
    assert answer["case"] is None and answer["recorded_by_name"] == "周信息员"
    again = off1.post(url, json=body(number=2, client_id="phone-1"))  # resent after a drop
    assert again.status_code == 200 and again.get_json()["id"] == answer["id"]
    assert len(visits(app)) == 1
    # A second visit of the same household counts once.
    third = off1.post(url, json=body(number=2, client_id="phone-2"))
    assert third.status_code == 201 and third.get_json()["progress"]["covered"] == 1
    page = text_of(off1.get(f"/campaigns/{campaign_id}/walk/{G01}"))
    assert "已走访 1/4" in page and "周信息员" in page and "2 次走访" in page


def test_bad_visits_answer_400_field_by_field_and_record_nothing(walk):
    app, campaign_id = walk
    off1 = web_client(app, "off1")
    url = f"/campaigns/{campaign_id}/walk/{G01}/visits"
    refused = off1.post(
        url,
        json={
            "household": {"grid": G01, "number": 1},
            "data": {"note": "x" * 21, "burning": "yes"},
            "client_id": "c-9",
        },
    )
    assert refused.status_code == 400
    error = refused.get_json()["error"]
    assert error["code"] == "invalid"
    assert error["fields"] == {
        "data.told": "此项必填。",
        "data.note": "最多 20 个字。",
        "data.burning": "该值无效。",
    }
    missing = off1.post(url, json={"household": "1", "data": {}})
    assert missing.status_code == 400
    assert set(missing.get_json()["error"]["fields"]) == {"client_id", "household"}
    assert off1.post(url, data="{", content_type="application/json").status_code == 400
    assert off1.post(url, json=["x"]).status_code == 400
    for number in (99, 2**40):  # no such household in the grid
        response = off1.post(url, json=body(number=number, client_id=f"n-{number}"))
        assert response.status_code == 404, number
        assert response.get_json()["error"]["code"] == "not_found"
    for number in (0, -1, "1", True, None):  # not a household's number at all: that field
        response = off1.post(url, json=body(number=number, client_id=f"n-{number}"))
        assert response.status_code == 400, number
        assert set(response.get_json()["error"]["fields"]) == {"household.number"}
    # A household of the grid named in the body, not the page's: 404.
    assert off1.post(url, json=body(grid="V01-D1-G02")).status_code == 404
    assert visits(app) == []


def test_a_hazard_ticked_opens_a_case_and_the_answer_names_it(walk):
    app, campaign_id = walk
    off1 = web_client(app, "off1")
    url = f"/campaigns/{campaign_id}/walk/{G01}/visits"
    response = off1.post(url, json=body(number=3, client_id="h-1", burning=True))
    assert response.status_code == 201
    number = response.get_json()["case"]
    assert number and response.get_json()["data"]["case"] == number
    with app.app_context():
        case = db.session.scalars(select(Case).where(Case.number == number)).one()
        assert (case.campaign_id, case.process) == (campaign_id, "case_loop")
        db.session.remove()
    page = off1.get(f"/campaigns/{campaign_id}/walk/{G01}").get_data(as_text=True)
    assert f'href="/cases/{number}"' in page
    assert off1.get(f"/cases/{number}").status_code == 200


def test_the_csrf_token_is_checked_in_the_header_and_a_fresh_one_is_handed_out(make_app):
    app = make_app(csrf=True)
    campaign_id = launch(app)
    client = app.test_client()
    login = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', login).group(1)
    client.post("/login", data={"username": "off1", "password": "pw", "csrf_token": token})
    base = f"/campaigns/{campaign_id}/walk/{G01}"
    stale = client.post(f"{base}/visits", json=body(), headers={"X-CSRFToken": "stale"})
    assert stale.status_code == 400 and stale.get_json()["error"]["code"] == "csrf"
    fresh = client.get(f"{base}/token")
    assert fresh.status_code == 200
    header = {"X-CSRFToken": fresh.get_json()["csrf"]}
    assert client.post(f"{base}/visits", json=body(), headers=header).status_code == 201
    # The page's own token (in its <meta>) works as well.
    page = client.get(base).get_data(as_text=True)
    meta = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    second = client.post(
        f"{base}/visits", json=body(client_id="c-2"), headers={"X-CSRFToken": meta}
    )
    assert second.status_code == 201
    # Signed out: the script is told 401 (its queue stays), the page goes to the login page.
    client.post("/logout", data={"csrf_token": meta})
    ended = client.post(f"{base}/visits", json=body(client_id="c-3"), headers=header)
    assert ended.status_code == 401 and ended.get_json()["error"]["code"] == "unauthorized"
    assert client.get(f"{base}/token").status_code == 401
    gone = client.get(base)
    assert gone.status_code == 302 and "/login" in gone.headers["Location"]
    assert len(visits(app)) == 2


def test_without_the_script_the_plain_form_records_a_visit_once(walk):
    app, campaign_id = walk
    off1 = web_client(app, "off1")
    url = f"/campaigns/{campaign_id}/walk/{G01}/visits"
    form = {"number": "4", "told": "1", "note": "不在家，留了传单", "client_id": "form-1"}
    done = off1.post(url, data=form)
    assert done.status_code == 302 and done.headers["Location"].endswith("#h-4")
    assert off1.post(url, data=form).status_code == 302  # the same form sent twice
    assert len(visits(app)) == 1
    page = off1.get(f"/campaigns/{campaign_id}/walk/{G01}")
    assert "已走访 1/4" in text_of(page) and "已记录 4 号住户的走访" in text_of(page)
    refused = off1.post(url, data={"number": "1", "note": "x" * 21})
    assert refused.status_code == 400
    assert 'data-testid="error-note"' in refused.get_data(as_text=True)
    assert "最多 20 个字" in text_of(refused)
    assert off1.post(url, data={"number": "77", "told": "1"}).status_code == 404
    assert off1.post(url, data={"number": "x"}).status_code == 404
    assert len(visits(app)) == 1


def test_an_auditor_is_refused_before_anything_is_read(walk):
    app, campaign_id = walk
    aud = web_client(app, "aud")
    url = f"/campaigns/{campaign_id}/walk/{G01}/visits"
    assert aud.post(url, json=body()).status_code == 403
    assert aud.post(url, data={"number": "1", "told": "1"}).status_code == 403
    assert visits(app) == []


def test_the_inbox_links_the_return_item_to_the_walk(walk):
    app, campaign_id = walk
    page = web_client(app, "off1").get("/")
    text = text_of(page)
    assert "秸秆禁烧宣传" in text and "工作任务" in text
    assert f'href="/campaigns/{campaign_id}/walk/{G01}"' in page.get_data(as_text=True)
    assert "走访" in text


def test_the_page_speaks_english_on_request(walk):
    app, campaign_id = walk
    page = text_of(web_client(app, "off1", "en").get(f"/campaigns/{campaign_id}/walk/{G01}"))
    assert "Visited 0/4" in page and "Save" in page and "Told" in page


def test_the_visit_is_on_the_grids_chain(walk):
    app, campaign_id = walk
    off1 = web_client(app, "off1")
    off1.post(f"/campaigns/{campaign_id}/walk/{G01}/visits", json=body())
    with app.app_context():
        from engine.models import CaseEvent

        count = db.session.scalar(
            select(func.count())
            .select_from(CaseEvent)
            .join(Case, Case.id == CaseEvent.case_id)
            .where(Case.campaign_id == campaign_id, CaseEvent.type == "visited")
        )
        db.session.remove()
    assert count == 1
