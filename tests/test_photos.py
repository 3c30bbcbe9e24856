"""Photos (照片, issue 8): uploaded first, then attached by sha256 when opening, accepting or handling
a case; the event's data carries the hashes, so the chain covers the files. engine/photos.py
checks and stores them (location stripped unless kept); webapp/photos.py serves a case's photos
only to people who may see the case.

The organisation is tests/conftest.py's: off1 and off1b are officers of V01-D1-G01 (leader gl1),
gl3 leads V02-D1-G01 in another village; aud audits, adm administers.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from apps import bearer
from PIL import Image
from sqlalchemy import func, select

from engine import photos
from engine.events import verify
from engine.models import Case, Photo
from webapp.extensions import db

API = "/api/v1"
GRID = "V01-D1-G01"
START = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
ACCEPT = {"valid": True, "category": "resident_request", "severity": "normal"}
GPS = 0x8825  # the EXIF tag of the GPS directory
MAKE = 0x010F


# ------------------------------------------------------------------ pictures made here


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def jpeg_with_gps(fmt: str = "JPEG") -> bytes:
    """A photo as a phone writes it: EXIF with the camera's make and a GPS position."""
    exif = Image.Exif()
    exif[MAKE] = "GridPhone"
    exif[GPS] = {1: "N", 2: (31.0, 14.0, 30.5), 3: "E", 4: (121.0, 28.0, 10.0)}
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 120, 200)).save(out, fmt, exif=exif.tobytes())
    return out.getvalue()


def gps_of(data: bytes) -> dict:
    with Image.open(io.BytesIO(data)) as img:
        return dict(img.getexif().get_ifd(GPS))


# ------------------------------------------------------------------ the app


@pytest.fixture
def app(make_app, tmp_path):
    app = make_app()
    app.config["GRIDLOOP_PHOTOS_DIR"] = str(tmp_path / "photos")
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth(client):
    tokens: dict[str, dict] = {}

    def headers(username: str) -> dict:
        if username not in tokens:
            tokens[username] = bearer(client, username)
        return tokens[username]

    return headers


def upload(client, headers, data: bytes, name: str = "photo.jpg", keep: str | None = None):
    form = {"file": (io.BytesIO(data), name, "image/jpeg")}
    if keep is not None:
        form["keep_location"] = keep
    return client.post(
        f"{API}/photos", headers=headers, data=form, content_type="multipart/form-data"
    )


def uploaded(client, headers, data: bytes, **kw) -> str:
    response = upload(client, headers, data, **kw)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["sha256"]


def open_case(client, headers, **fields):
    body = {"title": "路灯坏了", "grid": GRID, **fields}
    return client.post(f"{API}/cases", headers=headers, json=body)


def events(client, headers, number: str) -> list[dict]:
    response = client.get(f"{API}/cases/{number}/events", headers=headers)
    assert response.status_code == 200
    return response.get_json()["events"]


def item_of(client, headers, number: str) -> int:
    items = client.get(f"{API}/inbox", headers=headers).get_json()["items"]
    return next(i["id"] for i in items if i["case"]["number"] == number)


def complete(client, headers, number: str, data: dict):
    item = item_of(client, headers, number)
    return client.post(f"{API}/work-items/{item}/complete", headers=headers, json={"data": data})


def stored_file(app, sha: str) -> bytes:
    """The file as stored: <instance>/photos/<sha[:2]>/<sha> (here, the test's folder)."""
    return (Path(app.config["GRIDLOOP_PHOTOS_DIR"]) / sha[:2] / sha).read_bytes()


def stored_files(app) -> list[Path]:
    root = Path(app.config["GRIDLOOP_PHOTOS_DIR"])
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def photo_rows(app) -> int:
    with app.app_context():
        n = db.session.scalar(select(func.count()).select_from(Photo))
        db.session.remove()
        return n


def chain_ok(app, number: str) -> bool:
    with app.app_context():
        case = db.session.scalars(select(Case).where(Case.number == number)).one()
        result = verify(db.session, case)
        db.session.remove()
        return result.ok


# ------------------------------------------------------------------ opening with a photo


