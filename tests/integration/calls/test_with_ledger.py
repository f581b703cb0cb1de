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
import uuid
from decimal import Decimal

import pytest
from nameko.containers import ServiceContainer
from nameko.standalone.events import get_event_exchange

from services.ledger.service import LedgerService
from shared.clock import UTC
from shared.consumer import consumer_stats, queue_name
from shared.dependencies import log_for
from shared.dlq import dlq_name
from shared.web import bound_port
from tests.helpers import wait_for
from tests.infra import drop_schema, postgres_url
from tests.kit.http import TOKENS, Client
from tests.service.calls.harness import CallsHarness, awarded_call, full, person_application
from tests.service.ledger.builders import a_cup, funded

LINE = "labour_policies"


@pytest.fixture(params=["sqlite", "postgres"])
def databases(request, tmp_path):
    """One database per service."""
    if request.param == "sqlite":
        yield [{"DATABASE_URL": f"sqlite:///{tmp_path / name}.db"} for name in ("calls", "ledger")]
        return
    url = postgres_url()
    schemas = ["e_" + uuid.uuid4().hex[:12] for _ in range(2)]
    yield [{"DATABASE_URL": url, "DATABASE_SCHEMA": schema} for schema in schemas]
    for schema in schemas:
        drop_schema(url, schema)


@pytest.fixture
def pair(amqp_uri, unique, databases):
    calls_db, ledger_db = databases
    calls = CallsHarness(amqp_uri, unique, calls_db)
    ledger_cls = type("Ledger", (LedgerService,), {"name": calls.ledger})
    config = {
        "AMQP_URI": amqp_uri,
        "WEB_SERVER_ADDRESS": "127.0.0.1:0",
        "LAVORO_TOKENS": TOKENS,
        "LAVORO_RETRY_BASE_DELAY": 0.01,
        "LAVORO_RETRY_MAX_DELAY": 0.05,
        "LAVORO_SOURCES": {"calls": calls.name},
        **ledger_db,
    }
    ledger = ServiceContainer(ledger_cls, config)
    ledger.start()
    calls_container = calls.start()
    yield calls, calls_container, ledger
    ledger.kill()
    channel = calls.connection.default_channel
    for queue in (queue_name(calls.ledger, calls.name), dlq_name(calls.ledger)):
        channel.queue_delete(queue)
    calls.close()  # calls' queues, and both services' exchanges


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


def test_room_for_two_awards_not_a_third_and_redeliveries_change_nothing(pair):
    calls, calls_container, ledger = pair
    client = calls.client(calls_container)
    books = Client(f"http://127.0.0.1:{bound_port(ledger)}")
    cup = a_cup()
    funded(books, cup, labour_policies="16000.00")  # room for two awards of 8000.00

    apps = [person_application(n) for n in range(3)]
    done = awarded_call(
        calls,
        client,
        apps,
        [full(9, 9, 5), full(8, 8, 5), full(7, 7, 4)],
        project_cup=cup,
        budget="24000.00",
    )
    call_id = done["call_id"]
    assert len(done["awards"]) == 3

    def statuses():
        return sorted(a["status"] for a in client.read("/awards", call_id=call_id)["awards"])

    wait_for(
        lambda: statuses() == ["confirmed", "confirmed", "suspended"],
        20,
        "the ledger's three answers",
    )
    assert client.read(f"/calls/{call_id}")["available"] == "8000.00"  # the third's money came back
    suspended = client.read("/awards", call_id=call_id, status="suspended")["awards"][0]
    assert suspended["reason"] == "line_lacks_room"
    before = figures(books, cup)
    assert before[LINE]["legally_binding"] == Decimal("16000.00")
    assert_invariants(before)

    # every message of the flow, both ways, delivered twice more
    calls_log, ledger_log = calls.log(calls_container), log_for(ledger)
    heads = calls_log.head(), ledger_log.head()
    to_ledger = [e.to_json() for e in calls_log.read_all() if e.type == "grant_awarded"]
    to_calls = [e.to_json() for e in ledger_log.read_all() if e.type.startswith("commitment_")]
    assert len(to_ledger) == 3 and len(to_calls) == 3
    seen = consumer_stats(calls_container)["duplicate"], consumer_stats(ledger)["duplicate"]
    for _ in range(2):
        for body in to_ledger:
            _publish(calls, calls.name, body)
        for body in to_calls:
            calls.publish(body)
    wait_for(
        lambda: consumer_stats(calls_container)["duplicate"] >= seen[0] + 6,
        20,
        "calls saw 6 duplicates",
    )
    wait_for(
        lambda: consumer_stats(ledger)["duplicate"] >= seen[1] + 6,
        20,
        "the ledger saw 6 duplicates",
    )
    assert (calls_log.head(), ledger_log.head()) == heads
    assert figures(books, cup) == before
    assert statuses() == ["confirmed", "confirmed", "suspended"]
    assert calls_log.verify().ok and ledger_log.verify().ok


