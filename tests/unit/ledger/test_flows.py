"""The ledger's answers to calls (docs/events.md, F1 and F2), without I/O: the exact payloads and
streams of the contract, every rejection reason as an event (never an exception), and a repeated
award or tranche answered once."""

from __future__ import annotations

import datetime as dt

from services.ledger import domain, handlers
from services.ledger.events import EVENTS, PUBLIC
from shared import unit_of_work
from tests.unit.ledger.memory import (
    CUP,
    MemoryStore,
    a_tranche,
    an_award,
    d,
    funded,
    replace,
)

TODAY = dt.date(2024, 12, 10)
RECORDED_KEYS = {
    "commitment_id", "project_cup", "budget_line", "kind", "amount", "source_reference",
    "signed_on", "award_id",
}  # fmt: skip
REJECTED_KEYS = {"award_id", "project_cup", "budget_line", "amount", "reason", "available"}
DISBURSED_KEYS = {
    "payment_id", "commitment_id", "project_cup", "budget_line", "amount", "claim_reference",
    "claim_date", "paid_on", "award_id", "tranche_id",
}  # fmt: skip
PAYMENT_REJECTED_KEYS = {
    "award_id", "tranche_id", "commitment_id", "amount", "reason", "remaining",
}  # fmt: skip


def answers(store: MemoryStore, award_id: str = "a1") -> list[tuple[str, dict]]:
    return store.events(f"commitment-grant-{award_id}")


def test_an_award_with_room_becomes_a_grant_commitment_on_the_contract_stream():
    store = funded(MemoryStore(), labour_policies="10000.00")
    unit_of_work.run(store, handlers.award(an_award("a1", "8000.00")))
    [(type_, data)] = answers(store)
    assert type_ == "commitment_recorded"
    assert set(data) == RECORDED_KEYS
    assert data == {
        "commitment_id": "grant-a1",
        "project_cup": CUP,
        "budget_line": "labour_policies",
        "kind": "grant",
        "amount": "8000.00",
        "source_reference": "AVV-2024-01/3",
        "signed_on": "2024-10-21",
        "award_id": "a1",
    }
    assert store.project().lines["labour_policies"].legally_binding == d("8000.00")


def test_an_award_the_line_cannot_hold_is_rejected_with_what_it_had_left():
    store = funded(MemoryStore(), labour_policies="10000.00")
    unit_of_work.run(store, handlers.award(an_award("a1", "8000.00")))
    unit_of_work.run(store, handlers.award(an_award("a2", "2000.01")))
    [(type_, data)] = answers(store, "a2")
    assert type_ == "commitment_rejected"
    assert set(data) == REJECTED_KEYS
    assert (data["reason"], data["available"], data["amount"]) == (
        "line_lacks_room",
        "2000.00",
        "2000.01",
    )
    assert store.project().lines["labour_policies"].legally_binding == d("8000.00")


def test_an_award_for_an_unknown_project_or_line_is_rejected_not_raised():
    store = funded(MemoryStore(), labour_policies="10000.00")
    unit_of_work.run(store, handlers.award(an_award("a1", cup="X00000000000000")))
    unit_of_work.run(store, handlers.award(an_award("a2", line="safeguarding")))
    unit_of_work.run(store, handlers.award(an_award("a3", line="no_such_line")))
    reasons = [answers(store, a)[0][1]["reason"] for a in ("a1", "a2", "a3")]
    assert reasons == ["unknown_project", "unknown_line", "unknown_line"]
    assert all(answers(store, a)[0][1]["available"] == "0.00" for a in ("a1", "a2", "a3"))


def test_an_award_seen_again_is_answered_once_whatever_the_answer_was():
    store = funded(MemoryStore(), labour_policies="10000.00")
    for award in (an_award("a1", "8000.00"), an_award("a2", "9000.00")):
        unit_of_work.run(store, handlers.award(award))
        before = store.snapshot()
        assert unit_of_work.run(store, handlers.award(award)).events == ()
        assert store.snapshot() == before
    assert [t for t, _ in answers(store, "a1")] == ["commitment_recorded"]
    assert [t for t, _ in answers(store, "a2")] == ["commitment_rejected"]


