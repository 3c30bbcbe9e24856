"""A sign-in with the organisation file's initial password asks for a new one (issue 8, item 5).

`org import` marks the people it creates, and those whose password `--reset-passwords` sets, as
still having the file's password (`Person.password_initial`). On the web such a person is sent to
/account/password after signing in, and every other page sends them back there until they have
chosen their own (argon2, the current password required). The API still issues their token and
adds `"password_change_required": true` to its answer. The demo's published logins are never
asked. People already in a database upgraded to 0005 are not asked either (nothing tells their
password's origin).

The test organisation (conftest.ORG_YAML) is imported as people who have chosen their passwords
(apps.import_test_org); here people come from engine.org.import_org itself, as in production.

The migration test runs on the backend of the pass, with test_migrations' fixtures.
"""

# ruff: noqa: F401, F811

from __future__ import annotations

from datetime import UTC, datetime

import apps
import pytest
from apps import build_app, dispose_app
from conftest import ORG_YAML
from sqlalchemy import MetaData, Table, select

from engine.clock import FixedClock
from engine.demo import load_demo
from engine.demo_org import DEMO_LOGINS, DEMO_PASSWORD
from engine.models import Person
from engine.org import import_org
from engine.passwords import Passwords
from engine.specs import deploy, load_bundle
from engine.storage import create_schema, upgrade_schema
from webapp import create_app, services
from webapp.extensions import db

CHANGE = "/account/password"
NEWBIE = "{username: new1, name: 新信息员, password: first-pw-1}"
# The test organisation with one more officer in V01-D1-G01, who comes with the file's password.
WITH_NEWBIE = ORG_YAML.replace(
    "              - {username: off1b, name: 吴信息员, password: pw}\n",
    "              - {username: off1b, name: 吴信息员, password: pw}\n"
    f"              - {NEWBIE}\n",
)
NOTICE_ZH = "您使用的是管理员分配的初始密码"
NOTICE_EN = "You signed in with the initial password your administrator gave you."
CHOSEN = "my-own-passphrase"


def _import(app, yaml: str, reset: bool = False) -> None:
    with app.app_context():
        import_org(db.session, yaml, Passwords(cheap=True), reset_passwords=reset)
        db.session.commit()


@pytest.fixture
def app(make_app):
    """The test organisation (passwords chosen), then new1 added by a real import."""
    app = make_app()
    _import(app, WITH_NEWBIE)
    return app


def _person(app, username: str) -> Person:
    with app.app_context():
        person = db.session.scalars(select(Person).where(Person.username == username)).one()
        db.session.expunge(person)
        return person


def _login(client, username: str, password: str):
    return client.post("/login", data={"username": username, "password": password})


def _change(client, current: str, new: str, confirm: str | None = None):
    return client.post(CHANGE, data={"current": current, "new": new, "confirm": confirm or new})


def test_the_import_marks_new_people_and_only_them(app):
    assert _person(app, "new1").password_initial is True
    assert _person(app, "off1").password_initial is False  # conftest: chosen
    _import(app, WITH_NEWBIE)  # a plain re-import changes no one's mark
    assert _person(app, "new1").password_initial is True
    assert _person(app, "off1").password_initial is False


def test_signing_in_with_the_initial_password_leads_to_the_change_page(app):
    client = app.test_client()
    response = _login(client, "new1", "first-pw-1")
    assert response.status_code == 302 and response.headers["Location"] == CHANGE
    page = client.get(CHANGE)
    assert page.status_code == 200
    assert NOTICE_ZH in page.get_data(as_text=True)  # Chinese by default
    assert 'data-testid="password-initial"' in page.get_data(as_text=True)

    english = app.test_client()
    english.set_cookie("lang", "en")
    _login(english, "new1", "first-pw-1")
    assert NOTICE_EN in english.get(CHANGE).get_data(as_text=True)


def test_a_login_link_does_not_skip_the_change(app):
    client = app.test_client()
    response = client.post(
        "/login?next=/cases", data={"username": "new1", "password": "first-pw-1"}
    )
    assert response.headers["Location"] == CHANGE


@pytest.mark.parametrize("path", ["/", "/cases", "/cases/new", "/admin/ops", "/login"])
def test_every_other_page_sends_them_back_to_the_change_page(app, path):
    client = app.test_client()
    _login(client, "new1", "first-pw-1")
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == CHANGE
    assert client.get(path, follow_redirects=True).request.path == CHANGE


def test_what_stays_open_with_the_initial_password(app):
    client = app.test_client()
    _login(client, "new1", "first-pw-1")
    assert client.get("/static/css/app.css").status_code == 200
    assert client.get("/no/such/page").status_code == 404  # error pages answer as usual
    switched = client.get(f"/lang/en?next={CHANGE}")  # read the change page in English
    assert switched.status_code == 302 and switched.headers["Location"] == CHANGE
    signed_out = client.post("/logout")
    assert signed_out.headers["Location"].startswith("/login")
    assert client.get("/").headers["Location"].startswith("/login")


