"""Migration of running cases to another diagram version (issue 10 item 4, DESIGN §8): a case
waiting at a task the new version keeps moves, gets a `migrated` event, walks on to archive on the
new version and replays; one waiting at a task the new version removed or changed is refused, by
name, and left as it was. Through the engine, the API (a dry run, then a job), the page and the
CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from apps import bearer, web_client
from conftest import ACCEPT_NORMAL, Loop, changed, snapshot
from lxml import etree
from sqlalchemy import select

from engine import admin_log, migration
from engine.events import verify
from engine.models import AdminEvent, Case, DiagramVersion, Job
from engine.replay import replay
from engine.runtime import Runtime
from engine.specs import Bundle, SpecRegistry, deploy
from jobs import migrate as migrate_jobs
from webapp import services

CHECKER = Path(__file__).resolve().parents[1] / "tools" / "verify_dossier.py"
BPMN = "workflows/bpmn/case_loop.bpmn"
LIMITS = "rules/time_limit.dmn"
HANDLE = {"outcome": "resolved", "note": "已处理"}
FEEDBACK = {"satisfaction": "satisfied"}
REPORT = {"summary": "已办结"}
REVIEW = {"approved": True, "note": "同意"}
NS = {
    "bpmn": "http://www.omg.org/spec/BPMN/20100524/MODEL",
    "bpmndi": "http://www.omg.org/spec/BPMN/20100524/DI",
}


# ------------------------------------------------------------------ the versions


def shorter_feedback(bundle: Bundle) -> Bundle:
    """Version B: only a time limit changes, the feedback's (24 → 8 working hours)."""
    return changed(
        bundle,
        LIMITS,
        '<outputEntry id="time_limit_feedback_other_o0"><text>24</text>',
        '<outputEntry id="time_limit_feedback_other_o0"><text>8</text>',
        once=True,
    )


def renamed_handle(bundle: Bundle) -> Bundle:
    """Version C: the grid leader's handling task is changed (its name)."""
    return changed(
        bundle,
        BPMN,
        'id="handle_grid" name="处置（网格长）"',
        'id="handle_grid" name="处置（网格长）新"',
    )


def without_grid_handling(bundle: Bundle) -> Bundle:
    """Version D: the grid leader's handling is removed; cases the table sends to the grid go to
    the district leader's handling instead."""
    gone = {
        "handle_grid",
        "transfer_grid",
        "warn_grid",
        "due_grid",
        "end_warn_grid",
        "gw_out_grid",
        "to_district_grid",
    }
    root = etree.fromstring(bundle.files[BPMN].encode("utf-8"))
    retarget = "f_gw_tier__handle_grid"
    for flow in root.iterfind(".//bpmn:sequenceFlow", NS):
        if flow.get("id") != retarget and (
            flow.get("sourceRef") in gone or flow.get("targetRef") in gone
        ):
            gone.add(flow.get("id"))
    for node in list(root.iter()):
        if not isinstance(node.tag, str):
            continue
        local = etree.QName(node).localname
        if (
            node.get("id") in gone
            or node.get("bpmnElement") in gone
            or (local in ("incoming", "outgoing", "flowNodeRef") and node.text in gone)
            or (node.get("id") == "handle_grid_di" or node.get("bpmnElement") == retarget)
        ):
            node.getparent().remove(node)
    flow = root.find(f".//bpmn:sequenceFlow[@id='{retarget}']", NS)
    flow.set("targetRef", "handle_district")
    district = root.find(".//bpmn:userTask[@id='handle_district']", NS)
    incoming = etree.Element(f"{{{NS['bpmn']}}}incoming")
    incoming.text = retarget
    district.insert(1, incoming)
    text = etree.tostring(root, xml_declaration=True, encoding="UTF-8").decode("utf-8")
    return Bundle({**bundle.files, BPMN: text})


def deployed(gl: Loop, bundle: Bundle, comment: str = "") -> DiagramVersion:
    """Deploy a version (live from now on, as an administrator's deploy makes it)."""
    version, created = deploy(
        gl.session, gl.runtime.registry, bundle, "adm", gl.clock.now(), comment
    )
    assert created
    gl.session.commit()
    return version


