"""The relay on the real broker, over SQLite and PostgreSQL: order and content of the messages,
confirms before checkpoints, recovery from a nack and from a killed connection, wake-up latency,
CloudEvents without personal data, one leader among replicas, and the nameko extension."""

import json
import subprocess
import threading

import amqp
import eventlet
import marshmallow as ma
import pytest
from cloudevents.core.bindings.rabbitmq import RabbitMQMessage, from_structured_event
from kombu.utils.url import parse_url
from nameko.contextdata import ContextDataProvider
from nameko.events import event_handler
from nameko.testing.utils import get_extension

from shared.broker import broker_user
from shared.clock import parse_ts
from shared.dependencies import EventStore, log_for
from shared.eventlog import EventLog
from shared.leader import leader_lock
from shared.records import NewEvent
from shared.relay import PUBLIC_EXCHANGE, PublishRejected, Relay, RelayExtension
from tests.helpers import rabbitmq_connection_pids, wait_for


def ev(type_="thing_happened", **data):
    return NewEvent(type_, data or {"n": 1})


class Broker:
    """The test's own AMQP connection: taps exchanges with queues it deletes at the end."""

    def __init__(self, uri):
        parts = parse_url(uri)
        self.conn = amqp.Connection(
            f"{parts['hostname']}:{parts['port'] or 5672}",
            userid=parts["userid"] or "guest",
            password=parts["password"] or "guest",
            virtual_host=parts["virtual_host"] or "/",
        )
        self.conn.connect()
        self.channel = self.conn.channel()
        self.queues, self.exchanges, self.shared_exchanges = [], [], []

    def tap(self, exchange, routing_key="#", arguments=None, own_exchange=True):
        # Declared as the relay declares it: a mismatch would fail one of the two declarations.
        self.channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        owned = self.exchanges if own_exchange else self.shared_exchanges
        if exchange not in owned:
            owned.append(exchange)
        queue, _, _ = self.channel.queue_declare(
            "", exclusive=True, auto_delete=False, arguments=arguments or {}
        )
        self.channel.queue_bind(queue, exchange, routing_key)
        self.queues.append(queue)
        return queue

    def take(self, queue, count=None, timeout=5.0):
        """Every message now in `queue`; with `count`, wait until that many arrived."""
        got = []

        def drained():
            while (message := self.channel.basic_get(queue, no_ack=True)) is not None:
                got.append(message)
            return count is None or len(got) >= count

        wait_for(drained, timeout, f"{count} messages in {queue}")
        return got

    def close(self):
        for queue in self.queues:
            self.channel.queue_delete(queue)
        for exchange in self.exchanges:
            self.channel.exchange_delete(exchange)
        for exchange in self.shared_exchanges:
            # Other services' queues may be bound to a shared exchange: delete it only if unused.
            channel = self.conn.channel()
            try:
                channel.exchange_delete(exchange, if_unused=True)
                channel.close()
            except amqp.exceptions.PreconditionFailed:
                pass  # in use: the broker closed the channel, the exchange stays
        self.conn.close()


@pytest.fixture
def broker(amqp_uri):
    broker = Broker(amqp_uri)
    yield broker
    broker.close()


@pytest.fixture
def relays():
    started = []
    yield started.append
    for relay in started:
        relay.stop()


def bodies(messages):
    return [json.loads(m.body) for m in messages]


def test_publishes_each_event_in_log_order_persistent_with_its_id_and_type(
    log, amqp_uri, unique, broker
):
    queue = broker.tap(f"{unique}.events")
    log.append("call-1", 0, [ev("call_opened", n=1), ev("call_scored", n=2)], correlation_id="c-1")
    log.append("call-2", 0, [ev("call_opened", n=3)])
    log.append("call-1", 2, [ev("call_closed", n=4), ev("call_scored", n=5)])
    relay = Relay(log, amqp_uri, unique, batch_size=2)

    assert relay.lag() == 5
    assert relay.publish_pending() == 5
    messages = broker.take(queue, 5)

    events = list(log.read_all())
    assert bodies(messages) == [e.to_json() for e in events]
    assert [m.delivery_info["routing_key"] for m in messages] == [e.type for e in events]
    assert {m.delivery_info["exchange"] for m in messages} == {f"{unique}.events"}
    assert [m.properties["message_id"] for m in messages] == [e.id for e in events]
    assert {m.properties["delivery_mode"] for m in messages} == {2}
    assert {m.properties["content_type"] for m in messages} == {"application/json"}
    # The broker user the relay published as, which RabbitMQ checked (shared/broker.py).
    assert {m.properties["user_id"] for m in messages} == {broker_user(amqp_uri)}
    assert messages[0].headers["nameko.correlation_id"] == "c-1"
    assert relay.checkpoint() == 5 and relay.lag() == 0
    assert relay.publish_pending() == 0
    assert broker.take(queue) == []


