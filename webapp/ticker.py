"""The embedded ticker: without Redis, the web server fires due timers once a second and delivers
notifications from the outbox.

Firing is safe beside other processes (`gridloop timers fire-due`, a second server): each timer row
is consumed in its case's transaction under the case's version check. Deliveries run on their own
thread, so a slow webhook never delays an escalation.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask

from engine import notify

from .extensions import db

log = logging.getLogger(__name__)


class Ticker:
    def __init__(
        self,
        app: Flask,
        interval: float = 1.0,
        delivery_interval: float = 5.0,
        fire_timers: bool = True,
    ):
        """`fire_timers=False` when rq workers fire timers (GRIDLOOP_REDIS_URL is set): the
        server then only delivers notifications."""
        self.app = app
        self._stop = threading.Event()
        jobs = [(self.deliver, delivery_interval, "gridloop-delivery")]
        if fire_timers:
            jobs.append((self.tick, interval, "gridloop-ticker"))
        self._threads = [
            threading.Thread(target=self._loop, args=(work, every), name=name, daemon=True)
            for work, every, name in jobs
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def tick(self) -> int:
        """Fire every timer due now; how many cases moved."""
        with self.app.app_context():
            runtime = self.app.extensions["gridloop"].runtime
            try:
                return runtime.fire_due_timers(db.session)
            finally:
                db.session.remove()

    def deliver(self) -> int:
        """Post the notifications that are due; how many were delivered."""
        with self.app.app_context():
            runtime = self.app.extensions["gridloop"].runtime
            try:
                return notify.deliver_due(db.session, runtime.clock.now())
            finally:
                db.session.remove()

    def _loop(self, work, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                work()
            except Exception:  # keep going: one bad case or endpoint must not stop the rest
                log.exception("%s failed", work.__name__)
