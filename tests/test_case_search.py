"""The case browser (engine/case_search.py): GET /api/v1/cases with its filters and the search form
on the case list page (/cases), over Flask's test client, and the engine's pieces directly.

One town, driven once for the module (conftest's organisation; nothing here changes it):
  esc       opened Monday 10:00 (Shanghai) by off1 in V01-D1-G01, dispute, urgent: escalated from
            the district to the village and on to the town by its timers (twice); PS named on it
  early     opened Tuesday 07:00 by off1b in G01 (Monday 23:00 UTC), never accepted: its accept
            item is past due when the tests look
  archived  accepted by off1 Tuesday 09:00, resolved by gl1, reviewed by dl1: archived
  held      accepted by off1b; gl1 holds its handle item
  other     accepted by off3 in another village (V02-D1-G01), safety hazard
  rejected  opened by off2 in V01-D1-G02 and refused at acceptance
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import lxml.html
import pytest
from apps import bearer, build_app, dispose_app
from conftest import ORG_YAML, START

from engine.access import viewer_of
from engine.case_search import (
    CaseFilters,
    UnitRef,
    case_page,
    covered_unit,
    covered_units,
    search_query,
)
from engine.clock import FixedClock
from engine.deadlines import case_deadline
from engine.errors import NotFound
from engine.models import Case, CaseDepartment, Person, Unit, WorkItem
from webapp import services
from webapp.extensions import db
from webapp.i18n import messages

SH = ZoneInfo("Asia/Shanghai")
API = "/api/v1"
ACCEPT = {"valid": True, "category": "resident_request", "severity": "normal"}
G01, G02 = "V01-D1-G01", "V01-D1-G02"


def sh(*args: int) -> datetime:
    """An instant given in Shanghai wall-clock time, as UTC."""
    return datetime(*args, tzinfo=SH).astimezone(UTC)


# ------------------------------------------------------------------ the town


class Driver:
    """Steps cases with the engine, as the other pages and the API would."""

    def __init__(self, app, clock: FixedClock):
        self.app, self.clock = app, clock

    def viewer(self, username: str):
        person = db.session.scalars(db.select(Person).where(Person.username == username)).one()
        return viewer_of(db.session, person, self.clock.now())

    def runtime(self):
        return services(self.app).runtime

    def open(self, officer: str, grid: str = G01, **fields) -> str:
        fields.setdefault("title", "路灯坏了")
        with self.app.app_context():
            case = self.runtime().open_case(db.session, self.viewer(officer), grid=grid, **fields)
            return case.number

    def item(self, number: str) -> WorkItem:
        items = list(
            db.session.scalars(
                db.select(WorkItem)
                .join(Case, Case.id == WorkItem.case_id)
                .where(Case.number == number, WorkItem.completed_at.is_(None))
            )
        )
        assert len(items) == 1, items
        return items[0]

    def complete(self, username: str, number: str, data: dict) -> None:
        with self.app.app_context():
            item = self.item(number)
            self.runtime().complete(db.session, self.viewer(username), item.id, data)

    def claim(self, username: str, number: str) -> None:
        with self.app.app_context():
            self.runtime().claim(db.session, self.viewer(username), self.item(number).id)

    def accepted(self, officer: str, grid: str = G01, **accept) -> str:
        number = self.open(officer, grid)
        self.complete(officer, number, {**ACCEPT, **accept})
        return number

    def fire(self, at: datetime) -> None:
        self.clock.set(at)
        with self.app.app_context():
            self.runtime().fire_due_timers(db.session)

    def case(self, number: str) -> Case:
        return db.session.scalars(db.select(Case).where(Case.number == number)).one()


def _drive(town: Driver) -> dict[str, str]:
    cases = {}
    cases["esc"] = town.accepted("off1", category="dispute", severity="urgent")
    town.fire(sh(2026, 11, 23, 14))  # the district's 4 clock hours: up to the village
    town.fire(sh(2026, 11, 23, 22))  # the village's 8: up to the town
    town.clock.set(sh(2026, 11, 24, 7))
    cases["early"] = town.open("off1b", title="清晨登记")
    town.clock.set(sh(2026, 11, 24, 9))
    cases["archived"] = town.accepted("off1")
    town.complete("gl1", cases["archived"], {"outcome": "resolved", "note": "已修好"})
    town.complete("off1", cases["archived"], {"satisfaction": "satisfied"})
    town.complete("gl1", cases["archived"], {"summary": "路灯已更换"})
    town.complete("dl1", cases["archived"], {"approved": True})
    cases["held"] = town.accepted("off1b")
    town.claim("gl1", cases["held"])
    cases["other"] = town.accepted("off3", "V02-D1-G01", category="safety_hazard")
    cases["rejected"] = town.open("off2", G02)
    town.complete("off2", cases["rejected"], {"valid": False, "note": "重复登记"})
    with town.app.app_context():
        ps = db.session.scalars(db.select(Unit).where(Unit.code == "PS")).one()
        db.session.add(CaseDepartment(case_id=town.case(cases["esc"]).id, unit_id=ps.id))
        db.session.commit()
    return cases


@pytest.fixture(scope="module")
def town(tmp_path_factory):
    """The module's town: (app, cases by name, the instant the tests look at it)."""
    clock = FixedClock(START)
    app = build_app(tmp_path_factory.mktemp("search") / "search.sqlite", ORG_YAML, clock)
    driver = Driver(app, clock)
    cases = _drive(driver)
    with app.app_context():
        late = driver.item(cases["early"]).due_at + timedelta(minutes=1)
        esc = driver.case(cases["esc"])
        assert (esc.escalations, esc.tier) == (2, "town_leadership")
        assert driver.item(cases["esc"]).due_at > late, "the town's limit is still ahead"
        db.session.remove()
    clock.set(late)
    yield app, cases, late
    dispose_app(app)


