"""Case pages (webapp/cases.py) through Flask's test client: the case page, 我首接的案件 and opening
a case, in zh-CN and English, asserting on status codes and the rendered HTML.

Fixtures are self-contained (names prefixed `wc_`). The organisation: town XDK.
  V01: district V01-D1 (dl1) with grids V01-D1-G01 (leader gl1; officers off1 and off1b; households
      1-4 with heads) and V01-D1-G02 (leader gl1; officer offm, who also serves G01).
  V02: district V02-D1 (dl2) with grid V02-D1-G01 (leader gl2, officer off2).
Town leader tl1, auditor aud.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import lxml.html
import pytest
from apps import build_app, dispose_app
from babel.messages.extract import extract_from_file
from sqlalchemy import func, select

from engine.clock import FixedClock
from engine.models import Case, WorkItem
from engine.specs import load_bundle
from webapp import services
from webapp.extensions import db
from webapp.i18n import messages

REPO_ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "pw-秘密"
# Monday 2026-11-23 10:00 in Asia/Shanghai.
WC_START = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
G01 = "V01-D1-G01"
PHONE = "13800001234"
MASKED = "138****1234"
ACCEPT = {"valid": True, "category": "resident_request", "severity": "normal"}

WC_ORG = f"""\
town: {{code: XDK, name: 小渡口镇}}
leaders:
  - {{username: tl1, name: 张伟, password: "{PASSWORD}", liaises: [V01]}}
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
            households:
              - {{number: 1, head: 张三}}
              - {{number: 2, head: 李四}}
              - {{number: 3, head: 王五}}
              - {{number: 4}}
            leader: {{username: gl1, name: 孙组长, password: "{PASSWORD}"}}
            officers:
              - {{username: off1, name: 周信息员, password: "{PASSWORD}"}}
              - {{username: off1b, name: 吴信息员, password: "{PASSWORD}"}}
              - {{username: offm, name: 马信息员, password: "{PASSWORD}"}}
          - code: V01-D1-G02
            name: 二组
            households: [{{number: 7, head: 赵六}}]
            leader: {{username: gl1, name: 孙组长}}
            officers: [{{username: offm, name: 马信息员}}]
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
auditors: [{{username: aud, name: 杨审计, password: "{PASSWORD}"}}]
"""


# ------------------------------------------------------------------ fixtures and helpers


@pytest.fixture(scope="module")
def wc_bundle():
    return load_bundle(REPO_ROOT)


@pytest.fixture
def wc_clock() -> FixedClock:
    return FixedClock(WC_START)


def _make_app(path: Path, clock: FixedClock, bundle, csrf: bool):
    return build_app(path, WC_ORG, clock, csrf=csrf, bundle=bundle)


@pytest.fixture
def wc_app(tmp_path, wc_clock, wc_bundle):
    app = _make_app(tmp_path / "web.sqlite", wc_clock, wc_bundle, csrf=False)
    yield app
    dispose_app(app)


@pytest.fixture
def wc_csrf_app(tmp_path, wc_clock, wc_bundle):
    app = _make_app(tmp_path / "web-csrf.sqlite", wc_clock, wc_bundle, csrf=True)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def wc_as(wc_app):
    """wc_as("off1") -> a test client signed in as off1 (one client, one session per user)."""
    clients = {}

    def client(username: str, lang: str | None = None):
        if username not in clients:
            c = wc_app.test_client()
            response = c.post("/login", data={"username": username, "password": PASSWORD})
            assert response.status_code == 302, response.get_data(as_text=True)
            clients[username] = c
        c = clients[username]
        if lang:
            c.set_cookie("lang", lang)
        else:
            c.delete_cookie("lang")
        return c

    return client


def tree(response):
    return lxml.html.fromstring(response.get_data(as_text=True))


def text_of(node) -> str:
    return " ".join(node.text_content().split())


def one(doc, testid: str):
    found = doc.xpath(f'//*[@data-testid="{testid}"]')
    assert len(found) == 1, (testid, len(found))
    return found[0]


def visible_text(doc) -> str:
    """The page's text as a person reads it (no tags, attributes, styles or scripts)."""
    for node in doc.xpath("//style|//script"):
        node.drop_tree()
    return " ".join(doc.text_content().split())


def count_cases(app) -> int:
    with app.app_context():
        n = db.session.scalar(select(func.count()).select_from(Case))
        db.session.remove()
        return n


