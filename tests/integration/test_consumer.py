"""Consuming on the real RabbitMQ, with the consumer's database on SQLite and PostgreSQL: one quorum
queue per source, redelivery changes nothing, per-stream order under a burst, retries in place,
a handler's appends and its inbox row commit together, out-of-order and malformed events parked.

The source service is played by the test: it publishes `RecordedEvent.to_json()` bodies to
`<source>.events` exactly as the relay does (tests/kit/broker.py)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from collections.abc import Callable
from typing import Any

import eventlet
import pytest
import sqlalchemy as sa
from amqp.exceptions import PreconditionFailed
from marshmallow import fields, validate
from nameko.containers import ServiceContainer

from shared import inbox
from shared import tables as t
from shared.consumer import consumer_stats, handles, queue_name
from shared.contracts import Contracts
from shared.dependencies import EventStore, log_for
from shared.eventlog import ANY_VERSION
from shared.records import IncomingEvent, NewEvent
from shared.schemas import Schema
from tests.helpers import wait_for
from tests.kit.events import recorded
from tests.kit.service import database_of

SOURCE = "src"  # the service the test plays; the consumer under test is `consumer`
_positions = itertools.count(1)


def a_body(
    stream: str,
    position: int | None = None,
    *,
    type_: str = "thing_happened",
    version: int = 1,
    correlation_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body the relay publishes for one recorded event of the source."""
    return recorded(
        type_,
        data or {"n": 1},
        position=position if position is not None else next(_positions),
        stream=stream,
        version=version,
        correlation_id=correlation_id,
        actor="operator:anna",
    ).to_json()


@dataclasses.dataclass
class Behaviour:
    """What the test service's handler does; the test reads `calls` afterwards."""

    calls: list[IncomingEvent] = dataclasses.field(default_factory=list)
    failures: dict[str, float] = dataclasses.field(
        default_factory=dict
    )  # event id -> times to fail
    append: bool = True
    raise_after_append: bool = False
    jitter: float = 0.0
    active: int = 0
    peak: int = 0

    def handle(self, store: Any, event: IncomingEvent) -> None:
        self.calls.append(event)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.jitter:
                eventlet.sleep(random.random() * self.jitter)
            if self.append:
                store.append(
                    f"seen-{event.stream}",
                    ANY_VERSION,
                    [NewEvent("seen", {"position": event.position, "id": event.id})],
                )
            if self.raise_after_append:
                raise RuntimeError(f"boom after appending for {event.id}")
            if self.failures.get(event.id, 0) > 0:
                self.failures[event.id] -= 1
                raise RuntimeError(f"boom on {event.id}")
        finally:
            self.active -= 1

    def positions(self, stream: str) -> list[int]:
        return [e.position for e in self.calls if e.stream == stream]


def consumer_service(behaviour: Behaviour) -> type:
    class Consumer:
        name = "consumer"
        store = EventStore()

        @handles(SOURCE, "thing_happened", "other_happened")
        def on_thing(self, event: IncomingEvent) -> None:
            behaviour.handle(self.store, event)

    return Consumer


@pytest.fixture
def start(harness, store_url) -> Callable[..., ServiceContainer]:
    """Start a consumer on the test's database (`config` over the common configuration)."""
    return lambda service_cls, **config: (
        harness.start(service_cls, database_of(store_url), **config).container
    )


def engine_of(container: ServiceContainer) -> sa.Engine:
    return log_for(container).engine


def inbox_ids(container: ServiceContainer) -> set[str]:
    with engine_of(container).connect() as conn:
        return set(conn.execute(sa.select(t.inbox.c.event_id)).scalars())


def handled(container: ServiceContainer, count: int) -> Callable[[], bool]:
    """Until `count` events were handled: the consumer counts one after its inbox row commits."""
    stats = consumer_stats(container)
    return lambda: stats["handled"] >= count


