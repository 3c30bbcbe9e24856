"""住户名册 (issue 13 item 2; DESIGN §9, §12): each grid's register of households (number, head,
phone shown masked, in the group chat or not), laid down by the organisation file or spreadsheet
and kept up by the grid's officers.

The file: households as a list with phone and in_group import; a re-import keeps the households
officers added and applies the file's changes to the households it lists; bad phones and in_group
values are problems with their lines, and nothing is imported; YAML and xlsx exports carry phones
and group marks and read back without a change. The API (GET /api/v1/grids/{code}/households)
and the page (/grids/{code}/households): who sees (the grid's people and those above it, auditors),
who edits (the grid's officers and leader), 404 outside one's units, 403 for those who read but do
not keep the register, 400 with one message per field, and the "入群 N/M" progress moving as
officers add households and mark them.

The organisation is conftest's, with grid V01-D1-G01's four households listed (REGISTER_ORG).
"""

from __future__ import annotations

import html
import io
import re

import pytest
from apps import bearer, web_client
from conftest import ORG_YAML
from openpyxl import load_workbook
from sqlalchemy import func, select

from engine import households
from engine.errors import Forbidden, Invalid, NotFound
from engine.models import Household, Unit
from engine.org import ImportReport, OrgFileError, import_org
from engine.org_xlsx import (
    HOUSEHOLDS,
    export_data,
    export_file,
    import_file,
    plain,
    read_xlsx,
)
from engine.passwords import Passwords
from engine.privacy import mask_phone
from webapp.extensions import db

API = "/api/v1"
G01, G02 = "V01-D1-G01", "V01-D1-G02"  # off1, off1b and gl1's grid; off2 and gl2's, same district
PASSWORDS = Passwords(cheap=True)
COUNT = "            households: 4\n"
LISTED = (
    "            households:\n"
    "              - {number: 1, head: 王大, phone: '138 1234-5678', in_group: true}\n"
    "              - {number: 2, head: 李二, phone: 13900001111}\n"
    "              - {number: 3, head: 张三, phone: 07318888888, in_group: false}\n"
    "              - {number: 4}\n"
)
REGISTER_ORG = ORG_YAML.replace(COUNT, LISTED)
assert REGISTER_ORG != ORG_YAML


def grid_rows(session, code: str = G01) -> dict[int, tuple]:
    """number -> (head, phone, in_group, added_by) of a grid's household rows."""
    session.expire_all()
    rows = session.execute(
        select(
            Household.number,
            Household.head,
            Household.phone,
            Household.in_group,
            Household.added_by,
        )  # fmt: skip
        .join(Unit, Unit.id == Household.grid_id)
        .where(Unit.code == code)
        .order_by(Household.number)
    )
    return {number: (head, phone, bool(joined), by) for number, head, phone, joined, by in rows}


def unit_count(session, code: str = G01) -> int:
    return session.scalar(select(Unit.households).where(Unit.code == code))


def reimport(gl, text: str) -> ImportReport:
    report = import_org(gl.session, text, PASSWORDS, now=gl.clock.now())
    gl.session.commit()
    return report


