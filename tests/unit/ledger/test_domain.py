"""Every rule of the ledger's domain, without I/O: the four-amount chain per line and in total,
payments within what is left of a commitment, reductions never below what was paid, refusals
naming the invariant and its figures and storing nothing, and idempotence by business id."""

from __future__ import annotations

import pytest

from services.ledger import domain, handlers
from services.ledger.state import Commitment, Line, Project
from shared import unit_of_work
from shared.errors import Conflict, InvalidInput, NotFound, RuleViolation
from tests.unit.ledger.memory import (
    CUP,
    MemoryStore,
    a_commitment,
    a_payment,
    a_programme,
    a_reduction,
    an_admission,
    d,
    day,
    funded,
    replace,
)


def refused(store: MemoryStore, plan: unit_of_work.Plan, error: type[Exception] = RuleViolation):
    """Run a plan that must be refused; assert nothing was stored; return the error."""
    before = store.snapshot()
    with pytest.raises(error) as caught:
        unit_of_work.run(store, plan)
    assert store.snapshot() == before
    return caught.value


# -- programming and admission ------------------------------------------------------------------


def test_a_programme_records_each_line_and_the_total():
    store = MemoryStore()
    unit_of_work.run(
        store, handlers.programme(a_programme(safeguarding="900.00", labour_policies="100.50"))
    )
    [(type_, data)] = store.events(f"project-{CUP}")
    assert type_ == "project_programmed"
    assert data["programmed"] == "1000.50"
    assert data["budget_lines"] == [
        {"budget_line": "safeguarding", "programmed": "900.00"},
        {"budget_line": "labour_policies", "programmed": "100.50"},
    ]
    assert store.project().lines["safeguarding"] == Line(programmed=d("900.00"))


def test_a_programme_again_is_nothing_new_and_a_different_one_is_a_conflict():
    store = MemoryStore()
    unit_of_work.run(store, handlers.programme(a_programme()))
    assert unit_of_work.run(store, handlers.programme(a_programme())).events == ()
    error = refused(store, handlers.programme(a_programme(safeguarding="5.00")), Conflict)
    assert error.details["invariant"] == "project_unique"


def test_admitted_may_reach_programmed_on_a_line_but_not_pass_it():
    store = MemoryStore()
    unit_of_work.run(store, handlers.programme(a_programme(safeguarding="1000.00")))
    unit_of_work.run(store, handlers.admit(an_admission("DEC-1", safeguarding="600.00")))
    error = refused(store, handlers.admit(an_admission("DEC-2", safeguarding="400.01")))
    assert error.status == 409
    assert error.details == {
        "invariant": "admitted_within_programmed",
        "budget_line": "safeguarding",
        "programmed": "1000.00",
        "admitted": "600.00",
        "requested": "400.01",
        "available": "400.00",
    }
    unit_of_work.run(store, handlers.admit(an_admission("DEC-2", safeguarding="400.00")))
    assert store.project().lines["safeguarding"].admitted == d("1000.00")


def test_an_admission_needs_the_project_and_a_programmed_line():
    store = MemoryStore()
    refused(store, handlers.admit(an_admission(safeguarding="1.00")), NotFound)
    unit_of_work.run(store, handlers.programme(a_programme(safeguarding="10.00")))
    error = refused(store, handlers.admit(an_admission(labour_policies="1.00")))
    assert error.details["invariant"] == "line_programmed"


def test_an_admission_act_is_recorded_once():
    store = MemoryStore()
    unit_of_work.run(store, handlers.programme(a_programme(safeguarding="10.00")))
    unit_of_work.run(store, handlers.admit(an_admission("Dec. 1/2024", safeguarding="4.00")))
    assert (
        unit_of_work.run(
            store, handlers.admit(an_admission("Dec. 1/2024", safeguarding="4.00"))
        ).events
        == ()
    )
    refused(store, handlers.admit(an_admission("DEC 1 2024", safeguarding="5.00")), Conflict)


# -- commitments --------------------------------------------------------------------------------


