"""The calls domain's refusals. Pure, no I/O.

The error types carry the HTTP status through `shared.errors` (the one mapping): a rule that refuses
a command in the current state is a 409 with a stable `code`; an input that cannot be right for
this call (a score above the criterion's maximum) is a 422 naming the field.
"""

from __future__ import annotations

from shared.errors import Conflict, InvalidInput, RuleViolation


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
