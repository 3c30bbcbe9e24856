"""How far behind background work is, for people: `gridloop timers status` and the queues on the
operations page (/admin/ops).

The timer and outbox figures are engine.backlog's, read in SQL from the engine's tables; the queues
are rq's, read through the root's Redis connection when Redis is configured. Both readers take the
root, so the Redis URL and connection are the root's and nobody else's. From 1 November the status
also warns when next year's holiday arrangement is missing (engine.workcal.missing_arrangement).
"""

from __future__ import annotations

from datetime import datetime

from engine.backlog import Backlog, backlog
from engine.clock import iso
from engine.workcal import missing_arrangement

from .root import Root
from .scheduler import QUEUE


def timers_status(root: Root, now: datetime) -> tuple[Backlog, list[str]]:
    """`gridloop timers status`: the backlog as of `now`, and its lines for the terminal (with
    the timer queue's when Redis is configured, or why Redis did not answer, and last a warning
    when next year's holiday arrangement should have been entered by now)."""
    with root.session() as session:
        state = backlog(session, now)
        missing = missing_arrangement(session, now)
    queue, trouble = None, None
    if root.redis_url is not None:
        from redis.exceptions import RedisError

        try:
            queue = queue_counts(root.redis)
        except RedisError as exc:
            trouble = f"queue: Redis at {root.redis_url} did not answer ({exc})"
    lines = status_lines(state, now, queue)
    warning = [calendar_warning(missing)] if missing is not None else []
    return state, ([trouble] if trouble else []) + lines + warning


def calendar_warning(year: int) -> str:
    """The status line for a year whose published holiday arrangement nobody entered."""
    return (
        f"warning: the {year} holiday arrangement has not been entered; deadlines in {year} use "
        "the holidays package's statutory days without make-up working days "
        "(gridloop calendar import FILE)"
    )


def _span(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}d {text}" if days else text


def status_lines(state: Backlog, now: datetime, queue: dict[str, int] | None = None) -> list[str]:
    """engine.backlog's figures as `gridloop timers status` prints them (the operations page
    shows the same)."""
    lines = [
        f"as of {iso(now)}",
        f"pending: {state.pending} timer(s) not yet fired",
        f"overdue: {state.overdue} of them due",
    ]
    if state.oldest_due is not None:
        lines.append(
            f"oldest overdue: due {iso(state.oldest_due)}, "
            f"lag {_span(state.lag_seconds)} ({state.lag_seconds} s)"
        )
    else:
        lines.append("oldest overdue: none, lag 0 s")
    lines.append(
        f"outbox: {state.outbox_pending} notification(s) waiting, {state.outbox_failed} failed"
    )
    if queue is not None:
        lines.append(
            f"queue {QUEUE}: {queue['queued']} queued, {queue['started']} started, "
            f"{queue['failed']} failed"
        )
    return lines


def queue_counts(connection, name: str = QUEUE) -> dict[str, int]:
    """One rq queue's jobs: queued, started (running) and failed."""
    from rq import Queue

    queue = Queue(name, connection=connection)
    return {
        "queued": queue.count,
        "started": queue.started_job_registry.count,
        "failed": queue.failed_job_registry.count,
    }


def queue_states(root: Root) -> list[dict] | None:
    """The operations page's queues: every rq queue with its waiting, running and failed jobs;
    None without Redis; one `{name, error}` entry when Redis fails, since the page must render
    whatever Redis does (the root's client gives up after REDIS_TIMEOUT seconds)."""
    if root.redis_url is None:
        return None
    try:
        from rq import Queue

        states = []
        for queue in Queue.all(connection=root.redis):
            counts = queue_counts(root.redis, queue.name)
            states.append(
                {
                    "name": queue.name,
                    "waiting": counts["queued"],
                    "running": counts["started"],
                    "failed": counts["failed"],
                }
            )
        return states
    except Exception as exc:  # noqa: BLE001 - the page must render even when Redis is down
        return [{"name": "redis", "error": str(exc)[:200]}]
