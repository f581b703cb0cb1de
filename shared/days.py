"""Bologna's calendar days as UTC instants. Standard library only.

The log records UTC; people date things by the day in Bologna (Europe/Rome, with its summer
time): an act adopted "on 3 March", a call open "until 30 April", books "as at the end of a day".
These helpers turn one into the other, and read a date stored as text (`"2024-03-01"`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from shared.clock import UTC

BOLOGNA = ZoneInfo("Europe/Rome")


def office_day(instant: dt.datetime) -> dt.date:
    """The calendar day in Bologna at a (timezone-aware) instant: what acts and claims are dated
    with."""
    if instant.tzinfo is None:
        raise ValueError("naive datetime: lavoro only handles timezone-aware times")
    return instant.astimezone(BOLOGNA).date()


def start_of_day(day: dt.date) -> dt.datetime:
    """Midnight at the start of `day` in Bologna, as a UTC instant."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=BOLOGNA).astimezone(UTC)


def end_of_day(day: dt.date) -> dt.datetime:
    """The last instant of `day` in Bologna, in UTC (the next local midnight, less 1 µs)."""
    next_midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), BOLOGNA)
    return (next_midnight - dt.timedelta(microseconds=1)).astimezone(UTC)


def window(first: dt.date, last: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The Bologna days `first` to `last`, both whole, as the UTC interval [start, end)."""
    return start_of_day(first), start_of_day(last + dt.timedelta(days=1))


def parse_date(text: Any) -> dt.date:
    """A date as an event stores it, `YYYY-MM-DD`."""
    return dt.date.fromisoformat(str(text))
