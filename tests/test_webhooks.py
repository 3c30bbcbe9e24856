"""Webhooks go only to public addresses unless the server's operator allows a host
(GRIDLOOP_WEBHOOK_ALLOW): refused at import when the URL spells out a loopback, link-local or
private address, and at every delivery when the host resolves to one. A failed delivery keeps a
short reason of ours, never the remote's answer, and the operations page shows only that."""

from __future__ import annotations

import socket

import pytest
from apps import build_app, dispose_app
from conftest import ORG_YAML, START
from sqlalchemy import select
from test_notify import Receiver

from engine import notify
from engine.clock import FixedClock
from engine.models import Notification, Unit
from engine.notify import BlockedAddress, deliver_due, post_json, webhook_refusal
from engine.org import OrgFileError, import_org
from engine.passwords import Passwords
from webapp import services
from webapp.extensions import db

G01_HEAD = "            name: 一组\n            households: 4\n"


@pytest.fixture(autouse=True)
def no_allowance(monkeypatch):
    monkeypatch.delenv(notify.ALLOW_ENV, raising=False)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def org_with_hook(url: str) -> str:
    return ORG_YAML.replace(
        G01_HEAD, f"{G01_HEAD}            notify: [{{url: '{url}', format: json}}]\n"
    )


def grid(session) -> Unit:
    session.rollback()
    session.expire_all()
    return session.scalar(select(Unit).where(Unit.code == "V01-D1-G01"))


# ------------------------------------------------------------------ at import


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://172.16.5.4/hook",
        "http://192.168.1.10/hook",
        "http://0.0.0.0:9000/",
        "http://[::1]/hook",
        "http://[fd00::5]/hook",
        "http://[fe80::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://2130706433/hook",  # 127.0.0.1 as one number
        "http://127.1/hook",
        "http://0x7f.0.0.1/hook",
        "http://localhost:5000/hook",
        "https://metadata.localhost/",
        "http://100.64.0.1/hook",  # carrier-grade NAT
    ],
)
def test_a_webhook_at_a_private_address_is_refused_at_import_with_its_line(session, url):
    text = org_with_hook(url)
    with pytest.raises(OrgFileError) as caught:
        import_org(session, text, Passwords(cheap=True), now=START)
    line = next(n for n, x in enumerate(text.splitlines(), 1) if "notify:" in x)
    ((at, path, message),) = caught.value.errors
    assert (at, path) == (line, "villages[0].districts[0].grids[0].notify[0].url")
    assert "GRIDLOOP_WEBHOOK_ALLOW" in message
    assert grid(session).settings in (None, {})


@pytest.mark.parametrize(
    ("allow", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080/hook"),
        ("10.0.0.0/8", "http://10.0.0.1/hook"),
        ("relay.intranet, 169.254.169.254", "http://169.254.169.254/latest/"),
        ("localhost", "http://localhost:5000/hook"),
        ("::1", "http://[::1]/hook"),
    ],
)
def test_an_allowed_host_may_be_named(session, monkeypatch, allow, url):
    monkeypatch.setenv("GRIDLOOP_WEBHOOK_ALLOW", allow)
    import_org(session, org_with_hook(url), Passwords(cheap=True), now=START)
    session.commit()
    assert grid(session).settings == {"notify": [{"url": url, "format": "json"}]}


@pytest.mark.parametrize(
    "url", ["https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k", "http://8.8.8.8/hook"]
)
def test_public_hosts_need_no_allowance(url):
    assert webhook_refusal(url) is None


# ------------------------------------------------------------------ at delivery


