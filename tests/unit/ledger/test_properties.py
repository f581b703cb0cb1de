"""Hypothesis: random sequences of the ledger's commands and calls' events never break the books.

After every step, per line and in total: disbursed <= legally binding <= admitted <= programmed;
each commitment has 0 <= paid <= amount <= what was signed; the project stream's totals equal the
sums over the commitments (every entry was posted exactly once). A refused command stores nothing;
an event from calls is always answered or ignored, never raised."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ledger import domain, handlers
from shared import unit_of_work
from shared.errors import LavoroError
from shared.money import ZERO
from tests.unit.ledger.memory import (
    CUP,
    LINES,
    MemoryStore,
    a_programme,
    a_tranche,
    an_award,
    day,
)

# Mostly small amounts, so that many entries fit and the edges are reached by accumulation.
cents = st.one_of(
    st.integers(min_value=1, max_value=50_000), st.integers(min_value=1, max_value=800_000)
).map(lambda c: Decimal(c) / 100)
lines = st.sampled_from(LINES)
small = st.integers(min_value=0, max_value=5)

commands = st.one_of(
    st.tuples(st.just("admit"), lines, cents, small),
    st.tuples(st.just("commit"), lines, st.sampled_from(domain.KINDS), small, cents),
    st.tuples(st.just("reduce"), small, cents, small),
    st.tuples(st.just("pay"), small, small, cents),
    st.tuples(st.just("award"), small, st.sampled_from((*LINES, "nowhere")), cents),
    st.tuples(st.just("tranche"), small, small, cents),
)


def _plan(store: MemoryStore, step: tuple) -> unit_of_work.Plan:
    kind = step[0]
    ids = sorted(str(c.commitment_id) for c in store.commitments())
    pick = ids[step[1] % len(ids)] if ids and kind in ("reduce", "pay") else "convention-none"
    if kind == "admit":
        _, line, amount, act = step
        return handlers.admit(
            domain.AdmitFunding(CUP, f"DEC-{act}", day("2024-03-01"), {line: amount})
        )
    if kind == "commit":
        _, line, kind_, ref, amount = step
        cmd = domain.RecordCommitment(CUP, line, kind_, f"R-{ref}", day("2024-04-01"), amount)
        return handlers.record(cmd)
    if kind == "reduce":
        _, _, amount, act = step
        cmd = domain.ReduceCommitment(pick, amount, "savings", f"DD-{act}", day("2024-09-01"))
        return handlers.reduce(cmd)
    if kind == "pay":
        _, _, claim, amount = step
        return handlers.disburse(
            domain.DisbursePayment(
                pick, f"CL-{claim}", day("2024-05-01"), day("2024-06-01"), amount
            )
        )
    if kind == "award":
        _, award, line, amount = step
        return handlers.award(an_award(f"a{award}", str(amount), line))
    _, award, tranche, amount = step
    return handlers.tranche(
        a_tranche(f"a{award}", f"t{award}-{tranche}", str(amount)), day("2024-12-01")
    )


def _assert_books_sound(store: MemoryStore) -> None:
    project = store.project()
    assert domain.broken_invariants(project) == []
    binding: dict[str, Decimal] = defaultdict(lambda: ZERO)
    paid: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for commitment in store.commitments():
        assert ZERO <= commitment.paid <= commitment.amount <= commitment.original_amount
        assert commitment.paid == sum((p.amount for p in commitment.payments.values()), ZERO)
        binding[commitment.budget_line] += commitment.amount
        paid[commitment.budget_line] += commitment.paid
    for line, figures in project.lines.items():
        assert figures.legally_binding == binding[line]
        assert figures.disbursed == paid[line]
    total = project.total()
    assert total.disbursed <= total.legally_binding <= total.admitted <= total.programmed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    programmed=st.tuples(cents, cents, cents).map(lambda t: [x * 10 for x in t]),
    steps=st.lists(commands, min_size=1, max_size=40),
)
def test_no_sequence_of_commands_and_events_breaks_the_books(programmed, steps):
    store = MemoryStore()
    amounts = {
        line: str(amount.quantize(Decimal("0.01")))
        for line, amount in zip(LINES, programmed, strict=True)
    }
    unit_of_work.run(store, handlers.programme(a_programme(**amounts)))
    for step in steps:
        before = store.snapshot()
        try:
            unit_of_work.run(store, _plan(store, step))
        except LavoroError as refusal:
            assert step[0] not in ("award", "tranche"), f"{step} raised {refusal!r}"
            assert refusal.status in (404, 409)
            assert store.snapshot() == before  # a refused command stores nothing
        _assert_books_sound(store)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(commands, min_size=1, max_size=25))
def test_replaying_every_step_again_changes_nothing(steps):
    """Each command and event a second time (a client retry, a redelivery): nothing new."""
    store = MemoryStore()
    unit_of_work.run(store, handlers.programme(a_programme(**dict.fromkeys(LINES, "5000.00"))))
    for step in steps:
        plan = _plan(store, step)
        try:
            unit_of_work.run(store, plan)
        except LavoroError:
            continue
        after_first = store.snapshot()
        assert unit_of_work.run(store, plan).events == ()
        assert store.snapshot() == after_first
