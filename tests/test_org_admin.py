"""The organisation for administrators (issue 10, item 5): coverage (定格定人定责) after a
re-import empties a grid, the deactivated owner's feedback seen by the grid's other officers and
handed to a new owner (`owner_changed`, and the case still replays), YAML and xlsx export that
re-import without a change, people (deactivate, reactivate, reset a password, move a position),
the administration log, and the pages (admins only, in Chinese and English)."""

from __future__ import annotations

import html
import io
import json
import re

import pytest
from apps import web_client
from conftest import ACCEPT_NORMAL, ORG_YAML
from conftest import START as START_AT
from openpyxl import Workbook, load_workbook
from sqlalchemy import select

from engine import coverage, org_admin
from engine.admin_log import check as check_admin_log
from engine.errors import Conflict, Invalid, NotFound
from engine.models import AdminEvent, Case, Household, Person, Unit, WorkItem
from engine.org import ImportReport, OrgFileError, import_org
from engine.org_xlsx import (
    HOUSEHOLDS,
    POSITIONS,
    export_data,
    export_file,
    import_file,
    plain,
    read_xlsx,
    to_xlsx,
    to_yaml,
)
from engine.passwords import Passwords
from engine.replay import replay
from webapp.extensions import db

PASSWORDS = Passwords(cheap=True)
G02_STAFF = (
    "            leader: {username: gl2, name: 郑组长, password: pw}\n"
    "            officers: [{username: off2, name: 冯信息员, password: pw}]\n"
)
OFF1 = "              - {username: off1, name: 周信息员, password: pw}\n"
# The organisation file again, with grid V01-D1-G02's leader and officer gone, and off1 (an
# officer of V01-D1-G01, which keeps off1b) gone too.
EMPTIED = ORG_YAML.replace(G02_STAFF, "").replace(OFF1, "")
assert EMPTIED.count("\n") == ORG_YAML.count("\n") - 3


def log_types(session) -> list[str]:
    return list(session.scalars(select(AdminEvent.type).order_by(AdminEvent.seq)))


def log_entry(session, type_: str) -> dict:
    row = session.scalars(
        select(AdminEvent).where(AdminEvent.type == type_).order_by(AdminEvent.seq.desc())
    ).first()
    assert row is not None, f"no {type_} entry in {log_types(session)}"
    return {"actor": row.actor, **json.loads(row.data)}


def in_feedback(gl, officer: str = "off1", grid: str = "V01-D1-G01", leader: str = "gl1") -> Case:
    """A case `officer` accepted and the grid leader resolved: its feedback waits for the owner."""
    case = gl.accepted(officer, grid)
    case = gl.complete(leader, case, {"outcome": "resolved", "note": "修好了"})
    assert case.status == "feedback" and case.owner == officer
    return case


def reimport(gl, text: str = EMPTIED) -> ImportReport:
    report = import_org(gl.session, text, PASSWORDS, now=gl.clock.now())
    gl.session.commit()
    return report


# ------------------------------------------------------------------ coverage and reassigning


def test_a_grid_emptied_by_reimport_is_a_gap_and_its_open_items_are_flagged(gl):
    handled = gl.accepted("off2", "V01-D1-G02")  # waits for gl2, about to go
    feedback = in_feedback(gl)  # off1's, about to go
    before = coverage.report(gl.session)
    # The test organisation names no liaison leader for V02: that gap is there from the start.
    assert [(g.code, g.missing) for g in before.gaps] == [("V02", "liaison")]
    assert not before.flagged and not before.orphaned

    report = reimport(gl)
    assert report.people_deactivated == 3

    found = coverage.report(gl.session)
    assert [(g.code, g.missing) for g in found.gaps] == [
        ("V01-D1-G02", "grid_leader"),
        ("V01-D1-G02", "info_officer"),
        ("V02", "liaison"),
    ]
    flagged = {f.case_number: f for f in found.flagged}
    assert flagged[handled.number].reason == "nobody"
    assert flagged[handled.number].unit_code == "V01-D1-G02"
    assert flagged[handled.number].task == "handle"
    assert flagged[feedback.number].reason == "owner_deactivated"  # off1b sees it
    assert (found.flagged_total, found.nobody_total) == (2, 1)
    orphaned = {o.number: o for o in found.orphaned}
    assert set(orphaned) == {handled.number, feedback.number}
    assert orphaned[feedback.number].reason == "deactivated"
    assert orphaned[feedback.number].officers == (("off1b", "吴信息员"),)
    assert orphaned[feedback.number].tasks == ("feedback",)
    assert orphaned[handled.number].officers == ()  # nobody left to hand it to