class CorrelationId(ContextDataProvider):
    context_key = "correlation_id"


def test_a_plain_nameko_event_handler_consumes_what_it_publishes(
    log, amqp_uri, unique, broker, container_factory
):
    received = []

    class Listener:
        name = f"{unique}_listener"
        correlation_id = CorrelationId()

        @event_handler(unique, "grant_awarded")
        def on_grant_awarded(self, payload):
            received.append((payload, self.correlation_id))

    # nameko declares `<unique>.events` first: the relay's declaration must be equivalent.
    container = container_factory(Listener, {"AMQP_URI": amqp_uri})
    container.start()
    broker.queues.append(f"evt-{unique}-grant_awarded--{unique}_listener.on_grant_awarded")
    broker.exchanges.append(f"{unique}.events")
    log.append("grant-1", 0, [ev("grant_awarded", amount="1200.00")], correlation_id="corr-7")
    relay = Relay(log, amqp_uri, unique)
    assert relay.publish_pending() == 1

    wait_for(lambda: received, 5, "the nameko handler to run")
    container.stop()
    ((payload, correlation_id),) = received
    assert payload == next(log.read_all()).to_json()
    assert payload["data"] == {"amount": "1200.00"}
    assert correlation_id == "corr-7"


def test_the_checkpoint_moves_only_after_the_broker_confirms(log, amqp_uri, unique, broker):
    queue = broker.tap(f"{unique}.events")
    relay = Relay(log, amqp_uri, unique, batch_size=4)
    assert relay.publish_pending() == 0  # connects, publishes nothing
    seen = []  # (acked delivery tag, checkpoint in the database when the ack arrived)
    relay._channel.events["basic_ack"].add(
        lambda tag, multiple: seen.append((tag, relay.checkpoint()))
    )
    for n in range(10):
        log.append(f"s-{n % 3}", -1, [ev(n=n)])

    assert relay.publish_pending() == 10
    # Without a public schema delivery tag k is the message of position k.
    assert seen and all(checkpoint < tag for tag, checkpoint in seen)
    assert {checkpoint for _, checkpoint in seen} <= {0, 4, 8}
    assert relay.checkpoint() == 10
    assert len(broker.take(queue, 10)) == 10


def test_a_nack_keeps_the_checkpoint_and_the_next_pass_delivers_the_rest(
    log, amqp_uri, unique, broker
):
    # A queue that refuses a third message makes the broker nack it (x-overflow: reject-publish).
    full = broker.tap(
        f"{unique}.events", arguments={"x-max-length": 2, "x-overflow": "reject-publish"}
    )
    for n in range(5):
        log.append("s", n, [ev(n=n)])
    relay = Relay(log, amqp_uri, unique)

    with pytest.raises(PublishRejected):
        relay.publish_pending()
    assert relay.checkpoint() == 2 and relay.lag() == 3
    assert [b["position"] for b in bodies(broker.take(full, 2))] == [1, 2]

    broker.channel.queue_delete(full)
    queue = broker.tap(f"{unique}.events")
    assert relay.publish_pending() == 3
    assert [b["position"] for b in bodies(broker.take(queue, 3))] == [3, 4, 5]
    assert relay.checkpoint() == 5