@pytest.fixture
def listed(gl):
    """conftest's organisation, imported again with G01's households listed."""
    reimport(gl, REGISTER_ORG)
    return gl


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the file that holds `needle` (once)."""
    found = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(found) == 1, (needle, found)
    return found[0]


# ------------------------------------------------------------------ the organisation file


def test_households_listed_with_phone_and_in_group_import(listed):
    assert grid_rows(listed.session) == {
        1: ("王大", "13812345678", True, None),  # spaces and hyphens dropped
        2: ("李二", "13900001111", False, None),  # unquoted digits
        3: ("张三", "07318888888", False, None),  # the landline keeps its leading zero
        4: (None, None, False, None),
    }
    assert unit_count(listed.session) == 4


def test_a_reimport_keeps_officer_added_households_and_applies_the_files_changes(listed):
    gl = listed
    off1 = gl.viewer("off1")
    households.add_household(
        gl.session, off1, G01, number="9", head="新户", phone="13700009999", in_group=True
    )
    # The officer marks household 2 as in the group: the file does not say whether it is.
    households.set_in_group(gl.session, off1, G01, 2, True)
    gl.session.commit()
    assert unit_count(gl.session) == 5

    changed = (
        REGISTER_ORG.replace(
            "head: 王大, phone: '138 1234-5678'", "head: 王大伟, phone: '15000001111'"
        )
        .replace(
            "{number: 3, head: 张三, phone: 07318888888, in_group: false}",
            "{number: 3, head: 张三, phone: null, in_group: true}",
        )  # fmt: skip
        .replace("              - {number: 4}\n", "              - {number: 5, head: 赵五}\n")
    )
    report = reimport(gl, changed)

    assert grid_rows(gl.session) == {
        1: ("王大伟", "15000001111", True, None),  # the file's new head and phone
        2: ("李二", "13900001111", True, None),  # the officer's mark: the file states none
        3: ("张三", None, True, None),  # phone removed, in the group: as the file says
        5: ("赵五", None, False, None),  # new in the file; 4 left it and is gone
        9: ("新户", "13700009999", True, "off1"),  # added in Gridloop: stays
    }
    assert (report.households_added, report.households_updated, report.households_removed) == (
        1,
        2,
        1,
    )
    assert unit_count(gl.session) == 5
    assert reimport(gl, changed) == ImportReport(), "the same file again changes nothing"


def test_a_file_listing_an_officers_household_wins_for_it_and_it_stays_when_dropped(listed):
    gl = listed
    households.add_household(gl.session, gl.viewer("off1"), G01, number=9, head="新户")
    gl.session.commit()
    with_nine = REGISTER_ORG.replace(
        "              - {number: 4}\n",
        "              - {number: 4}\n              - {number: 9, head: 新户主, in_group: true}\n",
    )
    reimport(gl, with_nine)
    assert grid_rows(gl.session)[9] == ("新户主", None, True, "off1")
    reimport(gl, REGISTER_ORG)  # no longer listed: it was added in Gridloop, so it stays
    assert grid_rows(gl.session)[9] == ("新户主", None, True, "off1")


def test_a_count_keeps_what_officers_entered_for_its_households(gl):
    """conftest's file says `households: 4`: importing it again keeps the heads, phones and group
    marks officers entered, and the households they added."""
    off1 = gl.viewer("off1")
    households.edit_household(
        gl.session, off1, G01, 2, head="钱二", phone="13812345678", in_group=True
    )
    households.add_household(gl.session, off1, G01, number=5, head="孙五")
    gl.session.commit()
    assert reimport(gl, ORG_YAML) == ImportReport()
    rows = grid_rows(gl.session)
    assert rows[2] == ("钱二", "13812345678", True, None) and rows[5][3] == "off1"
    assert sorted(rows) == [1, 2, 3, 4, 5] and unit_count(gl.session) == 5


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        ("phone: 'call me'", "phone", "'call me' is not a phone number: 7 to 15 digits"),
        ("phone: '12345'", "phone", "'12345' is not a phone number"),
        ("phone: 0x1F", "phone", "a number is not a phone number"),
        ("phone: true", "phone", "true/false is not a phone number"),
        ("phone: [138]", "phone", "a list is not a phone number"),
        ("in_group: yes", "in_group", "must be true or false, not 'yes'"),
        ("in_group: 1", "in_group", "must be true or false, not a number"),
        ("in_group: ", "in_group", "must be true or false, not empty"),
    ],
)
def test_a_bad_phone_or_in_group_is_a_problem_with_its_line_and_nothing_is_imported(
    listed, entry, field, message
):
    gl = listed
    text = REGISTER_ORG.replace("{number: 4}", "{number: 4, " + entry + "}").replace(
        "name: 二组", "name: 二组(改)"
    )
    before = grid_rows(gl.session)
    with pytest.raises(OrgFileError) as refused:
        import_org(gl.session, text, PASSWORDS, now=gl.clock.now())
    gl.session.rollback()
    [(line, path, said)] = refused.value.errors
    assert line == line_of(text, "{number: 4, ")
    assert path == f"villages[0].districts[0].grids[0].households[3].{field}"
    assert said.startswith(message), said
    assert f"line {line}: " in str(refused.value)
    assert grid_rows(gl.session) == before
    assert gl.session.scalar(select(Unit.name).where(Unit.code == G02)) == "二组", "no change"


def test_the_phone_masking_rule():
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("07318888888") == "073****8888"
    assert mask_phone("02188889999") == "021****9999"
    assert mask_phone("86138123456789") == "861*******6789"
    assert mask_phone("5551234") == "*****34", "a short number never shows whole"
    # Digits are what count: spaces, dashes and a mobile's country code are left out.
    assert mask_phone("+86 138 1234 5678") == "138****5678"
    assert mask_phone("0086-138-1234-5678") == "138****5678"
    assert mask_phone("0731-8888 8888") == "073*****8888"
    assert mask_phone("") == "" and mask_phone(None) == ""


# ------------------------------------------------------------------ YAML and xlsx


def test_yaml_export_carries_phones_and_marks_and_reads_back_without_a_change(listed):
    gl = listed
    households.add_household(gl.session, gl.viewer("gl1"), G01, number=7, head="周七")
    gl.session.commit()
    first = export_file(gl.session, "yaml").decode()
    assert "- {number: 1, head: 王大, phone: '13812345678', in_group: true}" in first
    assert "- {number: 7, head: 周七}" in first
    assert reimport(gl, first) == ImportReport()
    assert export_file(gl.session, "yaml").decode() == first


def test_xlsx_with_phones_and_marks_round_trips_without_a_change(listed):
    """tests/test_org_admin.py's round trip, with phones, group marks and an officer's household."""
    gl = listed
    households.add_household(
        gl.session, gl.viewer("off1b"), G01, number=8, head="吴八", phone="13611112222"
    )
    gl.session.commit()
    data = export_data(gl.session)
    content = export_file(gl.session, "xlsx")
    book = load_workbook(io.BytesIO(content))
    sheet = list(book[HOUSEHOLDS].iter_rows(values_only=True))
    assert sheet[:2] == [
        ("网格代码", "户号", "户主", "电话", "已入群"),
        ("grid_code", "number", "head", "phone", "in_group"),
    ]
    assert sheet[2:] == [
        (G01, 1, "王大", "13812345678", "是"),
        (G01, 2, "李二", "13900001111", None),
        (G01, 3, "张三", "07318888888", None),
        (G01, 4, None, None, None),
        (G01, 8, "吴八", "13611112222", None),
    ]
    assert book[HOUSEHOLDS]["D4"].data_type == "s", "a phone is text: its leading zero stays"

    assert plain(read_xlsx(content)) == data
    imported = import_file(gl.session, content, "xlsx", PASSWORDS, actor="adm", now=gl.clock.now())
    assert imported.report == ImportReport() and not imported.changed
    gl.session.commit()
    assert export_data(gl.session) == data
    again = load_workbook(io.BytesIO(export_file(gl.session, "xlsx")))
    assert [list(r) for r in again[HOUSEHOLDS].iter_rows(values_only=True)] == [
        list(r) for r in sheet
    ]


@pytest.fixture
def typed_sheet(gl):
    """typed_sheet(rows) -> conftest's organisation as exported, with a households sheet typed
    by hand (Chinese headers only)."""
    exported = export_file(gl.session, "xlsx")

    def make(rows: list[list]) -> bytes:
        book = load_workbook(io.BytesIO(exported))
        del book[HOUSEHOLDS]
        sheet = book.create_sheet(HOUSEHOLDS, 1)
        sheet.append(["网格代码", "户号", "户主", "电话", "已入群"])
        for row in rows:
            sheet.append(row)
        out = io.BytesIO()
        book.save(out)
        return out.getvalue()

    return make


def test_an_xlsx_households_sheet_typed_by_hand_imports_phones_and_marks(gl, typed_sheet):
    content = typed_sheet(
        [
            [G01, 1, "王大", 13812345678, "是"],  # a phone typed as a number
            [G01, 2, "李二", "139-0000-1111", "否"],
            [G01, 3, "张三", None, True],
            [G01, 4, "赵四", None, None],
        ]
    )
    import_file(gl.session, content, "xlsx", PASSWORDS, actor="adm", now=gl.clock.now())
    gl.session.commit()
    assert grid_rows(gl.session) == {
        1: ("王大", "13812345678", True, None),
        2: ("李二", "13900001111", False, None),
        3: ("张三", None, True, None),
        4: ("赵四", None, False, None),
    }


def test_a_bad_phone_or_mark_in_the_sheet_names_its_row_and_column(gl, typed_sheet):
    content = typed_sheet(
        [
            [G01, 1, "王大", "138abc", None],
            [G01, 2, "李二", None, "也许"],
            [G01, 3, None, None, None],
            [G01, 4, None, None, None],
        ]
    )
    before = grid_rows(gl.session)
    with pytest.raises(OrgFileError) as refused:
        import_file(gl.session, content, "xlsx", PASSWORDS, actor="adm", now=gl.clock.now())
    gl.session.rollback()
    problems = [f"{path}: {message}" for _line, path, message in refused.value.errors]
    assert problems == [
        f"{HOUSEHOLDS} row 2, phone: '138abc' is not a phone number: 7 to 15 digits (spaces "
        "and hyphens between them are allowed)",
        f"{HOUSEHOLDS} row 3, in_group: must be true or false, not '也许'",
    ]
    assert grid_rows(gl.session) == before


# ------------------------------------------------------------------ the engine's rules


def test_who_sees_and_who_keeps_a_grids_register(listed):
    gl = listed
    for username in ("off1", "off1b", "gl1", "dl1", "vs1", "tl1", "tl2", "aud"):
        register = households.read_register(gl.session, gl.viewer(username), G01)
        assert register.total == 4 and register.in_group == 1, username
        assert register.may_edit is (username in ("off1", "off1b", "gl1")), username
    for username in ("off2", "gl2", "gl3", "dl2", "vs2", "ps1", "adm"):
        with pytest.raises(NotFound):
            households.read_register(gl.session, gl.viewer(username), G01)
    for code in ("V01-D1", "V01", "XDK", "PS", "NOPE"):  # only grids have registers
        with pytest.raises(NotFound):
            households.read_register(gl.session, gl.viewer("tl1"), code)
    with pytest.raises(Forbidden):
        households.set_in_group(gl.session, gl.viewer("dl1"), G01, 4, True)
    with pytest.raises(NotFound):
        households.set_in_group(gl.session, gl.viewer("off2"), G01, 4, True)


def test_a_household_number_is_unique_in_its_grid_and_checks_come_one_per_field(listed):
    gl = listed
    off1 = gl.viewer("off1")
    with pytest.raises(Invalid) as refused:
        households.add_household(gl.session, off1, G01, number="2", head=" ", phone="12")
    assert refused.value.fields == {
        "number": households.TAKEN,
        "head": households.REQUIRED,
        "phone": households.NOT_A_PHONE,
    }
    for number in ("0", "-3", "x", "2147483648", "9" * 5000, "²", None):
        with pytest.raises(Invalid) as refused:
            households.add_household(gl.session, off1, G01, number=number, head="某")
        assert set(refused.value.fields) == {"number"}, number
    # Number 4, taken in G01, is another household in G02 (which has 1 to 3).
    households.add_household(gl.session, gl.viewer("off2"), G02, number=4, head="某")
    gl.session.commit()
    assert grid_rows(gl.session, G02)[4] == ("某", None, False, "off2")


# ------------------------------------------------------------------ the API


@pytest.fixture
def app(make_app):
    return make_app(REGISTER_ORG)


@pytest.fixture
def client(app):
    return app.test_client()


def test_the_api_lists_a_grids_households_with_masked_phones(client):
    for username in ("off1", "dl1", "aud"):
        response = client.get(f"{API}/grids/{G01}/households", headers=bearer(client, username))
        assert response.status_code == 200, username
        body = response.get_json()
        assert body["grid"] == {"code": G01, "name": "一组"}
        assert body["items"] == [
            {"number": 1, "head": "王大", "phone": "138****5678", "in_group": True},
            {"number": 2, "head": "李二", "phone": "139****1111", "in_group": False},
            {"number": 3, "head": "张三", "phone": "073****8888", "in_group": False},
            {"number": 4, "head": None, "phone": None, "in_group": False},
        ]
        assert "13812345678" not in response.get_data(as_text=True)


def test_the_api_answers_404_outside_ones_units_and_401_without_a_token(client):
    for username in ("off2", "gl3", "ps1", "adm"):
        response = client.get(f"{API}/grids/{G01}/households", headers=bearer(client, username))
        assert response.status_code == 404, username
        assert response.get_json()["error"]["code"] == "not_found"
    off1 = bearer(client, "off1")
    for code in ("V01-D1", "NOPE", "v01-d1-g01"):
        assert client.get(f"{API}/grids/{code}/households", headers=off1).status_code == 404
    response = client.get(f"{API}/grids/{G01}/households")
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"
    bad = {"Authorization": "Bearer nope"}
    assert client.get(f"{API}/grids/{G01}/households", headers=bad).status_code == 401


def test_the_openapi_document_lists_the_households_call(client):
    paths = client.get(f"{API}/openapi.json").get_json()["paths"]
    operation = paths["/grids/{code}/households"]["get"]
    assert set(operation["responses"]) == {"200", "401", "404"}


# ------------------------------------------------------------------ the page


def text_of(response) -> str:
    """The page's visible text, tags dropped and whitespace squeezed."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", response.get_data(as_text=True), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def progress(client, code: str = G01) -> str:
    page = client.get(f"/grids/{code}/households")
    assert page.status_code == 200
    found = re.search(r"入群 (\d+/\d+)", text_of(page))
    assert found, text_of(page)
    return found.group(1)


