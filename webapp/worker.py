"""Moved to the jobs package (jobs/worker.py); this name stays for one reader.

rq jobs enqueued before the move name their function `webapp.worker.fire_case`, and a queue may
still hold some after an upgrade: they run the same job. New code imports from jobs/.
"""

from jobs.worker import fire_case

__all__ = ["fire_case"]
