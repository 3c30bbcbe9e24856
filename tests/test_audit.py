"""Auditors (DESIGN §4, §6, §8): they read every case and change none, each case they open is on
the record, and they replay cases, make digests and verify every chain against them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from apps import bearer, web_client
from conftest import ACCEPT_NORMAL, Loop
from sqlalchemy import delete, func, select, update

from engine import digests
from engine.events import GENESIS, as_dict, chain_hash, verify
from engine.models import Case, CaseAccess, CaseEvent, Digest, Job
from jobs.ticker import Ticker
from webapp import services

# Routes that change nothing about a case or the organisation: signing in and out, one's own
# password, and the auditors' own work (replays, digests, verifications).
NOT_WRITES = {
    "api.create_token",
    "api.revoke_token",
    "auth.login",
    "auth.logout",
    "auth.change_password",
    "api.replay_api",
    "api.make_digest_api",
    "api.verify_api",
    "audit.make_digest",
    "audit.verify",
    "audit.replay_page",
}
REVIEW = {"approved": True, "note": "同意"}


def _form(task: str) -> dict:
    return {
        "accept": ACCEPT_NORMAL,
        "handle": {"outcome": "resolved", "note": "已处理"},
        "feedback": {"satisfaction": "satisfied"},
        "report": {"summary": "已办结"},
        "review": REVIEW,
    }[task]


def _archived(gl: Loop) -> Case:
    """A case taken through the whole loop to 归档."""
    case = gl.open("off1")
    for _ in range(12):
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
        gl.runtime.complete(gl.session, gl.viewer(who), item.id, _form(item.task))
    raise AssertionError(f"not archived: {case.status}")


@pytest.fixture
def town(make_app, clock):
    """The app, and a Loop on a session of its own: no app context is held open, or requests
    would share it (and its `g`) with each other."""
    app = make_app()
    app.config["GRIDLOOP_INLINE_JOBS"] = True
    jobs = services(app).jobs
    session = jobs.sessions()
    yield app, Loop(session, jobs.runtime, clock)
    session.close()


def _counts(gl: Loop) -> tuple:
    gl.session.rollback()
    return tuple(
        gl.session.scalar(select(func.count()).select_from(m)) for m in (Case, CaseEvent)
    ) + (gl.session.scalar(select(func.max(Case.version))),)


def test_an_auditor_is_refused_every_change_before_the_body_is_read(town):
    app, gl = town
    case = gl.accepted()
    item = gl.item(case)
    before = _counts(gl)
    api = app.test_client()
    headers = bearer(api, "aud")
    web = web_client(app, "aud")
    values = {
        "item_id": item.id,
        "number": case.number,
        "delegation_id": 1,
        "sha256": "0" * 64,
        "username": "off1",
        "code": "V01-D1-G01",
        "campaign_id": 1,
    }
    bodies = [None, {"title": "x", "grid": "V01-D1-G01"}, {"data": {"outcome": "resolved"}}]
    refused = []
    for rule in app.url_map.iter_rules():
        methods = rule.methods - {"GET", "HEAD", "OPTIONS"}
        if not methods or rule.endpoint in NOT_WRITES:
            continue
        arguments = {k: v for k, v in values.items() if k in rule.arguments}
        if rule.rule.startswith("/grids/") and "number" in arguments:
            arguments["number"] = 1  # a household's number, not a case's
        url = rule.build(arguments)[1]
        for method in methods:
            for body in bodies:
                if rule.rule.startswith("/api/"):
                    response = api.open(url, method=method, json=body, headers=headers)
                    assert response.get_json()["error"]["code"] == "forbidden", url
                else:
                    response = web.open(url, method=method, data=body or {})
                assert response.status_code == 403, (method, url, response.status_code)
        refused.append(rule.endpoint)
    # Every way to open, work, transfer, photograph or delegate a case was tried.
    assert {
        "api.open_case", "api.complete", "api.claim", "api.transfer", "api.upload_photo",
        "api.api_create", "inbox.task", "inbox.claim", "inbox.transfer", "cases.new",
        "photos.upload_page", "delegation.index", "api.campaign_launch", "api.campaign_visit",
    } <= set(refused)  # fmt: skip
    assert _counts(gl) == before, "nothing changed"
    # Reading stays open to them.
    assert web.get(f"/tasks/{item.id}").status_code == 200
    assert api.get(f"/api/v1/cases/{case.number}", headers=headers).status_code == 200


def test_each_case_an_auditor_opens_is_logged_and_the_auditor_sees_the_log(town):
    app, gl = town
    case = gl.accepted()
    api = app.test_client()
    for user in ("aud", "gl1"):
        headers = bearer(api, user)
        assert api.get(f"/api/v1/cases/{case.number}", headers=headers).status_code == 200
        assert api.get(f"/api/v1/cases/{case.number}/events", headers=headers).status_code == 200
        assert web_client(app, user).get(f"/cases/{case.number}").status_code == 200
    gl.session.rollback()
    rows = gl.session.scalars(select(CaseAccess).order_by(CaseAccess.id)).all()
    assert [(r.username, r.case_id, r.how) for r in rows] == [
        ("aud", case.id, "api"),
        ("aud", case.id, "events"),
        ("aud", case.id, "page"),
    ]
    assert all(r.at == gl.clock.now() for r in rows)
    page = web_client(app, "aud").get("/audit/access").get_data(as_text=True)
    assert page.count(case.number) >= 3
    assert web_client(app, "gl1").get("/audit/access").status_code == 403


def test_digests_list_only_the_chains_that_grew_and_chain_to_each_other(town):
    app, gl = town
    first, second = gl.accepted(), gl.accepted()
    api = app.test_client()
    aud = bearer(api, "aud")
    assert api.post("/api/v1/digests", headers=bearer(api, "gl1")).status_code == 403
    one = api.post("/api/v1/digests", headers=aud).get_json()
    assert one["n"] == 1 and one["prev"] == GENESIS
    gl.session.rollback()
    heads = {n: [seq, head] for n, seq, head in one["heads"]}
    for case in (first, second):
        case = gl.reload(case)
        assert heads[case.number] == [case.event_seq, case.event_head]
    assert one["hash"] == digests.digest_hash(1, one["made_at"], GENESIS, one["heads"])

    gl.clock.advance(hours=1)
    assert api.post("/api/v1/digests", headers=aud).get_json()["cases"] == 0
    gl.complete("gl1", gl.reload(first), {"outcome": "resolved"})
    three = api.post("/api/v1/digests", headers=aud).get_json()
    assert [h[0] for h in three["heads"]] == [first.number]
    # A digest's heads name every case that grew: for auditors and administrators only.
    assert api.get("/api/v1/digests", headers=bearer(api, "gl1")).status_code == 403
    assert api.get("/api/v1/digests/1", headers=bearer(api, "off1")).status_code == 403
    listed = api.get("/api/v1/digests", headers=bearer(api, "adm")).get_json()["items"]
    assert [d["n"] for d in listed] == [3, 2, 1]
    assert listed[1]["prev"] == one["hash"] and listed[0]["prev"] == listed[1]["hash"]
    assert api.get("/api/v1/digests/3", headers=aud).get_json()["heads"] == three["heads"]
    assert api.get("/api/v1/digests/9", headers=aud).status_code == 404


def _rechain_without_last(gl: Loop, case: Case) -> int:
    """Delete a case's last event and recompute its whole chain, as someone covering their
    tracks with database access would; the seq deleted."""
    rows = gl.events(case)
    last = rows[-1].seq
    gl.session.execute(delete(CaseEvent).where(CaseEvent.id == rows[-1].id))
    prev = GENESIS
    for row in rows[:-1]:
        prev = chain_hash(prev, as_dict(case.number, row))
        gl.session.execute(update(CaseEvent).where(CaseEvent.id == row.id).values(hash=prev))
    gl.session.execute(
        update(Case).where(Case.id == case.id).values(event_seq=last - 1, event_head=prev)
    )
    gl.session.commit()
    return last


def test_a_rewritten_chain_verifies_on_its_own_and_is_caught_against_the_digest(town, cli_env):
    app, gl = town
    case = _archived(gl)
    other = gl.accepted()
    digests.make(gl.session, gl.clock.now(), "aud")
    gl.session.commit()
    deleted = _rechain_without_last(gl, case)
    # Also an honest edit after the digest: still fine.
    gl.complete("gl1", gl.reload(other), {"outcome": "resolved"})
    assert verify(gl.session, gl.reload(case)).ok, "the chain verifies on its own"
    report = digests.verify_all(gl.session)
    assert [(p.case, p.seq) for p in report.problems] == [(case.number, deleted)]
    assert "digest 1" in report.problems[0].reason
    assert report.cases == 2 and report.digests == 1


def test_a_changed_digest_is_found(town):
    _app, gl = town
    gl.accepted()
    digests.make(gl.session, gl.clock.now(), "aud")
    gl.clock.advance(minutes=5)
    gl.accepted()
    digests.make(gl.session, gl.clock.now(), "aud")
    gl.session.commit()
    gl.session.execute(update(Digest).where(Digest.n == 1).values(made_at="2020-01-01T00:00:00Z"))
    gl.session.commit()
    problems = digests.verify_all(gl.session).problems
    assert [(p.case, p.seq) for p in problems] == [("digest", 1)]


def test_the_cli_verifies_with_progress_and_names_the_bad_seq(town, cli_env, db_url):
    """`gridloop audit verify` on a database with a case whose event was changed."""
    from webapp.cli import main

    _app, gl = town
    case = gl.accepted()
    url = gl.session.get_bind().url.render_as_string(hide_password=False)
    cli_env_result = cli_env.invoke(main, ["audit", "verify"], env={"GRIDLOOP_DATABASE_URL": url})
    assert cli_env_result.exit_code == 0, cli_env_result.output
    assert "1 case(s) checked, 0 broken" in cli_env_result.output
    target = gl.events(case)[1]
    gl.session.execute(update(CaseEvent).where(CaseEvent.id == target.id).values(actor="someone"))
    gl.session.commit()
    broken = cli_env.invoke(main, ["audit", "verify"], env={"GRIDLOOP_DATABASE_URL": url})
    assert broken.exit_code == 1
    assert f"{case.number}: BROKEN at seq {target.seq}" in broken.output
    made = cli_env.invoke(main, ["audit", "digest"], env={"GRIDLOOP_DATABASE_URL": url})
    assert made.exit_code == 0 and made.output.startswith("digest 1: ")
    replayed = cli_env.invoke(
        main, ["audit", "replay", case.number], env={"GRIDLOOP_DATABASE_URL": url}
    )
    assert replayed.exit_code == 1
    assert json.loads(replayed.output)["divergence"]["seq"] == target.seq


def test_the_daily_digest_is_made_once_after_midnight_in_shanghai(town):
    app, gl = town
    gl.accepted()
    root = services(app).jobs
    ticker = Ticker(root, fire_timers=False)
    # Monday 2026-11-23 10:00 Shanghai: nothing made yet today, so the first is due.
    assert ticker.anchor() == 1
    gl.clock.advance(hours=13)  # 23:00 the same day
    assert ticker.anchor() == 0
    gl.clock.advance(hours=1, minutes=1)  # 00:01 Tuesday in Shanghai (16:01 UTC)
    assert ticker.anchor() == 1
    assert ticker.anchor() == 0
    gl.session.rollback()
    made = gl.session.scalars(select(Digest).order_by(Digest.n)).all()
    assert [(d.n, d.made_by) for d in made] == [(1, "system"), (2, "system")]
    assert made[1].made_at == "2026-11-23T16:01:00.000000Z"


def test_verification_runs_as_a_job_with_progress(town):
    app, gl = town
    gl.accepted()
    gl.accepted()
    api = app.test_client()
    assert api.post("/api/v1/verifications", headers=bearer(api, "gl1")).status_code == 403
    aud = bearer(api, "aud")
    started = api.post("/api/v1/verifications", headers=aud)
    assert started.status_code == 202
    job = api.get(f"/api/v1/jobs/{started.get_json()['job']}", headers=aud).get_json()
    assert (job["state"], job["done"], job["total"]) == ("done", 2, 2)
    assert job["results"]["ok"] is True and job["results"]["events"] > 0
    page = web_client(app, "aud")
    assert page.post("/audit/verifications").status_code == 302
    html = page.get("/audit").get_data(as_text=True)
    assert 'data-testid="verify-ok"' in html
    gl.session.rollback()
    assert gl.session.scalar(select(func.count()).select_from(Job)) == 2


def test_a_verification_in_a_thread_reports_progress_as_it_goes(town):
    """Without Redis the web server's thread runs it; run here directly to follow each write."""
    from jobs import audit

    app, gl = town
    for _ in range(3):
        gl.accepted()
    root = services(app).jobs
    seen = []
    original = digests.verify_all

    def spy(session, case_number=None, progress=None):
        def tracking(done, total):
            progress(done, total)
            with root.session() as s:
                job = s.scalars(select(Job).order_by(Job.id.desc())).first()
                seen.append((job.state, job.done, job.total))

        return original(session, case_number, tracking)

    audit.verify_all = spy
    try:
        audit.start_verification(root, "aud", inline=True)
    finally:
        audit.verify_all = original
    assert seen == [("running", 0, 3), ("running", 3, 3)]


