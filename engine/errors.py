"""Domain errors. The web layer maps each to one HTTP status; the engine knows nothing of HTTP."""

from __future__ import annotations


class GridloopError(Exception):
    code = "error"

    def __init__(self, message: str, fields: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields


class Invalid(GridloopError):
    """Bad input: one message per field. Nothing was changed."""

    code = "invalid"


class NotFound(GridloopError):
    """Missing, or outside the caller's units (the two are indistinguishable on purpose)."""

    code = "not_found"


class Forbidden(GridloopError):
    """The caller may see this but not do that."""

    code = "forbidden"


class Conflict(GridloopError):
    """Someone else got there first: claimed, completed, or changed the case meanwhile."""

    code = "conflict"
