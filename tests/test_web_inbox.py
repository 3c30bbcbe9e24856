"""The inbox (我的待办) and task pages, through Flask's test client as a browser would use them:
sign in, read the HTML, post forms. No browser: layout and the diagram viewer are tests/e2e's.

Fixtures are self-contained (prefix `web_`). The organisation: town XDK.
  V01 (liaison leader tl1): district V01-D1 (dl1) with grids V01-D1-G01 一组 (officers off1 and
      off1b) and V01-D1-G02 二组 (officer off2); gl1 leads both grids (two positions); vs1.
  V02: district V02-D1 (dl2), grid V02-D1-G01 三组 (leader gl3, officer off3); vs2.
Department PS (ps1), auditor aud, administrator adm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from apps import build_app, dispose_app
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po
from sqlalchemy import select

from engine.access import viewer_of
from engine.clock import FixedClock
from engine.models import Case, CaseDepartment, CaseEvent, Person, Unit, WorkItem
from engine.specs import load_bundle
from webapp import services
from webapp.extensions import db

REPO = Path(__file__).resolve().parents[1]
# Monday 2026-11-23 10:00 in Asia/Shanghai.
WEB_START = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
G01, G02, G3 = "V01-D1-G01", "V01-D1-G02", "V02-D1-G01"
ACCEPT = {"valid": True, "category": "resident_request", "severity": "normal"}

WEB_ORG = """\
town: {code: XDK, name: 小渡口镇}
leaders:
  - {username: tl1, name: 张伟, password: pw, liaises: [V01]}
departments:
  - {code: PS, name: 派出所, officers: [{username: ps1, name: 王警官, password: pw}]}
villages:
  - code: V01
    name: 一村
    secretary: {username: vs1, name: 赵书记, password: pw}
    districts:
      - code: V01-D1
        name: 一片
        leader: {username: dl1, name: 钱片长, password: pw}
        grids:
          - code: V01-D1-G01
            name: 一组
            households: 4
            leader: {username: gl1, name: 孙组长, password: pw}
            officers:
              - {username: off1, name: 周信息员, password: pw}
              - {username: off1b, name: 吴信息员, password: pw}
          - code: V01-D1-G02
            name: 二组
            households: 3
            leader: {username: gl1, name: 孙组长}
            officers: [{username: off2, name: 冯信息员, password: pw}]
  - code: V02
    name: 二村
    secretary: {username: vs2, name: 陈书记, password: pw}
    districts:
      - code: V02-D1
        name: 三片
        leader: {username: dl2, name: 褚片长, password: pw}
        grids:
          - code: V02-D1-G01
            name: 三组
            households: 3
            leader: {username: gl3, name: 卫组长, password: pw}
            officers: [{username: off3, name: 蒋信息员, password: pw}]