def test_the_deactivated_owners_feedback_is_seen_by_the_grids_other_officers(gl):
    case = in_feedback(gl)
    item = gl.item(case)
    assert item.task == "feedback" and item.assignee == "off1"
    assert item.id not in [i.id for i in gl.inbox("off1b")], "the owner's alone while active"

    reimport(gl)

    assert item.id in [i.id for i in gl.inbox("off1b")]
    assert item.id not in [i.id for i in gl.inbox("off3")], "another grid's officer"
    assert item.id not in [i.id for i in gl.inbox("gl1")], "the grid leader is no officer"


def test_reassigning_the_owner_lets_the_new_owner_do_the_feedback_and_the_case_replays(gl):
    case = in_feedback(gl)
    reimport(gl)
    with pytest.raises(Invalid):  # only an active officer of the grid
        org_admin.reassign_owner(gl.session, gl.clock.now(), "adm", case.number, "off3")
    gl.session.rollback()

    org_admin.reassign_owner(gl.session, gl.clock.now(), "adm", case.number, "off1b")
    gl.session.commit()

    case = gl.reload(case)
    assert case.owner == "off1b"
    changed = gl.last(case, "owner_changed")
    assert changed.actor == "adm" and json.loads(changed.data) == {"from": "off1", "to": "off1b"}
    assert gl.item(case).assignee == "off1b"
    assert case.number not in [o.number for o in coverage.orphaned_cases(gl.session)]
    assert log_entry(gl.session, "owner_changed") == {
        "actor": "adm",
        "case": case.number,
        "from": "off1",
        "to": "off1b",
        "items": 1,
    }
    assert replay(gl.session, case, gl.runtime.registry).ok

    case = gl.complete("off1b", case, {"satisfaction": "satisfied"})
    assert case.status == "reporting"
    assert gl.last(case, "task_completed").actor == "off1b"
    assert replay(gl.session, case, gl.runtime.registry).ok
    with pytest.raises(Conflict):  # the owner serves the grid now: nothing to reassign
        org_admin.reassign_owner(gl.session, gl.clock.now(), "adm", case.number, "off1b")


def test_a_claim_on_the_owners_item_is_released_when_it_is_reassigned(gl):
    case = in_feedback(gl)
    reimport(gl)
    gl.runtime.claim(gl.session, gl.viewer("off1b"), gl.item(case).id)  # §4: the officers may
    import_org(gl.session, ORG_YAML.replace(OFF1, OFF1.replace("off1,", "off1c,")), PASSWORDS)
    gl.session.commit()  # off1c joins the grid
    org_admin.reassign_owner(gl.session, gl.clock.now(), "adm", case.number, "off1c")
    gl.session.commit()
    case = gl.reload(case)
    assert gl.types(case)[-2:] == ["released", "owner_changed"]
    assert gl.item(case).claimed_by is None and gl.item(case).assignee == "off1c"
    assert replay(gl.session, case, gl.runtime.registry).ok


def test_an_owner_moved_to_another_grid_no_longer_lists_the_feedback_the_grid_does(gl):
    """Moved away, the owner could not open the case (it is outside their units): the item leaves
    their inbox and the grid's officers see it, flagged, until an administrator hands it on."""
    case = in_feedback(gl)
    item = gl.item(case)
    assert item.id in [i.id for i in gl.inbox("off1")]
    assert item.id not in [i.id for i in gl.inbox("off1b")]
    org_admin.move_position(
        gl.session, gl.clock.now(), "adm", "off1", "info_officer", "V01-D1-G01", "V01-D1-G02"
    )
    gl.session.commit()
    assert item.id not in [i.id for i in gl.inbox("off1")]
    assert item.id in [i.id for i in gl.inbox("off1b")]
    assert item.id in [f.item_id for f in coverage.flagged_items(gl.session)[0]]
    with pytest.raises(NotFound):
        gl.complete("off1", case, {"satisfaction": "satisfied"})
    case = gl.complete("off1b", case, {"satisfaction": "satisfied"})
    assert case.status == "reporting"


