"""Injected clocks. The engine never calls datetime.now() itself: tests move time, never sleep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Protocol

TOWN_ZONE_NAME = "Asia/Shanghai"


def _town_zone() -> tzinfo:
    """China has had no daylight saving time since 1991, so +08:00 is a faithful stand-in when the
    machine has no time-zone database."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(TOWN_ZONE_NAME)
    except (ZoneInfoNotFoundError, ValueError):  # pragma: no cover - depends on the machine
        return timezone(timedelta(hours=8), TOWN_ZONE_NAME)


# The township's zone, the one definition: the day a working-time limit counts, the Chinese times
# in notifications and the year in a case number are all Asia/Shanghai's (DESIGN §7, §11).
SHANGHAI: tzinfo = _town_zone()


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that only moves when told to (tests, simulations, `timers fire-due --as-of`)."""

    def __init__(self, at: datetime):
        self.at = as_utc(at)

    def now(self) -> datetime:
        return self.at

    def set(self, at: datetime) -> None:
        self.at = as_utc(at)

    def advance(self, **delta: float) -> datetime:
        self.at = self.at + timedelta(**delta)
        return self.at


def as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime: give a time zone")
    return value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    """The one text form of an instant: UTC with microseconds and Z (DESIGN §6)."""
    if value is None:
        return None
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return as_utc(value)
