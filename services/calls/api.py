"""The calls service's HTTP schemas: what a command's body must be (422 naming each field
otherwise), the query parameters of the reads, and what the reads answer: the schemas that dump
read-model rows to JSON (Decimal amounts as strings, dates and instants in the wire forms) and
that OpenAPI documents; each takes its fields from its table's columns (`shared.rows.RowSchema`)
and declares only what differs. A command answers in the chassis's one reply shape
(`shared.unit_of_work.Outcome.reply`).

Inputs check shape and ranges; the rules that depend on a call (weights summing to 100, a score
within its criterion's maximum, the window) are in the domain, once. Tax codes are normalised
(capitals, no spaces) so that one applicant is one applicant however it was typed. A person's
name, tax code, contacts and priorities are `Personal`: sealed per person before they enter an
event, never in a public schema.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import marshmallow as ma
from marshmallow import ValidationError, fields, validate

from shared.rows import RowSchema
from shared.schemas import LocalDate, Money, Personal, Schema

from . import commands
from .commands import (
    APPLICANT_KINDS,
    BUDGET_LINES,
    KINDS,
    PRIORITIES,
    PROGRAMME_CUP,
    REJECTION_REASONS,
    TRANCHE_KINDS,
)
from .readmodels import tables

APPLICATION_STATES = (
    "submitted",
    "admissible",
    "inadmissible",
    "accompanied",
    "scored",
    "funded",
    "not_funded",
)
AWARD_STATES = ("granted", "confirmed", "suspended", "closed", "revoked")
_PERSON_TAX_CODE = re.compile(r"^[A-Z0-9]{16}$")
_BODY_TAX_CODE = re.compile(r"^([0-9]{11}|[A-Z0-9]{16})$")


def positive(amount: Decimal) -> None:
    if amount <= 0:
        raise ValidationError("Must be more than zero.")


def _text(max_length: int, **kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=max_length), **kwargs)


class TaxCode(fields.String):
    """An Italian codice fiscale: spaces dropped, capitals; a person's is 16 characters, a body's
    11 digits (or 16 characters)."""

    def __init__(self, *, person: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pattern = _PERSON_TAX_CODE if person else _BODY_TAX_CODE

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = "".join(super()._deserialize(value, attr, data, **kwargs).split()).upper()
        if not self.pattern.match(text):
            raise ValidationError("Not a valid tax code (codice fiscale).")
        return text


# -- calls ---------------------------------------------------------------------------------------


class CriterionIn(Schema):
    into = commands.CriterionTerms

    name = fields.String(
        required=True,
        validate=validate.Regexp(r"^[a-z][a-z0-9_]{0,39}$", error="A lowercase slug: a-z, 0-9, _."),
    )
    weight = fields.Integer(required=True, strict=True, validate=validate.Range(1, 100))
    max_score = fields.Integer(required=True, strict=True, validate=validate.Range(1, 1000))


class DraftCallIn(Schema):
    into = commands.DraftCall

    title = _text(200, required=True)
    reference = fields.String(
        required=True,
        validate=validate.Regexp(
            r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$", error="Letters, digits, '.', '_' and '-'."
        ),
        metadata={"description": "the call's act, e.g. AVV-2024-01; ranking references add /n"},
    )
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    budget_line = fields.String(required=True, validate=validate.OneOf(BUDGET_LINES))
    project_cup = fields.String(
        load_default=PROGRAMME_CUP, validate=validate.Regexp(r"^[A-Z0-9]{15}$")
    )
    budget = Money(required=True, validate=positive)
    opens_on = LocalDate(required=True, metadata={"description": "first day, Bologna time"})
    closes_on = LocalDate(required=True, metadata={"description": "last day, Bologna time"})
    criteria = fields.List(
        fields.Nested(CriterionIn),
        required=True,
        validate=validate.Length(min=1, max=20),
        metadata={"description": "weights sum to 100"},
    )
    bonuses = fields.Dict(
        keys=fields.String(validate=validate.OneOf(PRIORITIES)),
        values=fields.Integer(strict=True, validate=validate.Range(0, 100)),
        load_default=dict,
        metadata={"description": "points per priority"},
    )
    award_cap = Money(required=True, validate=positive)
    max_share = fields.Decimal(
        required=True,
        as_string=True,
        metadata={"description": "maximum share of the eligible cost, e.g. 0.80"},
    )
    tie_break = fields.List(
        fields.String(),
        load_default=list,
        metadata={
            "description": "criteria whose higher score wins a tie, in turn; "
            "then earlier submission"
        },
    )

    @ma.validates("max_share")
    def _share(self, value: Decimal, **_: Any) -> None:
        if (
            not value.is_finite()
            or not 0 < value <= 1
            or value != value.quantize(Decimal("0.0001"))
        ):
            raise ValidationError("A share in (0, 1] with at most four decimals, e.g. 0.80.")


# -- applications --------------------------------------------------------------------------------


class PersonIn(Schema):
    name = Personal(_text(200), required=True)
    tax_code = Personal(TaxCode(person=True), required=True)
    email = Personal(fields.Email(), load_default=None)
    phone = Personal(_text(30), load_default=None)
    priorities = Personal(
        fields.List(fields.String(validate=validate.OneOf(PRIORITIES))), load_default=list
    )


class OrganisationIn(Schema):
    name = _text(200, required=True)
    tax_code = TaxCode(person=False, load_default=None, allow_none=True)
    legal_seat = _text(200, load_default=None, allow_none=True)
    priorities = fields.List(fields.String(validate=validate.OneOf(PRIORITIES)), load_default=list)


class ApplicantIn(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(APPLICANT_KINDS))
    person = fields.Nested(
        PersonIn, load_default=None, metadata={"description": "the applicant or reference person"}
    )
    organisation = fields.Nested(OrganisationIn, load_default=None)

    @ma.validates_schema
    def _shape(self, data: dict[str, Any], **_: Any) -> None:
        kind, person, organisation = data["kind"], data.get("person"), data.get("organisation")
        if kind == "person":
            if person is None:
                raise ValidationError("A person applies with their own data.", "person")
            if organisation is not None:
                raise ValidationError("A person applies without an organisation.", "organisation")
        elif organisation is None:
            raise ValidationError("A body or group applies as an organisation.", "organisation")
        elif kind == "third_sector_body" and not organisation.get("tax_code"):
            raise ValidationError("A third-sector body has a tax code.", "organisation")
        elif kind == "informal_group" and not organisation.get("tax_code") and person is None:
            raise ValidationError(
                "An informal group gives a tax code or a reference person.", "person"
            )


class PlanIn(Schema):
    into = commands.BusinessPlan

    eligible_cost = Money(required=True, validate=positive)
    requested_amount = Money(required=True, validate=positive)
    jobs_created = fields.Integer(required=True, strict=True, validate=validate.Range(0, 10_000))


class CloseCallIn(Schema):
    into = commands.CloseCall

    reason = _text(
        500,
        load_default=None,
        metadata={"description": "why the call closes before its window ends; required then"},
    )


class SubmitApplicationIn(Schema):
    into = commands.SubmitApplication

    applicant = fields.Nested(ApplicantIn, required=True)
    project_title = _text(200, required=True)
    business_plan = fields.Nested(PlanIn, required=True)


class RejectIn(Schema):
    into = commands.RejectApplication

    reason = fields.String(required=True, validate=validate.OneOf(REJECTION_REASONS))
    note = fields.String(load_default=None, validate=validate.Length(max=2000))


class AccompanimentIn(Schema):
    into = commands.StartAccompaniment

    started_on = LocalDate(load_default=None, metadata={"description": "default: today"})


class CodesignSessionIn(Schema):
    into = commands.HoldCodesignSession

    held_on = LocalDate(required=True)
    topic = _text(200, required=True)
    notes = fields.String(load_default=None, validate=validate.Length(max=4000))


class ScoreIn(Schema):
    into = commands.ScoreApplication

    scores = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(strict=True),
        required=True,
        metadata={"description": "criterion -> score, 0..its maximum"},
    )


# -- awards --------------------------------------------------------------------------------------


class TrancheIn(Schema):
    into = commands.RequestTranche

    kind = fields.String(required=True, validate=validate.OneOf(TRANCHE_KINDS))
    amount = Money(required=True, validate=positive)
    claim_reference = _text(100, required=True)
    claim_date = LocalDate(load_default=None, metadata={"description": "default: today"})


class ExpenditureIn(Schema):
    into = commands.ReportExpenditure

    amount = Money(required=True, validate=positive)
    period_from = LocalDate(required=True)
    period_to = LocalDate(required=True)
    description = _text(2000, required=True)


class RevokeIn(Schema):
    into = commands.RevokeAward

    reason = _text(2000, required=True)


# -- query parameters ----------------------------------------------------------------------------


class ApplicationsQuery(Schema):
    state = fields.String(validate=validate.OneOf(APPLICATION_STATES))


class AwardsQuery(Schema):
    call_id = fields.String()
    status = fields.String(validate=validate.OneOf(AWARD_STATES))


class AlertsQuery(Schema):
    open = fields.Boolean(metadata={"description": "only alerts not yet resolved"})


# -- what the reads answer ----------------------------------------------------------------------


class CallOut(RowSchema):
    """A call's row, its terms (criteria, bonuses, tie-break) opened out."""

    class Meta:
        table = tables.calls
        exclude = ("terms", "updated_at")

    available = Money(metadata={"description": "budget minus the awards that hold money"})
    criteria = fields.List(fields.Nested(CriterionIn))
    bonuses = fields.Dict(keys=fields.String(), values=fields.Integer())
    tie_break = fields.List(fields.String())


