"""The inbox's order and paging (DESIGN §8, GET /inbox) at any size: items with a deadline first,
earliest first, then items without one, ties by id; keyset pages that neither skip nor repeat an
item, whose cursor is the (deadline or 9999-01-01, id) pair that webapp/paging.py has always
given out. engine/inbox.py walks the indexes in that order (migration 0010's due_key): here the
pages it gives are checked against one plain query over inbox_scope (what the inbox was before
0010), over dated, undated, tied, assigned, excluded, claimed, completed and town items, for
viewers with one position, with two ways in (an owner's items and a position), with liaisons and
with delegations. And a database migrated from 0009 has due_key filled for the items it had.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta

import pytest
from conftest import ORG_YAML, START
from sqlalchemy import MetaData, insert, inspect, select
from test_migrations import _differences

from engine.access import Cover, Viewer, inbox_scope, viewer_of
from engine.deadlines import item_overdue
from engine.inbox import inbox_page
from engine.models import NO_DEADLINE, Case, Person, WorkItem
from engine.org import import_org
from engine.passwords import Passwords
from engine.storage import head_revision, make_sessionmaker, upgrade_schema
from webapp.paging import decode_inbox_key, encode_inbox_key

NOW = START + timedelta(days=3)
# Deadlines drawn from a few instants, so that many items tie on theirs; None: no deadline.
DUES = [None, None] + [START + timedelta(hours=h) for h in (-30, 5, 40, 72, 73, 200)]
GRIDS = ("V01-D1-G01", "V01-D1-G02", "V02-D1-G01")
ROLES = ("info_officer", "grid_leader", "district_leader", "village_secretary", "town_leadership")
LEVEL = dict(zip(ROLES, ("grid", "grid", "district", "village", "town"), strict=True))
PEOPLE = ("off1", "off1b", "off2", "gl1", "gl2", "tl1", "tl2", None, None, None)


def _viewer(session, username: str) -> Viewer:
    person = session.scalars(select(Person).where(Person.username == username)).one()
    return viewer_of(session, person)


def _covering(session, username: str, *delegators: str) -> Viewer:
    """`username` while delegations from `delegators` run (as engine.delegation would find)."""
    covers = []
    for name in delegators:
        them = _viewer(session, name)
        covers.append(Cover(name, them.positions, them.liaises))
    return replace(_viewer(session, username), covers=tuple(covers))


def _chain(case: Case) -> dict[str, int]:
    return {"grid": case.grid_id, "district": case.district_id, "village": case.village_id,
            "town": case.town_id}  # fmt: skip


def _fill(session, cases: list[Case], count: int = 240, seed: int = 7) -> None:
    """`count` items over the cases: every tier, a fifth assigned, some excluded or claimed, a
    tenth completed. Two thirds go in with due_key left to the column's default (through the ORM
    and through a Core insert), a third with it written, as engine/projection.py writes it."""
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        case = rng.choice(cases)
        role = rng.choice(ROLES)
        due = rng.choice(DUES)
        row = {
            "case_id": case.id, "task_id": f"t{n}", "spec": role, "task": "handle",
            "name": "处置", "form": "handle", "role": role,
            "unit_id": _chain(case)[LEVEL[role]], "village_id": case.village_id,
            "assignee": rng.choice(PEOPLE) if rng.random() < 0.2 else None,
            "excluded": rng.choice(PEOPLE) if rng.random() < 0.2 else None,
            "claimed_by": rng.choice(PEOPLE), "created_at": START, "due_at": due,
            "supervised_at": due + timedelta(hours=1) if due and rng.random() < 0.2 else None,
            "completed_at": NOW if rng.random() < 0.1 else None,
            "escalated": False, "cancelled": False,
        }  # fmt: skip
        rows.append(row)
    orm, core, written = rows[0::3], rows[1::3], rows[2::3]
    session.add_all(WorkItem(**row) for row in orm)
    session.flush()
    session.execute(insert(WorkItem.__table__), core)
    session.execute(
        insert(WorkItem.__table__), [{**r, "due_key": r["due_at"] or NO_DEADLINE} for r in written]
    )
    session.commit()


def _expected(session, viewer: Viewer, overdue=None, category=None) -> list[int]:
    """The viewer's open items in the inbox's order, by one query over inbox_scope and a sort in
    Python: what the inbox showed before it walked indexes."""
    items = session.scalars(
        select(WorkItem).where(WorkItem.completed_at.is_(None), inbox_scope(viewer))
    ).all()
    if overdue is not None:
        items = [i for i in items if item_overdue(i, NOW) == overdue]
    if category is not None:
        items = [i for i in items if i.case.category == category]
    return [i.id for i in sorted(items, key=lambda i: (i.due_at or NO_DEADLINE, i.id))]


def _walk(session, viewer: Viewer, limit: int, **filters) -> list[int]:
    """Every page, following each cursor through its text form, as GET /inbox does."""
    found, after = [], None
    while True:
        items, key = inbox_page(session, viewer, NOW, after=after, limit=limit, **filters)
        assert len(items) <= limit
        found += [i.id for i in items]
        if key is None:
            return found
        assert len(items) == limit and key == (items[-1].due_key, items[-1].id)
        after = decode_inbox_key(encode_inbox_key(key))


@pytest.fixture
def filled(gl, session):
    officers = ("off1", "off2", "off3")
    made = [gl.accepted(officer, grid) for officer, grid in zip(officers, GRIDS, strict=True)]
    made.append(gl.open("off1", GRIDS[0]))  # waiting for its acceptance
    cases = [session.get(Case, case.id) for case in made]
    _fill(session, cases)
    categories = ["resident_request", "dispute", "resident_request", "dispute"]
    for case, category in zip(cases, categories, strict=True):
        session.get(Case, case.id).category = category
    session.commit()
    return session


def test_due_key_is_the_deadline_or_no_deadline_however_the_item_is_written(filled):
    items = filled.scalars(select(WorkItem)).all()
    assert {i.due_key == (i.due_at or NO_DEADLINE) for i in items} == {True}
    assert {i.due_at is None for i in items} == {True, False}


@pytest.mark.parametrize("limit", [1, 3, 7, 50])
def test_pages_follow_deadline_then_id_with_undated_items_last(filled, limit):
    viewers = [_viewer(filled, name) for name in ("gl1", "off1", "off1b", "dl1", "vs2")]
    viewers += [_viewer(filled, "tl1"), _viewer(filled, "tl2"), _viewer(filled, "aud")]
    viewers += [_covering(filled, "off1b", "off1"), _covering(filled, "dl1", "gl1", "gl2")]
    viewers += [_covering(filled, "tl2", "tl1")]
    seen = 0
    for viewer in viewers:
        expected = _expected(filled, viewer)
        assert _walk(filled, viewer, limit) == expected, viewer.username
        seen += len(expected)
    assert seen > 150  # every kind of viewer sees something, most see a lot
    items = {i.id: i for i in filled.scalars(select(WorkItem))}
    dues = [items[i].due_at for i in _expected(filled, _viewer(filled, "gl1"))]
    first_undated = dues.index(None)  # gl1 sees dated items, then undated ones
    assert first_undated > 0 and set(dues[first_undated:]) == {None}


@pytest.mark.parametrize(
    "filters",
    [{"overdue": True}, {"overdue": False}, {"category": "dispute"},
     {"overdue": False, "category": "resident_request"}],
)  # fmt: skip
def test_filtered_pages_keep_the_order(filled, filters):
    for viewer in (_viewer(filled, "gl1"), _viewer(filled, "off1"), _viewer(filled, "tl2")):
        assert _walk(filled, viewer, 2, **filters) == _expected(filled, viewer, **filters)


def test_a_cursor_at_an_undated_item_is_the_one_the_inbox_always_gave(filled):
    viewer = _viewer(filled, "gl1")
    expected = _expected(filled, viewer)
    items = {i.id: i for i in filled.scalars(select(WorkItem))}
    first_undated = next(n for n, i in enumerate(expected) if items[i].due_at is None)
    # The cursor text an inbox before 0010 gave after the first undated item.
    cursor = encode_inbox_key((NO_DEADLINE, expected[first_undated]))
    assert decode_inbox_key(cursor)[0].isoformat() == "9999-01-01T00:00:00+00:00"
    rest, _key = inbox_page(filled, viewer, NOW, after=decode_inbox_key(cursor), limit=500)
    assert [i.id for i in rest] == expected[first_undated + 1 :]


# The inbox's indexes, of open items only (alembic's comparison leaves out an index's WHERE).
OPEN_ONLY = {
    "ix_work_item_inbox": (["role", "unit_id", "due_key", "id"], "completed_at IS NULL"),
    "ix_work_item_assignee": (["assignee", "due_key", "id"], "completed_at IS NULL"),
}


def _inbox_indexes(engine) -> dict:
    found = {}
    for index in inspect(engine).get_indexes("work_item"):
        if index["name"] in OPEN_ONLY:
            options = index.get("dialect_options", {})
            where = options.get("sqlite_where", options.get("postgresql_where"))
            found[index["name"]] = (index["column_names"], str(where).strip("()"))
    return found


def test_the_quick_schema_has_the_inbox_indexes_of_open_items(db_engine):
    assert _inbox_indexes(db_engine) == OPEN_ONLY


def test_a_database_migrated_from_0009_has_due_key_filled(new_database, engines, bundle, registry):
    """Items written at 0009 (no due_key) are keyed by the migration: due_at, or 9999-01-01 for
    those without; the schema is then the models' and the inbox pages them in order."""
    engine = engines(new_database())
    upgrade_schema(engine, "0009_case_facts")
    sessions = make_sessionmaker(engine)
    # The rows as 0009 stored them, written through its own tables (the models are head's):
    # the diagram version (no comment, no activation) and the grid with the units above it.
    # The organisation file is imported after the upgrade, onto these units by their codes.
    at_0009 = MetaData()
    at_0009.reflect(engine, only=["diagram_version", "unit", "case"])
    units = at_0009.tables["unit"]
    with engine.begin() as conn:
        conn.execute(
            at_0009.tables["diagram_version"].insert(),
            {"process_id": "case_loop", "sha256": bundle.sha256, "files": bundle.files,
             "deployed_by": "system", "deployed_at": START},
        )  # fmt: skip
        parent = None
        for code, level in (("XDK", "town"), ("V01", "village"), ("V01-D1", "district"),
                            (GRIDS[0], "grid")):  # fmt: skip
            parent = conn.execute(
                units.insert().returning(units.c.id),
                {"code": code, "name": code, "level": level, "parent_id": parent,
                 "households": 0, "active": True, "settings": {}},
            ).scalar_one()  # fmt: skip
        grid_id, town_id = (
            parent,
            conn.execute(select(units.c.id).where(units.c.code == "XDK")).scalar_one(),
        )
        district_id = conn.execute(
            select(units.c.parent_id).where(units.c.id == grid_id)
        ).scalar_one()
        village_id = conn.execute(
            select(units.c.parent_id).where(units.c.id == district_id)
        ).scalar_one()
        diagram = conn.execute(select(at_0009.tables["diagram_version"].c.id)).scalar_one()
        conn.execute(
            at_0009.tables["case"].insert(),
            {"id": 1, "number": "XDK-2026-000001", "title": "路灯", "description": "",
             "town_id": town_id, "village_id": village_id, "district_id": district_id,
             "grid_id": grid_id, "status": "handling", "opened_at": START.replace(tzinfo=None),
             "updated_at": START.replace(tzinfo=None),
             "reopen_count": 0, "overdue_marked": False, "event_seq": 0, "event_head": "0" * 64,
             "diagram_id": diagram, "workflow": "", "version": 1},
        )  # fmt: skip
    old = MetaData()
    old.reflect(engine, only=["work_item"])
    table = old.tables["work_item"]
    assert "due_key" not in table.c
    dues = [START + timedelta(hours=5), None, START - timedelta(hours=3), None, START]
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"id": n, "case_id": 1, "task_id": f"t{n}", "spec": "handle_grid",
                 "task": "handle", "name": "处置", "form": "handle", "role": "grid_leader",
                 "unit_id": grid_id, "village_id": village_id,
                 "created_at": START.replace(tzinfo=None),
                 "due_at": due.replace(tzinfo=None) if due else None,
                 "escalated": False, "cancelled": False}
                for n, due in enumerate(dues, start=1)
            ],
        )  # fmt: skip

    assert upgrade_schema(engine).after == head_revision()
    assert _differences(engine) == []
    assert _inbox_indexes(engine) == OPEN_ONLY
    with sessions() as session:
        import_org(session, ORG_YAML, Passwords(cheap=True))
        session.commit()
        items = session.scalars(select(WorkItem).order_by(WorkItem.id)).all()
        assert [i.due_key for i in items] == [due or NO_DEADLINE for due in dues]
        page, _key = inbox_page(session, _viewer(session, "gl1"), NOW, limit=10)
        assert [i.id for i in page] == [3, 5, 1, 2, 4]
