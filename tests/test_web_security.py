"""What every answer carries and what every request may hold (webapp/security.py): security
headers, cookies, trusted proxies, the request size limit, hostile JSON bodies, unsafe `next=`
targets, the diagram XML as a download, and the `?unit=` filter that must not tell which unit
codes exist. Through Flask's test client, on the conftest organisation (ORG_YAML)."""

from __future__ import annotations

import io
import re
import tracemalloc
from datetime import UTC, datetime

import pytest
from apps import bearer, build_app, dispose_app
from conftest import ORG_YAML
from flask import request
from sqlalchemy import select

from engine.clock import FixedClock
from engine.models import LoginFailure
from webapp.extensions import db

API = "/api/v1"
GRID = "V01-D1-G01"
MIB = 1024 * 1024


@pytest.fixture
def sec_clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 23, 2, 0, tzinfo=UTC))


@pytest.fixture
def make_app(tmp_path, sec_clock):
    """make_app(csrf=False) -> a fresh app, built after any monkeypatched environment."""
    apps = []

    def make(csrf: bool = False):
        app = build_app(tmp_path / f"sec{len(apps)}.sqlite", ORG_YAML, sec_clock, csrf=csrf)
        apps.append(app)
        return app

    yield make
    for app in apps:
        dispose_app(app)


@pytest.fixture
def sec_app(make_app):
    return make_app()


def sign_in(client, username: str = "off1"):
    response = client.post("/login", data={"username": username, "password": "pw"})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return response


def policy(response) -> dict[str, str]:
    """The Content-Security-Policy as {directive: sources}."""
    parts = [p.strip() for p in response.headers["Content-Security-Policy"].split(";")]
    return {p.split(" ", 1)[0]: (p.split(" ", 1) + [""])[1] for p in parts if p}