def fake_dns(monkeypatch, answers: dict[str, list[str]]) -> list[str]:
    """Names resolve to `answers`; everything else as usual. Returns the names looked up."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        asked.append(host)
        if host not in answers:
            return real(host, port, *args, **kwargs)
        return [
            (
                socket.AF_INET6 if ":" in ip else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (ip, port, 0, 0) if ":" in ip else (ip, port),
            )
            for ip in answers[host]
        ]

    monkeypatch.setattr(notify.socket, "getaddrinfo", getaddrinfo)
    return asked


def hook_on_grid(gl, url: str) -> None:
    """A webhook written into the settings by other means than the import (which refuses it)."""
    unit = grid(gl.session)
    unit.settings = {"notify": [{"url": url, "format": "json"}]}
    gl.session.commit()


def test_a_name_resolving_to_loopback_gets_no_post(gl, receiver, monkeypatch):
    port = receiver.server.server_address[1]
    asked = fake_dns(monkeypatch, {"hooks.example": ["127.0.0.1"]})
    hook_on_grid(gl, f"http://hooks.example:{port}/hook")
    gl.accepted()

    assert deliver_due(gl.session, START) == 0
    assert receiver.requests == []
    assert "hooks.example" in asked
    gl.session.rollback()
    (row,) = gl.session.scalars(select(Notification))
    assert row.delivered_at is None and row.attempts == 1
    assert row.last_error == "blocked (not a public address)"


def test_localhost_itself_gets_no_post_without_an_allowance(gl, receiver):
    hook_on_grid(gl, receiver.url().replace("127.0.0.1", "localhost"))
    gl.accepted()
    assert deliver_due(gl.session, START) == 0
    assert receiver.requests == []


def test_one_private_address_among_public_ones_blocks_the_post(receiver, monkeypatch):
    port = receiver.server.server_address[1]
    fake_dns(monkeypatch, {"hooks.example": ["8.8.8.8", "127.0.0.1"]})
    with pytest.raises(BlockedAddress):
        post_json(f"http://hooks.example:{port}/hook", b"{}")
    assert receiver.requests == []


def test_post_json_refuses_a_literal_loopback_address_without_connecting(receiver):
    with pytest.raises(BlockedAddress):
        post_json(receiver.url(), b"{}")
    assert receiver.requests == []


def test_an_allowed_address_is_posted_to_the_checked_address(gl, receiver, monkeypatch):
    """The post goes to the address that was checked, with the URL's host in Host: a second
    lookup (which a rebinding DNS server could answer differently) never happens."""
    monkeypatch.setenv("GRIDLOOP_WEBHOOK_ALLOW", "127.0.0.0/8")
    port = receiver.server.server_address[1]
    asked = fake_dns(monkeypatch, {"hooks.example": ["127.0.0.1"]})
    hook_on_grid(gl, f"http://hooks.example:{port}/hook?x=1")
    gl.accepted()

    assert deliver_due(gl.session, START) == 1
    (path, headers, _body) = receiver.requests[0]
    assert path == "/hook?x=1" and headers["Host"] == f"hooks.example:{port}"
    assert asked.count("hooks.example") == 1


def test_an_allowed_host_name_is_posted_to(gl, receiver, monkeypatch):
    monkeypatch.setenv("GRIDLOOP_WEBHOOK_ALLOW", "localhost")
    hook_on_grid(gl, receiver.url().replace("127.0.0.1", "localhost"))
    gl.accepted()
    assert deliver_due(gl.session, START) == 1
    assert len(receiver.requests) == 1


# ------------------------------------------------------------------ what a failure keeps


def test_a_failed_delivery_keeps_the_status_not_the_answer(gl, receiver, monkeypatch):
    monkeypatch.setenv("GRIDLOOP_WEBHOOK_ALLOW", "127.0.0.1")
    hook_on_grid(gl, receiver.url())
    gl.accepted()
    receiver.fail_next = 1  # answers 500 with the body "boom"

    assert deliver_due(gl.session, START) == 0
    gl.session.rollback()
    (row,) = gl.session.scalars(select(Notification))
    assert row.last_error == "HTTP 500"


def test_wecom_errcode_keeps_the_code_not_the_message(gl, receiver, monkeypatch):
    monkeypatch.setenv("GRIDLOOP_WEBHOOK_ALLOW", "127.0.0.1")
    unit = grid(gl.session)
    unit.settings = {"notify": [{"url": receiver.url(), "format": "wecom"}]}
    gl.session.commit()
    gl.accepted()
    receiver.answer = b'{"errcode": 40001, "errmsg": "internal host db01.intra said no"}'

    assert deliver_due(gl.session, START) == 0
    gl.session.rollback()
    (row,) = gl.session.scalars(select(Notification))
    assert row.last_error == "errcode 40001"


def test_the_ops_page_shows_only_a_short_reason(tmp_path):
    clock = FixedClock(START)
    app = build_app(tmp_path / "ops.sqlite", ORG_YAML, clock)
    try:
        with app.app_context():
            runtime = services(app).runtime
            from engine.access import viewer_of
            from engine.models import Person

            officer = viewer_of(
                db.session,
                db.session.scalars(select(Person).where(Person.username == "off1")).one(),
            )
            case = runtime.open_case(db.session, officer, title="路灯", grid="V01-D1-G01")
            db.session.add(
                Notification(
                    case_id=case.id,
                    kind="assigned",
                    url="https://hooks.example/g",
                    format="json",
                    payload={},
                    created_at=START,
                    attempts=8,
                    next_attempt_at=START,
                    failed_at=START,
                    # a row stored before failures kept only a short reason
                    last_error="HTTP 500: <html>db01.intra: password=hunter2</html>",
                )
            )
            db.session.commit()
        client = app.test_client()
        client.post("/login", data={"username": "adm", "password": "pw"})
        html = client.get("/admin/ops").get_data(as_text=True)
        assert 'data-testid="failure-reason">HTTP 500<' in html
        assert "hunter2" not in html and "db01" not in html
    finally:
        dispose_app(app)
