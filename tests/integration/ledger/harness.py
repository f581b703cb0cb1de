"""Runs the whole ledger service (HTTP, consumer, relay) on the real RabbitMQ and a test database,
plays the calls service by publishing its events as its relay would, and listens to what the
ledger publishes. Every exchange and queue is named after the test's unique name, and removed."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from typing import Any

import kombu
from nameko.containers import ServiceContainer
from nameko.standalone.events import get_event_exchange

from services.ledger.service import LedgerService
from shared.clock import UTC
from shared.consumer import queue_name
from shared.dlq import dlq_name
from shared.records import RecordedEvent
from shared.relay import PUBLIC_EXCHANGE
from shared.web import bound_port
from tests.helpers import wait_for
from tests.service.ledger.client import TOKENS, Client

FAST = {"LAVORO_RETRY_BASE_DELAY": 0.005, "LAVORO_RETRY_MAX_DELAY": 0.05}


class LedgerHarness:
    def __init__(self, amqp_uri: str, store_url: tuple[str, str | None], unique: str) -> None:
        self.amqp_uri = amqp_uri
        self.url, self.schema = store_url
        self.service = unique  # the ledger runs under this name: its exchange is `<unique>.events`
        self.calls = unique + "calls"
        self.connection = kombu.Connection(amqp_uri, transport_options={"confirm_publish": True})
        self.channel = self.connection.channel()
        self.container: ServiceContainer | None = None
        self.positions = itertools.count(1)
        self.streams: dict[str, int] = {}
        self.answers = self._tap(get_event_exchange(self.service, {}), "#", "answers")
        public = kombu.Exchange(PUBLIC_EXCHANGE, "topic", durable=True, auto_delete=False)
        self.public = self._tap(public, f"{self.service}.#", "public")

    def _tap(self, exchange: kombu.Exchange, key: str, what: str) -> kombu.Queue:
        queue = kombu.Queue(
            f"{self.service}.test.{what}", exchange, routing_key=key, auto_delete=False
        )
        queue(self.channel).declare()
        return queue(self.channel)

    def start(self) -> Client:
        config: dict[str, Any] = {
            "AMQP_URI": self.amqp_uri,
            "DATABASE_URL": self.url,
            "WEB_SERVER_ADDRESS": "127.0.0.1:0",
            "LAVORO_TOKENS": TOKENS,
            "LAVORO_SOURCES": {"calls": self.calls},
            **FAST,
        }
        if self.schema:
            config["DATABASE_SCHEMA"] = self.schema
        service_cls = type("Ledger", (LedgerService,), {"name": self.service})
        self.container = ServiceContainer(service_cls, config)
        self.container.start()
        return Client(f"http://127.0.0.1:{bound_port(self.container)}")

    def calls_event(self, type_: str, stream: str, data: dict[str, Any]) -> dict[str, Any]:
        """The body calls' relay would publish for one of its events (docs/events.md)."""
        now = dt.datetime.now(UTC)
        version = self.streams[stream] = self.streams.get(stream, 0) + 1
        return RecordedEvent(
            next(self.positions), str(uuid.uuid4()), stream, version, type_, 1, data,
            str(uuid.uuid4()), None, "op-calls-1", now, now, "0" * 64, "f" * 64,
        ).to_json()  # fmt: skip

    def publish(self, *bodies: dict[str, Any]) -> None:
        exchange = get_event_exchange(self.calls, {})
        producer = self.connection.Producer()
        for body in bodies:
            producer.publish(
                json.dumps(body),
                exchange=exchange,
                routing_key=body["type"],
                message_id=body["id"],
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                declare=[exchange],
            )

    def take(self, queue: kombu.Queue, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []

        def enough() -> bool:
            message = queue.get(no_ack=True)
            if message is not None:
                got.append(json.loads(message.body))
            return len(got) >= count

        wait_for(enough, timeout, f"{count} messages on {queue.name}")
        return got

    def close(self) -> None:
        if self.container is not None:
            self.container.kill()
        for queue in (
            self.answers.name,
            self.public.name,
            queue_name(self.service, self.calls),
            dlq_name(self.service),
        ):
            self.channel.queue_delete(queue)
        for exchange in (f"{self.calls}.events", f"{self.service}.events"):
            self.channel.exchange_delete(exchange)
        self.connection.release()