def assert_error(response, status: int, code: str | None = None) -> dict:
    """A JSON answer in the DESIGN §8 shape {error: {code, message, fields?}}."""
    assert response.status_code == status, (response.status_code, response.get_data()[:300])
    assert response.is_json
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) <= {"code", "message", "fields"}
    assert body["error"]["code"] and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def assert_common_headers(response) -> None:
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    csp = policy(response)
    assert csp["default-src"] == "'self'"
    assert csp["object-src"] == "'none'"
    assert csp["base-uri"] == "'self'"
    assert csp["form-action"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    for directive in ("script-src", "style-src"):
        assert "unsafe" not in csp.get(directive, ""), csp
    assert not any(d.endswith("-attr") or d.endswith("-elem") for d in csp), csp


# ------------------------------------------------------------------ headers


def test_a_page_carries_the_security_headers_and_no_store(sec_app):
    response = sec_app.test_client().get("/login")
    assert response.status_code == 200
    assert_common_headers(response)
    assert response.headers["Cache-Control"] == "no-store"


def test_inline_style_and_script_run_only_with_this_requests_nonce(sec_app):
    client = sec_app.test_client()
    sign_in(client, "off1")
    pages = [client.get(path) for path in ("/", "/cases/new", "/", "/cases/new")]
    nonces = []
    for page in pages:
        assert page.status_code == 200, page.request.path
        assert_common_headers(page)
        html = page.get_data(as_text=True)
        csp = policy(page)
        nonce = re.fullmatch(r"'self' 'nonce-([\w-]{20,})'", csp["script-src"]).group(1)
        assert csp["style-src"] == f"'self' 'nonce-{nonce}'"
        inline = re.findall(r"<(style|script)(\s[^>]*)?>", html)
        assert inline, page.request.path
        for tag, attributes in inline:
            assert f'nonce="{nonce}"' in attributes or "src=" in attributes, (tag, attributes)
        nonces.append(nonce)
    assert len(set(nonces)) == len(nonces)  # a fresh nonce for every answer


def test_signed_in_pages_are_not_stored(sec_app):
    client = sec_app.test_client()
    sign_in(client, "off1")
    for path in ("/", "/cases/mine", "/cases/new"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store", path


def test_api_answers_carry_the_headers_and_no_store(sec_app):
    client = sec_app.test_client()
    headers = bearer(client, "off1")
    for response in (
        client.get(f"{API}/me", headers=headers),
        client.get(f"{API}/openapi.json"),
        client.get(f"{API}/me"),  # 401
    ):
        assert_common_headers(response)
        assert response.headers["Cache-Control"] == "no-store"


def test_static_files_keep_their_caching_and_get_nosniff(sec_app):
    client = sec_app.test_client()
    for path in ("/static/css/app.css", "/static/js/diagram.js"):
        response = client.get(path)
        assert response.status_code == 200
        assert_common_headers(response)
        assert "no-store" not in response.headers.get("Cache-Control", "")
        assert response.headers.get("ETag") or response.headers.get("Last-Modified")
        response.close()


# ------------------------------------------------------------------ cookies and proxies


def session_cookie(response) -> str:
    found = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert found, response.headers.getlist("Set-Cookie")
    return found[0]


def test_the_session_cookie_is_samesite_lax_and_httponly(sec_app):
    cookie = session_cookie(sign_in(sec_app.test_client()))
    attributes = {a.strip().split("=")[0].lower(): a for a in cookie.split(";")[1:]}
    assert attributes["samesite"].strip() == "SameSite=Lax"
    assert "httponly" in attributes
    assert "secure" not in attributes  # plain http by default, as `make run` serves
    assert sec_app.config["REMEMBER_COOKIE_SAMESITE"] == "Lax"
    assert sec_app.config["REMEMBER_COOKIE_HTTPONLY"] is True


def test_cookies_are_secure_when_configured(monkeypatch, make_app):
    monkeypatch.setenv("GRIDLOOP_SECURE_COOKIES", "1")
    app = make_app()
    cookie = session_cookie(sign_in(app.test_client()))
    assert "secure" in [a.strip().lower() for a in cookie.split(";")]
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["REMEMBER_COOKIE_SECURE"] is True


def add_echo(app) -> None:
    """A route that tells the address and scheme the app sees."""
    app.add_url_rule("/_seen", "seen", lambda: f"{request.remote_addr} {request.scheme}")


FORWARDED = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7", "X-Forwarded-Proto": "https"}


def test_no_proxy_is_trusted_by_default(sec_app):
    add_echo(sec_app)
    seen = sec_app.test_client().get("/_seen", headers=FORWARDED)
    assert seen.get_data(as_text=True) == "127.0.0.1 http"


def test_trusted_proxies_give_the_client_address_to_the_sign_in_limits(monkeypatch, make_app):
    monkeypatch.setenv("GRIDLOOP_TRUSTED_PROXIES", "1")
    app = make_app()
    add_echo(app)
    client = app.test_client()
    # One proxy: its own X-Forwarded-For entry is the client; anything before it is the
    # client's say-so and not trusted.
    assert client.get("/_seen", headers=FORWARDED).get_data(as_text=True) == "203.0.113.7 https"
    client.post("/login", data={"username": "off1", "password": "wrong"}, headers=FORWARDED)
    with app.app_context():
        keys = set(db.session.scalars(select(LoginFailure.key)))
    assert "addr:203.0.113.7" in keys and not any("127.0.0.1" in k for k in keys), keys

    monkeypatch.setenv("GRIDLOOP_TRUSTED_PROXIES", "2")
    two = make_app()
    add_echo(two)
    # Two proxies: the outer one terminated TLS, the inner one spoke http to the app.
    chain = {**FORWARDED, "X-Forwarded-Proto": "https, http"}
    seen = two.test_client().get("/_seen", headers=chain)
    assert seen.get_data(as_text=True) == "198.51.100.1 https"


def test_a_bad_trusted_proxies_value_is_refused_at_start(monkeypatch, make_app):
    monkeypatch.setenv("GRIDLOOP_TRUSTED_PROXIES", "yes")
    with pytest.raises(ValueError, match="GRIDLOOP_TRUSTED_PROXIES"):
        make_app()


# ------------------------------------------------------------------ the diagram XML


def test_the_diagram_xml_is_a_download_that_runs_nothing(sec_app):
    client = sec_app.test_client()
    opened = client.post(
        f"{API}/cases",
        json={"title": "路灯坏了", "description": "村口路灯不亮", "grid": GRID},
        headers=bearer(client, "off1"),
    )
    assert opened.status_code == 201, opened.get_json()
    number = opened.get_json()["number"]
    sign_in(client, "off1")
    response = client.get(f"/cases/{number}/diagram.bpmn")
    assert response.status_code == 200
    assert response.mimetype == "application/xml"
    assert b"bpmn" in response.data
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    csp = policy(response)
    assert csp["default-src"] == "'none'" and "sandbox" in csp
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment") and f"{number}.bpmn" in disposition


# ------------------------------------------------------------------ request size


class Body(io.RawIOBase):
    """A request body of `size` bytes made on demand, that counts what the server reads."""

    def __init__(self, size: int, fill: bytes = b"["):
        self.size, self.fill, self.pos, self.read_bytes = size, fill, 0, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: 0, 1: self.pos, 2: self.size}[whence] + offset
        return self.pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self.size - self.pos))
        buffer[:n] = self.fill * n
        self.pos += n
        self.read_bytes += n
        return n


def test_a_100_mb_json_body_is_refused_before_it_is_read(sec_app):
    client = sec_app.test_client()
    client.get(f"{API}/openapi.json")  # warm up: imports and first-request work are not measured
    body = Body(100 * MIB)
    tracemalloc.start()
    try:
        response = client.post(f"{API}/tokens", input_stream=body, content_type="application/json")
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_error(response, 413, "too_large")
    assert body.read_bytes == 0
    assert peak < 4 * MIB, peak  # the body was not held: well under 1% of it


