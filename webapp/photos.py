"""Photos (照片) on the pages and in the API: upload one, then name it in the step that attaches it.

Uploading is a request of its own (POST /photos for the pages, POST /api/v1/photos for clients):
the file is checked, stripped of its location unless kept on purpose, and stored by engine/photos.py
under the instance folder (GRIDLOOP_PHOTOS_DIR, default instance/photos); the answer is its
sha256. Opening a case, accepting or handling then carries `photos: [sha256, …]`, and the engine
links the photos to the case in the step's transaction. An upload is the only request that may be
larger than MAX_CONTENT_LENGTH: its view raises the limit for itself, so the page route checks its
CSRF token itself, after that.

A case's photos are answered only to people who may see the case (engine.access.can_see_case),
and 404 to everyone else, as if they did not exist; a photo not yet attached only to the person
who uploaded it (their preview).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request, send_file, url_for
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from sqlalchemy import select

from engine import photos as engine_photos
from engine.access import Viewer, case_scope
from engine.errors import Forbidden, Invalid, NotFound
from engine.models import Case, Photo
from engine.photos import MAX_BYTES, MAX_PER_STEP, PhotoFiles, Upload

from .extensions import csrf, db
from .security import DOWNLOAD_POLICY, TRUE
from .web import login_required, now, viewer, writes

bp = Blueprint("photos", __name__)
# An upload's body: one photo at the limit, and room for the multipart wrapping and the fields.
UPLOAD_BODY = MAX_BYTES + 1024 * 1024
# A file never changes under its hash, but who may see it can (a transfer, a delegation ending):
# a browser may keep it, and asks again (a 304 by its ETag) each time, so access is checked.
CACHE = "private, no-cache"


def photo_root() -> Path:
    """Where the files are: the app's GRIDLOOP_PHOTOS_DIR, else the environment's (read at each
    request: a volume of its own), else the instance folder's photos/."""
    configured = current_app.config.get("GRIDLOOP_PHOTOS_DIR") or os.environ.get(
        "GRIDLOOP_PHOTOS_DIR"
    )
    return Path(configured) if configured else Path(current_app.instance_path) / "photos"


# ------------------------------------------------------------------ uploading


def upload(me: Viewer) -> Upload:
    """Store the request's photo (multipart: `file`, and `keep_location` to keep its location)
    for `me`. Only people who handle cases attach photos: the others get 403 before anything of
    the body is read."""
    if not me.tier_positions():
        raise Forbidden("only people who handle cases attach photos")
    request.max_content_length = UPLOAD_BODY
    sent = request.files.get("file")
    data = sent.stream.read(MAX_BYTES + 1) if sent is not None else b""
    return engine_photos.store(
        db.session,
        photo_root(),
        data,
        uploader=me.username,
        keep_location=request.form.get("keep_location", "").strip().lower() in TRUE,
        now=now(),
    )


def upload_json(stored: Upload) -> dict:
    return {
        "sha256": stored.sha256,
        "content_type": stored.content_type,
        "size": stored.size,
        "kept_location": stored.kept_location,
    }


@bp.post("/photos")
@login_required
@writes
@csrf.exempt  # checked below, once the body may be as large as a photo
def upload_page():
    """The pages' upload (fetch from photos.js): JSON, with messages in the page's language."""
    request.max_content_length = UPLOAD_BODY
    if current_app.config.get("WTF_CSRF_ENABLED", True):
        try:
            csrf.protect()  # Flask-WTF's own check (token, and the referrer over HTTPS)
        except CSRFError:
            return _page_error(400, "csrf", _("The page has expired. Reload it and try again."))
    try:
        stored = upload(viewer())
    except Forbidden:
        return _page_error(403, "forbidden", _("Only officers attach photos."))
    except Invalid as exc:
        return _page_error(400, "invalid", photo_message((exc.fields or {}).get("file", "")))
    answer = upload_json(stored)
    answer["url"] = url_for("photos.mine", sha256=stored.sha256, thumb=1)
    return jsonify(answer), 201


def _page_error(status: int, code: str, message: str):
    from .api import error  # the API's error shape; api.py imports this module

    return error(status, code, message)


# ------------------------------------------------------------------ serving