def test_a_photos_hash_in_the_opened_event_matches_the_stored_file(app, client, auth):
    off1 = auth("off1")
    response = upload(client, off1, png())
    assert response.status_code == 201
    answer = response.get_json()
    sha = answer["sha256"]
    # A PNG without metadata is stored as sent.
    assert answer == {
        "sha256": hashlib.sha256(png()).hexdigest(),
        "content_type": "image/png",
        "size": len(png()),
        "kept_location": False,
    }

    opened = open_case(client, off1, photos=[sha])
    assert opened.status_code == 201, opened.get_json()
    number = opened.get_json()["number"]
    first = events(client, off1, number)[0]
    assert first["type"] == "opened" and first["data"]["photos"] == [sha]

    assert hashlib.sha256(stored_file(app, sha)).hexdigest() == sha
    assert chain_ok(app, number)
    with app.app_context():
        row = db.session.scalars(select(Photo).where(Photo.sha256 == sha)).one()
        case = db.session.scalars(select(Case).where(Case.number == number)).one()
        assert (row.case_id, row.uploaded_by, row.content_type) == (case.id, "off1", "image/png")
        db.session.remove()


def test_a_case_without_photos_records_no_photos_field(client, auth):
    number = open_case(client, auth("off1")).get_json()["number"]
    assert "photos" not in events(client, auth("off1"), number)[0]["data"]


# ------------------------------------------------------------------ the location


def test_the_location_is_stripped_unless_kept_on_purpose(app, client, auth):
    off1 = auth("off1")
    original = jpeg_with_gps()
    assert gps_of(original), "the test photo carries a location"

    stripped = upload(client, off1, original)
    assert stripped.status_code == 201
    assert stripped.get_json()["kept_location"] is False
    data = stored_file(app, stripped.get_json()["sha256"])
    assert gps_of(data) == {}
    with Image.open(io.BytesIO(data)) as img:
        assert img.getexif()[MAKE] == "GridPhone", "only the location goes"
        assert img.tobytes() == Image.open(io.BytesIO(original)).tobytes(), "no re-encoding"

    kept = upload(client, off1, original, keep="true")
    assert kept.status_code == 201 and kept.get_json()["kept_location"] is True
    sha = kept.get_json()["sha256"]
    assert sha == hashlib.sha256(original).hexdigest(), "kept: stored as sent"
    data = stored_file(app, sha)
    assert gps_of(data)[2] == (31.0, 14.0, 30.5)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_png_and_webp_lose_their_location_too(fmt):
    original = jpeg_with_gps(fmt)
    assert gps_of(original)
    content_type, stored, kept = photos.prepare(original, keep_location=False)
    assert content_type == f"image/{fmt.lower()}" and not kept
    assert gps_of(stored) == {}
    with Image.open(io.BytesIO(stored)) as img:
        assert img.getexif()[MAKE] == "GridPhone"
        img.load()


def test_a_location_in_a_picture_after_the_first_is_not_stored():
    """A phone's file may carry more after the first picture (another frame, an appended
    picture), with a location of its own: only the first picture is kept, without its own."""
    first, second = jpeg_with_gps(), jpeg_with_gps()
    _type, stored, _kept = photos.prepare(first + second, keep_location=False)
    assert stored == photos.prepare(first, keep_location=False)[1]
    assert gps_of(stored) == {} and b"GridPhone" in stored
    assert len(stored) == len(first)  # the location blanked in place; the second picture gone


def test_a_multi_picture_jpeg_is_taken_as_its_first_picture():
    """Pillow calls a JPEG with an MPF directory and two frames MPO; such phone photos are
    stored as the plain JPEG of their first frame, not refused."""
    frames = [Image.new("RGB", (32, 24), c) for c in ((200, 0, 0), (0, 0, 200))]
    out = io.BytesIO()
    frames[0].save(out, "MPO", save_all=True, append_images=frames[1:])
    with Image.open(io.BytesIO(out.getvalue())) as img:
        assert img.format == "MPO"
    content_type, stored, _kept = photos.prepare(out.getvalue(), keep_location=False)
    assert content_type == "image/jpeg"
    with Image.open(io.BytesIO(stored)) as img:
        assert img.format == "JPEG" and getattr(img, "n_frames", 1) == 1
        assert img.getpixel((5, 5))[0] > 150  # the first (red) frame


def test_xmp_is_dropped_with_the_location():
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        b'22-rdf-syntax-ns#"><rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" '
        b'exif:GPSLatitude="31,14.5N"/></rdf:RDF></x:xmpmeta>'
    )
    out = io.BytesIO()
    Image.new("RGB", (20, 20)).save(out, "JPEG", xmp=xmp)
    assert b"GPSLatitude" in out.getvalue()
    _type, stored, _kept = photos.prepare(out.getvalue(), keep_location=False)
    assert b"GPSLatitude" not in stored
    Image.open(io.BytesIO(stored)).load()


