"""An award and its tranches (awards.py): the ledger's answers applied once, the tranche rules, the
timeout alert."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest

from services.calls.commands import ReportExpenditure, RequestTranche
from services.calls.domain import awards
from services.calls.domain.errors import (
    AnswerMismatch,
    AwardNotConfirmed,
    TrancheExceedsAward,
    TrancheOrder,
    WrongState,
)
from shared.clock import UTC
from shared.errors import InvalidInput, NotFound
from tests.unit.calls.builders import apply_award

AWARDED_AT = dt.datetime(2024, 4, 5, 8, 0, tzinfo=UTC)
DAY = dt.date(2024, 5, 2)


def granted(amount: str = "8000.00") -> awards.Award:
    event = awards.grant(
        award_id="aw-1",
        call_id="call-1",
        application_id="app-1",
        project_cup="F31D23000140007",
        budget_line="labour_policies",
        amount=Decimal(amount),
        reference="AVV-2024-01/1",
        awarded_on=dt.date(2024, 4, 5),
    )
    return apply_award(awards.Award(), [event], at=AWARDED_AT)


def recorded_commitment(amount: str = "8000.00") -> dict:
    return {
        "award_id": "aw-1",
        "commitment_id": "grant-aw-1",
        "amount": amount,
        "signed_on": "2024-04-05",
    }


def confirmed(amount: str = "8000.00") -> awards.Award:
    award = granted(amount)
    return apply_award(award, awards.confirm(award, recorded_commitment(amount)))


def tranche(award: awards.Award, kind: str, amount: str) -> str:
    events = awards.request_tranche(
        award,
        RequestTranche(
            kind=kind, amount=Decimal(amount), claim_reference=f"claim-{kind}", claim_date=DAY
        ),
        DAY,
    )
    apply_award(award, events)
    return str(events[0].data["tranche_id"])


def paid(award: awards.Award, tranche_id: str, amount: str) -> None:
    answer = {
        "award_id": "aw-1",
        "tranche_id": tranche_id,
        "amount": amount,
        "payment_id": f"tranche-{tranche_id}",
        "paid_on": "2024-05-03",
    }
    apply_award(award, awards.record_payment(award, answer))


def test_commitment_recorded_confirms_once_and_checks_the_amount():
    award = granted()
    with pytest.raises(AnswerMismatch):
        awards.confirm(award, recorded_commitment("7999.99"))
    events = awards.confirm(award, recorded_commitment())
    assert [(e.type, e.data["commitment_id"]) for e in events] == [
        ("grant_confirmed", "grant-aw-1")
    ]
    apply_award(award, events)
    assert award.status == "confirmed"
    assert awards.confirm(award, recorded_commitment()) == []  # the same answer again: nothing
    with pytest.raises(AnswerMismatch):
        awards.suspend(
            award, {"award_id": "aw-1", "amount": "8000.00", "reason": "line_lacks_room"}
        )


def test_commitment_rejected_suspends_once():
    award = granted()
    answer = {
        "award_id": "aw-1",
        "amount": "8000.00",
        "reason": "line_lacks_room",
        "available": "5000.00",
    }
    events = awards.suspend(award, answer)
    assert events[0].type == "grant_suspended"
    assert (
        events[0].data["reason"] == "line_lacks_room" and events[0].data["available"] == "5000.00"
    )
    apply_award(award, events)
    assert award.status == "suspended"
    assert awards.suspend(award, answer) == []
    with pytest.raises(AnswerMismatch):
        awards.confirm(award, recorded_commitment())


def test_no_tranche_while_the_award_is_not_confirmed():
    award = granted()
    with pytest.raises(AwardNotConfirmed) as refused:
        awards.request_tranche(
            award,
            RequestTranche(
                kind="advance", amount=Decimal("100.00"), claim_reference="c", claim_date=DAY
            ),
            DAY,
        )
    assert refused.value.status == 409 and refused.value.details["status"] == "granted"
    apply_award(
        award,
        awards.suspend(
            award, {"award_id": "aw-1", "amount": "8000.00", "reason": "line_lacks_room"}
        ),
    )
    with pytest.raises(AwardNotConfirmed):
        awards.request_tranche(
            award,
            RequestTranche(
                kind="advance", amount=Decimal("100.00"), claim_reference="c", claim_date=DAY
            ),
            DAY,
        )


def test_no_tranche_beyond_the_award():
    award = confirmed()
    tranche(award, "advance", "3000.00")
    tranche(award, "interim", "4000.00")
    with pytest.raises(TrancheExceedsAward) as refused:
        awards.request_tranche(
            award,
            RequestTranche(
                kind="balance", amount=Decimal("1000.01"), claim_reference="c", claim_date=DAY
            ),
            DAY,
        )
    assert refused.value.details["remaining"] == "1000.00"
    assert tranche(award, "balance", "1000.00")
    assert award.remaining == Decimal("0.00")


def test_tranche_payload_is_f2_exactly():
    award = confirmed()
    events = awards.request_tranche(
        award,
        RequestTranche(
            kind="advance", amount=Decimal("2400.00"), claim_reference="PG-77", claim_date=DAY
        ),
        DAY,
    )
    data = events[0].data
    assert set(data) == {
        "award_id",
        "tranche_id",
        "kind",
        "amount",
        "claim_reference",
        "claim_date",
    }
    assert (data["amount"], data["claim_date"], data["kind"]) == (
        "2400.00",
        "2024-05-02",
        "advance",
    )


def test_an_advance_only_first_and_nothing_after_the_balance():
    award = confirmed()
    tranche(award, "interim", "1000.00")
    with pytest.raises(TrancheOrder):
        awards.request_tranche(
            award,
            RequestTranche(
                kind="advance", amount=Decimal("1.00"), claim_reference="c", claim_date=DAY
            ),
            DAY,
        )
    tranche(award, "balance", "1000.00")
    with pytest.raises(TrancheOrder):
        awards.request_tranche(
            award,
            RequestTranche(
                kind="interim", amount=Decimal("1.00"), claim_reference="c", claim_date=DAY
            ),
            DAY,
        )


def test_a_rejected_tranche_frees_its_amount_and_a_paid_balance_closes_the_award():
    award = confirmed()
    first = tranche(award, "advance", "8000.00")
    answer = {
        "award_id": "aw-1",
        "tranche_id": first,
        "amount": "8000.00",
        "reason": "exceeds_commitment",
        "remaining": "0.00",
    }
    rejected = awards.record_payment_rejection(award, answer)
    assert (
        rejected[0].type == "tranche_rejected"
        and rejected[0].data["reason"] == "exceeds_commitment"
    )
    apply_award(award, rejected)
    assert awards.record_payment_rejection(award, answer) == []
    with pytest.raises(AnswerMismatch):
        paid(award, first, "8000.00")
    assert award.remaining == Decimal("8000.00")
    balance = tranche(award, "balance", "8000.00")
    with pytest.raises(AnswerMismatch):
        paid(award, balance, "7000.00")
    paid(award, balance, "8000.00")
    assert award.status == "closed"
    assert awards.record_payment(award, {"tranche_id": balance, "amount": "8000.00"}) == []
    with pytest.raises(NotFound):
        awards.record_payment(award, {"tranche_id": "nope", "amount": "1.00"})


def test_expenditure_reports_and_revocation_need_a_confirmed_award():
    award = granted()
    report = ReportExpenditure(
        amount=Decimal("500.00"),
        period_from=DAY,
        period_to=DAY,
        description="tools",
    )
    with pytest.raises(WrongState):
        awards.report_expenditure(award, report, DAY)
    with pytest.raises(WrongState):
        awards.revoke(award, reason="fraud", revoked_on=DAY)
    award = confirmed()
    apply_award(award, awards.report_expenditure(award, report, DAY))
    apply_award(award, awards.report_expenditure(award, report, DAY))
    assert (award.reports, award.expenditure) == (2, Decimal("1000.00"))
    with pytest.raises(InvalidInput):
        awards.report_expenditure(
            award, dataclasses.replace(report, period_from=DAY + dt.timedelta(days=1)), DAY
        )
    paid(award, tranche(award, "advance", "2000.00"), "2000.00")
    revoked = awards.revoke(award, reason="project abandoned", revoked_on=DAY)
    assert revoked[0].data["paid"] == "2000.00"
    apply_award(award, revoked)
    with pytest.raises(AwardNotConfirmed):
        awards.request_tranche(
            award,
            RequestTranche(
                kind="interim", amount=Decimal("1.00"), claim_reference="c", claim_date=DAY
            ),
            DAY,
        )


def test_an_award_without_an_answer_past_the_timeout_raises_one_alert():
    award = granted()
    timeout = dt.timedelta(hours=24)
    assert (
        awards.flag_overdue(award, AWARDED_AT + timeout - dt.timedelta(microseconds=1), timeout)
        == []
    )
    alert = awards.flag_overdue(award, AWARDED_AT + timeout, timeout)
    assert alert[0].type == "award_answer_overdue"
    assert alert[0].data["awarded_at"] == "2024-04-05T08:00:00.000000Z"
    assert alert[0].data["timeout_seconds"] == 86400
    apply_award(award, alert)
    assert awards.flag_overdue(award, AWARDED_AT + 2 * timeout, timeout) == []
    # an answer after the alert still applies
    apply_award(award, awards.confirm(award, recorded_commitment()))
    assert award.status == "confirmed"
    assert awards.flag_overdue(confirmed(), AWARDED_AT + 2 * timeout, timeout) == []


def test_a_tranche_is_claimed_today_at_the_latest():
    """A claim dated after today would reach the ledger as a claim it must not pay yet: refused
    here, naming the field (the ledger refuses it too, for any other sender)."""
    award = confirmed()
    later = RequestTranche("advance", Decimal("10.00"), "c", DAY + dt.timedelta(days=1))
    with pytest.raises(InvalidInput) as refused:
        awards.request_tranche(award, later, DAY)
    assert refused.value.status == 422 and list(refused.value.fields) == ["claim_date"]
    undated = awards.request_tranche(award, dataclasses.replace(later, claim_date=None), DAY)
    assert undated[0].data["claim_date"] == DAY.isoformat()
