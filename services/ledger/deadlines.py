"""The ledger's rules of time: the payment deadline, document retention, and the office's day.

- Reg. (EU) 2021/1060 art. 74(1)(b): a beneficiary is paid no later than 80 days from the date it
  submitted its payment claim.
- Art. 82: documents are kept for five years from 31 December of the year in which the last
  payment to the beneficiary was made.
- "As at the end of a day" means the end of that day in Bologna (Europe/Rome, with its summer
  time), as a UTC instant: the log records UTC.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

PAYMENT_DAYS = 80
RETENTION_YEARS = 5
OFFICE_TIME = ZoneInfo("Europe/Rome")


def payment_deadline(claim_date: dt.date) -> dt.date:
    """The last day on which a claim submitted on `claim_date` may be paid."""
    return claim_date + dt.timedelta(days=PAYMENT_DAYS)


def days_late(claim_date: dt.date, paid_on: dt.date) -> int:
    """Days past the deadline (0: paid in time)."""
    return max((paid_on - payment_deadline(claim_date)).days, 0)


def retain_until(last_payment: dt.date) -> dt.date:
    """Five years from 31 December of the year of the last payment."""
    return dt.date(last_payment.year + RETENTION_YEARS, 12, 31)


def end_of_day(day: dt.date) -> dt.datetime:
    """The last instant of `day` in Bologna, in UTC (the next local midnight, less 1 µs)."""
    next_midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), OFFICE_TIME)
    return (next_midnight - dt.timedelta(microseconds=1)).astimezone(dt.UTC)


def office_day(instant: dt.datetime) -> dt.date:
    """The calendar day in Bologna at a (timezone-aware) instant."""
    if instant.tzinfo is None:
        raise ValueError("naive datetime: the ledger only handles timezone-aware times")
    return instant.astimezone(OFFICE_TIME).date()
