"""The events the ledger writes, each built in one place with the payload schemas.py declares.

Pure: amounts as strings with two decimals, dates as `YYYY-MM-DD` (what the log stores and the wire
carries). `posting` is the project stream's copy of an entry that moves a line's legally binding or
disbursed amount, with the line's running totals after it (see domain.py on why it exists).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from shared.money import ZERO, money_text
from shared.records import NewEvent

from ..state import ENTRY_POSTED, Commitment, Project


def programmed(
    cup: str,
    local_code: str,
    title: str,
    start_date: dt.date,
    plan_reference: str,
    lines: dict[str, Decimal],
) -> NewEvent:
    return NewEvent(
        "project_programmed",
        {
            "project_cup": cup,
            "local_code": local_code,
            "title": title,
            "start_date": start_date.isoformat(),
            "plan_reference": plan_reference,
            "budget_lines": [
                {"budget_line": k, "programmed": money_text(v)} for k, v in lines.items()
            ],
            "programmed": money_text(sum(lines.values(), ZERO)),
        },
    )


def admitted(
    cup: str, act_id: str, act_reference: str, adopted_on: dt.date, lines: dict[str, Decimal]
) -> NewEvent:
    return NewEvent(
        "funding_admitted",
        {
            "project_cup": cup,
            "act_id": act_id,
            "act_reference": act_reference,
            "adopted_on": adopted_on.isoformat(),
            "budget_lines": [{"budget_line": k, "amount": money_text(v)} for k, v in lines.items()],
            "amount": money_text(sum(lines.values(), ZERO)),
        },
    )


def recorded(
    commitment_id: str,
    cup: str,
    line: str,
    kind: str,
    amount: Decimal,
    source_reference: str,
    signed_on: dt.date,
    *,
    award_id: str | None,
) -> NewEvent:
    return NewEvent(
        "commitment_recorded",
        {
            "commitment_id": commitment_id,
            "project_cup": cup,
            "budget_line": line,
            "kind": kind,
            "amount": money_text(amount),
            "source_reference": source_reference,
            "signed_on": signed_on.isoformat(),
            "award_id": award_id,
        },
    )


def commitment_rejected(
    award_id: str, cup: str, line: str, amount: Decimal, reason: str, available: Decimal
) -> NewEvent:
    return NewEvent(
        "commitment_rejected",
        {
            "award_id": award_id,
            "project_cup": cup,
            "budget_line": line,
            "amount": money_text(amount),
            "reason": reason,
            "available": money_text(available),
        },
    )


def reduced(
    commitment: Commitment,
    reduction_id: str,
    amount: Decimal,
    reason: str,
    source_reference: str,
    reduced_on: dt.date,
) -> NewEvent:
    return NewEvent(
        "commitment_reduced",
        {
            "commitment_id": commitment.commitment_id,
            "project_cup": commitment.project_cup,
            "budget_line": commitment.budget_line,
            "reduction_id": reduction_id,
            "amount": money_text(amount),
            "new_amount": money_text(commitment.amount - amount),
            "reason": reason,
            "source_reference": source_reference,
            "reduced_on": reduced_on.isoformat(),
        },
    )


def disbursed(
    payment_id: str,
    commitment: Commitment,
    amount: Decimal,
    claim_reference: str,
    claim_date: dt.date,
    paid_on: dt.date,
    *,
    tranche_id: str | None,
) -> NewEvent:
    return NewEvent(
        "payment_disbursed",
        {
            "payment_id": payment_id,
            "commitment_id": commitment.commitment_id,
            "project_cup": commitment.project_cup,
            "budget_line": commitment.budget_line,
            "amount": money_text(amount),
            "claim_reference": claim_reference,
            "claim_date": claim_date.isoformat(),
            "paid_on": paid_on.isoformat(),
            "award_id": commitment.award_id,
            "tranche_id": tranche_id,
        },
    )


def payment_rejected(
    award_id: str,
    tranche_id: str,
    commitment_id: str | None,
    amount: Decimal,
    reason: str,
    remaining: Decimal,
) -> NewEvent:
    return NewEvent(
        "payment_rejected",
        {
            "award_id": award_id,
            "tranche_id": tranche_id,
            "commitment_id": commitment_id,
            "amount": money_text(amount),
            "reason": reason,
            "remaining": money_text(remaining),
        },
    )


def posting(
    project: Project,
    entry: NewEvent,
    commitment_id: str,
    *,
    binding: Decimal,
    disbursed: Decimal,
    payment_id: str | None,
) -> NewEvent:
    line = str(entry.data["budget_line"])
    figures = project.lines[line]
    return NewEvent(
        ENTRY_POSTED,
        {
            "project_cup": project.cup,
            "budget_line": line,
            "entry": entry.type,
            "commitment_id": commitment_id,
            "payment_id": payment_id,
            "legally_binding_change": money_text(binding),
            "disbursed_change": money_text(disbursed),
            "legally_binding": money_text(figures.legally_binding + binding),
            "disbursed": money_text(figures.disbursed + disbursed),
        },
    )
