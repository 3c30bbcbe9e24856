"""The bundle owns the process's words (DESIGN §1): a bundle with an extra category, deployed with
`gridloop diagrams deploy DIR` from a folder of its own, is usable at once by the API, the forms
and the pages, labelled in both languages and routed by its DMN rows, with no code change; a case
opened before the deploy keeps its version's categories.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime

import pytest
from apps import bearer, build_app, dispose_app
from click.testing import CliRunner
from conftest import ORG_YAML, REPO

from engine.clock import FixedClock
from webapp.cli import main

LANDSLIDE = ("landslide", "山体滑坡", "Landslide")
RULE = """      <rule id="dispatch_tier_landslide">
        <description>山体滑坡由村党组织书记办理</description>
        <inputEntry id="dispatch_tier_landslide_i0"><text>"landslide"</text></inputEntry>
        <inputEntry id="dispatch_tier_landslide_i1"><text>-</text></inputEntry>
        <outputEntry id="dispatch_tier_landslide_o0"><text>"village_secretary"</text></outputEntry>
      </rule>
"""


def flood_season_bundle(folder):
    """The repository's bundle, copied, with one more category and a DMN row for it."""
    for part in ("workflows", "rules"):
        shutil.copytree(REPO / part, folder / part)
    form_path = folder / "workflows/bpmn/forms/accept.schema.json"
    form = json.loads(form_path.read_text(encoding="utf-8"))
    category = form["properties"]["category"]
    for key, value in zip(("enum", "x-enumTitles", "x-enumTitles-en"), LANDSLIDE, strict=True):
        category[key].append(value)
    form_path.write_text(json.dumps(form, ensure_ascii=False, indent=2), encoding="utf-8")
    table = folder / "rules/dispatch_tier.dmn"
    text = table.read_text(encoding="utf-8")
    first = text.index('      <rule id="dispatch_tier_r0">')
    table.write_text(text[:first] + RULE + text[first:], encoding="utf-8")
    return folder


@pytest.fixture
def town(tmp_path, monkeypatch):
    database = tmp_path / "words.sqlite"
    app = build_app(database, ORG_YAML, FixedClock(datetime(2026, 11, 23, 2, 0, tzinfo=UTC)))
    monkeypatch.setenv("GRIDLOOP_DATABASE_URL", app.config["SQLALCHEMY_DATABASE_URI"])
    monkeypatch.setenv("GRIDLOOP_CHEAP_PASSWORDS", "1")
    app.bundle_dir = flood_season_bundle(tmp_path / "bundle")
    yield app
    dispose_app(app)


def open_case(client, headers, **body) -> dict:
    answer = client.post(
        "/api/v1/cases", json={"title": "后山裂缝", "grid": "V01-D1-G01", **body}, headers=headers
    )
    return answer


def accept_item(client, headers, number: str) -> int:
    items = client.get("/api/v1/inbox", headers=headers).json["items"]
    return next(i["id"] for i in items if i["case"]["number"] == number and i["task"] == "accept")


def test_a_deployed_category_is_usable_everywhere_and_old_cases_keep_theirs(town):
    client = town.test_client()
    officer = bearer(client, "off1")
    refused = open_case(client, officer, category="landslide")
    assert refused.status_code == 400 and "category" in refused.json["error"]["fields"]
    before = open_case(client, officer, category="dispute").json["number"]

    deployed = CliRunner().invoke(main, ["diagrams", "deploy", str(town.bundle_dir)])
    assert deployed.exit_code == 0 and "deployed" in deployed.output, deployed.output

    opened = open_case(client, officer, category="landslide", severity="normal")
    assert opened.status_code == 201, opened.json
    number = opened.json["number"]
    item = accept_item(client, officer, number)
    form = client.get("/api/v1/inbox", headers=officer).json["items"]
    form = next(i["form"] for i in form if i["id"] == item)
    assert "landslide" in form["properties"]["category"]["enum"]
    data = {"valid": True, "category": "landslide", "severity": "normal"}
    done = client.post(f"/api/v1/work-items/{item}/complete", json={"data": data}, headers=officer)
    assert done.status_code == 200 and done.json["tier"] == "village_secretary"  # its DMN row
    assert client.get("/api/v1/inbox?category=landslide", headers=bearer(client, "vs1")).json[
        "items"
    ]

    # The case opened before the deploy runs on its own version, which has no landslide.
    old_item = accept_item(client, officer, before)
    old = client.post(
        f"/api/v1/work-items/{old_item}/complete", json={"data": data}, headers=officer
    )
    assert old.status_code == 400 and "category" in old.json["error"]["fields"]

    page = town.test_client()
    page.post("/login", data={"username": "off1", "password": "pw"})
    assert '<option value="landslide">山体滑坡</option>' in page.get("/cases/new").get_data(
        as_text=True
    )
    assert "山体滑坡" in page.get(f"/cases/{number}").get_data(as_text=True)
    page.get("/lang/en")
    assert "Landslide" in page.get(f"/cases/{number}").get_data(as_text=True)