def test_a_streamed_body_without_length_stops_at_the_limit(sec_app):
    """Chunked transfer (no Content-Length): the server reads at most the limit, then 413."""
    body = Body(100 * MIB)
    response = sec_app.test_client().post(
        f"{API}/tokens",
        input_stream=body,
        content_type="application/json",
        environ_overrides={"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True},
    )
    assert_error(response, 413, "too_large")
    assert body.read_bytes <= MIB + 64 * 1024


def test_a_too_large_form_is_413_on_pages(make_app):
    for csrf in (False, True):
        body = Body(100 * MIB, fill=b"a")
        response = (
            make_app(csrf=csrf)
            .test_client()
            .post("/login", input_stream=body, content_type="application/x-www-form-urlencoded")
        )
        assert response.status_code == 413, response.status_code
        assert response.mimetype == "text/html"
        assert body.read_bytes == 0
        assert_common_headers(response)


def test_the_limit_is_1_mib_and_configurable(sec_app):
    client = sec_app.test_client()
    assert sec_app.config["MAX_CONTENT_LENGTH"] == MIB
    padded = {"username": "x" * (MIB - 100), "password": "pw"}
    error = assert_error(client.post(f"{API}/tokens", json=padded), 400, "invalid")
    assert set(error["fields"]) == {"username"}  # under the limit: read and validated
    sec_app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    assert_error(client.post(f"{API}/tokens", json=padded), 413, "too_large")


# ------------------------------------------------------------------ hostile JSON


def post_raw(client, path: str, data: bytes, headers: dict | None = None):
    return client.post(path, data=data, content_type="application/json", headers=headers)


def test_deeply_nested_json_is_400(sec_app):
    client = sec_app.test_client()
    headers = bearer(client, "off1")
    deep = b"[" * 100_000
    wrapped = b'{"username": "off1", "password": ' + b"[" * 100_000
    closed = (
        b'{"title": "t", "grid": "' + GRID.encode() + b'", "x": ' + b"[" * 40 + b"]" * 40 + b"}"
    )
    for path, data in [
        (f"{API}/tokens", deep),
        (f"{API}/tokens", b"{" * 100_000),
        (f"{API}/tokens", wrapped),
        (f"{API}/cases", deep),
        (f"{API}/cases", closed),  # valid JSON, but deeper than any form needs
    ]:
        error = assert_error(post_raw(client, path, data, headers), 400, "invalid")
        assert set(error.get("fields", {})) == {"body"}
    # On a work item, who is asking comes first (DESIGN §4): 404 for an item that is not the
    # caller's, the 400 for one that is.
    nested = b'{"data": ' + b'{"a": ' * 50_000
    assert_error(post_raw(client, f"{API}/work-items/999999/complete", nested, headers), 404)
    number = client.post(f"{API}/cases", json={"title": "t", "grid": GRID}, headers=headers)
    assert number.status_code == 201, number.get_json()
    inbox = client.get(f"{API}/inbox", headers=headers).get_json()["items"]
    own = next(i["id"] for i in inbox if i["case"]["number"] == number.get_json()["number"])
    error = assert_error(
        post_raw(client, f"{API}/work-items/{own}/complete", nested, headers), 400, "invalid"
    )
    assert set(error.get("fields", {})) == {"body"}


def test_moderate_nesting_still_reaches_validation(sec_app):
    client = sec_app.test_client()
    body = {"username": [[["off1"]]], "password": "pw"}
    error = assert_error(client.post(f"{API}/tokens", json=body), 400, "invalid")
    assert set(error["fields"]) == {"username"}


def test_json_that_is_not_utf8_not_an_object_or_not_storable_is_400(sec_app):
    client = sec_app.test_client()
    for data in [
        b'{"username": "off1\xff", "password": "pw"}',  # not UTF-8
        '{"username": "周", "password": "pw"}'.encode("gbk"),  # another encoding
        '{"username": "off1", "password": "pw"}'.encode("utf-16"),
        b'{"username": "\\ud800", "password": "pw"}',  # a lone surrogate no database stores
        b'{"username": "off1", "password": NaN}',
        b'{"username": "off1", "password": ' + b"9" * 5000 + b"}",
        b'["off1", "pw"]',
        b'"off1"',
        b"null",
        b"",
    ]:
        response = post_raw(client, f"{API}/tokens", data)
        assert_error(response, 400, "invalid")


# ------------------------------------------------------------------ next=


@pytest.mark.parametrize(
    "query",
    [
        "next=/%0d%0aSet-Cookie:%20a=b",  # CR LF: would split the Location header
        "next=/%0aLocation:%20https://evil.example",
        "next=/cases%0d",
        "next=/%5Cevil.example",  # a backslash: browsers read "/\\evil.example" as "//evil.example"
        "next=/%09/evil.example",  # browsers drop a tab: "//evil.example"
        "next=//evil.example",
        "next=https://evil.example/",
    ],
)
def test_an_unsafe_next_goes_home_without_a_500(sec_app, query):
    client = sec_app.test_client()
    lang = client.get("/lang/en", query_string=query)
    assert lang.status_code == 302 and lang.headers["Location"] == "/"
    login = client.post("/login", query_string=query, data={"username": "off1", "password": "pw"})
    assert login.status_code == 302 and login.headers["Location"] == "/"


def test_raw_line_breaks_in_next_go_home(sec_app):
    client = sec_app.test_client()
    for target in ("/\r\nSet-Cookie: a=b", "/\n", "/cases\r"):
        response = client.get("/lang/en", query_string={"next": target})
        assert response.status_code == 302 and response.headers["Location"] == "/"


def test_a_safe_next_is_kept(sec_app):
    client = sec_app.test_client()
    response = client.get("/lang/en", query_string={"next": "/cases?status=handling"})
    assert response.headers["Location"] == "/cases?status=handling"


# ------------------------------------------------------------------ ?unit=


def test_unknown_and_foreign_units_answer_the_same_404(sec_app):
    client = sec_app.test_client()
    off1 = bearer(client, "off1")  # an officer of V01-D1-G01

    def cases(headers, unit):
        return client.get(f"{API}/cases", query_string={"unit": unit}, headers=headers)

    unknown = cases(off1, "NO-SUCH-UNIT")
    foreign = cases(off1, "V02-D1-G01")
    above = cases(off1, "V01")  # the officer's own village is above their grid
    for response in (unknown, foreign, above):
        assert_error(response, 404, "not_found")
    assert unknown.get_json() == foreign.get_json() == above.get_json()

    assert cases(off1, GRID).status_code == 200
    assert cases(bearer(client, "dl1"), GRID).status_code == 200  # below the district leader
    assert cases(bearer(client, "tl1"), "V02-D1-G01").status_code == 200  # the town covers all
    ps1 = bearer(client, "ps1")  # a department officer covers the department
    assert cases(ps1, "PS").status_code == 200
    assert_error(cases(ps1, GRID), 404, "not_found")
    auditor = bearer(client, "aud")  # auditors see every case
    assert cases(auditor, "V02-D1-G01").status_code == 200
    assert_error(cases(auditor, "NO-SUCH-UNIT"), 404, "not_found")


def test_the_language_cookie_follows_the_cookie_settings(monkeypatch, make_app):
    monkeypatch.setenv("GRIDLOOP_SECURE_COOKIES", "1")
    response = make_app().test_client().get("/lang/en?next=/login")
    cookie = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("lang=")][0]
    flags = [a.strip().lower() for a in cookie.split(";")]
    assert "secure" in flags and "httponly" in flags and "samesite=lax" in flags


