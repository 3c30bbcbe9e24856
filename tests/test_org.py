"""Organisation import (DESIGN §9), login, password hashing and the demo organisation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from engine.demo_org import DEMO_LOGINS, demo_org, demo_org_yaml
from engine.events import verify
from engine.models import (
    LEVEL_OF_ROLE,
    ApiToken,
    Case,
    CaseEvent,
    DiagramVersion,
    Household,
    Liaison,
    Person,
    Position,
    Unit,
    WorkItem,
)
from engine.org import (
    ImportReport,
    OrgFileError,
    authenticate,
    import_org,
    import_org_data,
    parse_org_file,
)
from engine.passwords import CHEAP_DUMMY_HASH, DUMMY_HASH, Passwords
from engine.storage import create_schema, make_engine, make_sessionmaker

SMALL = """\
town: {code: XDK, name: 小渡口镇}
leaders:
  - {username: zhang.wei, name: 张伟, password: "pw-zhang", liaises: [V01]}
  - {username: li.na, name: 李娜, password: "pw-li", liaises: [V01, V02]}
departments:
  - code: PS
    name: 派出所
    officers: [{username: ps.wang, name: 王强, password: "pw"}]
villages:
  - code: V01
    name: 一村
    secretary: {username: v01.sec, name: 赵敏, password: "pw"}
    districts:
      - code: V01-D1
        name: 一片
        leader: {username: v01.d1, name: 钱勇, password: "pw"}
        grids:
          - code: V01-D1-G01
            name: 一组
            households: 3
            leader: {username: g.leader, name: 孙杰, password: "pw"}
            officers: [{username: g01.officer, name: 周芳, password: "pw-officer"}]
          - code: V01-D1-G02
            name: 二组
            households:
              - {number: 1, head: 吴军}
              - {number: 2, head: 郑丽}
            leader: {username: g.leader, name: 孙杰}
            officers: [{username: g02.officer, name: 冯涛, password: "pw-g02"}]
  - code: V02
    name: 桥头村
    districts: []
auditors: [{username: audit, name: 陈静, password: "pw"}]
admins: [{username: root, name: 林峰, password: "pw"}]
"""
SMALL_PEOPLE = 10
SMALL_UNITS = 7  # town, PS, V01, V01-D1, two grids, V02

TABLES = (Unit, Household, Person, Position, Liaison)


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def passwords() -> Passwords:
    return Passwords(cheap=True)


@pytest.fixture
def sessions(new_db_url):
    engine = make_engine(new_db_url("org"))
    create_schema(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def run_import(sessions, text, passwords, **options) -> ImportReport:
    """One import in its own committed transaction, as the CLI does it."""
    with sessions() as session:
        report = import_org(session, text, passwords, **options)
        session.commit()
        return report


def counts(sessions) -> dict[str, int]:
    with sessions() as session:
        return {t.__name__: session.scalar(select(func.count()).select_from(t)) for t in TABLES}


def line_of(text: str, fragment: str) -> int:
    """1-based line of the first line containing `fragment` (expected lines stay in sync with
    the text instead of being counted by hand)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if fragment in line:
            return number
    raise AssertionError(f"{fragment!r} not in text")


def unit(session, code: str) -> Unit:
    return session.scalar(select(Unit).where(Unit.code == code))


def person(session, username: str) -> Person:
    return session.scalar(select(Person).where(Person.username == username))


def positions_of(session, username: str) -> set[tuple[str, str]]:
    return {(p.role, p.unit.code) for p in person(session, username).positions}


def liaison_codes(session, username: str) -> set[str]:
    rows = session.execute(
        select(Unit.code)
        .join(Liaison, Liaison.village_id == Unit.id)
        .join(Person, Person.id == Liaison.person_id)
        .where(Person.username == username)
    )
    return {code for (code,) in rows}


def without(text: str, fragment: str) -> str:
    """The text without the (single) line containing `fragment`."""
    lines = text.splitlines(keepends=True)
    kept = [line for line in lines if fragment not in line]
    assert len(kept) == len(lines) - 1, fragment
    return "".join(kept)


