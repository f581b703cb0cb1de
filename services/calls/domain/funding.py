"""The ranking approved and the awards it funds, and F1's compensation. Pure, no I/O.

Approving the ranking appends `ranking_approved` to the call's stream, and for each award in
ranking order while the budget lasts `funds_reserved` there and `grant_awarded` on the award's own
stream (docs/events.md, F1), in one transaction. A suspended award's money comes back with
`funds_released`; an operator may then award the next applicant (`award_next`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from shared.errors import NotFound
from shared.money import ZERO, money_text
from shared.records import NewEvent

from ..commands import award_stream, call_stream, derived_id
from ..state import Call
from . import awards, ranking
from .errors import BudgetExceeded, RankingBeforeClose, require_state

# -- ranking and awards --------------------------------------------------------------------------


def candidates(call: Call) -> dict[str, ranking.Candidate]:
    return {
        a.application_id: ranking.Candidate(
            a.application_id,
            a.seq,
            a.public_reference,
            a.scores,
            a.bonus,
            a.requested,
            a.eligible_cost,
        )
        for a in call.applications.values()
        if a.status == "scored" or (a.status in ("funded", "not_funded"))
    }


def approve_ranking(call: Call, today: dt.date) -> dict[str, list[NewEvent]]:
    """The ranking, then awards in its order while the budget lasts: events by stream."""
    if call.status in ("draft", "published", "closed"):
        raise RankingBeforeClose(
            "the ranking comes after the call closed and was evaluated", status=call.status
        )
    require_state("the call", call.status, ("evaluated",), "approve its ranking")
    pool = candidates(call)
    ranked = ranking.rank(pool.values(), call.criteria, call.terms["tie_break"])
    entries = [
        {
            "position": r.position,
            "application_id": r.application_id,
            "public_reference": r.public_reference,
            "scores": dict(sorted(r.scores.items())),
            "weighted": money_text(r.weighted),
            "bonus": r.bonus,
            "total": money_text(r.total),
        }
        for r in ranked
    ]
    approved = {"call_id": call.call_id, "approved_on": today.isoformat(), "ranking": entries}
    changes: dict[str, list[NewEvent]] = {
        call_stream(call.call_id): [NewEvent("ranking_approved", approved)]
    }
    allocations = ranking.allocate(
        ranked, pool, available=call.available, cap=call.award_cap, max_share=call.max_share
    )
    for allocation in allocations:
        _award(call, changes, allocation, today)
    return changes


def award_next(call: Call, today: dt.date) -> dict[str, list[NewEvent]]:
    """After a suspension released money: award the best-placed application not yet funded, if
    its amount fits what the call has available."""
    require_state("the call", call.status, ("ranking_approved",), "award the next applicant")
    pool = candidates(call)
    waiting = []
    for entry in call.ranking:
        if call.applications[entry.application_id].status != "not_funded":
            continue
        c = pool[entry.application_id]
        amount = ranking.award_amount(c.requested, c.eligible_cost, call.award_cap, call.max_share)
        if amount > ZERO:  # as in the ranking's own allocation, nothing to fund is passed over
            waiting.append((entry, amount))
    if not waiting:
        raise BudgetExceeded("no applicant in the ranking is waiting for funding")
    entry, amount = waiting[0]
    if amount > call.available:
        raise BudgetExceeded(
            "the next applicant's award does not fit the call's available budget",
            application_id=entry.application_id,
            amount=money_text(amount),
            available=money_text(call.available),
        )
    changes: dict[str, list[NewEvent]] = {call_stream(call.call_id): []}
    _award(call, changes, ranking.Allocation(entry.application_id, entry.position, amount), today)
    return changes


def _award(
    call: Call, changes: dict[str, list[NewEvent]], allocation: ranking.Allocation, today: dt.date
) -> None:
    award_id = derived_id(allocation.application_id, "award")
    app = call.applications[allocation.application_id]
    changes[call_stream(call.call_id)].append(
        NewEvent(
            "funds_reserved",
            {
                "call_id": call.call_id,
                "award_id": award_id,
                "application_id": allocation.application_id,
                "public_reference": app.public_reference,
                "position": allocation.position,
                "amount": money_text(allocation.amount),
            },
        )
    )
    changes[award_stream(award_id)] = [
        awards.grant(
            award_id=award_id,
            call_id=call.call_id,
            application_id=allocation.application_id,
            project_cup=call.terms["project_cup"],
            budget_line=call.terms["budget_line"],
            amount=allocation.amount,
            reference=f"{call.terms['reference']}/{allocation.position}",
            awarded_on=today,
        )
    ]


def on_commitment_rejected(
    call: Call, award: awards.Award, answer: Mapping[str, Any]
) -> dict[str, list[NewEvent]]:
    """The ledger refused the commitment (F1): suspend the award and give its money back to the
    call's available budget. Nothing is awarded automatically: see `award_next`."""
    suspended = awards.suspend(award, answer)
    if not suspended:
        return {}
    reservation = call.reservations.get(award.award_id)
    if reservation is None or reservation.released:
        raise NotFound(f"call {call.call_id} holds no money for award {award.award_id}")
    released = NewEvent(
        "funds_released",
        {
            "call_id": call.call_id,
            "award_id": award.award_id,
            "amount": money_text(reservation.amount),
            "reason": "grant_suspended",
        },
    )
    return {award_stream(award.award_id): suspended, call_stream(call.call_id): [released]}