class CallsOut(Schema):
    calls = fields.List(fields.Nested(CallOut))


class ApplicationOut(RowSchema):
    """An application's row, without its applicant (personal data, sealed)."""

    class Meta:
        table = tables.applications
        exclude: tuple[str, ...] = ("person_id", "applicant", "updated_at")

    scores = fields.Dict(keys=fields.String(), values=fields.Integer())


class ApplicationsOut(Schema):
    call_id = fields.String()
    applications = fields.List(fields.Nested(ApplicationOut))


class ApplicationDetailOut(ApplicationOut):
    """An application with its applicant as stored, opened for the reader."""

    class Meta(ApplicationOut.Meta):
        exclude = ("person_id", "updated_at")

    applicant = fields.Dict(
        allow_none=True,
        metadata={
            "description": "opened for the reader; personal fields read [erased] after erasure"
        },
    )


class RankingEntryOut(RowSchema):
    class Meta:
        table = tables.ranking_entries
        exclude = ("call_id",)

    scores = fields.Dict(keys=fields.String(), values=fields.Integer())
    weighted = fields.String()  # points, not euros: as the ranking wrote them
    total = fields.String()


class RankingOut(Schema):
    call_id = fields.String()
    approved_on = LocalDate()
    tie_break = fields.String()
    criteria = fields.List(fields.String())
    ranking = fields.List(fields.Nested(RankingEntryOut))


class TrancheOut(RowSchema):
    class Meta:
        table = tables.tranches
        exclude = ("award_id", "seq", "requested_at")


class ReportOut(RowSchema):
    class Meta:
        table = tables.expenditure_reports
        exclude = ("award_id", "seq")


class AwardOut(RowSchema):
    class Meta:
        table = tables.awards
        exclude = ("updated_at",)

    tranches = fields.List(fields.Nested(TrancheOut))
    expenditure_reports = fields.List(fields.Nested(ReportOut))


class AwardsOut(Schema):
    awards = fields.List(fields.Nested(AwardOut))


class AlertOut(RowSchema):
    class Meta:
        table = tables.alerts


class AlertsOut(Schema):
    alerts = fields.List(fields.Nested(AlertOut))