def test_a_crash_under_the_api_answers_json_and_on_pages_a_page(sec_app):
    sec_app.config["TESTING"] = False  # as in production: errors are handled, not raised

    def boom():
        raise RuntimeError("boom")

    sec_app.add_url_rule(f"{API}/_boom", "api_boom", boom)
    sec_app.add_url_rule("/_boom", "page_boom", boom)
    client = sec_app.test_client()
    assert_error(client.get(f"{API}/_boom"), 500, "internal")
    page = client.get("/_boom")
    assert page.status_code == 500 and "出错了" in page.get_data(as_text=True)
    too_large = client.post("/login", data=b"a" * (2 * MIB), content_type="text/plain")
    assert too_large.status_code == 413 and "内容过大" in too_large.get_data(as_text=True)


def test_a_nul_character_anywhere_a_person_types_is_a_400_not_a_500(sec_app):
    """PostgreSQL refuses NUL in text: caught before any view, in paths, queries, plain forms and
    JSON bodies, on pages and in the API alike."""
    client = sec_app.test_client()
    token = bearer(client, "off1")
    assert client.get(f"{API}/cases/XDK%00", headers=token).status_code == 400
    assert client.get(f"{API}/inbox?category=a%00b", headers=token).status_code == 400
    answer = client.post(
        f"{API}/cases", json={"title": "路\x00灯", "description": "x", "grid": GRID}, headers=token
    )
    assert answer.status_code == 400
    assert "NUL" in answer.get_json()["error"]["message"]
    sign_in(client, "off1")
    assert client.get("/cases/XDK-2026%00").status_code == 400
    page = client.post("/cases/new", data={"title": "路\x00灯", "description": "x", "grid": GRID})
    assert page.status_code == 400
    assert client.get("/cases/mine").status_code == 200  # and nothing else changed