def version_of(gl: Loop, case: Case) -> str:
    return gl.reload(case).diagram.sha256


def migrate(gl: Loop, to: str, numbers=None, source=None, dry_run=False):
    selection, problems = migration.select_cases(gl.session, to, numbers, source)
    assert not problems, problems
    results = migration.run(gl.session, gl.runtime, "adm", selection, dry_run)
    return {r.case: r for r in results}


def walk_to_archive(gl: Loop, case: Case) -> Case:
    """Complete whatever is open, by whoever may, until the case is archived."""
    forms = {"handle": HANDLE, "feedback": FEEDBACK, "report": REPORT, "review": REVIEW}
    for _ in range(8):
        case = gl.reload(case)
        if case.status == "archived":
            return case
        item = gl.item(case)
        who = item.assignee or next(
            name
            for name in ("off1", "gl1", "dl1", "vs1", "tl1", "tl2")
            if any(i.id == item.id for i in gl.inbox(name))
        )
        gl.clock.advance(minutes=30)
        gl.runtime.complete(gl.session, gl.viewer(who), item.id, forms[item.task])
    raise AssertionError(f"not archived: {case.status}")


# ------------------------------------------------------------------ the engine


def test_a_case_waiting_at_an_unchanged_task_moves_and_runs_on_the_new_version(gl, bundle):
    old = gl.accepted()  # waits at the grid leader's handling, on the repository's version
    a = version_of(gl, old)
    item_before = gl.item(old)
    timers_before = [(t.due_at, t.kind, t.name) for t in gl.timers(old)]
    b = deployed(gl, shorter_feedback(bundle), "回访时限 8 小时").sha256

    before = snapshot(gl, old)
    dry = migrate(gl, b, [old.number], dry_run=True)
    assert dry[old.number].ok and dry[old.number].reason is None
    assert snapshot(gl, old) == before  # a dry run changes nothing
    assert version_of(gl, old) == a

    gl.clock.advance(hours=1)
    moved = migrate(gl, b, [old.number])
    assert moved[old.number].ok
    case = gl.reload(old)
    assert case.diagram.sha256 == b
    last = gl.events(case)[-1]
    assert (last.type, last.actor, last.task, last.diagram) == ("migrated", "adm", None, b)
    assert json.loads(last.data) == {"from": a, "to": b}
    assert verify(gl.session, case).ok
    # The item it waits at is the same item, with the same deadline; its timers still stand.
    item = gl.item(case)
    assert (item.id, item.task_id, item.task, item.due_at) == (
        item_before.id,
        item_before.task_id,
        "handle",
        item_before.due_at,
    )
    assert [(t.due_at, t.kind, t.name) for t in gl.timers(case)] == timers_before
    assert (case.status, case.tier, case.due_at) == ("handling", "grid_leader", item.due_at)

    # It goes on on the new version: the feedback it reaches has the new 8-hour limit, where a
    # case left on the old version gets 24.
    fresh = gl.accepted()
    assert version_of(gl, fresh) == b  # B is live: new cases start on it
    gl.clock.advance(minutes=30)
    gl.complete("gl1", case, HANDLE)
    feedback = gl.item(gl.reload(case))
    assert feedback.task == "feedback" and gl.events(case)[-1].diagram == b
    assert feedback.due_at - gl.clock.now() < timedelta(hours=24)
    case = walk_to_archive(gl, case)
    assert case.status == "archived"
    # It replays, with the specs parsed afresh from the stored versions.
    result = replay(gl.session, case, SpecRegistry())
    assert result.ok, result.as_json()
    assert result.events_replayed == len(gl.events(case))


def test_a_dry_run_leaves_the_case_running_on_its_own_version(gl, bundle):
    """The dry run moved a copy: the case's next step still runs on the old version (its
    feedback gets the old 24-hour limit), also in this process, which holds its workflow."""
    case = gl.accepted()
    a = version_of(gl, case)
    b = deployed(gl, shorter_feedback(bundle)).sha256
    assert migrate(gl, b, dry_run=True)[case.number].ok
    assert admin_log.entries(gl.session, type_="cases_migrated") == []
    gl.complete("gl1", case, HANDLE)
    case = gl.reload(case)
    assert [e.diagram for e in gl.events(case)] == [a] * len(gl.events(case))
    assert gl.item(case).due_at - gl.clock.now() >= timedelta(hours=24)
    assert replay(gl.session, case, SpecRegistry()).ok


