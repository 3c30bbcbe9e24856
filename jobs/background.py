"""Starting a job people watch (verification, migration): its `job` row, queued, and its run,
inline (tests, the CLI), as an rq job on the timers' queue when GRIDLOOP_REDIS_URL is set (any
worker takes it), or else on a thread of this process (the embedded web server)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from engine.models import Job

from .root import Root
from .scheduler import QUEUE

JOB_TIMEOUT = 6 * 3600  # a province's chains take a while


def start_job(
    root: Root,
    *,
    kind: str,
    by: str,
    run: Callable[[Root, int], None],
    rq_function: str,
    inline: bool = False,
    total: int = 0,
    result: dict[str, Any] | None = None,
) -> int:
    """Record a queued job of `kind` and start `run(root, job_id)`; returns the job's id.
    `rq_function` is the dotted name of the rq job that calls `run` in a worker."""
    with root.session() as session:
        job = Job(
            kind=kind,
            state="queued",
            done=0,
            total=total,
            result=result,
            created_by=by,
            created_at=root.clock.now(),
        )
        session.add(job)
        session.commit()
        job_id = job.id
    if inline:
        run(root, job_id)
    elif root.redis_url:
        from rq import Queue

        Queue(QUEUE, connection=root.redis).enqueue(rq_function, job_id, job_timeout=JOB_TIMEOUT)
    else:
        threading.Thread(target=run, args=(root, job_id), name=f"gridloop-{kind}-{job_id}").start()
    return job_id
