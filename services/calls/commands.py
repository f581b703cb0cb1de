"""What the calls service's commands name: the kinds and choices they take, the streams they
address and the ids derived from what they belong to. Pure, no I/O.
"""

from __future__ import annotations

import uuid

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


def call_stream(call_id: str) -> str:
    return f"call-{call_id}"


def award_stream(award_id: str) -> str:
    return f"award-{award_id}"
