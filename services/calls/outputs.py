"""What the calls service's reads and commands answer: the schemas that dump read-model rows to
JSON (Decimal amounts as strings, dates and instants in the wire forms) and that OpenAPI documents.
A command answers in the chassis's one reply shape (`shared.unit_of_work.Outcome.reply`).
"""

from __future__ import annotations

from marshmallow import fields

from shared.schemas import LocalDate, Money, Schema, UtcDateTime

from .schemas import CriterionIn


class CallOut(Schema):
    call_id = fields.String()
    title = fields.String()
    reference = fields.String()
    kind = fields.String()
    budget_line = fields.String()
    project_cup = fields.String()
    status = fields.String()
    budget = Money()
    reserved = Money()
    available = Money(metadata={"description": "budget minus the awards that hold money"})
    award_cap = Money()
    max_share = fields.String()
    opens_on = LocalDate()
    closes_on = LocalDate()
    opens_at = UtcDateTime()
    closes_at = UtcDateTime()
    criteria = fields.List(fields.Nested(CriterionIn))
    bonuses = fields.Dict(keys=fields.String(), values=fields.Integer())
    tie_break = fields.List(fields.String())
    applications = fields.Integer()
    ranking_approved_on = LocalDate(allow_none=True)


class CallsOut(Schema):
    calls = fields.List(fields.Nested(CallOut))


class ApplicationOut(Schema):
    application_id = fields.String()
    call_id = fields.String()
    seq = fields.Integer()
    public_reference = fields.String()
    applicant_kind = fields.String()
    project_title = fields.String()
    eligible_cost = Money()
    requested_amount = Money()
    jobs_created = fields.Integer()
    bonus = fields.Integer()
    status = fields.String()
    reason = fields.String(allow_none=True)
    sessions = fields.Integer()
    scores = fields.Dict(keys=fields.String(), values=fields.Integer())
    award_id = fields.String(allow_none=True)
    submitted_at = UtcDateTime()


class ApplicationsOut(Schema):
    call_id = fields.String()
    applications = fields.List(fields.Nested(ApplicationOut))


class ApplicationDetailOut(ApplicationOut):
    applicant = fields.Dict(
        allow_none=True,
        metadata={
            "description": "opened for the reader; personal fields read [erased] after erasure"
        },
    )


class RankingEntryOut(Schema):
    position = fields.Integer()
    application_id = fields.String()
    public_reference = fields.String()
    scores = fields.Dict(keys=fields.String(), values=fields.Integer())
    weighted = fields.String()
    bonus = fields.Integer()
    total = fields.String()
    award_id = fields.String(allow_none=True)
    awarded = Money(allow_none=True)
    award_status = fields.String(allow_none=True)


class RankingOut(Schema):
    call_id = fields.String()
    approved_on = LocalDate()
    tie_break = fields.String()
    criteria = fields.List(fields.String())
    ranking = fields.List(fields.Nested(RankingEntryOut))


class TrancheOut(Schema):
    tranche_id = fields.String()
    kind = fields.String()
    amount = Money()
    status = fields.String()
    claim_reference = fields.String()
    claim_date = LocalDate()
    payment_id = fields.String(allow_none=True)
    paid_on = LocalDate(allow_none=True)
    reason = fields.String(allow_none=True)


class ReportOut(Schema):
    report_id = fields.String()
    amount = Money()
    period_from = LocalDate()
    period_to = LocalDate()
    description = fields.String()
    reported_on = LocalDate()


class AwardOut(Schema):
    award_id = fields.String()
    call_id = fields.String()
    application_id = fields.String()
    public_reference = fields.String()
    position = fields.Integer()
    amount = Money()
    status = fields.String()
    reference = fields.String()
    awarded_on = LocalDate()
    awarded_at = UtcDateTime()
    commitment_id = fields.String(allow_none=True)
    in_tranches = Money()
    paid = Money()
    expenditure = Money()
    reason = fields.String(allow_none=True)
    overdue = fields.Boolean()
    tranches = fields.List(fields.Nested(TrancheOut))
    expenditure_reports = fields.List(fields.Nested(ReportOut))


class AwardsOut(Schema):
    awards = fields.List(fields.Nested(AwardOut))


class AlertOut(Schema):
    alert_id = fields.String()
    kind = fields.String()
    award_id = fields.String()
    call_id = fields.String()
    awarded_at = UtcDateTime()
    raised_at = UtcDateTime()
    resolved_at = UtcDateTime(allow_none=True)
    resolution = fields.String(allow_none=True)


class AlertsOut(Schema):
    alerts = fields.List(fields.Nested(AlertOut))
