"""The 督办 watch list (engine/inbox.py watch_items): the supervised open items that concern a
person but are not in their inbox: items whose latest supervision told them or a position they
hold, and items of cases they own; most overdue first, (due_key, id) as the inbox.

Whom a supervision told used to be a text column searched with LIKE (work_item.notified); it is
now rows (work_item_watch, migration 0013) walked by key. Checked here: the lists are the ones
the LIKE query gave, on real supervisions (a list worked out from the cases' `supervised` events,
whose `notify` names exactly what the text held) for a person told by name, one told through a
position, a case owner who was not told, a town leader who is not liaison of the village and
people who have the item in their own inbox; a later supervision replaces whom the earlier one
told and a closed item leaves every list; a step that closes no supervised item does not touch
the watch rows. And a database at 0012 with notified texts, after the upgrade, gives every person
the same list as the LIKE query did (and again after a downgrade), with the rows split from the
texts.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import timedelta

from alembic import command
from conftest import GRID, ORG_YAML, START
from sqlalchemy import MetaData, event, literal_column, or_, select
from sqlalchemy.orm import joinedload
from test_migrations import _differences

from engine import org_admin
from engine.access import Cover, Viewer, inbox_scope, viewer_of
from engine.inbox import watch_items
from engine.models import (
    LEVEL_OF_ROLE,
    NO_DEADLINE,
    Case,
    CaseEvent,
    DiagramVersion,
    Person,
    Unit,
    WorkItem,
    WorkItemWatch,
)
from engine.org import import_org
from engine.passwords import Passwords
from engine.projection import person_key, position_key
from engine.specs import deploy
from engine.storage import (
    alembic_config,
    head_revision,
    make_sessionmaker,
    migration_connection,
    upgrade_schema,
)

PEOPLE = ("off1", "off1b", "off2", "off3", "gl1", "gl2", "gl3", "dl1", "dl2", "vs1", "vs2",
          "tl1", "tl2", "ps1")  # fmt: skip


def _viewer(session, username: str) -> Viewer:
    person = session.scalars(select(Person).where(Person.username == username)).one()
    return viewer_of(session, person)


def _covering(session, username: str, delegator: str) -> Viewer:
    """`username` while a delegation from `delegator` runs: their inbox grows, their keys don't."""
    them = _viewer(session, delegator)
    cover = Cover(delegator, them.positions, them.liaises)
    return replace(_viewer(session, username), covers=(cover,))


def _keys(viewer: Viewer) -> set[str]:
    return {person_key(viewer.username)} | {position_key(r, u) for r, u in viewer.tier_positions()}


def _listed(session, viewer: Viewer, limit: int = 20) -> list[int]:
    session.expire_all()
    return [item.id for item in watch_items(session, viewer, limit)]


def _told_by_events(session, item: WorkItem) -> set[str]:
    """Whom the item's latest supervision told, as the keys the notified text held, read from
    its `supervised` event (the one of the step that stamped supervised_at)."""
    at = item.supervised_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    found = session.scalars(
        select(CaseEvent).where(
            CaseEvent.case_id == item.case_id, CaseEvent.type == "supervised", CaseEvent.at == at
        )
    ).all()
    [supervised] = [e for e in found if e.task == item.task]
    codes = dict(session.execute(select(Unit.code, Unit.id)).all())
    keys = set()
    for name in json.loads(supervised.data)["notify"]:
        role, _at, code = name.partition("@")
        keys.add(position_key(role, codes[code]) if code else person_key(name))
    return keys


def _expected(session, viewer: Viewer, limit: int = 20) -> list[int]:
    """The list as the LIKE query made it, in Python: open supervised items whose latest
    supervision told one of the viewer's keys or whose case they own, less their inbox."""
    session.expire_all()
    inbox = set(session.scalars(select(WorkItem.id).where(inbox_scope(viewer))))
    items = session.scalars(
        select(WorkItem)
        .options(joinedload(WorkItem.case))
        .where(WorkItem.completed_at.is_(None), WorkItem.supervised_at.is_not(None))
    ).all()
    keys = _keys(viewer)
    concern = [
        i
        for i in items
        if i.id not in inbox
        and (i.case.owner == viewer.username or keys & _told_by_events(session, i))
    ]
    return [i.id for i in sorted(concern, key=lambda i: (i.due_key, i.id))][:limit]


def _all_lists_agree(session) -> dict[str, list[int]]:
    lists = {}
    for username in PEOPLE:
        viewer = _viewer(session, username)
        lists[username] = _listed(session, viewer)
        assert lists[username] == _expected(session, viewer), username
    for username, delegator in (("gl2", "gl1"), ("tl2", "tl1"), ("off1b", "off1")):
        viewer = _covering(session, username, delegator)
        assert _listed(session, viewer) == _expected(session, viewer), (username, delegator)
    return lists