def test_one_quorum_queue_per_source_bound_to_each_handled_type(harness, start):
    seen: list[tuple[str, str]] = []

    class TwoHandlers:
        name = "consumer"
        store = EventStore()

        @handles(SOURCE, "a_happened")
        def on_a(self, event):
            seen.append(("on_a", event.type))

        @handles(SOURCE, "b_happened", "c_happened")
        def on_b_or_c(self, event):
            seen.append(("on_b_or_c", event.type))

    container = start(TwoHandlers)
    harness.publish(
        SOURCE, *(a_body("s-1", type_=kind) for kind in ("a_happened", "b_happened", "c_happened"))
    )
    wait_for(handled(container, 3), message="three events handled")
    assert seen == [
        ("on_a", "a_happened"),
        ("on_b_or_c", "b_happened"),
        ("on_b_or_c", "c_happened"),
    ]

    channel = harness.connection.channel()
    name = queue_name(harness.name("consumer"), harness.name(SOURCE))
    assert channel.queue_declare(name, passive=True).queue == name
    # The broker refuses a declaration that differs in an argument: so the queue is a quorum
    # queue, and one with a single active consumer.
    with pytest.raises(PreconditionFailed, match="x-single-active-consumer"):
        harness.connection.channel().queue_declare(
            name, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"}
        )
    with pytest.raises(PreconditionFailed, match="x-queue-type"):
        harness.connection.channel().queue_declare(
            name, durable=True, auto_delete=False, arguments={"x-single-active-consumer": True}
        )


def test_a_redelivered_message_changes_nothing(harness, start):
    behaviour = Behaviour()
    container = start(consumer_service(behaviour))
    body = a_body("call-1")
    harness.publish(SOURCE, body, body)
    stats = consumer_stats(container)
    wait_for(lambda: stats["handled"] + stats["duplicate"] == 2, message="both deliveries")
    assert (stats["handled"], stats["duplicate"]) == (1, 1)
    assert [e.id for e in behaviour.calls] == [body["id"]]
    assert inbox_ids(container) == {body["id"]}
    assert log_for(container).head()[0] == 1


def test_a_burst_keeps_each_stream_in_order_and_handles_each_event_once(harness, start):
    behaviour = Behaviour(jitter=0.002)
    container = start(consumer_service(behaviour), max_workers=10)
    hot = [a_body("hot", version=v) for v in range(1, 201)]
    others = {s: [a_body(s, version=v) for v in range(1, 41)] for s in ("c-1", "c-2", "c-3")}
    # Interleave: every hot event is followed by one of another stream, round robin.
    cold = [body for trio in zip(*others.values(), strict=True) for body in trio]
    bodies = [b for pair in itertools.zip_longest(hot, cold) for b in pair if b is not None]
    for index, body in enumerate(bodies, start=1):
        body["position"] = index  # the source's global order, as the relay publishes it
    harness.publish(SOURCE, *bodies)

    wait_for(handled(container, len(bodies)), timeout=30, message="the whole burst")
    assert len(behaviour.calls) == len(bodies) == 320
    for stream, expected in [("hot", hot), *others.items()]:
        assert behaviour.positions(stream) == [b["position"] for b in expected], stream
        stored = log_for(container).read_stream(f"seen-{stream}")
        assert [e.data["position"] for e in stored] == [b["position"] for b in expected]
    assert 1 < behaviour.peak <= 10  # streams ran in parallel, within max_workers
    assert consumer_stats(container)["out_of_order"] == 0


def test_a_failing_event_is_retried_in_place_and_its_stream_waits(harness, start):
    first, second = a_body("call-1", version=1), a_body("call-1", version=2)
    behaviour = Behaviour(failures={first["id"]: 2})
    container = start(consumer_service(behaviour))
    harness.publish(SOURCE, first, second)
    wait_for(handled(container, 2), message="both events")
    assert [e.id for e in behaviour.calls] == [first["id"]] * 3 + [second["id"]]
    stats = consumer_stats(container)
    assert (stats["retries"], stats["handled"], stats["parked"]) == (2, 2, 0)
    # The two failed attempts appended nothing: one "seen" event per handled event.
    assert [e.data["id"] for e in log_for(container).read_stream("seen-call-1")] == [
        first["id"],
        second["id"],
    ]