# --- import ---------------------------------------------------------------------------------


def test_import_creates_units_people_positions_and_liaisons(sessions, passwords):
    report = run_import(sessions, SMALL, passwords)

    assert report.units_created == SMALL_UNITS
    assert report.people_created == SMALL_PEOPLE
    assert report.liaisons_added == 3
    with sessions() as s:
        town = unit(s, "XDK")
        assert (town.level, town.parent_id, town.name) == ("town", None, "小渡口镇")
        assert (unit(s, "PS").level, unit(s, "PS").parent_id) == ("department", town.id)
        assert unit(s, "V01").parent_id == town.id
        assert unit(s, "V01-D1").parent_id == unit(s, "V01").id
        g1, g2 = unit(s, "V01-D1-G01"), unit(s, "V01-D1-G02")
        assert (g1.level, g1.parent_id, g1.households) == ("grid", unit(s, "V01-D1").id, 3)
        rows = s.execute(
            select(Household.grid_id, Household.number, Household.head).order_by(Household.id)
        ).all()
        assert [tuple(r) for r in rows] == [
            (g1.id, 1, None),
            (g1.id, 2, None),
            (g1.id, 3, None),
            (g2.id, 1, "吴军"),
            (g2.id, 2, "郑丽"),
        ]
        # One person in two places: one Person, two positions.
        assert positions_of(s, "g.leader") == {
            ("grid_leader", "V01-D1-G01"),
            ("grid_leader", "V01-D1-G02"),
        }
        assert positions_of(s, "g01.officer") == {("info_officer", "V01-D1-G01")}
        assert positions_of(s, "v01.d1") == {("district_leader", "V01-D1")}
        assert positions_of(s, "v01.sec") == {("village_secretary", "V01")}
        assert positions_of(s, "zhang.wei") == {("town_leadership", "XDK")}
        assert positions_of(s, "ps.wang") == {("department_officer", "PS")}
        assert positions_of(s, "audit") == {("auditor", "XDK")}
        assert positions_of(s, "root") == {("admin", "XDK")}
        assert liaison_codes(s, "zhang.wei") == {"V01"}
        assert liaison_codes(s, "li.na") == {"V01", "V02"}
        assert person(s, "g.leader").name == "孙杰"
        assert person(s, "g.leader").password_hash.startswith("$argon2id$")
        # Every position sits at a unit of the level DESIGN's role table names.
        for position in s.scalars(select(Position)):
            assert position.unit.level == LEVEL_OF_ROLE[position.role]


def test_reimport_is_idempotent(sessions, passwords):
    run_import(sessions, SMALL, passwords)
    before = counts(sessions)
    with sessions() as s:
        hashes = {p.username: p.password_hash for p in s.scalars(select(Person))}

    report = run_import(sessions, SMALL, passwords)

    assert report == ImportReport()  # nothing created, updated or removed
    assert counts(sessions) == before
    with sessions() as s:
        assert {p.username: p.password_hash for p in s.scalars(select(Person))} == hashes


def test_reimport_applies_changes(sessions, passwords):
    run_import(sessions, SMALL, passwords)
    changed = (
        SMALL.replace("name: 一组", "name: 一组(新)")
        .replace("households: 3", "households: 2")
        .replace("{number: 2, head: 郑丽}", "{number: 2, head: 郑小丽}")
        .replace("liaises: [V01, V02]", "liaises: [V02]")
        .replace("name: 周芳", "name: 周小芳")
    )
    report = run_import(sessions, changed, passwords)

    assert (report.units_updated, report.units_created) == (1, 0)
    assert (report.households_removed, report.households_updated) == (1, 1)
    assert report.liaisons_removed == 1
    assert report.people_updated == 2  # 周芳 renamed, li.na's liaisons
    with sessions() as s:
        assert unit(s, "V01-D1-G01").households == 2
        assert unit(s, "V01-D1-G01").name == "一组(新)"
        heads = s.scalars(select(Household.head).order_by(Household.id)).all()
        assert heads == [None, None, "吴军", "郑小丽"]
        assert liaison_codes(s, "li.na") == {"V02"}
        assert person(s, "g01.officer").name == "周小芳"


