"""工作任务 pages (DESIGN §12, helper 2): a town leader launches a campaign through the form (the
checklist builder's rows, or the JSON Schema its script writes; the targets' tree; the due time in
Asia/Shanghai), a bad field re-renders with its message in Chinese and launches nothing, others
get 403; the list shows each campaign's coverage; the show page's heat table drills town →
village → district → grid and lists the households not reached with masked phones; the xlsx holds
the same figures as engine/campaigns.coverage; a campaign or unit outside one's units is 404.

The organisation is conftest's, with grid V01-D1-G01's four households listed with phones.
"""

from __future__ import annotations

import html
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from apps import web_client
from conftest import ORG_YAML, START
from openpyxl import load_workbook
from sqlalchemy import func, select

from engine import campaigns
from engine.access import viewer_of
from engine.clock import iso
from engine.models import Campaign, Case, Person
from webapp import services
from webapp.campaign_pages import level_figures
from webapp.extensions import db

G01 = "V01-D1-G01"
LISTED = (
    "            households:\n"
    "              - {number: 1, head: 王大, phone: '13812345678', in_group: true}\n"
    "              - {number: 2, head: 李二, phone: 13900001111}\n"
    "              - {number: 3, head: 张三}\n"
    "              - {number: 4, head: 赵四, in_group: true}\n"
)
ORG = ORG_YAML.replace("            households: 4\n", LISTED)
assert ORG != ORG_YAML
TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
DUE = START + timedelta(days=10)
CHECKLIST = {
    "type": "object",
    "properties": {
        "item_1": {"title": "已宣传禁烧政策", "type": "boolean"},
        "item_2": {"title": "发现焚烧隐患", "type": "boolean", "x-opens-case": True},
        "item_3": {"title": "备注", "type": "string", "maxLength": 500},
    },
}


@pytest.fixture
def app(make_app):
    return make_app(ORG)


