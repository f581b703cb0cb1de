"""The ranking (graduatoria) of a call and the awards it funds: pure arithmetic, no I/O.

A call states criteria with weights summing to 100 and a maximum score each, bonus points per
priority, a cap per award, a maximum share of the eligible cost and a tie-break. From these:

- weighted score = sum over criteria of score / max_score * weight, rounded half up to the cent
  once (computed exactly with fractions, so no binary or decimal rounding creeps in before);
- total = weighted score + bonus points: the figure the published ranking shows;
- order: higher total first; on equal totals, higher score on each tie-break criterion in turn,
  then earlier submission (the application's sequence number in the call, unique, so the order
  is total and never depends on how the database returned the rows);
- awards in ranking order while the budget lasts: amount = min(requested, cap, share x eligible
  cost rounded down to the cent). The first application that does not fit stops the allocation:
  funding never skips over a better-placed applicant to reach a cheaper one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction

from shared.money import CENT, ZERO

from ..state import Criterion, Ranked

__all__ = ["Allocation", "Candidate", "Criterion", "Ranked", "allocate", "award_amount", "rank"]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A scored application as the ranking sees it."""

    application_id: str
    seq: int  # submission order within the call: 1, 2, 3 ...
    public_reference: str
    scores: Mapping[str, int]
    bonus: int
    requested: Decimal
    eligible_cost: Decimal


@dataclasses.dataclass(frozen=True)
class Allocation:
    application_id: str
    position: int
    amount: Decimal


def round_half_up(value: Fraction) -> Decimal:
    """An exact non-negative fraction rounded half up to the cent."""
    cents = (value * 100 + Fraction(1, 2)).__floor__()
    return (Decimal(cents) / 100).quantize(CENT)


def weighted_score(scores: Mapping[str, int], criteria: Sequence[Criterion]) -> Decimal:
    exact = sum(
        (Fraction(scores[c.name] * c.weight, c.max_score) for c in criteria), start=Fraction(0)
    )
    return round_half_up(exact)


def sort_key(
    total: Decimal, scores: Mapping[str, int], seq: int, tie_break: Sequence[str]
) -> tuple[object, ...]:
    """Ascending key: the better application sorts first."""
    return (-total, *(-scores[name] for name in tie_break), seq)


def rank(
    candidates: Iterable[Candidate], criteria: Sequence[Criterion], tie_break: Sequence[str]
) -> list[Ranked]:
    scored = []
    for c in candidates:
        weighted = weighted_score(c.scores, criteria)
        total = weighted + c.bonus
        scored.append((sort_key(total, c.scores, c.seq, tie_break), c, weighted, total))
    scored.sort(key=lambda item: item[0])
    return [
        Ranked(
            position=i,
            application_id=c.application_id,
            seq=c.seq,
            public_reference=c.public_reference,
            scores=dict(c.scores),
            weighted=weighted,
            bonus=c.bonus,
            total=total,
        )
        for i, (_key, c, weighted, total) in enumerate(scored, start=1)
    ]


def award_amount(
    requested: Decimal, eligible_cost: Decimal, cap: Decimal, max_share: Decimal
) -> Decimal:
    """min(requested, cap, share x eligible cost), the share rounded down to the cent."""
    share = (max_share * eligible_cost).quantize(CENT, rounding=ROUND_DOWN)
    return min(requested, cap, share).quantize(CENT, rounding=ROUND_DOWN)


def allocate(
    ranking: Sequence[Ranked],
    candidates: Mapping[str, Candidate],
    *,
    available: Decimal,
    cap: Decimal,
    max_share: Decimal,
) -> list[Allocation]:
    """Awards in ranking order while `available` lasts; stops at the first one that does not fit."""
    awards: list[Allocation] = []
    for entry in ranking:
        c = candidates[entry.application_id]
        amount = award_amount(c.requested, c.eligible_cost, cap, max_share)
        if amount <= ZERO:
            continue  # nothing to fund (a share of a few cents rounds down to zero)
        if amount > available:
            break
        awards.append(Allocation(entry.application_id, entry.position, amount))
        available -= amount
    return awards
