"""Every message delivered twice: while the load runs, the suite taps both services' exchanges
and publishes each event again, exactly as it came (body, message id, headers), to the exchange
it came from, so that each consumer gets every event twice, the second copy interleaved with
later events. Nothing happens twice: each consumer drops one copy of each (its inbox), and the
checks of the fault load find nothing lost or doubled."""

from __future__ import annotations

import json
from collections import Counter

import amqp
import eventlet
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests import infra
from tests.helpers import wait_for
from tests.reliability.checks import HANDLED, examined, settle
from tests.reliability.load import Client, Load
from tests.reliability.rabbit import throwaway_vhost
from tests.reliability.system import SERVICES, System

CALLS, APPLICATIONS, SUSPENDED = 4, 16, 1
COPY_HEADER = "x-fault-suite-copy"  # marks the copies, so that the tap does not copy them again


class Doubler:
    """A queue of the suite's on each service's exchange, and a green thread that publishes
    every message it gets there once more to the same exchange."""

    def __init__(self, uri: str, tag: str) -> None:
        from shared.failover import connection_to

        self.conn = connection_to(uri)
        self.conn.connect()
        self.channel = self.conn.channel()
        self.copies: Counter[str] = Counter()  # exchange -> copies published
        self.handled_copies: Counter[str] = Counter()  # consumer -> copies of types it handles
        self.queues = {}
        for service in SERVICES:
            exchange = f"{service}.events"
            # Declared as the relay and nameko declare it, before any service publishes.
            self.channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
            queue = f"{tag}.doubler.{service}"
            self.channel.queue_declare(queue, durable=False, auto_delete=False)
            self.channel.queue_bind(queue, exchange, "#")
            self.queues[queue] = exchange
        self.channel.confirm_select()
        self._stop = False
        self._idle_passes = 0  # passes in a row that found every tap empty
        self._passes = 0
        self._thread = eventlet.spawn(self._run)

    def _run(self) -> None:
        consumer = {s: next(o for o in SERVICES if o != s) for s in SERVICES}  # source -> reader
        while not self._stop:
            moved = 0
            for queue, exchange in self.queues.items():
                message = self.channel.basic_get(queue, no_ack=False)
                if message is None:
                    continue
                properties = dict(message.properties)
                headers = dict(properties.get("application_headers") or {})
                self.channel.basic_ack(message.delivery_tag)
                if headers.get(COPY_HEADER):  # a copy of ours coming back through the tap
                    continue
                properties["application_headers"] = {**headers, COPY_HEADER: 1}
                self.channel.basic_publish(
                    amqp.Message(message.body, **properties),
                    exchange=exchange,
                    routing_key=message.delivery_info["routing_key"],
                )
                self.copies[exchange] += 1
                source = exchange.removesuffix(".events")
                if json.loads(message.body)["type"] in HANDLED[consumer[source]]:
                    self.handled_copies[consumer[source]] += 1
                moved += 1
            self._idle_passes = 0 if moved else self._idle_passes + 1
            self._passes += 1
            if not moved:
                eventlet.sleep(0.05)

    def wait_drained(self, timeout: float) -> None:
        """Until three passes begun after this call found every tap empty: each message tapped
        by then was published again (the taps are read by the doubler's thread alone)."""
        mark = self._passes
        wait_for(
            lambda: self._passes >= mark + 3 and self._idle_passes >= 3,
            timeout,
            "every message published a second time",
        )

    def close(self) -> None:
        self._stop = True
        self._thread.wait()
        for queue in self.queues:
            self.channel.queue_delete(queue)
        self.conn.collect()


def duplicates(base: str) -> int:
    text = requests.get(base + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "lavoro_consumer_events_total"
                and sample.labels.get("outcome") == "duplicate"
            ):
                return int(sample.value)
    return 0


@pytest.mark.timeout(600)
def test_every_message_delivered_twice_changes_nothing(figures, tmp_path, unique):
    with throwaway_vhost(infra.amqp_uri(), f"lavoro-rel-{unique}") as uri:
        doubler = Doubler(uri, unique)
        system = System(tmp_path, uri, infra.postgres_url())
        try:
            system.start()
            calls, ledger = system.replica("calls"), system.replica("ledger")
            client = Client()
            load = Load(
                client,
                lambda: calls.base,
                lambda: ledger.base,
                calls=CALLS,
                applications=APPLICATIONS,
                suspended=SUSPENDED,
            )
            load.run()
            expected = load.expected()
            settle(system, expected)
            # The books can settle before the relays have published their last events (their
            # checkpoints trail the logs): wait for every event to be copied, then drained.
            wait_for(
                lambda: sum(doubler.copies.values()) >= system.events(),
                120,
                "every event of both logs published a second time",
            )
            doubler.wait_drained(60)
            for service in SERVICES:
                replica = system.replica(service)
                wait_for(
                    lambda replica=replica, service=service: (
                        duplicates(replica.base) >= doubler.handled_copies[service]
                    ),
                    60,
                    f"{service} dropped every copy",
                )
            settle(system, expected)

            found = examined(system, expected, client, figures)
            copies = sum(doubler.copies.values())
            figures.notes.append(
                f"published {copies} copies; the consumers dropped "
                f"{sum(duplicates(system.replica(s).base) for s in SERVICES)} repeats"
            )
            assert found.describe() == "nothing"
            assert copies >= figures.events  # every event of both logs went out twice
        finally:
            system.close()
            doubler.close()