def serve_case_photo(me: Viewer, number: str, sha256: str, thumb: bool = False) -> Response:
    """A case's photo, for someone who may see the case; NotFound for everyone else."""
    photo = db.session.scalars(
        select(Photo)
        .join(Case, Case.id == Photo.case_id)
        .where(Case.number == number, Photo.sha256 == sha256, case_scope(me))
        .limit(1)
    ).first()
    if photo is None:
        raise NotFound("no such photo")
    return _file(photo.sha256, photo.content_type, thumb)


@bp.get("/cases/<number>/photos/<sha256>")
@login_required
def case_photo(number: str, sha256: str):
    return serve_case_photo(viewer(), number, sha256, _wants_thumb())


@bp.get("/photos/<sha256>")
@login_required
def mine(sha256: str):
    """A photo the signed-in person uploaded that no case holds yet: their own preview."""
    photo = engine_photos.waiting_photo(db.session, viewer().username, sha256)
    if photo is None:
        raise NotFound("no such photo")
    return _file(photo.sha256, photo.content_type, _wants_thumb())


def _wants_thumb() -> bool:
    return request.args.get("thumb") == "1"


def _file(sha256: str, content_type: str, thumb: bool) -> Response:
    files = PhotoFiles(photo_root())
    try:
        if thumb:
            files.thumbnail(sha256)
            path, mimetype, etag = files.thumb_path(sha256), "image/jpeg", f"{sha256}-thumb"
        else:
            path, mimetype, etag = files.path(sha256), content_type, sha256
        response = send_file(path, mimetype=mimetype, etag=etag, conditional=True)
    except (FileNotFoundError, OSError) as exc:
        raise NotFound("no such photo") from exc
    response.headers["Cache-Control"] = CACHE
    response.vary.update(("Cookie", "Authorization"))
    # Shown as an image, never run as anything else, even when opened directly.
    response.headers["Content-Security-Policy"] = DOWNLOAD_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


# ------------------------------------------------------------------ forms and templates


def photo_src(case: Case | None, sha256: str, thumb: bool = True) -> str:
    """Where a page shows a photo: from its case when the case holds it, else the uploader's
    own preview (a photo chosen in a form that was sent back with errors)."""
    args = {"thumb": 1} if thumb else {}
    if case is not None and engine_photos.case_photo(db.session, case.id, sha256) is not None:
        return url_for("photos.case_photo", number=case.number, sha256=sha256, **args)
    return url_for("photos.mine", sha256=sha256, **args)


bp.record_once(
    lambda state: state.app.jinja_env.globals.update(photo_src=photo_src, MAX_PHOTOS=MAX_PER_STEP)
)


def submitted(form) -> list[str]:
    """The photos a page's form names (hidden inputs that photos.js adds after each upload)."""
    return [value for value in form.getlist("photos") if value]


def photo_errors(fields: dict | None) -> dict[str, str]:
    """The first problem with a form's photos, in words, under the key `photos`."""
    for key, message in (fields or {}).items():
        if key == "photos" or key.startswith(("photos.", "photos[")):
            return {"photos": photo_message(message)}
    return {}


COUNT = re.compile(r"(?:must have )?at most (\d+) (?:photos|items)")


def photo_message(message: str) -> str:
    """An engine message about a photo, as this page's language has it."""
    count = COUNT.fullmatch(message)
    if count:
        return _("At most %(count)s photos.", count=count.group(1))
    known = {
        engine_photos.TOO_LARGE: lambda: _(
            "The photo is larger than %(size)s MB.", size=MAX_BYTES // (1024 * 1024)
        ),
        engine_photos.NOT_AN_IMAGE: lambda: _("Only photos can be attached (JPEG, PNG or WebP)."),
        engine_photos.UNREADABLE: lambda: _("The photo could not be read. Take it again."),
        engine_photos.TOO_MANY_PIXELS: lambda: _("The photo has too many pixels."),
        engine_photos.EMPTY: lambda: _("Choose a photo."),
        engine_photos.REPEATED: lambda: _("The same photo is attached twice."),
        engine_photos.NO_UPLOADER: lambda: _("Only officers attach photos."),
    }
    if message in known:
        return known[message]()
    return _("This photo cannot be attached. Upload it again.")