def test_units_missing_from_the_file_are_deactivated_not_deleted(sessions, passwords):
    run_import(sessions, SMALL, passwords)
    text = SMALL.replace("liaises: [V01, V02]", "liaises: [V01]")
    text = without(without(without(text, "code: V02"), "name: 桥头村"), "districts: []")

    report = run_import(sessions, text, passwords)

    assert report.units_deactivated == 1
    with sessions() as s:
        assert unit(s, "V02").active is False
        assert unit(s, "V01").active is True
    report = run_import(sessions, SMALL, passwords)
    assert report.units_updated == 1
    with sessions() as s:
        assert unit(s, "V02").active is True


# --- bad files ------------------------------------------------------------------------------

GRID1 = "villages[0].districts[0].grids[0]"
GRID2 = "villages[0].districts[0].grids[1]"


def _bad(text_change, line_fragment, path, message):
    return pytest.param(text_change, line_fragment, path, message, id=message[:30])


BAD_FILES = [
    # missing field: the grid's name; reported at the grid's first line
    _bad(
        lambda t: without(t, "name: 二组"),
        "code: V01-D1-G02",
        f"{GRID2}.name",
        "required",
    ),
    _bad(
        lambda t: t.replace("households: 3\n", "households: 3\n            colour: red\n"),
        "colour: red",
        f"{GRID1}.colour",
        "unknown key 'colour'",
    ),
    _bad(
        lambda t: t.replace("households: 3", "households: many"),
        "households: many",
        f"{GRID1}.households",
        "must be a number of households or a list of {number, head}",
    ),
    _bad(
        lambda t: t.replace("{number: 2, head: 郑丽}", "{number: two, head: 郑丽}"),
        "number: two",
        f"{GRID2}.households[1].number",
        "must be a whole number",
    ),
    _bad(
        lambda t: t.replace("username: v01.d1,", "username: 12345,"),
        "username: 12345",
        "villages[0].districts[0].leader.username",
        "must be text, not a number",
    ),
    _bad(
        lambda t: t.replace("name: 派出所", "name: [派出所]"),
        "name: [派出所]",
        "departments[0].name",
        "must be text, not a list",
    ),
    _bad(
        lambda t: t.replace("liaises: [V01, V02]", "liaises: [V01, V09]"),
        "V09",
        "leaders[1].liaises[1]",
        "unknown village code 'V09'",
    ),
    _bad(
        lambda t: t.replace("liaises: [V01]", "liaises: [V01-D1]"),
        "liaises: [V01-D1]",
        "leaders[0].liaises[0]",
        "'V01-D1' is a district, not a village",
    ),
    _bad(
        lambda t: t.replace("code: V01-D1-G02", "code: V01-D1-G01"),
        "name: 二组",  # the duplicate is the line above; checked below via `line - 1`
        f"{GRID2}.code",
        "duplicate code 'V01-D1-G01'",
    ),
    _bad(
        lambda t: t.replace(
            "{username: g.leader, name: 孙杰}", "{username: g.leader, name: 孙二杰}"
        ),
        "孙二杰",
        f"{GRID2}.leader.name",
        "'g.leader' is named '孙杰'",
    ),
    _bad(
        lambda t: t.replace('password: "pw-g02"', 'password: "other"').replace(
            "{username: g.leader, name: 孙杰}", '{username: g.leader, name: 孙杰, password: "x"}'
        ),
        'name: 孙杰, password: "x"',
        f"{GRID2}.leader.password",
        "differs from the password given for 'g.leader'",
    ),
    _bad(
        lambda t: t.replace(', password: "pw-g02"', ""),
        "g02.officer",
        f"{GRID2}.officers[0].password",
        "required: 'g02.officer' is not in the database yet",
    ),
    _bad(
        lambda t: t.replace("town: {code: XDK, name: 小渡口镇}", "town: {code: XDK}"),
        "town: {code: XDK}",
        "town.name",
        "required",
    ),
    _bad(
        lambda t: t.replace("liaises: [V01]}", "liaises: [V01}"),
        "liaises: [V01}",
        "",
        "YAML:",
    ),
]


