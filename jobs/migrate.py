"""Migration of running cases as a background job with progress (POST /api/v1/migrations, the
administrators' migration page, `gridloop cases migrate`): a `job` row says how many of the
selected cases are done and holds each one's result, {case, ok, reason}, as the run goes.

With GRIDLOOP_REDIS_URL set the run is an rq job on the timers' queue, so any worker takes it;
without, a thread of the web server runs it. Either way the cases move through their own
session, one transaction each (engine/migration.py), and the progress goes through another,
committed as it goes, so the page can follow it. The selection is made when the run is asked
for (an unknown hash is refused then) and again when it starts, from what the request named.
"""

from __future__ import annotations

import logging
from typing import Any

from engine import migration
from engine.clock import iso
from engine.models import Job

from .background import start_job
from .root import Root

log = logging.getLogger(__name__)
KIND = "migrate"
PROGRESS_EVERY = 20  # cases between progress commits (and after the last)


def start_migration(
    root: Root,
    by: str,
    to: str,
    cases: list[str] | None = None,
    source: str | None = None,
    inline: bool = False,
) -> int:
    """Record a queued migration and start it; its job id. `inline` runs it before returning
    (tests; the CLI)."""
    request = {"to": to, "cases": cases, "from": source}
    return start_job(
        root,
        kind=KIND,
        by=by,
        run=run_migration,
        rq_function="jobs.migrate.migration_job",
        inline=inline,
        total=len(cases) if cases is not None else 0,
        result={"request": request, "results": []},
    )


def run_migration(root: Root, job_id: int) -> None:
    """Run one migration, writing its progress and each case's result to the job's row."""
    with root.session() as progress_session, root.session() as session:
        job = progress_session.get(Job, job_id)
        request = dict((job.result or {}).get("request") or {})
        by = job.created_by

        def write(state: str, done: int, total: int, results: list[dict[str, Any]]) -> None:
            job = progress_session.get(Job, job_id)
            job.state, job.done, job.total = state, done, total
            job.result = {"request": request, "results": results}
            progress_session.commit()

        try:
            selection, problems = migration.select_cases(
                session, request.get("to") or "", request.get("cases"), request.get("from")
            )
            if selection is None:
                raise ValueError("; ".join(f"{k}: {v}" for k, v in sorted(problems.items())))
            total = len(selection.cases)
            write("running", 0, total, [])

            def progress(done: int, total: int, results: list[migration.Result]) -> None:
                if done % PROGRESS_EVERY == 0 or done == total:
                    write("running", done, total, [r.as_json() for r in results])

            results = migration.run(session, root.runtime, by, selection, False, progress)
        except Exception as exc:  # the row must say it failed, or the page waits for ever
            log.exception("migration %s failed", job_id)
            session.rollback()
            job = progress_session.get(Job, job_id)
            job.state = "failed"
            job.result = {**(job.result or {}), "error": str(exc)[:500]}
        else:
            job = progress_session.get(Job, job_id)
            job.state, job.done, job.total = "done", len(results), len(results)
            job.result = {"request": request, "results": [r.as_json() for r in results]}
        job.finished_at = root.clock.now()
        progress_session.commit()


def migration_job(job_id: int) -> None:
    """The rq job."""
    from .worker import process_root

    run_migration(process_root(), job_id)


def as_json(job: Job) -> dict[str, Any]:
    """GET /jobs/{id} of a migration: {state, done, total, results: [{case, ok, reason}]}."""
    result = job.result or {}
    body = {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "done": job.done,
        "total": job.total,
        "results": list(result.get("results") or []),
        "request": result.get("request"),
        "created_by": job.created_by,
        "created_at": iso(job.created_at),
        "finished_at": iso(job.finished_at),
    }
    if "error" in result:
        body["error"] = result["error"]
    return body