@pytest.fixture(scope="module")
def tokens(town):
    app, _cases, _late = town
    client = app.test_client()
    made: dict[str, dict] = {}

    def headers(username: str) -> dict:
        if username not in made:
            made[username] = bearer(client, username)
        return made[username]

    return headers


def names_of(cases: dict[str, str], numbers) -> set[str]:
    by_number = {number: name for name, number in cases.items()}
    return {by_number[n] for n in numbers}


@pytest.fixture(scope="module")
def api(town, tokens):
    """api(username, **query) -> the names of the cases GET /cases lists (one page)."""
    app, cases, _late = town
    client = app.test_client()

    def found(username: str = "aud", **query) -> set[str]:
        response = client.get(f"{API}/cases", query_string=query, headers=tokens(username))
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["next_cursor"] is None
        return names_of(cases, [c["number"] for c in body["items"]])

    return found


def api_error(town, tokens, username: str = "aud", **query) -> tuple[int, dict]:
    app, _cases, _late = town
    response = app.test_client().get(f"{API}/cases", query_string=query, headers=tokens(username))
    body = response.get_json()
    assert set(body) == {"error"}, body
    return response.status_code, body["error"]


EVERY = {"esc", "early", "archived", "held", "other", "rejected"}


# ------------------------------------------------------------------ each filter, on the API


def test_no_filter_lists_what_the_caller_may_see(api):
    assert api() == EVERY
    assert api("gl1") == {"esc", "early", "archived", "held"}
    assert api("gl3") == {"other"}
    assert api("ps1") == {"esc"}  # the department was named on it


def test_number_is_a_case_insensitive_prefix(town, api):
    _app, cases, _late = town
    assert api(number=cases["esc"]) == {"esc"}
    assert api(number=cases["esc"].lower()) == {"esc"}
    assert api(number="xdk-2026-0000") == EVERY
    assert api(number="XDK-2025") == set()
    assert api(number="XDK%") == set(), "% is a character here, not a wildcard"
    assert api(number="XDK_2026") == set(), "_ is a character here, not a wildcard"


def test_unit_narrows_to_the_cases_under_it(api):
    assert api(unit="V02") == {"other"}
    assert api(unit=G02) == {"rejected"}
    assert api(unit="V01") == EVERY - {"other"}
    assert api(unit="V01-D1", status="open") == {"esc", "early", "held"}
    assert api(unit="PS") == {"esc"}  # a department: the cases it was named on
    assert api("dl1", unit=G02) == {"rejected"}
    assert api("gl1", unit=G01) == {"esc", "early", "archived", "held"}
    assert api("ps1", unit="PS") == {"esc"}


