"""End to end: the calls service and the ledger service running, each on its own database (two
SQLite files, or two PostgreSQL schemas), on the real broker, talking only through their events
(docs/events.md, F1, F2 and F3).

- A call whose budget line has room in the ledger for two awards but not a third: two grants are
  confirmed, the third is suspended and its money released to the call; the ledger's books still
  satisfy its invariants; every message of the flow redelivered twice, both ways, changes nothing.
- A tranche ends with `tranche_paid`, and the ledger's disbursed figure moved by exactly its amount.
- A revoked award's commitment is reduced by what was left unpaid (F3).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from services.ledger.service import LedgerService
from shared.clock import UTC
from shared.consumer import consumer_stats
from tests.helpers import wait_for
from tests.kit.http import Client
from tests.service.calls.builders import awarded_call, person_application
from tests.service.ledger.builders import a_cup, funded
from tests.unit.calls.builders import full

LINE = "labour_policies"


@pytest.fixture
def pair(harness, start_calls, databases):
    """The ledger, then calls, each on a database of its own."""
    ledger = harness.start(LedgerService, databases("ledger"))
    return start_calls(databases("calls")), ledger


def figures(books: Client, cup: str) -> dict[str, dict[str, Decimal]]:
    progress = books.ok("GET", f"/projects/{cup}/progress")
    out = {line["budget_line"]: line for line in progress["budget_lines"]}
    out["total"] = progress["total"]
    return {
        scope: {k: Decimal(v) for k, v in f.items() if k != "budget_line"}
        for scope, f in out.items()
    }


def assert_invariants(books: dict[str, dict[str, Decimal]]) -> None:
    for scope, f in books.items():
        assert (
            Decimal(0) <= f["disbursed"] <= f["legally_binding"] <= f["admitted"] <= f["programmed"]
        ), scope


def test_room_for_two_awards_not_a_third_and_redeliveries_change_nothing(pair, harness, clock):
    calls, ledger = pair
    client, books = calls.client, ledger.client
    cup = a_cup()
    funded(books, cup, labour_policies="16000.00")  # room for two awards of 8000.00

    apps = [person_application(n) for n in range(3)]
    done = awarded_call(
        client,
        clock,
        apps,
        [full(9, 9, 5), full(8, 8, 5), full(7, 7, 4)],
        project_cup=cup,
        budget="24000.00",
    )
    call_id = done["call_id"]
    assert len(done["awards"]) == 3

    def statuses():
        awards = client.ok("GET", "/awards", params={"call_id": call_id})["awards"]
        return sorted(a["status"] for a in awards)

    wait_for(
        lambda: statuses() == ["confirmed", "confirmed", "suspended"],
        20,
        "the ledger's three answers",
    )
    found = client.ok("GET", f"/calls/{call_id}")
    assert found["available"] == "8000.00"  # the third's money came back
    only = {"call_id": call_id, "status": "suspended"}
    [suspended] = client.ok("GET", "/awards", params=only)["awards"]
    assert suspended["reason"] == "line_lacks_room"
    before = figures(books, cup)
    assert before[LINE]["legally_binding"] == Decimal("16000.00")
    assert_invariants(before)

    # every message of the flow, both ways, delivered twice more
    calls_log, ledger_log = calls.log, ledger.log
    heads = calls_log.head(), ledger_log.head()
    to_ledger = [e.to_json() for e in calls_log.read_all() if e.type == "grant_awarded"]
    to_calls = [e.to_json() for e in ledger_log.read_all() if e.type.startswith("commitment_")]
    assert len(to_ledger) == 3 and len(to_calls) == 3
    seen = (
        consumer_stats(calls.container)["duplicate"],
        consumer_stats(ledger.container)["duplicate"],
    )
    for _ in range(2):
        for body in to_ledger:
            harness.publish("calls", body)
        for body in to_calls:
            harness.publish("ledger", body)
    wait_for(
        lambda: consumer_stats(calls.container)["duplicate"] >= seen[0] + 6,
        20,
        "calls saw 6 duplicates",
    )
    wait_for(
        lambda: consumer_stats(ledger.container)["duplicate"] >= seen[1] + 6,
        20,
        "the ledger saw 6 duplicates",
    )
    assert (calls_log.head(), ledger_log.head()) == heads
    assert figures(books, cup) == before
    assert statuses() == ["confirmed", "confirmed", "suspended"]
    assert calls_log.verify().ok and ledger_log.verify().ok


def confirmed_award(pair, clock) -> tuple[str, str]:
    """A call on a fresh project whose one award the ledger confirmed: (award id, CUP)."""
    calls, ledger = pair
    client, books = calls.client, ledger.client
    cup = a_cup()
    funded(books, cup, labour_policies="50000.00")
    done = awarded_call(client, clock, [person_application(1)], [full(9, 9, 5)], project_cup=cup)
    award_id = done["awards"][0]
    wait_for(
        lambda: client.ok("GET", f"/awards/{award_id}")["status"] == "confirmed",
        20,
        "the grant confirmed",
    )
    clock.set(dt.datetime(2024, 5, 2, 9, 0, tzinfo=UTC))  # the day the claims are made
    return award_id, cup


def test_a_tranche_ends_paid_and_moves_the_ledgers_disbursed_figure_by_its_amount(pair, clock):
    calls, ledger = pair
    client, books = calls.client, ledger.client
    award_id, cup = confirmed_award(pair, clock)
    before = figures(books, cup)

    body = {
        "kind": "advance",
        "amount": "3200.00",
        "claim_reference": "PG-2024-77",
        "claim_date": "2024-05-02",
    }
    tranche_id = client.ok("POST", f"/awards/{award_id}/tranches", body, status=201)["tranche_id"]
    wait_for(
        lambda: client.ok("GET", f"/awards/{award_id}")["paid"] == "3200.00", 20, "the tranche paid"
    )
    paid = [e for e in calls.log.read_all() if e.type == "tranche_paid"]
    assert [(e.data["tranche_id"], e.data["payment_id"]) for e in paid] == [
        (tranche_id, f"tranche-{tranche_id}")
    ]
    after = figures(books, cup)
    assert after[LINE]["disbursed"] - before[LINE]["disbursed"] == Decimal("3200.00")
    assert after["total"]["disbursed"] - before["total"]["disbursed"] == Decimal("3200.00")
    assert after[LINE]["legally_binding"] == before[LINE]["legally_binding"] == Decimal("8000.00")
    assert_invariants(after)


def test_a_revoked_grant_stays_legally_binding_only_for_what_was_paid(pair, clock):
    """F3: calls revokes a confirmed award with 1,500.00 of its 8,000.00 paid; the ledger reduces
    the grant's commitment by the 6,500.00 left, traced to the revocation."""
    calls, ledger = pair
    client, books = calls.client, ledger.client
    award_id, cup = confirmed_award(pair, clock)
    body = {"kind": "advance", "amount": "1500.00", "claim_reference": "PG-1"}
    client.ok("POST", f"/awards/{award_id}/tranches", body, status=201)
    wait_for(
        lambda: client.ok("GET", f"/awards/{award_id}")["paid"] == "1500.00", 20, "the advance"
    )
    assert figures(books, cup)[LINE]["legally_binding"] == Decimal("8000.00")

    client.ok("POST", f"/awards/{award_id}/revoke", {"reason": "project abandoned"})
    wait_for(
        lambda: figures(books, cup)[LINE]["legally_binding"] == Decimal("1500.00"),
        20,
        "the commitment reduced by what was left unpaid",
    )
    after = figures(books, cup)
    assert after[LINE]["disbursed"] == Decimal("1500.00")
    assert after["total"]["legally_binding"] == Decimal("1500.00")
    assert_invariants(after)
    commitment = books.ok("GET", f"/commitments/grant-{award_id}")
    [reduction] = commitment["reductions"]
    revoked = [e for e in calls.log.read_all() if e.type == "grant_revoked"]
    assert (reduction["amount"], reduction["cause"]["causation_id"]) == ("6500.00", revoked[0].id)
    assert (commitment["amount"], commitment["remaining"]) == ("1500.00", "0.00")
