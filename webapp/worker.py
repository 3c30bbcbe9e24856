"""Moved to the jobs package (jobs/scheduler.py, jobs/worker.py); this name stays for two readers.

rq jobs enqueued before the move name their function `webapp.worker.fire_case`, and a queue may
still hold some after an upgrade: they run the same job. bench/timer_lag.py imports the scheduler
from here. Nothing else should: new code imports from jobs/.
"""

from jobs.scheduler import TimerScheduler
from jobs.worker import fire_case

__all__ = ["TimerScheduler", "fire_case"]