def test_an_officer_adds_a_household_and_marks_it_and_the_progress_moves(app):
    off1 = web_client(app, "off1")
    home = off1.get("/").get_data(as_text=True)
    assert 'data-testid="menu-households.index"' in home
    landing = off1.get("/households")
    assert landing.status_code == 302 and landing.headers["Location"] == f"/grids/{G01}/households"
    assert progress(off1) == "1/4"
    page = text_of(off1.get(f"/grids/{G01}/households"))
    assert "138****5678" in page and "13812345678" not in page and "住户名册" in page

    added = off1.post(
        f"/grids/{G01}/households",
        data={"number": "5", "head": "钱五", "phone": "150 0000 1234"},
    )
    assert added.status_code == 302 and added.headers["Location"].endswith("#h-5")
    after = off1.get(f"/grids/{G01}/households")
    assert "已添加 5 号住户（钱五）" in text_of(after)
    assert progress(off1) == "1/5"
    marked = off1.post(f"/grids/{G01}/households/5/in-group", data={"in_group": "1"})
    assert marked.status_code == 302
    assert progress(off1) == "2/5"
    off1.post(f"/grids/{G01}/households/5/in-group", data={"in_group": "1"})  # sent twice
    assert progress(off1) == "2/5"
    off1.post(f"/grids/{G01}/households/1/in-group", data={"in_group": "0"})
    assert progress(off1) == "1/5"

    # The grid leader sees who added it; the district leader sees the same progress.
    gl1 = text_of(web_client(app, "gl1").get(f"/grids/{G01}/households"))
    assert "周信息员 添加" in gl1 and "150****1234" in gl1
    assert progress(web_client(app, "dl1")) == "1/5"
    with app.app_context():
        assert grid_rows(db.session)[5] == ("钱五", "15000001234", True, "off1")


