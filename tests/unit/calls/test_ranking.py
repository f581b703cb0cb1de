"""The ranking and the awards it funds (domain/ranking.py, domain/funding.py): worked examples, and hypothesis
for random applications and scores."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.calls import domain
from services.calls.commands import award_stream, call_stream
from services.calls.domain import ranking
from services.calls.domain.errors import BudgetExceeded, RankingBeforeClose, WrongState
from services.calls.domain.ranking import Candidate, Criterion
from tests.unit.calls.builders import TODAY, a_call, apply_call, approved, full, scored_call

CRITERIA = [
    Criterion("sustainability", 40, 10),
    Criterion("jobs", 30, 10),
    Criterion("social_impact", 30, 5),
]


def test_weighted_score_is_rounded_half_up_once_from_the_exact_value():
    assert ranking.weighted_score(full(10, 10, 5), CRITERIA) == Decimal("100.00")
    assert ranking.weighted_score(full(0, 0, 0), CRITERIA) == Decimal("0.00")
    # 7/9 * 30 = 23.333...; 1/3 * 30 = 10 exactly; both summed before rounding
    criteria = [Criterion("a", 30, 9), Criterion("b", 70, 3)]
    assert ranking.weighted_score({"a": 7, "b": 1}, criteria) == Decimal("46.67")
    assert ranking.round_half_up(Fraction(1, 200)) == Decimal("0.01")  # 0.005 goes up
    assert ranking.round_half_up(Fraction(1, 201)) == Decimal("0.00")


def test_the_award_is_the_least_of_requested_cap_and_share_rounded_down():
    cap, share = Decimal("8000.00"), Decimal("0.80")
    assert ranking.award_amount(Decimal("5000.00"), Decimal("10000.00"), cap, share) == Decimal(
        "5000.00"
    )
    assert ranking.award_amount(Decimal("9000.00"), Decimal("20000.00"), cap, share) == Decimal(
        "8000.00"
    )
    assert ranking.award_amount(Decimal("9000.00"), Decimal("7000.00"), cap, share) == Decimal(
        "5600.00"
    )
    # 0.80 * 1234.56 = 987.648: rounded down to the cent
    assert ranking.award_amount(Decimal("9000.00"), Decimal("1234.56"), cap, share) == Decimal(
        "987.64"
    )


def test_ties_break_on_the_stated_criterion_then_earlier_submission():
    # all 48.00: 4 points a sustainability point, 3 a jobs point, 6 a social impact point
    a = Candidate("a", 1, "R-1", full(6, 4, 2), 0, Decimal(1), Decimal(1))
    b = Candidate("b", 2, "R-2", full(6, 4, 2), 0, Decimal(1), Decimal(1))
    c = Candidate("c", 3, "R-3", full(3, 8, 2), 0, Decimal(1), Decimal(1))
    d = Candidate("d", 4, "R-4", full(9, 0, 2), 0, Decimal(1), Decimal(1))
    for cand in (a, b, c, d):
        assert ranking.weighted_score(cand.scores, CRITERIA) == Decimal("48.00")
    by_submission = [r.application_id for r in ranking.rank([d, c, b, a], CRITERIA, [])]
    assert by_submission == ["a", "b", "c", "d"]
    by_jobs = [r.application_id for r in ranking.rank([d, c, b, a], CRITERIA, ["jobs"])]
    assert by_jobs == ["c", "a", "b", "d"]
    assert [r.position for r in ranking.rank([d, c, b, a], CRITERIA, ["jobs"])] == [1, 2, 3, 4]


def test_a_bonus_lifts_an_application_over_a_better_score():
    plain = Candidate("plain", 1, "R-1", full(6, 6, 3), 0, Decimal(1), Decimal(1))  # 60.00
    lifted = Candidate("lifted", 2, "R-2", full(5, 6, 3), 5, Decimal(1), Decimal(1))  # 56 + 5
    ranked = ranking.rank([plain, lifted], CRITERIA, [])
    assert [(r.application_id, r.total) for r in ranked] == [
        ("lifted", Decimal("61.00")),
        ("plain", Decimal("60.00")),
    ]


def test_ranking_only_after_the_call_closed_and_was_evaluated():
    with pytest.raises(RankingBeforeClose):
        domain.approve_ranking(a_call(), TODAY)
    with pytest.raises(RankingBeforeClose):
        domain.approve_ranking(a_call(status="closed"), TODAY)


def test_awards_in_ranking_order_while_the_budget_lasts():
    # budget 20000, cap 8000: 8000 + 8000 fit, the third (8000) does not; the fourth would (1000)
    rows = [
        (full(9, 9, 5), {"requested": "9000.00", "eligible": "12000.00"}),
        (full(8, 8, 5), {"requested": "8000.00", "eligible": "10000.00"}),
        (full(7, 7, 4), {"requested": "8000.00", "eligible": "10000.00"}),
        (full(6, 6, 3), {"requested": "1000.00", "eligible": "10000.00"}),
    ]
    call, ids = scored_call(rows)
    changes = approved(call)
    events = changes[call_stream(call.call_id)]
    assert [e.type for e in events] == ["ranking_approved", "funds_reserved", "funds_reserved"]
    assert [e["application_id"] for e in events[0].data["ranking"]] == ids
    reserved = [e.data for e in events[1:]]
    assert [(r["application_id"], r["amount"], r["position"]) for r in reserved] == [
        (ids[0], "8000.00", 1),
        (ids[1], "8000.00", 2),
    ]
    grants = [changes[award_stream(r["award_id"])][0] for r in reserved]
    assert [g.type for g in grants] == ["grant_awarded", "grant_awarded"]
    assert grants[0].data == {
        "award_id": reserved[0]["award_id"],
        "call_id": call.call_id,
        "application_id": ids[0],
        "project_cup": "F31D23000140007",
        "budget_line": "labour_policies",
        "amount": "8000.00",
        "reference": "AVV-2024-01/1",
        "awarded_on": "2024-04-05",
    }
    assert call.available == Decimal("4000.00")
    assert [call.applications[i].status for i in ids] == [
        "funded",
        "funded",
        "not_funded",
        "not_funded",
    ]
    with pytest.raises(WrongState):
        domain.approve_ranking(call, TODAY)


def test_award_next_refuses_what_the_available_budget_cannot_hold():
    rows = [(full(9, 9, 5), {}), (full(8, 8, 5), {}), (full(7, 7, 4), {})]
    call, ids = scored_call(rows, budget=Decimal("16000.00"))
    approved(call)
    with pytest.raises(BudgetExceeded) as refused:
        domain.award_next(call, TODAY)
    assert refused.value.details["available"] == "0.00"
    assert refused.value.details["application_id"] == ids[2]


def test_a_hopeless_share_is_passed_over_not_funded_with_zero():
    rows = [
        (full(9, 9, 5), {"eligible": "0.01", "requested": "0.01"}),
        (full(8, 8, 5), {}),
        (full(7, 7, 5), {}),
        (full(6, 6, 5), {"eligible": "0.01", "requested": "0.01"}),
        (full(5, 5, 5), {"requested": "1000.00"}),
    ]
    call, ids = scored_call(rows, budget=Decimal("16500.00"))
    reserved = [e.data["application_id"] for e in approved(call)[call_stream(call.call_id)][1:]]
    assert reserved == [ids[1], ids[2]]
    # award_next passes over the zero too, to the fifth, whose 1000.00 do not fit the 500.00 left
    with pytest.raises(BudgetExceeded) as refused:
        domain.award_next(call, TODAY)
    assert refused.value.details["application_id"] == ids[4]


@st.composite
def contests(draw):
    n_criteria = draw(st.integers(1, 4))
    cuts = sorted(
        draw(
            st.lists(
                st.integers(1, 99), min_size=n_criteria - 1, max_size=n_criteria - 1, unique=True
            )
        )
    )
    weights = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
    criteria = [Criterion(f"c{i}", w, draw(st.integers(1, 12))) for i, w in enumerate(weights)]
    tie_break = draw(st.lists(st.sampled_from([c.name for c in criteria]), unique=True, max_size=2))
    n = draw(st.integers(0, 25))
    candidates = []
    for seq in range(1, n + 1):
        scores = {c.name: draw(st.integers(0, c.max_score)) for c in criteria}
        eligible = Decimal(draw(st.integers(1, 3_000_000))) / 100
        requested = Decimal(draw(st.integers(1, 1_500_000))) / 100
        bonus = draw(st.integers(0, 6))
        candidates.append(Candidate(f"a{seq}", seq, f"R-{seq}", scores, bonus, requested, eligible))
    order = draw(st.permutations(candidates))
    budget = Decimal(draw(st.integers(0, 5_000_000))) / 100
    cap = Decimal(draw(st.integers(1, 1_000_000))) / 100
    share = Decimal(draw(st.integers(1, 100))) / 100
    return criteria, tie_break, order, budget, cap, share


@settings(max_examples=300, deadline=None)
@given(contests())
def test_the_ranking_is_a_total_order_consistent_with_the_tie_break(contest):
    criteria, tie_break, candidates, _budget, _cap, _share = contest
    ranked = ranking.rank(candidates, criteria, tie_break)
    assert [r.position for r in ranked] == list(range(1, len(candidates) + 1))
    assert sorted(r.application_id for r in ranked) == sorted(c.application_id for c in candidates)
    assert ranked == ranking.rank(
        list(reversed(candidates)), criteria, tie_break
    )  # input order is irrelevant
    for r in ranked:
        assert Decimal("0.00") <= r.weighted <= Decimal("100.00")
        assert r.total == r.weighted + r.bonus
    for better, worse in zip(ranked, ranked[1:], strict=False):
        assert better.total >= worse.total
        if better.total == worse.total:
            for name in tie_break:
                if better.scores[name] != worse.scores[name]:
                    assert better.scores[name] > worse.scores[name]
                    break
            else:
                assert better.seq < worse.seq  # earlier submission first


@settings(max_examples=300, deadline=None)
@given(contests())
def test_awards_never_exceed_budget_cap_or_share_and_follow_the_ranking(contest):
    criteria, tie_break, candidates, budget, cap, share = contest
    ranked = ranking.rank(candidates, criteria, tie_break)
    by_id = {c.application_id: c for c in candidates}
    allocations = ranking.allocate(ranked, by_id, available=budget, cap=cap, max_share=share)
    assert sum((a.amount for a in allocations), Decimal(0)) <= budget
    for a in allocations:
        c = by_id[a.application_id]
        assert Decimal("0.01") <= a.amount <= min(c.requested, cap, share * c.eligible_cost)
        assert a.amount == a.amount.quantize(Decimal("0.01"))
    # funded in ranking order: positions increase, and the first position passed over for money
    # (not for a zero amount) is where the budget ran out
    positions = [a.position for a in allocations]
    assert positions == sorted(positions)
    spent = sum((a.amount for a in allocations), Decimal(0))
    funded = set(positions)
    for r in ranked:
        c = by_id[r.application_id]
        amount = ranking.award_amount(c.requested, c.eligible_cost, cap, share)
        if r.position not in funded and amount > 0:
            before = sum((a.amount for a in allocations if a.position < r.position), Decimal(0))
            assert amount > budget - before
            assert all(p < r.position for p in positions)
            break
    assert spent == sum((a.amount for a in allocations), Decimal(0))


def test_award_next_gives_the_released_money_to_the_next_in_the_ranking():
    rows = [(full(9, 9, 5), {}), (full(8, 8, 5), {}), (full(7, 7, 4), {})]
    call, ids = scored_call(rows, budget=Decimal("16000.00"))
    changes = approved(call)
    suspended_award = changes[call_stream(call.call_id)][2].data["award_id"]
    # the ledger refused the second award: its money comes back to the call
    from services.calls.domain import awards
    from tests.unit.calls.builders import apply_award

    award = apply_award(awards.Award(), changes[award_stream(suspended_award)])
    answer = {
        "award_id": suspended_award,
        "amount": "8000.00",
        "reason": "line_lacks_room",
        "available": "100.00",
    }
    compensation = domain.on_commitment_rejected(call, award, answer)
    assert [e.type for e in compensation[award_stream(suspended_award)]] == ["grant_suspended"]
    assert [e.type for e in compensation[call_stream(call.call_id)]] == ["funds_released"]
    apply_call(call, compensation[call_stream(call.call_id)])
    assert call.available == Decimal("8000.00")
    nxt = domain.award_next(call, TODAY)
    reserved = nxt[call_stream(call.call_id)][0].data
    assert (reserved["application_id"], reserved["position"], reserved["amount"]) == (
        ids[2],
        3,
        "8000.00",
    )
    assert nxt[award_stream(reserved["award_id"])][0].data["reference"] == "AVV-2024-01/3"
    apply_call(call, nxt[call_stream(call.call_id)])
    assert call.available == Decimal("0.00")
    with pytest.raises(BudgetExceeded):
        domain.award_next(call, TODAY)  # nobody is waiting any more
