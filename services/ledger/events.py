"""The ledger's event payloads (versioned), its public schemas, and the calls events it consumes.

Payloads are what domain.py writes into `NewEvent.data`: amounts as strings with two decimals,
dates as `YYYY-MM-DD`. Each type has a `V1` schema; a changed shape gets a `V2` and an upcaster in
`upcasters`, never an edit of `V1`. `PUBLIC` is the allow-list the relay sends to `lavoro.public`:
the ledger's events hold no personal data, so a public type's schema lets through every member its
event schema declares; `entry_posted` (the project stream's bookkeeping of each entry) stays
inside.

The consumer schemas hold calls' `grant_awarded`, `tranche_requested` and `grant_revoked` v1 to
the contract in docs/events.md (flows F1, F2, F3). They ignore members they do not know (a tolerant reader: calls may
add a member without a new version); a budget line or project the ledger does not know is not a
validation error but an answer (`commitment_rejected`), so those are plain strings here.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import marshmallow as ma
from marshmallow import ValidationError, fields, validate

from shared.contracts import Contracts
from shared.eventlog import Upcasters
from shared.schemas import LocalDate, Money, Schema

from . import domain
from .state import ENTRY_POSTED, LINES

CUP = validate.Regexp(r"^[A-Z0-9]{15}$", error="A CUP is 15 capital letters and digits.")
COMMITMENT_REJECTIONS = ("line_lacks_room", "unknown_project", "unknown_line")
PAYMENT_REJECTIONS = ("no_commitment", "exceeds_commitment", "claim_not_yet_made")
TRANCHE_KINDS = ("advance", "interim", "balance")


def positive(amount: Decimal) -> None:
    """An amount of money that moves must be more than zero (a plain function: OpenAPI reads a
    `Range` on a string as nonsense)."""
    if amount <= 0:
        raise ValidationError("Must be more than zero.")


def _id(**kwargs: Any) -> fields.String:
    # Ids end up in stream names (at most 200 characters): keep them well inside.
    return fields.String(validate=validate.Length(min=1, max=100), **kwargs)


def _nullable_id() -> fields.String:
    return fields.String(required=True, allow_none=True, validate=validate.Length(max=100))


class ProgrammedLineV1(Schema):
    budget_line = fields.String(required=True, validate=validate.OneOf(LINES))
    programmed = Money(required=True)


class AdmittedLineV1(Schema):
    budget_line = fields.String(required=True, validate=validate.OneOf(LINES))
    amount = Money(required=True)


class ProjectProgrammedV1(Schema):
    project_cup = fields.String(required=True, validate=CUP)
    local_code = fields.String(required=True)
    title = fields.String(required=True)
    start_date = LocalDate(required=True)
    plan_reference = fields.String(required=True)
    budget_lines = fields.List(fields.Nested(ProgrammedLineV1), required=True)
    programmed = Money(required=True)


class FundingAdmittedV1(Schema):
    project_cup = fields.String(required=True, validate=CUP)
    act_id = _id(required=True)
    act_reference = fields.String(required=True)
    adopted_on = LocalDate(required=True)
    budget_lines = fields.List(fields.Nested(AdmittedLineV1), required=True)
    amount = Money(required=True)


class CommitmentRecordedV1(Schema):
    commitment_id = _id(required=True)
    project_cup = fields.String(required=True, validate=CUP)
    budget_line = fields.String(required=True, validate=validate.OneOf(LINES))
    kind = fields.String(required=True, validate=validate.OneOf(domain.KINDS))
    amount = Money(required=True)
    source_reference = fields.String(required=True)
    signed_on = LocalDate(required=True)
    award_id = _nullable_id()


class CommitmentRejectedV1(Schema):
    award_id = _id(required=True)
    project_cup = fields.String(required=True)
    budget_line = fields.String(required=True)
    amount = Money(required=True)
    reason = fields.String(required=True, validate=validate.OneOf(COMMITMENT_REJECTIONS))
    available = Money(required=True)


class CommitmentReducedV1(Schema):
    commitment_id = _id(required=True)
    project_cup = fields.String(required=True, validate=CUP)
    budget_line = fields.String(required=True, validate=validate.OneOf(LINES))
    reduction_id = _id(required=True)
    amount = Money(required=True)
    new_amount = Money(required=True)
    reason = fields.String(required=True)
    source_reference = fields.String(required=True)
    reduced_on = LocalDate(required=True)


class PaymentDisbursedV1(Schema):
    payment_id = _id(required=True)
    commitment_id = _id(required=True)
    project_cup = fields.String(required=True, validate=CUP)
    budget_line = fields.String(required=True, validate=validate.OneOf(LINES))
    amount = Money(required=True)
    claim_reference = fields.String(required=True)
    claim_date = LocalDate(required=True)
    paid_on = LocalDate(required=True)
    award_id = _nullable_id()
    tranche_id = _nullable_id()


class PaymentRejectedV1(Schema):
    award_id = _id(required=True)
    tranche_id = _id(required=True)
    commitment_id = _nullable_id()
    amount = Money(required=True)
    reason = fields.String(required=True, validate=validate.OneOf(PAYMENT_REJECTIONS))
    remaining = Money(required=True)


class EntryPostedV1(Schema):
    project_cup = fields.String(required=True, validate=CUP)
    budget_line = fields.String(required=True, validate=validate.OneOf(LINES))
    entry = fields.String(
        required=True,
        validate=validate.OneOf(("commitment_recorded", "commitment_reduced", "payment_disbursed")),
    )
    commitment_id = _id(required=True)
    payment_id = _nullable_id()
    legally_binding_change = Money(required=True, allow_negative=True)
    disbursed_change = Money(required=True)
    legally_binding = Money(required=True)
    disbursed = Money(required=True)


# type -> (current schema version, schema of that version)
EVENTS: dict[str, tuple[int, type[Schema]]] = {
    "project_programmed": (1, ProjectProgrammedV1),
    "funding_admitted": (1, FundingAdmittedV1),
    "commitment_recorded": (1, CommitmentRecordedV1),
    "commitment_rejected": (1, CommitmentRejectedV1),
    "commitment_reduced": (1, CommitmentReducedV1),
    "payment_disbursed": (1, PaymentDisbursedV1),
    "payment_rejected": (1, PaymentRejectedV1),
    ENTRY_POSTED: (1, EntryPostedV1),
}


def _public(event_schema: type[Schema]) -> type[ma.Schema]:
    """The public schema of an event type: the relay dumps the payload as stored (JSON: amounts
    and dates already strings) through it, so each member the event schema declares passes as
    it is (`Raw`), and a member it does not declare never goes out."""
    members = {name: fields.Raw() for name in event_schema().fields}
    name = event_schema.__name__.removesuffix("V1") + "Public"
    return type(name, (ma.Schema,), members)


# The ledger's events hold no personal data: every member of the seven domain events is public.
PUBLIC: dict[str, type[ma.Schema]] = {
    type_: _public(schema) for type_, (_, schema) in EVENTS.items() if type_ != ENTRY_POSTED
}

upcasters = Upcasters()


# -- what the ledger consumes from calls (docs/events.md, F1 and F2) ----------------------------


class _Incoming(Schema):
    class Meta:
        unknown = ma.EXCLUDE


class GrantAwardedV1(_Incoming):
    into = domain.GrantAward

    award_id = _id(required=True)
    call_id = fields.String(required=True)
    application_id = fields.String(required=True)
    project_cup = fields.String(required=True, validate=validate.Length(min=1, max=40))
    budget_line = fields.String(required=True, validate=validate.Length(min=1, max=60))
    amount = Money(required=True, validate=positive)
    reference = fields.String(required=True, validate=validate.Length(min=1, max=200))
    awarded_on = LocalDate(required=True)


class TrancheRequestedV1(_Incoming):
    into = domain.TrancheRequest

    award_id = _id(required=True)
    tranche_id = _id(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(TRANCHE_KINDS))
    amount = Money(required=True, validate=positive)
    claim_reference = fields.String(required=True, validate=validate.Length(min=1, max=200))
    claim_date = LocalDate(required=True)


class GrantRevokedV1(_Incoming):
    into = domain.GrantRevocation

    award_id = _id(required=True)
    call_id = fields.String(required=True)
    revoked_on = LocalDate(required=True)


CONSUMED: dict[tuple[str, int], type[Schema]] = {
    ("grant_awarded", 1): GrantAwardedV1,
    ("tranche_requested", 1): TrancheRequestedV1,
    ("grant_revoked", 1): GrantRevokedV1,
}


CONTRACTS = Contracts(
    emitted=EVENTS, public=PUBLIC, consumed={"calls": CONSUMED}, upcasters=upcasters
)