def test_a_tranche_within_the_award_is_paid_today_on_the_award_stream():
    store = funded(MemoryStore(), labour_policies="10000.00")
    unit_of_work.run(store, handlers.award(an_award("a1", "8000.00")))
    unit_of_work.run(store, handlers.tranche(a_tranche("a1", "t1", "4000.00"), TODAY))
    type_, data = answers(store)[-1]
    assert type_ == "payment_disbursed"
    assert set(data) == DISBURSED_KEYS
    assert data == {
        "payment_id": "tranche-t1",
        "commitment_id": "grant-a1",
        "project_cup": CUP,
        "budget_line": "labour_policies",
        "amount": "4000.00",
        "claim_reference": "CL-7",
        "claim_date": "2024-11-04",
        "paid_on": "2024-12-10",
        "award_id": "a1",
        "tranche_id": "t1",
    }
    assert store.project().lines["labour_policies"].disbursed == d("4000.00")


def test_a_tranche_beyond_what_is_left_or_without_a_commitment_is_rejected():
    store = funded(MemoryStore(), labour_policies="10000.00")
    unit_of_work.run(store, handlers.award(an_award("a1", "8000.00")))
    unit_of_work.run(store, handlers.tranche(a_tranche("a1", "t1", "5000.00"), TODAY))
    unit_of_work.run(store, handlers.tranche(a_tranche("a1", "t2", "3000.01"), TODAY))
    unit_of_work.run(store, handlers.award(an_award("a2", "9000.00")))  # rejected: no room
    unit_of_work.run(store, handlers.tranche(a_tranche("a2", "t3", "1.00"), TODAY))
    unit_of_work.run(store, handlers.tranche(a_tranche("a9", "t4", "1.00"), TODAY))  # never awarded
    over = answers(store, "a1")[-1][1]
    assert set(over) == PAYMENT_REJECTED_KEYS
    assert (over["reason"], over["remaining"], over["commitment_id"]) == (
        "exceeds_commitment",
        "3000.00",
        "grant-a1",
    )
    for award_id in ("a2", "a9"):
        type_, data = answers(store, award_id)[-1]
        assert type_ == "payment_rejected"
        assert (data["reason"], data["commitment_id"], data["remaining"]) == (
            "no_commitment",
            None,
            "0.00",
        )
    assert store.project().lines["labour_policies"].disbursed == d("5000.00")


def test_a_tranche_claimed_after_today_is_rejected_not_paid():
    """The rule of a person's payment (a claim is paid on or after its date) holds for F2 too:
    a claim dated after the day the ledger would pay it is refused, whatever calls accepted."""
    store = funded(MemoryStore(), labour_policies="10000.00")
    unit_of_work.run(store, handlers.award(an_award("a1", "8000.00")))
    later = replace(a_tranche("a1", "t1", "10.00"), claim_date=TODAY + dt.timedelta(days=1))
    unit_of_work.run(store, handlers.tranche(later, TODAY))
    type_, data = answers(store, "a1")[-1]
    assert (type_, data["reason"], data["remaining"]) == (
        "payment_rejected",
        "claim_not_yet_made",
        "8000.00",
    )
    unit_of_work.run(store, handlers.tranche(a_tranche("a1", "t2", "10.00"), TODAY))
    assert answers(store, "a1")[-1][0] == "payment_disbursed"
    assert store.project().lines["labour_policies"].disbursed == d("10.00")


def a_revocation(award_id: str = "a1") -> domain.GrantRevocation:
    return domain.GrantRevocation(award_id, "call-1", TODAY)