def _rows(session, item_id: int) -> set[str]:
    session.expire_all()
    return set(session.scalars(select(WorkItemWatch.key).where(WorkItemWatch.item_id == item_id)))


def _unit(session, code: str) -> int:
    return session.scalars(select(Unit.id).where(Unit.code == code)).one()


def test_a_supervision_lists_the_item_for_whom_it_told_but_not_in_their_own_inbox(gl):
    """The grid's 80% supervision tells the holder, the owner and the district leader."""
    case = gl.accepted("off1")
    handle = gl.item(case)
    assert _all_lists_agree(gl.session) == {u: [] for u in PEOPLE}

    gl.fire(handle.warn_at)
    district = _unit(gl.session, "V01-D1")
    lists = _all_lists_agree(gl.session)
    assert lists["dl1"] == [handle.id]  # through the position they hold
    assert lists["off1"] == [handle.id]  # by name (and as the owner)
    assert lists["gl1"] == []  # told as the holder, but it is in their inbox
    assert {u for u, found in lists.items() if found} == {"dl1", "off1"}
    # The grid leader's position is not written: everyone there has the item in their inbox.
    assert _rows(gl.session, handle.id) == {
        person_key("off1"),
        position_key("district_leader", district),
    }

    # The owner leaves; their cases go to off1b, who was not told: listed as the owner. off1
    # was told by name and still is (the list shows whom the supervision told).
    org_admin.deactivate(gl.session, gl.clock.now(), "adm", "off1")
    org_admin.reassign_owner(gl.session, gl.clock.now(), "adm", case.number, "off1b")
    gl.session.commit()
    lists = _all_lists_agree(gl.session)
    assert lists["off1b"] == [handle.id] and lists["off1"] == [handle.id]

    # Done: the item leaves every list, and its rows go.
    gl.complete("gl1", case, {"outcome": "resolved", "note": "修好了"})
    assert _all_lists_agree(gl.session) == {u: [] for u in PEOPLE}
    assert _rows(gl.session, handle.id) == set()


def test_a_holder_who_claimed_is_told_by_name_and_still_not_listed(gl):
    case = gl.accepted("off1b")
    handle = gl.item(case)
    gl.runtime.claim(gl.session, gl.viewer("gl1"), handle.id)
    gl.fire(handle.warn_at)
    district = _unit(gl.session, "V01-D1")
    assert _rows(gl.session, handle.id) == {
        person_key("gl1"),
        person_key("off1b"),
        position_key("district_leader", district),
    }
    lists = _all_lists_agree(gl.session)
    assert lists["gl1"] == [] and lists["off1b"] == [handle.id] and lists["dl1"] == [handle.id]


def test_a_town_item_is_on_the_list_of_the_town_leader_who_is_not_liaison(gl):
    """V01's liaison is tl1: its town items are in tl1's inbox and not in tl2's. Supervised daily
    once overdue, each supervision replaces whom the last one told."""
    case = gl.accepted(category="safety_hazard", severity="urgent")
    village = gl.item(case)
    gl.fire(village.due_at)  # 80% and 100% at once: supervised, then escalated to town
    assert _rows(gl.session, village.id) == set()  # closed by the same step
    town = gl.item(case)
    assert town.role == "town_leadership"
    gl.fire(town.warn_at)
    xdk = _unit(gl.session, "XDK")
    told = {position_key("town_leadership", xdk), person_key("off1")}
    assert _rows(gl.session, town.id) == told
    lists = _all_lists_agree(gl.session)
    assert lists["tl2"] == [town.id] and lists["tl1"] == [] and lists["off1"] == [town.id]

    gl.fire(town.due_at)
    gl.fire(town.due_at + timedelta(days=1))  # the daily supervision, again
    assert _rows(gl.session, town.id) == told
    assert _all_lists_agree(gl.session)["tl2"] == [town.id]


def test_the_list_is_most_overdue_first_and_cut_at_the_limit(gl):
    cases = []
    for officer, grid in (("off1", GRID), ("off1b", GRID), ("off2", "V01-D1-G02"), ("off1", GRID)):
        cases.append(gl.accepted(officer, grid))
        gl.clock.set(gl.clock.now() + timedelta(minutes=7))
    items = [gl.item(case) for case in cases]
    gl.fire(max(i.warn_at for i in items))
    dl1 = gl.viewer("dl1")
    order = [i.id for i in sorted(items, key=lambda i: (i.due_key, i.id))]
    assert _listed(gl.session, dl1) == order == _expected(gl.session, dl1)
    assert _listed(gl.session, dl1, limit=2) == order[:2] == _expected(gl.session, dl1, limit=2)
    _all_lists_agree(gl.session)


