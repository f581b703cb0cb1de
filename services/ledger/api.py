"""The ledger's HTTP schemas: what a command's body must hold (422 naming the field otherwise) and
what a read answers (a row's schema takes its fields from its read-model table's columns,
`shared.rows.RowSchema`). The same schemas generate the OpenAPI document (shared/openapi.py), so
the document cannot drift from what the service checks and sends."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import marshmallow as ma
from marshmallow import ValidationError, fields, validate

from shared.rows import RowSchema
from shared.schemas import LocalDate, Money, Schema

from . import domain, readmodels
from .events import CUP, positive
from .state import LINES

REFERENCE = [
    validate.Length(min=1, max=100),
    validate.Regexp(r".*[A-Za-z0-9]", error="A reference needs at least one letter or digit."),
]


class Euros(Money):
    """Money as a request body carries it: a string (`"12.50"`) or a whole number. The edge reads
    a JSON number with a fraction as a `Decimal` (never a float), which `Money` would take; here it
    is refused, so that `12.5` sent as a number is a 422 naming the field, as a float would be."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, Decimal):
            raise self.make_error(
                "invalid",
                reason="Amounts are never JSON numbers with a fraction (a float): send a string "
                'such as "12.50"',
            )
        return super()._deserialize(value, attr, data, **kwargs)


def _reference(description: str) -> fields.String:
    return fields.String(required=True, validate=REFERENCE, metadata={"description": description})


class LineAmountIn(Schema):
    budget_line = fields.String(required=True, validate=validate.OneOf(LINES))
    amount = Euros(required=True, validate=positive)


class _ByLine(Schema):
    budget_lines = fields.List(
        fields.Nested(LineAmountIn), required=True, validate=validate.Length(min=1)
    )

    @ma.validates_schema
    def _each_line_once(self, data: dict[str, Any], **_: Any) -> None:
        lines = [item["budget_line"] for item in data.get("budget_lines", [])]
        if len(lines) != len(set(lines)):
            raise ValidationError("Each budget line at most once.", "budget_lines")

    @staticmethod
    def amounts(data: dict[str, Any]) -> dict[str, Any]:
        return {item["budget_line"]: item["amount"] for item in data["budget_lines"]}


class ProgrammeProjectIn(_ByLine):
    cup = fields.String(required=True, validate=CUP, metadata={"example": "F31D23000140007"})
    local_code = fields.String(required=True, validate=validate.Length(min=1, max=40))
    title = fields.String(required=True, validate=validate.Length(min=1, max=300))
    start_date = LocalDate(required=True)
    plan_reference = _reference("the operating plan (act) that allocates the money: the cause")

    @ma.post_load
    def to_command(self, data: dict[str, Any], **_: Any) -> domain.ProgrammeProject:
        return domain.ProgrammeProject(
            data["cup"],
            data["local_code"],
            data["title"],
            data["start_date"],
            data["plan_reference"],
            self.amounts(data),
        )


class AdmitFundingIn(_ByLine):
    act_reference = _reference("the admission-to-funding act, e.g. a managing authority decree")
    adopted_on = LocalDate(required=True)


class RecordCommitmentIn(Schema):
    project_cup = fields.String(required=True, validate=CUP)
    budget_line = fields.String(required=True, validate=validate.OneOf(LINES))
    kind = fields.String(required=True, validate=validate.OneOf(domain.KINDS))
    source_reference = _reference("the signed convention, contract or grant agreement")
    signed_on = LocalDate(required=True)
    amount = Euros(required=True, validate=positive)

    @ma.post_load
    def to_command(self, data: dict[str, Any], **_: Any) -> domain.RecordCommitment:
        return domain.RecordCommitment(
            data["project_cup"],
            data["budget_line"],
            data["kind"],
            data["source_reference"],
            data["signed_on"],
            data["amount"],
        )


class ReduceCommitmentIn(Schema):
    amount = Euros(required=True, validate=positive, metadata={"description": "by how much"})
    reason = fields.String(required=True, validate=validate.Length(min=1, max=300))
    source_reference = _reference("the act that reduces the commitment")
    reduced_on = LocalDate(required=True)


