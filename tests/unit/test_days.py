"""Bologna's days as UTC instants (shared/days.py): the ends of a day across summer time, the
office's day at an instant, a window of whole days, a stored date."""

from __future__ import annotations

import datetime as dt

import pytest

from shared import days
from shared.clock import UTC


@pytest.mark.parametrize(
    ("local_day", "utc_instant"),
    [
        ("2024-01-15", dt.datetime(2024, 1, 15, 22, 59, 59, 999999, tzinfo=UTC)),  # CET
        ("2024-07-15", dt.datetime(2024, 7, 15, 21, 59, 59, 999999, tzinfo=UTC)),  # CEST
        ("2024-03-30", dt.datetime(2024, 3, 30, 22, 59, 59, 999999, tzinfo=UTC)),  # before DST
        ("2024-03-31", dt.datetime(2024, 3, 31, 21, 59, 59, 999999, tzinfo=UTC)),  # DST began
        ("2024-10-27", dt.datetime(2024, 10, 27, 22, 59, 59, 999999, tzinfo=UTC)),  # DST ended
    ],
)
def test_the_end_of_a_day_is_bologna_midnight_less_a_microsecond_in_utc(local_day, utc_instant):
    day = dt.date.fromisoformat(local_day)
    end = days.end_of_day(day)
    assert end == utc_instant
    assert end.tzinfo is not None
    assert days.office_day(end) == day
    assert days.office_day(end + dt.timedelta(microseconds=1)) == day + dt.timedelta(days=1)
    assert days.start_of_day(day + dt.timedelta(days=1)) == end + dt.timedelta(microseconds=1)


def test_the_office_day_refuses_a_naive_time():
    with pytest.raises(ValueError, match="naive"):
        days.office_day(dt.datetime(2024, 1, 1, 12))


def test_a_window_holds_its_first_and_last_days_whole():
    start, end = days.window(dt.date(2024, 10, 1), dt.date(2024, 10, 31))
    assert start == dt.datetime(2024, 9, 30, 22, 0, tzinfo=UTC)  # CEST, UTC+2
    assert end == dt.datetime(2024, 10, 31, 23, 0, tzinfo=UTC)  # 1 November 00:00 CET, UTC+1


def test_a_stored_date_reads_back():
    assert days.parse_date("2024-02-29") == dt.date(2024, 2, 29)
    with pytest.raises(ValueError):
        days.parse_date("2024-02-30")