def test_only_steps_that_close_a_supervised_item_touch_the_watch_rows(gl, db_engine):
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(db_engine, "before_cursor_execute", record)
    try:
        case = gl.accepted("off1")  # open, accept: no supervision
        assert not [s for s in seen if "work_item_watch" in s]
        gl.fire(gl.item(case).warn_at)
        assert [s.split()[0] for s in seen if "work_item_watch" in s] == ["INSERT"]
        seen.clear()
        gl.complete("gl1", case, {"outcome": "resolved", "note": "修好了"})
        assert [s.split()[0] for s in seen if "work_item_watch" in s] == ["DELETE"]
    finally:
        event.remove(db_engine, "before_cursor_execute", record)


# ----------------------------------------------------------------------------- the upgrade


def old_watch_items(session, viewer: Viewer, limit: int = 20) -> list[int]:
    """engine.inbox.watch_items before 0013 (its LIKE over work_item.notified), for a database
    at 0012."""
    keys = [person_key(viewer.username)] + [
        position_key(role, unit_id) for role, unit_id in viewer.tier_positions()
    ]

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

    notified = literal_column("work_item.notified")
    concerns = [Case.owner == viewer.username] + [
        notified.like(f"%,{escape(key)},%", escape="\\") for key in keys
    ]
    query = (
        select(WorkItem.id)
        .join(Case, Case.id == WorkItem.case_id)
        .where(
            WorkItem.completed_at.is_(None),
            WorkItem.supervised_at.is_not(None),
            or_(*concerns),
            ~inbox_scope(viewer),
        )
        .order_by(WorkItem.due_key, WorkItem.id)
        .limit(limit)
    )
    return list(session.scalars(query))


GRIDS = ("V01-D1-G01", "V01-D1-G02", "V02-D1-G01", "V02-D1-G02")
OWNERS = {"V01-D1-G01": "off1", "V01-D1-G02": "off2", "V02-D1-G01": "off3", "V02-D1-G02": None}
ROLES = ("info_officer", "grid_leader", "district_leader", "village_secretary", "town_leadership")
DUES = [None] + [START + timedelta(hours=h) for h in (-30, 5, 40, 72, 200)]


def naive(at):
    """An instant as the reflected 0012 table takes it (naive UTC, as UTCDateTime stores it)."""
    return at.replace(tzinfo=None) if at is not None else None