def test_replay_through_the_api_is_for_auditors_and_administrators(town):
    app, gl = town
    case = _archived(gl)
    api = app.test_client()
    assert (
        api.post(f"/api/v1/cases/{case.number}/replay", headers=bearer(api, "gl1")).status_code
        == 403
    )
    for user in ("aud", "adm"):
        answer = api.post(f"/api/v1/cases/{case.number}/replay", headers=bearer(api, user))
        assert answer.status_code == 200
        assert answer.get_json() == {
            "ok": True,
            "events_replayed": gl.reload(case).event_seq,
            "divergence": None,
        }
    assert (
        api.post("/api/v1/cases/XDK-2026-999999/replay", headers=bearer(api, "aud")).status_code
        == 404
    )
    page = web_client(app, "aud").post("/audit/replay", data={"number": case.number.lower()})
    assert 'data-testid="replay-ok"' in page.get_data(as_text=True)


def test_the_auditors_page_works_in_both_languages_with_nothing_yet(town):
    app, _gl = town
    page = web_client(app, "aud")
    html = page.get("/audit").get_data(as_text=True)
    assert 'data-testid="no-digests"' in html and 'data-testid="never-verified"' in html
    assert "审计" in html
    page.set_cookie("lang", "en")
    assert "Daily digests" in page.get("/audit").get_data(as_text=True)
    assert web_client(app, "gl1").get("/audit").status_code == 403


