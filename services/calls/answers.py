"""The ledger's answers as calls reads them (docs/events.md, flows F1 and F2).

A tolerant reader: members it does not know are ignored, so the ledger may add one without a
new version; what calls relies on is required and checked before the domain sees it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from shared.money import format_money
from shared.schemas import LocalDate, Money, Schema


def _id() -> fields.String:
    return fields.String(required=True, validate=validate.Length(min=1, max=100))


# -- what calls consumes from the ledger (docs/events.md, F1 and F2) ------------------------------


def answers_calls(data: dict[str, Any]) -> bool:
    """The ledger publishes every commitment and payment on the same routing keys; only those with
    an `award_id` answer calls. The others (conventions, contracts, payments recorded by the
    offices) are none of calls' business and are taken without effect."""
    return data.get("award_id") is not None


class _Incoming(Schema):
    class Meta:
        unknown = ma.EXCLUDE


class CommitmentRecordedIn(_Incoming):
    commitment_id = _id()
    award_id = _id()
    amount = Money(required=True)
    signed_on = LocalDate(required=True)


class CommitmentRejectedIn(_Incoming):
    award_id = _id()
    amount = Money(required=True)
    reason = fields.String(required=True)
    available = Money(required=True, allow_none=True)


class PaymentDisbursedIn(_Incoming):
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


def answer(type_: str, schema_version: int, data: dict[str, Any]) -> dict[str, Any]:
    """A ledger answer checked against its consumer schema, back in the wire form the domain
    reads (amounts and dates as strings), so that the domain never sees a half-valid payload."""
    schema = CONSUMED.get((type_, schema_version))
    if schema is None:
        raise ValueError(f"calls has no consumer schema for {type_} v{schema_version}")
    loaded = schema().load(data)
    return {k: _wire(v) for k, v in loaded.items()}


def _wire(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if hasattr(value, "quantize"):
        return format_money(value)
    return value
