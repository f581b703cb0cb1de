"""What the calls service is asked to do: the commands as plain dataclasses (api.py's input
schemas load them, with `Decimal` euros and `date`s), the kinds and choices they take, the
streams they address and the ids derived from what they belong to. Pure, no I/O.

A command carries what its request's body says; the ids in its URL and what the service adds
(the instant, today in Bologna, the caller) are the domain function's other arguments.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from shared.records import prefixed

KINDS = ("self_employment", "social_innovation")
BUDGET_LINES = ("employment_services", "safeguarding", "labour_policies")
PRIORITIES = (
    "peripheral_area",
    "recently_dismissed",
    "women",
    "migrants",
    "under_35",
    "near_retirement",
)
APPLICANT_KINDS = ("person", "third_sector_body", "informal_group")
REJECTION_REASONS = (
    "incomplete",
    "late",
    "applicant_not_eligible",
    "project_not_eligible",
    "other",
)
TRANCHE_KINDS = ("advance", "interim", "balance")
PROGRAMME_CUP = "F31D23000140007"

# Namespace of the ids this service derives (application, award, tranche, report): deriving them
# from what they belong to makes a decision repeatable, and the ledger's ids derive from ours.
_IDS = uuid.UUID("6f7c1d2e-3b4a-5c6d-8e9f-0a1b2c3d4e5f")


def derived_id(*parts: str) -> str:
    return str(uuid.uuid5(_IDS, "/".join(parts)))


call_stream = prefixed("call")  # a call and its applications
award_stream = prefixed("award")  # an award and its tranches


# -- the commands --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CriterionTerms:
    name: str
    weight: int
    max_score: int


@dataclasses.dataclass(frozen=True)
class DraftCall:
    title: str
    reference: str  # the call's act, e.g. AVV-2024-01
    kind: str
    budget_line: str
    budget: Decimal
    opens_on: dt.date  # first day, Bologna time
    closes_on: dt.date  # last day, Bologna time
    criteria: tuple[CriterionTerms, ...]
    award_cap: Decimal
    max_share: Decimal  # of the eligible cost, e.g. 0.80
    project_cup: str = PROGRAMME_CUP
    bonuses: Mapping[str, int] = dataclasses.field(default_factory=dict)  # points per priority
    tie_break: tuple[str, ...] = ()  # criteria whose higher score wins a tie, in turn


@dataclasses.dataclass(frozen=True)
class CloseCall:
    reason: str | None = None  # required before the window ends


@dataclasses.dataclass(frozen=True)
class BusinessPlan:
    eligible_cost: Decimal
    requested_amount: Decimal
    jobs_created: int


@dataclasses.dataclass(frozen=True)
class SubmitApplication:
    # kind, person and/or organisation, as loaded: plaintext here; the store seals the personal
    # fields as it appends (events.CONTRACTS.persons)
    applicant: Mapping[str, Any]
    project_title: str
    business_plan: BusinessPlan


@dataclasses.dataclass(frozen=True)
class RejectApplication:
    reason: str
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class StartAccompaniment:
    started_on: dt.date | None = None  # today if not given


@dataclasses.dataclass(frozen=True)
class HoldCodesignSession:
    held_on: dt.date
    topic: str
    notes: str | None = None


@dataclasses.dataclass(frozen=True)
class ScoreApplication:
    scores: Mapping[str, int]  # criterion -> score


@dataclasses.dataclass(frozen=True)
class RequestTranche:
    kind: str
    amount: Decimal
    claim_reference: str
    claim_date: dt.date | None = None  # today if not given


@dataclasses.dataclass(frozen=True)
class ReportExpenditure:
    amount: Decimal
    period_from: dt.date
    period_to: dt.date
    description: str


@dataclasses.dataclass(frozen=True)
class RevokeAward:
    reason: str
