"""What a newcomer meets in the first hour: one deadline on every page and in the API, menus that
offer only what each role may do (and whose links never answer 403), a landing page for every
role, owners' items without a claim button, filters on 我首接的案件, and severity words that read
right. Fixtures come from test_web_inbox (its organisation, clock and Town driver).
"""

# The fixtures are test_web_inbox's, imported by name; pytest passes them in as arguments.
# ruff: noqa: F401, F811

from __future__ import annotations

from datetime import timedelta

from test_web_inbox import (
    find,
    one,
    page,
    web_app,
    web_as,
    web_bundle,
    web_clock,
    web_town,
)

from engine.clock import iso

# ------------------------------------------------------------------ one deadline


def _to_town(town) -> str:
    """A case referred up tier by tier until it is handled by the town."""
    number = town.accepted()
    for leader in ("gl1", "dl1", "vs1"):
        town.complete(leader, number, {"outcome": "refer_up", "note": "超出本级权限"})
    return number


def _times(html: str, testid: str) -> list[str]:
    """The datetime attributes of the <time> elements inside the element with this testid."""
    return [a["datetime"] for a in one(html, data_testid=testid).inside("time")]


def test_an_overdue_town_item_has_one_deadline_everywhere(web_town, web_as, web_app):
    number = _to_town(web_town)
    item_id = web_town.item(number)
    due = web_town.due(number)
    # Past the town's limit the item is supervised every day; a day later it is still due at the
    # same instant, though the daily repeat's next time is a day further on.
    web_town.fire(due + timedelta(minutes=1))
    web_town.fire(due + timedelta(days=1, minutes=1))
    assert web_town.events(number).count("supervised") >= 2
    assert web_town.due(number) == due
    web_town.clock.set(due + timedelta(days=1, hours=2))

    api = web_app.test_client()
    token = api.post("/api/v1/tokens", json={"username": "tl1", "password": "pw"}).json["token"]
    headers = {"Authorization": f"Bearer {token}"}
    case = api.get(f"/api/v1/cases/{number}", headers=headers).json
    assert case["due_at"] == iso(due) and case["overdue"] is True
    items = api.get("/api/v1/inbox", headers=headers).json["items"]
    assert [(i["id"], i["due_at"], i["overdue"]) for i in items] == [(item_id, iso(due), True)]

    leader = web_as("tl1")
    inbox = page(leader, "/")
    row = one(inbox, data_testid="inbox-item", data_item_id=str(item_id))
    assert [a["datetime"] for a in row.inside("time")] == [due.isoformat()]
    assert row.inside("span", data_testid="badge-overdue")

    task = page(leader, f"/tasks/{item_id}")
    head = one(task, **{"class": "task-head"})
    assert [a["datetime"] for a in head.inside("time")] == [due.isoformat()]
    assert "已超时 26小时" in head.words
    details = one(task, data_testid="case-summary")
    assert [a["datetime"] for a in details.inside("time")] == [due.isoformat()]
    assert "已超时 26小时" in details.words and "还剩" not in details.words

    shown = page(leader, f"/cases/{number}")
    deadlines = find(shown, data_testid="case-deadline")
    assert deadlines and all(
        [a["datetime"] for a in d.inside("time")] == [due.isoformat()] for d in deadlines
    )
    assert all("已超时 26小时" in d.words and "还剩" not in d.words for d in deadlines)
    assert find(shown, data_testid="case-overdue")