def test_an_owner_moved_to_another_grid_leaves_cases_to_reassign(gl):
    case = in_feedback(gl)
    org_admin.move_position(
        gl.session, gl.clock.now(), "adm", "off1", "info_officer", "V01-D1-G01", "V01-D1-G02"
    )
    gl.session.commit()
    [orphan] = coverage.orphaned_cases(gl.session)
    assert (orphan.number, orphan.reason) == (case.number, "left_grid")
    org_admin.reassign_owner(gl.session, gl.clock.now(), "adm", case.number, "off1b")
    gl.session.commit()
    assert gl.reload(case).owner == "off1b"
    assert replay(gl.session, gl.reload(case), gl.runtime.registry).ok


# ------------------------------------------------------------------ people


def test_deactivating_ends_sign_in_releases_claims_and_is_logged(gl):
    case = gl.open("off1")  # off1 holds the accept item
    result = org_admin.deactivate(gl.session, gl.clock.now(), "adm", "off1")
    gl.session.commit()
    assert result.claims_released == 1
    person = gl.session.scalars(select(Person).where(Person.username == "off1")).one()
    assert not person.active
    assert [p.unit.code for p in person.positions] == ["V01-D1-G01"], "kept for reactivation"
    assert gl.item(case).claimed_by is None
    assert gl.types(gl.reload(case))[-1] == "released"
    assert log_entry(gl.session, "person_deactivated") == {
        "actor": "adm",
        "username": "off1",
        "claims_released": 1,
        "open_cases_owned": 0,
    }
    with pytest.raises(Conflict):
        org_admin.deactivate(gl.session, gl.clock.now(), "adm", "off1")
    with pytest.raises(Conflict):
        org_admin.deactivate(gl.session, gl.clock.now(), "adm", "adm")
    with pytest.raises(NotFound):
        org_admin.deactivate(gl.session, gl.clock.now(), "adm", "nobody")

    org_admin.reactivate(gl.session, gl.clock.now(), "adm", "off1")
    gl.session.commit()
    assert person.active
    assert log_entry(gl.session, "person_reactivated")["username"] == "off1"
    assert check_admin_log(gl.session) is None


def test_moving_a_position_to_a_grid_that_has_one_is_refused(gl):
    with pytest.raises(Invalid) as refused:
        org_admin.move_position(
            gl.session, gl.clock.now(), "adm", "gl1", "grid_leader", "V01-D1-G01", "V01-D1-G02"
        )
    assert "gl2" in refused.value.fields["to"]
    with pytest.raises(Invalid):  # a grid role onto a district
        org_admin.move_position(
            gl.session, gl.clock.now(), "adm", "off1", "info_officer", "V01-D1-G01", "V01-D1"
        )
    with pytest.raises(NotFound):
        org_admin.move_position(
            gl.session, gl.clock.now(), "adm", "off1", "grid_leader", "V01-D1-G01", "V01-D1-G02"
        )
    gl.session.rollback()
    assert "position_moved" not in log_types(gl.session)


def test_a_moved_officer_works_the_new_grid_and_gives_back_claims_in_the_old(gl):
    case = gl.open("off1")
    released = org_admin.move_position(
        gl.session, gl.clock.now(), "adm", "off1", "info_officer", "V01-D1-G01", "V02-D1-G01"
    )
    gl.session.commit()
    assert released == 1
    assert gl.item(case).claimed_by is None
    assert gl.item(case).id in [i.id for i in gl.inbox("off1b")]
    assert gl.item(case).id not in [i.id for i in gl.inbox("off1")]
    other = gl.open("off1", "V02-D1-G01")  # serves the new grid
    assert other.grid.code == "V02-D1-G01"
    assert log_entry(gl.session, "position_moved") == {
        "actor": "adm",
        "username": "off1",
        "role": "info_officer",
        "from": "V01-D1-G01",
        "to": "V02-D1-G01",
        "claims_released": 1,
    }


