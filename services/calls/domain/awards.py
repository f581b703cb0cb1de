"""An award and its tranches: the pure rules (no I/O). One stream per award, `award-<award_id>`.

Award: granted -> confirmed | suspended (the ledger's answer to `grant_awarded`, flow F1) ->
tranches (advance, interim, balance; flow F2) -> closed (the balance is paid) | revoked.

- no tranche while the award is not confirmed; no tranche beyond the award (tranches requested
  and not rejected, plus the new one, stay within the amount); an advance only first; nothing
  after the balance;
- the ledger's answers are applied once: the same answer again decides nothing, an answer that
  contradicts what was asked (another amount, a paid tranche rejected) raises `AnswerMismatch`,
  which the consumer retries and then parks for an operator, never applies silently;
- an award left `granted` longer than the answer timeout raises one `award_answer_overdue`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from shared.clock import format_ts
from shared.errors import InvalidInput
from shared.money import ZERO, money_text
from shared.records import NewEvent

from ..commands import ReportExpenditure, RequestTranche, derived_id
from ..state import AWARD as AWARD  # the state, beside its decisions
from ..state import LIVE, Award, Tranche
from ..state import evolve_award as evolve_award
from .errors import (
    AnswerMismatch,
    AwardNotConfirmed,
    TrancheExceedsAward,
    TrancheOrder,
    require_state,
)


def grant(
    *,
    award_id: str,
    call_id: str,
    application_id: str,
    project_cup: str,
    budget_line: str,
    amount: Decimal,
    reference: str,
    awarded_on: dt.date,
) -> NewEvent:
    """`grant_awarded` v1, exactly the fields of docs/events.md (F1)."""
    return NewEvent(
        "grant_awarded",
        {
            "award_id": award_id,
            "call_id": call_id,
            "application_id": application_id,
            "project_cup": project_cup,
            "budget_line": budget_line,
            "amount": money_text(amount),
            "reference": reference,
            "awarded_on": awarded_on.isoformat(),
        },
    )


def _same_amount(award: Award, answer: Mapping[str, Any], expected: Decimal, what: str) -> None:
    if Decimal(answer["amount"]) != expected:
        raise AnswerMismatch(
            f"the ledger's {what} is for {answer['amount']}, not {money_text(expected)}",
            award_id=award.award_id,
        )


def _of_tranche(award: Award, tranche: Tranche, **members: Any) -> dict[str, Any]:
    """A tranche event's payload: what each names first (events.TrancheRefV1), then `members`."""
    return {
        "award_id": award.award_id,
        "tranche_id": tranche.tranche_id,
        "kind": tranche.kind,
        "amount": money_text(tranche.amount),
        **members,
    }


# -- the ledger's answers ------------------------------------------------------------------------


def confirm(award: Award, answer: Mapping[str, Any]) -> list[NewEvent]:
    """`commitment_recorded` -> `grant_confirmed`."""
    if award.status in ("confirmed", "closed") and award.commitment_id == answer["commitment_id"]:
        return []
    if award.status != "granted":
        raise AnswerMismatch(f"commitment recorded for an award that is {award.status}")
    _same_amount(award, answer, award.amount, "commitment")
    data = {
        "award_id": award.award_id,
        "call_id": award.call_id,
        "commitment_id": answer["commitment_id"],
        "amount": money_text(award.amount),
    }
    return [NewEvent("grant_confirmed", data)]


def suspend(award: Award, answer: Mapping[str, Any]) -> list[NewEvent]:
    """`commitment_rejected` -> `grant_suspended` (the call releases the money: domain.py)."""
    if award.status == "suspended":
        return []
    if award.status != "granted":
        raise AnswerMismatch(f"commitment rejected for an award that is {award.status}")
    _same_amount(award, answer, award.amount, "rejection")
    data = {
        "award_id": award.award_id,
        "call_id": award.call_id,
        "application_id": award.application_id,
        "amount": money_text(award.amount),
        "reason": answer["reason"],
        "available": answer.get("available"),
    }
    return [NewEvent("grant_suspended", data)]


def _waiting_tranche(
    award: Award, answer: Mapping[str, Any], becomes: str, what: str
) -> Tranche | None:
    """The tranche the ledger's answer (`what`) is about; None if the tranche has had it already
    (the same answer again), AnswerMismatch unless the tranche is still waiting for one."""
    tranche = award.tranche(answer["tranche_id"])
    if tranche.status == becomes:
        return None
    if tranche.status != "requested":
        raise AnswerMismatch(f"{what} for a tranche that is {tranche.status}")
    return tranche