@pytest.mark.parametrize("change, line_fragment, path, message", BAD_FILES)
def test_bad_file_names_line_and_field_and_writes_nothing(
    sessions, passwords, change, line_fragment, path, message
):
    text = change(SMALL)
    assert text != SMALL

    with sessions() as s, pytest.raises(OrgFileError) as caught:
        import_org(s, text, passwords)

    expected_line = line_of(text, line_fragment)
    if "duplicate code" in message:
        expected_line -= 1
    assert any(
        line == expected_line and field == path and message in text_
        for line, field, text_ in caught.value.errors
    ), caught.value.errors
    rendered = f"line {expected_line}: {path}: " if path else f"line {expected_line}: "
    assert rendered + message in str(caught.value)
    assert counts(sessions) == dict.fromkeys(counts(sessions), 0)


def test_bad_reimport_changes_nothing(sessions, passwords):
    run_import(sessions, SMALL, passwords)
    before = counts(sessions)
    # Removes a person (would deactivate them) and has one problem further down.
    text = without(SMALL, "g01.officer").replace("households: 3", "households: -1")

    with sessions() as s, pytest.raises(OrgFileError) as caught:
        import_org(s, text, passwords)
        s.commit()

    assert [e[1] for e in caught.value.errors] == [f"{GRID1}.households"]
    assert counts(sessions) == before
    with sessions() as s:
        assert person(s, "g01.officer").active is True


def test_all_problems_are_reported_at_once(sessions, passwords):
    text = SMALL.replace("households: 3", "households: x").replace("liaises: [V01]", "liaises: [Q]")
    text = text.replace("auditors:", "auditors_typo:")

    with sessions() as s, pytest.raises(OrgFileError) as caught:
        import_org(s, text, passwords)

    paths = [field for _, field, _ in caught.value.errors]
    assert paths == ["leaders[0].liaises[0]", f"{GRID1}.households", "auditors_typo"]
    assert len(str(caught.value).splitlines()) == 3


def test_empty_file_is_an_error(sessions, passwords):
    with sessions() as s, pytest.raises(OrgFileError, match="line 1: the file is empty"):
        import_org(s, "# nothing here\n", passwords)


def test_plain_data_errors_carry_the_field_path(sessions, passwords):
    data = demo_org()
    data["villages"][0]["districts"][0]["grids"][0]["households"] = "many"
    with sessions() as s, pytest.raises(OrgFileError) as caught:
        import_org_data(s, data, passwords)
    assert str(caught.value).startswith("villages[0].districts[0].grids[0].households: must be")


# --- people leaving and coming back ---------------------------------------------------------

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


def _add_case_with_items(session) -> dict[str, int]:
    """A case owned by g02.officer with an open item they claimed, a completed item they
    claimed, and an open item claimed by someone else."""
    grid, district, village, town = (
        unit(session, c) for c in ("V01-D1-G02", "V01-D1", "V01", "XDK")
    )
    diagram = DiagramVersion(
        process_id="gridloop",
        sha256="0" * 64,
        files={},
        deployed_by="root",
        deployed_at=T0,
    )
    session.add(diagram)
    session.flush()
    case = Case(
        number="XDK-2026-000001",
        title="路灯坏了",
        town_id=town.id,
        village_id=village.id,
        district_id=district.id,
        grid_id=grid.id,
        owner="g02.officer",
        status="handling",
        tier="grid_leader",
        opened_at=T0,
        updated_at=T0,
        diagram_id=diagram.id,
        workflow="{}",
    )
    session.add(case)
    session.flush()

    def item(task, claimed_by, completed=False) -> WorkItem:
        row = WorkItem(
            case_id=case.id,
            task_id=f"{task}-{claimed_by}-{completed}",
            spec=task,
            task=task,
            name=task,
            form=task,
            role="grid_leader",
            unit_id=grid.id,
            village_id=village.id,
            claimed_by=claimed_by,
            claimed_at=T0,
            created_at=T0,
            completed_at=T0 + timedelta(hours=1) if completed else None,
            completed_by=claimed_by if completed else None,
        )
        session.add(row)
        return row

    rows = {
        "open": item("handle", "g02.officer"),
        "done": item("accept", "g02.officer", completed=True),
        "other": item("report", "g.leader"),
    }
    gone = person(session, "g02.officer")
    session.add(ApiToken(token_hash="a" * 64, person_id=gone.id, created_at=T0, expires_at=T0))
    session.flush()
    return {"case": case.id, **{k: v.id for k, v in rows.items()}}