def text_of(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def count(app, model=Campaign) -> int:
    with app.app_context():
        n = db.session.scalar(select(func.count()).select_from(model))
        db.session.remove()
    return n


def launch(app, targets=("V01", "V02"), by="tl1", kind="patrol") -> int:
    """A campaign launched through the engine, as the form would."""
    jobs = services(app).jobs
    session = jobs.sessions()
    try:
        person = session.scalars(select(Person).where(Person.username == by)).one()
        body = {
            "title": "秸秆禁烧宣传",
            "instructions": "逐户宣传",
            "kind": kind,
            "targets": list(targets),
            "due_at": iso(DUE),
            "checklist": CHECKLIST,
        }
        return jobs.runtime.launch_campaign(session, viewer_of(session, person), body).id
    finally:
        session.close()


def visit(app, campaign_id: int, number: int, who="off1", grid=G01) -> None:
    jobs = services(app).jobs
    session = jobs.sessions()
    try:
        person = session.scalars(select(Person).where(Person.username == who)).one()
        body = {
            "household": {"grid": grid, "number": number},
            "data": {"item_1": True},
            "client_id": f"{who}-{grid}-{number}",
        }
        jobs.runtime.record_visit(session, viewer_of(session, person), campaign_id, body)
    finally:
        session.close()


def form(**fields) -> dict:
    """A launch form as the page posts it without its script: rows as item-N fields."""
    data = {
        "title": "秸秆禁烧宣传",
        "instructions": "逐户宣传禁烧政策\n发现隐患当场处置",
        "kind": "patrol",
        "targets": ["V01", G01],  # the grid is under the village: only V01 is sent on
        "due_date": "2026-12-03",
        "due_time": "17:30",
        "item-1-label": "已宣传禁烧政策",
        "item-1-type": "boolean",
        "item-2-label": "发现焚烧隐患",
        "item-2-type": "boolean",
        "item-2-opens": "1",
        "item-3-label": "",
        "item-3-type": "boolean",
        "item-4-label": "备注",
        "item-4-type": "string",
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


# ------------------------------------------------------------------ launching


def test_a_town_leader_launches_through_the_page_with_its_csrf_token(make_app):
    app = make_app(ORG, csrf=True)
    client = app.test_client()
    login = client.get("/login").get_data(as_text=True)
    client.post(
        "/login",
        data={"username": "tl1", "password": "pw", "csrf_token": TOKEN.search(login).group(1)},
    )
    page = client.get("/campaigns/new")
    assert page.status_code == 200
    token = TOKEN.search(page.get_data(as_text=True)).group(1)
    # The town's tree: villages, districts and grids, each a checkbox.
    for code in ("XDK", "V01", "V01-D1", G01, "V02-D1-G02"):
        assert f'value="{code}"' in page.get_data(as_text=True), code
    assert client.post("/campaigns/new", data=form()).status_code == 400  # no token
    assert count(app) == 0

    response = client.post("/campaigns/new", data={**form(), "csrf_token": token})
    assert response.status_code == 302, text_of(response)
    with app.app_context():
        campaign = db.session.scalars(select(Campaign)).one()
        assert response.headers["Location"] == f"/campaigns/{campaign.id}"
        assert campaign.targets == ["V01"]
        assert campaign.kind == "patrol"
        assert campaign.instructions == "逐户宣传禁烧政策\n发现隐患当场处置"
        # 17:30 in Shanghai is 09:30 UTC.
        assert campaign.due_at == datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
        assert campaign.checklist == {
            "type": "object",
            "properties": {
                "item_1": {"title": "已宣传禁烧政策", "type": "boolean"},
                "item_2": {"title": "发现焚烧隐患", "type": "boolean", "x-opens-case": True},
                "item_3": {"title": "备注", "type": "string", "maxLength": 500},
            },
            "additionalProperties": False,  # a visit answers the items and nothing else
        }
        grids = db.session.scalar(
            select(func.count()).select_from(Case).where(Case.campaign_id == campaign.id)
        )
        assert grids == 2  # V01's two grids
        db.session.remove()
    shown = text_of(client.get(response.headers["Location"]))
    assert "已下发到 2 个网格" in shown and "秸秆禁烧宣传" in shown


def test_a_bad_launch_rerenders_with_chinese_messages_keeping_the_entries(app):
    client = web_client(app, "tl1")
    bad = form(
        title=" ",
        kind="party",
        targets=None,
        due_date="2026-11-01",
        **{"item-1-label": "", "item-1-type": "boolean", "item-1-opens": "1"},
    )
    response = client.post("/campaigns/new", data=bad)
    assert response.status_code == 400
    page = text_of(response)
    assert "任务未下发" in page
    for field, words in {
        "title": "请填写标题",
        "kind": "请选择任务类型",
        "targets": "请至少选择一个村、片区或网格",
        "due": "截止时间必须晚于现在",
        "checklist": "请改正标出的清单项",
    }.items():
        found = re.search(rf'data-testid="error-{field}">([^<]*)<', page)
        assert found and words in found.group(1), field
    assert "请填写该项的名称" in page  # the row with a tick but no label
    # What was entered stays.
    assert "逐户宣传禁烧政策\n发现隐患当场处置" in page
    assert 'value="发现焚烧隐患"' in page and 'value="备注"' in page
    assert count(app) == 0 and count(app, Case) == 0

    # A date that is not a date, a checklist of blank rows.
    blank = {k: "" for k in form() if k.endswith("-label")}
    response = client.post(
        "/campaigns/new", data=form(due_date="明天", **blank, **{"item-2-opens": None})
    )
    page = text_of(response)
    assert response.status_code == 400
    assert "请按 年-月-日 填写日期" in page and "请至少添加一项清单" in page
    assert count(app) == 0


def test_the_script_written_schema_is_read_and_rebuilt_from_its_items(app):
    client = web_client(app, "tl1")
    written = {
        "type": "object",
        "properties": {
            "a": {"title": "已入群", "type": "boolean", "x-opens-case": True, "junk": 1},
            "b": {"title": "人数", "type": "string"},
        },
        "required": ["a"],
    }
    import json

    response = client.post(
        "/campaigns/new",
        data=form(kind="survey", checklist=json.dumps(written, ensure_ascii=False)),
    )
    assert response.status_code == 302, text_of(response)
    with app.app_context():
        campaign = db.session.scalars(select(Campaign)).one()
        assert campaign.checklist["properties"] == {
            "item_1": {"title": "已入群", "type": "boolean", "x-opens-case": True},
            "item_2": {"title": "人数", "type": "string", "maxLength": 500},
        }
        assert "required" not in campaign.checklist
        db.session.remove()


def test_more_rows_without_the_script_launches_nothing(app):
    response = web_client(app, "tl1").post("/campaigns/new", data=form(more="1"))
    assert response.status_code == 200
    page = text_of(response)
    assert page.count('data-testid="checklist-item"') >= 3 + 5
    assert 'value="已宣传禁烧政策"' in page
    assert count(app) == 0


@pytest.mark.parametrize("username", ["off1", "gl1", "vs1", "aud"])
def test_only_town_leaders_may_open_the_launch_form(app, username):
    client = web_client(app, username)
    refused = client.get("/campaigns/new")
    assert refused.status_code == 403
    assert client.post("/campaigns/new", data=form()).status_code == 403
    assert count(app) == 0
    if username != "aud":
        assert "只有镇领导可以下发工作任务" in text_of(refused)
    assert 'href="/campaigns/new"' not in text_of(client.get("/campaigns"))


# ------------------------------------------------------------------ reading


def test_the_list_shows_each_campaign_with_its_coverage(app):
    campaign_id = launch(app)
    visit(app, campaign_id, 1)
    visit(app, campaign_id, 2)
    tl1 = text_of(web_client(app, "tl1").get("/campaigns"))
    assert 'data-testid="launch"' in tl1
    row = re.search(r'<li class="item" data-testid="campaign"[^>]*>', tl1).group(0)
    assert f'data-id="{campaign_id}"' in row
    assert 'data-covered="2" data-total="13"' in row  # 4 + 3 + 3 + 3 households
    assert "巡查" in tl1 and "进行中" in tl1 and "走访 2/13" in tl1
    assert "2026-12-03 10:00" in tl1  # the due time in Shanghai
    # An officer sees only their grid's share; no launch button.
    off1 = text_of(web_client(app, "off1").get("/campaigns"))
    assert "走访 2/4" in off1 and 'data-testid="launch"' not in off1
    # English on request.
    english = text_of(web_client(app, "tl1", "en").get("/campaigns"))
    assert "Patrol" in english and "Visited 2/13" in english


def test_a_campaign_not_for_ones_units_is_not_listed_and_the_empty_list_says_so(app):
    launch(app, targets=("V01",))
    page = text_of(web_client(app, "off3").get("/campaigns"))
    assert 'data-testid="no-campaigns"' in page and "镇里下发" in page
    leader = text_of(web_client(app, "tl1").get("/campaigns"))
    assert 'data-testid="no-campaigns"' not in leader


def _heat(page: str) -> list[tuple[str, str, str]]:
    return re.findall(
        r'data-testid="heat-row" data-code="([^"]+)" data-level="(\w+)" '
        r'data-covered="(\d+)" data-total="(\d+)"',
        page,
    )


def test_the_heat_table_lists_villages_and_drills_down_to_a_grid(app):
    campaign_id = launch(app)
    visit(app, campaign_id, 1)
    visit(app, campaign_id, 3)
    client = web_client(app, "tl1")
    url = f"/campaigns/{campaign_id}"
    town = text_of(client.get(url))
    assert _heat(town) == [
        ("XDK", "town", "2", "13"),
        ("V01", "village", "2", "7"),
        ("V02", "village", "0", "6"),
    ]
    assert f'href="{url}?unit=V01"' in town
    assert "cp-heat-0" in town and "15%" in town  # 2 of 13
    village = text_of(client.get(f"{url}?unit=V01"))
    assert [r[:2] for r in _heat(village)] == [("V01", "village"), ("V01-D1", "district")]
    district = text_of(client.get(f"{url}?unit=V01-D1"))
    assert _heat(district) == [
        ("V01-D1", "district", "2", "7"),
        (G01, "grid", "2", "4"),
        ("V01-D1-G02", "grid", "0", "3"),
    ]
    grid = text_of(client.get(f"{url}?unit={G01}"))
    assert _heat(grid) == [(G01, "grid", "2", "4")]
    assert "cp-heat-2" in grid and "50%" in grid
    # The grid's households not visited (2 and 4), phones masked.
    rows = re.findall(r'data-testid="household" data-grid="([^"]+)" data-number="(\d+)"', grid)
    assert rows == [(G01, "2"), (G01, "4")]
    assert "139****1111" in grid and "13900001111" not in grid
    assert "未走访住户（2）" in grid.replace(" (", "（").replace(")", "）")
    assert "未走访" in grid and "未入群" not in grid  # a patrol asks nothing of the group chat
    # The breadcrumb leads back up.
    assert f'href="{url}"' in grid and f'href="{url}?unit=V01-D1"' in grid


def test_a_group_drive_also_lists_the_households_not_in_the_group(app):
    campaign_id = launch(app, targets=(G01,), kind="group_drive")
    visit(app, campaign_id, 1)
    visit(app, campaign_id, 3)
    page = text_of(web_client(app, "gl1").get(f"/campaigns/{campaign_id}"))
    rows = re.findall(r'data-testid="household" data-grid="[^"]+" data-number="(\d+)"', page)
    assert rows == ["2", "3", "4"]  # 3 was visited but is not in the group
    assert "未走访或未入群住户" in page and "一户一代表入群" in page
    assert "未入群" in page.replace("未走访或未入群住户", "")  # the badge on household 3


def test_the_walk_link_is_for_the_grids_own_officers_and_leader(app):
    campaign_id = launch(app)
    for who in ("off1", "gl1"):
        page = text_of(web_client(app, who).get(f"/campaigns/{campaign_id}"))
        assert f'href="/campaigns/{campaign_id}/walk/{G01}"' in page, who
        assert "走访本网格" in page
    for who in ("tl1", "dl1", "off2"):
        page = text_of(web_client(app, who).get(f"/campaigns/{campaign_id}"))
        assert f"/walk/{G01}" not in page, who


def test_a_late_grid_is_listed_once_the_due_time_has_passed(app, clock):
    campaign_id = launch(app, targets=(G01,))
    assert "没有逾期的网格" in text_of(web_client(app, "tl1").get(f"/campaigns/{campaign_id}"))
    clock.set(DUE + timedelta(hours=1))
    page = text_of(web_client(app, "tl1").get(f"/campaigns/{campaign_id}"))
    assert re.search(rf'data-testid="late-grid" data-code="{G01}"', page)


def test_outside_ones_units_a_campaign_or_a_unit_is_not_found(app):
    campaign_id = launch(app, targets=("V01",))
    off3 = web_client(app, "off3")
    assert off3.get(f"/campaigns/{campaign_id}").status_code == 404
    assert off3.get(f"/campaigns/{campaign_id}/coverage.xlsx").status_code == 404
    gl1 = web_client(app, "gl1")
    assert gl1.get(f"/campaigns/{campaign_id}").status_code == 200
    assert gl1.get(f"/campaigns/{campaign_id}?unit=V02").status_code == 404
    assert gl1.get(f"/campaigns/{campaign_id}?unit=V01-D1-G02").status_code == 404
    assert gl1.get(f"/campaigns/{campaign_id}?unit=NOPE").status_code == 404
    assert gl1.get("/campaigns/99999").status_code == 404
    assert gl1.get("/campaigns/99999999999").status_code == 404
    # An auditor reads every campaign.
    assert web_client(app, "aud").get(f"/campaigns/{campaign_id}").status_code == 200


def test_the_workbook_holds_every_level_and_matches_the_coverage(app):
    campaign_id = launch(app)
    visit(app, campaign_id, 1)
    visit(app, campaign_id, 3)
    response = web_client(app, "tl1").get(f"/campaigns/{campaign_id}/coverage.xlsx")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment")
    book = load_workbook(io.BytesIO(response.data))
    assert book.sheetnames == ["覆盖情况", "待跟进住户"]
    heat = list(book["覆盖情况"].values)
    assert heat[0][:7] == ("层级", "单位代码", "单位", "上级单位", "户数", "已走访户数", "覆盖率%")
    rows = {r[1]: r for r in heat[1:]}
    assert list(rows) == [
        "XDK",
        "V01",
        "V01-D1",
        G01,
        "V01-D1-G02",
        "V02",
        "V02-D1",
        "V02-D1-G01",
        "V02-D1-G02",
    ]
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        tl1 = viewer_of(
            db.session, db.session.scalars(select(Person).where(Person.username == "tl1")).one()
        )
        for code, row in rows.items():
            f = campaigns.coverage(db.session, tl1, campaign, code, START)
            assert (row[4], row[5], row[7], row[8], row[9]) == (
                f["households_total"],
                f["households_covered"],
                f["grids_total"],
                f["grids_returned"],
                len(f["late"]),
            ), code
        unreached = campaigns.unreached(db.session, tl1, campaign, None, START)
        db.session.remove()
    assert rows["XDK"][:6] == ("镇", "XDK", "小渡口镇", None, 13, 2)
    households = list(book["待跟进住户"].values)
    assert households[0] == (
        "网格代码",
        "网格",
        "户号",
        "户主",
        "联系电话",
        "已走访",
        "已加入网格群",
    )
    assert len(households) - 1 == len(unreached) == 11  # 13 less the two visited
    assert (G01, "一组", 2, "李二", "139****1111", "否", "否") in households


def test_level_figures_cover_only_the_viewers_grids(app):
    campaign_id = launch(app)
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        gl1 = viewer_of(
            db.session, db.session.scalars(select(Person).where(Person.username == "gl1")).one()
        )
        rows = level_figures(gl1, campaign, START)
        db.session.remove()
    assert [r["code"] for r in rows] == ["XDK", "V01", "V01-D1", G01]
    assert rows[0]["households_total"] == 4


def test_the_pages_speak_english_on_request(app):
    campaign_id = launch(app)
    client = web_client(app, "tl1", "en")
    page = text_of(client.get(f"/campaigns/{campaign_id}"))
    assert "Visit coverage" in page and "Households not visited" in page
    new = text_of(client.get("/campaigns/new"))
    assert "Launch a campaign" in new and "Opens a case when a problem is found" in new


@pytest.mark.parametrize("before", ["99999999999999999999", "0", "-3"])
def test_a_page_position_that_is_no_id_shows_the_first_page(app, before):
    campaign_id = launch(app)
    page = web_client(app, "tl1").get(f"/campaigns?before={before}")
    assert page.status_code == 200
    assert f'data-id="{campaign_id}"' in page.get_data(as_text=True)