# ------------------------------------------------------------------ export and import


def test_yaml_export_reimports_without_a_change_and_exports_the_same(gl):
    first = export_file(gl.session, "yaml")
    assert b"password:" not in first
    report = import_org(gl.session, first.decode(), PASSWORDS, now=gl.clock.now())
    assert report == ImportReport()
    gl.session.commit()
    assert export_file(gl.session, "yaml") == first


def with_households_and_webhooks(gl) -> None:
    """Named households in one grid and a webhook on a village and a grid, so that both the
    households sheet and the webhooks sheet have rows to carry."""
    text = ORG_YAML.replace(
        "            households: 4\n",
        "            households:\n"
        "              - {number: 1, head: 王大}\n"
        "              - {number: 2}\n"
        "              - {number: 7, head: '=1+1'}\n",
    ).replace(
        "    name: 二村\n",
        "    name: 二村\n    notify: [{url: 'https://hooks.example.org/v02', format: wecom}]\n",
    )
    import_org(gl.session, text, PASSWORDS)
    gl.session.commit()


def test_xlsx_export_reimported_changes_nothing_and_exports_the_same(gl):
    with_households_and_webhooks(gl)
    data = export_data(gl.session)
    content = export_file(gl.session, "xlsx")

    assert plain(read_xlsx(content)) == data
    imported = import_file(gl.session, content, "xlsx", PASSWORDS, actor="adm", now=gl.clock.now())
    assert imported.report == ImportReport() and not imported.changed
    gl.session.commit()
    assert export_data(gl.session) == data
    again = load_workbook(io.BytesIO(export_file(gl.session, "xlsx")))
    first = load_workbook(io.BytesIO(content))
    assert [[list(r) for r in s.iter_rows(values_only=True)] for s in again.worksheets] == [
        [list(r) for r in s.iter_rows(values_only=True)] for s in first.worksheets
    ]
    entry = log_entry(gl.session, "org_imported")
    assert entry["format"] == "xlsx" and entry["changes"] == {} and entry["actor"] == "adm"


def test_the_xlsx_has_one_row_per_position_and_households_on_the_second_sheet(gl):
    with_households_and_webhooks(gl)
    book = load_workbook(io.BytesIO(export_file(gl.session, "xlsx")))
    assert book.sheetnames[:2] == [POSITIONS, HOUSEHOLDS]
    rows = [r for r in book[POSITIONS].iter_rows(min_row=3, values_only=True)]
    g01 = [(r[5], r[6]) for r in rows if r[1] == "V01-D1-G01"]
    assert g01 == [("grid_leader", "gl1"), ("info_officer", "off1"), ("info_officer", "off1b")]
    tl1 = next(r for r in rows if r[6] == "tl1")
    assert (tl1[0], tl1[5], tl1[9]) == ("town", "town_leadership", "V01")
    households = list(book[HOUSEHOLDS].iter_rows(min_row=3, values_only=True))
    assert households == [("V01-D1-G01", 1, "王大"), ("V01-D1-G01", 2, None),
                          ("V01-D1-G01", 7, "=1+1")]  # fmt: skip
    cell = book[HOUSEHOLDS]["C5"]
    assert cell.data_type == "s", "text that looks like a formula stays text"


def roster(rows: list[list], households: list[list] | None = None) -> bytes:
    """A workbook as someone would type it: Chinese headers only, Chinese level and role words."""
    book = Workbook()
    sheet = book.active
    sheet.append(["层级", "单位代码", "单位名称", "上级代码", "户数", "岗位", "用户名", "姓名",
                  "初始密码", "联系村"])  # fmt: skip
    for row in rows:
        sheet.append(row)
    second = book.create_sheet("住户")
    second.append(["网格代码", "户号", "户主"])
    for row in households or []:
        second.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


