"""The administration log verifies, and changing one of its entries is found (issue 10, item 7):
on its own chain (engine.admin_log.check), against the daily digests (engine.digests.verify_all),
on the auditors' page /audit/admin-log, and through GET /api/v1/admin-log."""

from __future__ import annotations

import json
import re

import pytest
from apps import bearer, web_client
from conftest import REPO, START, changed
from sqlalchemy import select, update

from engine import admin_log, digests
from engine.events import GENESIS, chain_hash
from engine.models import AdminEvent
from engine.specs import load_bundle
from engine.versions import deploy_bundle
from engine.workcal import enter_calendar
from webapp import services
from webapp.extensions import db

API = "/api/v1"
TIME_LIMIT = "rules/time_limit.dmn"
CALENDAR_2027 = {"year": 2027, "holidays": ["2027-01-01", "2027-02-06"], "workdays": []}


@pytest.fixture(scope="module")
def new_bundle():
    """The repository's bundle with the urgent grid limit changed from 2 to 3 clock hours."""
    return changed(
        load_bundle(REPO),
        TIME_LIMIT,
        '<outputEntry id="time_limit_r0_o0"><text>2</text>',
        '<outputEntry id="time_limit_r0_o0"><text>3</text>',
        once=True,
    )


@pytest.fixture
def app(make_app, new_bundle, clock):
    """An app whose log holds a deploy (entry 1) and a calendar change (entry 2), by adm."""
    app = make_app()
    with app.app_context():
        deploy_bundle(
            db.session,
            services(app).runtime.registry,
            new_bundle,
            "adm",
            clock.now(),
            comment="汛期时限",
        )
        enter_calendar(db.session, CALENDAR_2027, clock.now(), "adm")
        db.session.commit()
        db.session.remove()
    return app


def in_app(app, work):
    with app.app_context():
        try:
            return work(db.session)
        finally:
            db.session.remove()


def make_digest(session):
    made = digests.make(session, START, "aud")
    session.commit()
    return made


def tamper(session, seq: int) -> None:
    """Change an entry's data in place, as someone with the database could."""
    row = session.get(AdminEvent, seq)
    data = json.loads(row.data)
    data["comment"] = "改过的"
    session.execute(update(AdminEvent).where(AdminEvent.seq == seq).values(data=json.dumps(data)))
    session.commit()


def rewrite_all(session) -> None:
    """Change entry 1 and recompute every hash after it: the chain is whole again on its own."""
    tamper(session, 1)
    prev = GENESIS
    for row in session.scalars(select(AdminEvent).order_by(AdminEvent.seq)):
        new_hash = chain_hash(prev, admin_log.entry_dict(row))
        session.execute(
            update(AdminEvent).where(AdminEvent.seq == row.seq).values(prev=prev, hash=new_hash)
        )
        prev = new_hash
    session.commit()
    session.expire_all()


def log_problems(session) -> list[digests.Problem]:
    return [p for p in digests.verify_all(session).problems if p.case == admin_log.LOG]


def state(html: str) -> tuple[str, str]:
    ok = re.search(r'data-testid="chain-ok">(.*?)</p>', html, re.S)
    if ok:
        return "ok", ok.group(1)
    broken = re.search(r'data-testid="chain-broken" data-seq="(\d+)">(.*?)</p>', html, re.S)
    assert broken, "the page shows the chain's state"
    return broken.group(1), broken.group(2)


def page(client, path: str = "/audit/admin-log") -> str:
    response = client.get(path)
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


# ------------------------------------------------------------------ verifying


def test_the_log_verifies_and_a_changed_entry_is_found(app):
    def recorded(session):
        rows = session.scalars(select(AdminEvent).order_by(AdminEvent.seq)).all()
        assert [(r.seq, r.type, r.actor) for r in rows] == [
            (1, "diagram_deployed", "adm"),
            (2, "calendar_changed", "adm"),
        ]
        assert admin_log.check(session) is None
        make_digest(session)
        assert digests.verify_all(session).ok
        tamper(session, 1)
        broken = admin_log.check(session)
        assert broken is not None and broken.seq == 1
        [problem] = log_problems(session)
        assert problem.seq == 1

    in_app(app, recorded)
    seq, text = state(page(web_client(app, "aud")))
    assert seq == "1" and "哈希与内容不符" in text
    html = page(web_client(app, "aud"))
    assert 'data-testid="entry-1"' in html
    entry = re.search(r'<li class="item broken" data-testid="entry-(\d+)"', html)
    assert entry and entry.group(1) == "1"  # the changed entry is marked where it is listed


def test_a_rewrite_of_the_whole_log_is_caught_against_the_digest(app):
    def rewritten(session):
        make_digest(session)
        rewrite_all(session)
        assert admin_log.check(session) is None  # whole again on its own
        [problem] = log_problems(session)
        assert problem.seq == 2 and "digest 1" in problem.reason

    in_app(app, rewritten)
    seq, text = state(page(web_client(app, "aud", "en")))
    assert seq == "2" and "does not match digest 1" in text


def test_a_rewrite_before_any_digest_is_not_caught_by_the_page_either(app):
    """Nothing outside the log holds its head yet: the page says verified, with the new head."""
    in_app(app, rewrite_all)
    assert state(page(web_client(app, "aud")))[0] == "ok"