def test_an_honest_history_replays_after_a_digest(town):
    _app, gl = town
    case = _archived(gl)
    digests.make(gl.session, gl.clock.now(), "aud")
    gl.session.commit()
    assert digests.verify_all(gl.session).ok
    assert gl.reload(case).digested_seq == gl.reload(case).event_seq


def test_a_deleted_case_is_caught_against_the_digest_that_named_it(town):
    _app, gl = town
    gone, kept = gl.accepted(), gl.accepted()
    digests.make(gl.session, gl.clock.now(), "aud")
    gl.session.commit()
    for table in (CaseAccess, CaseEvent):
        gl.session.execute(delete(table).where(table.case_id == gone.id))
    from engine.models import CaseFact, Reporter, Timer, WorkItem

    for table in (WorkItem, Timer, Reporter, CaseFact):
        gl.session.execute(delete(table).where(table.case_id == gone.id))
    gl.session.execute(delete(Case).where(Case.id == gone.id))
    gl.session.commit()
    problems = digests.verify_all(gl.session).problems
    assert [(p.case, p.reason) for p in problems] == [(gone.number, "named by digest 1, missing")]
    assert kept.number not in {p.case for p in problems}


def test_an_auditor_opening_a_task_page_or_the_steps_is_logged(town):
    app, gl = town
    case = gl.accepted()
    item = gl.item(case)
    auditor = web_client(app, "aud")
    assert auditor.get(f"/tasks/{item.id}").status_code == 200
    assert auditor.get(f"/cases/{case.number}/steps.json").status_code == 200
    gl.session.rollback()
    rows = gl.session.scalars(select(CaseAccess).order_by(CaseAccess.id)).all()
    assert [(r.case_id, r.how) for r in rows] == [(case.id, "page"), (case.id, "steps")]


