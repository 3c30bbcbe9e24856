"""Browser tests: the real app served on 127.0.0.1 by werkzeug in a thread, driven by Playwright in
Debian's Chromium (/usr/bin/chromium; `make test` installs it, Playwright never downloads one).

One server and one browser per session; each user gets a fresh browser context (a phone-sized
viewport, zh-CN) so sessions and cookies never mix. CSRF protection is on, as in production.
Every step keeps a screenshot under test-output/e2e/NN-step.png.
"""

from __future__ import annotations

import itertools
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from apps import build_app, dispose_app
from conftest import ORG_YAML
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from werkzeug.serving import make_server

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-output" / "e2e"
CHROMIUM = "/usr/bin/chromium"
# Where people without a handler's position land after signing in; everyone else: the inbox.
LANDINGS = {"aud": "/cases", "ps1": "/cases", "adm": "/admin/ops"}
WIDTH, HEIGHT = 360, 740
PASSWORD = "pw"


def own_app(path: Path):
    """An app on its own SQLite file with the test organisation, as in production (CSRF on,
    errors render their pages)."""
    app = build_app(path, ORG_YAML, csrf=True)
    app.config["TESTING"] = False
    return app


@contextmanager
def serving(app, name: str, dispose: bool = True) -> Iterator[str]:
    """`app` on a free port of 127.0.0.1 in a thread; yields its base URL, then stops it and
    (unless told not to) disposes of the app. Modules whose tests need the database beside the
    server (to set it up, or to count what the pages wrote) serve an app of their own this way."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        if dispose:
            dispose_app(app)


def phone_context(browser: Browser, base: str, watcher: Watcher) -> BrowserContext:
    """A fresh 360 x 740 zh-CN context on `base`, its page problems watched."""
    context = browser.new_context(
        base_url=base, viewport={"width": WIDTH, "height": HEIGHT}, locale="zh-CN"
    )
    context.set_default_timeout(10_000)
    watcher.attach(context)
    return context


@pytest.fixture(scope="session")
def live_server(tmp_path_factory) -> Iterator[str]:
    """The app on a free port of 127.0.0.1 with the test organisation; yields its base URL."""
    app = own_app(tmp_path_factory.mktemp("e2e") / "e2e.sqlite")
    with serving(app, "e2e-server") as base:
        yield base


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
        ],
    )
    yield browser
    browser.close()
    playwright.stop()


class Shots:
    """Numbered screenshots, one per step, in the order the steps ran."""

    def __init__(self, folder: Path):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.folder = folder
        self.counter = itertools.count(1)
        self.taken: list[Path] = []

    def take(self, page: Page, step: str) -> Path:
        path = self.folder / f"{next(self.counter):02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path


@pytest.fixture(scope="session")
def shots() -> Shots:
    return Shots(SHOTS)


def assert_fits(page: Page) -> None:
    """Nothing on the page is wider than the phone (no sideways scrolling), and a Chinese page
    holds no stray English word."""
    html = page.evaluate("document.documentElement.scrollWidth")
    body = page.evaluate("document.body.scrollWidth")
    assert html <= WIDTH and body <= WIDTH, f"{page.url} is {html}/{body}px wide, over {WIDTH}px"
    stray = stray_english(page)
    assert not stray, f"English on the Chinese page {page.url}: {stray}"


# Latin letters a Chinese page may show: the switch to English, a product name (Redis), and data,
# not words: case numbers and unit codes (XDK-2026-000001, V01-D1-G01) and the test
# organisation's usernames.
LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
CODE = re.compile(r"^[A-Z]+\d*(?:-[A-Z]*\d+)+$")
ALLOWED = (
    {"English", "Redis", "CSV", "Excel", "JSON", "YAML"}  # names of products and file formats
    | set(re.findall(r"username: ([\w.]+)", ORG_YAML))
    | set(re.findall(r"code: ([\w-]+)", ORG_YAML))  # unit codes are data too (PS, V01, XDK)
)
# Every text a person sees: visible text nodes (the diagram's SVG labels included), the page's
# title, and the attributes browsers show or read aloud. bpmn-js's licence badge is left alone, and
# so are commands shown as code (`gridloop calendar import FILE`), which are typed as they are.
VISIBLE_TEXT = """() => {
  const found = [document.title];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!el || el.closest("script, style, code, .bjs-powered-by")) continue;  // code: commands
    if (!el.checkVisibility()) continue;
    found.push(node.textContent);
  }
  for (const el of document.querySelectorAll("[title], [placeholder], [aria-label], [alt]")) {
    if (el.closest(".bjs-powered-by")) continue;
    for (const name of ["title", "placeholder", "aria-label", "alt"]) {
      if (el.getAttribute(name)) found.push(el.getAttribute(name));
    }
  }
  return found;
}"""


def stray_english(page: Page) -> list[str]:
    """English words on a page served in Chinese (none is expected)."""
    if page.get_attribute("html", "lang") != "zh-CN":
        return []
    words = LATIN_WORD.findall(" ".join(page.evaluate(VISIBLE_TEXT)))
    return sorted({w for w in words if w not in ALLOWED and not CODE.match(w)})


@pytest.fixture(scope="session")
def step(shots) -> Callable[[Page, str], Path]:
    """step(page, "name"): check the page fits the phone and keep a screenshot of it."""

    def check(page: Page, name: str) -> Path:
        page.wait_for_load_state("load")
        assert_fits(page)
        return shots.take(page, name)

    return check


class Watcher:
    """What pages do behind the test's back: requests that leave this machine (pages load nothing
    from the internet), sub-resources that fail (a missing vendor file), script errors, and
    anything the Content-Security-Policy refused (an inline script or style without the nonce)."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.problems: list[str] = []

    def attach(self, context: BrowserContext) -> None:
        context.on("request", self._request)
        context.on("response", self._response)
        context.on("requestfailed", self._failed)
        context.on("page", self._page)

    def _page(self, page: Page) -> None:
        page.on("pageerror", self._script_error)
        page.on("console", self._console)

    def _request(self, request) -> None:
        local = request.url.startswith(self.base_url + "/")
        if not local and not request.url.startswith(("data:", "blob:", "about:")):
            self.problems.append(f"request off this machine: {request.url}")

    def _response(self, response) -> None:
        if response.status >= 400 and response.request.resource_type != "document":
            self.problems.append(f"{response.status} for {response.url}")

    def _failed(self, request) -> None:
        if request.resource_type != "document":
            self.problems.append(f"failed to load {request.url}: {request.failure}")

    def _script_error(self, error) -> None:
        self.problems.append(f"script error: {error}")

    def _console(self, message) -> None:
        # Chromium reports what the policy blocked on the console: "Refused to load …" or
        # "Executing inline script violates the following Content Security Policy directive …".
        text = message.text
        if "Content Security Policy" in text or "Refused to" in text:
            self.problems.append(f"CSP violation on {message.location.get('url')}: {text}")