TOWN_ROWS = [
    ["镇", "XDK", "小渡口镇", None, None, "镇联点班子", "tl1", "张伟", None, "V01"],
    ["镇", "XDK", "小渡口镇", None, None, "管理员", "adm", "朱管理", None, None],
]


def test_an_xlsx_roster_with_problems_names_sheet_row_and_column_and_changes_nothing(gl):
    content = roster(
        TOWN_ROWS
        + [
            ["村", "V01", "一村", "XDK", None, "村党组织书记", "vs1", "赵书记", None, None],
            ["片", "V01-D1", "一片", "V01", None, "片长", "dl1", "钱片长", None, None],
            ["网格", "V01-D1-G01", "一组", "V01-D1", 4, "网格长", "gl1", "孙组长", None, None],
            ["网格", "V01-D1-G01", "一组", "V01-D1", 4, "信息员", "new.one", "新人", None, None],
            ["网格", "V01-D1-G01", "一组", "V01-D1", 4, "信息员", "bad name", "某人", "pw", None],
        ],
        households=[["V01-D1-G01", "x", "王大"]],
    )
    before = export_data(gl.session)
    with pytest.raises(OrgFileError) as refused:
        import_file(gl.session, content, "xlsx", PASSWORDS, actor="adm", now=gl.clock.now())
    gl.session.rollback()
    problems = [f"{path}: {message}" for _line, path, message in refused.value.errors]
    assert any(p.startswith(f"{POSITIONS} row 7, password: required") for p in problems), problems
    assert any(p.startswith(f"{POSITIONS} row 8, username:") for p in problems), problems
    assert any(p.startswith(f"{HOUSEHOLDS} row 2, number:") for p in problems), problems
    assert f"{POSITIONS} row 6, households: 4 here, but the households sheet lists 1" in " ".join(
        problems
    ), problems
    assert export_data(gl.session) == before
    assert "org_imported" not in log_types(gl.session)


def test_an_xlsx_roster_imports_like_the_yaml_it_stands_for(gl):
    """A roster typed by hand: Chinese words, a count of households, the people already there."""
    rows = [
        ["镇", "XDK", "小渡口镇", None, None, "镇联点班子", "tl1", "张伟", None, "V01"],
        ["镇", "XDK", "小渡口镇", None, None, "镇联点班子", "tl2", "李强", None, None],
        ["站办所", "PS", "派出所", "XDK", None, "站办所人员", "ps1", "王警官", None, None],
    ]
    data = export_data(gl.session)
    for village in data["villages"]:
        rows.append(["村", village["code"], village["name"], "XDK", None, "村党组织书记",
                     village["secretary"]["username"], village["secretary"]["name"], None, None])  # fmt: skip
        for district in village["districts"]:
            leader = district["leader"]
            rows.append(["片", district["code"], district["name"], village["code"], None, "片长",
                         leader["username"], leader["name"], None, None])  # fmt: skip
            for grid in district["grids"]:
                people = [("网格长", grid["leader"])] + [("信息员", p) for p in grid["officers"]]
                for role, p in people:
                    rows.append(["网格", grid["code"], grid["name"], district["code"],
                                 grid["households"], role, p["username"], p["name"], None, None])  # fmt: skip
    rows += [
        ["镇", "XDK", "小渡口镇", None, None, "审计员", "aud", "杨审计", None, None],
        ["镇", "XDK", "小渡口镇", None, None, "管理员", "adm", "朱管理", None, None],
    ]
    imported = import_file(
        gl.session, roster(rows), "xlsx", PASSWORDS, actor="adm", now=gl.clock.now()
    )
    assert imported.report == ImportReport()


def test_not_a_workbook_is_a_problem_not_a_crash(gl):
    with pytest.raises(OrgFileError) as refused:
        import_file(
            gl.session, b"PK\x03\x04 nope", "xlsx", PASSWORDS, actor="adm", now=gl.clock.now()
        )
    assert "xlsx" in str(refused.value)