class DisbursePaymentIn(Schema):
    claim_reference = _reference("the beneficiary's payment claim")
    claim_date = LocalDate(required=True)
    paid_on = LocalDate(required=True)
    amount = Euros(required=True, validate=positive)


class AsOfQuery(Schema):
    as_of = LocalDate(
        metadata={"description": "the books as they stood at the end of this day (Bologna time)"}
    )


# -- answers ------------------------------------------------------------------------------------


class FiguresOut(Schema):
    programmed = Money()
    admitted = Money()
    legally_binding = Money()
    disbursed = Money()


class LineFiguresOut(RowSchema):
    class Meta:
        table = readmodels.lines
        exclude = ("project_cup", "position")


class ProgressOut(Schema):
    project_cup = fields.String()
    as_of = LocalDate(allow_none=True)
    total = fields.Nested(FiguresOut)
    disbursed_percent = fields.String(metadata={"description": "disbursed / programmed, 0.1%"})
    budget_lines = fields.List(fields.Nested(LineFiguresOut))


class ProjectOut(RowSchema):
    class Meta:
        table = readmodels.projects

    budget_lines = fields.List(fields.Nested(LineFiguresOut))


class AdmissionOut(RowSchema):
    """An act of admission: its rows, one a budget line, as one act."""

    class Meta:
        table = readmodels.admissions
        exclude = ("project_cup", "budget_line", *readmodels.CAUSE)

    budget_lines = fields.List(fields.Nested(LineAmountIn))


class AdmissionsOut(Schema):
    project_cup = fields.String()
    admissions = fields.List(fields.Nested(AdmissionOut))


class CauseOut(Schema):
    event_id = fields.String(metadata={"description": "the ledger event that recorded it"})
    causation_id = fields.String(
        allow_none=True, metadata={"description": "the other service's event it answered"}
    )
    correlation_id = fields.String(allow_none=True)
    actor = fields.String(allow_none=True)


class ReductionOut(RowSchema):
    class Meta:
        table = readmodels.reductions
        exclude = ("commitment_id", "position", *readmodels.CAUSE)

    cause = fields.Nested(CauseOut)


class PaymentOut(RowSchema):
    class Meta:
        table = readmodels.payments
        exclude = ("position", *readmodels.CAUSE)

    cause = fields.Nested(CauseOut)


class CommitmentOut(RowSchema):
    class Meta:
        table = readmodels.commitments
        exclude = ("position", *readmodels.CAUSE)

    remaining = Money()
    cause = fields.Nested(CauseOut)
    reductions = fields.List(fields.Nested(ReductionOut))
    payments = fields.List(fields.Nested(PaymentOut))


class CommitmentsOut(Schema):
    project_cup = fields.String()
    commitments = fields.List(fields.Nested(CommitmentOut))


class PaymentsOut(Schema):
    project_cup = fields.String()
    payments = fields.List(fields.Nested(PaymentOut))


class LatePaymentOut(Schema):
    payment_id = fields.String()
    commitment_id = fields.String()
    claim_reference = fields.String()
    claim_date = LocalDate()
    deadline = LocalDate()
    paid_on = LocalDate()
    days_taken = fields.Integer()
    days_late = fields.Integer()
    amount = Money()


class OverdueOut(Schema):
    project_cup = fields.String()
    limit_days = fields.Integer()
    late = fields.List(fields.Nested(LatePaymentOut))


class DocumentOut(Schema):
    document = fields.String(metadata={"description": "convention | contract | grant | claim"})
    reference = fields.String()
    commitment_id = fields.String()
    payment_id = fields.String(allow_none=True)
    last_payment_on = LocalDate(allow_none=True)
    retain_until = LocalDate(
        allow_none=True, metadata={"description": "null while nothing has been paid"}
    )


class RetentionOut(Schema):
    project_cup = fields.String()
    documents = fields.List(fields.Nested(DocumentOut))
