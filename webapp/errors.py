"""Friendly error pages for people (the JSON API answers its own errors)."""

from __future__ import annotations

from flask import render_template, request
from flask_babel import get_locale, gettext
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import HTTPException

from engine.errors import Conflict, Forbidden, GridloopError, NotFound

PAGES = {
    400: (
        _l("That request could not be used"),
        _l("Something in the request was not valid. Go back and try again."),
    ),
    403: (
        _l("Not yours to do"),
        _l("You can see this, but your position does not allow this action."),
    ),
    404: (_l("Not found"), _l("This page does not exist, or it is outside your units.")),
    405: (_l("Not allowed"), _l("This page cannot be used that way.")),
    413: (
        _l("Too large to send"),
        _l("What you sent is larger than Gridloop accepts. Send less at a time and try again."),
    ),
    429: (
        _l("Too many attempts"),
        _l("Please wait a little and try again."),
    ),
    409: (
        _l("Someone got there first"),
        _l(
            "This task was claimed or completed by someone else in the meantime, or the case moved on. Your inbox shows what is yours now."
        ),
    ),
    500: (
        _l("Something went wrong"),
        _l(
            "Gridloop hit an error. Nothing was half-saved: try again, and tell the administrator if it keeps happening."
        ),
    ),
}
STATUS_OF = {Forbidden: 403, NotFound: 404, Conflict: 409}


# The query parameters pages take, named as a person reads them in a list of what was wrong.
FIELD_NAMES = {
    "from": _l("From"),
    "to": _l("To"),
    "unit": _l("Unit"),
    "category": _l("Category"),
    "bucket": _l("Trend by"),
    "cursor": _l("Page"),
    "status": _l("Status"),
    "overdue": _l("Overdue"),
}


def page(status: int, detail: str | None = None, fields: dict | None = None):
    """The error page; `fields` (an Invalid's) is listed as which value was not valid."""
    title, text = PAGES.get(status, PAGES[500])
    wrong = [
        (str(FIELD_NAMES.get(name, name)), shown(message) or gettext("This value is not valid."))
        for name, message in sorted((fields or {}).items())
    ]
    return render_template(
        "errors/error.html", status=status, title=title, text=text, detail=detail, wrong=wrong
    ), status


def register(app) -> None:
    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        if request.path.startswith("/api/"):
            from .api import json_http_error

            return json_http_error(exc)
        return page(exc.code or 500)

    @app.errorhandler(GridloopError)
    def _engine(exc: GridloopError):
        return page(STATUS_OF.get(type(exc), 400), shown(exc.message), exc.fields)

    @app.errorhandler(500)
    def _crash(exc):
        if request.path.startswith("/api/"):
            from .api import error

            return error(500, "internal", "the server hit an error; nothing was half-saved")
        return page(500)


def shown(message: str) -> str | None:
    """An error's message as this page's language has it. engine/ speaks English: its messages
    reach a page through the catalog, and one the catalog lacks (it names a person or a value) is
    left out of a Chinese page, whose title and text already say what happened."""
    translated = gettext(message)
    if translated == message and message.isascii() and get_locale().language == "zh":
        return None
    return translated