def test_a_broken_exif_block_is_dropped_whole():
    good = jpeg_with_gps()
    start = good.index(b"Exif\x00\x00") + 6
    broken = bytearray(good)
    broken[start + 4 : start + 8] = b"\xff\xff\xff\x00"  # IFD0 far outside the block
    _type, stored, _kept = photos.prepare(bytes(broken), keep_location=False)
    assert b"Exif\x00\x00" not in stored and gps_of(stored) == {}


# ------------------------------------------------------------------ refusals


def test_a_text_file_named_jpg_is_refused_and_nothing_is_stored(app, client, auth):
    response = upload(client, auth("off1"), b"just some text, not a photo\n", name="photo.jpg")
    assert response.status_code == 400
    assert response.get_json()["error"]["fields"] == {"file": photos.NOT_AN_IMAGE}
    assert stored_files(app) == [] and photo_rows(app) == 0


def test_a_truncated_image_is_refused(app, client, auth):
    data = jpeg_with_gps()
    response = upload(client, auth("off1"), data[: len(data) // 2])
    assert response.status_code == 400
    assert response.get_json()["error"]["fields"] == {"file": photos.UNREADABLE}
    assert stored_files(app) == [] and photo_rows(app) == 0


def test_a_photo_over_the_limit_is_refused_and_nothing_is_stored(app, client, auth):
    too_big = b"\xff\xd8\xff\xe0" + bytes(photos.MAX_BYTES - 3)
    assert len(too_big) == photos.MAX_BYTES + 1
    response = upload(client, auth("off1"), too_big)
    assert response.status_code == 400
    assert response.get_json()["error"]["fields"] == {"file": photos.TOO_LARGE}
    assert stored_files(app) == [] and photo_rows(app) == 0


def test_an_upload_without_a_file_is_refused(client, auth):
    response = client.post(
        f"{API}/photos", headers=auth("off1"), data={}, content_type="multipart/form-data"
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["fields"] == {"file": photos.EMPTY}


@pytest.mark.parametrize("username", ["aud", "adm"])
def test_people_who_handle_no_cases_may_not_upload(app, client, auth, username):
    response = upload(client, auth(username), png())
    assert response.status_code == 403
    assert photo_rows(app) == 0


def test_a_hash_uploaded_by_someone_else_cannot_be_attached(app, client, auth):
    sha = uploaded(client, auth("off1b"), png())
    response = open_case(client, auth("off1"), photos=[sha])
    assert response.status_code == 400
    assert response.get_json()["error"]["fields"] == {"photos[0]": photos.NOT_YOURS}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Case)) == 0
        row = db.session.scalars(select(Photo)).one()
        assert row.case_id is None, "still waiting for off1b"
        db.session.remove()


def test_a_photo_on_one_case_cannot_be_attached_to_another(client, auth):
    off1 = auth("off1")
    sha = uploaded(client, off1, png())
    assert open_case(client, off1, photos=[sha]).status_code == 201
    again = open_case(client, off1, photos=[sha])
    assert again.status_code == 400
    assert again.get_json()["error"]["fields"] == {"photos[0]": photos.NOT_YOURS}
    # Uploaded again, the same file can go with the new case.
    assert uploaded(client, off1, png()) == sha
    assert open_case(client, off1, photos=[sha]).status_code == 201


def test_bad_hashes_and_too_many_photos_are_refused_per_field(client, auth):
    off1 = auth("off1")
    bad = open_case(client, off1, photos=["abc"])
    assert bad.status_code == 400 and "photos.0" in bad.get_json()["error"]["fields"]
    many = open_case(client, off1, photos=["a" * 64] * (photos.MAX_PER_STEP + 1))
    assert many.status_code == 400 and "photos" in many.get_json()["error"]["fields"]


# ------------------------------------------------------------------ who sees them


def test_another_grids_leader_gets_404_and_the_cases_own_leader_the_photo(app, client, auth):
    off1 = auth("off1")
    original = png((10, 200, 10))
    sha = uploaded(client, off1, original)
    number = open_case(client, off1, photos=[sha]).get_json()["number"]
    url = f"{API}/cases/{number}/photos/{sha}"

    own = client.get(url, headers=auth("gl1"))
    assert own.status_code == 200
    assert own.headers["Content-Type"] == "image/png"
    assert own.data == original
    assert own.headers["Cache-Control"].startswith("private")

    other = client.get(url, headers=auth("gl3"))
    assert other.status_code == 404
    assert other.get_json()["error"]["code"] == "not_found"
    assert client.get(url, headers=auth("aud")).status_code == 200  # auditors read every case
    assert (
        client.get(f"{API}/cases/{number}/photos/{'0' * 64}", headers=auth("gl1")).status_code
        == 404
    )
    assert client.get(f"{API}/cases/{number}/photos/..%2Fx", headers=auth("gl1")).status_code == 404
    assert client.get(url).status_code == 401


def test_the_case_page_shows_thumbnails_to_those_who_see_the_case(app, auth):
    api = app.test_client()
    sha = uploaded(api, auth("off1"), png((5, 5, 200), (600, 400)))
    number = open_case(api, auth("off1"), photos=[sha]).get_json()["number"]

    def signed_in(username: str):
        page = app.test_client()
        assert page.post("/login", data={"username": username, "password": "pw"}).status_code == 302
        return page

    gl1 = signed_in("gl1")
    html = gl1.get(f"/cases/{number}").get_data(as_text=True)
    thumb = f"/cases/{number}/photos/{sha}?thumb=1"
    assert thumb in html and 'data-testid="event-photos"' in html
    small = gl1.get(thumb)
    assert small.status_code == 200 and small.headers["Content-Type"] == "image/jpeg"
    with Image.open(io.BytesIO(small.data)) as img:
        assert max(img.size) <= photos.THUMB_SIZE
    assert small.headers["Cache-Control"].startswith("private")
    full = gl1.get(f"/cases/{number}/photos/{sha}")
    assert full.status_code == 200 and hashlib.sha256(full.data).hexdigest() == sha

    gl3 = signed_in("gl3")
    assert gl3.get(f"/cases/{number}/photos/{sha}").status_code == 404
    assert gl3.get(thumb).status_code == 404


def test_a_waiting_photo_is_shown_only_to_its_uploader(app, client, auth):
    sha = uploaded(client, auth("off1"), png())
    for username, status in (("off1", 200), ("off1b", 404)):
        page = app.test_client()
        page.post("/login", data={"username": username, "password": "pw"})
        assert page.get(f"/photos/{sha}?thumb=1").status_code == status


# ------------------------------------------------------------------ accepting and handling


def test_accept_and_handle_carry_photos_and_the_chain_still_verifies(app, client, auth):
    off1, gl1 = auth("off1"), auth("gl1")
    opening = uploaded(client, off1, png((1, 2, 3)))
    number = open_case(client, off1, photos=[opening]).get_json()["number"]

    at_accept = uploaded(client, off1, png((4, 5, 6)))
    accepted = complete(client, off1, number, {**ACCEPT, "photos": [at_accept]})
    assert accepted.status_code == 200, accepted.get_json()

    # The handler may name a photo the case already holds, besides their own.
    at_handle = uploaded(client, gl1, jpeg_with_gps())
    handled = complete(client, gl1, number, {"outcome": "resolved", "photos": [at_handle, opening]})
    assert handled.status_code == 200, handled.get_json()

    completed = [e for e in events(client, off1, number) if e["type"] == "task_completed"]
    assert [(e["task"], e["data"]["photos"]) for e in completed] == [
        ("accept", [at_accept]),
        ("handle", [at_handle, opening]),
    ]
    assert chain_ok(app, number)
    with app.app_context():
        case = db.session.scalars(select(Case).where(Case.number == number)).one()
        on_case = [p.sha256 for p in photos.case_photos(db.session, case.id)]
        db.session.remove()
    assert on_case == [opening, at_accept, at_handle]
    for sha in on_case:
        served = client.get(f"{API}/cases/{number}/photos/{sha}", headers=gl1)
        assert served.status_code == 200 and hashlib.sha256(served.data).hexdigest() == sha


def test_a_task_cannot_take_someone_elses_photo(app, client, auth):
    off1 = auth("off1")
    number = open_case(client, off1).get_json()["number"]
    theirs = uploaded(client, auth("gl1"), png())
    response = complete(client, off1, number, {**ACCEPT, "photos": [theirs]})
    assert response.status_code == 400
    assert response.get_json()["error"]["fields"] == {"photos[0]": photos.NOT_YOURS}
    assert [e["type"] for e in events(client, off1, number)] == ["opened", "claimed"]
    bad = complete(client, off1, number, {**ACCEPT, "photos": ["not-a-hash"]})
    assert bad.status_code == 400 and "photos.0" in bad.get_json()["error"]["fields"]


# ------------------------------------------------------------------ the pages


@pytest.fixture
def csrf_app(make_app, tmp_path):
    app = make_app(csrf=True)
    app.config["GRIDLOOP_PHOTOS_DIR"] = str(tmp_path / "photos")
    return app


def test_the_new_case_page_uploads_with_its_csrf_token_and_opens_with_the_photo(csrf_app):
    page = csrf_app.test_client()
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.get("/login").get_data(True))
    page.post("/login", data={"username": "off1", "password": "pw", "csrf_token": token[1]})
    html = page.get("/cases/new").get_data(as_text=True)
    assert 'capture="environment"' in html and 'accept="image/*"' in html
    token = re.search(r'name="csrf-token" content="([^"]+)"', html)[1]

    form = {"file": (io.BytesIO(png()), "x.png", "image/png")}
    refused = page.post("/photos", data=form, content_type="multipart/form-data")
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "csrf"
    assert stored_files(csrf_app) == []

    form = {"file": (io.BytesIO(png()), "x.png", "image/png")}
    answer = page.post(
        "/photos", data=form, content_type="multipart/form-data", headers={"X-CSRFToken": token}
    )
    assert answer.status_code == 201
    sha = answer.get_json()["sha256"]
    assert page.get(answer.get_json()["url"]).status_code == 200

    # Larger than the 1 MiB every other request is held to: the upload raises its own limit.
    noise = io.BytesIO()
    Image.frombytes("RGB", (800, 700), os.urandom(800 * 700 * 3)).save(noise, "PNG")
    assert len(noise.getvalue()) > csrf_app.config["MAX_CONTENT_LENGTH"]
    big = page.post(
        "/photos",
        data={"file": (io.BytesIO(noise.getvalue()), "big.png", "image/png")},
        content_type="multipart/form-data",
        headers={"X-CSRFToken": token},
    )
    assert big.status_code == 201, big.get_data(as_text=True)

    wrong = page.post(
        "/photos",
        data={"file": (io.BytesIO(b"text"), "x.jpg", "image/jpeg")},
        content_type="multipart/form-data",
        headers={"X-CSRFToken": token},
    )
    assert wrong.status_code == 400
    assert wrong.get_json()["error"]["message"] == "只能附上照片（JPEG、PNG 或 WebP 格式）。"

    # A form sent back with errors keeps its photos.
    again = page.post(
        "/cases/new", data={"grid": GRID, "title": "", "photos": sha, "csrf_token": token}
    )
    assert again.status_code == 400
    assert f'name="photos" value="{sha}"' in again.get_data(as_text=True)

    opened = page.post(
        "/cases/new", data={"grid": GRID, "title": "井盖丢了", "photos": sha, "csrf_token": token}
    )
    assert opened.status_code == 302
    number = opened.headers["Location"].rsplit("/", 1)[1]
    shown = page.get(f"/cases/{number}").get_data(as_text=True)
    assert f"/cases/{number}/photos/{sha}?thumb=1" in shown


def test_the_task_page_offers_the_camera_and_names_a_bad_photo(app, client, auth):
    number = open_case(client, auth("off1")).get_json()["number"]
    item = item_of(client, auth("off1"), number)
    theirs = uploaded(client, auth("off1b"), png())
    page = app.test_client()
    page.post("/login", data={"username": "off1", "password": "pw"})
    html = page.get(f"/tasks/{item}").get_data(as_text=True)
    assert 'capture="environment"' in html and "data-photo-picker" in html
    sent = page.post(
        f"/tasks/{item}",
        data={"valid": "true", "category": "dispute", "severity": "normal", "photos": theirs},
    )
    assert sent.status_code == 400
    assert "这张照片无法附上，请重新上传。" in sent.get_data(as_text=True)


def test_the_openapi_document_lists_the_photo_calls(client):
    paths = client.get(f"{API}/openapi.json").get_json()["paths"]
    assert "multipart/form-data" in paths["/photos"]["post"]["requestBody"]["content"]
    assert "404" in paths["/cases/{number}/photos/{sha256}"]["get"]["responses"]
