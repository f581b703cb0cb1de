"""Relay throughput (events/s from the log to confirmed on the broker), against raw publishing of
the same bodies through kombu's AMQP channel with batched publisher confirms."""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from pathlib import Path

import amqp
import kombu
import structlog

from bench.common import AMQP_URI, emit, figure, timed
from shared.canonical import canonical
from shared.db import make_engine, migrate
from shared.eventlog import EventLog
from shared.records import NewEvent
from shared.relay import Relay

EVENTS = int(os.environ.get("BENCH_RELAY_EVENTS", "20000"))
BATCH = 500
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def _fill(log: EventLog) -> None:
    for batch in range(EVENTS // 500):
        log.append(
            f"award-{batch}",
            0,
            [
                NewEvent("tranche_paid", {"amount": f"{i}.00", "award": f"a-{batch}"})
                for i in range(500)
            ],
        )


def _declare(service: str) -> tuple[kombu.Connection, kombu.Queue]:
    conn = kombu.Connection(AMQP_URI)
    exchange = kombu.Exchange(f"{service}.events", type="topic", durable=True)
    queue = kombu.Queue(f"{service}.bench", exchange, routing_key="#", durable=True)
    queue(conn.default_channel).declare()
    return conn, queue


def _cleanup(conn: kombu.Connection, queue: kombu.Queue, service: str) -> None:
    channel = conn.default_channel
    channel.queue_delete(queue.name)
    channel.exchange_delete(f"{service}.events")
    conn.release()


def ours(log: EventLog) -> float:
    service = "bench" + uuid.uuid4().hex[:8]
    conn, queue = _declare(service)
    relay = Relay(log, AMQP_URI, service, batch_size=BATCH, checkpoint_name=f"relay-{service}")
    try:
        seconds = timed(relay.publish_pending)
        assert relay.lag() == 0
    finally:
        relay.stop()
        _cleanup(conn, queue, service)
    return EVENTS / seconds


def anchor(log: EventLog) -> float:
    service = "bench" + uuid.uuid4().hex[:8]
    # The same bodies and properties the relay sends, built before the clock starts.
    messages = [
        (
            e.type,
            amqp.Message(
                canonical(e.to_json()).encode("utf-8"),
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                message_id=e.id,
                type=e.type,
                app_id=service,
                timestamp=int(e.recorded_at.timestamp()),
                application_headers={"nameko.call_id_stack": [f"{service}.relay.{e.id}"]},
            ),
        )
        for e in log.read_all(page=5000, upcast=False)
    ]
    conn, queue = _declare(service)
    channel = conn.default_channel
    channel.confirm_select()
    pending: set[int] = set()
    tag = 0

    def on_ack(delivery_tag: int, multiple: bool) -> None:
        nonlocal pending
        pending = {t for t in pending if t > delivery_tag} if multiple else pending - {delivery_tag}

    channel.events["basic_ack"].add(on_ack)

    def run() -> None:
        nonlocal tag
        for start in range(0, len(messages), BATCH):
            for type_, message in messages[start : start + BATCH]:
                tag += 1
                pending.add(tag)
                channel.basic_publish(message, exchange=f"{service}.events", routing_key=type_)
            while pending:
                conn.connection.drain_events(timeout=30)

    try:
        seconds = timed(run)
    finally:
        _cleanup(conn, queue, service)
    return EVENTS / seconds


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'relay.db'}")
        migrate(engine)
        log = EventLog(engine)
        _fill(log)
        best_ours = max(ours(log) for _ in range(ROUNDS))
        best_anchor = max(anchor(log) for _ in range(ROUNDS))
    emit({"relay": figure(best_ours, "events/s", best_anchor)})


if __name__ == "__main__":
    main()
