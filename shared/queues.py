"""The broker side of consuming: one durable queue per source service, and nameko's consumer of it.

`<service>.from.<source>` is a quorum queue with a single active consumer, bound to nameko's
`<source>.events` exchange once per event type handled (nameko's own `@event_handler` makes one
queue per type, which lets two types of one stream race). Each message goes, in the consuming
greenthread, to the dispatcher (shared/consumer.py), which keeps the order per stream.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import amqp.exceptions
import kombu.exceptions
import structlog
from kombu import Queue, binding
from nameko.messaging import QueueConsumer
from nameko.standalone.events import get_event_exchange

from shared.broker import connection_name, name_connection

if TYPE_CHECKING:
    from shared.consumer import EventDispatcher, HandlesEntrypoint

PREFETCH_KEY = "LAVORO_PREFETCH_COUNT"
_LOST_WITH_CONNECTION = (OSError, amqp.exceptions.AMQPError, kombu.exceptions.KombuError)
_log = structlog.get_logger("lavoro.consumer")


def queue_name(service: str, source: str) -> str:
    return f"{service}.from.{source}"


class EventQueueConsumer(QueueConsumer):
    """Nameko's QueueConsumer (connection, reconnection, graceful stop), with two changes: a message
    is handed over synchronously in the consuming greenthread, so that it joins its stream's lane
    in arrival order (nameko spawns a greenthread per message, whose start order is the hub's); and
    a body that cannot be decoded is parked instead of crashing the consumer."""

    @property
    def prefetch_count(self) -> int:
        # Events waiting for their stream's turn are unacknowledged too: leave room for other
        # streams beyond the workers that run at once.
        return int(self.container.config.get(PREFETCH_KEY) or self.container.max_workers * 10)

    @property
    def connection(self) -> Any:
        # Named, so that operators (and tests) can find it in `rabbitmqctl list_connections`;
        # kombu's ConsumerMixin reconnects it, under the same name, when the broker drops it.
        return name_connection(
            super().connection, connection_name("consumer", self.container.service_name)
        )

    def handle_message(self, provider: Any, body: Any, message: Any) -> None:
        provider.handle_message(body, message)

    def ack_message(self, message: Any) -> None:
        # The connection can drop between the handler's commit and the ack (a node of the
        # cluster stopping resets it mid-write; nameko lets that through, and the lane's crash
        # would stop the container). The broker then redelivers the message on the next
        # connection, and the inbox recognises it: nothing to do but say so.
        try:
            super().ack_message(message)
        except _LOST_WITH_CONNECTION as exc:
            _log.warning("ack lost with the connection; the broker redelivers", error=repr(exc))

    def requeue_message(self, message: Any) -> None:
        try:
            super().requeue_message(message)
        except _LOST_WITH_CONNECTION as exc:  # unacknowledged: back in the queue all the same
            _log.warning("requeue lost with the connection", error=repr(exc))

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        # The loop looks at stop requests between waits for the broker: every 0.1 s instead of
        # kombu's 1 s, so that a stopping container lets go of its queues promptly.
        kwargs.setdefault("safety_interval", 0.1)
        return super().consume(*args, **kwargs)

    def get_consumers(self, consumer_cls: Any, channel: Any) -> Any:
        for provider in self._providers:
            consumer = consumer_cls(
                queues=[provider.queue],
                callbacks=[partial(self.handle_message, provider)],
                accept=self.accept,
                on_decode_error=provider.handle_undecodable,
            )
            consumer.qos(prefetch_count=self.prefetch_count)
            self._consumers[provider] = consumer
        return self._consumers.values()


class SourceQueue:
    """One source's queue, registered with the queue consumer; routes by event type."""

    def __init__(self, dispatcher: EventDispatcher, source: str) -> None:
        self.dispatcher = dispatcher
        self.source = source
        self.routes: dict[str, HandlesEntrypoint] = {}

    @property
    def queue(self) -> Queue:
        container = self.dispatcher.container
        exchange = get_event_exchange(self.source, container.config)
        return Queue(
            queue_name(container.service_name, self.source),
            bindings=[binding(exchange, routing_key=type_) for type_ in sorted(self.routes)],
            durable=True,
            auto_delete=False,
            queue_arguments={"x-queue-type": "quorum", "x-single-active-consumer": True},
        )

    def handle_message(self, body: Any, message: Any) -> None:
        self.dispatcher.receive(self.source, body, message)

    def handle_undecodable(self, message: Any, exc: Exception) -> None:
        raw = (
            message.body.decode("utf-8", "replace")
            if isinstance(message.body, bytes)
            else message.body
        )
        self.dispatcher.receive(self.source, raw, message, malformed=f"undecodable body: {exc}")

    def __repr__(self) -> str:
        return f"<SourceQueue {self.source} {sorted(self.routes)}>"
