"""Reports built from the books: late payments, how long each document is kept, and the CSV export.

Pure functions of what `queries.Books` returns; the rules of time are in deadlines.py.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from shared.money import money_text

from ..domain.deadlines import PAYMENT_DAYS, days_late, payment_deadline, retain_until

CSV_COLUMNS = (
    "record",
    "project_cup",
    "budget_line",
    "commitment_id",
    "kind",
    "source_reference",
    "signed_on",
    "payment_id",
    "claim_reference",
    "claim_date",
    "paid_on",
    "amount",
    "paid",
    "remaining",
    "event_id",
    "causation_id",
)
# A cell a spreadsheet would run as a formula (CSV injection): written with a leading apostrophe.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def overdue(cup: str, payments: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Payments made more than 80 days after their claim (Reg. 2021/1060 art. 74), latest first."""
    late = []
    for payment in payments:
        lateness = days_late(payment["claim_date"], payment["paid_on"])
        if lateness:
            late.append(
                {
                    "payment_id": payment["payment_id"],
                    "commitment_id": payment["commitment_id"],
                    "claim_reference": payment["claim_reference"],
                    "claim_date": payment["claim_date"],
                    "deadline": payment_deadline(payment["claim_date"]),
                    "paid_on": payment["paid_on"],
                    "days_taken": (payment["paid_on"] - payment["claim_date"]).days,
                    "days_late": lateness,
                    "amount": payment["amount"],
                }
            )
    late.sort(key=lambda item: (-item["days_late"], item["payment_id"]))
    return {"project_cup": cup, "limit_days": PAYMENT_DAYS, "late": late}


def retention(cup: str, commitments: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each document (the commitment's act, each claim paid on it) and the day until which it is
    kept: five years from 31 December of the year of the commitment's last payment (art. 82).
    No payment yet: no date (the period has not started)."""
    documents = []
    for commitment in commitments:
        paid_on = [payment["paid_on"] for payment in commitment["payments"]]
        last = max(paid_on) if paid_on else None
        keep = retain_until(last) if last else None
        documents.append(
            {
                "document": commitment["kind"],
                "reference": commitment["source_reference"],
                "commitment_id": commitment["commitment_id"],
                "payment_id": None,
                "last_payment_on": last,
                "retain_until": keep,
            }
        )
        for payment in commitment["payments"]:
            documents.append(
                {
                    "document": "claim",
                    "reference": payment["claim_reference"],
                    "commitment_id": commitment["commitment_id"],
                    "payment_id": payment["payment_id"],
                    "last_payment_on": last,
                    "retain_until": keep,
                }
            )
    return {"project_cup": cup, "documents": documents}


def csv_export(cup: str, commitments: Sequence[dict[str, Any]]) -> str:
    """One row per commitment, then one per payment on it; the CUP on every row (DOMAIN.md:
    every document carries the CUP). Amounts with a decimal point and two places."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for commitment in commitments:
        base = {
            "project_cup": cup,
            "budget_line": commitment["budget_line"],
            "commitment_id": commitment["commitment_id"],
            "kind": commitment["kind"],
            "source_reference": commitment["source_reference"],
            "signed_on": commitment["signed_on"].isoformat(),
        }
        writer.writerow(
            _row(
                record="commitment",
                amount=money_text(commitment["amount"]),
                paid=money_text(commitment["paid"]),
                remaining=money_text(commitment["remaining"]),
                event_id=commitment["cause"]["event_id"],
                causation_id=commitment["cause"]["causation_id"],
                **base,
            )
        )
        for payment in commitment["payments"]:
            writer.writerow(
                _row(
                    record="payment",
                    payment_id=payment["payment_id"],
                    claim_reference=payment["claim_reference"],
                    claim_date=payment["claim_date"].isoformat(),
                    paid_on=payment["paid_on"].isoformat(),
                    amount=money_text(payment["amount"]),
                    event_id=payment["cause"]["event_id"],
                    causation_id=payment["cause"]["causation_id"],
                    **base,
                )
            )
    return out.getvalue()


def _row(**values: Any) -> list[str]:
    return [_cell(values.get(column)) for column in CSV_COLUMNS]


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text