def test_an_officer_edits_a_household_keeping_changing_or_removing_its_phone(app):
    gl1 = web_client(app, "gl1")
    url = f"/grids/{G01}/households/2"
    assert gl1.post(url, data={"head": "李小二", "phone": ""}).status_code == 302
    with app.app_context():
        assert grid_rows(db.session)[2] == ("李小二", "13900001111", False, None)
    gl1.post(url, data={"head": "李小二", "phone": "137-0000-2222", "in_group": "1"})
    with app.app_context():
        assert grid_rows(db.session)[2] == ("李小二", "13700002222", True, None)
    gl1.post(url, data={"head": "李小二", "clear_phone": "1", "in_group": "1"})
    with app.app_context():
        assert grid_rows(db.session)[2] == ("李小二", None, True, None)


def test_bad_forms_answer_400_with_a_message_per_field_and_change_nothing(app):
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a crash would be a 500 page, not an exception
    off1 = web_client(app, "off1")
    with app.app_context():
        before = grid_rows(db.session)
    refused = off1.post(f"/grids/{G01}/households", data={"number": "3", "head": "", "phone": "12"})
    assert refused.status_code == 400
    page = refused.get_data(as_text=True)
    assert 'data-testid="error-number"' in page and "本网格已有住户使用这个户号" in page
    assert 'data-testid="error-head"' in page and "必填" in page
    assert 'data-testid="error-phone"' in page and "请输入 7 至 15 位数字的电话号码" in page
    for data in (
        {"number": "abc", "head": "某"},
        {"number": "9" * 5000, "head": "某"},
        {"number": "6", "head": "某" * 101},
        {"number": "6", "head": "某", "phone": "+86 138"},
        {},
    ):
        assert off1.post(f"/grids/{G01}/households", data=data).status_code == 400, data
    edit = off1.post(f"/grids/{G01}/households/2", data={"head": "", "phone": "x"})
    assert edit.status_code == 400
    assert 'id="head-2-error"' in edit.get_data(as_text=True)
    for url in (
        f"/grids/{G01}/households/99/in-group",
        f"/grids/{G01}/households/99",
        f"/grids/{G01}/households/99999999999999999999/in-group",
        f"/grids/{G01}/households/-1",
    ):
        assert off1.post(url, data={"head": "某", "in_group": "1"}).status_code == 404, url
    with app.app_context():
        assert grid_rows(db.session) == before