def test_a_killed_broker_connection_loses_nothing_and_keeps_each_stream_in_order(
    log, amqp_uri, unique, broker, relays
):
    queue = broker.tap(f"{unique}.events")
    relay = Relay(log, amqp_uri, unique, batch_size=25, poll_interval=0.5, backoff=(0.05, 0.5))
    relays(relay)
    relay.start()
    log.append("s-0", 0, [ev(n=0)])
    wait_for(lambda: relay.checkpoint() == 1, 5, "the first event published")
    (pid,) = rabbitmq_connection_pids(relay.connection_name)

    killed = threading.Event()

    def write(count, until=None):
        for n in range(count):
            if until is not None and until.is_set():
                return
            log.append(f"s-{n % 3}", -1, [ev(n=n), ev(n=n)])
            eventlet.sleep(0)  # a yield, not a wait: let the relay publish while we write

    # The connection dies while a writer keeps the relay busy; more events follow the kill, so
    # the relay must notice it, reconnect and republish from its checkpoint.
    writer = threading.Thread(target=write, args=(5000, killed))
    writer.start()
    wait_for(lambda: relay.checkpoint() > 50, 5, "the relay to be busy")
    subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "test kill"], check=True)
    killed.set()
    writer.join()
    write(10)
    head = log.head()[0]
    wait_for(lambda: relay.checkpoint() == head, 15, "the relay to catch up")
    relay.stop()

    assert relay.reconnects >= 1
    delivered = bodies(broker.take(queue))
    positions = [b["position"] for b in delivered]
    assert set(positions) == set(range(1, head + 1))  # at least once, none lost
    first_seen = list(dict.fromkeys(positions))
    assert first_seen == sorted(first_seen)
    for stream in {b["stream"] for b in delivered}:
        versions = [b["version"] for b in delivered if b["stream"] == stream]
        assert list(dict.fromkeys(versions)) == list(range(1, max(versions) + 1))


def test_a_commit_wakes_the_relay_long_before_its_poll_interval(
    log, amqp_uri, unique, broker, relays
):
    queue = broker.tap(f"{unique}.events")
    log.append("s", 0, [ev(n=1)])
    relay = Relay(log, amqp_uri, unique, poll_interval=30)
    relays(relay)
    relay.start()
    broker.take(queue, 1)  # published by the first pass; now the relay sleeps for 30 s

    log.append("s", 1, [ev(n=2)])
    (message,) = broker.take(queue, 1, timeout=5)
    assert json.loads(message.body)["position"] == 2


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_commit_in_another_process_wakes_it_through_listen_notify(
    engine, amqp_uri, unique, broker, relays
):
    channel = f"{unique}_events"
    relay_log = EventLog(engine, notify_channel=channel)
    # Another EventLog object: its commits never reach the relay's in-process signal.
    writer_log = EventLog(engine, notify_channel=channel)
    queue = broker.tap(f"{unique}.events")
    writer_log.append("s", 0, [ev(n=1)])
    relay = Relay(relay_log, amqp_uri, unique, poll_interval=30)
    relays(relay)
    relay.start()
    broker.take(queue, 1)

    writer_log.append("s", 1, [ev(n=2)])
    (message,) = broker.take(queue, 1, timeout=5)
    assert json.loads(message.body)["position"] == 2


class GrantAwardedPublic(ma.Schema):
    call_id = ma.fields.String()
    amount = ma.fields.String()


def test_public_types_also_go_out_as_cloudevents_without_personal_data(
    log, amqp_uri, unique, broker
):
    public = broker.tap(PUBLIC_EXCHANGE, f"{unique}.#", own_exchange=False)
    internal = broker.tap(f"{unique}.events")
    private_data = {"call_id": "call-9", "amount": "1200.00", "tax_code": "RSSMRA80A01A944X"}
    log.append("grant-1", 0, [ev("grant_awarded", **private_data), ev("grant_noted", n=1)])
    relay = Relay(log, amqp_uri, unique, public={"grant_awarded": GrantAwardedPublic()})
    assert relay.publish_pending() == 2

    assert len(broker.take(internal, 2)) == 2
    (message,) = broker.take(public, 1)
    assert broker.take(public) == []  # grant_noted is not public
    awarded = next(log.read_all())
    assert message.delivery_info["routing_key"] == f"{unique}.grant_awarded"
    assert message.properties["content_type"] == "application/cloudevents+json"
    assert message.properties["message_id"] == awarded.id
    assert message.properties["delivery_mode"] == 2
    assert message.properties["user_id"] == broker_user(amqp_uri)
    assert "RSSMRA" not in message.body and "tax_code" not in message.body
    body = json.loads(message.body)
    assert body["specversion"] == "1.0"
    assert body["type"] == f"it.bologna.lavoro.{unique}.grant_awarded"
    assert body["source"] == f"/lavoro/{unique}"
    assert body["id"] == awarded.id and body["subject"] == "grant-1"
    assert parse_ts(body["time"]) == awarded.occurred_at
    assert body["data"] == {"call_id": "call-9", "amount": "1200.00"}
    parsed = from_structured_event(
        RabbitMQMessage(
            headers={}, content_type=message.properties["content_type"], body=message.body
        )
    )
    assert parsed.get_id() == awarded.id and parsed.get_data() == body["data"]


