"""UTC time, and the one textual form of a timestamp that the hash chain uses."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

UTC = dt.UTC


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC)


class FixedClock:
    """A clock tests move by hand, so rules about time are tested without sleeping."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2024, 3, 1, 9, 30, tzinfo=UTC)

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, **delta: float) -> dt.datetime:
        self._now += dt.timedelta(**delta)
        return self._now

    def set(self, when: dt.datetime) -> None:
        self._now = as_utc(when)


def as_utc(value: dt.datetime) -> dt.datetime:
    """A timezone-aware UTC datetime; a naive one is refused, never guessed."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: lavoro only handles timezone-aware times")
    return value.astimezone(UTC)


def format_ts(value: dt.datetime) -> str:
    """RFC 3339 in UTC with microseconds and `Z`: `2024-03-01T09:30:00.000000Z`."""
    # isoformat pads years below 1000 (strftime("%Y") does not) and is several times faster.
    return as_utc(value).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_ts(text: str) -> dt.datetime:
    """Read any RFC 3339 timestamp with an offset and return it in UTC."""
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    return as_utc(dt.datetime.fromisoformat(text))
