"""The calls service's event payloads (versioned), their public schemas, and the ledger events it
consumes.

Payloads are what the domain writes into `NewEvent.data`: amounts as strings with two decimals,
dates `YYYY-MM-DD`, instants RFC 3339 UTC. Each type has a `V1` schema that loads a stored
payload (contract tests hold the domain to it); a changed shape gets a `V2` and an upcaster in
`upcasters`, never an edit of a `V1`.

`PUBLIC` is the allow-list the relay sends to `lavoro.public`. A public schema dumps the payload
as stored and names only what may leave: the applicant (name, tax code, contacts, priorities
of a person) never does, nor free-text notes, nor scores before the ranking is approved.
`ApplicationSubmittedV1` marks the personal fields (`Personal`) that `shared.crypto` seals per
person: `CONTRACTS.persons` names the member holding the person, and the store seals them inside
the append's transaction.

The ledger's answers that calls consumes are read tolerantly (docs/events.md, F1 and F2): members
calls does not know are ignored, so the ledger may add one without a new version; what calls
relies on is required and checked before the domain sees it. `CONTRACTS` holds all of it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from shared.contracts import Contracts
from shared.eventlog import Upcasters
from shared.money import format_money
from shared.schemas import (
    LocalDate,
    Money,
    Personal,
    Schema,
    UtcDateTime,
)

from .commands import (
    APPLICANT_KINDS,
    BUDGET_LINES,
    KINDS,
    PRIORITIES,
    REJECTION_REASONS,
    TRANCHE_KINDS,
)


def _id() -> fields.String:
    return fields.String(required=True, validate=validate.Length(min=1, max=100))


def _one_of(choices: tuple[str, ...]) -> fields.String:
    return fields.String(required=True, validate=validate.OneOf(choices))


# -- the call ------------------------------------------------------------------------------------


class CriterionV1(Schema):
    name = fields.String(required=True)
    weight = fields.Integer(required=True, strict=True)
    max_score = fields.Integer(required=True, strict=True)


class CallTermsV1(Schema):
    """`call_drafted` v1; `call_published` v1 is the same plus `published_at`."""

    call_id = _id()
    title = fields.String(required=True)
    reference = fields.String(required=True)
    kind = _one_of(KINDS)
    budget_line = _one_of(BUDGET_LINES)
    project_cup = fields.String(required=True)
    budget = Money(required=True)
    opens_on = LocalDate(required=True)
    closes_on = LocalDate(required=True)
    opens_at = UtcDateTime(required=True)
    closes_at = UtcDateTime(required=True)
    criteria = fields.List(fields.Nested(CriterionV1), required=True)
    bonuses = fields.Dict(
        keys=fields.String(validate=validate.OneOf(PRIORITIES)), values=fields.Integer()
    )
    award_cap = Money(required=True)
    max_share = fields.String(required=True)
    tie_break = fields.List(fields.String(), required=True)


class CallPublishedV1(CallTermsV1):
    published_at = UtcDateTime(required=True)


class CallClosedV1(Schema):
    """`early` and `reason` came later to v1, optional: a close before them was at the window's
    end (`early` false, no reason); an early closure ("chiusura anticipata") always has a reason."""

    call_id = _id()
    closed_at = UtcDateTime(required=True)
    applications = fields.Integer(required=True)
    early = fields.Boolean(load_default=False)
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


# -- applications --------------------------------------------------------------------------------


class PersonV1(Schema):
    name = Personal(fields.String(), required=True)
    tax_code = Personal(fields.String(), required=True)
    email = Personal(fields.String(), allow_none=True)
    phone = Personal(fields.String(), allow_none=True)
    priorities = Personal(fields.List(fields.String()))


class OrganisationV1(Schema):
    name = fields.String(required=True)
    tax_code = fields.String(allow_none=True)
    legal_seat = fields.String(allow_none=True)
    priorities = fields.List(fields.String(validate=validate.OneOf(PRIORITIES)))


class ApplicantV1(Schema):
    kind = _one_of(APPLICANT_KINDS)
    person_id = fields.String(allow_none=True)  # a pseudonym: the key id of the person's data
    person = fields.Nested(PersonV1, allow_none=True)
    organisation = fields.Nested(OrganisationV1, allow_none=True)


class PlanV1(Schema):
    eligible_cost = Money(required=True)
    requested_amount = Money(required=True)
    jobs_created = fields.Integer(required=True, strict=True)


class ApplicationSubmittedV1(Schema):
    call_id = _id()
    application_id = _id()
    seq = fields.Integer(required=True, strict=True)
    public_reference = fields.String(required=True)
    applicant_key = fields.String(required=True)
    applicant = fields.Nested(ApplicantV1, required=True)
    project_title = fields.String(required=True)
    business_plan = fields.Nested(PlanV1, required=True)
    bonus = fields.Integer(required=True, strict=True)
    submitted_at = UtcDateTime(required=True)


class ApplicationRefV1(Schema):
    """`application_admitted` v1."""

    call_id = _id()
    application_id = _id()


class ApplicationRejectedV1(ApplicationRefV1):
    reason = _one_of(REJECTION_REASONS)
    note = fields.String(allow_none=True, required=True)


class AccompanimentStartedV1(ApplicationRefV1):
    started_on = LocalDate(required=True)


class CodesignSessionHeldV1(ApplicationRefV1):
    session = fields.Integer(required=True, strict=True)
    held_on = LocalDate(required=True)
    topic = fields.String(required=True)
    notes = fields.String(allow_none=True, required=True)


class ApplicationScoredV1(ApplicationRefV1):
    scores = fields.Dict(keys=fields.String(), values=fields.Integer(strict=True), required=True)
    evaluator = fields.String(required=True)


class EvaluationCompletedV1(Schema):
    call_id = _id()
    scored = fields.Integer(required=True)
    inadmissible = fields.Integer(required=True)


class RankingEntryV1(Schema):
    position = fields.Integer(required=True)
    application_id = _id()
    public_reference = fields.String(required=True)
    scores = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    weighted = Money(required=True)  # points with two decimals, written like an amount
    bonus = fields.Integer(required=True)
    total = Money(required=True)


class RankingApprovedV1(Schema):
    call_id = _id()
    approved_on = LocalDate(required=True)
    ranking = fields.List(fields.Nested(RankingEntryV1), required=True)


class FundsReservedV1(Schema):
    call_id = _id()
    award_id = _id()
    application_id = _id()
    public_reference = fields.String(required=True)
    position = fields.Integer(required=True)
    amount = Money(required=True)


class FundsReleasedV1(Schema):
    call_id = _id()
    award_id = _id()
    amount = Money(required=True)
    reason = fields.String(required=True)


# -- awards (F1 and F2 fix grant_awarded and tranche_requested: docs/events.md) ------------------


class GrantAwardedV1(Schema):
    award_id = _id()
    call_id = _id()
    application_id = _id()
    project_cup = fields.String(required=True)
    budget_line = _one_of(BUDGET_LINES)
    amount = Money(required=True)
    reference = fields.String(required=True)
    awarded_on = LocalDate(required=True)


class GrantConfirmedV1(Schema):
    award_id = _id()
    call_id = _id()
    commitment_id = _id()
    amount = Money(required=True)


class GrantSuspendedV1(Schema):
    award_id = _id()
    call_id = _id()
    application_id = _id()
    amount = Money(required=True)
    reason = fields.String(required=True)
    available = Money(required=True, allow_none=True)


class TrancheRefV1(Schema):
    """What every tranche event names first: the tranche, its award, kind and amount."""

    award_id = _id()
    tranche_id = _id()
    kind = _one_of(TRANCHE_KINDS)
    amount = Money(required=True)


class TrancheRequestedV1(TrancheRefV1):
    claim_reference = fields.String(required=True)
    claim_date = LocalDate(required=True)


class TranchePaidV1(TrancheRefV1):
    payment_id = _id()
    paid_on = LocalDate(required=True)


class TrancheRejectedV1(TrancheRefV1):
    reason = fields.String(required=True)
    remaining = Money(required=True, allow_none=True)


class ExpenditureReportedV1(Schema):
    award_id = _id()
    report_id = _id()
    amount = Money(required=True)
    period_from = LocalDate(required=True)
    period_to = LocalDate(required=True)
    description = fields.String(required=True)
    reported_on = LocalDate(required=True)


class GrantRevokedV1(Schema):
    award_id = _id()
    call_id = _id()
    reason = fields.String(required=True)
    revoked_on = LocalDate(required=True)
    paid = Money(required=True)


class AwardAnswerOverdueV1(Schema):
    award_id = _id()
    call_id = _id()
    awarded_at = UtcDateTime(required=True)
    detected_at = UtcDateTime(required=True)
    timeout_seconds = fields.Integer(required=True)


# type -> (current schema version, schema of that version)
EVENTS: dict[str, tuple[int, type[Schema]]] = {
    "call_drafted": (1, CallTermsV1),
    "call_published": (1, CallPublishedV1),
    "call_closed": (1, CallClosedV1),
    "application_submitted": (1, ApplicationSubmittedV1),
    "application_admitted": (1, ApplicationRefV1),
    "application_rejected": (1, ApplicationRejectedV1),
    "accompaniment_started": (1, AccompanimentStartedV1),
    "codesign_session_held": (1, CodesignSessionHeldV1),
    "application_scored": (1, ApplicationScoredV1),
    "evaluation_completed": (1, EvaluationCompletedV1),
    "ranking_approved": (1, RankingApprovedV1),
    "funds_reserved": (1, FundsReservedV1),
    "funds_released": (1, FundsReleasedV1),
    "grant_awarded": (1, GrantAwardedV1),
    "grant_confirmed": (1, GrantConfirmedV1),
    "grant_suspended": (1, GrantSuspendedV1),
    "tranche_requested": (1, TrancheRequestedV1),
    "tranche_paid": (1, TranchePaidV1),
    "tranche_rejected": (1, TrancheRejectedV1),
    "expenditure_reported": (1, ExpenditureReportedV1),
    "grant_revoked": (1, GrantRevokedV1),
    "award_answer_overdue": (1, AwardAnswerOverdueV1),
}

# What partners may see. Internal: call_drafted (not yet public), accompaniment and co-design
# (minutes), scores before the ranking, the call's own bookkeeping of money, the alert.


def _public(event_schema: type[Schema], *members: str) -> type[Schema]:
    """The public schema of an event: its own schema, dumping only `members`, each exactly as
    the event declares it. An allow-list: a member the event's schema has and this list does
    not name stays inside."""
    declared = event_schema._declared_fields
    unknown = [name for name in members if name not in declared]
    if unknown:
        raise ValueError(f"{event_schema.__name__} declares no {unknown}")
    inside = tuple(name for name in declared if name not in members)
    meta = type("Meta", (event_schema.Meta,), {"exclude": inside})
    name = event_schema.__name__.removesuffix("V1") + "Public"
    doc = f"{event_schema.__name__} as partners see it: {', '.join(members)}."
    return type(name, (event_schema,), {"Meta": meta, "__doc__": doc})


# Whether the call closed early, not the office's free-text reason (like every reason).
CallClosedPublic = _public(CallClosedV1, "call_id", "closed_at", "applications", "early")
# No applicant, no title (it may name a person), no bonus (it tells the priorities).
ApplicationSubmittedPublic = _public(
    ApplicationSubmittedV1, "call_id", "application_id", "public_reference", "submitted_at"
)
# The reason, never the office's note.
ApplicationRejectedPublic = _public(ApplicationRejectedV1, "call_id", "application_id", "reason")
# Neither the description (free text) nor, below, the reason of a revocation.
ExpenditureReportedPublic = _public(
    ExpenditureReportedV1,
    "award_id",
    "report_id",
    "amount",
    "period_from",
    "period_to",
    "reported_on",
)
GrantRevokedPublic = _public(GrantRevokedV1, "award_id", "call_id", "revoked_on", "paid")

PUBLIC: dict[str, type[Schema]] = {
    "call_published": CallPublishedV1,
    "call_closed": CallClosedPublic,
    "application_submitted": ApplicationSubmittedPublic,
    "application_admitted": ApplicationRefV1,
    "application_rejected": ApplicationRejectedPublic,
    "evaluation_completed": EvaluationCompletedV1,
    "ranking_approved": RankingApprovedV1,
    "grant_awarded": GrantAwardedV1,
    "grant_confirmed": GrantConfirmedV1,
    "grant_suspended": GrantSuspendedV1,
    "tranche_requested": TrancheRequestedV1,
    "tranche_paid": TranchePaidV1,
    "tranche_rejected": TrancheRejectedV1,
    "expenditure_reported": ExpenditureReportedPublic,
    "grant_revoked": GrantRevokedPublic,
}

upcasters = Upcasters()


# -- what calls consumes from the ledger (docs/events.md, F1 and F2) ------------------------------


class _Incoming(Schema):
    class Meta:
        unknown = ma.EXCLUDE


class _MaybeForCalls(_Incoming):
    """A type the ledger publishes for everyone's commitments or payments: one without an
    `award_id` (a convention, a contract, a payment the offices recorded) is none of calls'
    business, taken without effect and not held to the rest of the contract."""

    def load(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(data, Mapping) and data.get("award_id") is None:
            return {"award_id": None}
        return super().load(data, *args, **kwargs)


class CommitmentRecordedIn(_MaybeForCalls):
    commitment_id = _id()
    award_id = _id()
    amount = Money(required=True)
    signed_on = LocalDate(required=True)


class CommitmentRejectedIn(_Incoming):
    award_id = _id()
    amount = Money(required=True)
    reason = fields.String(required=True)
    available = Money(required=True, allow_none=True)


class PaymentDisbursedIn(_MaybeForCalls):
    payment_id = _id()
    award_id = _id()
    tranche_id = _id()
    amount = Money(required=True)
    paid_on = LocalDate(required=True)


class PaymentRejectedIn(_Incoming):
    award_id = _id()
    tranche_id = _id()
    amount = Money(required=True)
    reason = fields.String(required=True)
    remaining = Money(required=True, allow_none=True)


CONSUMED: dict[tuple[str, int], type[Schema]] = {
    ("commitment_recorded", 1): CommitmentRecordedIn,
    ("commitment_rejected", 1): CommitmentRejectedIn,
    ("payment_disbursed", 1): PaymentDisbursedIn,
    ("payment_rejected", 1): PaymentRejectedIn,
}


def answers_calls(message: Mapping[str, Any]) -> bool:
    """The ledger publishes every commitment and payment on the same routing keys; only those with
    an `award_id` answer calls. The others (conventions, contracts, payments recorded by the
    offices) are none of calls' business and are taken without effect."""
    return message.get("award_id") is not None


def wire(message: Mapping[str, Any]) -> dict[str, Any]:
    """A loaded answer back in the wire form the domain reads (amounts and dates as strings)."""
    return {key: _wire(value) for key, value in message.items()}


def _wire(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format_money(value)
    return value


CONTRACTS = Contracts(
    emitted=EVENTS,
    public=PUBLIC,
    consumed={"ledger": CONSUMED},
    upcasters=upcasters,
    persons={"application_submitted": "applicant.person_id"},
)
