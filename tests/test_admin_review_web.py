"""Regressions found reviewing the web side of the administrators' features (issue 10): who is
refused before the organisation upload is read, the diagram pages in Chinese, a deploy from the
editor that collides with another administrator's, and the CLI's refusals of unreadable files.
"""

from __future__ import annotations

import io
import re

import pytest
from apps import bearer, web_client
from click.testing import CliRunner
from conftest import REPO, changed
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from engine.models import AdminEvent, DiagramDraft, DiagramVersion
from engine.specs import load_bundle
from webapp.cli import main
from webapp.extensions import db

TIME_LIMIT = "rules/time_limit.dmn"
TWO_HOURS = '<outputEntry id="time_limit_r0_o0"><text>2</text></outputEntry>'
THREE_HOURS = '<outputEntry id="time_limit_r0_o0"><text>3</text></outputEntry>'


@pytest.fixture
def app(make_app):
    return make_app()


def signed_in_with_csrf(app, username: str):
    """A client signed in through the real sign-in form, CSRF token and all."""
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    answer = client.post(
        "/login", data={"username": username, "password": "pw", "csrf_token": token}
    )
    assert answer.status_code == 302, answer.get_data(as_text=True)[:300]
    return client


# ------------------------------------------------------------------ the organisation upload


@pytest.mark.parametrize("username", ["off1", "gl1", "tl1"])
def test_the_org_upload_refuses_a_non_administrator_before_reading_the_body(make_app, username):
    """A signed-in non-administrator gets 403 for the organisation upload, whatever the body
    (no CSRF token included), not the administrators' import page with "the page has expired"."""
    app = make_app(csrf=True)
    person = signed_in_with_csrf(app, username)
    answer = person.post(
        "/admin/org/import",
        data={"file": (io.BytesIO(b"town: {code: XDK, name: x}\n"), "org.yaml")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 403, answer.status_code
    assert 'name="reset_passwords"' not in answer.get_data(as_text=True)


def test_the_org_upload_still_checks_the_administrators_csrf_token(make_app):
    app = make_app(csrf=True)
    adm = signed_in_with_csrf(app, "adm")
    answer = adm.post(
        "/admin/org/import",
        data={"file": (io.BytesIO(b"town: {code: XDK, name: x}\n"), "org.yaml")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 400
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(AdminEvent)) == 0


# ------------------------------------------------------------------ the diagram pages in Chinese


def test_the_diagram_pages_name_the_system_in_chinese(app):
    """The repository's bundle is deployed by "system": the zh-CN pages say 系统, never the raw
    English username."""
    client = app.test_client()
    adm = bearer(client, "adm")
    first = load_bundle(REPO)
    second = changed(first, TIME_LIMIT, TWO_HOURS, THREE_HOURS, once=True)
    answer = client.post(
        "/api/v1/diagrams", json={"files": second.files, "activate": False}, headers=adm
    )
    assert answer.status_code == 201, answer.get_json()
    page = web_client(app, "adm")
    for url in (
        "/admin/diagrams",
        f"/admin/diagrams/{first.sha256}/diff/{second.sha256}",
        f"/admin/diagrams/{second.sha256}/activate",
    ):
        html = page.get(url).get_data(as_text=True)
        visible = re.sub(r"<[^>]+>", " ", html.split("<main", 1)[1])
        assert not re.search(r"\bsystem\b", visible), url
        assert "系统" in visible, url
    english = web_client(app, "adm", "en").get("/admin/diagrams").get_data(as_text=True)
    assert "Deployed by System" in english


# ------------------------------------------------------------------ the editor's deploy


def test_an_editor_deploy_colliding_with_another_is_a_409_keeping_nothing(app, monkeypatch):
    """Two administrators deploying at the same moment collide on the version's hash or the
    administration log's seq: the later one gets 409 JSON the editor can show, not a 500, and
    nothing of theirs is kept (their draft stays)."""
    from webapp import editor

    adm = web_client(app, "adm")
    files = dict(changed(load_bundle(REPO), TIME_LIMIT, TWO_HOURS, THREE_HOURS, once=True).files)
    assert adm.post("/admin/editor/draft", json={"files": files}).status_code == 200
    real = editor.deploy_bundle

    def collides(session, *args, **kwargs):
        real(session, *args, **kwargs)
        raise IntegrityError("INSERT INTO admin_event", {}, Exception("duplicate seq"))

    monkeypatch.setattr(editor, "deploy_bundle", collides)
    answer = adm.post("/admin/editor/deploy", json={"files": files, "comment": "三小时"})
    assert answer.status_code == 409, answer.get_data(as_text=True)[:300]
    assert answer.get_json()["error"]["code"] == "conflict"
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(DiagramVersion)) == 1
        assert db.session.scalar(select(func.count()).select_from(AdminEvent)) == 0
        assert db.session.scalar(select(func.count()).select_from(DiagramDraft)) == 1


# ------------------------------------------------------------------ the CLI's refusals


@pytest.fixture
def cli(app, monkeypatch):
    monkeypatch.setenv("GRIDLOOP_DATABASE_URL", app.config["SQLALCHEMY_DATABASE_URI"])
    monkeypatch.setenv("GRIDLOOP_CHEAP_PASSWORDS", "1")
    monkeypatch.delenv("GRIDLOOP_REDIS_URL", raising=False)
    return CliRunner()


def test_calendar_import_refuses_a_too_deeply_nested_json_file(cli, tmp_path):
    path = tmp_path / "2031.json"
    path.write_text("[" * 100_000)
    result = cli.invoke(main, ["calendar", "import", str(path)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "nested too deeply" in result.output


def test_diagrams_deploy_refuses_a_file_that_is_not_utf8_naming_it(app, cli, tmp_path):
    folder = tmp_path / "bundle"
    for path, text in load_bundle(REPO).files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text, encoding="utf-8")
    (folder / "rules" / "extra.dmn").write_bytes(b"<?xml version='1.0'?>\xff\xfe")
    result = cli.invoke(main, ["diagrams", "deploy", str(folder)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "rules/extra.dmn: not UTF-8 text" in result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(DiagramVersion)) == 1


# ------------------------------------------------------------------ NUL, which PostgreSQL refuses


def test_a_comment_holding_nul_is_a_400_naming_the_field_not_a_500(app):
    """PostgreSQL's text columns cannot hold NUL: the API, the activation page and the editor
    refuse such a comment as the field's error, on both backends, and nothing is stored."""
    client = app.test_client()
    adm = bearer(client, "adm")
    bundle = changed(load_bundle(REPO), TIME_LIMIT, TWO_HOURS, THREE_HOURS, once=True)
    answer = client.post(
        "/api/v1/diagrams", json={"files": bundle.files, "comment": "a\x00b"}, headers=adm
    )
    assert answer.status_code == 400, answer.get_data(as_text=True)[:300]
    assert "comment" in answer.get_json()["error"]["fields"]
    repo = load_bundle(REPO).sha256
    answer = client.post(
        f"/api/v1/diagrams/{repo}/activate", json={"comment": "a\x00b"}, headers=adm
    )
    assert answer.status_code == 400 and "comment" in answer.get_json()["error"]["fields"]
    page = web_client(app, "adm")
    answer = page.post("/admin/editor/deploy", json={"files": bundle.files, "comment": "a\x00b"})
    assert answer.status_code == 400 and "comment" in answer.get_json()["error"]["fields"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(DiagramVersion)) == 1
        assert db.session.scalar(select(func.count()).select_from(AdminEvent)) == 0


def test_a_people_search_holding_nul_is_a_400_not_a_500(app):
    page = web_client(app, "adm")
    answer = page.get("/admin/org/people", query_string={"q": "gl\x001"})
    assert answer.status_code == 400  # webapp/security.py refuse_nul, for every route
    assert page.get("/admin/org/people", query_string={"q": "gl1"}).status_code == 200