def open_item(app, number: str) -> WorkItem:
    with app.app_context():
        item = db.session.scalars(
            select(WorkItem)
            .join(Case, Case.id == WorkItem.case_id)
            .where(Case.number == number, WorkItem.completed_at.is_(None))
        ).one()
        db.session.expunge(item)
        db.session.remove()
        return item


def open_form(client, **fields):
    data = {"grid": G01, "title": "路灯坏了", "severity": "normal", **fields}
    return client.post("/cases/new", data=data)


def opened(client, **fields) -> str:
    """Open a case through the form; its number."""
    response = open_form(client, **fields)
    assert response.status_code == 302, response.get_data(as_text=True)
    match = re.fullmatch(r"/cases/(XDK-2026-\d{6})", response.headers["Location"])
    assert match, response.headers["Location"]
    return match.group(1)


def complete(app, username: str, number: str, data: dict) -> None:
    """Complete the case's open item over the JSON API, as `username`."""
    api = app.test_client()
    token = api.post("/api/v1/tokens", json={"username": username, "password": PASSWORD})
    headers = {"Authorization": f"Bearer {token.get_json()['token']}"}
    item = open_item(app, number)
    response = api.post(
        f"/api/v1/work-items/{item.id}/complete", json={"data": data}, headers=headers
    )
    assert response.status_code == 200, response.get_json()


def steps(doc) -> list[tuple[str, str]]:
    strip = doc.xpath('//ol[@data-testid="case-steps"]')[0]
    return [(text_of(li), li.get("class") or "") for li in strip.xpath("./li")]


# ------------------------------------------------------------------ opening a case


def test_an_officer_opens_a_case_and_lands_on_its_page(wc_app, wc_as):
    off1 = wc_as("off1")
    form = tree(off1.get("/cases/new"))
    # One grid: preselected, not a select; households offered as "1号 张三" to type a number or name.
    assert form.xpath('//input[@type="hidden" and @name="grid"]/@value') == [G01]
    assert not form.xpath('//select[@name="grid"]')
    listed = form.xpath('//datalist[@id="households-V01-D1-G01"]/option/@value')
    assert listed == ["1号 张三", "2号 李四", "3号 王五", "4号"]
    assert form.xpath('//input[@name="severity" and @checked]/@value') == ["normal"]
    assert form.xpath('//select[@name="category"]/option[@value="dispute"]/text()') == ["矛盾纠纷"]
    assert form.xpath('//button[@data-testid="open-case"]')

    number = opened(
        off1,
        title="村口路灯不亮",
        household="2",
        category="safety_hazard",
        severity="urgent",
        description="晚上看不见路",
        reporter_name="李四",
        reporter_phone=PHONE,
    )
    page = off1.get(f"/cases/{number}")
    assert page.status_code == 200
    doc = tree(page)
    assert "已登记" in [text_of(p) for p in doc.xpath('//p[@class="flash"]')]
    status = one(doc, "case-status")
    assert status.get("data-status") == "accepting" and text_of(status) == "受理中"
    assert steps(doc) == [
        ("受理", "now"),
        ("处置", ""),
        ("反馈", ""),
        ("上报", ""),
        ("归档", ""),
    ]
    assert one(doc, "case-holder").get("data-holder") == "off1"
    assert "周信息员" in text_of(one(doc, "case-holder"))
    assert text_of(one(doc, "case-owner")) == "尚未受理"
    assert text_of(one(doc, "case-tier")).startswith("信息员")
    assert text_of(one(doc, "case-household")) == "2号 李四"
    assert text_of(one(doc, "case-category")) == "安全隐患"
    assert text_of(one(doc, "case-severity")) == "紧急"
    # The officer holding accept calls the resident back: the number is theirs to see.
    assert text_of(one(doc, "case-reporter-phone")) == PHONE
    link = one(doc, "case-open-task")
    item = open_item(wc_app, number)
    assert item.task == "accept" and item.claimed_by == "off1"
    assert link.get("href") == f"/tasks/{item.id}"
    assert text_of(link) == "去办理：受理"
    events = doc.xpath('//*[@data-testid="case-event"]')
    assert [e.get("data-type") for e in events] == ["opened", "claimed"]
    assert text_of(events[0]).startswith("登记") and "周信息员" in text_of(events[0])
    assert text_of(events[1]).startswith("认领：受理")


def test_a_household_is_found_by_its_heads_name_and_free_text_is_kept(wc_app, wc_as):
    off1 = wc_as("off1")
    by_name = opened(off1, household="王五")
    assert text_of(one(tree(off1.get(f"/cases/{by_name}")), "case-household")) == "3号 王五"
    by_text = opened(off1, household="村口桥头")
    assert text_of(one(tree(off1.get(f"/cases/{by_text}")), "case-household")) == "村口桥头"