def test_a_commitment_goes_on_its_stream_and_is_posted_on_the_project_with_running_totals():
    store = funded(MemoryStore(), safeguarding="1000.00")
    unit_of_work.run(store, handlers.record(a_commitment("300.00", reference="Conv. 7/2024")))
    [(recorded, data)] = store.events("commitment-convention-conv-7-2024")
    assert recorded == "commitment_recorded"
    assert data["commitment_id"] == "convention-conv-7-2024"
    assert data["source_reference"] == "Conv. 7/2024"  # the cause of an entry a person made
    posted_type, posted = store.events(f"project-{CUP}")[-1]
    assert posted_type == "entry_posted"
    assert posted == {
        "project_cup": CUP,
        "budget_line": "safeguarding",
        "entry": "commitment_recorded",
        "commitment_id": "convention-conv-7-2024",
        "payment_id": None,
        "legally_binding_change": "300.00",
        "disbursed_change": "0.00",
        "legally_binding": "300.00",
        "disbursed": "0.00",
    }


def test_legally_binding_may_reach_admitted_but_not_pass_it():
    store = funded(MemoryStore(), safeguarding="1000.00")
    unit_of_work.run(store, handlers.record(a_commitment("999.99", reference="A")))
    error = refused(store, handlers.record(a_commitment("0.02", reference="B")))
    assert error.details == {
        "invariant": "legally_binding_within_admitted",
        "budget_line": "safeguarding",
        "admitted": "1000.00",
        "legally_binding": "999.99",
        "requested": "0.02",
        "available": "0.01",
    }
    assert "above the 1000.00 admitted" in error.message
    unit_of_work.run(store, handlers.record(a_commitment("0.01", reference="B")))
    assert store.project().lines["safeguarding"].legally_binding == d("1000.00")


def test_room_is_per_line_not_borrowed_from_another():
    store = funded(MemoryStore(), safeguarding="100.00", labour_policies="900.00")
    error = refused(store, handlers.record(a_commitment("100.01", line="safeguarding")))
    assert error.details["available"] == "100.00"


def test_only_admitted_money_can_be_committed():
    store = MemoryStore()
    unit_of_work.run(store, handlers.programme(a_programme(safeguarding="1000.00")))
    error = refused(store, handlers.record(a_commitment("0.01")))
    assert error.details["invariant"] == "legally_binding_within_admitted"


def test_a_commitment_again_is_nothing_new_and_other_figures_are_a_conflict():
    store = funded(MemoryStore(), safeguarding="1000.00")
    unit_of_work.run(store, handlers.record(a_commitment("10.00")))
    assert unit_of_work.run(store, handlers.record(a_commitment("10.00"))).events == ()
    refused(store, handlers.record(a_commitment("11.00")), Conflict)


def test_a_commitment_needs_its_project():
    refused(MemoryStore(), handlers.record(a_commitment("1.00")), NotFound)


# -- reductions and payments --------------------------------------------------------------------


def committed(amount: str = "1000.00", paid: str | None = None) -> MemoryStore:
    store = funded(MemoryStore(), safeguarding="5000.00")
    unit_of_work.run(store, handlers.record(a_commitment(amount, reference="C")))
    if paid:
        unit_of_work.run(store, handlers.disburse(a_payment("convention-c", paid)))
    return store


def test_a_payment_may_take_all_that_is_left_and_not_a_cent_more():
    store = committed("1000.00", paid="600.00")
    error = refused(store, handlers.disburse(a_payment("convention-c", "400.01", claim="DR-2")))
    assert error.details == {
        "invariant": "payment_within_commitment",
        "commitment_id": "convention-c",
        "amount": "1000.00",
        "paid": "600.00",
        "requested": "400.01",
        "remaining": "400.00",
    }
    unit_of_work.run(store, handlers.disburse(a_payment("convention-c", "400.00", claim="DR-2")))
    assert store.commitment("convention-c").remaining == d("0.00")
    assert store.project().lines["safeguarding"].disbursed == d("1000.00")


def test_a_payment_references_a_recorded_commitment():
    store = committed()
    error = refused(store, handlers.disburse(a_payment("contract-nope", "1.00")), NotFound)
    assert error.details["invariant"] == "references_commitment"


def test_a_claim_cannot_be_paid_before_it_was_made():
    store = committed()
    early = replace(a_payment("convention-c", "1.00"), paid_on=day("2024-05-01"))
    error = refused(store, handlers.disburse(early), InvalidInput)
    assert error.status == 422 and list(error.fields) == ["paid_on"]
    on_the_day = replace(early, paid_on=early.claim_date)
    assert unit_of_work.run(store, handlers.disburse(on_the_day)).events


