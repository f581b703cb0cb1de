"""Flows F1 and F2 on the real RabbitMQ, with the ledger's database on SQLite and PostgreSQL: calls'
grant_awarded and tranche_requested, published as calls' relay would, answered on the ledger's
exchange with the contract's payloads, streams and causes; redelivered twice, nothing changes;
public types reach lavoro.public, the project stream's bookkeeping does not."""

from __future__ import annotations

import pytest

from shared.consumer import consumer_stats
from shared.dependencies import log_for
from tests.helpers import wait_for
from tests.integration.ledger.harness import LedgerHarness
from tests.service.ledger.client import a_cup, funded

pytestmark = pytest.mark.integration


@pytest.fixture
def harness(amqp_uri, store_url, unique):
    harness = LedgerHarness(amqp_uri, store_url, unique)
    yield harness
    harness.close()


def award(harness: LedgerHarness, cup: str, award_id: str, amount: str) -> dict:
    return harness.calls_event(
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
    )


def tranche(harness: LedgerHarness, award_id: str, tranche_id: str, amount: str) -> dict:
    return harness.calls_event(
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
    )


def answers_of(harness: LedgerHarness, count: int) -> list[dict]:
    """The next `count` ledger events of the flows (the project stream's postings left out)."""
    bodies = harness.take(harness.answers, count)
    return [b for b in bodies if b["stream"].startswith("commitment-")]


def test_awards_and_tranches_are_answered_once_with_their_cause(harness):
    client = harness.start()
    cup = a_cup()
    funded(client, cup, labour_policies="10000.00")
    assert [b["type"] for b in harness.take(harness.answers, 2)] == [
        "project_programmed",
        "funding_admitted",
    ]

    fits = award(harness, cup, "a1", "8000.00")
    harness.publish(fits)
    [recorded] = answers_of(harness, 2)  # the answer and its posting on the project stream
    assert (recorded["type"], recorded["stream"]) == ("commitment_recorded", "commitment-grant-a1")
    assert recorded["data"]["commitment_id"] == "grant-a1"
    assert recorded["data"]["amount"] == "8000.00"
    assert recorded["causation_id"] == fits["id"]
    assert recorded["correlation_id"] == fits["correlation_id"]

    too_big = award(harness, cup, "a2", "2500.00")
    harness.publish(too_big)
    [rejected] = answers_of(harness, 1)
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
    harness.publish(*requests)
    answers = answers_of(harness, 4)  # three answers, one posting
    by_cause = {a["causation_id"]: a for a in answers}
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
    container = harness.container
    log = log_for(container)
    head = log.head()
    stats = consumer_stats(container)
    every = [fits, too_big, *requests]
    harness.publish(*every, *every)
    wait_for(lambda: stats["duplicate"] >= 2 * len(every), 10, "the redeliveries")
    assert log.head() == head
    assert harness.answers.get(no_ack=True) is None

    progress = client.get(f"/projects/{cup}/progress").body["total"]
    assert (progress["legally_binding"], progress["disbursed"]) == ("8000.00", "4000.00")
    commitment = client.get("/commitments/grant-a1").body
    assert commitment["cause"]["causation_id"] == fits["id"]
    assert commitment["payments"][0]["cause"]["causation_id"] == requests[0]["id"]

    public = harness.take(harness.public, 7)
    assert sorted(m["type"].rsplit(".", 1)[1] for m in public) == [
        "commitment_recorded",
        "commitment_rejected",
        "funding_admitted",
        "payment_disbursed",
        "payment_rejected",
        "payment_rejected",
        "project_programmed",
    ]  # entry_posted, the project stream's bookkeeping, is not public
    assert harness.public.get(no_ack=True) is None


def test_a_malformed_award_is_parked_not_answered(harness):
    harness.start()
    broken = award(harness, a_cup(), "bad", "8000.001")
    harness.publish(broken)
    stats = consumer_stats(harness.container)
    wait_for(lambda: stats["parked"] >= 1, 10, "the malformed award parked")
    assert log_for(harness.container).head()[0] == 0  # no answer, no half-made entry