def test_field_errors_keep_the_input_and_open_nothing(wc_app, wc_as):
    off1 = wc_as("off1")
    response = open_form(
        off1,
        title="   ",
        household="99",
        description="邻居吵架",
        reporter_name="张三",
        reporter_phone="call me",
        severity="urgent",
        category="dispute",
    )
    assert response.status_code == 400
    doc = tree(response)
    assert text_of(one(doc, "error-title")) == "必填"
    assert text_of(one(doc, "error-household")) == "本网格没有 99 号户。"
    assert text_of(one(doc, "error-reporter_phone")) == "请填写电话号码（数字）。"
    assert doc.xpath('//input[@name="title"]/ancestor::div[1]/@class') == ["has-error"]
    # What was typed stays.
    assert doc.xpath('//input[@name="household"]/@value') == ["99"]
    assert doc.xpath('//textarea[@name="description"]/text()') == ["邻居吵架"]
    assert doc.xpath('//input[@name="reporter_name"]/@value') == ["张三"]
    assert doc.xpath('//input[@name="reporter_phone"]/@value') == ["call me"]
    assert doc.xpath('//input[@name="severity" and @checked]/@value') == ["urgent"]
    assert doc.xpath('//select[@name="category"]/option[@selected]/@value') == ["dispute"]
    assert count_cases(wc_app) == 0

    # A bad category and a grid the officer does not serve are refused per field as well.
    response = open_form(off1, grid="V02-D1-G01", category="weather")
    assert response.status_code == 400
    doc = tree(response)
    assert text_of(one(doc, "error-category")) == "请从列表中选择类别。"
    response = open_form(off1, grid="V02-D1-G01")
    assert response.status_code == 400
    assert text_of(one(tree(response), "error-grid")) == "请选择您负责的网格。"
    assert count_cases(wc_app) == 0


def test_an_officer_of_two_grids_chooses_the_grid(wc_app, wc_as):
    offm = wc_as("offm")
    form = tree(offm.get("/cases/new"))
    assert form.xpath('//select[@name="grid"]/option/@value') == [G01, "V01-D1-G02"]
    assert form.xpath('//datalist[@id="households-V01-D1-G02"]/option/@value') == ["7号 赵六"]
    number = opened(offm, grid="V01-D1-G02", household="7")
    doc = tree(offm.get(f"/cases/{number}"))
    assert text_of(one(doc, "case-household")) == "7号 赵六"
    assert "二组" in visible_text(doc)


def test_only_information_officers_open_cases(wc_app, wc_as):
    for username in ("gl1", "aud", "tl1"):
        client = wc_as(username)
        response = client.get("/cases/new")
        assert response.status_code == 403, username
        assert "只有信息员可以登记案件" in visible_text(tree(response))
        assert open_form(client).status_code == 403
    assert count_cases(wc_app) == 0


def test_opening_a_case_without_the_csrf_token_is_refused(wc_csrf_app):
    client = wc_csrf_app.test_client()
    login_page = tree(client.get("/login"))
    token = login_page.xpath('//input[@name="csrf_token"]/@value')[0]
    signed_in = client.post(
        "/login", data={"username": "off1", "password": PASSWORD, "csrf_token": token}
    )
    assert signed_in.status_code == 302
    form = tree(client.get("/cases/new"))
    token = form.xpath('//form//input[@name="csrf_token"]/@value')[0]
    assert client.post("/cases/new", data={"grid": G01, "title": "无令牌"}).status_code == 400
    assert count_cases(wc_csrf_app) == 0
    with_token = client.post(
        "/cases/new", data={"grid": G01, "title": "有令牌", "csrf_token": token}
    )
    assert with_token.status_code == 302
    assert count_cases(wc_csrf_app) == 1


# ------------------------------------------------------------------ the case page


def test_the_reporters_phone_is_masked_except_for_the_owner_and_auditors(wc_app, wc_as):
    number = opened(wc_as("off1"), reporter_name="李四", reporter_phone=PHONE)

    def phone(user: str) -> str:
        return text_of(one(tree(wc_as(user).get(f"/cases/{number}")), "case-reporter-phone"))

    assert phone("gl1") == MASKED
    assert phone("off1b") == MASKED
    complete(wc_app, "off1", number, ACCEPT)
    page = wc_as("gl1").get(f"/cases/{number}")
    assert PHONE not in page.get_data(as_text=True)  # not in links or attributes either
    assert phone("gl1") == MASKED
    assert phone("dl1") == MASKED
    assert phone("off1") == PHONE
    assert phone("aud") == PHONE
    owner = one(tree(wc_as("gl1").get(f"/cases/{number}")), "case-owner")
    assert owner.get("data-owner") == "off1" and "周信息员" in text_of(owner)