def test_the_moved_case_loads_in_another_process_and_replays_while_open(gl, bundle, clock):
    case = gl.accepted()
    b = deployed(gl, shorter_feedback(bundle)).sha256
    assert migrate(gl, b)[case.number].ok  # every open case not on B
    # Another process, with nothing cached, restores the moved workflow from its blob.
    elsewhere = Runtime(clock, SpecRegistry())
    gl.clock.advance(minutes=5)
    elsewhere.complete(gl.session, gl.viewer("gl1"), gl.item(case).id, HANDLE)
    case = gl.reload(case)
    assert case.status == "feedback"
    assert replay(gl.session, case, SpecRegistry()).ok


def test_timers_keep_their_instants_across_the_move(gl, bundle):
    """The 80% supervision fired before the move; the 100% escalation fires after it, when it
    was due on the old version, and the case escalates on the new one."""
    case = gl.accepted()
    item = gl.item(case)
    gl.fire(item.warn_at)
    assert gl.types(case)[-1] == "supervised"
    b = deployed(gl, shorter_feedback(bundle)).sha256
    assert migrate(gl, b)[case.number].ok
    gl.fire(item.due_at - timedelta(minutes=1))
    assert gl.types(case)[-1] == "migrated"  # not due yet
    gl.fire(item.due_at)
    case = gl.reload(case)
    assert gl.types(case)[-1] == "escalated" and gl.events(case)[-1].diagram == b
    assert (case.tier, gl.item(case).role) == ("district_leader", "district_leader")
    assert replay(gl.session, case, SpecRegistry()).ok


def test_a_town_case_supervised_daily_moves_and_goes_on_being_supervised(gl, bundle):
    """A repeating timer keeps its next repeat across the move."""
    case = gl.accepted(category="safety_hazard", severity="urgent")  # starts at the village
    case = gl.complete("vs1", case, {"outcome": "refer_up", "note": "需镇里协调"})
    deadline = gl.item(case).due_at
    gl.fire(deadline)
    gl.fire(deadline + timedelta(days=1))
    repeats = [t.due_at for t in gl.timers(case)]
    b = deployed(gl, shorter_feedback(bundle)).sha256
    assert migrate(gl, b)[case.number].ok
    assert [t.due_at for t in gl.timers(case)] == repeats
    gl.fire(deadline + timedelta(days=2))
    last = gl.events(case)[-1]
    assert (last.type, last.diagram, json.loads(last.data)["overdue"]) == ("supervised", b, True)
    assert replay(gl.session, gl.reload(case), SpecRegistry()).ok


def test_a_case_changed_while_it_moves_is_planned_again_from_its_new_state(
    gl, bundle, make_session, clock, monkeypatch
):
    """Another step (a claim) commits between the move's read and its write: the move loses
    the race, is retried on the new state and keeps the claim; nothing is half-moved."""
    case = gl.accepted()
    b = deployed(gl, shorter_feedback(bundle)).sha256
    other = make_session()
    elsewhere = Runtime(clock, gl.runtime.registry)
    load, raced = gl.runtime._load, []

    def racing_load(session, row, stored=None):
        if not raced:
            raced.append(row.version)
            leader = Loop(other, elsewhere, clock).viewer("gl1")
            elsewhere.claim(other, leader, gl.item(case).id)
        return load(session, row, stored)

    monkeypatch.setattr(gl.runtime, "_load", racing_load)
    assert migrate(gl, b)[case.number].ok
    other.close()
    case = gl.reload(case)
    assert gl.types(case)[-2:] == ["claimed", "migrated"]
    assert gl.item(case).claimed_by == "gl1" and case.diagram.sha256 == b
    assert verify(gl.session, case).ok
    assert replay(gl.session, case, SpecRegistry()).ok


