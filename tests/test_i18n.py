"""Every word the pages show has a Chinese translation, the catalogs are unambiguous, and forms are
protected against cross-site posts. No browser: babel's extractors read webapp/ as `pybabel
extract` would, and Flask's test client posts."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest
from apps import build_app, dispose_app
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from conftest import ORG_YAML

from webapp.i18n import LOCALES, SOURCES, messages

WEBAPP = Path(__file__).resolve().parents[1] / "webapp"
ENGINE = WEBAPP.parent / "engine"
METHODS = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
OPTIONS = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
KEYWORDS = {
    "_": None,
    "gettext": None,
    "lazy_gettext": None,
    "_l": None,
    "ngettext": (1, 2),
    "lazy_ngettext": (1, 2),
    "pgettext": ((1, "c"), 2),
    "lazy_pgettext": ((1, "c"), 2),
}
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


# Error paths: a literal message given to an error can reach an error page (webapp/errors.py
# shows it through the catalog), so it needs a translation like any other word on a page.
ERRORS = {name: None for name in ("GridloopError", "Invalid", "NotFound", "Forbidden", "Conflict")}


def extracted() -> dict[str, list[str]]:
    """msgid -> where it is used ("file:line"), for every message in webapp/'s code and pages
    and every literal error message in webapp/ and engine/. A plural message is listed under its
    singular and its plural."""
    found: dict[str, list[str]] = defaultdict(list)
    sources = [
        (WEBAPP, METHODS, {**KEYWORDS, **ERRORS}),
        (ENGINE, [("**.py", "python")], ERRORS),
    ]
    for folder, methods, keywords in sources:
        for filename, lineno, message, _comments, _context in extract_from_dir(
            str(folder), methods, OPTIONS, keywords=keywords
        ):
            ids = message if isinstance(message, tuple) else (message,)
            for msgid in ids:
                if msgid:
                    found[msgid].append(f"{folder.name}/{filename}:{lineno}")
    return dict(found)


def catalog_ids(locale: str, fragment: Path) -> set[str]:
    with fragment.open("rb") as handle:
        return {
            str(m.id if isinstance(m.id, str) else m.id[0])
            for m in read_po(handle, locale=locale)
            if m.id
        }


def test_extraction_reads_both_code_and_templates():
    places = [p for where in extracted().values() for p in where]
    assert any(p.endswith(".py", 0, p.rindex(":")) for p in places), "no message in Python code"
    assert any(".html:" in p for p in places), "no message in the templates"
    # Messages known to exist: a Python lazy_gettext (auth.py), a template _() (base.html) and
    # errors raised in engine/ and webapp/.
    assert {
        "Wrong username or password.",
        "My inbox",
        "no such work item",
        "bad cursor",
    } <= set(extracted())


def test_every_message_has_a_chinese_translation():
    zh = messages("zh_CN")
    missing = {
        msgid: where for msgid, where in extracted().items() if not zh.get(msgid, "").strip()
    }
    assert not missing, "untranslated in webapp/i18n/zh_CN/:\n" + "\n".join(
        f"  {msgid!r} ({', '.join(where)})" for msgid, where in sorted(missing.items())
    )


def test_the_catalogs_hold_no_message_that_is_no_longer_used():
    """A stale translation hides a renamed message: the page then shows the new English."""
    stale = set(messages("zh_CN")) - set(extracted())
    assert not stale, f"translated but used nowhere: {sorted(stale)}"


def test_translations_keep_the_placeholders_of_their_message():
    """A translation that drops or renames %(name)s shows the wrong text or fails to render."""
    wrong = {
        msgid: text
        for msgid, text in messages("zh_CN").items()
        if text and set(PLACEHOLDER.findall(msgid)) != set(PLACEHOLDER.findall(text))
    }
    assert not wrong, wrong


@pytest.mark.parametrize("locale", LOCALES)
def test_no_two_fragments_translate_the_same_message(locale):
    """Fragments are merged into one catalog; a msgid in two of them would leave which
    translation wins to the order of file names."""
    owners: dict[str, list[str]] = defaultdict(list)
    for fragment in sorted((SOURCES / locale).glob("*.po")):
        for msgid in catalog_ids(locale, fragment):
            owners[msgid].append(fragment.name)
    repeated = {msgid: files for msgid, files in owners.items() if len(files) > 1}
    assert not repeated, f"msgids repeated across webapp/i18n/{locale}/*.po: {repeated}"


# ------------------------------------------------------------------ CSRF


@pytest.fixture
def csrf_app(tmp_path):
    """The app as it runs in production: CSRF protection on."""
    app = build_app(tmp_path / "csrf.sqlite", ORG_YAML, csrf=True, deployed=False)
    assert app.config["WTF_CSRF_ENABLED"]
    yield app
    dispose_app(app)


def test_a_login_post_without_the_csrf_token_is_refused(csrf_app):
    client = csrf_app.test_client()
    response = client.post("/login", data={"username": "off1", "password": "pw"})
    assert response.status_code == 400
    assert client.get("/").status_code == 302, "refused, so not signed in"


def test_a_login_post_with_the_pages_token_is_accepted(csrf_app):
    client = csrf_app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert token, "the login page carries a CSRF token"
    response = client.post(
        "/login", data={"username": "off1", "password": "pw", "csrf_token": token.group(1)}
    )
    assert response.status_code == 302 and response.headers["Location"] == "/"
