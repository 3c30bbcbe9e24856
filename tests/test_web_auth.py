"""Signing in to the web pages: sessions, the failed-login limits, CSRF, language, error pages."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apps import build_app, dispose_app
from conftest import ORG_YAML
from sqlalchemy import select

from engine.access import viewer_of
from engine.clock import FixedClock
from engine.models import Person, WorkItem
from engine.org import import_org
from engine.passwords import Passwords
from webapp import services
from webapp.extensions import db

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def auth_clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 23, 2, 0, tzinfo=UTC))


def _app(tmp_path, clock, csrf: bool):
    return build_app(tmp_path / "auth.sqlite", ORG_YAML, clock, csrf=csrf)


@pytest.fixture
def auth_app(tmp_path, auth_clock):
    app = _app(tmp_path, auth_clock, csrf=False)
    yield app
    dispose_app(app)


def _login(client, username: str, password: str):
    return client.post("/login", data={"username": username, "password": password})


def test_sign_in_lands_in_the_inbox_and_sign_out_ends_the_session(auth_app):
    client = auth_app.test_client()
    assert client.get("/").status_code == 302  # not signed in: to the login page

    response = _login(client, "off1", "pw")
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert client.get("/").status_code == 200

    client.post("/logout")
    assert client.get("/").headers["Location"].startswith("/login")


def test_a_wrong_password_and_an_unknown_user_get_the_same_message(auth_app):
    client = auth_app.test_client()
    wrong = _login(client, "off1", "nope")
    unknown = _login(client, "nobody", "nope")
    assert wrong.status_code == unknown.status_code == 401

    def alert(response):
        return re.search(r'role="alert">([^<]*)<', response.get_data(as_text=True)).group(1)

    assert alert(wrong) == alert(unknown) == "用户名或密码错误。"


def test_a_deactivated_person_is_signed_out(auth_app):
    client = auth_app.test_client()
    _login(client, "off1", "pw")
    with auth_app.app_context():
        import_org(db.session, ORG_YAML.replace("off1, name", "off1x, name"), Passwords(cheap=True))
        db.session.commit()
    assert client.get("/").status_code == 302


def test_a_login_link_never_forwards_to_another_site(auth_app):
    client = auth_app.test_client()
    response = client.post(
        "/login?next=//evil.example/x", data={"username": "off1", "password": "pw"}
    )
    assert response.headers["Location"] == "/"


def test_posts_without_a_csrf_token_are_refused(tmp_path, auth_clock):
    app = _app(tmp_path, auth_clock, csrf=True)
    client = app.test_client()
    assert _login(client, "off1", "pw").status_code == 400
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    ok = client.post("/login", data={"username": "off1", "password": "pw", "csrf_token": token})
    assert ok.status_code == 302
    assert client.post("/logout").status_code == 400  # signed in, still no token: refused


def test_english_on_request_and_friendly_error_pages(auth_app):
    client = auth_app.test_client()
    page = client.get("/nowhere")
    assert page.status_code == 404 and "未找到" in page.get_data(as_text=True)
    assert "返回首页" in page.get_data(as_text=True)

    client.get("/lang/en?next=/login")
    english = client.get("/login").get_data(as_text=True)
    assert "Sign in" in english and "登录" not in english
    assert client.get("/nowhere").get_data(as_text=True).count("Not found") >= 1


def test_the_operations_page_is_for_administrators_and_shows_the_timer_backlog(
    auth_app, auth_clock
):
    with auth_app.app_context():
        runtime = services(auth_app).runtime
        person = db.session.scalars(select(Person).where(Person.username == "off1")).one()
        officer = viewer_of(db.session, person)
        case = runtime.open_case(db.session, officer, title="路灯", grid="V01-D1-G01")
        item = db.session.scalars(select(WorkItem).where(WorkItem.case_id == case.id)).one()
        accept = {"valid": True, "category": "dispute", "severity": "normal"}
        runtime.complete(db.session, officer, item.id, accept)
    officer_client = auth_app.test_client()
    _login(officer_client, "off1", "pw")
    assert officer_client.get("/admin/ops").status_code == 403

    admin = auth_app.test_client()
    _login(admin, "adm", "pw")
    assert re.search(r'data-testid="overdue">0<', admin.get("/admin/ops").get_data(as_text=True))
    auth_clock.advance(hours=25)  # both timers of the grid item are due; nothing fired them
    html = admin.get("/admin/ops").get_data(as_text=True)
    assert re.search(r'data-testid="pending">2<', html)
    assert re.search(r'data-testid="overdue">2<', html)
    lag = int(re.search(r'data-testid="lag">(\d+) 秒', html).group(1))
    assert lag == int((timedelta(hours=25) - timedelta(hours=19.2)).total_seconds())  # 80% timer
    assert "未配置 Redis" in html
    # An administrator with no other position lands here, and the menu names the page.
    assert admin.get("/").headers["Location"] == "/admin/ops"
