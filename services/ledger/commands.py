"""What the ledger is asked to do, and the names and ids it derives from that.

Commands from people (HTTP) and the two calls events the ledger answers (docs/events.md, F1 and
F2), as plain dataclasses with `Decimal` euros and `date`s (schemas.py and api.py load them).
Ids and stream names are derived deterministically from business references, so that a repeated
command or event finds what it made the first time: a commitment is `<kind>-<slug of its
reference>` (`grant-<award_id>` for an award), a payment `claim-<slug of the claim>`
(`tranche-<tranche_id>` for a tranche).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal

from shared.records import NewEvent, prefixed

KINDS = ("convention", "contract", "grant")
# What a decision appends: the events of each stream, in order (the first stream carries the
# command id).
Decision = dict[str, list[NewEvent]]


project_stream = prefixed("project")  # a project's lines, each entry posted on them
commitment_stream = prefixed("commitment")  # a commitment, its reductions and payments


def slug(reference: str) -> str:
    """A document reference as an id: `"Det. 1234/2024"` -> `det-1234-2024`."""
    text = re.sub(r"[^a-z0-9]+", "-", reference.lower()).strip("-")
    if not text:
        raise ValueError(f"reference {reference!r} has no letter or digit to make an id of")
    return text


def commitment_id_for(kind: str, source_reference: str) -> str:
    return f"{kind}-{slug(source_reference)}"


grant_commitment_id = prefixed("grant")  # an award's commitment


def payment_id_for(claim_reference: str) -> str:
    return f"claim-{slug(claim_reference)}"


tranche_payment_id = prefixed("tranche")  # a tranche's payment
revocation_reduction_id = prefixed("revoked")  # the reduction of a revoked award's commitment


@dataclasses.dataclass(frozen=True)
class ProgrammeProject:
    cup: str
    local_code: str
    title: str
    start_date: dt.date
    plan_reference: str  # the operating plan that allocates the money
    lines: Mapping[str, Decimal]  # budget line -> programmed


@dataclasses.dataclass(frozen=True)
class AdmitFunding:
    cup: str
    act_reference: str
    adopted_on: dt.date
    lines: Mapping[str, Decimal]  # budget line -> admitted by this act


@dataclasses.dataclass(frozen=True)
class RecordCommitment:
    cup: str
    budget_line: str
    kind: str
    source_reference: str
    signed_on: dt.date
    amount: Decimal


@dataclasses.dataclass(frozen=True)
class ReduceCommitment:
    commitment_id: str
    amount: Decimal  # by how much
    reason: str
    source_reference: str  # the act that reduces it
    reduced_on: dt.date


@dataclasses.dataclass(frozen=True)
class DisbursePayment:
    commitment_id: str
    claim_reference: str
    claim_date: dt.date
    paid_on: dt.date
    amount: Decimal


@dataclasses.dataclass(frozen=True)
class GrantAward:
    """calls' `grant_awarded` v1 (docs/events.md, F1)."""

    award_id: str
    call_id: str
    application_id: str
    project_cup: str
    budget_line: str
    amount: Decimal
    reference: str
    awarded_on: dt.date


@dataclasses.dataclass(frozen=True)
class GrantRevocation:
    """calls' `grant_revoked` v1 (docs/events.md, F3)."""

    award_id: str
    call_id: str
    revoked_on: dt.date


@dataclasses.dataclass(frozen=True)
class TrancheRequest:
    """calls' `tranche_requested` v1 (docs/events.md, F2)."""

    award_id: str
    tranche_id: str
    kind: str
    amount: Decimal
    claim_reference: str
    claim_date: dt.date