def test_a_case_outside_the_viewers_units_does_not_exist(wc_app, wc_as):
    number = opened(wc_as("off1"))
    for username in ("off2", "gl2", "dl2"):
        response = wc_as(username).get(f"/cases/{number}")
        assert response.status_code == 404, username
        assert "周信息员" not in response.get_data(as_text=True)
    assert wc_as("off1").get("/cases/XDK-2026-999999").status_code == 404
    for username in ("gl1", "dl1", "vs1", "tl1", "aud"):
        assert wc_as(username).get(f"/cases/{number}").status_code == 200, username


def test_the_open_task_link_is_for_those_who_may_act(wc_app, wc_as):
    number = opened(wc_as("off1"))
    # off1b may not act on an accept item claimed by off1; the grid leader has no accept item.
    for username in ("off1b", "gl1", "aud"):
        assert not tree(wc_as(username).get(f"/cases/{number}")).xpath(
            '//*[@data-testid="case-open-task"]'
        ), username
    complete(wc_app, "off1", number, ACCEPT)
    assert not tree(wc_as("off1").get(f"/cases/{number}")).xpath(
        '//*[@data-testid="case-open-task"]'
    )
    doc = tree(wc_as("gl1").get(f"/cases/{number}"))
    link = one(doc, "case-open-task")
    assert text_of(link) == "去办理：处置"
    assert link.get("href") == f"/tasks/{open_item(wc_app, number).id}"
    assert text_of(one(doc, "case-holder")) == "未认领"
    assert text_of(one(doc, "case-tier")).startswith("网格长")
    deadline = text_of(one(doc, "case-deadline"))
    assert deadline.startswith("2026-11-24 10:00") and "还剩" in deadline
    assert [s for _label, s in steps(doc)] == ["done", "now", "", "", ""]


def test_the_whole_loop_shows_in_the_strip_and_the_timeline(wc_app, wc_as, wc_clock):
    number = opened(wc_as("off1"))
    complete(wc_app, "off1", number, ACCEPT)
    wc_clock.advance(days=10)
    with wc_app.app_context():
        services(wc_app).runtime.fire_due_timers(db.session)  # the grid's limit passed: escalate
        db.session.remove()
    doc = tree(wc_as("dl1").get(f"/cases/{number}"))
    assert text_of(one(doc, "case-tier")).startswith("片长")
    assert not doc.xpath('//*[@data-testid="case-overdue"]')  # a fresh limit
    wc_clock.advance(days=30)  # past the district's limit too, before any timer fires
    doc = tree(wc_as("dl1").get(f"/cases/{number}"))
    assert text_of(one(doc, "case-overdue")) == "超时"
    assert "已超时" in text_of(one(doc, "case-deadline"))
    complete(wc_app, "dl1", number, {"outcome": "resolved", "note": "已修好"})
    complete(wc_app, "off1", number, {"satisfaction": "unsatisfied", "note": "还是不亮"})
    complete(wc_app, "dl1", number, {"outcome": "resolved", "note": "换了灯泡"})
    complete(wc_app, "off1", number, {"satisfaction": "satisfied"})
    complete(wc_app, "dl1", number, {"summary": "路灯已更换"})
    complete(wc_app, "vs1", number, {"approved": True})
    doc = tree(wc_as("off1").get(f"/cases/{number}"))
    assert one(doc, "case-status").get("data-status") == "archived"
    assert [s for _label, s in steps(doc)] == ["done"] * 5
    assert text_of(one(doc, "case-satisfaction")) == "满意"
    assert text_of(one(doc, "case-reopens")) == "1 次"
    events = doc.xpath('//*[@data-testid="case-event"]')
    seqs = [int(e.get("data-seq")) for e in events]
    assert seqs == sorted(seqs) == list(range(1, len(seqs) + 1))
    labels = [text_of(e.xpath('.//*[@class="what"]')[0]) for e in events]
    assert labels[:3] == ["登记", "认领：受理", "完成：受理"]
    for label in ("督办", "升级", "重办", "完成：反馈", "完成：审核", "归档"):
        assert label in labels, (label, labels)
    texts = [text_of(e) for e in events]
    assert any("系统" in t and t.startswith("升级") for t in texts)
    assert any("换了灯泡" in t for t in texts)
    assert not doc.xpath('//*[@data-testid="case-open-task"]')


