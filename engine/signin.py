"""Signing in with a password, the same on every path that checks one (the web login, POST
/api/v1/tokens): failures slow further attempts down, and only a few checks run at once.

Failures are rows in login_failure, so the limits hold across processes. They are counted under
three keys: the account from one address, the account from anywhere, and the address for any
account. A key may fail a few times freely; after that each further attempt on it waits twice as
long as the one before, up to a cap; a success clears the account's failures. The right password is never refused for good: an attacker
who keeps failing from elsewhere delays the account's owner by at most a minute, while the
attacker's own address waits up to a quarter of an hour. An attempt that must wait is answered
at once, without checking the password.

Each check costs one argon2 verification (64 MiB at the default cost), so a semaphore bounds how
many run at the same time in one process; an attempt that cannot get a turn soon is told to try
again instead of queueing without limit.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from .models import LoginFailure, Person
from .org import authenticate
from .passwords import Passwords

# Failures count for a day: much longer than the longest wait, so under a steady attack the
# count only grows and the waits stay at their cap.
WINDOW = timedelta(hours=24)
# kind of key: (failures allowed before attempts slow down, longest wait between attempts)
RULES = {
    "pair": (3, timedelta(minutes=15)),  # one account from one address
    "user": (10, timedelta(minutes=1)),  # one account from anywhere: its owner waits little
    # One address, any account; generous, as a village office or a mobile network shares one.
    "addr": (50, timedelta(minutes=15)),
}


@dataclass(frozen=True)
class Attempt:
    person: Person | None = None
    wait_seconds: int = 0  # > 0: too many failures; try again after this long
    busy: bool = False  # too many checks running; try again shortly

    @property
    def ok(self) -> bool:
        return self.person is not None


def failure_keys(username: str, address: str | None) -> list[str]:
    user, addr = (username or "").strip().lower()[:64], address or "-"
    return [f"pair:{user}|{addr}", f"user:{user}", f"addr:{addr}"]


class SignIn:
    """One per process: the password hasher and the bound on concurrent checks."""

    def __init__(self, passwords: Passwords, concurrent_checks: int = 2, turn_wait: float = 5.0):
        self.passwords = passwords
        self.turns = threading.BoundedSemaphore(concurrent_checks)
        self._turn_wait = turn_wait

    def attempt(
        self, session: Session, username: str, password: str, address: str | None, now: datetime
    ) -> Attempt:
        """Check a password unless the keys must wait; record a failure or clear the account's
        failures from this address. Commits what it records."""
        keys = failure_keys(username, address)
        wait = wait_seconds(session, keys, now)
        if wait > 0:
            return Attempt(wait_seconds=wait)
        if not self.turns.acquire(timeout=self._turn_wait):
            return Attempt(busy=True)
        try:
            person = authenticate(session, username, password, self.passwords)
        finally:
            self.turns.release()
        if person is None:
            session.add_all(LoginFailure(key=key, at=now) for key in keys)
            session.execute(delete(LoginFailure).where(LoginFailure.at < now - WINDOW))
            session.commit()
            return Attempt()
        session.execute(delete(LoginFailure).where(LoginFailure.key.in_(keys[:2])))
        session.commit()
        return Attempt(person=person)


def wait_seconds(session: Session, keys: list[str], now: datetime) -> int:
    """How long before another attempt on these keys is checked (0: it may go ahead now)."""
    longest = 0.0
    for key in keys:
        free, cap = RULES[key.split(":", 1)[0]]
        count, latest = session.execute(
            select(func.count(), func.max(LoginFailure.at)).where(
                LoginFailure.key == key, LoginFailure.at > now - WINDOW
            )
        ).one()
        if count < free or latest is None:
            continue
        delay = min(timedelta(seconds=2 ** min(count - free, 20)), cap)
        if latest.tzinfo is None:  # SQLite's max() bypasses the column type
            latest = latest.replace(tzinfo=now.tzinfo)
        longest = max(longest, (latest + delay - now).total_seconds())
    return math.ceil(longest) if longest > 0 else 0