def test_a_wrong_current_password_keeps_them_on_the_change_page(app):
    client = app.test_client()
    _login(client, "new1", "first-pw-1")
    wrong = _change(client, "not-the-one", CHOSEN)
    assert wrong.status_code == 400 and "当前密码不正确" in wrong.get_data(as_text=True)
    same = _change(client, "first-pw-1", "first-pw-1")
    assert same.status_code == 400 and "新密码不能与当前密码相同" in same.get_data(as_text=True)
    assert _person(app, "new1").password_initial is True
    assert client.get("/").headers["Location"] == CHANGE


def test_after_the_change_they_reach_their_inbox_and_are_not_asked_again(app):
    before = _person(app, "new1").password_hash
    client = app.test_client()
    _login(client, "new1", "first-pw-1")
    changed = _change(client, "first-pw-1", CHOSEN)
    assert changed.status_code == 302 and changed.headers["Location"] == "/"
    assert client.get("/").status_code == 200  # the inbox

    person = _person(app, "new1")
    assert person.password_initial is False
    assert person.password_hash.startswith("$argon2") and person.password_hash != before
    assert services(app).passwords.verify(person.password_hash, CHOSEN)

    again = app.test_client()
    assert _login(again, "new1", "first-pw-1").status_code == 401
    response = _login(again, "new1", CHOSEN)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert again.get("/").status_code == 200
    assert NOTICE_ZH not in again.get(CHANGE).get_data(as_text=True)


def test_a_reset_by_import_asks_again(app):
    client = app.test_client()
    _login(client, "new1", "first-pw-1")
    _change(client, "first-pw-1", CHOSEN)
    assert _person(app, "new1").password_initial is False

    _import(app, WITH_NEWBIE.replace(NEWBIE, NEWBIE.replace("first-pw-1", "second-pw-2")), True)
    for username in ("new1", "off1"):  # everyone in the file gets the file's password again
        assert _person(app, username).password_initial is True
    response = _login(app.test_client(), "new1", "second-pw-2")
    assert response.headers["Location"] == CHANGE
    response = _login(app.test_client(), "off1", "pw")
    assert response.headers["Location"] == CHANGE


def test_the_api_issues_the_token_and_says_a_change_is_required(app):
    client = app.test_client()
    initial = client.post("/api/v1/tokens", json={"username": "new1", "password": "first-pw-1"})
    assert initial.status_code == 201
    body = initial.get_json()
    assert body["password_change_required"] is True
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200 and me.get_json()["username"] == "new1"  # clients go on working

    chosen = client.post("/api/v1/tokens", json={"username": "off1", "password": "pw"})
    assert chosen.status_code == 201
    assert set(chosen.get_json()) == {"token"}  # the answer existing clients know


def test_the_demo_people_are_not_asked(tmp_path, clock):
    """`gridloop demo` publishes its logins: they sign in straight to their pages."""
    config = {
        "SQLALCHEMY_DATABASE_URI": apps.databases().new(tmp_path / "demo.sqlite"),
        "GRIDLOOP_CHEAP_PASSWORDS": True,
        "TESTING": True,
        "WTF_CSRF_ENABLED": False,
    }
    app = create_app(config, clock=clock)
    try:
        with app.app_context():
            create_schema(db.engine)
            runtime = services(app).runtime
            deploy(db.session, runtime.registry, load_bundle(apps.REPO), "system", clock.now())
            db.session.commit()
            load_demo(db.session, runtime, services(app).passwords, cases=0)
            asked = db.session.scalars(select(Person.username).where(Person.password_initial))
            assert list(asked) == []
            db.session.remove()
        _tier, username = DEMO_LOGINS[0]
        client = app.test_client()
        response = _login(client, username, DEMO_PASSWORD)
        assert response.status_code == 302 and response.headers["Location"] == "/"
        assert client.get("/").status_code == 200
    finally:
        dispose_app(app)


def test_the_upgrade_to_0005_keeps_people_and_does_not_ask_them(new_database, engines):
    engine = engines(new_database())
    upgrade_schema(engine, "0004_work_item_warn_at")
    person = Table("person", MetaData(), autoload_with=engine)
    assert "password_initial" not in person.c
    with engine.begin() as conn:
        conn.execute(
            person.insert().values(
                id=7, username="vs1", name="赵书记", password_hash="$argon2id$x", active=True
            )
        )

    result = upgrade_schema(engine, "0005_person_password_initial")
    assert (result.before, result.after) == (
        "0004_work_item_warn_at",
        "0005_person_password_initial",
    )
    upgraded = Table("person", MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        row = conn.execute(select(upgraded)).one()
    assert (row.id, row.username, row.name, row.password_hash, row.active) == (
        7,
        "vs1",
        "赵书记",
        "$argon2id$x",
        True,
    )
    assert row.password_initial is False