@pytest.mark.parametrize(
    ("make", "reason"),
    [(renamed_handle, "changes"), (without_grid_handling, "does not have")],
    ids=["changed", "removed"],
)
def test_a_case_at_a_task_the_new_version_changes_or_removes_is_refused(gl, bundle, make, reason):
    case = gl.accepted()
    a = version_of(gl, case)
    c = deployed(gl, make(bundle)).sha256
    before = snapshot(gl, case)
    for dry_run in (True, False):
        result = migrate(gl, c, [case.number], dry_run=dry_run)[case.number]
        assert not result.ok
        assert "'handle_grid' (处置（网格长）)" in result.reason and reason in result.reason
        assert result.element == "handle_grid"
        assert snapshot(gl, case) == before  # untouched
    assert version_of(gl, case) == a
    entry = admin_log.entries(gl.session, type_="cases_migrated")[0]
    assert json.loads(entry.data) == {"from": None, "to": c, "moved": 0, "refused": 1}
    # Still works on its own version.
    gl.complete("gl1", case, HANDLE)
    assert gl.reload(case).status == "feedback"
    assert replay(gl.session, gl.reload(case), SpecRegistry()).ok


def test_a_run_moves_the_movable_ones_and_reports_the_rest(gl, bundle):
    at_handle = gl.accepted()
    at_accept = gl.open("off1")
    closed = gl.open("off1")
    gl.complete("off1", closed, {"valid": False, "note": "重复"})
    assert gl.reload(closed).status == "rejected"
    d = deployed(gl, without_grid_handling(bundle)).sha256
    a_cases = [at_handle.number, at_accept.number, closed.number, "XDK-2026-999999"]
    results = migrate(gl, d, a_cases)
    assert results[at_accept.number].ok  # accept is the same in D
    assert not results[at_handle.number].ok
    assert (results[closed.number].ok, results[closed.number].code) == (False, "closed")
    assert (results["XDK-2026-999999"].ok, results["XDK-2026-999999"].reason) == (
        False,
        "no such case",
    )
    assert migrate(gl, d, [at_accept.number])[at_accept.number].code == "same_version"
    second, first = admin_log.entries(gl.session, type_="cases_migrated")  # newest first
    assert json.loads(first.data) == {"from": None, "to": d, "moved": 1, "refused": 3}
    assert json.loads(second.data)["moved"] == 0
    # Each run's start is on the record before any case moves (a killed run leaves it).
    later, earlier = admin_log.entries(gl.session, type_="migration_started")
    assert json.loads(earlier.data) == {"from": None, "to": d, "cases": 4}
    assert earlier.seq < first.seq < later.seq < second.seq
    assert admin_log.check(gl.session) is None
    # The moved accept goes on, on D, and routes the case as D says.
    gl.complete("off1", at_accept, ACCEPT_NORMAL)
    moved = gl.reload(at_accept)
    assert (moved.status, gl.item(moved).spec) == ("handling", "handle_district")
    assert replay(gl.session, moved, SpecRegistry()).ok


def test_from_narrows_the_run_to_one_version(gl, bundle):
    on_a = gl.accepted()
    b = deployed(gl, shorter_feedback(bundle)).sha256
    on_b = gl.accepted()
    c = deployed(gl, changed(bundle, BPMN, 'name="回访反馈"', 'name="回访"')).sha256
    a = version_of(gl, on_a)
    selection, problems = migration.select_cases(gl.session, c, None, b)
    assert not problems and [n for _i, n in selection.cases] == [on_b.number]
    results = migrate(gl, c, None, b)
    assert list(results) == [on_b.number] and results[on_b.number].ok
    assert version_of(gl, on_a) == a
    named = migrate(gl, c, [on_a.number], source=b)[on_a.number]
    assert (named.ok, named.code) == (False, "not_from")
    _none, problems = migration.select_cases(gl.session, c, None, c)
    assert problems == {"from": "is the target version"}
    _none, problems = migration.select_cases(gl.session, "0" * 64, None, "1" * 64)
    assert problems == {"to": "no diagram version has this hash", "from": problems["to"]}