def test_an_officer_of_another_grid_gets_404_on_the_page_and_on_every_post(app):
    off2 = web_client(app, "off2")
    with app.app_context():
        before = grid_rows(db.session)
    assert off2.get(f"/grids/{G01}/households").status_code == 404
    assert (
        off2.post(f"/grids/{G01}/households", data={"number": "7", "head": "某"}).status_code == 404
    )
    assert off2.post(f"/grids/{G01}/households/1", data={"head": "某"}).status_code == 404
    assert (
        off2.post(f"/grids/{G01}/households/4/in-group", data={"in_group": "1"}).status_code == 404
    )
    assert off2.post(f"/grids/{G01}/households/4/remove").status_code == 404
    ps1 = web_client(app, "ps1")
    assert ps1.get(f"/grids/{G01}/households").status_code == 404
    assert "menu-households.index" not in ps1.get("/cases").get_data(as_text=True)
    with app.app_context():
        assert grid_rows(db.session) == before


def test_a_district_leader_sees_but_cannot_edit(app):
    dl1 = web_client(app, "dl1")
    page = dl1.get(f"/grids/{G01}/households")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert 'data-testid="add-form"' not in body and 'data-testid="toggle"' not in body
    assert "menu-households.index" not in dl1.get("/").get_data(as_text=True)
    assert (
        dl1.post(f"/grids/{G01}/households", data={"number": "7", "head": "某"}).status_code == 403
    )
    assert dl1.post(f"/grids/{G01}/households/1", data={"head": "某"}).status_code == 403
    assert (
        dl1.post(f"/grids/{G01}/households/4/in-group", data={"in_group": "1"}).status_code == 403
    )
    # The district leader's list of grids leads to both of the district's registers.
    listing = dl1.get("/households")
    assert listing.status_code == 200
    assert re.findall(
        r'data-testid="grid" data-code="([^"]+)"', listing.get_data(as_text=True)
    ) == [
        G01,
        G02,
    ]
    aud = web_client(app, "aud")
    assert aud.get(f"/grids/{G01}/households").status_code == 200
    assert (
        aud.post(f"/grids/{G01}/households/4/in-group", data={"in_group": "1"}).status_code == 403
    )
    with app.app_context():
        assert grid_rows(db.session)[4] == (None, None, False, None)


