"""The calls domain: the pure rules of calls, applications, the ranking and awards (no I/O, no
nameko, no SQL).

- call.py: a call's lifecycle and its applications (re-exported here, with funding.py's
  ranking approval and awards);
- funding.py: the ranking approved and the awards it funds, and F1's compensation;
- awards.py: an award's own rules (tranches, expenditure, revocation, the ledger's answers);
- ranking.py: the ranking's arithmetic;
- errors.py: the refusals, each with its HTTP status and code.
The states they decide on and their folds are in state.py; ids and stream names in commands.py.
"""

from __future__ import annotations

from ..state import CALL, Application, Call, evolve, fold
from . import awards, errors, ranking
from .call import (
    admit,
    applicant_key,
    close_call,
    complete_evaluation,
    draft_call,
    hold_codesign_session,
    identified,
    publish_call,
    reject,
    score,
    start_accompaniment,
    submit_application,
)
from .errors import (
    AnswerMismatch,
    AwardNotConfirmed,
    BudgetExceeded,
    DuplicateApplication,
    InvalidScore,
    NotAdmitted,
    OutsideWindow,
    RankingBeforeClose,
    TrancheExceedsAward,
    TrancheOrder,
    WrongState,
    require_state,
)
from .funding import approve_ranking, award_next, candidates, on_commitment_rejected

__all__ = [
    "AnswerMismatch",
    "Application",
    "AwardNotConfirmed",
    "BudgetExceeded",
    "CALL",
    "Call",
    "DuplicateApplication",
    "InvalidScore",
    "NotAdmitted",
    "OutsideWindow",
    "RankingBeforeClose",
    "TrancheExceedsAward",
    "TrancheOrder",
    "WrongState",
    "admit",
    "applicant_key",
    "approve_ranking",
    "award_next",
    "awards",
    "candidates",
    "close_call",
    "complete_evaluation",
    "draft_call",
    "errors",
    "evolve",
    "fold",
    "hold_codesign_session",
    "identified",
    "on_commitment_rejected",
    "publish_call",
    "ranking",
    "reject",
    "require_state",
    "score",
    "start_accompaniment",
    "submit_application",
]
