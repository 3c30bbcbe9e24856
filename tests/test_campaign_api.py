"""Campaigns over the JSON API (DESIGN §12; webapp/campaign_api.py), through HTTP with bearer
tokens: a town leader's launch to two villages gives one return item per target grid and none
elsewhere, seen in the officers' /inbox with `case: null` and `campaign: {id, title}`; a visit is
201, its resend 200 with the same visit, and coverage counts households once; bad launches and bad
checklist data are 400 per field; another grid's officer and people outside the campaign's units
get 404; a hazard on the checklist opens a case whose JSON names the campaign; completing both
grid items through /work-items/{id}/complete closes the campaign, whose chain recomputes from the
events answer alone.

The organisation is conftest's: V01 (grids G01 with off1, off1b, gl1 and 4 households; G02 with
off2, gl2), V02 (grids G01 with off3, gl3; G02 with off4, gl4), town leader tl1, auditor aud.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from apps import bearer
from test_campaigns import CHECKLIST, DUE

from engine.clock import iso

API = "/api/v1"
G01 = "V01-D1-G01"
ACCEPT = {"valid": True, "category": "resident_request", "severity": "normal"}


@pytest.fixture
def client(make_app):
    return make_app().test_client()


@pytest.fixture
def as_(client):
    """as_(username) -> bearer headers, one token per person for the test."""
    tokens: dict[str, dict] = {}

    def headers(username: str) -> dict:
        if username not in tokens:
            tokens[username] = bearer(client, username)
        return tokens[username]

    return headers


def launch(client, as_, targets=("V01",), by="tl1", **fields):
    body = {
        "title": "秸秆禁烧宣传",
        "instructions": "逐户宣传禁烧政策",
        "kind": "patrol",
        "targets": list(targets) if isinstance(targets, tuple) else targets,
        "due_at": iso(DUE),
        "checklist": CHECKLIST,
        **fields,
    }
    return client.post(f"{API}/campaigns", json=body, headers=as_(by))


def launched(client, as_, targets=("V01",), **fields) -> dict:
    response = launch(client, as_, targets, **fields)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def visit(client, as_, campaign, who="off1", grid=G01, number=1, client_id=None, **data):
    body = {
        "household": {"grid": grid, "number": number},
        "data": {"told": True, **data},
        "client_id": client_id or f"{who}-{grid}-{number}",
    }
    return client.post(f"{API}/campaigns/{campaign['id']}/visits", json=body, headers=as_(who))


def inbox(client, as_, who) -> list[dict]:
    response = client.get(f"{API}/inbox", headers=as_(who))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def campaign_items(client, as_, who) -> list[dict]:
    return [i for i in inbox(client, as_, who) if i["task"].startswith("campaign_")]


def error_fields(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.get_json())
    return response.get_json()["error"].get("fields") or {}


# ------------------------------------------------------------------ launching and the inbox


def test_a_launch_to_two_villages_puts_one_return_item_in_each_target_grid_and_none_elsewhere(
    client, as_
):
    campaign = launched(client, as_, targets=("V01", "V02"))
    assert campaign["status"] == "open"
    assert campaign["number"].startswith("XDK-2026-T")
    assert [g["code"] for g in campaign["grids"]] == [
        "V01-D1-G01",
        "V01-D1-G02",
        "V02-D1-G01",
        "V02-D1-G02",
    ]
    assert campaign["households_total"] == 4 + 3 + 3 + 3
    for officer, grid in (("off1", G01), ("off2", "V01-D1-G02"), ("off3", "V02-D1-G01")):
        [item] = campaign_items(client, as_, officer)
        assert item["task"] == "campaign_return"
        assert item["unit"]["code"] == grid
        assert item["case"] is None  # DESIGN §12: a campaign's item names no case
        assert item["campaign"] == {"id": campaign["id"], "title": "秸秆禁烧宣传"}
        assert item["due_at"] == iso(DUE)
    # Grid leaders confirm only after the return; a second campaign to V01 alone leaves V02 be.
    assert campaign_items(client, as_, "gl1") == []
    second = launched(client, as_, targets=("V01-D1-G02",))
    assert len(campaign_items(client, as_, "off2")) == 2
    assert len(campaign_items(client, as_, "off1")) == 1
    assert len(campaign_items(client, as_, "off4")) == 1
    # A case's item keeps its case and has no campaign key.
    opened = client.post(
        f"{API}/cases", json={"title": "路灯坏了", "grid": G01}, headers=as_("off1")
    ).get_json()
    [case_item] = [i for i in inbox(client, as_, "off1") if i["task"] == "accept"]
    assert case_item["case"]["number"] == opened["number"]
    assert "campaign" not in case_item
    assert opened["campaign"] is None
    # Listed for the units the caller covers, newest first.
    listed = client.get(f"{API}/campaigns", headers=as_("off2")).get_json()["items"]
    assert [c["id"] for c in listed] == [second["id"], campaign["id"]]
    assert [g["code"] for g in listed[1]["grids"]] == ["V01-D1-G02"]  # only off2's grid
    listed = client.get(f"{API}/campaigns", headers=as_("off3")).get_json()["items"]
    assert [c["id"] for c in listed] == [campaign["id"]]
    one = client.get(f"{API}/campaigns/{campaign['id']}", headers=as_("dl1")).get_json()
    assert [g["code"] for g in one["grids"]] == ["V01-D1-G01", "V01-D1-G02"]


def test_only_town_leaders_launch_before_the_body_is_read_and_bad_launches_name_every_field(
    client, as_
):
    for who in ("vs1", "off1"):
        response = client.post(f"{API}/campaigns", data="not json", headers=as_(who))
        assert response.status_code == 403, who
        assert launch(client, as_, by=who).status_code == 403
    assert launch(client, as_, by="aud").get_json()["error"]["code"] == "forbidden"
    fields = error_fields(
        launch(
            client,
            as_,
            targets=("V01", "NOPE"),
            kind="party",
            due_at="2020-01-01T00:00:00Z",
            checklist={"type": "object", "properties": {"n": {"type": "number"}}},
            title=" ",
        ),
        400,
    )
    assert set(fields) == {"title", "kind", "due_at", "targets[1]", "checklist.properties.n"}
    assert error_fields(launch(client, as_, targets="V01", due_at="soon"), 400).keys() == {
        "targets",
        "due_at",
    }
    response = client.post(f"{API}/campaigns", json=[1], headers=as_("tl1"))
    assert set(error_fields(response, 400)) == {"body"}
    assert client.get(f"{API}/campaigns", headers=as_("tl1")).get_json()["items"] == []


# ------------------------------------------------------------------ visits and coverage


def test_a_resent_visit_is_the_same_visit_and_coverage_counts_households_once(client, as_):
    campaign = launched(client, as_, targets=(G01,))
    first = visit(client, as_, campaign, number=1, client_id="c-1")
    assert first.status_code == 201, first.get_json()
    again = visit(client, as_, campaign, number=1, client_id="c-1", note="resent")
    assert again.status_code == 200
    assert again.get_json() == first.get_json()
    body = first.get_json()
    assert body["household"] == {"grid": G01, "number": 1}
    assert (body["recorded_by"], body["client_id"], body["case"]) == ("off1", "c-1", None)
    assert body["data"] == {"told": True}
    # Another officer of the grid visits the same household again, and a second household.
    assert visit(client, as_, campaign, who="off1b", number=1, client_id="c-2").status_code == 201
    assert visit(client, as_, campaign, number=2, client_id="c-3").status_code == 201
    url = f"{API}/campaigns/{campaign['id']}/coverage"
    figures = client.get(url, headers=as_("tl1")).get_json()
    assert (figures["households_total"], figures["households_covered"]) == (4, 2)
    assert (figures["grids_total"], figures["grids_returned"], figures["late"]) == (1, 0, [])
    assert [(c["unit"]["code"], c["households_covered"]) for c in figures["children"]] == [
        ("V01", 2)
    ]
    assert "unreached" not in figures
    district = client.get(
        url, query_string={"unit": "V01-D1", "households": "1"}, headers=as_("dl1")
    ).get_json()
    assert [(c["unit"]["code"], c["households_covered"]) for c in district["children"]] == [
        (G01, 2)
    ]
    # A patrol's households still to reach are the unvisited ones.
    assert [(h["grid"], h["number"], h["visited"]) for h in district["unreached"]] == [
        (G01, 3, False),
        (G01, 4, False),
    ]
    assert district["unreached_more"] is False
    assert (
        client.get(f"{API}/campaigns/{campaign['id']}", headers=as_("gl1")).get_json()[
            "households_covered"
        ]
        == 2
    )
    # A group drive (一户一代表) also lists the visited households not yet in the group chat.
    drive = launched(client, as_, targets=(G01,), kind="group_drive")
    assert visit(client, as_, drive, number=2).status_code == 201
    left = client.get(
        f"{API}/campaigns/{drive['id']}/coverage?households=1", headers=as_("off1")
    ).get_json()["unreached"]
    assert [(h["number"], h["visited"], h["in_group"]) for h in left] == [
        (1, False, False),
        (2, True, False),
        (3, False, False),
        (4, False, False),
    ]
    # A unit outside the caller's units is 404; a bad query is 400 by field.
    assert client.get(url, query_string={"unit": "V02"}, headers=as_("dl1")).status_code == 404
    assert client.get(url, query_string={"unit": "NOPE"}, headers=as_("tl1")).status_code == 404
    response = client.get(url, query_string={"households": "maybe"}, headers=as_("tl1"))
    assert set(error_fields(response, 400)) == {"households"}


def test_bad_checklist_data_and_bad_visits_are_400_by_field_and_record_nothing(client, as_):
    campaign = launched(client, as_, targets=(G01,))
    url = f"{API}/campaigns/{campaign['id']}/visits"
    body = {"household": {"grid": G01, "number": 1}, "data": {"note": 5}, "client_id": "x"}
    response = client.post(url, json=body, headers=as_("off1"))
    assert error_fields(response, 400) == {
        "data.note": "must be of type string",
        "data.told": "required",
    }
    response = client.post(url, json={"household": "1"}, headers=as_("off1"))
    assert set(error_fields(response, 400)) == {"client_id", "household"}
    response = client.post(url, json=["x"], headers=as_("off1"))
    assert set(error_fields(response, 400)) == {"body"}
    figures = client.get(f"{API}/campaigns/{campaign['id']}", headers=as_("off1")).get_json()
    assert figures["households_covered"] == 0
    assert visit(client, as_, campaign, client_id="x").status_code == 201  # the id is still free


def test_another_grids_officer_and_people_outside_the_campaign_get_404(client, as_):
    campaign = launched(client, as_, targets=(G01,))
    cid = campaign["id"]
    # off2 serves V01-D1-G02, which is not a target: the campaign is not theirs at all.
    assert visit(client, as_, campaign, who="off2").status_code == 404
    # off3 is in another village: the campaign does not exist for them.
    for path in ("", "/events", "/coverage"):
        assert client.get(f"{API}/campaigns/{cid}{path}", headers=as_("off3")).status_code == 404
    assert visit(client, as_, campaign, who="off3").status_code == 404
    assert client.get(f"{API}/campaigns", headers=as_("off3")).get_json()["items"] == []
    # A household number the grid does not have, and a campaign that does not exist.
    assert visit(client, as_, campaign, number=99).status_code == 404
    assert client.get(f"{API}/campaigns/999", headers=as_("tl1")).status_code == 404
    missing = client.post(
        f"{API}/campaigns/999/visits",
        json={"household": {"grid": G01, "number": 1}, "data": {"told": True}, "client_id": "z"},
        headers=as_("off1"),
    )
    assert missing.status_code == 404
    # The district leader sees the campaign and its households but records no visits: 403
    # (DESIGN §4: what the caller may see but not do), whatever the body.
    assert client.get(f"{API}/campaigns/{cid}", headers=as_("dl1")).status_code == 200
    assert visit(client, as_, campaign, who="dl1").status_code == 403
    assert (
        client.post(f"{API}/campaigns/{cid}/visits", json={}, headers=as_("dl1")).status_code == 403
    )
    # A household named with the wrong types is a 400 naming the field, not a missing household.
    for household, field in (
        ({"grid": None, "number": 1}, "household.grid"),
        ({"grid": G01, "number": "1"}, "household.number"),
        ({"grid": G01, "number": True}, "household.number"),
    ):
        body = {"household": household, "data": {"told": True}, "client_id": "t"}
        response = client.post(f"{API}/campaigns/{cid}/visits", json=body, headers=as_("off1"))
        assert set(error_fields(response, 400)) == {field}
    # The auditor reads every campaign and records nothing.
    assert client.get(f"{API}/campaigns/{cid}", headers=as_("aud")).status_code == 200
    assert visit(client, as_, campaign, who="aud").status_code == 403


def test_a_hazard_on_a_visit_opens_a_case_whose_json_names_the_campaign(client, as_):
    campaign = launched(client, as_, targets=(G01,))
    found = visit(client, as_, campaign, number=3, burning=True)
    assert found.status_code == 201, found.get_json()
    number = found.get_json()["case"]
    assert number and found.get_json()["data"]["case"] == number
    case = client.get(f"{API}/cases/{number}", headers=as_("off1")).get_json()
    assert case["campaign"] == {"id": campaign["id"], "title": "秸秆禁烧宣传"}
    assert case["status"] == "accepting"
    [accept] = [i for i in inbox(client, as_, "off1") if i["task"] == "accept"]
    assert (accept["case"]["number"], accept["claimed_by"]) == (number, "off1")
    done = client.post(
        f"{API}/work-items/{accept['id']}/complete", json={"data": ACCEPT}, headers=as_("off1")
    )
    assert done.status_code == 200, done.get_json()
    assert (done.get_json()["owner"], done.get_json()["campaign"]["id"]) == ("off1", campaign["id"])


# ------------------------------------------------------------------ closing and the chain


def canonical(event: dict) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_completing_both_items_through_the_api_closes_the_campaign_and_its_chain_recomputes(
    client, as_
):
    campaign = launched(client, as_, targets=(G01,))
    url = f"{API}/campaigns/{campaign['id']}"
    assert visit(client, as_, campaign, number=1).status_code == 201
    [item] = campaign_items(client, as_, "off1")
    # The return's form is checked like a case's: a note that is not text is 400, nothing moves.
    bad = client.post(
        f"{API}/work-items/{item['id']}/complete", json={"data": {"note": 5}}, headers=as_("off1")
    )
    assert set(error_fields(bad, 400)) == {"note"}
    done = client.post(
        f"{API}/work-items/{item['id']}/complete",
        json={"data": {"note": "全部宣传到户"}},
        headers=as_("off1"),
    )
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["campaign"] == {"id": campaign["id"], "title": "秸秆禁烧宣传"}
    assert campaign_items(client, as_, "off1") == []
    [confirm] = campaign_items(client, as_, "gl1")
    assert (confirm["task"], confirm["case"], confirm["campaign"]["id"]) == (
        "campaign_confirm",
        None,
        campaign["id"],
    )
    assert client.get(url, headers=as_("tl1")).get_json()["status"] == "open"
    done = client.post(
        f"{API}/work-items/{confirm['id']}/complete",
        json={"data": {"confirmation": "confirmed"}},
        headers=as_("gl1"),
    )
    assert done.status_code == 200, done.get_json()
    closed = client.get(url, headers=as_("tl1")).get_json()
    assert closed["status"] == "closed" and closed["closed_at"] is not None
    assert [(g["code"], g["returned"], g["late"]) for g in closed["grids"]] == [(G01, True, False)]
    figures = client.get(f"{url}/coverage", headers=as_("tl1")).get_json()
    assert (figures["grids_total"], figures["grids_returned"]) == (1, 1)

    answer = client.get(f"{url}/events", headers=as_("off1")).get_json()
    events = answer["events"]
    assert [e["type"] for e in events] == ["launched", "returned", "confirmed", "closed"]
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert {e["case"] for e in events} == {campaign["number"]}
    assert events[-1]["data"] == {"missing": [], "households_total": 4, "households_covered": 1}
    # Anyone recomputes the chain from the answer alone: sha256(prev + "\n" + canonical).
    prev = "0" * 64
    for event in events:
        fields = {k: v for k, v in event.items() if k != "hash"}
        assert set(fields) == {"case", "seq", "at", "type", "actor", "task", "data", "diagram"}
        prev = hashlib.sha256((prev + "\n" + canonical(fields)).encode()).hexdigest()
        assert prev == event["hash"], event["seq"]
    assert answer["head"] == prev
    # A changed event no longer recomputes to its hash.
    tampered = {k: v for k, v in events[1].items() if k != "hash"} | {"actor": "someone"}
    recomputed = hashlib.sha256((events[0]["hash"] + "\n" + canonical(tampered)).encode())
    assert recomputed.hexdigest() != events[1]["hash"]


def test_a_grids_people_read_the_campaigns_own_events_and_their_grids_not_another_grids(
    client, as_
):
    """Two grids of V01-D1 return: each grid's officer reads the launch and their own grid's
    return, not the other grid's (who returned it, and when, is outside their units); the
    district leader, the town leader and the auditor read both."""
    campaign = launched(client, as_, targets=("V01-D1",))
    url = f"{API}/campaigns/{campaign['id']}"
    for who in ("off1", "off2"):
        [item] = campaign_items(client, as_, who)
        done = client.post(
            f"{API}/work-items/{item['id']}/complete", json={"data": {}}, headers=as_(who)
        )
        assert done.status_code == 200, done.get_json()

    def read(who):
        answer = client.get(f"{url}/events", headers=as_(who)).get_json()
        return answer, [(e["type"], e["data"].get("grid"), e["actor"]) for e in answer["events"]]

    whole, everything = read("tl1")
    assert everything == [
        ("launched", None, "tl1"),
        ("returned", G01, "off1"),
        ("returned", "V01-D1-G02", "off2"),
    ]
    for who in ("dl1", "aud"):
        assert read(who) == (whole, everything)
    answer, seen = read("off1")
    assert seen == [("launched", None, "tl1"), ("returned", G01, "off1")]
    assert answer["head"] == whole["head"] == whole["events"][-1]["hash"]
    assert read("off2")[1] == [("launched", None, "tl1"), ("returned", "V01-D1-G02", "off2")]


def test_the_openapi_document_lists_the_campaign_calls(client):
    paths = client.get(f"{API}/openapi.json").get_json()["paths"]
    assert set(paths["/campaigns"]) == {"get", "post"}
    assert set(paths["/campaigns/{campaign_id}"]) == {"get"}
    assert set(paths["/campaigns/{campaign_id}/visits"]) == {"post"}
    assert set(paths["/campaigns/{campaign_id}/events"]) == {"get"}
    coverage = paths["/campaigns/{campaign_id}/coverage"]["get"]
    assert {p["name"] for p in coverage["parameters"]} == {"campaign_id", "unit", "households"}


def test_the_campaign_list_comes_a_page_at_a_time(client, as_, monkeypatch):
    from webapp import campaign_api

    monkeypatch.setattr(campaign_api, "PAGE", 1)
    older = launched(client, as_, targets=(G01,))
    newer = launched(client, as_, targets=(G01,))
    first = client.get(f"{API}/campaigns", headers=as_("tl1")).get_json()
    assert [c["id"] for c in first["items"]] == [newer["id"]]
    url = f"{API}/campaigns?cursor={first['next_cursor']}"
    second = client.get(url, headers=as_("tl1")).get_json()
    assert ([c["id"] for c in second["items"]], second["next_cursor"]) == ([older["id"]], None)
    assert error_fields(client.get(f"{API}/campaigns?cursor=x", headers=as_("tl1")), 400)
