"""The embedded timer ticker: without Redis, the web server fires due timers once a second.

Firing is safe beside other processes (`gridloop timers fire-due`, a second server): each timer row
is consumed in its case's transaction under the case's version check.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask

from .extensions import db

log = logging.getLogger(__name__)


class Ticker:
    def __init__(self, app: Flask, interval: float = 1.0):
        self.app, self.interval = app, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gridloop-ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def tick(self) -> int:
        with self.app.app_context():
            runtime = self.app.extensions["gridloop"].runtime
            try:
                return runtime.fire_due_timers(db.session)
            finally:
                db.session.remove()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # keep ticking: one bad case must not stop every escalation
                log.exception("timer tick failed")
