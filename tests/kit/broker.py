"""One test's services on the real RabbitMQ, and the test playing the services that are not
running: each service runs in a ServiceContainer under the test's unique name (`<unique><service>`,
its exchange `<unique><service>.events`), with the tests' tokens, fast retries, and every source it
`@handles` under its name in the test (LAVORO_SOURCES); the test publishes events as a service's
relay would (docs/events.md) and taps what a service publishes into queues of its own. Everything
the harness or its services declare is deleted at close."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from collections.abc import Iterator
from typing import Any

import kombu
from nameko.containers import ServiceContainer
from nameko.standalone.events import get_event_exchange

from shared.consumer import SOURCES_KEY, queue_name
from shared.dlq import dlq_name
from shared.records import RecordedEvent
from shared.relay import PUBLIC_EXCHANGE
from tests.helpers import wait_for
from tests.kit.events import recorded
from tests.kit.service import Running, handled_sources, settings

FAST = {
    "LAVORO_RETRY_BASE_DELAY": 0.005,
    "LAVORO_RETRY_MAX_DELAY": 0.05,
    "LAVORO_REPLAY_POLL_INTERVAL": 0.05,
}


class Harness:
    """The services of one test on the broker, what the test publishes and what it taps."""

    def __init__(self, amqp_uri: str, unique: str) -> None:
        self.amqp_uri = amqp_uri
        self.unique = unique
        self.connection = kombu.Connection(amqp_uri, transport_options={"confirm_publish": True})
        self.channel = self.connection.channel()
        self.containers: list[ServiceContainer] = []
        self.queues: set[str] = set()
        self.exchanges: set[str] = set()
        self._positions: dict[str, Iterator[int]] = {}
        self._versions: dict[tuple[str, str], int] = {}
        self._taps = itertools.count(1)

    def name(self, service: str) -> str:
        """The name `service` runs under in this test."""
        return self.unique + service

    def start(self, service_cls: type, db: dict[str, str], **config: Any) -> Running:
        """Run `service_cls` as `name(service_cls.name)` on the database `db`, `config` over the
        common configuration."""
        name = self.name(service_cls.name)
        named = type(service_cls.__name__, (service_cls,), {"name": name})
        handled = handled_sources(service_cls)
        if handled:
            config = {SOURCES_KEY: {source: self.name(source) for source in handled}, **config}
        aliases = config.get(SOURCES_KEY, {})
        listened = {aliases.get(source, source) for source in handled}
        container = ServiceContainer(named, settings(self.amqp_uri, db, **{**FAST, **config}))
        self.queues.update({dlq_name(name), *(queue_name(name, source) for source in listened)})
        self.exchanges.update({f"{name}.events", *(f"{source}.events" for source in listened)})
        self.containers.append(container)
        container.start()
        return Running(container)

    def event(
        self,
        source: str,
        type_: str,
        stream: str,
        data: dict[str, Any],
        *,
        cause: RecordedEvent | None = None,
        actor: str | None = None,
        at: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """The body `source`'s relay would publish for its next event: the next position of its
        log, the next version of `stream`, the chain of `cause` (else a chain of its own)."""
        positions = self._positions.setdefault(source, itertools.count(1))
        version = self._versions[source, stream] = self._versions.get((source, stream), 0) + 1
        return recorded(
            type_,
            data,
            position=next(positions),
            stream=stream,
            version=version,
            correlation_id=cause.correlation_id if cause else str(uuid.uuid4()),
            causation_id=cause.id if cause else None,
            actor=actor,
            at=at,
        ).to_json()

    def publish(
        self,
        source: str,
        *bodies: dict[str, Any] | str,
        routing_key: str | None = None,
        headers: dict[str, Any] | None = None,
    ) -> None:
        """Publish `bodies` on `source`'s exchange as its relay does: JSON, persistent, the
        event's type as routing key and its id as message id, confirmed by the broker. A text
        body goes as it is (a message that is not JSON), with the `routing_key` given."""
        exchange = get_event_exchange(self.name(source), {})
        self.exchanges.add(exchange.name)
        producer = self.connection.Producer()
        for body in bodies:
            event = body if isinstance(body, dict) else {}
            text = json.dumps(body) if isinstance(body, dict) else body
            producer.publish(
                text.encode(),
                exchange=exchange,
                routing_key=routing_key or event["type"],
                message_id=event.get("id"),
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                headers=headers or {},
                declare=[exchange],
            )

    def tap(self, service: str, routing_key: str = "#") -> kombu.Queue:
        """A queue of the test's that gets what `service` publishes on its exchange."""
        exchange = get_event_exchange(self.name(service), {})
        return self._tap(exchange, routing_key, f"{self.name(service)}.test.events")

    def tap_public(self, service: str) -> kombu.Queue:
        """A queue of the test's that gets what `service` publishes on `lavoro.public`."""
        public = kombu.Exchange(PUBLIC_EXCHANGE, "topic", durable=True, auto_delete=False)
        return self._tap(public, f"{self.name(service)}.#", f"{self.name(service)}.test.public")

    def _tap(self, exchange: kombu.Exchange, routing_key: str, prefix: str) -> kombu.Queue:
        name = f"{prefix}.{next(self._taps)}"
        queue = kombu.Queue(name, exchange, routing_key=routing_key, auto_delete=False)
        self.queues.add(name)
        queue(self.channel).declare()
        return queue(self.channel)

    def dlq(self, service: str) -> kombu.Queue:
        """`service`'s dead-letter queue, to take from."""
        return kombu.Queue(dlq_name(self.name(service)), durable=True)(self.channel)

    def messages(self, queue: kombu.Queue, count: int, timeout: float = 10.0) -> list[Any]:
        """The next `count` messages in `queue`, waiting up to `timeout` seconds for them."""
        got: list[Any] = []

        def enough() -> bool:
            message = queue.get(no_ack=True)
            if message is not None:
                got.append(message)
            return len(got) >= count

        wait_for(enough, timeout, f"{count} messages in {queue.name}")
        return got

    def take(self, queue: kombu.Queue, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The JSON bodies of the next `count` messages in `queue`."""
        return [json.loads(m.body) for m in self.messages(queue, count, timeout)]

    def close(self) -> None:
        for container in self.containers:
            container.kill()
        for queue in self.queues:
            self.channel.queue_delete(queue)
        for exchange in self.exchanges:
            self.channel.exchange_delete(exchange)
        self.connection.release()
