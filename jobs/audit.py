"""Verification as a background job with progress (the auditors' page's button, POST
/api/v1/verifications): a `job` row says how many cases are checked so far, and holds the report
when the run ends.

With GRIDLOOP_REDIS_URL set the run is an rq job on the timers' queue, so any worker takes it;
without, a thread of the web server runs it. Either way the run reads through its own session and
writes progress through another, committed as it goes, so the page can follow it.
"""

from __future__ import annotations

import logging

from engine.clock import iso
from engine.digests import verify_all
from engine.models import Job

from .background import start_job
from .root import Root

log = logging.getLogger(__name__)
KIND = "verify"


def start_verification(root: Root, by: str, inline: bool = False) -> int:
    """Record a queued verification and start it; its job id. `inline` runs it before returning
    (tests, and the CLI have their own command)."""
    return start_job(
        root,
        kind=KIND,
        by=by,
        run=run_verification,
        rq_function="jobs.audit.verification_job",
        inline=inline,
    )


def run_verification(root: Root, job_id: int) -> None:
    """Run one verification, writing its progress and then its report to the job's row."""
    with root.session() as progress_session, root.session() as session:

        def progress(done: int, total: int) -> None:
            job = progress_session.get(Job, job_id)
            job.state, job.done, job.total = "running", done, total
            progress_session.commit()

        job = progress_session.get(Job, job_id)
        try:
            report = verify_all(session, progress=progress)
        except Exception as exc:  # the row must say it failed, or the page waits for ever
            log.exception("verification %s failed", job_id)
            job = progress_session.get(Job, job_id)
            job.state, job.result = "failed", {"error": str(exc)[:500]}
        else:
            job = progress_session.get(Job, job_id)
            job.state, job.result = "done", report.as_json()
            job.done = job.total = report.cases
        job.finished_at = root.clock.now()
        progress_session.commit()


def verification_job(job_id: int) -> None:
    """The rq job."""
    from .worker import process_root

    run_verification(process_root(), job_id)


def as_json(job: Job) -> dict:
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "done": job.done,
        "total": job.total,
        "results": job.result,
        "created_by": job.created_by,
        "created_at": iso(job.created_at),
        "finished_at": iso(job.finished_at),
    }