def test_a_rejected_case_shows_a_struck_strip(wc_app, wc_as):
    number = opened(wc_as("off1"))
    complete(wc_app, "off1", number, {"valid": False, "note": "重复登记"})
    doc = tree(wc_as("off1").get(f"/cases/{number}"))
    status = one(doc, "case-status")
    assert status.get("data-status") == "rejected" and text_of(status) == "已注销"
    assert [s for _label, s in steps(doc)] == ["rejected"] * 5
    # Closed: nobody holds it and no limit runs.
    assert not doc.xpath('//*[@data-testid="case-holder" or @data-testid="case-deadline"]')
    # A closed case is under 已结案, not among the open ones.
    assert not tree(wc_as("off1").get("/cases/mine")).xpath('//*[@data-testid="mine-case"]')
    closed = tree(wc_as("off1").get("/cases/mine?show=closed"))
    row = closed.xpath('//*[@data-testid="mine-case"]')[0]
    assert not row.xpath('.//*[@data-testid="case-holder" or @data-testid="case-deadline"]')
    assert "结案" in text_of(row)
    labels = [text_of(e) for e in doc.xpath('//*[@data-testid="case-event"]')]
    assert labels[-1].startswith("注销")


# ------------------------------------------------------------------ 我首接的案件


def test_mine_lists_owned_cases_with_where_they_are_and_their_deadline(wc_app, wc_as):
    off1 = wc_as("off1")
    first = opened(off1, title="第一件")
    second = opened(off1, title="第二件")
    waiting = opened(off1, title="还没受理")
    opened(wc_as("offm"), title="别人的")
    complete(wc_app, "off1", first, ACCEPT)
    complete(wc_app, "off1", second, {**ACCEPT, "severity": "urgent"})
    wc_as("gl1")  # the grid leader claims nothing; the district leader holds the urgent one
    doc = tree(off1.get("/cases/mine"))
    rows = doc.xpath('//*[@data-testid="mine-case"]')
    assert [r.get("data-number") for r in rows] == [second, first]  # newest first
    by_number = {r.get("data-number"): r for r in rows}
    row = by_number[first]
    assert row.xpath(".//a/@href")[0] == f"/cases/{first}"
    assert "网格长" in text_of(row) and "处置中" in text_of(row)
    assert text_of(row.xpath('.//*[@data-testid="case-holder"]')[0]) == "当前办理人：未认领"
    deadline = text_of(row.xpath('.//*[@data-testid="case-deadline"]')[0])
    assert deadline.startswith("2026-11-24 10:00") and "还剩" in deadline
    assert "片长" in text_of(by_number[second])
    accepting = doc.xpath('//*[@data-testid="mine-accepting-case"]')
    assert [r.get("data-number") for r in accepting] == [waiting]
    assert "别人的" not in visible_text(doc)
    assert not doc.xpath('//*[@data-testid="mine-empty"]')


def test_mine_marks_overdue_cases(wc_app, wc_as, wc_clock):
    number = opened(wc_as("off1"))
    complete(wc_app, "off1", number, ACCEPT)
    wc_clock.advance(hours=30)  # past the grid's limit; no timer fired
    row = tree(wc_as("off1").get("/cases/mine")).xpath('//*[@data-testid="mine-case"]')[0]
    assert "overdue" in row.get("class").split()
    assert "已超时" in text_of(row) and row.xpath('.//*[@data-testid="case-overdue"]')


def test_mine_is_empty_for_a_new_officer_and_explains_first_contact(wc_app, wc_as):
    opened(wc_as("off1"))
    doc = tree(wc_as("off1b").get("/cases/mine"))
    empty = one(doc, "mine-empty")
    assert "您目前没有进行中的案件" in text_of(empty)
    assert "首接负责" in visible_text(doc)
    assert empty.xpath(".//a/@href") == ["/cases/new"]
    assert not doc.xpath('//*[@data-testid="mine-case"]')
    # Not an officer: the same empty state, without the link to a form they may not use.
    doc = tree(wc_as("gl1").get("/cases/mine"))
    assert not one(doc, "mine-empty").xpath(".//a")