def test_a_town_item_fired_ahead_of_the_clock_is_overdue_everywhere(web_town, web_as, web_app):
    """`timers fire-due --as-of` may run ahead of the server's clock: once the 100% timer has
    fired, the item is overdue even though the clock has not reached its deadline (DESIGN §8)."""
    number = _to_town(web_town)
    due = web_town.due(number)
    web_town.fire(due + timedelta(minutes=1))
    web_town.clock.set(due - timedelta(hours=1))

    api = web_app.test_client()
    token = api.post("/api/v1/tokens", json={"username": "tl1", "password": "pw"}).json["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert api.get(f"/api/v1/cases/{number}", headers=headers).json["overdue"] is True
    assert api.get("/api/v1/inbox?overdue=true", headers=headers).json["items"]
    assert not api.get("/api/v1/inbox?overdue=false", headers=headers).json["items"]
    row = one(page(web_as("tl1"), "/"), data_testid="inbox-item")
    assert row.inside("span", data_testid="badge-overdue")


# ------------------------------------------------------------------ menus and landings

# Who may use which page, by the positions in test_web_inbox's organisation. Leaders of units
# and auditors also get the figures and the overdue board.
FIGURES = ["dashboards.index", "board.index"]
MENUS = {
    "off1": ["inbox.index", "cases.mine", "cases.new", "households.index", "campaigns.index"],
    "gl1": ["inbox.index", "households.index", "campaigns.index", "cases.index", *FIGURES],
    "tl1": ["inbox.index", "campaigns.index", "cases.index", *FIGURES],
    "aud": ["campaigns.index", "cases.index", *FIGURES, "audit.index"],
    "ps1": ["cases.index"],
    "adm": [
        "diagrams.index",
        "editor.index",
        "migrations.index",
        "org.index",
        "calendar_pages.index",
        "admin.ops",
        "audit.index",
    ],
}
LANDING = {"off1": None, "gl1": None, "aud": "/cases", "ps1": "/cases", "adm": "/admin/ops"}


def _menu(html: str) -> list[tuple[str, str]]:
    """(endpoint, href) of the header's menu links."""
    return [
        (a["data-testid"].removeprefix("menu-"), a["href"])
        for a in one(html, data_testid="menu").inside("a")
    ]


def test_each_role_is_offered_only_what_it_may_do_and_no_link_answers_403(web_town, web_as):
    number = web_town.accepted()  # something in every list
    web_town.complete("gl1", number, {"outcome": "refer_up", "note": "超出本级权限"})
    for username, wanted in MENUS.items():
        client = web_as(username)
        landing = client.get("/")
        if LANDING.get(username):
            assert landing.status_code == 302, username
            assert landing.headers["Location"] == LANDING[username], username
        home = page(client, landing.headers.get("Location", "/"))
        links = _menu(home)
        assert [endpoint for endpoint, _href in links] == wanted, username
        for endpoint, href in links:
            response = client.get(href, follow_redirects=True)  # /admin/calendar: to a year
            assert response.status_code == 200, (username, endpoint, response.status_code)


def test_pages_a_role_is_not_offered_still_explain_themselves(web_as):
    """Typed by hand, a page outside one's role answers with a page that says why."""
    refused = web_as("gl1").get("/cases/new")
    assert refused.status_code == 403
    assert "只有信息员可以登记案件" in refused.get_data(as_text=True)
    admin_only = web_as("off1").get("/admin/ops")
    assert admin_only.status_code == 403
    assert "只有管理员可以打开此页面" in admin_only.get_data(as_text=True)


def test_each_landing_says_what_the_role_does_here(web_town, web_as):
    auditor = page(web_as("aud"), "/cases")
    assert "审计" in one(auditor, data_testid="cases-intro").words
    department = page(web_as("ps1"), "/cases")
    assert one(department, data_testid="cases-empty")  # no case named the police station yet
    assert "联办" in one(department, data_testid="menu").words
    admin = page(web_as("adm"), "/admin/ops")
    assert "管理员" in one(admin, data_testid="ops-intro").words


def test_the_case_list_holds_only_the_viewers_cases_and_filters_by_status(web_town, web_as):
    mine = web_town.accepted()
    other = web_town.accepted("off3", "V02-D1-G01")
    rejected = web_town.open()
    web_town.complete("off1", rejected, {"valid": False, "note": "重复登记"})

    def listed(username: str, query: str = "") -> list[str]:
        html = page(web_as(username), f"/cases{query}")
        return [row.attrs["data-number"] for row in find(html, data_testid="case-row")]

    assert listed("aud") == [other, mine]  # open first: the rejected one is under its own tab
    assert listed("aud", "?show=rejected") == [rejected]
    assert listed("aud", "?show=all") == [rejected, other, mine]
    assert listed("gl1") == [mine]  # V02's case is outside gl1's grids
    assert listed("ps1", "?show=all") == []


# ------------------------------------------------------------------ small frictions


def test_the_owner_is_not_offered_a_claim_on_their_own_feedback(web_town, web_as):
    number = web_town.accepted()
    web_town.complete("gl1", number, {"outcome": "resolved"})
    item_id = web_town.item(number)
    officer = web_as("off1")
    row = one(page(officer, "/"), data_testid="inbox-item", data_item_id=str(item_id))
    assert row.attrs["data-task"] == "feedback"
    assert not row.inside("button", data_testid="claim")
    task = page(officer, f"/tasks/{item_id}")
    assert not find(task, data_testid="claim")
    assert one(task, data_testid="owner-task")
    assert one(task, data_testid="task-form")


def test_cases_i_accepted_filter_open_feedback_and_closed(web_town, web_as):
    handling = web_town.accepted()
    waiting = web_town.accepted()
    web_town.complete("gl1", waiting, {"outcome": "resolved"})
    closed = web_town.open()
    web_town.complete("off1", closed, {"valid": False, "note": "重复登记"})

    def listed(query: str = "") -> list[str]:
        html = page(web_as("off1"), f"/cases/mine{query}")
        return [row.attrs["data-number"] for row in find(html, data_testid="mine-case")]

    assert listed() == [waiting, handling]
    assert listed("?show=feedback") == [waiting]
    assert listed("?show=closed") == [closed]
    tabs = one(page(web_as("off1"), "/cases/mine"), data_testid="case-filters")
    assert tabs.words == "进行中 待我回访 已结案"


def test_severity_reads_low_normal_urgent_and_defaults_to_normal(web_town, web_as):
    number = web_town.open(None)  # a resident's case, opened without a severity
    task = page(web_as("off1"), f"/tasks/{web_town.item(number)}")
    choices = {
        a["value"]: a for a in one(task, data_testid="task-form").inside("input", name="severity")
    }
    assert list(choices) == ["low", "normal", "urgent"]
    assert "checked" in choices["normal"] and "checked" not in choices["urgent"]
    assert "较缓" in task and "一般" in task and "紧急" in task and "较急" not in task
    new = page(web_as("off1"), "/cases/new")
    assert one(new, name="severity", value="normal").attrs.get("checked") == ""