def test_odd_paging_values_are_a_first_page_on_pages_and_a_400_through_the_api(town):
    """A person's odd link shows the first page; a client's bad cursor is told, field by field,
    as /cases, /inbox and /campaigns tell it (a contract sweep found /digests ignoring it)."""
    app, _gl = town
    api = app.test_client()
    huge = "99999999999999999999"
    for cursor in (huge, "abc", "-5", "0", "", "%C2%B2", "%EF%BC%95", "9" * 5000, "5"):
        answer = api.get(f"/api/v1/digests?cursor={cursor}", headers=bearer(api, "aud"))
        assert answer.status_code == 400, cursor
        assert set(answer.get_json()["error"]["fields"]) == {"cursor"}
    page = web_client(app, "aud")
    assert page.get(f"/audit?before={huge}").status_code == 200
    assert page.get(f"/audit/access?before={huge}").status_code == 200


def test_the_audit_pages_speak_the_page_language_and_link_only_what_the_viewer_may_open(town):
    """A digest shows when it was made in Shanghai time and who made it in words; the
    administration log's chain links to its page, not to a case 'admin'; case numbers are links
    for an auditor and plain text for an administrator, who reads no case; how an auditor opened
    a case is said in words; an empty number to replay is asked for, not 'No case .'."""
    app, gl = town
    case = gl.accepted()
    aud = web_client(app, "aud")
    assert aud.get(f"/cases/{case.number}").status_code == 200  # logged: how = page
    reset = web_client(app, "adm").post("/admin/org/people/off1b/password")
    assert reset.status_code == 200  # on the administration log, whose chain a digest holds
    gl.clock.set(datetime(2026, 11, 24, 16, 30, tzinfo=UTC))  # 00:30 in Shanghai
    with app.app_context():
        digests.make_daily(gl.session, gl.clock.now())
    index = aud.get("/audit").get_data(as_text=True)
    assert "2026-11-25 00:30" in index and "系统" in index and ">system<" not in index
    assert "案件页面" in index
    digest = aud.get("/audit/digests/1").get_data(as_text=True)
    assert f'href="/cases/{case.number}"' in digest and "/cases/admin" not in digest
    assert 'href="/audit/admin-log"' in digest  # the deploy and the import are on its log
    assert "2026-11-25 00:30" in digest
    admin = web_client(app, "adm")
    for page in ("/audit", "/audit/digests/1"):
        html = admin.get(page).get_data(as_text=True)
        assert case.number in html and f'href="/cases/{case.number}"' not in html, page
    empty = aud.post("/audit/replay", data={"number": "  "}, follow_redirects=True)
    assert "请输入要重放的案件编号。" in empty.get_data(as_text=True)