# ------------------------------------------------------------------ the page


def test_the_page_shows_the_entries_in_words_newest_first(app):
    html = page(web_client(app, "aud"))
    seq, text = state(html)
    head = in_app(app, lambda s: admin_log.head(s)[1])
    assert seq == "ok" and "共 2 条" in text and head[:16] in text
    assert html.index('data-testid="entry-2"') < html.index('data-testid="entry-1"')
    assert "录入了 2027 年节假日安排：放假 2 天，调休上班 0 天。" in html
    assert re.search(r"部署了 case_loop 的版本 [0-9a-f]{12} 并启用。", html)
    assert "汛期时限" in html  # the comment, among the recorded fields

    english = page(web_client(app, "adm", "en"))
    assert "Entered the 2027 holiday arrangement: 2 holidays, 0 make-up working days." in english
    assert re.search(r"Deployed version [0-9a-f]{12} of case_loop and made it live\.", english)
    assert "Verified: 2 entries" in english

    only = page(web_client(app, "aud"), "/audit/admin-log?type=calendar_changed")
    assert 'data-testid="entry-2"' in only and 'data-testid="entry-1"' not in only
    assert '<option value="calendar_changed" selected>' in only


def test_the_page_pages_by_seq(app, clock):
    def more(session):
        for year in range(2030, 2085):
            enter_calendar(
                session,
                {"year": year, "holidays": [f"{year}-01-01"], "workdays": []},
                clock.now(),
                "adm",
            )
        session.commit()

    in_app(app, more)  # 57 entries: a page of 50, then 7
    client = web_client(app, "aud")
    first = page(client)
    assert 'data-testid="entry-57"' in first and 'data-testid="entry-8"' in first
    assert 'data-testid="entry-7"' not in first
    older = re.search(r'href="([^"]+)" data-testid="older"', first).group(1).replace("&amp;", "&")
    second = page(client, older)
    assert 'data-testid="entry-7"' in second and 'data-testid="entry-1"' in second
    assert 'data-testid="entry-8"' not in second and 'data-testid="older"' not in second


def test_the_audit_page_links_to_the_log_and_others_may_not_read_it(app):
    audit = page(web_client(app, "aud"), "/audit")
    assert 'href="/audit/admin-log" data-testid="admin-log-link"' in audit
    for username in ("gl1", "off1", "tl1"):
        assert web_client(app, username).get("/audit/admin-log").status_code == 403
    signed_out = app.test_client().get("/audit/admin-log")
    assert signed_out.status_code == 302 and "/login" in signed_out.headers["Location"]


# ------------------------------------------------------------------ the API


def test_the_api_lists_entries_for_auditors_and_administrators(app):
    client = app.test_client()
    for username in ("aud", "adm"):
        body = client.get(f"{API}/admin-log", headers=bearer(client, username)).get_json()
        assert [e["seq"] for e in body["items"]] == [2, 1]
        newest = body["items"][0]
        assert newest["type"] == "calendar_changed" and newest["actor"] == "adm"
        assert newest["data"] == {"year": 2027, "holidays": 2, "workdays": 0, "by": "adm"}
        assert newest["prev"] == body["items"][1]["hash"] and body["items"][1]["prev"] == GENESIS
        assert body["head"] == {"seq": 2, "hash": newest["hash"]}
        # Each entry's hash is the chain's: anyone can recompute it from the fields given.
        for entry in body["items"]:
            fields = {
                k: entry[k]
                for k in ("case", "seq", "at", "type", "actor", "task", "data", "diagram")
            }
            assert chain_hash(entry["prev"], fields) == entry["hash"]

    auditor = bearer(client, "aud")
    older = client.get(f"{API}/admin-log?before=2", headers=auditor).get_json()
    assert [e["seq"] for e in older["items"]] == [1]
    deploys = client.get(f"{API}/admin-log?type=diagram_deployed", headers=auditor).get_json()
    assert [e["type"] for e in deploys["items"]] == ["diagram_deployed"]


def test_the_api_refuses_others_and_bad_queries(app):
    client = app.test_client()
    response = client.get(f"{API}/admin-log", headers=bearer(client, "gl1"))
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "forbidden"
    assert client.get(f"{API}/admin-log").status_code == 401
    auditor = bearer(client, "aud")
    bad = client.get(f"{API}/admin-log?before=x&type=nothing", headers=auditor)
    assert bad.status_code == 400
    assert set(bad.get_json()["error"]["fields"]) == {"before", "type"}
    assert client.get(f"{API}/admin-log?before=0", headers=auditor).status_code == 400


def test_the_openapi_document_lists_the_admin_log(app):
    paths = app.test_client().get(f"{API}/openapi.json").get_json()["paths"]
    assert "/admin-log" in paths and "get" in paths["/admin-log"]


def test_entries_by_the_command_line_name_it_in_the_pages_language(app, clock):
    def by_cli(session):
        admin_log.record(session, clock.now(), "cli", "calendar_changed", {"year": 2028})
        session.commit()

    in_app(app, by_cli)
    assert '<span class="actor">命令行</span>' in page(web_client(app, "aud"))
    assert '<span class="actor">Command line</span>' in page(web_client(app, "aud", "en"))