def test_households_and_count_export_as_the_file_had_them(gl):
    data = export_data(gl.session)
    grids = {g["code"]: g for v in data["villages"] for d in v["districts"] for g in d["grids"]}
    assert grids["V01-D1-G01"]["households"] == 4
    assert "liaises" not in next(p for p in data["leaders"] if p["username"] == "tl2")
    text = to_yaml(data)
    assert "- {username: off1, name: 周信息员}" in text
    assert to_xlsx(data)[:2] == b"PK"
    count = gl.session.scalar(select(Unit.households).where(Unit.code == "V01-D1-G01"))
    assert (
        count
        == 4
        == len(
            gl.session.scalars(
                select(Household)
                .join(Unit, Unit.id == Household.grid_id)
                .where(Unit.code == "V01-D1-G01")
            ).all()
        )
    )


# ------------------------------------------------------------------ the pages

PAGES = (
    "/admin/org",
    "/admin/org/coverage",
    "/admin/org/owners",
    "/admin/org/people",
    "/admin/org/people/off1",
    "/admin/org/grids/V01-D1-G01",
    "/admin/org/import",
)


@pytest.fixture
def app(make_app):
    return make_app()


def open_feedback_via_api(app, officer: str = "off1") -> str:
    """A case in V01-D1-G01 waiting for its owner's feedback, driven through the engine."""
    from engine.access import viewer_of
    from webapp import services

    with app.app_context():
        runtime = services(app).runtime
        session = db.session

        def who(name):
            return viewer_of(
                session, session.scalars(select(Person).where(Person.username == name)).one()
            )

        case = runtime.open_case(session, who(officer), grid="V01-D1-G01", title="路灯坏了")
        item = session.scalars(select(WorkItem).where(WorkItem.case_id == case.id)).one()
        case = runtime.complete(session, who(officer), item.id, ACCEPT_NORMAL)
        item = session.scalars(
            select(WorkItem).where(WorkItem.case_id == case.id, WorkItem.completed_at.is_(None))
        ).one()
        case = runtime.complete(session, who("gl1"), item.id, {"outcome": "resolved"})
        number = case.number
        db.session.remove()
    return number


@pytest.mark.parametrize("lang", ["zh_CN", "en"])
def test_every_page_renders_for_an_administrator_in_both_languages(app, lang):
    client = web_client(app, "adm", lang)
    words = {"zh_CN": ("组织架构", "定格定人定责"), "en": ("Organisation", "Coverage")}[lang]
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        page = response.get_data(as_text=True)
        assert words[0] in page and words[1] in page, path
    menu = client.get("/admin/org").get_data(as_text=True)
    assert 'data-testid="menu-org.index"' in menu
    tree = client.get("/admin/org").get_data(as_text=True)
    assert "孙组长" in tree and "V01-D1-G01" in tree  # who holds the grid's positions
    assert ("4 户" if lang == "zh_CN" else "4 households") in tree


@pytest.mark.parametrize("who", ["off1", "aud", "tl1"])
def test_the_pages_are_for_administrators_only(app, who):
    client = web_client(app, who)
    for path in PAGES + ("/admin/org/export.yaml", "/admin/org/export.xlsx"):
        assert client.get(path).status_code == 403, path
    for path in ("/admin/org/people/off2/deactivate", "/admin/org/people/off2/password",
                 "/admin/org/owners/XDK-2026-000001", "/admin/org/import"):  # fmt: skip
        assert client.post(path, data={"to": "off1"}).status_code == 403, path
    assert "menu-org.index" not in client.get("/").get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(Person.active).where(Person.username == "off2"))
        assert not db.session.scalars(select(AdminEvent)).all()