def test_a_unit_outside_the_callers_units_does_not_exist(town, tokens):
    for code in ("V02", "V01", "V01-D1", G02, "PS", "NOPE"):
        status, error = api_error(town, tokens, "gl1", unit=code)
        assert (status, error["code"], set(error["fields"])) == (404, "not_found", {"unit"}), code
    status, error = api_error(town, tokens, "aud", unit="NOPE")
    assert status == 404


def test_person_as_owner_handler_actor_or_any(api):
    assert api(person="off1", person_as="owner") == {"esc", "archived"}
    assert api(person="off1", person_as="handler") == set(), "accepting is not handling"
    assert api(person="off1", person_as="actor") == {"esc", "archived"}
    assert api(person="gl1", person_as="owner") == set()
    # gl1 completed archived's handle item and holds held's now.
    assert api(person="gl1", person_as="handler") == {"archived", "held"}
    assert api(person="dl1", person_as="handler") == set(), "esc's district item escalated away"
    assert api(person="dl1", person_as="actor") == {"archived"}  # the review
    assert api(person="off1b", person_as="owner") == {"held"}
    assert api(person="off1b", person_as="actor") == {"held", "early"}
    assert api(person="off1b") == {"held", "early"}  # any: the default
    assert api(person="off1b", person_as="any") == {"held", "early"}
    assert api(person="nobody") == set()


def test_a_person_is_found_by_their_full_name_too(api):
    assert api(person="孙组长", person_as="handler") == {"archived", "held"}
    assert api(person="周信息员", person_as="owner") == {"esc", "archived"}


def test_category_and_status(api):
    assert api(category="dispute") == {"esc"}
    assert api(category="safety_hazard") == {"other"}
    assert api(category="fireworks") == set()
    assert api(status="open") == {"esc", "early", "held", "other"}
    assert api(status="accepting") == {"early"}
    assert api(status="handling") == {"esc", "held", "other"}
    assert api(status="archived") == {"archived"}
    assert api(status="rejected") == {"rejected"}


def test_dates_are_whole_days_in_shanghai(api):
    assert api(**{"from": "2026-11-23", "to": "2026-11-23"}) == {"esc"}
    # early was opened at 07:00 on the 24th in Shanghai, 23:00 on the 23rd in UTC.
    assert api(to="2026-11-23") == {"esc"}
    assert api(**{"from": "2026-11-24"}) == EVERY - {"esc"}
    assert api(**{"from": "2026-11-24", "to": "2026-11-24"}) == EVERY - {"esc"}
    assert api(**{"from": "2026-11-25"}) == set()


def test_overdue_is_what_the_case_says(town, api, tokens):
    assert api(overdue="true") == {"early"}
    assert api(overdue="false") == EVERY - {"early"}
    assert api(overdue="false", status="open") == {"esc", "held", "other"}
    # The same cases answer `overdue: true` themselves.
    app, cases, _late = town
    listed = app.test_client().get(f"{API}/cases", headers=tokens("aud")).get_json()["items"]
    assert names_of(cases, [c["number"] for c in listed if c["overdue"]]) == {"early"}


def test_escalated_at_least_n_times(api):
    assert api(escalated="1") == {"esc"}
    assert api(escalated="2") == {"esc"}
    assert api(escalated="3") == set()


def test_filters_combine(api):
    assert api(unit="V01", status="open", person="off1") == {"esc"}
    assert api(person="off1b", overdue="false") == {"held"}
    assert api(category="dispute", escalated="2", unit="PS", **{"from": "2026-11-23"}) == {"esc"}
    assert api("gl3", person="off1") == set(), "outside gl3's grid whatever the filter"


def test_bad_parameters_answer_400_naming_each(town, tokens):
    status, error = api_error(
        town,
        tokens,
        status="lost",
        escalated="0",
        overdue="maybe",
        person_as="boss",
        number="",
        to="2026-13-01",
        **{"from": "yesterday"},
    )
    assert status == 400 and error["code"] == "invalid"
    fields = {"status", "escalated", "overdue", "person_as", "number", "from", "to"}
    assert set(error["fields"]) == fields
    assert all(isinstance(m, str) and m for m in error["fields"].values())
    status, error = api_error(town, tokens, to="2026-11-01", **{"from": "2026-11-02"})
    assert (status, set(error["fields"])) == (400, {"to"})
    status, error = api_error(town, tokens, category="nonsense")
    assert (status, set(error["fields"])) == (400, {"category"})
    status, error = api_error(town, tokens, escalated="two", cursor="!!!")
    assert (status, set(error["fields"])) == (400, {"escalated"})
    status, error = api_error(town, tokens, cursor="!!!")
    assert (status, set(error["fields"])) == (400, {"cursor"})


