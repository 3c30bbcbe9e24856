"""Every path that checks a password is throttled alike, checks run a few at a time, and sessions
and tokens end when their person signs out, changes password or is deactivated.

Through Flask's test client: the web sign-in page and POST /api/v1/tokens, each request from an
address of our choosing. The clock is injected; waits are passed by moving it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from apps import build_app, dispose_app
from conftest import ORG_YAML

from engine.clock import FixedClock
from engine.models import Person
from engine.org import import_org
from engine.passwords import Passwords
from engine.signin import RULES
from webapp import services
from webapp.extensions import db

ATTACKER, OWNER = "203.0.113.7", "198.51.100.20"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 23, 2, 0, tzinfo=UTC))


@pytest.fixture
def app(tmp_path, clock):
    app = build_app(tmp_path / "signin.sqlite", ORG_YAML, clock)
    yield app
    dispose_app(app)


def web(client, username: str, password: str, address: str = ATTACKER):
    return client.post(
        "/login",
        data={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )


def api(client, username: str, password: str, address: str = ATTACKER):
    return client.post(
        "/api/v1/tokens",
        json={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )


def alert(response) -> str:
    return re.search(r'role="alert">([^<]*)<', response.get_data(as_text=True)).group(1)


# ------------------------------------------------------------------ throttling


def test_failures_slow_the_account_down_from_that_address_doubling_each_time(app, clock):
    client = app.test_client()
    free, _cap = RULES["pair"]
    for _ in range(free):
        assert web(client, "off1", "guess").status_code == 401
    waiting = web(client, "off1", "pw")  # answered at once: the password is not checked
    assert waiting.status_code == 429 and "1秒" in alert(waiting)
    clock.advance(seconds=1)
    assert web(client, "off1", "guess").status_code == 401  # checked again, wrong again
    assert web(client, "off1", "pw").status_code == 429
    clock.advance(seconds=1)
    assert web(client, "off1", "pw").status_code == 429  # the wait doubled to 2 s
    clock.advance(seconds=1)
    assert web(client, "off1", "pw").status_code == 302  # the right password, after the wait


def test_an_attacker_elsewhere_delays_the_owner_by_a_minute_at_most(app, clock):
    attacker = app.test_client()
    for _ in range(20):  # each guess as soon as it is let through
        response = web(attacker, "off1", "guess")
        while response.status_code == 429:
            clock.advance(seconds=int(response.headers["Retry-After"]))
            response = web(attacker, "off1", "guess")
        assert response.status_code == 401
    assert int(web(attacker, "off1", "pw").headers["Retry-After"]) == 15 * 60  # at the cap
    owner = app.test_client()
    refused = web(owner, "off1", "pw", address=OWNER)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) <= 60
    clock.advance(minutes=1)
    assert web(owner, "off1", "pw", address=OWNER).status_code == 302
    # The attacker's own address still waits for that account.
    assert web(attacker, "off1", "pw").status_code == 429


def test_an_address_trying_many_accounts_slows_down(app):
    client = app.test_client()
    free, _cap = RULES["addr"]
    for n in range(free):
        web(client, f"guess{n}", "x")
    assert web(client, "gl1", "pw").status_code == 429  # this address must wait
    assert web(app.test_client(), "gl1", "pw", address=OWNER).status_code == 302


def test_tokens_are_throttled_with_the_sign_in_page(app, clock):
    client = app.test_client()
    free, _cap = RULES["pair"]
    for _ in range(free):
        assert web(client, "off1", "guess").status_code == 401
    refused = api(client, "off1", "pw")  # the right password, on the other path
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "too_many_attempts"
    assert int(refused.headers["Retry-After"]) >= 1
    clock.advance(seconds=1)
    assert api(client, "off1", "wrong").status_code == 401
    assert web(client, "off1", "pw").status_code == 429  # the token path's failure counts too
    clock.advance(seconds=2)
    assert api(client, "off1", "pw").status_code == 201


def test_seventy_wrong_passwords_then_the_right_one_gets_no_token(app):
    client = app.test_client()
    answers = [api(client, "off1", f"guess{n}").status_code for n in range(70)]
    assert answers.count(401) == RULES["pair"][0]  # only the free failures were checked
    assert api(client, "off1", "pw").status_code == 429


def test_password_checks_run_a_few_at_a_time(app):
    """Each check costs an argon2 verification's memory: when every turn is taken, the caller
    is told to come back instead of queueing without limit."""
    signin = services(app).signin
    signin._turn_wait = 0  # don't wait for a turn in this test
    taken = 0
    while signin.turns.acquire(blocking=False):
        taken += 1
    try:
        assert taken == 2
        busy = api(app.test_client(), "off1", "pw")
        assert busy.status_code == 503 and busy.json["error"]["code"] == "busy"
        assert web(app.test_client(), "off1", "pw").status_code == 503
    finally:
        for _ in range(taken):
            signin.turns.release()
    assert api(app.test_client(), "off1", "pw").status_code == 201


# ------------------------------------------------------------------ revocation


def _token(client, username: str = "off1", password: str = "pw") -> dict:
    response = api(client, username, password, address=OWNER)
    assert response.status_code == 201, response.json
    return {"Authorization": f"Bearer {response.json['token']}"}


def test_signing_out_ends_a_replayed_session_cookie_and_every_token(app):
    client = app.test_client()
    headers = _token(client)
    assert web(client, "off1", "pw", address=OWNER).status_code == 302
    stolen = client.get_cookie("session").value
    assert client.get("/").status_code == 200
    client.post("/logout")

    replay = app.test_client()
    replay.set_cookie("session", stolen)
    assert replay.get("/").headers["Location"].startswith("/login")
    assert app.test_client().get("/api/v1/me", headers=headers).status_code == 401


def test_delete_tokens_revokes_the_calling_token_only(app):
    client = app.test_client()
    first, second = _token(client), _token(client)
    assert client.delete("/api/v1/tokens", headers=first).status_code == 204
    assert client.get("/api/v1/me", headers=first).status_code == 401
    assert client.get("/api/v1/me", headers=second).status_code == 200
    assert client.delete("/api/v1/tokens").status_code == 401


def test_changing_the_password_ends_other_sessions_and_tokens(app):
    mine, other = app.test_client(), app.test_client()
    headers = _token(other)
    assert web(mine, "off1", "pw", address=OWNER).status_code == 302
    assert web(other, "off1", "pw", address=OWNER).status_code == 302

    short = mine.post(
        "/account/password", data={"current": "pw", "new": "short", "confirm": "short"}
    )
    assert short.status_code == 400 and "至少 10 个字符" in short.get_data(as_text=True)
    wrong = mine.post(
        "/account/password",
        data={"current": "nope", "new": "a-long-passphrase", "confirm": "a-long-passphrase"},
    )
    assert wrong.status_code == 400 and "当前密码不正确" in wrong.get_data(as_text=True)
    changed = mine.post(
        "/account/password",
        data={"current": "pw", "new": "a-long-passphrase", "confirm": "a-long-passphrase"},
    )
    assert changed.status_code == 302
    assert mine.get("/").status_code == 200  # this session goes on
    assert other.get("/").headers["Location"].startswith("/login")
    assert other.get("/api/v1/me", headers=headers).status_code == 401
    assert web(app.test_client(), "off1", "pw", address=OWNER).status_code == 401
    assert web(app.test_client(), "off1", "a-long-passphrase", address=OWNER).status_code == 302


def _reimport(app, yaml: str, reset: bool = False) -> None:
    with app.app_context():
        import_org(db.session, yaml, Passwords(cheap=True), reset_passwords=reset)
        db.session.commit()


def test_a_password_reset_by_import_ends_sessions_and_tokens(app):
    client = app.test_client()
    headers = _token(client)
    assert web(client, "off1", "pw", address=OWNER).status_code == 302
    stolen = client.get_cookie("session").value
    _reimport(
        app,
        ORG_YAML.replace(
            "{username: off1, name: 周信息员, password: pw}",
            "{username: off1, name: 周信息员, password: new-password-1}",
        ),
        reset=True,
    )
    replay = app.test_client()
    replay.set_cookie("session", stolen)
    assert replay.get("/").headers["Location"].startswith("/login")
    assert client.get("/api/v1/me", headers=headers).status_code == 401
    assert web(app.test_client(), "off1", "new-password-1", address=OWNER).status_code == 302


def test_deactivation_ends_sessions_and_tokens_and_reactivation_does_not_revive_them(app):
    client = app.test_client()
    headers = _token(client)
    assert web(client, "off1", "pw", address=OWNER).status_code == 302
    stolen = client.get_cookie("session").value
    _reimport(app, ORG_YAML.replace("off1, name", "off1x, name"))
    assert client.get("/api/v1/me", headers=headers).status_code == 401
    _reimport(app, ORG_YAML)  # back in the file: active again, but old sessions stay ended
    with app.app_context():
        assert db.session.query(Person).filter_by(username="off1").one().active
    replay = app.test_client()
    replay.set_cookie("session", stolen)
    assert replay.get("/").headers["Location"].startswith("/login")
    assert client.get("/api/v1/me", headers=headers).status_code == 401