auditors: [{username: aud, name: 杨审计, password: pw}]
admins: [{username: adm, name: 郑管理员, password: pw}]
"""


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def web_bundle():
    return load_bundle(REPO)


@pytest.fixture
def web_clock() -> FixedClock:
    return FixedClock(WEB_START)


def _make_app(tmp_path, clock, bundle, csrf: bool):
    return build_app(tmp_path / "web.sqlite", WEB_ORG, clock, csrf=csrf, bundle=bundle)


@pytest.fixture
def web_app(tmp_path, web_clock, web_bundle):
    app = _make_app(tmp_path, web_clock, web_bundle, csrf=False)
    yield app
    dispose_app(app)


class Town:
    """Drives cases with the engine directly (what other pages or the API would do) and reads the
    database, so that the tests exercise only the pages they are about."""

    def __init__(self, app, clock: FixedClock):
        self.app, self.clock = app, clock

    def _viewer(self, username: str):
        person = db.session.scalars(select(Person).where(Person.username == username)).one()
        return viewer_of(db.session, person)

    def open(self, officer: str | None = "off1", grid: str = G01, **fields) -> str:
        """Open a case (officer None: a resident's); its number."""
        fields.setdefault("title", "路灯坏了")
        with self.app.app_context():
            actor = self._viewer(officer) if officer else None
            case = services(self.app).runtime.open_case(db.session, actor, grid=grid, **fields)
            return case.number

    def item(self, number: str) -> int:
        """The id of the case's one open work item."""
        with self.app.app_context():
            ids = list(
                db.session.scalars(
                    select(WorkItem.id)
                    .join(Case, Case.id == WorkItem.case_id)
                    .where(Case.number == number, WorkItem.completed_at.is_(None))
                )
            )
            assert len(ids) == 1, ids
            return ids[0]

    def due(self, number: str) -> datetime:
        with self.app.app_context():
            return db.session.get(WorkItem, self.item(number)).due_at

    def complete(self, username: str, number: str, data: dict) -> None:
        item_id = self.item(number)
        with self.app.app_context():
            services(self.app).runtime.complete(db.session, self._viewer(username), item_id, data)

    def accepted(self, officer: str = "off1", grid: str = G01, **accept) -> str:
        number = self.open(officer, grid)
        self.complete(officer, number, {**ACCEPT, **accept})
        return number

    def fire(self, at: datetime) -> None:
        self.clock.set(at)
        with self.app.app_context():
            services(self.app).runtime.fire_due_timers(db.session)

    def events(self, number: str) -> list[str]:
        with self.app.app_context():
            return list(
                db.session.scalars(
                    select(CaseEvent.type)
                    .join(Case, Case.id == CaseEvent.case_id)
                    .where(Case.number == number)
                    .order_by(CaseEvent.seq)
                )
            )

    def event_data(self, number: str, type_: str) -> str:
        with self.app.app_context():
            return db.session.scalars(
                select(CaseEvent.data)
                .join(Case, Case.id == CaseEvent.case_id)
                .where(Case.number == number, CaseEvent.type == type_)
                .order_by(CaseEvent.seq.desc())
            ).first()


@pytest.fixture
def web_town(web_app, web_clock) -> Town:
    return Town(web_app, web_clock)


@pytest.fixture
def web_as(web_app):
    """web_as("gl1") -> a test client signed in as gl1 (one per user and test)."""
    clients = {}

    def client(username: str, lang: str | None = None):
        if username not in clients:
            c = web_app.test_client()
            if lang:
                c.set_cookie("lang", lang)
            response = c.post("/login", data={"username": username, "password": "pw"})
            assert response.status_code == 302, response.get_data(as_text=True)
            clients[username] = c
        return clients[username]

    return client


# ------------------------------------------------------------------ reading HTML

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


@dataclass
class El:
    tag: str
    attrs: dict
    text: str = ""
    inner: list = field(default_factory=list)  # (tag, attrs) of every element inside

    @property
    def words(self) -> str:
        return " ".join(self.text.split())

    def inside(self, tag: str, **want) -> list[dict]:
        """Attributes of the elements inside with this tag and these attribute values."""
        want = {k.replace("_", "-"): v for k, v in want.items()}
        return [
            a for t, a in self.inner if t == tag and all(a.get(k) == v for k, v in want.items())
        ]


class _Finder(HTMLParser):
    def __init__(self, want: dict):
        super().__init__(convert_charrefs=True)
        self.want, self.found, self.open = want, [], []

    def handle_starttag(self, tag, attrs):
        a = {k: v if v is not None else "" for k, v in attrs}
        for entry in self.open:
            entry[0].inner.append((tag, a))
            entry[1] += tag not in VOID
        if all(a.get(k) == v for k, v in self.want.items()):
            element = El(tag, a)
            self.found.append(element)
            if tag not in VOID:
                self.open.append([element, 1])

    def handle_endtag(self, tag):
        for entry in self.open:
            entry[1] -= 1
        self.open = [e for e in self.open if e[1] > 0]

    def handle_data(self, data):
        for entry in self.open:
            entry[0].text += data


def find(html: str, **want) -> list[El]:
    """Elements whose attributes have these values (data_testid= means data-testid=)."""
    finder = _Finder({k.replace("_", "-"): v for k, v in want.items()})
    finder.feed(html)
    return finder.found


def one(html: str, **want) -> El:
    found = find(html, **want)
    assert len(found) == 1, (want, len(found))
    return found[0]


class _Visible(HTMLParser):
    SHOWN = ("aria-label", "title", "placeholder", "data-msg-unavailable", "data-msg-failed")

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.hidden = [], 0

    def handle_starttag(self, tag, attrs):
        self.hidden += tag in ("script", "style")
        self.parts.extend(v for k, v in attrs if k in self.SHOWN and v)

    def handle_endtag(self, tag):
        self.hidden -= tag in ("script", "style")

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def visible(html: str) -> str:
    parser = _Visible()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


def page(client, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.get_data(as_text=True)


def inbox_items(html: str) -> list[El]:
    return find(html, data_testid="inbox-item")


def cases_of(html: str) -> list[str]:
    return [i.attrs["data-case"] for i in inbox_items(html)]


# ------------------------------------------------------------------ the inbox


def test_the_inbox_groups_items_by_position_most_urgent_group_first(web_town, web_as, web_clock):
    in_g02 = web_town.accepted("off2", G02)
    web_clock.advance(hours=1)
    in_g01 = web_town.accepted("off1", G01)
    assert web_town.due(in_g02) < web_town.due(in_g01)

    html = page(web_as("gl1"), "/")
    groups = find(html, data_testid="inbox-group")
    assert [g.attrs["data-unit"] for g in groups] == [G02, G01]
    headings = [next(t for t in g.text.split("\n") if t.strip()).strip() for g in groups]
    assert headings[0].startswith("网格长 · 二组") and headings[1].startswith("网格长 · 一组")
    for group, number in zip(groups, (in_g02, in_g01), strict=True):
        assert [i["data-case"] for i in group.inside("li", data_testid="inbox-item")] == [number]
    item = one(html, data_testid="inbox-item", data_case=in_g01)
    assert item.attrs["data-task"] == "handle"
    assert item.attrs["data-item-id"] == str(web_town.item(in_g01))
    assert item.inside("a", href=f"/tasks/{web_town.item(in_g01)}")
    assert "路灯坏了" in item.words and "民情信息" in item.words and "一般" in item.words
    assert "还剩" in item.words and "截止 2026-11-" in item.words


def test_overdue_items_come_first_with_overdue_and_supervised_badges(web_town, web_as, web_clock):
    # An older, normal case referred up to the district (48 working hours), then an urgent one that
    # starts at the district with 4 clock hours: the newer item is due first.
    slow = web_town.accepted()
    web_town.complete("gl1", slow, {"outcome": "refer_up", "note": "需要片长协调"})
    fast = web_town.accepted(severity="urgent")
    assert web_town.due(fast) < web_town.due(slow)
    assert web_town.item(fast) > web_town.item(slow)

    web_town.fire(WEB_START + timedelta(hours=3.5))  # 80%: the supervision notice (督办)
    web_clock.set(WEB_START + timedelta(hours=5))  # past the limit; the escalation has not run yet
    html = page(web_as("dl1"), "/")
    assert cases_of(html) == [fast, slow]
    urgent, normal = inbox_items(html)
    assert "overdue" in urgent.attrs["class"].split()
    assert urgent.inside("span", data_testid="badge-overdue")
    assert urgent.inside("span", data_testid="badge-supervised")
    assert "超时" in urgent.words and "督办" in urgent.words and "已超时" in urgent.words
    assert not normal.inside("span", data_testid="badge-overdue")
    assert not normal.inside("span", data_testid="badge-supervised")
    assert "片长 · 一片" in one(html, data_testid="inbox-group").words

    only_overdue = page(web_as("dl1"), "/?overdue=1")
    assert cases_of(only_overdue) == [fast]
    assert one(only_overdue, data_testid="filter-overdue").attrs.get("checked") == ""


def test_the_category_filter_shows_only_that_category(web_town, web_as):
    dispute = web_town.open(category="dispute", title="邻里纠纷")
    hazard = web_town.open(category="safety_hazard", title="电线裸露")
    off1 = web_as("off1")
    assert set(cases_of(page(off1, "/"))) == {dispute, hazard}

    html = page(off1, "/?category=dispute")
    assert cases_of(html) == [dispute]
    select_ = one(html, data_testid="filter-category")
    assert ("option", {"value": "dispute", "selected": ""}) in select_.inner
    assert len(select_.inside("option")) == 8  # all categories and the seven of the form

    empty = page(off1, "/?category=policy")
    assert cases_of(empty) == []
    assert "没有符合筛选条件的待办事项。" in one(empty, data_testid="inbox-empty").words


def test_the_inbox_pages_by_twenty_keeping_the_filter(web_town, web_as):
    numbers = [web_town.open(category="dispute", title=f"纠纷{i}") for i in range(21)]
    other = web_town.open(category="policy")
    off1 = web_as("off1")

    first = page(off1, "/?category=dispute")
    assert cases_of(first) == numbers[:20]  # one deadline for all: in the order they came
    link = one(first, data_testid="next-page").attrs["href"]
    assert "category=dispute" in link and "cursor=" in link
    second = page(off1, link)
    assert cases_of(second) == numbers[20:]
    assert not find(second, data_testid="next-page")
    assert one(second, data_testid="first-page").attrs["href"] == "/?category=dispute"
    assert other not in cases_of(first) + cases_of(second)

    assert len(cases_of(page(off1, "/"))) == 20
    assert off1.get("/?cursor=not-a-cursor").status_code == 400


def test_claim_and_release_show_who_holds_the_item(web_town, web_as):
    number = web_town.open(None)  # a resident's case: accept waits unclaimed for the officers
    item_id = web_town.item(number)
    off1, off1b = web_as("off1"), web_as("off1b")
    item = one(page(off1, "/"), data_testid="inbox-item", data_case=number)
    assert item.inside("button", data_testid="claim") and not item.inside(
        "button", data_testid="release"
    )

    response = off1.post(f"/work-items/{item_id}/claim", data={"next": "/"})
    assert response.status_code == 302 and response.headers["Location"] == "/"
    html = page(off1, "/")
    assert f"您已认领 {number} 的任务。" in visible(html)
    item = one(html, data_testid="inbox-item", data_case=number)
    assert "已认领：周信息员" in item.words
    assert item.inside("button", data_testid="release") and not item.inside(
        "button", data_testid="claim"
    )

    # The other officer still sees it, with who holds it, and cannot take it.
    other = one(page(off1b, "/"), data_testid="inbox-item", data_case=number)
    assert "已认领：周信息员" in other.words
    assert not other.inside("button", data_testid="claim")
    refused = off1b.post(f"/work-items/{item_id}/claim")
    assert refused.status_code == 409
    assert "该任务已被 周信息员 认领。" in visible(refused.get_data(as_text=True))

    assert off1.post(f"/work-items/{item_id}/release", data={"next": "/"}).status_code == 302
    assert f"您已释放 {number} 的任务" in visible(page(off1, "/"))
    again = one(page(off1b, "/"), data_testid="inbox-item", data_case=number)
    assert again.inside("button", data_testid="claim") and "已认领" not in again.words
    assert web_town.events(number) == ["opened", "claimed", "released"]
    assert off1.post(f"/work-items/{item_id}/release").status_code == 409  # not held any more


def test_an_empty_inbox_says_so_and_officers_get_a_new_case_link(web_as):
    html = page(web_as("off1"), "/")
    empty = one(html, data_testid="inbox-empty")
    assert "没有待办事项" in empty.words
    assert empty.inside("a", href="/cases/new")
    leader = one(page(web_as("gl1"), "/"), data_testid="inbox-empty")
    assert "没有待办事项" in leader.words and not leader.inside("a", href="/cases/new")


# ------------------------------------------------------------------ the task page


def field_of(html: str, name: str) -> El:
    """The box of one form field: its label, input(s), hint and error."""
    boxes = [e for e in find(html, data_field=name) if e.tag == "div"]
    assert len(boxes) == 1, name
    return boxes[0]


def test_the_accept_page_draws_the_form_from_its_schema(web_town, web_as):
    reporter = {"name": "王大妈", "phone": "13812345678"}
    number = web_town.open(
        category="dispute", severity="urgent", title="邻里纠纷", reporter=reporter
    )
    item_id = web_town.item(number)
    html = page(web_as("off1"), f"/tasks/{item_id}")

    valid = field_of(html, "valid")
    assert "是否有效" in valid.words and valid.inside("span", **{"class": "req"})
    radios = valid.inside("input", type="radio", name="valid")
    assert [r["value"] for r in radios] == ["true", "false"]
    assert "有效" in valid.words and "无效（注销）" in valid.words
    assert "checked" in radios[0]  # the schema's default

    category = field_of(html, "category")
    options = category.inside("option")
    assert len(options) == 8 and options[0]["value"] == ""
    assert {"value": "dispute", "selected": ""} in options  # prefilled from the case
    assert "矛盾纠纷" in category.words and "秸秆禁烧" in category.words
    assert not category.inside("span", **{"class": "req"})
    assert "当“是否有效”为“有效”时必填。" in category.words

    severity = field_of(html, "severity")
    levels = severity.inside("input", type="radio", name="severity")
    assert [r["value"] for r in levels] == ["low", "normal", "urgent"]
    assert "checked" in levels[2] and "紧急" in severity.words

    note = field_of(html, "note")
    assert note.inside("textarea", name="note", id="f-note", maxlength="2000")
    assert "当“是否有效”为“无效（注销）”时必填。" in note.words

    assert one(html, data_testid="complete").tag == "button"
    summary = one(html, data_testid="case-summary").words
    assert number in summary and "邻里纠纷" in summary and "一组" in summary
    assert "13812345678" in summary  # the officer holding accept calls the resident back
    other = one(page(web_as("gl1"), f"/tasks/{item_id}"), data_testid="case-summary").words
    assert "138****5678" in other and "13812345678" not in other
    events = find(html, data_testid="event")
    assert [e.attrs["data-type"] for e in events] == ["opened", "claimed"]
    assert "登记" in events[0].words and "周信息员" in events[0].words
    diagram = one(html, data_testid="diagram")
    assert diagram.attrs["data-current"] == "accept"
    assert diagram.attrs["data-diagram-url"] == f"/cases/{number}/diagram.bpmn"
    assert "vendor/bpmn-js/bpmn-navigated-viewer.production.min.js" in html
    assert "vendor/bpmn-js/assets/bpmn-js.css" in html and "js/diagram.js" in html


def test_handle_and_review_pages_use_radios_with_their_words(web_town, web_as):
    number = web_town.accepted()
    html = page(web_as("gl1"), f"/tasks/{web_town.item(number)}")
    outcome = field_of(html, "outcome")
    assert [r["value"] for r in outcome.inside("input", type="radio")] == ["resolved", "refer_up"]
    assert "已办结" in outcome.words and "上报上级" in outcome.words
    assert outcome.inside("span", **{"class": "req"})
    assert "当“办理结果”为“上报上级”时必填。" in field_of(html, "note").words
    assert one(html, data_testid="diagram").attrs["data-current"] == "handle_grid"

    web_town.complete("gl1", number, {"outcome": "resolved"})
    web_town.complete("off1", number, {"satisfaction": "satisfied"})
    web_town.complete("gl1", number, {"summary": "已修好"})
    review = page(web_as("dl1"), f"/tasks/{web_town.item(number)}")
    approved = field_of(review, "approved")
    assert [r["value"] for r in approved.inside("input", type="radio")] == ["true", "false"]
    assert "通过" in approved.words and "退回" in approved.words
    assert not any("checked" in r for r in approved.inside("input"))  # no default: a decision


def test_a_bad_submission_shows_errors_by_the_fields_and_keeps_the_input(web_town, web_as):
    number = web_town.open()
    item_id = web_town.item(number)
    before = web_town.events(number)
    response = web_as("off1").post(
        f"/tasks/{item_id}",
        data={"valid": "true", "category": "", "severity": "", "note": "村口路灯不亮\r\n已拍照"},
    )
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "请修改标出的内容。" in one(html, data_testid="form-errors").words
    for name in ("category", "severity"):
        box = field_of(html, name)
        assert "has-error" in box.attrs["class"].split()
        assert box.inside("p", data_testid="field-error", data_field=name)
        assert "此项必填。" in box.words
    assert not find(html, data_testid="field-error", data_field="note")
    assert "村口路灯不亮" in field_of(html, "note").words  # what was typed is kept
    assert "checked" in field_of(html, "valid").inside("input", value="true")[0]
    assert web_town.events(number) == before

    refer = web_town.accepted()
    response = web_as("gl1").post(f"/tasks/{web_town.item(refer)}", data={"outcome": "refer_up"})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "此项必填。" in field_of(html, "note").words
    assert "checked" in field_of(html, "outcome").inside("input", value="refer_up")[0]
    assert web_town.events(refer)[-1] == "task_completed"  # accept's, nothing new

    wrong = web_as("gl1").post(f"/tasks/{web_town.item(refer)}", data={"outcome": "shrug"})
    assert wrong.status_code == 400
    assert (
        "请从以下选项中选择：已办结 / 上报上级"
        in field_of(wrong.get_data(as_text=True), "outcome").words
    )


def test_a_good_submission_completes_the_task_and_goes_to_the_case(web_town, web_as):
    number = web_town.open(category="dispute")
    gl1_before = page(web_as("gl1"), "/")
    assert number not in cases_of(gl1_before)

    off1 = web_as("off1")
    response = off1.post(
        f"/tasks/{web_town.item(number)}",
        data={"valid": "true", "category": "dispute", "severity": "low", "note": ""},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == f"/cases/{number}"
    assert "已提交" in visible(page(off1, response.headers["Location"]))
    assert web_town.events(number)[-1] == "task_completed"
    assert '"note"' not in web_town.event_data(number, "task_completed")  # empty text is omitted
    assert number in cases_of(page(web_as("gl1"), "/"))


def test_town_leaders_name_departments_with_checkboxes(web_town, web_as, web_app):
    number = web_town.accepted(category="safety_hazard", severity="urgent")  # starts at the village
    web_town.complete("vs1", number, {"outcome": "refer_up", "note": "需要镇里协调"})
    item_id = web_town.item(number)
    tl1 = web_as("tl1")
    html = page(tl1, f"/tasks/{item_id}")
    departments = field_of(html, "departments")
    assert departments.inside("input", type="checkbox", name="departments", value="PS")
    assert "派出所" in departments.words
    outcome = field_of(html, "outcome").inside("input", type="radio")
    assert [(r["value"], "checked" in r) for r in outcome] == [("resolved", True)]

    response = tl1.post(f"/tasks/{item_id}", data={"outcome": "resolved", "departments": ["PS"]})
    assert response.status_code == 302
    with web_app.app_context():
        case_id = db.session.scalar(select(Case.id).where(Case.number == number))
        assert db.session.get(CaseDepartment, (case_id, _unit_id("PS")))


def _unit_id(code: str) -> int:
    return db.session.scalar(select(Unit.id).where(Unit.code == code))


def test_other_grids_get_404_for_the_task_and_the_diagram(web_town, web_as):
    number = web_town.open()
    item_id = web_town.item(number)
    gl3 = web_as("gl3")
    assert gl3.get(f"/tasks/{item_id}").status_code == 404
    assert gl3.post(f"/tasks/{item_id}", data={"valid": "true"}).status_code == 404
    assert gl3.post(f"/work-items/{item_id}/claim").status_code == 404
    assert gl3.get(f"/cases/{number}/diagram.bpmn").status_code == 404
    assert gl3.get("/tasks/999999").status_code == 404
    assert gl3.get(f"/tasks/{2**64}").status_code == 404

    mine = web_as("off1").get(f"/cases/{number}/diagram.bpmn")
    assert mine.status_code == 200 and mine.mimetype == "application/xml"
    assert '<bpmn:userTask id="accept"' in mine.get_data(as_text=True)
    assert web_town.events(number) == ["opened", "claimed"]


def test_a_task_completed_meanwhile_shows_the_409_page(web_town, web_as, web_clock):
    number = web_town.accepted()
    item_id = web_town.item(number)
    gl1 = web_as("gl1")
    assert page(gl1, f"/tasks/{item_id}")  # opened, then someone completes it elsewhere
    web_clock.advance(minutes=5)
    web_town.complete("gl1", number, {"outcome": "resolved"})

    for response in (gl1.get(f"/tasks/{item_id}"), gl1.post(f"/tasks/{item_id}", data={})):
        assert response.status_code == 409
        html = response.get_data(as_text=True)
        assert "该任务已由 孙组长 完成（2026-11-23 10:05）。" in visible(html)
        assert any(a.words == "返回首页" for a in find(html, href="/"))

    # Escalation closes an item without anyone completing it.
    urgent = web_town.accepted(severity="urgent")
    closed = web_town.item(urgent)
    web_town.fire(web_clock.now() + timedelta(hours=5))
    response = gl1.get(f"/tasks/{closed}")
    assert response.status_code == 409
    assert "该任务已关闭" in visible(response.get_data(as_text=True))


def test_an_auditor_reads_the_task_but_cannot_work_it(web_town, web_as):
    number = web_town.accepted()
    item_id = web_town.item(number)
    aud = web_as("aud")
    html = page(aud, f"/tasks/{item_id}")
    assert one(html, data_testid="not-yours") and not find(html, data_testid="complete")
    refused = aud.post(f"/tasks/{item_id}", data={"outcome": "resolved"})
    assert refused.status_code == 403
    assert web_town.events(number)[-1] == "task_completed"


# ------------------------------------------------------------------ languages and CSRF


def _messages_used() -> set[str]:
    """Every msgid of the inbox's code and templates, read as `pybabel extract` would."""
    found = set()
    keywords = {"_": None, "gettext": None, "_l": None, "lazy_gettext": None}
    sources = [("python", REPO / "webapp" / "inbox.py", {})] + [
        ("jinja2", path, {"extensions": "jinja2.ext.i18n"})
        for path in sorted((REPO / "webapp" / "templates" / "inbox").glob("*.html"))
    ]
    for method, path, options in sources:
        for _line, message, _comments, _context in extract_from_file(
            method, str(path), keywords=keywords, options=options
        ):
            found.add(message)
    return found


def _inbox_catalog() -> dict[str, str]:
    with (REPO / "webapp" / "i18n" / "zh_CN" / "inbox.po").open("rb") as handle:
        return {m.id: m.string for m in read_po(handle) if m.id}


def test_the_inbox_catalog_translates_only_what_the_pages_use():
    used, catalog = _messages_used(), _inbox_catalog()
    assert {"Overdue only", "Claim", "Is it valid?", "Submitted."} <= used
    assert all(catalog.values()), [k for k, v in catalog.items() if not v]
    assert set(catalog) <= used, set(catalog) - used


def _busy_pages(web_town, web_as, lang: str | None) -> list[str]:
    slow = web_town.accepted()
    web_town.complete("gl1", slow, {"outcome": "refer_up", "note": "需要片长协调"})
    fast = web_town.accepted(severity="urgent")
    web_town.fire(WEB_START + timedelta(hours=3.5))
    client = web_as("dl1", lang)
    client.post(f"/work-items/{web_town.item(slow)}/claim")
    bad = client.post(f"/tasks/{web_town.item(fast)}", data={"outcome": "refer_up"})
    assert bad.status_code == 400
    return [
        page(client, "/"),
        page(client, f"/tasks/{web_town.item(slow)}"),
        bad.get_data(as_text=True),
        page(web_as("off1", lang), "/?category=policy"),
        page(web_as("off2", lang), "/"),
    ]


def test_chinese_pages_show_no_english_msgids(web_town, web_as):
    texts = [visible(html) for html in _busy_pages(web_town, web_as, None)]
    assert "督办" in texts[0] and "已认领：钱片长" in texts[0] and "此项必填。" in texts[2]
    for msgid in _messages_used():
        for chunk in re.split(r"%\(\w+\)s", msgid):
            if len(chunk.strip()) >= 4:
                assert not any(chunk.strip() in text for text in texts), msgid


def test_english_pages_show_english_words(web_town, web_as):
    texts = [visible(html) for html in _busy_pages(web_town, web_as, "en")]
    inbox, task, bad = texts[0], texts[1], texts[2]
    assert "My inbox" in inbox and "Overdue only" in inbox and "Supervised" in inbox
    assert "Claimed by 钱片长" in inbox and "District leader · 一片" in inbox
    assert "Outcome" in task and "Resolved" in task and "Refer to the tier above" in task
    assert "Required when Outcome is “Refer to the tier above”." in task
    assert "This field is required." in bad
    assert "Resident request" in task  # the category in the case summary
    catalog = _inbox_catalog()
    for text in texts:
        for msgid, chinese in catalog.items():
            if len(chinese) >= 2:
                assert chinese not in text, (msgid, chinese)


def test_posts_without_the_csrf_token_are_refused(tmp_path, web_clock, web_bundle):
    app = _make_app(tmp_path, web_clock, web_bundle, csrf=True)
    town = Town(app, web_clock)
    number = town.open(None)
    item_id = town.item(number)
    client = app.test_client()
    login = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', login).group(1)
    client.post("/login", data={"username": "off1", "password": "pw", "csrf_token": token})

    assert client.post(f"/work-items/{item_id}/claim").status_code == 400
    assert (
        client.post(f"/tasks/{item_id}", data={"valid": "false", "note": "重复"}).status_code == 400
    )
    assert town.events(number) == ["opened"]

    html = page(client, "/")
    form_token = one(html, data_testid="inbox-item").inside("input", name="csrf_token")[0]["value"]
    response = client.post(f"/work-items/{item_id}/claim", data={"csrf_token": form_token})
    assert response.status_code == 302
    assert town.events(number) == ["opened", "claimed"]
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_supervision_reaches_the_owner_and_the_tier_above_and_escalation_is_badged(
    web_town, web_as
):
    number = web_town.accepted()  # grid leader, 24 working hours from Monday 10:00
    assert 'data-testid="watch"' not in page(web_as("dl1"), "/")

    web_town.fire(WEB_START + timedelta(hours=19.5))  # 80%: 督办 to handler, owner, tier above
    for username in ("off1", "dl1"):  # the owner and the district leader above the grid
        html = page(web_as(username), "/")
        watched = [e.attrs["data-case"] for e in find(html, data_testid="watch-item")]
        assert watched == [number], username
    assert 'data-testid="watch"' not in page(web_as("gl1"), "/")  # theirs is the item itself
    assert 'data-testid="watch"' not in page(web_as("vs1"), "/")  # two tiers up: not theirs

    web_town.fire(WEB_START + timedelta(hours=24))  # 100%: escalated to the district
    html = page(web_as("dl1"), "/")
    (item,) = inbox_items(html)
    assert item.attrs["data-case"] == number
    assert item.inside("span", data_testid="badge-escalated")
    assert 'data-testid="watch"' not in html  # the notice was about an item that has moved on