def test_the_openapi_document_lists_the_filters(town):
    app, _cases, _late = town
    doc = app.test_client().get(f"{API}/openapi.json").get_json()
    params = {p["name"]: p for p in doc["paths"]["/cases"]["get"]["parameters"]}
    assert set(params) == {
        "number",
        "unit",
        "person",
        "person_as",
        "category",
        "status",
        "from",
        "to",
        "overdue",
        "escalated",
        "cursor",
    }
    assert "open" in params["status"]["schema"]["enum"]
    assert params["escalated"]["schema"] == {"type": "integer", "minimum": 1}
    assert params["from"]["schema"]["format"] == "date"


# ------------------------------------------------------------------ the engine's pieces


def test_search_query_and_covered_units_in_the_engine(town):
    app, cases, late = town
    with app.app_context():
        driver = Driver(app, services(app).runtime.clock)
        aud, gl1, dl1, ps1 = (driver.viewer(u) for u in ("aud", "gl1", "dl1", "ps1"))

        def found(viewer, **filters) -> set[str]:
            query = search_query(viewer, CaseFilters(**filters), late)
            return names_of(cases, [c.number for c in db.session.scalars(query)])

        assert found(aud, opened_from=date(2026, 11, 23), opened_to=date(2026, 11, 23)) == {"esc"}
        assert found(gl1, overdue=True) == {"early"}
        # Overdue is engine/deadlines.py's: what case_deadline says of each case.
        for case in db.session.scalars(search_query(aud, CaseFilters(overdue=False), late)):
            items = db.session.scalars(
                db.select(WorkItem).where(
                    WorkItem.case_id == case.id, WorkItem.completed_at.is_(None)
                )
            )
            assert not case_deadline(list(items), late).overdue, case.number
        unit = covered_unit(db.session, dl1, G02)
        assert unit.level == "grid" and found(dl1, unit=unit) == {"rejected"}
        with pytest.raises(NotFound):
            covered_unit(db.session, gl1, "V01-D1")
        ps = covered_unit(db.session, ps1, "PS")
        assert ps == UnitRef(ps.id, "department") and found(ps1, unit=ps) == {"esc"}

        assert [u.code for u in covered_units(db.session, gl1)] == [G01]
        assert [u.code for u in covered_units(db.session, dl1)] == ["V01-D1", G01, G02]
        assert [u.code for u in covered_units(db.session, ps1)] == ["PS"]
        every = [u.code for u in covered_units(db.session, aud)]
        assert every[0] == "V01" and every[-1] == "PS" and "XDK" not in every
        assert len(every) == 2 + 2 + 4 + 1
        with pytest.raises(ValueError):
            CaseFilters(person_as="boss")
        db.session.remove()


def test_case_page_walks_every_match_once_newest_first(town):
    app, cases, late = town
    with app.app_context():
        aud = Driver(app, services(app).runtime.clock).viewer("aud")
        query = search_query(aud, CaseFilters(), late)
        seen, after, pages = [], None, 0
        while True:
            page, after = case_page(db.session, query, after, limit=4)
            pages += 1
            seen += [c.id for c in page]
            if after is None:
                break
        assert pages == 2 and len(seen) == len(set(seen)) == len(cases)
        assert seen == sorted(seen, reverse=True)
        db.session.remove()


# ------------------------------------------------------------------ paging more than a page


@pytest.fixture
def crowd(make_app, clock):
    """25 cases of off1 in G01 and 4 of off2 in G02, all opened today."""
    app = make_app()
    driver = Driver(app, clock)
    mine = [driver.open("off1", title=f"第{i}件") for i in range(25)]
    others = [driver.open("off2", G02, title=f"他组{i}") for i in range(4)]
    return app, mine, others