def test_a_revoked_grant_stays_binding_only_for_what_was_paid():
    """F3: the commitment is reduced by its unpaid rest, an event on the award's stream posted on
    the project's line; the line's legally binding amount drops by as much."""
    store = funded(MemoryStore(), labour_policies="10000.00")
    unit_of_work.run(store, handlers.award(an_award("a1", "8000.00")))
    unit_of_work.run(store, handlers.tranche(a_tranche("a1", "t1", "2000.00"), TODAY))
    assert store.project().lines["labour_policies"].legally_binding == d("8000.00")

    outcome = unit_of_work.run(store, handlers.revocation(a_revocation()))
    type_, data = answers(store)[-1]
    assert type_ == "commitment_reduced"
    assert (data["reduction_id"], data["amount"], data["new_amount"], data["reduced_on"]) == (
        "revoked-a1",
        "6000.00",
        "2000.00",
        TODAY.isoformat(),
    )
    assert data["reason"] == "grant revoked by the calls service"
    assert [e.stream for e in outcome.events] == ["commitment-grant-a1", f"project-{CUP}"]
    line = store.project().lines["labour_policies"]
    assert (line.legally_binding, line.disbursed) == (d("2000.00"), d("2000.00"))
    assert store.commitment("grant-a1").remaining == d("0.00")
    assert unit_of_work.run(store, handlers.revocation(a_revocation())).events == ()


def test_a_revocation_of_an_award_never_committed_or_fully_paid_changes_nothing():
    store = funded(MemoryStore(), labour_policies="10000.00")
    unit_of_work.run(store, handlers.award(an_award("a1", "4000.00")))
    unit_of_work.run(store, handlers.tranche(a_tranche("a1", "t1", "4000.00"), TODAY))
    unit_of_work.run(store, handlers.award(an_award("a2", "9000.00")))  # rejected: no room
    for award_id in ("a1", "a2", "a9"):
        assert unit_of_work.run(store, handlers.revocation(a_revocation(award_id))).events == ()
    assert store.project().lines["labour_policies"].legally_binding == d("4000.00")


def test_a_tranche_seen_again_is_answered_once():
    store = funded(MemoryStore(), labour_policies="10000.00")
    unit_of_work.run(store, handlers.award(an_award("a1", "8000.00")))
    for request in (a_tranche("a1", "t1", "4000.00"), a_tranche("a1", "t2", "9000.00")):
        unit_of_work.run(store, handlers.tranche(request, TODAY))
        assert unit_of_work.run(store, handlers.tranche(request, TODAY)).events == ()
    types = [t for t, _ in answers(store)]
    assert types == ["commitment_recorded", "payment_disbursed", "payment_rejected"]


def test_every_answer_holds_to_its_published_schema():
    store = funded(MemoryStore(), labour_policies="10000.00")
    unit_of_work.run(store, handlers.award(an_award("a1", "8000.00")))
    unit_of_work.run(store, handlers.award(an_award("a2", "9000.00")))
    unit_of_work.run(store, handlers.tranche(a_tranche("a1", "t1"), TODAY))
    unit_of_work.run(store, handlers.tranche(a_tranche("a1", "t2", "9999.00"), TODAY))
    for events in store.streams.values():
        for event in events:
            _version, schema = EVENTS[event.type]
            assert schema().validate(event.data) == {}, event.type


def test_the_public_schemas_pass_each_declared_member_as_stored_and_nothing_else():
    store = funded(MemoryStore(), labour_policies="10000.00")
    unit_of_work.run(store, handlers.award(an_award("a1", "8000.00")))
    unit_of_work.run(store, handlers.award(an_award("a2", "9000.00")))
    unit_of_work.run(store, handlers.tranche(a_tranche("a1", "t1"), TODAY))
    unit_of_work.run(store, handlers.tranche(a_tranche("a1", "t2", "9999.00"), TODAY))
    seen = set()
    for events in store.streams.values():
        for event in events:
            if event.type in PUBLIC:
                seen.add(event.type)
                dumped = PUBLIC[event.type]().dump({**event.data, "not_declared": "secret"})
                assert dumped == event.data
    assert seen == set(PUBLIC) - {"commitment_reduced"}
