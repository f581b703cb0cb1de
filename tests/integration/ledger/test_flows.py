"""Flows F1 and F2 on the real RabbitMQ, with the ledger's database on SQLite and PostgreSQL: calls'
grant_awarded and tranche_requested, published as calls' relay would, answered on the ledger's
exchange with the contract's payloads, streams and causes; redelivered twice, nothing changes;
public types reach lavoro.public, the project stream's bookkeeping does not."""

from __future__ import annotations

import kombu
import pytest

from services.ledger.service import LedgerService
from shared.consumer import consumer_stats
from tests.helpers import wait_for
from tests.kit.broker import Harness
from tests.kit.service import Running, database_of
from tests.service.ledger.builders import a_cup, funded

pytestmark = pytest.mark.integration
CALLS_OPERATOR = "op-calls-1"  # the actor of the calls events the test publishes


@pytest.fixture
def answers(harness: Harness) -> kombu.Queue:
    """What the ledger publishes on its exchange."""
    return harness.tap("ledger")


@pytest.fixture
def public(harness: Harness) -> kombu.Queue:
    """What the ledger publishes on lavoro.public."""
    return harness.tap_public("ledger")


@pytest.fixture
def ledger(harness: Harness, store_url, answers, public) -> Running:
    """The whole ledger on the broker, started once the test taps what it publishes."""
    return harness.start(LedgerService, database_of(store_url))


def award(harness: Harness, cup: str, award_id: str, amount: str) -> dict:
    return harness.event(
        "calls",
        "grant_awarded",
        f"award-{award_id}",
        {
            "award_id": award_id,
            "call_id": "AVV-2024-01",
            "application_id": f"app-{award_id}",
            "project_cup": cup,
            "budget_line": "labour_policies",
            "amount": amount,
            "reference": f"AVV-2024-01/{award_id}",
            "awarded_on": "2024-10-21",
        },
        actor=CALLS_OPERATOR,
    )


def tranche(harness: Harness, award_id: str, tranche_id: str, amount: str) -> dict:
    return harness.event(
        "calls",
        "tranche_requested",
        f"award-{award_id}",
        {
            "award_id": award_id,
            "tranche_id": tranche_id,
            "kind": "advance",
            "amount": amount,
            "claim_reference": f"CL-{tranche_id}",
            "claim_date": "2024-11-04",
        },
        actor=CALLS_OPERATOR,
    )


def answers_of(harness: Harness, answers: kombu.Queue, count: int) -> list[dict]:
    """The next `count` ledger events of the flows (the project stream's postings left out)."""
    bodies = harness.take(answers, count)
    return [b for b in bodies if b["stream"].startswith("commitment-")]


def test_awards_and_tranches_are_answered_once_with_their_cause(harness, ledger, answers, public):
    client = ledger.client
    cup = a_cup()
    funded(client, cup, labour_policies="10000.00")
    assert [b["type"] for b in harness.take(answers, 2)] == [
        "project_programmed",
        "funding_admitted",
    ]

    fits = award(harness, cup, "a1", "8000.00")
    harness.publish("calls", fits)
    [recorded] = answers_of(harness, answers, 2)  # the answer and its posting on the project stream
    assert (recorded["type"], recorded["stream"]) == ("commitment_recorded", "commitment-grant-a1")
    assert recorded["data"]["commitment_id"] == "grant-a1"
    assert recorded["data"]["amount"] == "8000.00"
    assert recorded["causation_id"] == fits["id"]
    assert recorded["correlation_id"] == fits["correlation_id"]

    too_big = award(harness, cup, "a2", "2500.00")
    harness.publish("calls", too_big)
    [rejected] = answers_of(harness, answers, 1)
    assert (rejected["type"], rejected["stream"]) == ("commitment_rejected", "commitment-grant-a2")
    assert (rejected["data"]["reason"], rejected["data"]["available"]) == (
        "line_lacks_room",
        "2000.00",
    )
    assert rejected["causation_id"] == too_big["id"]

    requests = [
        tranche(harness, "a1", "t1", "4000.00"),
        tranche(harness, "a1", "t2", "4000.01"),
        tranche(harness, "a2", "t3", "100.00"),
    ]
    harness.publish("calls", *requests)
    replies = answers_of(harness, answers, 4)  # three answers, one posting
    by_cause = {a["causation_id"]: a for a in replies}
    paid, over, nothing = (by_cause[r["id"]] for r in requests)
    assert (paid["type"], paid["data"]["payment_id"], paid["data"]["amount"]) == (
        "payment_disbursed",
        "tranche-t1",
        "4000.00",
    )
    assert (over["type"], over["data"]["reason"], over["data"]["remaining"]) == (
        "payment_rejected",
        "exceeds_commitment",
        "4000.00",
    )
    assert (nothing["type"], nothing["data"]["reason"], nothing["data"]["commitment_id"]) == (
        "payment_rejected",
        "no_commitment",
        None,
    )
    assert [a["stream"] for a in (paid, over)] == ["commitment-grant-a1"] * 2

    # Redelivered twice: the inbox sees them, nothing is appended, nothing more is published.
    container = ledger.container
    log = ledger.log
    head = log.head()
    stats = consumer_stats(container)
    every = [fits, too_big, *requests]
    harness.publish("calls", *every, *every)
    wait_for(lambda: stats["duplicate"] >= 2 * len(every), 10, "the redeliveries")
    assert log.head() == head
    assert answers.get(no_ack=True) is None

    progress = client.get(f"/projects/{cup}/progress").json()["total"]
    assert (progress["legally_binding"], progress["disbursed"]) == ("8000.00", "4000.00")
    commitment = client.get("/commitments/grant-a1").json()
    assert commitment["cause"]["causation_id"] == fits["id"]
    assert commitment["payments"][0]["cause"]["causation_id"] == requests[0]["id"]

    published = harness.take(public, 7)
    assert sorted(m["type"].rsplit(".", 1)[1] for m in published) == [
        "commitment_recorded",
        "commitment_rejected",
        "funding_admitted",
        "payment_disbursed",
        "payment_rejected",
        "payment_rejected",
        "project_programmed",
    ]  # entry_posted, the project stream's bookkeeping, is not public
    assert public.get(no_ack=True) is None


def test_a_malformed_award_is_parked_not_answered(harness, ledger):
    broken = award(harness, a_cup(), "bad", "8000.001")
    harness.publish("calls", broken)
    stats = consumer_stats(ledger.container)
    wait_for(lambda: stats["parked"] >= 1, 10, "the malformed award parked")
    assert ledger.log.head()[0] == 0  # no answer, no half-made entry