def test_signed_out_visitors_are_sent_to_sign_in(app):
    response = app.test_client().get("/admin/org/coverage")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_person_deactivated_cannot_sign_in_and_reactivated_can(app):
    admin = web_client(app, "adm")
    officer = web_client(app, "off2")
    response = admin.post("/admin/org/people/off2/deactivate")
    assert response.status_code == 302
    assert officer.get("/").status_code == 302, "the open session ended"
    login = app.test_client().post("/login", data={"username": "off2", "password": "pw"})
    assert login.status_code == 401
    page = admin.get("/admin/org/people/off2").get_data(as_text=True)
    assert 'data-testid="state">已停用' in page
    assert admin.post("/admin/org/people/off2/deactivate").status_code == 409  # already

    assert admin.post("/admin/org/people/off2/reactivate").status_code == 302
    web_client(app, "off2")  # signs in (302) again
    with app.app_context():
        assert log_types(db.session)[-2:] == ["person_deactivated", "person_reactivated"]


def test_a_reset_password_is_shown_once_and_must_be_changed_at_the_next_sign_in(app):
    admin = web_client(app, "adm")
    officer = web_client(app, "off2")
    page = admin.post("/admin/org/people/off2/password").get_data(as_text=True)
    temporary = re.search(r'data-testid="password">([^<]+)<', page).group(1)
    assert len(temporary) == 12
    assert officer.get("/").status_code == 302, "the old session ended"
    client = app.test_client()
    assert client.post("/login", data={"username": "off2", "password": "pw"}).status_code == 401
    login = client.post("/login", data={"username": "off2", "password": temporary})
    assert login.status_code == 302 and login.headers["Location"].endswith("/account/password")
    assert client.get("/").headers["Location"].endswith("/account/password"), "every page asks"
    changed = client.post(
        "/account/password",
        data={"current": temporary, "new": "a-new-one-of-mine", "confirm": "a-new-one-of-mine"},
    )
    assert changed.status_code == 302
    assert client.get("/").status_code == 200, "no longer sent to change it"
    with app.app_context():
        entry = log_entry(db.session, "password_reset")
        assert entry == {"actor": "adm", "username": "off2"}, "no password in the log"
        assert temporary not in json.dumps(entry)


def test_moving_a_position_from_the_person_page(app):
    admin = web_client(app, "adm")
    refused = admin.post(
        "/admin/org/people/gl1/move",
        data={"role": "grid_leader", "from": "V01-D1-G01", "to": "V01-D1-G02"},
    )
    assert refused.status_code == 400
    assert "该单位已有此岗位人员" in refused.get_data(as_text=True)
    moved = admin.post(
        "/admin/org/people/off1/move",
        data={"role": "info_officer", "from": "V01-D1-G01", "to": "V01-D1-G02"},
    )
    assert moved.status_code == 302
    page = admin.get("/admin/org/people/off1").get_data(as_text=True)
    assert 'data-unit="V01-D1-G02"' in page and 'data-unit="V01-D1-G01"' not in page


def test_the_owners_page_hands_a_deactivated_owners_case_to_another_officer(app):
    number = open_feedback_via_api(app)
    admin = web_client(app, "adm")
    admin.post("/admin/org/people/off1/deactivate")
    coverage_page = admin.get("/admin/org/coverage").get_data(as_text=True)
    assert f'data-case="{number}" data-reason="owner_deactivated"' in coverage_page
    owners = admin.get("/admin/org/owners").get_data(as_text=True)
    assert f'data-case="{number}"' in owners and '<option value="off1b">' in owners

    assert admin.post(f"/admin/org/owners/{number}", data={"to": "off3"}).status_code == 400
    assert admin.post(f"/admin/org/owners/{number}", data={"to": "off1b"}).status_code == 302
    assert f'data-case="{number}"' not in admin.get("/admin/org/owners").get_data(as_text=True)

    officer = web_client(app, "off1b")
    inbox = officer.get("/").get_data(as_text=True)
    assert number in inbox
    assert officer.get(f"/cases/{number}").status_code == 200  # its history shows the change
    assert web_client(app, "aud").get(f"/cases/{number}/steps").status_code == 200
    with app.app_context():
        case = db.session.scalars(select(Case).where(Case.number == number)).one()
        assert case.owner == "off1b"
        assert replay(db.session, case, services_registry(app)).ok


def services_registry(app):
    from webapp import services

    return services(app).runtime.registry