def test_person_missing_from_reimport_is_deactivated(sessions, passwords):
    run_import(sessions, SMALL, passwords)
    with sessions() as s:
        ids = _add_case_with_items(s)
        s.commit()
        assert authenticate(s, "g02.officer", "pw-g02", passwords) is not None

    report = run_import(sessions, without(SMALL, "g02.officer"), passwords)

    assert report.people_deactivated == 1
    assert report.claims_released == 1
    assert report.positions_removed == 1
    assert report.people_updated == 0
    with sessions() as s:
        gone = person(s, "g02.officer")
        assert gone is not None and gone.active is False
        assert gone.positions == []
        assert authenticate(s, "g02.officer", "pw-g02", passwords) is None
        open_item, done, other = (s.get(WorkItem, ids[k]) for k in ("open", "done", "other"))
        assert (open_item.claimed_by, open_item.claimed_at) == (None, None)
        assert (done.claimed_by, done.completed_by) == ("g02.officer", "g02.officer")
        assert other.claimed_by == "g.leader"
        assert s.get(Case, ids["case"]).owner == "g02.officer"
        assert s.scalar(select(func.count()).select_from(ApiToken)) == 0
        released = s.scalars(select(CaseEvent).where(CaseEvent.case_id == ids["case"])).all()
        assert [(e.type, e.actor, e.seq) for e in released] == [("released", "system", 1)]
        assert json.loads(released[0].data) == {
            "work_item": ids["open"],
            "from": "g02.officer",
            "reason": "deactivated",
        }
        assert verify(s, s.get(Case, ids["case"])).ok

    report = run_import(sessions, SMALL, passwords)  # they come back

    assert (report.people_reactivated, report.people_updated, report.people_created) == (1, 1, 0)
    with sessions() as s:
        back = authenticate(s, "g02.officer", "pw-g02", passwords)  # password kept
        assert back is not None and back.active is True
        assert positions_of(s, "g02.officer") == {("info_officer", "V01-D1-G02")}


def test_leader_missing_from_reimport_loses_liaisons(sessions, passwords):
    run_import(sessions, SMALL, passwords)
    report = run_import(sessions, without(SMALL, "username: li.na"), passwords)
    assert (report.people_deactivated, report.liaisons_removed) == (1, 2)
    with sessions() as s:
        assert liaison_codes(s, "li.na") == set()
        assert liaison_codes(s, "zhang.wei") == {"V01"}


def test_person_in_db_may_omit_password(sessions, passwords):
    run_import(sessions, SMALL, passwords)
    report = run_import(sessions, SMALL.replace(', password: "pw-g02"', ""), passwords)
    assert report == ImportReport()


# --- passwords and login --------------------------------------------------------------------


def test_passwords_are_not_reset_on_reimport_unless_asked(sessions, passwords):
    run_import(sessions, SMALL, passwords)
    changed = SMALL.replace('"pw-officer"', '"new-secret"')

    run_import(sessions, changed, passwords)
    with sessions() as s:
        assert authenticate(s, "g01.officer", "pw-officer", passwords) is not None
        assert authenticate(s, "g01.officer", "new-secret", passwords) is None

    report = run_import(sessions, changed, passwords, reset_passwords=True)
    assert report.passwords_set == SMALL_PEOPLE
    with sessions() as s:
        assert authenticate(s, "g01.officer", "new-secret", passwords) is not None
        assert authenticate(s, "g01.officer", "pw-officer", passwords) is None
        assert authenticate(s, "zhang.wei", "pw-zhang", passwords) is not None


