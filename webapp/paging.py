"""Keyset cursors shared by the API and the pages: opaque to clients, checked on the way back in."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from engine.errors import Invalid

MAX_ID = 2**31 - 1  # an Integer id's range, 32-bit on PostgreSQL: larger ids are not found


def _bad() -> Invalid:
    return Invalid("bad cursor", {"cursor": "not a cursor this API gave out"})


def encode_cursor(values: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(text: str, *kinds: type) -> list:
    """A cursor given out here: a list of the given kinds, ids in the database's range."""
    try:
        padded = text + "=" * (-len(text) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded))
    except ValueError as exc:
        raise _bad() from exc
    if not isinstance(values, list) or len(values) != len(kinds):
        raise _bad()
    for value, kind in zip(values, kinds, strict=True):
        if type(value) is not kind or (kind is int and not 0 < value <= MAX_ID):
            raise _bad()
    return values


def encode_inbox_key(key: tuple[datetime, int] | None) -> str | None:
    return encode_cursor([key[0].isoformat(), key[1]]) if key else None


def decode_inbox_key(text: str) -> tuple[datetime, int]:
    last_text, last_id = decode_cursor(text, str, int)
    try:
        last_due = datetime.fromisoformat(last_text)
    except ValueError as exc:
        raise _bad() from exc
    if last_due.tzinfo is None:
        raise _bad()
    return last_due, last_id