def test_a_handlers_appends_and_inbox_row_commit_or_roll_back_together(harness, start):
    behaviour = Behaviour(raise_after_append=True)
    container = start(consumer_service(behaviour), LAVORO_RETRY_ATTEMPTS=2)
    doomed = a_body("call-1")
    harness.publish(SOURCE, doomed)
    wait_for(lambda: consumer_stats(container)["parked"] == 1, message="the event parked")
    assert len(behaviour.calls) == 2  # both attempts appended, then raised
    assert log_for(container).head()[0] == 0
    assert inbox_ids(container) == set()

    behaviour.raise_after_append = False
    fine = a_body("call-2", correlation_id="chain-7")
    harness.publish(SOURCE, fine)
    wait_for(handled(container, 1), message="the good event")
    (seen,) = log_for(container).read_stream("seen-call-2")
    assert (seen.causation_id, seen.correlation_id, seen.actor) == (
        fine["id"],
        "chain-7",
        "operator:anna",
    )
    assert inbox_ids(container) == {fine["id"]}


def test_a_handler_that_writes_nothing_still_leaves_its_inbox_row(harness, start):
    behaviour = Behaviour(append=False)
    container = start(consumer_service(behaviour))
    body = a_body("call-1")
    harness.publish(SOURCE, body, body)
    wait_for(lambda: consumer_stats(container)["duplicate"] == 1, message="the second delivery")
    assert inbox_ids(container) == {body["id"]}
    assert len(behaviour.calls) == 1
    with engine_of(container).connect() as conn:
        row = conn.execute(sa.select(t.inbox)).one()
    assert (row.source, row.stream, row.position, row.type) == (
        harness.name(SOURCE),
        "call-1",
        body["position"],
        "thing_happened",
    )


def test_an_older_position_after_a_newer_one_of_the_stream_is_parked(harness, start):
    behaviour = Behaviour()
    container = start(consumer_service(behaviour))
    newer, older = a_body("call-1", 50, version=2), a_body("call-1", 40, version=1)
    elsewhere = a_body("call-2", 45)
    harness.publish(SOURCE, newer, older, elsewhere)
    stats = consumer_stats(container)
    wait_for(lambda: stats["parked"] == 1 and stats["handled"] == 2, message="park and handle")
    assert stats["out_of_order"] == 1
    assert inbox_ids(container) == {newer["id"], elsewhere["id"]}
    with engine_of(container).connect() as conn:
        letter = conn.execute(sa.select(t.dead_letters)).one()
    assert (letter.event_id, letter.status) == (older["id"], "parked")
    assert letter.error.startswith("out of order: position 40 after 50")
    (copy,) = harness.messages(harness.dlq("consumer"), 1)
    assert copy.headers["x-lavoro-error"].startswith("out of order")


def test_malformed_messages_are_parked_not_dropped(harness, start):
    behaviour = Behaviour()
    container = start(consumer_service(behaviour))
    harness.publish(SOURCE, {"stream": "call-9", "type": "thing_happened", "hello": "world"})
    harness.publish(SOURCE, "this is not JSON {", routing_key="thing_happened")
    good = a_body("call-1")
    harness.publish(SOURCE, good)
    stats = consumer_stats(container)
    wait_for(
        lambda: stats["malformed"] == 2 and stats["handled"] == 1, message="parked and handled"
    )
    with engine_of(container).connect() as conn:
        letters = conn.execute(sa.select(t.dead_letters).order_by(t.dead_letters.c.id)).all()
    assert [(row.stream, row.status) for row in letters] == [
        ("call-9", "parked"),
        ("(malformed)", "parked"),
    ]
    assert letters[0].error.startswith("malformed: the body lacks position")
    assert letters[1].body == "this is not JSON {"
    copies = harness.messages(harness.dlq("consumer"), 2)
    assert all(copy.headers["x-lavoro-error"].startswith("malformed") for copy in copies)
    assert [e.id for e in behaviour.calls] == [good["id"]]
    with engine_of(container).connect() as conn:
        assert inbox.count(conn, harness.name(SOURCE)) == 1
    assert json.loads(letters[0].body)["hello"] == "world"


