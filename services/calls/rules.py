"""What the calls domain shares: names, error types and ids. Pure, no I/O.

The error types carry the HTTP status through `shared.errors` (the one mapping): a rule that refuses
a command in the current state is a 409 with a stable `code`; an input that cannot be right for
this call (a score above the criterion's maximum) is a 422 naming the field.
"""

from __future__ import annotations

import uuid

from shared.errors import Conflict, InvalidInput, RuleViolation

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


# -- errors ---------------------------------------------------------------------------------------


class WrongState(Conflict):
    """The aggregate is not in a state where the command makes sense."""

    code = "wrong_state"


class OutsideWindow(RuleViolation):
    code = "outside_window"


class DuplicateApplication(RuleViolation):
    code = "duplicate_application"


class NotAdmitted(RuleViolation):
    code = "not_admitted"


class InvalidScore(InvalidInput):
    code = "invalid_score"


class RankingBeforeClose(RuleViolation):
    code = "ranking_before_close"


class BudgetExceeded(RuleViolation):
    code = "budget_exceeded"


class TrancheExceedsAward(RuleViolation):
    code = "tranche_exceeds_award"


class AwardNotConfirmed(RuleViolation):
    code = "award_not_confirmed"


class TrancheOrder(RuleViolation):
    """An advance after other tranches, or any tranche after the balance."""

    code = "tranche_order"


class AnswerMismatch(RuleViolation):
    """The ledger's answer does not match what calls asked for: never applied silently."""

    code = "answer_mismatch"


def require_state(what: str, status: str, allowed: tuple[str, ...], doing: str) -> None:
    if status not in allowed:
        raise WrongState(
            f"{what} is {status}: cannot {doing} (needs {' or '.join(allowed)})",
            status=status,
            allowed=list(allowed),
        )
