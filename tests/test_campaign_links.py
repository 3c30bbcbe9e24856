"""A campaign's grid item as people meet it outside the campaign pages (DESIGN §12): its task page
shows the campaign and the walk, not a case's loop, details and diagram; submitting it goes back to
the campaign; a hazard case and its campaign link to each other on their pages; the town's
longest-waiting list on the figures page holds cases, not the campaign's grid items."""

from __future__ import annotations

from datetime import timedelta

from apps import web_client
from conftest import START
from sqlalchemy import select
from test_campaign_walk import launch, text_of

from engine import figures
from engine.access import viewer_of
from engine.models import Case, Person, Unit, WorkItem
from webapp import services
from webapp.extensions import db

G01 = "V01-D1-G01"


def return_item(app, campaign_id: int) -> tuple[int, str]:
    with app.app_context():
        item, number = db.session.execute(
            select(WorkItem.id, Case.number)
            .join(Case, Case.id == WorkItem.case_id)
            .where(Case.campaign_id == campaign_id, WorkItem.completed_at.is_(None))
        ).one()
        db.session.remove()
    return item, number


def test_a_campaign_items_task_page_shows_the_campaign_and_goes_back_to_it(make_app):
    app = make_app()
    campaign_id = launch(app)
    item, number = return_item(app, campaign_id)
    client = web_client(app, "off1")
    page = client.get(f"/tasks/{item}")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert f"/campaigns/{campaign_id}/walk/{G01}" in body and f"/campaigns/{campaign_id}" in body
    assert 'data-testid="case-summary"' not in body  # no category, owner, reporter of a case
    assert "逐户宣传禁烧政策" in text_of(page)  # the campaign's instructions
    assert "工作报送" in text_of(page)  # the task's name, not campaign_return
    diagram = client.get(f"/cases/{number}/diagram.bpmn").get_data(as_text=True)
    assert 'id="campaign"' in diagram and "campaign_return" in diagram
    done = client.post(f"/tasks/{item}", data={"note": "全部走访"})
    assert done.status_code == 302
    assert done.headers["Location"].endswith(f"/campaigns/{campaign_id}")


def test_a_hazard_case_and_its_campaign_link_to_each_other(make_app):
    app = make_app()
    campaign_id = launch(app)
    client = web_client(app, "off1")
    answer = client.post(
        f"/campaigns/{campaign_id}/walk/{G01}/visits",
        json={
            "household": {"grid": G01, "number": 2},
            "data": {"told": True, "burning": True},
            "client_id": "hazard-1",
        },
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    number = answer.get_json()["case"]
    case_page = client.get(f"/cases/{number}").get_data(as_text=True)
    assert f'href="/campaigns/{campaign_id}"' in case_page
    campaign_page = web_client(app, "tl1").get(f"/campaigns/{campaign_id}")
    assert f"/cases/{number}" in campaign_page.get_data(as_text=True)
    with app.app_context():  # the event keeps the household's number, never its head's name
        case = db.session.scalars(select(Case).where(Case.number == number)).one()
        assert case.household == "2号"
        db.session.remove()


def test_the_longest_waiting_list_holds_cases_not_campaign_items(make_app):
    app = make_app()
    launch(app, targets=("V01",))
    with app.app_context():
        person = db.session.scalars(select(Person).where(Person.username == "tl1")).one()
        me = viewer_of(db.session, person)
        town = db.session.scalars(select(Unit).where(Unit.level == "town")).one()
        rt = services(app).runtime
        off1 = viewer_of(
            db.session, db.session.scalars(select(Person).where(Person.username == "off1")).one()
        )
        rt.open_case(db.session, off1, title="路灯坏了", grid=G01)
        later = START + timedelta(days=1)
        rows = figures.slowest_open(db.session, me, town, later)
        assert [r["title"] for r in rows] == ["路灯坏了"]
        db.session.remove()


def test_an_auditor_reaches_each_grids_own_record_from_the_campaign(make_app):
    app = make_app()
    campaign_id = launch(app, targets=("V01-D1",))
    page = web_client(app, "aud").get(f"/campaigns/{campaign_id}").get_data(as_text=True)
    numbers = sorted(set(__import__("re").findall(r'href="/cases/(XDK-2026-T\d{4}-\d{3})"', page)))
    assert len(numbers) == 2  # V01-D1's two grids
    step_through = web_client(app, "aud").get(f"/cases/{numbers[0]}/steps")
    assert step_through.status_code == 200
    leader = web_client(app, "tl1").get(f"/campaigns/{campaign_id}").get_data(as_text=True)
    assert 'data-testid="grid-records"' not in leader
