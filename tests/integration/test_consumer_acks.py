"""An ack the broker can no longer take: the consumer's connection was dropped (a cluster node
stopping resets it) after the handler committed. The consumer says so and
goes on (a lane that raised would stop the whole service), and the broker gives the messages to
the next consumer, whose inbox drops what was already handled."""

from __future__ import annotations

import socket

import kombu
import pytest

from shared.queues import EventQueueConsumer
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def test_acks_on_a_connection_the_broker_dropped_do_not_raise_and_the_messages_come_back(
    amqp_uri, unique
):
    conn = kombu.Connection(amqp_uri)
    queue = kombu.Queue(unique, durable=True, auto_delete=False)
    try:
        channel = conn.default_channel
        bound = queue(channel)
        bound.declare()
        producer = conn.Producer(channel)
        for n in range(3):
            producer.publish({"n": n}, routing_key=unique, serializer="json", delivery_mode=2)
        taken = []
        wait_for(lambda: (m := bound.get(no_ack=False)) and taken.append(m) or len(taken) == 3)
        # The connection goes under the consumer's feet, as a node stopping resets it.
        conn.connection.sock.shutdown(socket.SHUT_RDWR)

        consumer = EventQueueConsumer()
        for message in taken:
            consumer.ack_message(message)

        with kombu.Connection(amqp_uri) as again:
            back = queue(again.default_channel)
            seen = []
            wait_for(
                lambda: (m := back.get(no_ack=True)) and seen.append(m.payload) or len(seen) == 3
            )
            assert sorted(p["n"] for p in seen) == [0, 1, 2]
    finally:
        conn.collect()
        with kombu.Connection(amqp_uri) as cleanup:
            queue(cleanup.default_channel).delete()