def test_init_db_never_puts_the_repository_bundle_over_an_administrators(town):
    runner = CliRunner()
    assert runner.invoke(main, ["diagrams", "deploy", str(town.bundle_dir)]).exit_code == 0
    again = runner.invoke(main, ["init-db"])
    assert again.exit_code == 0 and "was not deployed over it" in again.output, again.output
    client = town.test_client()
    landslide = open_case(client, bearer(client, "off1"), category="landslide")
    assert landslide.status_code == 201  # the administrator's version is still live


def test_the_diagram_says_which_status_each_task_puts_a_case_in(town):
    """The `status` property of a user task is the case's status while it is open; a bundle
    whose task lacks one is refused naming the task, and the live version stays live."""
    diagram = town.bundle_dir / "workflows/bpmn/case_loop.bpmn"
    text = diagram.read_text(encoding="utf-8")
    marker = '<spiffworkflow:property name="status" value="feedback" />'
    assert text.count(marker) == 1
    diagram.write_text(text.replace(marker, ""), encoding="utf-8")
    refused = CliRunner().invoke(main, ["diagrams", "deploy", str(town.bundle_dir)])
    assert refused.exit_code != 0
    assert "'status'" in refused.output and "feedback" in refused.output, refused.output
    client = town.test_client()
    still = open_case(client, bearer(client, "off1"), category="landslide")
    assert still.status_code == 400  # the repository's version is still the live one


def test_who_a_supervision_notifies_is_the_diagrams_notify_property(town):
    diagram = town.bundle_dir / "workflows/bpmn/case_loop.bpmn"
    text = diagram.read_text(encoding="utf-8")
    marker = '<spiffworkflow:property name="notify" value="holder,owner,district_leader" />'
    assert text.count(marker) == 1
    for broken, why in (("", "needs property 'notify'"), ("holder,mayor", "unknown: ['mayor']")):
        diagram.write_text(
            text.replace(marker, marker.replace("holder,owner,district_leader", broken)),
            encoding="utf-8",
        )
        refused = CliRunner().invoke(main, ["diagrams", "deploy", str(town.bundle_dir)])
        assert refused.exit_code != 0 and "warn_grid" in refused.output, refused.output
        assert why in refused.output

    # A bundle whose grid supervision tells the village secretary instead: the 督办 watch list
    # follows the diagram, not a tier map in Python.
    diagram.write_text(
        text.replace(marker, marker.replace("district_leader", "village_secretary")),
        encoding="utf-8",
    )
    deployed = CliRunner().invoke(main, ["diagrams", "deploy", str(town.bundle_dir)])
    assert deployed.exit_code == 0, deployed.output
    client = town.test_client()
    officer = bearer(client, "off1")
    number = open_case(client, officer, category="dispute", severity="normal").json["number"]
    item = accept_item(client, officer, number)
    data = {"valid": True, "category": "dispute", "severity": "normal"}
    done = client.post(f"/api/v1/work-items/{item}/complete", json={"data": data}, headers=officer)
    assert done.status_code == 200 and done.json["tier"] == "grid_leader"
    # 24 hours from Monday 10:00 Shanghai (02:00 UTC): the 80% supervision, not yet the 100%.
    fired = CliRunner().invoke(main, ["timers", "fire-due", "--as-of", "2026-11-23T21:30:00Z"])
    assert fired.exit_code == 0, fired.output

    def watched(username):
        page = town.test_client()
        page.post("/login", data={"username": username, "password": "pw"})
        html = page.get("/").get_data(as_text=True)
        return f'data-case="{number}"' in html and 'data-testid="watch-item"' in html

    assert watched("vs1") and watched("off1")  # told by the diagram; the owner
    assert not watched("dl1")  # the repository's rule would have told the district leader