def confirmed_award(pair) -> tuple[str, str]:
    """A call on a fresh project whose one award the ledger confirmed: (award id, CUP)."""
    calls, calls_container, ledger = pair
    client = calls.client(calls_container)
    books = Client(f"http://127.0.0.1:{bound_port(ledger)}")
    cup = a_cup()
    funded(books, cup, labour_policies="50000.00")
    done = awarded_call(calls, client, [person_application(1)], [full(9, 9, 5)], project_cup=cup)
    award_id = done["awards"][0]
    wait_for(
        lambda: client.read(f"/awards/{award_id}")["status"] == "confirmed",
        20,
        "the grant confirmed",
    )
    calls.clock.set(dt.datetime(2024, 5, 2, 9, 0, tzinfo=UTC))  # the day the claims are made
    return award_id, cup


def test_a_tranche_ends_paid_and_moves_the_ledgers_disbursed_figure_by_its_amount(pair):
    calls, calls_container, ledger = pair
    client = calls.client(calls_container)
    books = Client(f"http://127.0.0.1:{bound_port(ledger)}")
    award_id, cup = confirmed_award(pair)
    before = figures(books, cup)

    body = {
        "kind": "advance",
        "amount": "3200.00",
        "claim_reference": "PG-2024-77",
        "claim_date": "2024-05-02",
    }
    tranche_id = client.ok(f"/awards/{award_id}/tranches", body, status=201)["tranche_id"]
    wait_for(
        lambda: client.read(f"/awards/{award_id}")["paid"] == "3200.00", 20, "the tranche paid"
    )
    paid = [e for e in calls.log(calls_container).read_all() if e.type == "tranche_paid"]
    assert [(e.data["tranche_id"], e.data["payment_id"]) for e in paid] == [
        (tranche_id, f"tranche-{tranche_id}")
    ]
    after = figures(books, cup)
    assert after[LINE]["disbursed"] - before[LINE]["disbursed"] == Decimal("3200.00")
    assert after["total"]["disbursed"] - before["total"]["disbursed"] == Decimal("3200.00")
    assert after[LINE]["legally_binding"] == before[LINE]["legally_binding"] == Decimal("8000.00")
    assert_invariants(after)


def test_a_revoked_grant_stays_legally_binding_only_for_what_was_paid(pair):
    """F3: calls revokes a confirmed award with 1,500.00 of its 8,000.00 paid; the ledger reduces
    the grant's commitment by the 6,500.00 left, traced to the revocation."""
    calls, calls_container, ledger = pair
    client = calls.client(calls_container)
    books = Client(f"http://127.0.0.1:{bound_port(ledger)}")
    award_id, cup = confirmed_award(pair)
    body = {"kind": "advance", "amount": "1500.00", "claim_reference": "PG-1"}
    client.ok(f"/awards/{award_id}/tranches", body, status=201)
    wait_for(lambda: client.read(f"/awards/{award_id}")["paid"] == "1500.00", 20, "the advance")
    assert figures(books, cup)[LINE]["legally_binding"] == Decimal("8000.00")

    client.ok(f"/awards/{award_id}/revoke", {"reason": "project abandoned"})
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
    revoked = [e for e in calls.log(calls_container).read_all() if e.type == "grant_revoked"]
    assert (reduction["amount"], reduction["cause"]["causation_id"]) == ("6500.00", revoked[0].id)
    assert (commitment["amount"], commitment["remaining"]) == ("1500.00", "0.00")


def _publish(calls: CallsHarness, exchange_name: str, body: dict) -> None:
    """Publish one of calls' own events again, as its relay would (a redelivery)."""
    exchange = get_event_exchange(exchange_name, {})
    calls.connection.Producer().publish(
        body,
        exchange=exchange,
        routing_key=body["type"],
        message_id=body["id"],
        serializer="json",
        delivery_mode=2,
        declare=[exchange],
    )
