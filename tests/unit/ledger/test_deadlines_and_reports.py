"""The rules of time (80-day payment deadline, five-year retention) and the reports built on
them: late payments, retention per document, the CSV export."""

from __future__ import annotations

import csv
import io

import pytest

from services.ledger.domain import deadlines
from services.ledger.queries import reports
from tests.unit.ledger.memory import CUP, d, day


def test_a_claim_is_due_within_80_days_and_lateness_counts_from_the_81st():
    assert deadlines.payment_deadline(day("2024-01-01")) == day("2024-03-21")  # leap year
    assert deadlines.days_late(day("2024-01-01"), day("2024-03-21")) == 0
    assert deadlines.days_late(day("2024-01-01"), day("2024-03-22")) == 1
    assert deadlines.days_late(day("2024-01-01"), day("2024-01-02")) == 0


@pytest.mark.parametrize(
    ("last_payment", "keep_until"),
    [("2024-01-01", "2029-12-31"), ("2024-12-31", "2029-12-31"), ("2025-06-20", "2030-12-31")],
)
def test_documents_are_kept_five_years_from_31_december_of_the_last_payment(
    last_payment, keep_until
):
    assert deadlines.retain_until(day(last_payment)) == day(keep_until)


def a_payment(payment_id: str, claim: str, paid: str, amount: str = "100.00") -> dict:
    return {
        "payment_id": payment_id,
        "commitment_id": "contract-x",
        "claim_reference": f"FT {payment_id}",
        "claim_date": day(claim),
        "paid_on": day(paid),
        "amount": d(amount),
        "cause": {"event_id": f"ev-{payment_id}", "causation_id": None},
    }


def test_the_overdue_report_lists_payments_made_after_80_days_latest_first():
    report = reports.overdue(
        CUP,
        [
            a_payment("on-time", "2024-01-01", "2024-03-21"),
            a_payment("one-day", "2024-01-01", "2024-03-22"),
            a_payment("very", "2024-01-01", "2024-06-01"),
        ],
    )
    assert report["limit_days"] == 80
    assert [(p["payment_id"], p["days_late"]) for p in report["late"]] == [
        ("very", 72),
        ("one-day", 1),
    ]
    assert report["late"][1]["deadline"] == day("2024-03-21")
    assert report["late"][1]["days_taken"] == 81


def a_commitment(commitment_id: str, payments: list[dict], reference: str = "CIG 1") -> dict:
    return {
        "commitment_id": commitment_id,
        "budget_line": "safeguarding",
        "kind": "contract",
        "source_reference": reference,
        "signed_on": day("2024-04-01"),
        "amount": d("1000.00"),
        "paid": sum((p["amount"] for p in payments), d("0.00")),
        "remaining": d("1000.00") - sum((p["amount"] for p in payments), d("0.00")),
        "cause": {"event_id": f"ev-{commitment_id}", "causation_id": "calls-event-1"},
        "payments": payments,
    }


def test_retention_runs_from_a_commitments_last_payment_for_its_act_and_every_claim():
    paid = a_commitment(
        "contract-a",
        [a_payment("p1", "2024-02-01", "2024-03-01"), a_payment("p2", "2025-01-02", "2025-02-01")],
    )
    unpaid = a_commitment("contract-b", [])
    documents = reports.retention(CUP, [paid, unpaid])["documents"]
    assert [(doc["document"], doc["retain_until"]) for doc in documents] == [
        ("contract", day("2030-12-31")),
        ("claim", day("2030-12-31")),
        ("claim", day("2030-12-31")),
        ("contract", None),
    ]
    assert documents[0]["last_payment_on"] == day("2025-02-01")


def test_the_csv_export_has_the_cup_on_every_row_and_no_formula_cells():
    rows = list(
        csv.DictReader(
            io.StringIO(
                reports.csv_export(
                    CUP,
                    [
                        a_commitment("contract-a", [a_payment("p1", "2024-02-01", "2024-03-01")]),
                        a_commitment("contract-b", [], reference="=HYPERLINK(1)"),
                    ],
                )
            )
        )
    )
    assert [row["record"] for row in rows] == ["commitment", "payment", "commitment"]
    assert {row["project_cup"] for row in rows} == {CUP}
    assert rows[0]["amount"] == "1000.00"
    assert (rows[0]["paid"], rows[0]["remaining"]) == ("100.00", "900.00")
    assert (rows[1]["payment_id"], rows[1]["amount"], rows[1]["commitment_id"]) == (
        "p1",
        "100.00",
        "contract-a",
    )
    assert rows[0]["causation_id"] == "calls-event-1"
    assert rows[2]["source_reference"] == "'=HYPERLINK(1)"