def test_api_pages_carry_the_filters_and_list_each_match_once(crowd, monkeypatch):
    app, mine, _others = crowd
    monkeypatch.setattr("webapp.api.PAGE", 10)
    client = app.test_client()
    headers = bearer(client, "aud")
    seen, cursor, pages = [], None, 0
    while True:
        query = {"unit": G01, "person": "off1", **({"cursor": cursor} if cursor else {})}
        body = client.get(f"{API}/cases", query_string=query, headers=headers).get_json()
        pages += 1
        seen += [c["number"] for c in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == mine[::-1], "newest first, each once, none of G02's"


def test_page_next_links_keep_the_filters(crowd):
    app, mine, _others = crowd
    client = app.test_client()
    assert client.post("/login", data={"username": "aud", "password": "pw"}).status_code == 302
    doc = tree(client.get(f"/cases?unit={G01}&person=off1&status=accepting"))
    first = rows(doc)
    assert first == mine[::-1][:20]
    more = one(doc, "cases-next").get("href")
    query = parse_qs(urlsplit(more).query)
    assert query["unit"] == [G01] and query["person"] == ["off1"]
    assert query["status"] == ["accepting"] and "cursor" in query
    doc = tree(client.get(more))
    assert rows(doc) == mine[::-1][20:]
    assert not doc.xpath('//*[@data-testid="cases-next"]')
    newest = doc.xpath('//nav[@class="pager"]/a')[0].get("href")
    assert "cursor" not in parse_qs(urlsplit(newest).query)
    assert parse_qs(urlsplit(newest).query)["unit"] == [G01]


# ------------------------------------------------------------------ the page


def tree(response):
    return lxml.html.fromstring(response.get_data(as_text=True))


def one(doc, testid: str):
    found = doc.xpath(f'//*[@data-testid="{testid}"]')
    assert len(found) == 1, (testid, len(found))
    return found[0]


def rows(doc) -> list[str]:
    return [r.get("data-number") for r in doc.xpath('//*[@data-testid="case-row"]')]


def text_of(node) -> str:
    return " ".join(node.text_content().split())


@pytest.fixture(scope="module")
def signed_in(town):
    app, _cases, _late = town
    clients = {}

    def client(username: str, lang: str | None = None):
        if username not in clients:
            c = app.test_client()
            response = c.post("/login", data={"username": username, "password": "pw"})
            assert response.status_code == 302
            clients[username] = c
        c = clients[username]
        if lang:
            c.set_cookie("lang", lang)
        else:
            c.delete_cookie("lang")
        return c

    return client


def test_the_page_has_the_form_collapsed_and_lists_open_cases(town, signed_in):
    _app, cases, _late = town
    doc = tree(signed_in("aud").get("/cases"))
    search = one(doc, "case-search")
    assert search.tag == "details" and search.get("open") is None
    assert text_of(search.xpath("./summary")[0]) == "筛选"
    form = one(doc, "case-search-form")
    assert form.get("method") == "get" and not form.xpath('.//input[@name="csrf_token"]')
    names = set(form.xpath(".//input/@name") + form.xpath(".//select/@name"))
    assert names == {
        "number",
        "unit",
        "person",
        "person_as",
        "category",
        "status",
        "from",
        "to",
        "overdue",
        "escalated",
    }
    assert names_of(cases, rows(doc)) == {"esc", "early", "held", "other"}
    for row in doc.xpath('//*[@data-testid="case-row"]'):
        assert row.xpath(".//h3/a/@href") == [f"/cases/{row.get('data-number')}"]
    assert form.xpath('.//select[@name="status"]/option[@selected]/@value') == ["open"]
    assert one(doc, "filter-open").get("aria-current") == "page"
    # Units: every village, district and grid, then the departments; categories: the bundle's.
    units = form.xpath('.//select[@name="unit"]/option/@value')
    assert units[:3] == ["", "V01", "V01-D1"] and units[-1] == "PS"
    labels = dict(
        zip(
            units,
            [text_of(o) for o in form.xpath('.//select[@name="unit"]/option')],
            strict=True,
        )
    )
    assert labels[G02] == "一村 · 一片 · 二组"
    categories = form.xpath('.//select[@name="category"]/option/@value')
    assert {"dispute", "safety_hazard", "resident_request"} <= set(categories)


def test_the_page_filters_and_keeps_what_was_chosen(town, signed_in):
    _app, cases, _late = town
    aud = signed_in("aud")
    doc = tree(aud.get("/cases?unit=V02&status=all"))
    assert names_of(cases, rows(doc)) == {"other"}
    # Shut over results, so that on a phone they come first; the badge counts the filters.
    assert one(doc, "case-search").get("open") is None
    assert text_of(one(doc, "case-search-count")) == "2"
    assert doc.xpath('//select[@name="unit"]/option[@selected]/@value') == ["V02"]
    assert one(doc, "filter-all").get("aria-current") == "page"
    # A tab keeps the other filters.
    rejected = parse_qs(urlsplit(one(doc, "filter-rejected").get("href")).query)
    assert rejected == {"unit": ["V02"], "status": ["rejected"]}

    doc = tree(aud.get("/cases?person=gl1&person_as=handler&status=all"))
    assert names_of(cases, rows(doc)) == {"archived", "held"}
    assert doc.xpath('//select[@name="person_as"]/option[@selected]/@value') == ["handler"]
    doc = tree(aud.get("/cases?escalated=2&overdue=false&from=2026-11-23&to=2026-11-23"))
    assert names_of(cases, rows(doc)) == {"esc"}
    doc = tree(aud.get("/cases?overdue=true"))
    assert names_of(cases, rows(doc)) == {"early"}
    doc = tree(aud.get(f"/cases?number={cases['archived'].lower()}&status=all&category=&unit="))
    assert names_of(cases, rows(doc)) == {"archived"}
    # The tabs of before still work.
    assert names_of(cases, rows(tree(aud.get("/cases?show=rejected")))) == {"rejected"}
    assert names_of(cases, rows(tree(aud.get("/cases?show=all")))) == EVERY
    assert names_of(cases, rows(tree(signed_in("gl1").get("/cases?status=all")))) == {
        "esc",
        "early",
        "archived",
        "held",
    }


def test_the_page_says_when_nothing_matches_and_how_to_clear(signed_in):
    doc = tree(signed_in("aud").get("/cases?number=XDK-1999"))
    empty = one(doc, "cases-empty")
    assert "没有符合条件的案件" in text_of(empty)
    assert one(doc, "case-search").get("open") is not None, "open, to change the filters"
    assert one(doc, "cases-clear").get("href") == "/cases"
    assert not rows(doc)


def test_the_page_explains_bad_filters_field_by_field(signed_in):
    response = signed_in("aud").get("/cases?escalated=0&from=2026-02-30&overdue=maybe")
    assert response.status_code == 400
    doc = tree(response)
    assert one(doc, "case-search").get("open") is not None
    assert "1 到 1000" in text_of(one(doc, "error-escalated"))
    assert "YYYY-MM-DD" in text_of(one(doc, "error-from"))
    assert one(doc, "error-overdue") is not None
    assert doc.xpath('//input[@name="escalated"]/@value') == ["0"], "what was typed is kept"
    assert one(doc, "cases-invalid") is not None and not rows(doc)
    doc = tree(signed_in("aud").get("/cases?from=2026-11-24&to=2026-11-23"))
    assert text_of(one(doc, "error-to")) == "截止日期早于开始日期。"


def test_a_unit_outside_the_viewers_units_is_404_on_the_page(signed_in):
    assert signed_in("gl1").get("/cases?unit=V02").status_code == 404
    doc = tree(signed_in("gl1").get("/cases"))
    assert doc.xpath('//select[@name="unit"]/option/@value') == ["", G01]


def test_the_page_reads_in_english_without_chinese_left_over(signed_in):
    zh = messages("zh_CN")
    ours = [
        "Filter",
        "Case number",
        "Unit",
        "Person",
        "Linked to the case as",
        "Opened from",
        "Opened until",
        "Escalated at least (times)",
        "Search",
        "All units",
        "All statuses",
    ]
    doc = tree(signed_in("aud", "en").get("/cases?person=off1"))
    text = " ".join(doc.text_content().split())
    for msgid in ours:
        assert msgid in text, msgid
        assert zh[msgid] not in text, zh[msgid]
    doc = tree(signed_in("aud").get("/cases?person=off1"))
    text = " ".join(doc.text_content().split())
    for msgid in ours:
        assert zh[msgid] in text, zh[msgid]
