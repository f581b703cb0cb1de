"""The ledger's rules of time: the payment deadline and document retention.

- Reg. (EU) 2021/1060 art. 74(1)(b): a beneficiary is paid no later than 80 days from the date it
  submitted its payment claim.
- Art. 82: documents are kept for five years from 31 December of the year in which the last
  payment to the beneficiary was made.

"As at the end of a day" (the end of that day in Bologna, as a UTC instant) and the office's day
are the chassis's, `shared.days`.
"""

from __future__ import annotations

import datetime as dt

PAYMENT_DAYS = 80
RETENTION_YEARS = 5


def payment_deadline(claim_date: dt.date) -> dt.date:
    """The last day on which a claim submitted on `claim_date` may be paid."""
    return claim_date + dt.timedelta(days=PAYMENT_DAYS)


def days_late(claim_date: dt.date, paid_on: dt.date) -> int:
    """Days past the deadline (0: paid in time)."""
    return max((paid_on - payment_deadline(claim_date)).days, 0)


def retain_until(last_payment: dt.date) -> dt.date:
    """Five years from 31 December of the year of the last payment."""
    return dt.date(last_payment.year + RETENTION_YEARS, 12, 31)