def test_the_page_speaks_english_on_request(app):
    page = text_of(web_client(app, "off1", "en").get(f"/grids/{G01}/households"))
    assert "Household register" in page and "In the group 1/4" in page


def test_the_forms_check_their_csrf_token(make_app):
    app = make_app(REGISTER_ORG, csrf=True)
    client = app.test_client()
    login = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', login).group(1)
    client.post("/login", data={"username": "off1", "password": "pw", "csrf_token": token})
    url = f"/grids/{G01}/households/4/in-group"
    assert client.post(url, data={"in_group": "1"}).status_code == 400
    page = client.get(f"/grids/{G01}/households").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    assert client.post(url, data={"in_group": "1", "csrf_token": token}).status_code == 302
    with app.app_context():
        assert grid_rows(db.session)[4][2] is True
        count = db.session.scalar(select(func.count()).select_from(Household))
        assert count == 4 + 3 + 3 + 3


def test_a_number_taken_meanwhile_is_refused_as_taken(listed, monkeypatch):
    """Two officers adding the same number at once: the one who loses the race is told the number
    is taken (the grid's unique constraint), as if it had been taken before."""
    gl = listed
    monkeypatch.setattr(households, "_rows", lambda session, grid: [])  # the other's row unseen
    with pytest.raises(Invalid) as refused:
        households.add_household(gl.session, gl.viewer("off1"), G01, number=3, head="某")
    assert refused.value.fields == {"number": households.TAKEN}
    assert grid_rows(gl.session)[3] == ("张三", "07318888888", False, None)


