"""Photos (照片) through the pages in a 360 px Chromium: an officer takes a photo on the new-case
page (the file input that opens the phone's camera; here Playwright hands it a PNG made by the
test), sees it uploaded, opens the case and finds the photo in the case's history. Another grid's
leader gets 404 for the photo.

The server writes the files where GRIDLOOP_PHOTOS_DIR says (read at each request), so this test
keeps them in its own folder.
"""

from __future__ import annotations

import hashlib
import io
import re
from urllib.parse import urlsplit

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from .conftest import assert_fits

NUMBER = re.compile(r"^/cases/([A-Z]+-\d{4}-\d{6})$")


@pytest.fixture
def photo_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRIDLOOP_PHOTOS_DIR", str(tmp_path / "photos"))
    return tmp_path / "photos"


def a_photo(ground: tuple[int, int, int] = (90, 140, 60)) -> bytes:
    """A small PNG with something on it, as a phone's camera would hand the page a JPEG."""
    img = Image.new("RGB", (480, 360), ground)
    for x in range(120, 360):
        for y in range(100, 140):
            img.putpixel((x, y), (230, 200, 40))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def shown(page: Page, sha: str) -> None:
    """Wait until the page's image of photo `sha` has loaded with some pixels."""
    page.wait_for_function(
        "sha => { const i = document.querySelector(`img[data-sha256='${sha}']`);"
        " return i && i.complete && i.naturalWidth > 0; }",
        arg=sha,
    )


def loaded(page: Page, selector: str) -> bool:
    """Every image the selector finds has loaded with some pixels."""
    return page.eval_on_selector_all(
        selector, "imgs => imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)"
    )


def test_an_officer_attaches_a_photo_when_opening_and_sees_it_on_the_case(login, step, photo_dir):
    data = a_photo()
    sha = hashlib.sha256(data).hexdigest()  # no metadata to strip: stored as sent

    off1 = login("off1")
    response = off1.goto("/cases/new")
    assert response is not None and response.status == 200
    picker = off1.locator("[data-photo-picker]")
    camera = picker.get_by_test_id("photo-file")
    assert camera.get_attribute("accept") == "image/*"
    assert camera.get_attribute("capture") == "environment"
    assert camera.get_attribute("multiple") is not None
    expect(picker.get_by_test_id("photo-keep-location")).not_to_be_checked()
    assert_fits(off1)

    off1.locator("form [name='title']").fill("河堤护栏断了")
    camera.set_input_files({"name": "IMG_0001.png", "mimeType": "image/png", "buffer": data})
    stored = picker.locator(f"li.photo input[type=hidden][name=photos][value='{sha}']")
    expect(stored).to_have_count(1)
    expect(off1.get_by_test_id("open-case")).to_be_enabled()
    off1.wait_for_function(
        "() => [...document.querySelectorAll('[data-photo-list] img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    assert (photo_dir / sha[:2] / sha).read_bytes() == data
    step(off1, "photo-new-case")

    with off1.expect_navigation():
        off1.get_by_test_id("open-case").click()
    match = NUMBER.match(urlsplit(off1.url).path)
    assert match, off1.url
    number = match.group(1)
    thumbs = off1.locator(f"[data-testid=case-event][data-type=opened] img[data-sha256='{sha}']")
    expect(thumbs).to_have_count(1)
    thumbs.scroll_into_view_if_needed()
    shown(off1, sha)
    assert loaded(off1, "[data-testid=event-photos] img")
    step(off1, "photo-on-case")

    # The full photo, from the thumbnail's link: the same bytes as the event's hash.
    full = off1.request.get(f"/cases/{number}/photos/{sha}")
    assert full.status == 200 and hashlib.sha256(full.body()).hexdigest() == sha

    # Accepting, the officer adds another photo on the task page.
    with off1.expect_navigation():
        off1.get_by_test_id("case-open-task").click()
    form = off1.locator("form").filter(has=off1.get_by_test_id("complete"))
    form.locator("input[name='valid'][value='true']").check()
    form.locator("select[name='category']").select_option("resident_request")
    form.locator("input[name='severity'][value='normal']").check()
    second = a_photo((200, 60, 60))
    second_sha = hashlib.sha256(second).hexdigest()
    form.get_by_test_id("photo-file").set_input_files(
        {"name": "IMG_0002.png", "mimeType": "image/png", "buffer": second}
    )
    expect(form.locator(f"input[type=hidden][name=photos][value='{second_sha}']")).to_have_count(1)
    off1.wait_for_function(
        "() => [...document.querySelectorAll('[data-photo-list] img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    step(off1, "photo-accept")
    with off1.expect_navigation():
        off1.get_by_test_id("complete").click()
    accepted = off1.locator(
        f"[data-testid=case-event][data-type=task_completed] img[data-sha256='{second_sha}']"
    )
    expect(accepted).to_have_count(1)
    assert_fits(off1)

    gl1 = login("gl1")
    response = gl1.goto(f"/cases/{number}")
    assert response is not None and response.status == 200
    expect(gl1.locator(f"img[data-sha256='{sha}']")).to_have_count(1)

    gl3 = login("gl3")  # another village's grid leader: the photo does not exist for them
    response = gl3.goto(f"/cases/{number}/photos/{sha}")
    assert response is not None and response.status == 404
    assert_fits(gl3)


def test_a_case_opened_with_a_photo_is_sent_to_its_grid_and_the_photo_goes_with_it(
    login, step, photo_dir
):
    """Issue 8's phone walk: an officer photographs a hazard while opening a case, finds it is the
    neighbouring grid's, and sends it there; that grid's officer sees the case with the photo."""
    data = a_photo((40, 90, 160))
    sha = hashlib.sha256(data).hexdigest()
    off1 = login("off1")
    off1.goto("/cases/new")
    off1.locator("form [name='title']").fill("二组桥头路面塌陷")
    picker = off1.locator("[data-photo-picker]")
    picker.get_by_test_id("photo-file").set_input_files(
        {"name": "IMG_0100.png", "mimeType": "image/png", "buffer": data}
    )
    expect(picker.locator(f"input[type=hidden][name=photos][value='{sha}']")).to_have_count(1)
    with off1.expect_navigation():
        off1.get_by_test_id("open-case").click()
    number = NUMBER.match(urlsplit(off1.url).path).group(1)

    with off1.expect_navigation():
        off1.get_by_test_id("case-open-task").click()
    transfer = off1.get_by_test_id("transfer")
    transfer.locator("summary").click()
    off1.get_by_test_id("transfer-to").select_option("V01-D1-G02")
    transfer.locator("textarea[name=note]").fill("塌陷处在二组地界")
    assert_fits(off1)
    step(off1, "photo-transfer")
    with off1.expect_navigation():
        off1.get_by_test_id("transfer-submit").click()
    expect(off1.locator(".flash")).to_contain_text(f"{number} 已转办至 二组")

    off2 = login("off2")
    row = off2.locator(f"[data-testid=inbox-item][data-case='{number}'][data-task='accept']")
    expect(row).to_have_count(1)
    off2.goto(f"/cases/{number}")
    thumb = off2.locator(f"[data-testid=case-event][data-type=opened] img[data-sha256='{sha}']")
    expect(thumb).to_have_count(1)
    thumb.scroll_into_view_if_needed()
    shown(off2, sha)
    moved = off2.locator("[data-testid=case-event][data-type=transferred]")
    expect(moved).to_have_count(1)
    assert_fits(off2)
    step(off2, "photo-transferred-case")