@pytest.fixture(scope="session")
def watcher(live_server) -> Watcher:
    return Watcher(live_server)


@pytest.fixture(autouse=True)
def no_page_problems(watcher) -> Iterator[None]:
    """After each browser test: no request left the machine, every asset loaded, no script
    failed."""
    watcher.problems.clear()
    yield
    problems, watcher.problems = watcher.problems, []
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="session")
def new_context(browser, live_server, watcher) -> Iterator[Callable[[], BrowserContext]]:
    contexts: list[BrowserContext] = []

    def make() -> BrowserContext:
        context = phone_context(browser, live_server, watcher)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def login(new_context, step) -> Callable[..., Page]:
    """login("gl1") -> a page of a fresh context signed in as gl1 through the login page, on their
    landing page. With shot="name" the filled-in login page is kept as a step."""

    def sign_in(username: str, shot: str | None = None) -> Page:
        page = new_context().new_page()
        response = page.goto("/login")
        assert response is not None and response.status == 200
        page.fill("#username", username)
        page.fill("#password", PASSWORD)
        if shot:
            step(page, shot)
        else:
            assert_fits(page)
        with page.expect_navigation():
            page.click("form button[type=submit]")
        landing = LANDINGS.get(username, "/")
        assert urlsplit(page.url).path == landing, f"{username} did not reach {landing}: {page.url}"
        assert_fits(page)
        return page

    return sign_in