def test_the_list_of_grids_follows_each_ones_units(app):
    def listed_grids(username: str) -> list[str]:
        page = web_client(app, username).get("/households")
        assert page.status_code == 200, username
        return re.findall(r'data-testid="grid" data-code="([^"]+)"', page.get_data(as_text=True))

    everything = [G01, G02, "V02-D1-G01", "V02-D1-G02"]
    assert listed_grids("tl2") == everything and listed_grids("aud") == everything
    assert listed_grids("vs2") == ["V02-D1-G01", "V02-D1-G02"]
    assert listed_grids("ps1") == [] and listed_grids("adm") == []
    assert "入群 1/4" in text_of(web_client(app, "tl2").get("/households"))


def test_an_officer_removes_a_household_added_by_mistake_but_not_the_files_or_a_visited_one(app):
    off1 = web_client(app, "off1")
    off1.post(f"/grids/{G01}/households", data={"number": "9", "head": "误加"})
    assert progress(off1) == "1/5"
    page = off1.get(f"/grids/{G01}/households").get_data(as_text=True)
    assert page.count('data-testid="remove-form"') == 1  # only the one an officer added
    removed = off1.post(f"/grids/{G01}/households/9/remove")
    assert removed.status_code == 302
    assert "已删除 9 号住户" in text_of(off1.get(f"/grids/{G01}/households"))
    assert progress(off1) == "1/4"
    refused = off1.post(f"/grids/{G01}/households/1/remove", follow_redirects=True)
    assert "此户来自组织架构文件" in text_of(refused)
    with app.app_context():
        assert sorted(grid_rows(db.session)) == [1, 2, 3, 4]
        assert db.session.scalar(select(Unit.households).where(Unit.code == G01)) == 4