def test_mine_pages_by_twenty(wc_app, wc_as):
    off1 = wc_as("off1")
    numbers = []
    for i in range(21):
        number = opened(off1, title=f"第{i}件")
        complete(wc_app, "off1", number, ACCEPT)
        numbers.append(number)
    doc = tree(off1.get("/cases/mine"))
    page1 = [r.get("data-number") for r in doc.xpath('//*[@data-testid="mine-case"]')]
    assert page1 == numbers[::-1][:20]
    more = one(doc, "mine-next").get("href")
    doc = tree(off1.get(more))
    assert [r.get("data-number") for r in doc.xpath('//*[@data-testid="mine-case"]')] == [
        numbers[0]
    ]
    assert not doc.xpath('//*[@data-testid="mine-next"]')
    assert off1.get("/cases/mine?cursor=not-a-cursor").status_code == 400


# ------------------------------------------------------------------ languages


def _our_msgids() -> list[str]:
    found: list[str] = []
    keywords = {"_": None, "_l": None, "gettext": None, "lazy_gettext": None}
    for _line, msgid, *_rest in extract_from_file("python", "webapp/cases.py", keywords=keywords):
        found.append(msgid)
    for path in sorted((REPO_ROOT / "webapp/templates/cases").glob("*.html")):
        for _line, msgid, *_rest in extract_from_file(
            "jinja2", str(path), options={"extensions": "jinja2.ext.i18n"}
        ):
            found.append(msgid)
    return found


def test_every_message_of_the_case_pages_has_a_chinese_translation():
    ids = _our_msgids()
    assert len(ids) > 50
    zh = messages("zh_CN")
    assert [i for i in ids if not zh.get(i)] == []
    # cases.po adds only what base.po lacks.
    base_po = (REPO_ROOT / "webapp/i18n/zh_CN/base.po").read_text(encoding="utf-8")
    cases_po = (REPO_ROOT / "webapp/i18n/zh_CN/cases.po").read_text(encoding="utf-8")
    base_ids = set(re.findall(r'^msgid "(.+)"$', base_po, re.M))
    assert base_ids & set(re.findall(r'^msgid "(.+)"$', cases_po, re.M)) == set()


def _pages(wc_app, wc_as, lang: str | None):
    off1 = wc_as("off1", lang)
    number = opened(off1, reporter_name="李四", reporter_phone=PHONE, household="1")
    other = opened(off1)
    complete(wc_app, "off1", other, ACCEPT)
    wc_as("off1", lang)
    return {
        "case": off1.get(f"/cases/{number}"),
        "accepted": off1.get(f"/cases/{other}"),
        "mine": off1.get("/cases/mine"),
        "new": off1.get("/cases/new"),
        "errors": open_form(off1, title=""),
        "empty": wc_as("off1b", lang).get("/cases/mine"),
        "forbidden": wc_as("gl1", lang).get("/cases/new"),
    }


def test_the_pages_render_in_chinese_without_english_left_over(wc_app, wc_as):
    pages = _pages(wc_app, wc_as, None)
    english = [
        re.split(r"%\(", m)[0].strip()
        for m in _our_msgids()
        if len(re.split(r"%\(", m)[0].strip()) >= 4
    ]
    for name, response in pages.items():
        assert response.status_code in (200, 400, 403), name
        doc = tree(response)
        text = visible_text(doc)
        left = [m for m in english if m in text]
        assert left == [], (name, left)
    assert "去办理：受理" in visible_text(tree(pages["case"]))
    assert "必填" in visible_text(tree(pages["errors"]))


def test_the_pages_render_in_english(wc_app, wc_as):
    pages = _pages(wc_app, wc_as, "en")
    zh = messages("zh_CN")
    chinese = [zh[m] for m in _our_msgids() if len(zh.get(m, "")) >= 4]
    for name, response in pages.items():
        assert response.status_code in (200, 400, 403), name
        doc = tree(response)
        text = visible_text(doc)
        left = [t for t in chinese if t in text]
        assert left == [], (name, left)
    case = tree(pages["case"])
    assert text_of(one(case, "case-status")) == "Accepting"
    assert text_of(one(case, "case-open-task")) == "Go to task: Accept"
    assert [label for label, _s in steps(case)] == [
        "Accept",
        "Handle",
        "Feedback",
        "Report",
        "Archive",
    ]
    assert "Case opened" in visible_text(case)
    assert "Cases I accepted" in visible_text(tree(pages["mine"]))
    assert "Required" in visible_text(tree(pages["errors"]))
    assert "You have no open case." in visible_text(tree(pages["empty"]))
    assert "Only information officers open cases" in visible_text(tree(pages["forbidden"]))