def test_a_claim_is_paid_once():
    store = committed()
    unit_of_work.run(store, handlers.disburse(a_payment("convention-c", "10.00", claim="DR 1")))
    assert (
        unit_of_work.run(
            store, handlers.disburse(a_payment("convention-c", "10.00", claim="DR 1"))
        ).events
        == ()
    )
    refused(store, handlers.disburse(a_payment("convention-c", "11.00", claim="DR-1")), Conflict)
    assert store.commitment("convention-c").paid == d("10.00")


def test_a_reduction_never_takes_a_commitment_below_what_was_paid():
    store = committed("1000.00", paid="600.00")
    error = refused(store, handlers.reduce(a_reduction("convention-c", "400.01")))
    assert error.details["invariant"] == "reduction_not_below_paid"
    assert error.details["paid"] == "600.00"
    assert "below the 600.00 already paid" in error.message
    unit_of_work.run(store, handlers.reduce(a_reduction("convention-c", "400.00")))
    commitment = store.commitment("convention-c")
    assert (commitment.original_amount, commitment.amount, commitment.remaining) == (
        d("1000.00"),
        d("600.00"),
        d("0.00"),
    )
    line = store.project().lines["safeguarding"]
    assert (line.legally_binding, line.disbursed) == (d("600.00"), d("600.00"))


def test_a_reduction_frees_room_on_its_line():
    store = funded(MemoryStore(), safeguarding="1000.00")
    unit_of_work.run(store, handlers.record(a_commitment("1000.00", reference="C")))
    refused(store, handlers.record(a_commitment("250.00", reference="D")))
    unit_of_work.run(store, handlers.reduce(a_reduction("convention-c", "250.00")))
    unit_of_work.run(store, handlers.record(a_commitment("250.00", reference="D")))
    assert store.project().lines["safeguarding"].legally_binding == d("1000.00")


def test_a_reduction_act_is_recorded_once_and_needs_its_commitment():
    store = committed()
    unit_of_work.run(store, handlers.reduce(a_reduction("convention-c", "5.00")))
    assert (
        unit_of_work.run(store, handlers.reduce(a_reduction("convention-c", "5.00"))).events == ()
    )
    refused(store, handlers.reduce(a_reduction("convention-c", "6.00")), Conflict)
    refused(store, handlers.reduce(a_reduction("grant-x", "1.00")), NotFound)


# -- the invariants themselves ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "broken"),
    [
        (Line(d("10"), d("10"), d("10"), d("10")), []),
        (Line(d("10"), d("11"), d("0"), d("0")), ["admitted_within_programmed"]),
        (Line(d("10"), d("10"), d("11"), d("0")), ["legally_binding_within_admitted"]),
        (Line(d("10"), d("10"), d("5"), d("6")), ["disbursed_within_legally_binding"]),
        (Line(d("10"), d("10"), d("5"), d("-1")), ["disbursed_not_negative"]),
    ],
)
def test_broken_invariants_names_each_broken_link_per_line_and_in_total(line, broken):
    project = Project(cup=CUP, lines={"safeguarding": line})
    found = [(v.invariant, v.figures["scope"]) for v in domain.broken_invariants(project)]
    expected = [(name, "safeguarding") for name in broken] + [(name, "total") for name in broken]
    assert found == expected


def test_a_decision_that_would_break_an_invariant_is_refused_even_if_a_rule_missed_it():
    # A project whose line is already over (as if a rule had been missed): any new entry on it
    # is refused by the final check, naming the broken link.
    sound = funded(MemoryStore(), safeguarding="100.00").project()
    over = replace(
        sound, lines={"safeguarding": replace(sound.lines["safeguarding"], disbursed=d("5"))}
    )
    with pytest.raises(RuleViolation) as caught:
        domain.record_commitment(over, Commitment(), a_commitment("1.00"))
    assert caught.value.details["invariant"] == "disbursed_within_legally_binding"


def test_ids_come_from_references():
    assert domain.commitment_id_for("contract", "CIG B1A2/C3") == "contract-cig-b1a2-c3"
    assert domain.payment_id_for("FT 2024/0917") == "claim-ft-2024-0917"
    assert domain.grant_commitment_id("a-1") == "grant-a-1"
    assert domain.tranche_payment_id("t-1") == "tranche-t-1"
    with pytest.raises(ValueError):
        domain.slug("---")