def test_one_relay_leads_and_a_standby_takes_over_when_it_stops(
    log, amqp_uri, unique, broker, relays
):
    queue = broker.tap(f"{unique}.events")
    first = Relay(log, amqp_uri, unique, poll_interval=0.2, lock_retry=0.02)
    second = Relay(log, amqp_uri, unique, poll_interval=0.2, lock_retry=0.02)
    relays(first)
    relays(second)
    first.start()
    wait_for(lambda: first.is_leader, 5, "the first relay to lead")
    second.start()
    wait_for(lambda: second.state == "standby", 5, "the second relay to wait")
    for n in range(5):
        log.append(f"s-{n % 2}", -1, [ev(n=n)])
    wait_for(lambda: first.checkpoint() == 5, 5, "the leader to publish")
    assert second.state == "standby" and second.published == 0 and first.published == 5

    first.stop()
    assert first.state == "stopped"
    wait_for(lambda: second.is_leader, 5, "the standby to take over")
    for n in range(5, 10):
        log.append(f"s-{n % 2}", -1, [ev(n=n)])
    wait_for(lambda: second.checkpoint() == 10, 5, "the new leader to publish")
    assert second.published == 5
    assert [b["position"] for b in bodies(broker.take(queue, 10))] == list(range(1, 11))


def test_the_nameko_extension_runs_the_relay_with_the_service(
    log, amqp_uri, unique, broker, container_factory
):
    class Publisher:
        name = unique
        relay = RelayExtension(lambda container: log, poll_interval=0.2)

    queue = broker.tap(f"{unique}.events")
    container = container_factory(Publisher, {"AMQP_URI": amqp_uri})
    container.start()
    relay = get_extension(container, RelayExtension).relay
    wait_for(lambda: relay.is_leader, 5, "the service's relay to lead")
    log.append("s", 0, [ev(n=1)])
    (message,) = broker.take(queue, 1)
    assert json.loads(message.body)["stream"] == "s"

    container.stop()
    assert relay.state == "stopped" and relay.lag() == 0
    lock = leader_lock(log.engine, f"relay:{unique}")
    assert lock.try_acquire()  # released with the service
    lock.release()


def test_without_a_signal_the_relay_finds_new_events_by_polling(
    log, amqp_uri, unique, broker, relays
):
    queue = broker.tap(f"{unique}.events")
    log.append("s", 0, [ev(n=1)])
    relay = Relay(log, amqp_uri, unique, poll_interval=0.1)
    relays(relay)
    relay.start()
    broker.take(queue, 1)  # the first pass is over

    # Another EventLog object without a NOTIFY channel: nothing wakes the relay.
    EventLog(log.engine).append("s", 1, [ev(n=2)])
    (message,) = broker.take(queue, 1, timeout=5)
    assert json.loads(message.body)["position"] == 2


def test_by_default_the_extension_relays_the_log_of_the_services_event_store(
    tmp_path, amqp_uri, unique, broker, container_factory
):
    class Publisher:
        name = unique
        store = EventStore()
        relay = RelayExtension(poll_interval=30)

    queue = broker.tap(f"{unique}.events")
    config = {"AMQP_URI": amqp_uri, "DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}"}
    container = container_factory(Publisher, config)
    container.start()
    relay = get_extension(container, RelayExtension).relay
    wait_for(lambda: relay.is_leader, 5, "the service's relay to lead")
    assert relay.log is log_for(container)

    # One EventLog object for the store and the relay: the commit wakes it, long before 30 s.
    log_for(container).append("s", 0, [ev(n=1)])
    (message,) = broker.take(queue, 1, timeout=5)
    assert json.loads(message.body)["position"] == 1
    container.stop()