def test_upload_and_download_round_trip_and_a_bad_file_changes_nothing(app):
    admin = web_client(app, "adm")
    for fmt in ("yaml", "xlsx"):
        download = admin.get(f"/admin/org/export.{fmt}")
        assert download.status_code == 200
        assert "attachment" in download.headers["Content-Disposition"]
        response = admin.post(
            "/admin/org/import",
            data={"file": (io.BytesIO(download.data), f"org.{fmt}")},
            content_type="multipart/form-data",
        )
        assert response.status_code == 200
        assert 'data-testid="unchanged"' in response.get_data(as_text=True), fmt

    broken = ORG_YAML.replace("name: 一组\n", "name: 一组\n            colour: red\n", 1)
    broken = broken.replace("username: gl2", "username: 'gl 2'")
    response = admin.post(
        "/admin/org/import",
        data={"file": (io.BytesIO(broken.encode()), "org.yaml")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    problems = [html.unescape(p) for p in re.findall(r'data-testid="problem">([^<]+)<', page)]
    assert len(problems) == 2, problems
    assert problems[0].startswith("第 ") and "colour" in problems[0], problems
    assert "username: 'gl 2' may hold only" in problems[1], problems
    with app.app_context():
        assert log_types(db.session) == [
            "org_exported", "org_imported", "org_exported", "org_imported"
        ]  # fmt: skip
        assert db.session.scalar(select(Person.active).where(Person.username == "gl2"))

    wrong = admin.post(
        "/admin/org/import",
        data={"file": (io.BytesIO(b"x"), "org.txt")},
        content_type="multipart/form-data",
    )
    assert wrong.status_code == 400


def test_the_upload_checks_its_csrf_token(make_app):
    app = make_app(csrf=True)
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    client.post("/login", data={"username": "adm", "password": "pw", "csrf_token": token})
    response = client.post(
        "/admin/org/import",
        data={"file": (io.BytesIO(ORG_YAML.encode()), "org.yaml")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    with app.app_context():
        assert "org_imported" not in log_types(db.session)


def test_the_cli_exports_and_imports_xlsx(cli_env, tmp_path, db_url):
    from webapp.cli import main

    out = tmp_path / "org.xlsx"
    result = cli_env.invoke(main, ["org", "export", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert load_workbook(out).sheetnames[0] == POSITIONS
    result = cli_env.invoke(main, ["org", "import", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == ImportReport().summary()
    bad = tmp_path / "bad.xlsx"
    book = load_workbook(out)
    book[POSITIONS]["A3"] = "planet"
    book.save(bad)
    result = cli_env.invoke(main, ["org", "import", str(bad)])
    assert result.exit_code == 1
    assert f"{POSITIONS} row 3, level: must be one of" in result.output
    assert cli_env.invoke(main, ["org", "export", str(tmp_path / "org.txt")]).exit_code == 1


def test_the_demo_townships_xlsx_reimports_without_a_change(session):
    """A township's size: 12 villages, 320 grids, every household with its head."""
    from engine.demo_org import demo_org
    from engine.org import import_org_data

    import_org_data(session, demo_org(), PASSWORDS)
    session.commit()
    data = export_data(session)
    assert sum(len(d["grids"]) for v in data["villages"] for d in v["districts"]) >= 320
    content = to_xlsx(data)
    assert plain(read_xlsx(content)) == data
    imported = import_file(session, content, "xlsx", PASSWORDS, actor="adm", now=START_AT)
    assert not imported.changed, imported.report


def test_a_download_of_the_organisation_is_on_the_record(app):
    """The file holds residents' phones: who took a copy, and in which format, is logged."""
    client = web_client(app, "adm")
    for fmt in ("yaml", "xlsx"):
        assert client.get(f"/admin/org/export.{fmt}").status_code == 200
    with app.app_context():
        entries = db.session.scalars(
            select(AdminEvent).where(AdminEvent.type == "org_exported").order_by(AdminEvent.seq)
        ).all()
        assert [(e.actor, json.loads(e.data)) for e in entries] == [
            ("adm", {"format": "yaml"}),
            ("adm", {"format": "xlsx"}),
        ]
        assert check_admin_log(db.session) is None
        db.session.remove()
