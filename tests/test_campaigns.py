"""Campaigns (DESIGN §12, issue 13): a town leader's launch fans out one instance of the campaign
diagram per target grid, and nothing elsewhere; officers record one visit per household, a resend
is the same visit, coverage counts households; a late grid is supervised and escalates; a hazard
on the checklist opens a linked case owned by the officer; another grid's officer cannot see or
tick these households; the campaign closes when every grid is confirmed, or at its due time with
what is missing."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from conftest import ACCEPT_NORMAL, START
from sqlalchemy import func, select

from engine import campaigns
from engine.clock import iso
from engine.errors import Forbidden, Invalid, NotFound
from engine.events import chain_hash
from engine.models import Campaign, Case, CaseEvent, Visit, WorkItem
from engine.replay import replay

DUE = START + timedelta(days=10)
CHECKLIST = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "told": {"type": "boolean", "title": "已宣传"},
        "burning": {"type": "boolean", "title": "发现焚烧隐患", "x-opens-case": True},
        "note": {"type": "string", "title": "备注", "maxLength": 200},
    },
    "required": ["told"],
}


def launch(gl, targets=("V01",), by="tl1", **fields):
    body = {
        "title": "秸秆禁烧宣传",
        "instructions": "逐户宣传禁烧政策",
        "kind": "patrol",
        "targets": list(targets),
        "due_at": iso(DUE),
        "checklist": CHECKLIST,
        **fields,
    }
    return gl.runtime.launch_campaign(gl.session, gl.viewer(by), body)


def instances(gl, campaign) -> list[Case]:
    return list(
        gl.session.scalars(
            select(Case).where(Case.campaign_id == campaign.id, Case.process == "campaign")
        )
    )


def grid_of(gl, case) -> str:
    return gl.session.get(type(case.grid), case.grid_id).code


def visit(gl, campaign, who="off1", grid="V01-D1-G01", number=1, client_id=None, **data):
    body = {
        "household": {"grid": grid, "number": number},
        "data": {"told": True, **data},
        "client_id": client_id or f"{who}-{grid}-{number}",
    }
    return gl.runtime.record_visit(gl.session, gl.viewer(who), campaign.id, body)


def test_a_campaign_to_two_villages_makes_one_return_item_per_grid_and_none_elsewhere(gl):
    before = gl.session.scalar(select(func.count()).select_from(WorkItem))
    campaign = launch(gl, targets=("V01", "V02-D1-G02"))
    rows = instances(gl, campaign)
    assert sorted(grid_of(gl, c) for c in rows) == ["V01-D1-G01", "V01-D1-G02", "V02-D1-G02"]
    items = gl.session.scalars(select(WorkItem).order_by(WorkItem.id)).all()[before:]
    assert sorted((grid_of(gl, i.case), i.task, i.role) for i in items) == [
        ("V01-D1-G01", "campaign_return", "info_officer"),
        ("V01-D1-G02", "campaign_return", "info_officer"),
        ("V02-D1-G02", "campaign_return", "info_officer"),
    ]
    assert [i.task for i in gl.inbox("off3")] == []  # V02-D1-G01 was not a target
    assert [i.task for i in gl.inbox("off4")] == ["campaign_return"]
    assert all(i.due_at == DUE for i in items)
    # The campaign's own chain starts with its launch, naming every grid.
    event = gl.session.scalars(select(campaigns.CampaignEvent)).one()
    assert (event.type, event.seq) == ("launched", 1)
    assert campaign.number.startswith("XDK-2026-T")


def test_only_a_town_leader_launches_and_bad_launches_name_every_field(gl):
    with pytest.raises(Forbidden):
        launch(gl, by="vs1")
    with pytest.raises(Invalid) as err:
        launch(
            gl,
            targets=("V01", "NOPE"),
            kind="party",
            due_at="2020-01-01T00:00:00Z",
            checklist={"type": "object", "properties": {"n": {"type": "number"}}},
            title=" ",
        )
    assert set(err.value.fields) == {
        "title",
        "kind",
        "due_at",
        "targets[1]",
        "checklist.properties.n",
    }
    assert gl.session.scalar(select(func.count()).select_from(Campaign)) == 0


def test_coverage_counts_households_once_however_often_visited_and_a_resend_is_the_same_visit(gl):
    campaign = launch(gl, targets=("V01-D1-G01",))
    first, new = visit(gl, campaign, number=1, client_id="c-1")
    again, new_again = visit(gl, campaign, number=1, client_id="c-1")  # resent after a drop
    assert (new, new_again, again.id) == (True, False, first.id)
    visit(gl, campaign, who="off1b", number=1, client_id="c-2")  # a second visit, same house
    visit(gl, campaign, number=2, client_id="c-3")
    assert gl.session.scalar(select(func.count()).select_from(Visit)) == 3
    figures = campaigns.coverage(gl.session, gl.viewer("tl1"), campaign, None, START)
    assert (figures["households_total"], figures["households_covered"]) == (4, 2)
    assert (figures["grids_total"], figures["grids_returned"]) == (1, 0)
    [village] = figures["children"]
    assert (village["unit"]["code"], village["households_covered"]) == ("V01", 2)
    left = campaigns.unreached(gl.session, gl.viewer("gl1"), campaign, None, START)
    assert [(h["number"], h["visited"]) for h in left] == [(3, False), (4, False)]
    # A group drive (一户一代表) also lists the visited households not yet in the group chat.
    drive = launch(gl, targets=("V01-D1-G01",), kind="group_drive")
    visit(gl, drive, number=1, client_id="d-1")
    left = campaigns.unreached(gl.session, gl.viewer("gl1"), drive, None, START)
    assert [(h["number"], h["visited"]) for h in left] == [
        (1, True),
        (2, False),
        (3, False),
        (4, False),
    ]
    # Each visit is on its grid's chain.
    grid = instances(gl, campaign)[0]
    assert [e.type for e in gl.events(grid)].count("visited") == 3


def test_bad_checklist_data_is_refused_by_field_and_records_nothing(gl):
    campaign = launch(gl, targets=("V01-D1-G01",))
    body = {"household": {"grid": "V01-D1-G01", "number": 1}, "data": {"note": 5}, "client_id": "x"}
    with pytest.raises(Invalid) as err:
        gl.runtime.record_visit(gl.session, gl.viewer("off1"), campaign.id, body)
    assert err.value.fields == {"data.note": "must be of type string", "data.told": "required"}
    assert gl.session.scalar(select(func.count()).select_from(Visit)) == 0


def test_an_officer_of_another_grid_cannot_see_or_tick_these_households(gl):
    campaign = launch(gl, targets=("V01-D1-G01",))
    with pytest.raises(NotFound):  # off2 serves V01-D1-G02, not a target
        visit(gl, campaign, who="off2", grid="V01-D1-G01")
    with pytest.raises(NotFound):
        campaigns.visible(gl.session, gl.viewer("off3"), campaign.id)
    with pytest.raises(NotFound):  # a household number the grid does not have
        visit(gl, campaign, number=99)
    assert campaigns.unreached(gl.session, gl.viewer("off2"), campaign, None, START) == []


def test_a_hazard_on_the_checklist_opens_a_case_owned_by_that_officer_linked_both_ways(gl):
    campaign = launch(gl, targets=("V01-D1-G01",))
    found, _new = visit(gl, campaign, number=3, burning=True)
    case = gl.session.get(Case, found.case_id)
    assert (case.process, case.campaign_id, case.status) == ("case_loop", campaign.id, "accepting")
    [accept] = gl.items(case)
    assert (accept.task, accept.claimed_by) == ("accept", "off1")
    assert gl.events(case)[0].type == "opened"
    assert campaign.number in gl.events(case)[0].data
    case = gl.complete("off1", case, ACCEPT_NORMAL)
    assert case.owner == "off1"
    json_ = campaigns.visit_json(found, "V01-D1-G01", 3, case.number)
    assert json_["data"]["case"] == case.number


def test_a_late_grid_is_supervised_at_80_percent_and_escalates_at_its_due_time(gl):
    campaign = launch(gl, targets=("V01-D1-G01", "V01-D1-G02"))
    g1, g2 = sorted(instances(gl, campaign), key=lambda c: c.grid_id)
    gl.fire(START + timedelta(days=8))  # 80% of the ten days
    item = gl.item(gl.reload(g1))
    assert item.supervised_at is not None
    gl.complete("off2", gl.reload(g2), {"note": "done"})
    gl.complete("gl2", gl.reload(g2), {"confirmation": "confirmed"})
    gl.fire(DUE)
    types = [
        e["type"] for e in campaigns.events_of(gl.session, gl.session.get(Campaign, campaign.id))
    ]
    # G01 and G02 supervised at 80%; G02 returns after it, so its confirmation is past its 80%
    # at once; at the due time G01 escalates and the campaign closes without it.
    assert types == [
        "launched",
        "supervised",
        "supervised",
        "returned",
        "supervised",
        "confirmed",
        "escalated",
        "closed",
    ]
    closed = campaigns.events_of(gl.session, gl.session.get(Campaign, campaign.id))[-1]
    assert closed["data"]["missing"] == ["V01-D1-G01"]
    # The district leader is told of the late grid, as of a late handle item.
    assert "district_leader@V01-D1" in gl.last(gl.reload(g1), "supervised").data
    states = campaigns.grid_states(
        gl.session, gl.viewer("tl1"), gl.session.get(Campaign, campaign.id), DUE
    )
    assert [(s.code, s.late, s.returned, s.supervised) for s in states] == [
        ("V01-D1-G01", True, False, True),
        ("V01-D1-G02", False, True, True),
    ]


def test_the_campaign_closes_when_every_grid_is_confirmed_and_its_chain_verifies(gl):
    campaign = launch(gl, targets=("V01-D1-G01",))
    [grid] = instances(gl, campaign)
    visit(gl, campaign, number=1)
    gl.complete("off1", grid, {"note": "all told"})
    gl.complete("gl1", gl.reload(grid), {"confirmation": "confirmed"})
    row = gl.session.get(Campaign, campaign.id)
    gl.session.refresh(row)
    assert row.status == "closed"
    events = campaigns.events_of(gl.session, row)
    assert [e["type"] for e in events] == ["launched", "returned", "confirmed", "closed"]
    assert events[-1]["data"] == {"missing": [], "households_total": 4, "households_covered": 1}
    head = "0" * 64
    for event in events:
        stored = event.pop("hash")
        head = chain_hash(head, event)
        assert head == stored
    # The grid's own chain replays from its events like a case's.
    assert replay(gl.session, gl.reload(grid), gl.runtime.registry).ok
    assert gl.session.scalar(select(func.count()).select_from(CaseEvent)) > 0


@pytest.mark.parametrize(
    "checklist, field",
    [
        (  # a $ref the validator would fetch from the network on every visit
            {"type": "object", "properties": {"a": {"type": "boolean", "$ref": "http://x/"}}},
            "checklist.properties.a",
        ),
        (  # a regular expression that can take a worker for ever
            {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a|a)*$"}}},
            "checklist.properties.a",
        ),
        ({"type": "object", "$defs": {}, "properties": {"a": {"type": "boolean"}}}, "checklist"),
        ({"type": "object", "properties": {"a": {"type": "boolean"}}, "x": 1.5}, "checklist"),
    ],
)
def test_a_checklist_may_use_only_the_words_a_checklist_needs(gl, checklist, field):
    with pytest.raises(Invalid) as err:
        launch(gl, checklist=checklist)
    assert field in err.value.fields
    assert gl.session.scalar(select(func.count()).select_from(Campaign)) == 0


def test_a_visit_answers_the_checklist_and_nothing_else_and_only_walkers_record_visits(gl):
    loose = {"type": "object", "properties": {"told": {"type": "boolean"}}}
    campaign = launch(gl, targets=("V01-D1-G01",), checklist=loose)
    with pytest.raises(Invalid) as err:  # a float would break the chain: refused as a field
        visit(gl, campaign, extra=0.5)
    assert err.value.fields == {"data.extra": "unknown field"}
    with pytest.raises(Forbidden):  # a town leader sees the campaign but walks no grid
        gl.runtime.record_visit(gl.session, gl.viewer("tl1"), campaign.id, {"bad": 1})
    assert gl.session.scalar(select(func.count()).select_from(Visit)) == 0


def test_an_organisation_import_keeps_a_household_a_visit_names(gl):
    from conftest import ORG_YAML

    from engine.models import Household, Unit
    from engine.org import import_org
    from engine.passwords import Passwords

    campaign = launch(gl, targets=("V01-D1-G01",))
    visit(gl, campaign, number=4)
    fewer = ORG_YAML.replace("households: 4", "households: 2")
    import_org(gl.session, fewer, Passwords(cheap=True))
    gl.session.commit()
    grid = gl.session.scalars(select(Unit).where(Unit.code == "V01-D1-G01")).one()
    numbers = gl.session.scalars(
        select(Household.number).where(Household.grid_id == grid.id).order_by(Household.number)
    ).all()
    assert numbers == [1, 2, 4]  # 3 went with the file; 4 stays for its visit
    assert grid.households == 3  # the grid's count is its rows, the kept one included
    # So importing what the organisation exports now changes nothing (a CLI sweep found the
    # count going 2 -> 3 on that second import).
    from engine.org_xlsx import export_file

    exported = export_file(gl.session, "yaml").decode()
    report = import_org(gl.session, exported, Passwords(cheap=True))
    gl.session.commit()
    assert report.units_updated == report.households_added == report.households_removed == 0


def test_the_campaign_chain_is_in_the_daily_digest_and_a_rewrite_of_it_is_caught(gl):
    from sqlalchemy import update

    from engine import digests
    from engine.models import CampaignEvent

    campaign = launch(gl, targets=("V01-D1-G01",))
    digest = digests.make(gl.session, START, "aud")
    gl.session.commit()
    heads = {number: (seq, head) for number, seq, head in json.loads(digest.heads)}
    assert heads[campaign.number][0] == 1  # its `launched` event
    assert [n for n in heads if n.startswith(campaign.number + "-")]  # and its grid's chain
    assert digests.verify_all(gl.session).ok
    # Someone rewrites the launch's targets and recomputes the hash: the digest still catches it.
    event = gl.session.scalars(select(CampaignEvent)).one()
    data = json.loads(event.data)
    data["targets"] = ["V02"]
    forged = {**campaigns.events_of(gl.session, campaign)[0], "data": data}
    forged.pop("hash")
    gl.session.execute(
        update(CampaignEvent)
        .where(CampaignEvent.id == event.id)
        .values(data=json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")),
                hash=chain_hash("0" * 64, forged))
    )  # fmt: skip
    gl.session.commit()
    report = digests.verify_all(gl.session)
    assert [(p.case, p.seq, p.reason) for p in report.problems] == [
        (campaign.number, 1, "does not match digest 1")
    ]


@pytest.mark.parametrize(
    "due, message",
    [
        ("9999-12-31T23:59:59-01:00", "must be an ISO 8601 time with its offset"),
        ("2030-01-01T00:00:00+08:00", "must be within a year"),
        ("2026-12-01T00:00:00", "must be an ISO 8601 time with its offset"),
    ],
)
def test_a_due_time_out_of_range_is_a_field_problem_not_a_crash(gl, due, message):
    with pytest.raises(Invalid) as err:
        launch(gl, due_at=due)
    assert err.value.fields == {"due_at": message}


def test_coverage_of_another_town_is_not_found(gl, session):
    from engine.models import Unit

    campaign = launch(gl, targets=("V01-D1-G01",))
    other = Unit(code="ZZ", name="别镇", level="town", households=0, settings={})
    session.add(other)
    session.commit()
    with pytest.raises(NotFound):
        campaigns.coverage(gl.session, gl.viewer("aud"), campaign, "ZZ", START)


def test_a_group_drive_asks_about_the_group_chat_and_a_yes_marks_the_household(gl):
    from engine.models import Household

    drive = launch(gl, targets=("V01-D1-G01",), kind="group_drive")
    assert drive.checklist["properties"]["in_group"]["x-in-group"] is True
    visit(gl, drive, number=2, in_group=True)
    visit(gl, drive, number=3, in_group=False)
    joined = gl.session.scalars(
        select(Household.number).where(Household.in_group.is_(True)).order_by(Household.number)
    ).all()
    assert joined == [2]
    left = campaigns.unreached(gl.session, gl.viewer("gl1"), drive, None, START)
    assert [(h["number"], h["visited"]) for h in left] == [(1, False), (3, True), (4, False)]


def test_a_delegate_walks_the_grid_of_the_grid_leader_they_stand_in_for(gl):
    from engine.access import viewer_of
    from engine.models import Delegation, Person

    campaign = launch(gl, targets=("V01-D1-G01",))
    body = {"household": {"grid": "V01-D1-G01", "number": 1}, "data": {"told": True}}
    dl1 = gl.session.scalars(select(Person).where(Person.username == "dl1")).one()
    with pytest.raises(Forbidden):  # a district leader walks no grid of their own
        gl.runtime.record_visit(gl.session, viewer_of(gl.session, dl1, START), campaign.id,
                                {**body, "client_id": "d-0"})  # fmt: skip
    gl.session.add(
        Delegation(delegator="gl1", delegate="dl1", starts_at=START - timedelta(hours=1),
                   ends_at=START + timedelta(days=2), created_at=START)
    )  # fmt: skip
    gl.session.commit()
    standing_in = viewer_of(gl.session, dl1, START)
    made, new = gl.runtime.record_visit(
        gl.session, standing_in, campaign.id, {**body, "client_id": "d-1"}
    )
    assert (new, made.recorded_by) == (True, "dl1")
    [grid] = instances(gl, campaign)
    event = gl.last(gl.reload(grid), "visited")
    assert (event.actor, json.loads(event.data)["on_behalf_of"]) == ("dl1", "gl1")


def test_the_campaign_list_pages_and_sums_each_campaigns_households_in_grouped_reads(gl):
    first = launch(gl, targets=("V01-D1-G01",))
    second = launch(gl, targets=("V01",))
    visit(gl, first, number=1)
    visit(gl, second, number=2, client_id="s-1")
    visit(gl, second, who="off2", grid="V01-D1-G02", number=1, client_id="s-2")
    leader = gl.viewer("tl1")
    assert [c.id for c in campaigns.listed(gl.session, leader, limit=1)] == [second.id]
    assert [c.id for c in campaigns.listed(gl.session, leader, before=second.id)] == [first.id]
    both = campaigns.listed(gl.session, leader)
    assert campaigns.progress(gl.session, leader, both) == {first.id: (1, 4), second.id: (2, 7)}
    # An officer of V01-D1-G02 sums only their own grid of the second campaign.
    mine = campaigns.listed(gl.session, gl.viewer("off2"))
    assert campaigns.progress(gl.session, gl.viewer("off2"), mine) == {second.id: (1, 3)}


def test_a_town_code_too_long_for_case_and_campaign_numbers_is_a_problem_of_the_file(gl):
    from conftest import ORG_YAML

    from engine.org import OrgFileError, import_org
    from engine.passwords import Passwords

    long_code = "X" * 17
    with pytest.raises(OrgFileError) as err:
        import_org(
            gl.session, ORG_YAML.replace("code: XDK", f"code: {long_code}"), Passwords(cheap=True)
        )
    assert "is longer than 16 characters" in str(err.value)


def test_a_household_a_visit_names_cannot_be_removed(gl):
    from engine import households
    from engine.errors import Conflict

    households.add_household(gl.session, gl.viewer("off1"), "V01-D1-G01", number=5, head="钱五")
    gl.session.commit()
    campaign = launch(gl, targets=("V01-D1-G01",))
    visit(gl, campaign, number=5)
    with pytest.raises(Conflict, match="proof of coverage"):
        households.remove_household(gl.session, gl.viewer("off1"), "V01-D1-G01", 5)