def _fill_0012(engine, session) -> dict[str, int]:
    """Cases over four grids and 300 items as 0012 kept them, notified texts and all: every tier,
    assigned, excluded, claimed, closed, unsupervised, told nobody; told their own position, the
    tier above, the owner, someone else, the town. Returns crafted items' ids by name."""
    units = {u.code: u for u in session.scalars(select(Unit))}
    diagram = session.scalar(select(DiagramVersion.id))
    chains, rows = {}, []
    for n, code in enumerate(GRIDS, start=1):
        grid = units[code]
        district = session.get(Unit, grid.parent_id)
        village = session.get(Unit, district.parent_id)
        chains[n] = {"grid": grid.id, "district": district.id, "village": village.id,
                     "town": village.parent_id}  # fmt: skip
        rows.append(
            {"id": n, "number": f"XDK-2026-{n:06d}", "title": "路灯", "description": "",
             "town_id": village.parent_id, "village_id": village.id, "district_id": district.id,
             "grid_id": grid.id, "owner": OWNERS[code], "status": "handling",
             "opened_at": START.replace(tzinfo=None), "updated_at": START.replace(tzinfo=None),
             "reopen_count": 0,
             "overdue_marked": False, "event_seq": 0, "event_head": "0" * 64,
             "diagram_id": diagram, "workflow": "", "version": 1}
        )  # fmt: skip
    # Through 0012's own case table (the model's has later columns).
    at_0012 = MetaData()
    at_0012.reflect(engine, only=["case"])
    session.execute(at_0012.tables["case"].insert(), rows)
    session.commit()

    table = MetaData()
    table.reflect(engine, only=["work_item"])
    work_item = table.tables["work_item"]
    assert "notified" in work_item.c
    rng = random.Random(13)
    items = []

    def item(n, case, role, *, told=(), assignee=None, excluded=None, supervised=True,
             completed=False, due=None):  # fmt: skip
        chain = chains[case]
        unit = chain[LEVEL_OF_ROLE[role]]
        items.append(
            {"id": n, "case_id": case, "task_id": f"t{n}", "spec": role, "task": "handle",
             "name": "处置", "form": "handle", "role": role, "unit_id": unit,
             "village_id": chain["village"], "assignee": assignee, "excluded": excluded,
             "claimed_by": rng.choice(PEOPLE + (None,) * 5), "created_at": naive(START),
             "due_at": naive(due), "due_key": naive(due or NO_DEADLINE),
             "supervised_at": naive(START) if supervised else None,
             "notified": "," + ",".join(told) + "," if told else None,
             "completed_at": naive(START) if completed else None,
             "escalated": False, "cancelled": False}
        )  # fmt: skip
        return unit

    # Crafted: what the upgrade keeps and leaves out of the rows.
    grid = chains[1]["grid"]
    own = position_key("grid_leader", grid)
    item(1, 1, "grid_leader", told=[own, person_key("off1"), own])  # own position: left out
    item(2, 1, "grid_leader", told=[own], excluded="gl1")  # excludes someone: kept
    item(3, 1, "info_officer", told=[position_key("info_officer", grid)], assignee="off1")
    item(4, 1, "town_leadership", told=[position_key("town_leadership", chains[1]["town"])])
    item(5, 1, "grid_leader", told=[position_key("district_leader", chains[1]["district"])],
         completed=True)  # fmt: skip
    for n in range(6, 300):
        case = rng.randint(1, 4)
        role = rng.choice(ROLES)
        chain = chains[case]
        pool = [
            position_key(role, chain[LEVEL_OF_ROLE[role]]),
            position_key(r := rng.choice(ROLES), chain[LEVEL_OF_ROLE[r]]),
            person_key(rng.choice(PEOPLE)),
            person_key("nobody_here"),
            position_key("town_leadership", chain["town"]),
        ]
        if OWNERS[GRIDS[case - 1]]:
            pool.append(person_key(OWNERS[GRIDS[case - 1]]))
        told = rng.sample(pool, rng.randint(0, 3))
        item(n, case, role, told=told,
             assignee=rng.choice(PEOPLE) if rng.random() < 0.15 else None,
             excluded=rng.choice(PEOPLE) if rng.random() < 0.15 else None,
             supervised=rng.random() < 0.8, completed=rng.random() < 0.15,
             due=rng.choice(DUES))  # fmt: skip
    with engine.begin() as conn:
        conn.execute(work_item.insert(), items)
    return {"plain": 1, "excluded": 2, "assigned": 3, "town": 4, "closed": 5, "grid": grid}


def _lists(session, old: bool) -> dict:
    query = old_watch_items if old else (lambda s, v, n: _ids(watch_items(s, v, n)))
    found = {}
    for username in PEOPLE:
        viewer = _viewer(session, username)
        for limit in (3, 500):
            found[username, limit] = query(session, viewer, limit)
    for username, delegator in (("gl2", "gl1"), ("tl2", "tl1"), ("off1b", "off1")):
        found[username, delegator] = query(session, _covering(session, username, delegator), 500)
    session.rollback()
    return found


def _ids(items) -> list[int]:
    return [i.id for i in items]


def test_an_upgrade_from_0012_turns_the_texts_into_rows_and_keeps_every_list(
    new_database, engines, bundle, registry
):
    engine = engines(new_database())
    upgrade_schema(engine, "0012_households")
    sessions = make_sessionmaker(engine)
    with sessions() as session:  # every table but work_item is the same at 0012 and at head
        deploy(session, registry, bundle, "system", START)
        import_org(session, ORG_YAML, Passwords(cheap=True))
        session.commit()
        crafted = _fill_0012(engine, session)
        before = _lists(session, old=True)
    assert sum(len(ids) for ids in before.values()) > 100, "lists worth comparing"
    assert before["tl2", 500] != before["tl1", 500]

    assert upgrade_schema(engine).after == head_revision()
    assert _differences(engine) == []
    with sessions() as session:
        assert _lists(session, old=False) == before
        grid = crafted["grid"]
        assert _rows(session, crafted["plain"]) == {person_key("off1")}
        assert _rows(session, crafted["excluded"]) == {position_key("grid_leader", grid)}
        assert _rows(session, crafted["assigned"]) == {position_key("info_officer", grid)}
        assert len(_rows(session, crafted["town"])) == 1
        assert _rows(session, crafted["closed"]) == set()
        # Rows only for open supervised items, and each keyed in the item's order.
        watched = session.execute(
            select(WorkItemWatch.due_key, WorkItem.due_key, WorkItem.completed_at)
            .join(WorkItem, WorkItem.id == WorkItemWatch.item_id)
        ).all()  # fmt: skip
        assert watched and all(w == i and done is None for w, i, done in watched)

    with migration_connection(engine) as conn:  # and back: the texts again, the same lists
        command.downgrade(alembic_config(conn), "0012_households")
    with sessions() as session:
        assert _lists(session, old=True) == before