def test_an_audit_form_sent_after_the_session_ended_gets_a_page_not_a_crash(town):
    """With CSRF on, as in production, a form sent without a valid token (a session that ended)
    fails before sign-in is checked; its error page used to crash on the signed-in helpers."""
    app, _gl = town
    app.config["WTF_CSRF_ENABLED"] = True
    app.config["PROPAGATE_EXCEPTIONS"] = False
    for path in ("/audit/replay", "/audit/digests"):
        response = app.test_client().post(path, data={"number": "XDK-2026-000001"})
        assert response.status_code == 400, path
        assert "请求" in response.get_data(as_text=True) or "request" in response.get_data(
            as_text=True
        )


def test_the_digests_api_pages_with_the_cursor_it_gives_out(town):
    """GET /digests gives out the same opaque keyset cursors as every other list, and takes
    them back: 51 digests are a page of 50, newest first, then the oldest one."""
    app, gl = town
    for _ in range(51):
        digests.make(gl.session, gl.clock.now(), "aud")
    gl.session.commit()
    api = app.test_client()
    headers = bearer(api, "aud")
    first = api.get("/api/v1/digests", headers=headers).get_json()
    assert [d["n"] for d in first["items"]] == list(range(51, 1, -1))
    rest = api.get(f"/api/v1/digests?cursor={first['next_cursor']}", headers=headers).get_json()
    assert [d["n"] for d in rest["items"]] == [1] and rest["next_cursor"] is None