def record_payment(award: Award, answer: Mapping[str, Any]) -> list[NewEvent]:
    """`payment_disbursed` -> `tranche_paid`."""
    tranche = _waiting_tranche(award, answer, "paid", "payment disbursed")
    if tranche is None:
        return []
    _same_amount(award, answer, tranche.amount, "payment")
    data = _of_tranche(award, tranche, payment_id=answer["payment_id"], paid_on=answer["paid_on"])
    return [NewEvent("tranche_paid", data)]


def record_payment_rejection(award: Award, answer: Mapping[str, Any]) -> list[NewEvent]:
    """`payment_rejected` -> `tranche_rejected`, with the ledger's reason."""
    tranche = _waiting_tranche(award, answer, "rejected", "payment rejected")
    if tranche is None:
        return []
    data = _of_tranche(award, tranche, reason=answer["reason"], remaining=answer.get("remaining"))
    return [NewEvent("tranche_rejected", data)]


# -- commands ------------------------------------------------------------------------------------


def request_tranche(award: Award, tranche: RequestTranche, today: dt.date) -> list[NewEvent]:
    """`tranche_requested` v1 (F2), claimed on the command's date or today, never later: the
    ledger pays a claim only once it is made (a date to come would be paid before it)."""
    kind, amount = tranche.kind, tranche.amount
    claim_date = tranche.claim_date or today
    if claim_date > today:
        raise InvalidInput(
            "a claim cannot be dated after today",
            fields={"claim_date": [f"must be on or before {today.isoformat()} (Bologna)"]},
        )
    if award.status != "confirmed":
        raise AwardNotConfirmed(
            f"no tranche while the award is {award.status}: the ledger has not confirmed it",
            status=award.status,
        )
    if amount <= ZERO:
        raise InvalidInput("a tranche is a positive amount", fields={"amount": ["must be > 0"]})
    live = [t for t in award.tranches.values() if t.status in LIVE]
    if any(t.kind == "balance" for t in live):
        raise TrancheOrder("the balance was the award's last tranche")
    if kind == "advance" and live:
        raise TrancheOrder("an advance is only the first tranche")
    if amount > award.remaining:
        raise TrancheExceedsAward(
            "the tranche would take the award beyond its amount",
            award=money_text(award.amount),
            in_tranches=money_text(award.in_tranches),
            remaining=money_text(award.remaining),
        )
    data = {
        "award_id": award.award_id,
        "tranche_id": derived_id(award.award_id, "tranche", str(len(award.tranches) + 1)),
        "kind": kind,
        "amount": money_text(amount),
        "claim_reference": tranche.claim_reference,
        "claim_date": claim_date.isoformat(),
    }
    return [NewEvent("tranche_requested", data)]


def report_expenditure(
    award: Award, report: ReportExpenditure, reported_on: dt.date
) -> list[NewEvent]:
    require_state("the award", award.status, ("confirmed",), "report expenditure against it")
    if report.period_to < report.period_from:
        raise InvalidInput(
            "the period ends before it starts", fields={"period_to": ["< period_from"]}
        )
    data = {
        "award_id": award.award_id,
        "report_id": derived_id(award.award_id, "report", str(award.reports + 1)),
        "amount": money_text(report.amount),
        "period_from": report.period_from.isoformat(),
        "period_to": report.period_to.isoformat(),
        "description": report.description,
        "reported_on": reported_on.isoformat(),
    }
    return [NewEvent("expenditure_reported", data)]


def revoke(award: Award, *, reason: str, revoked_on: dt.date) -> list[NewEvent]:
    require_state("the award", award.status, ("confirmed",), "revoke it")
    data = {
        "award_id": award.award_id,
        "call_id": award.call_id,
        "reason": reason,
        "revoked_on": revoked_on.isoformat(),
        "paid": money_text(
            sum((t.amount for t in award.tranches.values() if t.status == "paid"), ZERO)
        ),
    }
    return [NewEvent("grant_revoked", data)]


def flag_overdue(award: Award, now: dt.datetime, timeout: dt.timedelta) -> list[NewEvent]:
    """One alert for an award still waiting for the ledger's answer after `timeout`."""
    if award.status != "granted" or award.overdue or award.awarded_at is None:
        return []
    if now - award.awarded_at < timeout:
        return []
    data = {
        "award_id": award.award_id,
        "call_id": award.call_id,
        "awarded_at": format_ts(award.awarded_at),
        "detected_at": format_ts(now),
        "timeout_seconds": int(timeout.total_seconds()),
    }
    return [NewEvent("award_answer_overdue", data)]
