"""What the ledger knows about a project and a commitment, folded from their streams.

Pure values (frozen dataclasses, `Decimal` euros) and the functions that apply one event to them;
the rules that decide on them are in domain.py. `apply_*` take an event's type and data, so that a
decision can fold the events it is about to append and check the books as they would stand.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from shared.days import parse_date
from shared.money import ZERO, stored_amount

LINES = ("employment_services", "safeguarding", "labour_policies")
ENTRY_POSTED = "entry_posted"


@dataclasses.dataclass(frozen=True)
class Line:
    """The four amounts of one budget line (or of the whole project)."""

    programmed: Decimal = ZERO
    admitted: Decimal = ZERO
    legally_binding: Decimal = ZERO
    disbursed: Decimal = ZERO

    def __add__(self, other: Line) -> Line:
        return Line(
            self.programmed + other.programmed,
            self.admitted + other.admitted,
            self.legally_binding + other.legally_binding,
            self.disbursed + other.disbursed,
        )


@dataclasses.dataclass(frozen=True)
class Admission:
    act_id: str
    act_reference: str
    adopted_on: dt.date
    amounts: Mapping[str, Decimal]


@dataclasses.dataclass(frozen=True)
class Project:
    cup: str | None = None  # None: not programmed yet
    local_code: str = ""
    title: str = ""
    start_date: dt.date | None = None
    plan_reference: str = ""
    lines: Mapping[str, Line] = dataclasses.field(default_factory=dict)
    admissions: Mapping[str, Admission] = dataclasses.field(default_factory=dict)

    @property
    def programmed(self) -> bool:
        return self.cup is not None

    def total(self) -> Line:
        total = Line()
        for line in self.lines.values():
            total = total + line
        return total


@dataclasses.dataclass(frozen=True)
class Payment:
    payment_id: str
    claim_reference: str
    claim_date: dt.date
    paid_on: dt.date
    amount: Decimal
    tranche_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Reduction:
    reduction_id: str
    amount: Decimal
    reason: str
    source_reference: str
    reduced_on: dt.date


@dataclasses.dataclass(frozen=True)
class Commitment:
    commitment_id: str | None = None  # None: nothing recorded on this stream
    project_cup: str = ""
    budget_line: str = ""
    kind: str = ""
    source_reference: str = ""
    signed_on: dt.date | None = None
    original_amount: Decimal = ZERO
    amount: Decimal = ZERO  # after reductions
    paid: Decimal = ZERO
    award_id: str | None = None
    payments: Mapping[str, Payment] = dataclasses.field(default_factory=dict)
    reductions: Mapping[str, Reduction] = dataclasses.field(default_factory=dict)
    rejected: str | None = None  # the reason, when the ledger refused an award
    rejected_tranches: frozenset[str] = frozenset()

    @property
    def recorded(self) -> bool:
        return self.commitment_id is not None

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.paid


def apply_project(state: Project, type_: str, data: Mapping[str, Any]) -> Project:
    if type_ == "project_programmed":
        return Project(
            cup=data["project_cup"],
            local_code=data["local_code"],
            title=data["title"],
            start_date=parse_date(data["start_date"]),
            plan_reference=data["plan_reference"],
            lines={
                item["budget_line"]: Line(programmed=stored_amount(item["programmed"]))
                for item in data["budget_lines"]
            },
        )
    if type_ == "funding_admitted":
        lines = dict(state.lines)
        amounts: dict[str, Decimal] = {}
        for item in data["budget_lines"]:
            line, amount = item["budget_line"], stored_amount(item["amount"])
            amounts[line] = amount
            lines[line] = dataclasses.replace(lines[line], admitted=lines[line].admitted + amount)
        admission = Admission(
            data["act_id"], data["act_reference"], parse_date(data["adopted_on"]), amounts
        )
        return dataclasses.replace(
            state, lines=lines, admissions={**state.admissions, admission.act_id: admission}
        )
    if type_ == ENTRY_POSTED:
        line = data["budget_line"]
        figures = state.lines[line]
        moved = dataclasses.replace(
            figures,
            legally_binding=figures.legally_binding + stored_amount(data["legally_binding_change"]),
            disbursed=figures.disbursed + stored_amount(data["disbursed_change"]),
        )
        return dataclasses.replace(state, lines={**state.lines, line: moved})
    return state


def apply_commitment(state: Commitment, type_: str, data: Mapping[str, Any]) -> Commitment:
    if type_ == "commitment_recorded":
        amount = stored_amount(data["amount"])
        return Commitment(
            commitment_id=data["commitment_id"],
            project_cup=data["project_cup"],
            budget_line=data["budget_line"],
            kind=data["kind"],
            source_reference=data["source_reference"],
            signed_on=parse_date(data["signed_on"]),
            original_amount=amount,
            amount=amount,
            award_id=data.get("award_id"),
        )
    if type_ == "commitment_rejected":
        return dataclasses.replace(state, rejected=data["reason"])
    if type_ == "commitment_reduced":
        reduction = Reduction(
            data["reduction_id"],
            stored_amount(data["amount"]),
            data["reason"],
            data["source_reference"],
            parse_date(data["reduced_on"]),
        )
        return dataclasses.replace(
            state,
            amount=state.amount - reduction.amount,
            reductions={**state.reductions, reduction.reduction_id: reduction},
        )
    if type_ == "payment_disbursed":
        payment = Payment(
            data["payment_id"],
            data["claim_reference"],
            parse_date(data["claim_date"]),
            parse_date(data["paid_on"]),
            stored_amount(data["amount"]),
            data.get("tranche_id"),
        )
        return dataclasses.replace(
            state,
            paid=state.paid + payment.amount,
            payments={**state.payments, payment.payment_id: payment},
        )
    if type_ == "payment_rejected":
        return dataclasses.replace(
            state, rejected_tranches=state.rejected_tranches | {data["tranche_id"]}
        )
    return state