def test_a_stop_mid_burst_then_a_restart_handles_every_event_once_in_order(harness, start):
    bodies = [a_body(f"call-{n % 4}", version=n // 4 + 1) for n in range(120)]
    for index, body in enumerate(bodies, start=1):
        body["position"] = index
    slow = Behaviour(jitter=0.04)  # ~20 ms an event: the stop lands mid-burst
    first = start(consumer_service(slow))
    harness.publish(SOURCE, *bodies)
    wait_for(handled(first, 20), message="part of the burst")
    with eventlet.Timeout(15):
        first.stop()  # graceful: events in hand finish, the rest go back to the broker
    assert len(inbox_ids(first)) < len(bodies)

    second = start(consumer_service(Behaviour()))
    wait_for(lambda: len(inbox_ids(second)) == len(bodies), message="the rest after the restart")
    seen = list(log_for(second).read_all())
    assert sorted(e.data["id"] for e in seen) == sorted(b["id"] for b in bodies)  # each once
    for stream in ("call-0", "call-1", "call-2", "call-3"):
        positions = [e.data["position"] for e in seen if e.stream == f"seen-{stream}"]
        assert positions == [b["position"] for b in bodies if b["stream"] == stream]
    assert consumer_stats(second)["parked"] == 0


def test_config_renames_a_source_without_touching_the_service(harness, start):
    """`LAVORO_SOURCES` lets a service that says `@handles("ledger", ...)` consume a copy of the
    ledger running under another name (here the test's unique source)."""
    behaviour = Behaviour(append=False)

    class Renamed:
        name = "consumer"
        store = EventStore()

        @handles("ledger", "thing_happened")
        def on_thing(self, event: IncomingEvent) -> None:
            behaviour.handle(self.store, event)

    start(Renamed, LAVORO_SOURCES={"ledger": harness.name(SOURCE)})
    body = a_body("s-renamed")
    harness.publish(SOURCE, body)
    wait_for(lambda: len(behaviour.calls) == 1, 10, "the renamed source's event handled")
    assert behaviour.calls[0].id == body["id"] and behaviour.calls[0].source == harness.name(SOURCE)


class ThingV1(Schema):
    n = fields.Integer(required=True, validate=validate.Range(min=0))


def contract_service(received: list[tuple[IncomingEvent, Any]]) -> type:
    """A consumer that declares its contract for the source's `thing_happened` v1."""
    contracts = Contracts(emitted={}, consumed={SOURCE: {("thing_happened", 1): ThingV1}})

    class Consumer:
        name = "consumer"
        store = EventStore(contracts=contracts)

        @handles(SOURCE, "thing_happened")
        def on_thing(self, event: IncomingEvent, message: Any) -> None:
            received.append((event, message))

    return Consumer


def test_a_handler_gets_the_payload_its_contract_loads_and_a_broken_one_is_parked_at_once(
    harness, start
):
    received: list[tuple[IncomingEvent, Any]] = []
    container = start(contract_service(received))
    broken = a_body("thing-1", data={"n": -3})  # breaks the contract: parked, never retried
    unknown = {**a_body("thing-2"), "schema_version": 2}  # no contract for v2
    good = a_body("thing-3", data={"n": 7})
    stats = consumer_stats(container)
    harness.publish(SOURCE, broken, unknown, good)

    def parked():
        # The rows, not only the counter: it is counted before its dead letter is written.
        with engine_of(container).connect() as conn:
            rows = conn.execute(sa.select(t.dead_letters).order_by(t.dead_letters.c.id)).all()
        return len(rows) == 2 and stats["handled"] == 1 and rows

    letters = wait_for(parked, message="parked")
    assert stats["broken_contract"] == 2
    assert [(event.id, message) for event, message in received] == [(good["id"], {"n": 7})]
    assert stats["retries"] == 0
    # Two streams, two lanes: which of them is parked first is not fixed.
    by_id = {row.event_id: row for row in letters}
    assert {(row.event_id, row.status, row.attempts) for row in letters} == {
        (broken["id"], "parked", 1),
        (unknown["id"], "parked", 1),
    }
    assert "breaks its contract" in by_id[broken["id"]].error and "n" in by_id[broken["id"]].error
    assert "no contract for" in by_id[unknown["id"]].error and "v2" in by_id[unknown["id"]].error
