"""The embedded ticker: without Redis, the web server fires due timers once a second; with or
without, it delivers notifications from the outbox and makes the daily digest after midnight. Also the catch-up of `gridloop timers
fire-due`, which fires through the same engine path.

Firing is safe beside other processes (`gridloop timers fire-due`, a second server, rq workers):
each timer row is consumed in its case's transaction under the case's version check. Deliveries run
on their own thread, so a slow webhook never delays an escalation. The ticker takes a Root, not a
web app: `gridloop serve` hands it the app's root, so requests and ticks share one Runtime.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from engine import digests

from . import outbox
from .root import Root

log = logging.getLogger(__name__)


def fire_due(root: Root) -> int:
    """Fire every timer due now, a round of at most the engine's batch of cases; how many cases
    moved."""
    with root.session() as session:
        return root.runtime.fire_due_timers(session)


def catch_up(root: Root, as_of: datetime | None = None) -> int:
    """`gridloop timers fire-due`: fire every timer due at or before `as_of` (default: now), round
    after round until a round moves nothing; how many cases moved in all."""
    moment = as_of or root.clock.now()
    total = 0
    with root.session() as session:
        while moved := root.runtime.fire_due_timers(session, as_of=moment):
            total += moved
    return total


def make_daily_digest(root: Root) -> int:
    """The daily anchor (DESIGN §6), made by whichever process asks first after midnight: the
    web server's ticker, or the ticker thread of `gridloop worker`'s scheduler. Two processes
    asking at once collide on the digest's number, and the one that loses makes nothing."""
    from sqlalchemy.exc import IntegrityError

    with root.session() as session:
        try:
            return 1 if digests.make_daily(session, root.clock.now()) is not None else 0
        except IntegrityError:
            session.rollback()
            return 0


class Ticker:
    def __init__(
        self,
        root: Root,
        interval: float = 1.0,
        delivery_interval: float = 5.0,
        fire_timers: bool | None = None,
        digest_interval: float = 60.0,
    ):
        """`fire_timers` defaults to whether the root has no Redis: with GRIDLOOP_REDIS_URL set,
        rq workers fire timers (`gridloop worker`) and the ticker only delivers notifications."""
        self.root = root
        self.fires_timers = root.redis_url is None if fire_timers is None else fire_timers
        self._stop = threading.Event()
        jobs: list[tuple[Callable[[], int], float, str]] = [
            (self.deliver, delivery_interval, "gridloop-delivery"),
            (self.anchor, digest_interval, "gridloop-digest"),
        ]
        if self.fires_timers:
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
        return fire_due(self.root)

    def deliver(self) -> int:
        """Post the notifications that are due; how many were delivered."""
        return outbox.deliver(self.root)

    def anchor(self) -> int:
        """Make the day's digest once it is past midnight in Asia/Shanghai; 1 if one was made."""
        return make_daily_digest(self.root)

    def _loop(self, work: Callable[[], int], interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                work()
            except Exception:  # keep going: one bad case or endpoint must not stop the rest
                log.exception("%s failed", work.__name__)