class CountingPasswords(Passwords):
    def __init__(self) -> None:
        super().__init__(cheap=True)
        self.verifications = 0

    def verify(self, hash: str, pw: str) -> bool:
        self.verifications += 1
        return super().verify(hash, pw)


@pytest.mark.parametrize(
    "username, password, ok",
    [
        ("zhang.wei", "pw-zhang", True),
        ("zhang.wei", "pw-wrong", False),
        ("zhang.wei", "", False),
        ("nobody", "pw-zhang", False),
        ("", "pw", False),
    ],
)
def test_authenticate_spends_one_verification(sessions, passwords, username, password, ok):
    run_import(sessions, SMALL, passwords)
    counting = CountingPasswords()
    with sessions() as s:
        result = authenticate(s, username, password, counting)
    assert (result is not None) == ok
    if ok:
        assert result.username == username
    assert counting.verifications == 1


def test_login_upgrades_a_cheap_hash(sessions, passwords):
    run_import(sessions, SMALL, passwords)
    strong = Passwords()
    with sessions() as s:
        assert authenticate(s, "zhang.wei", "pw-zhang", strong) is not None
        s.commit()
    with sessions() as s:
        stored = person(s, "zhang.wei").password_hash
        assert not strong.needs_rehash(stored)
        assert authenticate(s, "zhang.wei", "pw-zhang", passwords) is not None


def test_passwords_hash_and_verify(passwords):
    hashed = passwords.hash("s3cret")
    assert hashed.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert passwords.verify(hashed, "s3cret") is True
    assert passwords.verify(hashed, "S3cret") is False
    assert passwords.hash("s3cret") != hashed  # salted
    assert passwords.needs_rehash(hashed) is False
    assert Passwords().needs_rehash(hashed) is True


@pytest.mark.parametrize("bad", ["", "not-a-hash", "$argon2id$v=19$m=8,t=1,p=1$xx$yy", None, 5])
def test_verify_never_raises(passwords, bad):
    assert passwords.verify(bad, "pw") is False
    assert passwords.needs_rehash(bad) is True


def test_dummy_hashes_match_their_parameters():
    # If they did not, an unknown user would cost less time than a wrong password.
    assert Passwords(cheap=True).needs_rehash(CHEAP_DUMMY_HASH) is False
    assert Passwords().needs_rehash(DUMMY_HASH) is False
    assert Passwords(cheap=True).verify_dummy("anything") is False


# --- the demo organisation ------------------------------------------------------------------


def _grids(org):
    return [g for v in org["villages"] for d in v["districts"] for g in d["grids"]]


def test_demo_org_has_the_size_of_a_township():
    org = demo_org()
    grids = _grids(org)
    assert len(org["villages"]) == 12
    assert [v["code"] for v in org["villages"]] == [f"V{i:02d}" for i in range(1, 13)]
    assert all(len(v["districts"]) == 3 for v in org["villages"])
    assert len(grids) == 320
    assert len({g["code"] for g in grids}) == 320
    assert grids[0]["code"] == "V01-D1-G01"
    for grid in grids:
        assert 45 <= len(grid["households"]) <= 55
        assert [h["number"] for h in grid["households"]] == list(
            range(1, len(grid["households"]) + 1)
        )
        assert all(2 <= len(h["head"]) <= 3 for h in grid["households"])
        assert len(grid["officers"]) == 1 and grid["leader"]["username"].endswith(".leader")
    assert sorted(d["code"] for d in org["departments"]) == ["AJ", "NJ", "PS", "ZR"]
    assert all(len(d["officers"]) == 2 for d in org["departments"])
    assert len(org["leaders"]) == 6
    liaised = [code for leader in org["leaders"] for code in leader["liaises"]]
    assert sorted(liaised) == [f"V{i:02d}" for i in range(1, 13)]
    assert all(len(leader["liaises"]) == 2 for leader in org["leaders"])
    assert len(org["auditors"]) == 2 and len(org["admins"]) == 1
    assert org["town"] == {"code": "XDK", "name": "小渡口镇"}