def test_a_tampered_migrated_event_is_where_replay_diverges(gl, bundle):
    case = gl.accepted()
    b = deployed(gl, shorter_feedback(bundle)).sha256
    migrate(gl, b)
    event = gl.events(case)[-1]
    event.data = json.dumps({"from": "f" * 64, "to": b})
    gl.session.commit()
    result = replay(gl.session, gl.reload(case), SpecRegistry())
    assert not result.ok and result.divergence.seq == event.seq


# ------------------------------------------------------------------ the API, the page, the CLI


@pytest.fixture
def town(make_app, clock):
    app = make_app()
    app.config["GRIDLOOP_INLINE_JOBS"] = True
    jobs = services(app).jobs
    session = jobs.sessions()
    yield app, Loop(session, jobs.runtime, clock)
    session.close()


def test_the_api_dry_runs_then_migrates_as_a_job(town, bundle, tmp_path):
    app, gl = town
    movable = gl.accepted()
    a = version_of(gl, movable)
    b = deployed(gl, shorter_feedback(bundle)).sha256
    api = app.test_client()
    adm = bearer(api, "adm")
    body = {"to": b, "cases": [movable.number], "dry_run": True}
    answer = api.post("/api/v1/migrations", json=body, headers=adm)
    assert answer.status_code == 200
    assert answer.get_json() == {
        "results": [
            {"case": movable.number, "ok": True, "reason": None, "code": None, "element": None}
        ]
    }
    gl.session.rollback()
    assert version_of(gl, movable) != b
    started = api.post("/api/v1/migrations", json={**body, "dry_run": False}, headers=adm)
    assert started.status_code == 202
    job = api.get(f"/api/v1/jobs/{started.get_json()['job']}", headers=adm).get_json()
    assert (job["state"], job["done"], job["total"]) == ("done", 1, 1)
    assert job["results"][0]["case"] == movable.number and job["results"][0]["ok"]
    assert version_of(gl, movable) == b
    events = api.get(f"/api/v1/cases/{movable.number}/events", headers=bearer(api, "gl1"))
    assert events.get_json()["events"][-1]["type"] == "migrated"
    replayed = api.post(f"/api/v1/cases/{movable.number}/replay", headers=bearer(api, "aud"))
    assert replayed.get_json()["ok"] is True
    # Its dossier carries both versions, and the offline checker finds everything in order.
    dossier = api.get(f"/api/v1/cases/{movable.number}/dossier", headers=bearer(api, "gl1"))
    assert [d["hash"] for d in dossier.get_json()["diagrams"]] == [a, b]
    path = tmp_path / "dossier.json"
    path.write_text(dossier.get_data(as_text=True), encoding="utf-8")
    checked = subprocess.run(
        [sys.executable, str(CHECKER), str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout


def test_without_redis_a_thread_runs_the_job_and_the_row_says_how_it_went(town, bundle):
    app, gl = town
    cases = [gl.accepted() for _ in range(3)]
    b = deployed(gl, shorter_feedback(bundle)).sha256
    root = services(app).jobs
    assert root.redis_url is None
    job_id = migrate_jobs.start_migration(root, "adm", b)
    for thread in threading.enumerate():
        if thread.name == f"gridloop-migrate-{job_id}":
            thread.join()
    gl.session.rollback()
    job = migrate_jobs.as_json(gl.session.get(Job, job_id))
    assert (job["state"], job["done"], job["total"], job["created_by"]) == ("done", 3, 3, "adm")
    assert [r["case"] for r in job["results"] if r["ok"]] == [c.number for c in cases]
    assert all(version_of(gl, c) == b for c in cases)


def test_the_api_is_for_administrators_and_checks_each_field(town, bundle):
    app, gl = town
    b = deployed(gl, shorter_feedback(bundle)).sha256
    api = app.test_client()
    for user in ("gl1", "aud", "tl1"):
        refused = api.post(
            "/api/v1/migrations", json={"to": b, "dry_run": True}, headers=bearer(api, user)
        )
        assert refused.status_code == 403, user
    adm = bearer(api, "adm")
    bad = api.post(
        "/api/v1/migrations",
        json={"to": "f" * 64, "from": 3, "cases": "XDK", "dry_run": "yes", "extra": 1},
        headers=adm,
    )
    assert bad.status_code == 400
    fields = bad.get_json()["error"]["fields"]
    assert set(fields) == {"from", "cases", "dry_run", "extra"}
    unknown = api.post("/api/v1/migrations", json={"to": "f" * 64, "dry_run": True}, headers=adm)
    assert unknown.status_code == 400
    assert unknown.get_json()["error"]["fields"] == {"to": "no diagram version has this hash"}
    missing = api.post("/api/v1/migrations", json={}, headers=adm)
    assert set(missing.get_json()["error"]["fields"]) == {"to", "dry_run"}
    assert api.post("/api/v1/migrations", data="[", headers=adm).status_code == 400
    gl.session.rollback()
    assert gl.session.scalars(select(Job)).first() is None


def test_the_page_dry_runs_and_follows_the_job(town, bundle):
    app, gl = town
    movable = gl.accepted()
    a = version_of(gl, movable)
    c = deployed(gl, renamed_handle(bundle)).sha256
    at_accept = gl.open("off1")  # opened on C
    b = deployed(gl, shorter_feedback(bundle)).sha256
    assert web_client(app, "gl1").get("/admin/migrations").status_code == 403
    auditor = web_client(app, "aud")
    assert auditor.get("/admin/migrations").status_code == 403
    data = {"to": b, "from": a, "cases": "", "action": "run"}
    assert auditor.post("/admin/migrations", data=data).status_code == 403
    page = web_client(app, "adm")
    html = page.get("/admin/migrations").get_data(as_text=True)
    assert a[:12] in html and b[:12] in html and "迁移" in html
    dry = page.post(
        "/admin/migrations",
        data={
            "to": b,
            "from": "",
            "cases": f"{movable.number} {at_accept.number}",
            "action": "dry",
        },
    )
    html = dry.get_data(as_text=True)
    assert dry.status_code == 200
    assert html.count('data-testid="movable"') == 2
    gl.session.rollback()
    assert version_of(gl, movable) == a  # nothing moved
    back = page.post("/admin/migrations", data={"to": c, "from": a, "cases": "", "action": "dry"})
    html = back.get_data(as_text=True)
    assert 'data-testid="refused"' in html and "handle_grid" in html
    run = page.post(
        "/admin/migrations",
        data={"to": b, "from": a, "cases": "", "action": "run"},
    )
    assert run.status_code == 302
    html = page.get(run.headers["Location"]).get_data(as_text=True)
    assert 'data-testid="job-done"' in html and movable.number in html
    assert version_of(gl, movable) == b
    entry = gl.session.scalars(select(AdminEvent).where(AdminEvent.type == "cases_migrated"))
    assert json.loads(entry.one().data)["moved"] == 1
    english = web_client(app, "adm", "en").get(run.headers["Location"]).get_data(as_text=True)
    assert "Migrate" in english


def test_the_cli_dry_runs_and_migrates(gl, bundle, cli_env, db_url):
    from webapp.cli import main

    case = gl.accepted()
    a = version_of(gl, case)
    c = deployed(gl, renamed_handle(bundle)).sha256
    b = deployed(gl, shorter_feedback(bundle)).sha256
    gl.session.close()
    out = cli_env.invoke(main, ["cases", "migrate", "--to", b, "--dry-run", case.number])
    assert out.exit_code == 0, out.output
    assert f"{case.number}: ok" in out.output and "dry run" in out.output
    assert version_of(gl, case) == a
    refused = cli_env.invoke(main, ["cases", "migrate", "--to", c, "--from", a, "--dry-run"])
    assert refused.exit_code == 1
    assert "handle_grid" in refused.output and case.number in refused.output
    bad = cli_env.invoke(main, ["cases", "migrate", "--to", "nope", "--dry-run"])
    assert bad.exit_code == 1 and "to: no diagram version has this hash" in bad.output
    moved = cli_env.invoke(main, ["cases", "migrate", "--to", b, case.number])
    assert moved.exit_code == 0, moved.output
    assert "1 moved, 0 refused" in moved.output
    assert version_of(gl, case) == b
