"""SpiffWorkflow's timers read `datetime.now()` from their module; make that read the step's clock.

The patch is per context (a ContextVar), so firing timers "as of" a time in one thread never moves
the clock of another. Outside a step it falls through to the real clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta

from SpiffWorkflow.bpmn.specs.event_definitions import timer as _timer_module

_step_now: ContextVar[datetime | None] = ContextVar("gridloop_step_now", default=None)
# SpiffWorkflow fires a timer when `deadline < now`. DESIGN §7 fires timers due *at or before*
# the step's instant; our instants have microsecond resolution, so comparing against now + 1 µs
# turns the strict comparison into "at or before".
_EPSILON = timedelta(microseconds=1)


class _StepDatetime(datetime):
    @classmethod
    def now(cls, tz=None):
        at = _step_now.get()
        if at is None:
            return datetime.now(tz)
        at = at + _EPSILON
        return at.astimezone(tz) if tz is not None else at.replace(tzinfo=None)


def install() -> None:
    """Idempotent; called when an engine Runtime is created."""
    _timer_module.datetime = _StepDatetime


@contextmanager
def step_clock(at: datetime) -> Iterator[None]:
    token = _step_now.set(at)
    try:
        yield
    finally:
        _step_now.reset(token)