def test_demo_org_is_deterministic_and_uses_the_password():
    assert demo_org() == demo_org()
    assert demo_org("other")["admins"][0]["password"] == "other"
    first, second = demo_org(), demo_org("other")
    assert _grids(first)[100]["households"] == _grids(second)[100]["households"]


def test_demo_org_imports_and_every_demo_login_works(sessions, passwords):
    with sessions() as s:
        report = import_org_data(s, demo_org(), passwords)
        s.commit()
    assert report.people_created == 320 * 2 + 36 + 12 + 6 + 8 + 2 + 1
    with sessions() as s:
        levels = dict(s.execute(select(Unit.level, func.count()).group_by(Unit.level)).all())
        assert levels == {"town": 1, "department": 4, "village": 12, "district": 36, "grid": 320}
        households = s.scalar(select(func.count()).select_from(Household))
        assert households == sum(len(g["households"]) for g in _grids(demo_org()))
        assert s.scalar(select(func.count()).select_from(Liaison)) == 12
        for role, username in DEMO_LOGINS:
            who = authenticate(s, username, "gridloop-demo", passwords)
            assert who is not None, username
            assert role in {p.role for p in who.positions}


def test_demo_org_yaml_is_the_same_organisation_and_imports(sessions, passwords):
    # The slowest test here (ruamel dumps and parses 18,000 lines in pure Python): it is the
    # path `gridloop org import` takes with the demo file, so it runs once, in full.
    text = demo_org_yaml()
    assert "小渡口镇" in text  # allow_unicode: names stay readable
    parsed = parse_org_file(text)
    assert parsed == demo_org()
    with sessions() as s:
        report = import_org_data(s, parsed, passwords)
        s.commit()
    assert (report.units_created, report.people_created) == (373, 705)


def test_an_administrators_deactivation_survives_importing_the_export(sessions, passwords):
    """An administrator deactivates an officer and a liaison leader (their positions and
    liaisons kept, so reactivating restores them). The export lists active people only, and
    importing it used to strip what they kept (a CLI sweep): now it changes nothing, and a
    village whose liaison leader is deactivated sends its town items to the other leaders."""
    from engine import org_admin
    from engine.access import eligible_town_leaders
    from engine.org_xlsx import export_file

    run_import(sessions, SMALL, passwords)
    now = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    with sessions() as s:
        for username in ("g02.officer", "zhang.wei"):
            org_admin.deactivate(s, now, "root", username)
        s.commit()
        exported = export_file(s, "yaml").decode()
        v01 = s.scalar(select(Unit.id).where(Unit.code == "V01"))
        town = s.scalar(select(Unit.id).where(Unit.code == "XDK"))
        assert set(eligible_town_leaders(s, v01, town)) == {"li.na"}
    assert "g02.officer" not in exported and "zhang.wei" not in exported
    report = run_import(sessions, exported, passwords)
    assert (report.positions_removed, report.liaisons_removed, report.people_updated) == (0, 0, 0)
    assert report.people_deactivated == 0
    with sessions() as s:
        assert positions_of(s, "g02.officer") == {("info_officer", "V01-D1-G02")}
        assert s.scalar(select(func.count()).select_from(Liaison)) == 3  # zhang.wei's V01 too
        org_admin.reactivate(s, now, "root", "g02.officer")
        s.commit()
        assert authenticate(s, "g02.officer", "pw-g02", passwords) is not None


def test_a_file_without_administrators_cannot_lock_everyone_out(sessions, passwords):
    """An administrator cannot deactivate the last one; nor can an import that names none (a
    CLI sweep imported such a file and every administrator was deactivated)."""
    run_import(sessions, SMALL, passwords)
    no_admins = SMALL.replace('admins: [{username: root, name: 林峰, password: "pw"}]\n', "")
    assert "admins" not in no_admins
    with pytest.raises(OrgFileError) as refused, sessions() as s:
        import_org(s, no_admins, passwords)
    assert "names no administrator" in str(refused.value) and "root" in str(refused.value)
    with sessions() as s:
        assert person(s, "root").active
