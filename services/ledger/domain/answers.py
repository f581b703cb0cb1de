"""The ledger's answers to the calls service (docs/events.md, flows F1 and F2), decided without I/O.

- `grant_awarded` -> `commitment_recorded` on the award's line, or `commitment_rejected` with the
  reason (`line_lacks_room`, `unknown_project`, `unknown_line`) and what the line had left;
- `grant_revoked` -> `commitment_reduced` by what is left unpaid of the award's commitment (F3),
  so a revoked grant no longer counts as legally binding beyond what was paid; nothing when
  nothing is left, or the award was never committed;
- `tranche_requested` -> `payment_disbursed` today (within what is left of the award's
  commitment), or `payment_rejected` (`no_commitment`, `exceeds_commitment`, or
  `claim_not_yet_made` for a claim dated after today: never paid before it is made).

Both go on the award's stream `commitment-grant-<award_id>`. A refusal is an event, never an
exception, so that the flow always ends; the rules are domain.py's, the same that refuse a person's
command. An award or tranche already answered decides nothing (the answer is in the stream).
"""

from __future__ import annotations

import datetime as dt

from shared.money import ZERO

from ..commands import (
    Decision,
    GrantAward,
    GrantRevocation,
    TrancheRequest,
    commitment_stream,
    grant_commitment_id,
    revocation_reduction_id,
    tranche_payment_id,
)
from ..state import Commitment, Project
from . import claim_made, commitment_room, entries, payment_room, post


def answer_award(project: Project, commitment: Commitment, award: GrantAward) -> Decision:
    """`commitment_recorded`, or `commitment_rejected` with the reason; nothing if answered."""
    if commitment.recorded or commitment.rejected is not None:
        return {}
    commitment_id = grant_commitment_id(award.award_id)
    reason: str | None = None
    available = ZERO
    if not project.programmed or project.cup != award.project_cup:
        reason = "unknown_project"
    elif award.budget_line not in project.lines:
        reason = "unknown_line"
    else:
        figures = project.lines[award.budget_line]
        available = figures.admitted - figures.legally_binding
        if commitment_room(project, award.budget_line, award.amount) is not None:
            reason = "line_lacks_room"
    if reason is not None:
        rejected = entries.commitment_rejected(
            award.award_id, award.project_cup, award.budget_line, award.amount, reason, available
        )
        return {commitment_stream(commitment_id): [rejected]}
    recorded = entries.recorded(
        commitment_id,
        award.project_cup,
        award.budget_line,
        "grant",
        award.amount,
        award.reference,
        award.awarded_on,
        award_id=award.award_id,
    )
    return post(project, commitment_id, recorded, binding=award.amount)


REVOCATION_REASON = "grant revoked by the calls service"


def answer_revocation(
    project: Project, commitment: Commitment, revocation: GrantRevocation
) -> Decision:
    """`commitment_reduced` by the commitment's unpaid rest; nothing if answered or nothing is
    left. The reduction's cause is the `grant_revoked` event (its causation id); its reason is
    the ledger's own words, never calls' free text."""
    reduction_id = revocation_reduction_id(revocation.award_id)
    if not commitment.recorded or reduction_id in commitment.reductions:
        return {}
    left = commitment.remaining
    if left <= ZERO:
        return {}
    assert commitment.commitment_id is not None
    reduced = entries.reduced(
        commitment,
        reduction_id,
        left,
        REVOCATION_REASON,
        f"grant_revoked {revocation.award_id}",
        revocation.revoked_on,
    )
    return post(project, commitment.commitment_id, reduced, binding=-left)


def answer_tranche(
    project: Project | None, commitment: Commitment, request: TrancheRequest, today: dt.date
) -> Decision:
    """`payment_disbursed` on `today`, or `payment_rejected` with the reason; nothing if answered.
    `project` is the commitment's (None when there is no commitment)."""
    payment_id = tranche_payment_id(request.tranche_id)
    if payment_id in commitment.payments or request.tranche_id in commitment.rejected_tranches:
        return {}
    stream = commitment_stream(grant_commitment_id(request.award_id))
    reason: str | None = None
    if not commitment.recorded or project is None:
        reason = "no_commitment"
    elif claim_made(request.claim_date, today) is not None:
        reason = "claim_not_yet_made"
    elif payment_room(commitment, request.amount) is not None:
        reason = "exceeds_commitment"
    if reason is not None:
        remaining = commitment.remaining if commitment.recorded else ZERO
        rejected = entries.payment_rejected(
            request.award_id,
            request.tranche_id,
            commitment.commitment_id,
            request.amount,
            reason,
            remaining,
        )
        return {stream: [rejected]}
    assert project is not None and commitment.commitment_id is not None
    paid = entries.disbursed(
        payment_id,
        commitment,
        request.amount,
        request.claim_reference,
        request.claim_date,
        today,
        tranche_id=request.tranche_id,
    )
    return post(
        project, commitment.commitment_id, paid, disbursed=request.amount, payment_id=payment_id
    )
