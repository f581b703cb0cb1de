"""The relay: the log is the outbox (ARCHITECTURE.md, "Publishing").

A relay reads its service's log after its checkpoint and publishes every event, in log order, to
the topic exchange `<service>.events` (declared exactly as nameko declares event exchanges), with
routing key = event type, so a plain nameko `@event_handler("<service>", "<type>")` elsewhere
consumes it. Every message carries the AMQP `user_id` of the relay's broker user, which RabbitMQ
checks against the connection: consumers use it to refuse events published in this service's
name by anyone else (shared/broker.py). Public event types also go, as CloudEvents 1.0 structured JSON, to `lavoro.public`.

Delivery is at-least-once and never loses an event: the channel is in confirm mode, a batch is
published and then confirmed as a whole (one wait per batch, not one round trip per message), and
the checkpoint moves only past events whose messages the broker confirmed. A nack, a confirm
timeout or a broken connection means: drop the connection, back off, reconnect and republish
from the checkpoint.

The relay wakes right after a commit (the log's in-process `on_commit` signal, and PostgreSQL
`LISTEN` on the log's notify channel for commits made by other processes) and polls every
`poll_interval` as a fallback. Among replicas only the holder of the leader lock
(`shared.leader`) publishes; the others wait and take over when it stops or dies.

The message body is the event exactly as stored (`RecordedEvent.to_json()`, not upcast), so a
consumer can check it against the hash chain; `schema_version` says its shape. The public
CloudEvent carries the upcast data passed through the type's public marshmallow schema, which
lets through only the fields it declares: personal data stays out because the schema does not
name it, never because a blacklist remembered it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import select
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import amqp
import psycopg2
import sqlalchemy as sa
import structlog
from cloudevents.core.bindings.rabbitmq import to_structured_event
from cloudevents.core.v1.event import CloudEvent
from marshmallow import Schema
from nameko.extensions import DependencyProvider
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from shared import failover
from shared import tables as t
from shared.broker import broker_user, client_properties, connection_name
from shared.clock import UTC
from shared.db import is_sqlite, write_transaction
from shared.dependencies import log_for
from shared.eventlog import EventLog
from shared.leader import LeaderLock, dedicated_connection, leader_lock
from shared.records import RecordedEvent

PUBLIC_EXCHANGE = "lavoro.public"
PERSISTENT = 2
_IDLE_READ = 0.01  # seconds a pass waits for frames the broker sent while the relay was idle


class PublishFailed(Exception):
    """The broker did not confirm a batch; the relay republishes from its checkpoint."""


class PublishRejected(PublishFailed):
    """The broker nacked a message (e.g. a full queue with `x-overflow: reject-publish`)."""


class ConfirmTimeout(PublishFailed):
    """No confirm for a published message within `confirm_timeout` seconds."""


# Failures the relay outlives by reconnecting; anything else is a bug and stops it loudly.
RETRYABLE: tuple[type[BaseException], ...] = (
    amqp.exceptions.AMQPError,
    OSError,
    PublishFailed,
    sa.exc.DBAPIError,
    psycopg2.Error,  # on the raw connections of the lock and of LISTEN
)


class Relay:
    """Publishes one service's log to RabbitMQ. See the module docstring for the guarantees."""

    def __init__(
        self,
        log: EventLog,
        amqp_uri: str,
        service: str,
        *,
        public: Mapping[str, Schema | type[Schema]] | None = None,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        checkpoint_name: str = "relay",
        public_exchange: str = PUBLIC_EXCHANGE,
        confirm_timeout: float = 30.0,
        lock: LeaderLock | None = None,
        lock_retry: float = 1.0,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        self.log = log
        self.amqp_uri = amqp_uri
        self.service = service
        self.exchange = f"{service}.events"
        self.public = {k: v() if isinstance(v, type) else v for k, v in (public or {}).items()}
        self.public_exchange = public_exchange
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.checkpoint_name = checkpoint_name
        self.confirm_timeout = confirm_timeout
        self.lock = lock or leader_lock(log.engine, f"{checkpoint_name}:{service}")
        self.lock_retry = lock_retry
        self.backoff = backoff
        # Set as client property, so an operator (or a test) can find it in `list_connections`.
        self.connection_name = connection_name("relay", service)
        # Stamped on every message; the broker refuses it unless it is the connection's user,
        # so a consumer can tell this service's events from anyone else's (shared/broker.py).
        self.user_id = broker_user(amqp_uri)
        self.published = 0  # events this object published and had confirmed
        self.reconnects = 0  # failed passes it recovered from
        self.state = "stopped"  # "standby" (waiting for the lock), "leading", "stopped"
        self._logger = structlog.get_logger("lavoro.relay").bind(
            service=service, relay=checkpoint_name
        )
        self._conn: amqp.Connection | None = None
        self._channel: Any = None
        self._node = 0  # which of AMQP_URI's nodes the relay connects to first
        self._next_tag = 1
        self._unconfirmed: set[int] = set()
        self._nacked: set[int] = set()
        self._pass_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._thread: threading.Thread | None = None
        self._listen_pipe: tuple[int, int] | None = None
        log.on_commit(self._on_commit)

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        """Run the relay in a thread of its own (a green thread under eventlet's patching)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._arm()
        self._thread = threading.Thread(target=self._run, name=self.connection_name, daemon=True)
        self._thread.start()

    def run_forever(self) -> None:
        """Lead (or wait to lead) and publish until `stop()`."""
        self._arm()
        self._run()

    def _arm(self) -> None:
        # Before the thread runs, so that a `stop()` coming right after is not forgotten.
        self._stop.clear()
        self._stopped.clear()

    def stop(self, timeout: float | None = 60.0) -> None:
        """Finish the batch in flight, release the lock and the connections, and return."""
        self._stop.set()
        self._wake.set()
        self._poke_listener()
        if threading.current_thread() is not self._thread:
            self._stopped.wait(timeout)

    def publish_pending(self) -> int:
        """One synchronous pass: publish everything after the checkpoint, return how many.

        It does not take the leader lock (`run_forever` does): callers are tests and the bench.
        A failure propagates after dropping the connection; the next call starts again from
        the checkpoint.
        """
        return self._guarded_pass(None)

    @property
    def is_leader(self) -> bool:
        return self.state == "leading"

    def checkpoint(self) -> int:
        with self.log.engine.connect() as conn:
            value = conn.execute(
                sa.select(t.checkpoints.c.position).where(
                    t.checkpoints.c.name == self.checkpoint_name
                )
            ).scalar()
        return int(value or 0)

    def lag(self) -> int:
        """Events in the log that the broker has not confirmed yet."""
        return self.log.head()[0] - self.checkpoint()

    def _run(self) -> None:
        listener = None
        if self.log.notify_channel and not is_sqlite(self.log.engine):
            listener = threading.Thread(target=self._listen, name="relay-listen", daemon=True)
            listener.start()
        try:
            while not self._stop.is_set():
                if not self._acquire():
                    break
                self.state = "leading"
                self._logger.info(
                    "relay.leading", lock=self.lock.name, checkpoint=self._checkpoint_or_none()
                )
                try:
                    self._lead()
                finally:
                    self.state = "standby"
                    self._disconnect(polite=True)
                    self.lock.release()
        except Exception:
            self._logger.exception("relay.crashed")
            raise
        finally:
            self._stop.set()
            self._poke_listener()
            if listener is not None:
                listener.join()
            self.state = "stopped"
            self._stopped.set()
            self._logger.info("relay.stopped", published=self.published)

    def _acquire(self) -> bool:
        self.state = "standby"
        attempt = 0
        while not self._stop.is_set():
            try:
                if self.lock.try_acquire():
                    return True
                self._logger.info("relay.standby", lock=self.lock.name)
                return self.lock.acquire(self._stop, self.lock_retry)
            except (sa.exc.DBAPIError, psycopg2.Error) as exc:
                attempt += 1
                self._logger.warning("relay.lock_error", error=str(exc), attempt=attempt)
                self._stop.wait(self._delay(attempt))
        return False

    def _lead(self) -> None:
        attempt = 0
        idle = False  # the last wait ended by the poll timer, not by a commit
        while not self._stop.is_set():
            if not self.lock.still_held():
                self._logger.warning("relay.lost_lock", lock=self.lock.name)
                return
            self._wake.clear()
            try:
                self._guarded_pass(self._stop, idle=idle)
                attempt = 0
            except RETRYABLE as exc:
                attempt += 1
                self.reconnects += 1
                delay = self._delay(attempt)
                self._logger.warning(
                    "relay.reconnect",
                    error=f"{type(exc).__name__}: {exc}",
                    attempt=attempt,
                    delay=delay,
                    checkpoint=self._checkpoint_or_none(),
                )
                self._stop.wait(delay)
                continue
            idle = not self._wake.wait(self.poll_interval)

    def _delay(self, attempt: int) -> float:
        low, high = self.backoff
        return float(min(high, low * 2 ** (attempt - 1)))

    def _checkpoint_or_none(self) -> int | None:
        try:
            return self.checkpoint()
        except (sa.exc.DBAPIError, psycopg2.Error):
            return None

    def _on_commit(self, _position: int) -> None:
        self._wake.set()

    # -- one pass ----------------------------------------------------------------------------

    def _guarded_pass(self, stop: threading.Event | None, *, idle: bool = False) -> int:
        with self._pass_lock:
            try:
                return self._pass(stop, idle)
            except BaseException:
                self._disconnect(polite=False)
                raise

    def _pass(self, stop: threading.Event | None, idle: bool = False) -> int:
        if self._conn is None:
            self._connect()
        elif idle:
            self._read_pending()
        after = self.checkpoint()
        total = 0
        while stop is None or not stop.is_set():
            events = self.log.read_page(after, self.batch_size, upcast=False)
            if not events:
                break
            self._publish_batch(events)
            after = events[-1].position
            total += len(events)
            if len(events) < self.batch_size:
                break
        return total

    def _publish_batch(self, events: list[RecordedEvent]) -> None:
        started = time.perf_counter()
        channel = self._channel
        last_tags: list[tuple[int, int]] = []  # (last delivery tag of an event, its position)
        for event in events:
            self._publish(channel, self._message(event), self.exchange, event.type)
            schema = self.public.get(event.type)
            if schema is not None:
                self._publish(
                    channel,
                    self._cloud_message(event, schema),
                    self.public_exchange,
                    f"{self.service}.{event.type}",
                )
            last_tags.append((self._next_tag - 1, event.position))
        self._await_confirms()

        # The checkpoint moves past an event only if it and everything before it is confirmed.
        unsafe = self._unconfirmed | self._nacked
        first_unsafe = min(unsafe) if unsafe else self._next_tag
        confirmed = [position for tag, position in last_tags if tag < first_unsafe]
        if confirmed:
            self._save_checkpoint(confirmed[-1])
            self.published += len(confirmed)
        self._logger.info(
            "relay.published",
            count=len(confirmed),
            first=events[0].position,
            last=confirmed[-1] if confirmed else None,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )
        if self._nacked:
            raise PublishRejected(f"broker nacked {len(self._nacked)} message(s)")
        if self._unconfirmed:
            raise ConfirmTimeout(f"{len(self._unconfirmed)} message(s) unconfirmed")

    def _publish(self, channel: Any, message: amqp.Message, exchange: str, key: str) -> None:
        # Count it unconfirmed before it leaves: py-amqp reads pending frames before each
        # publish, so the ack of an earlier message of this batch can arrive inside this call.
        self._unconfirmed.add(self._next_tag)
        self._next_tag += 1
        channel.basic_publish(message, exchange=exchange, routing_key=key)

    def _await_confirms(self) -> None:
        deadline = time.monotonic() + self.confirm_timeout
        while self._unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                self._conn.drain_events(timeout=remaining)  # type: ignore[union-attr]
            except TimeoutError:
                return

    def _on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {t for t in self._unconfirmed if t > tag}
        else:
            self._unconfirmed.discard(tag)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        hit = {t for t in self._unconfirmed if t <= tag} if multiple else {tag}
        self._unconfirmed -= hit
        self._nacked |= hit

    def _message(self, event: RecordedEvent) -> amqp.Message:
        # Nameko reads `nameko.`-prefixed headers into the handling worker's context, so the
        # correlation id travels on with whatever that worker does next.
        headers: dict[str, Any] = {"nameko.call_id_stack": [f"{self.service}.relay.{event.id}"]}
        if event.correlation_id:
            headers["nameko.correlation_id"] = event.correlation_id
        return amqp.Message(
            event.to_text().encode("utf-8"),
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=PERSISTENT,
            message_id=event.id,
            type=event.type,
            app_id=self.service,
            user_id=self.user_id,
            timestamp=int(event.recorded_at.timestamp()),
            application_headers=headers,
        )

    def _cloud_message(self, event: RecordedEvent, schema: Schema) -> amqp.Message:
        _, data = self.log.upcasters.upcast(event.type, event.schema_version, event.data)
        cloud = CloudEvent(
            {
                "specversion": "1.0",
                "id": event.id,
                "source": f"/lavoro/{self.service}",
                "type": f"it.bologna.lavoro.{self.service}.{event.type}",
                "time": event.occurred_at,
                "subject": event.stream,
                "datacontenttype": "application/json",
                "sequence": str(event.position),
            },
            schema.dump(data),
        )
        wire = to_structured_event(cloud)
        return amqp.Message(
            wire.body,
            content_type=wire.content_type,
            content_encoding="utf-8",
            delivery_mode=PERSISTENT,
            message_id=event.id,
            type=cloud.get_type(),
            app_id=self.service,
            user_id=self.user_id,
            timestamp=int(event.recorded_at.timestamp()),
            application_headers=dict(wire.headers),
        )

    def _save_checkpoint(self, position: int) -> None:
        insert = (sqlite_insert if is_sqlite(self.log.engine) else pg_insert)(t.checkpoints)
        statement = insert.values(
            name=self.checkpoint_name, position=position, updated_at=dt.datetime.now(UTC)
        )
        statement = statement.on_conflict_do_update(
            index_elements=[t.checkpoints.c.name],
            set_={
                "position": statement.excluded.position,
                "updated_at": statement.excluded.updated_at,
            },
            # Never backwards, even if a deposed leader confirms a late batch.
            where=t.checkpoints.c.position < statement.excluded.position,
        )
        with write_transaction(self.log.engine) as conn:
            conn.execute(statement)

    # -- broker connection -------------------------------------------------------------------

    def _connect(self) -> None:
        # AMQP_URI may list a cluster's nodes: start with the one that served last.
        conn, self._node = failover.connect(
            self.amqp_uri,
            first=self._node,
            connect_timeout=10,
            client_properties=client_properties(self.connection_name),
        )
        try:
            channel = conn.channel()
            # Exactly nameko's event exchange (nameko.standalone.events.get_event_exchange): a
            # different declaration would fail with PRECONDITION_FAILED in whichever came second.
            channel.exchange_declare(self.exchange, "topic", durable=True, auto_delete=False)
            if self.public:
                channel.exchange_declare(
                    self.public_exchange, "topic", durable=True, auto_delete=False
                )
            channel.confirm_select()
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
        except BaseException:
            conn.collect()
            raise
        self._conn, self._channel = conn, channel
        self._next_tag = 1  # delivery tags count from 1 on every channel put in confirm mode
        self._unconfirmed, self._nacked = set(), set()
        self._logger.info(
            "relay.connected",
            connection_name=self.connection_name,
            node=failover.describe(failover.nodes(self.amqp_uri)[self._node]),
        )

    def _read_pending(self) -> None:
        """Read what the broker sent while the relay was idle (a pass after a quiet poll
        interval). A relay with nothing to publish reads nothing, so without this it would not
        see the broker close its connection (an operator's `close_connection`, a node going
        down) until its next event. A close raises here, and the relay reconnects. A busy relay
        reads the broker at every batch's confirms and needs no such look."""
        assert self._conn is not None
        try:
            while True:
                self._conn.drain_events(timeout=_IDLE_READ)
        except TimeoutError:
            return  # nothing more waiting: the connection is alive

    def _disconnect(self, *, polite: bool) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is None:
            return
        if polite:
            try:
                conn.close()
                return
            except RETRYABLE:  # the broker is gone already: tear down locally below
                pass
        conn.collect()

    # -- cross-process wake-up (PostgreSQL LISTEN) ----------------------------------------------

    def _listen(self) -> None:
        channel = (self.log.notify_channel or "").replace('"', '""')
        read_end, write_end = self._listen_pipe = os.pipe()
        attempt = 0
        try:
            while not self._stop.is_set():
                conn: Any = None
                try:
                    conn = dedicated_connection(self.log.engine)
                    with conn.cursor() as cur:
                        cur.execute(f'LISTEN "{channel}"')
                    attempt = 0
                    self._wake.set()  # commits made while nobody listened
                    while not self._stop.is_set():
                        readable, _, _ = select.select([conn, read_end], [], [])
                        if conn in readable:
                            conn.poll()
                            if conn.notifies:
                                conn.notifies.clear()
                                self._wake.set()
                except RETRYABLE as exc:
                    # The session broke (server restart, network): listen again, after a pause.
                    attempt += 1
                    self._logger.warning("relay.listen_error", error=str(exc), attempt=attempt)
                    self._stop.wait(self._delay(attempt))
                finally:
                    if conn is not None:
                        conn.close()
        finally:
            self._listen_pipe = None
            os.close(read_end)
            os.close(write_end)

    def _poke_listener(self) -> None:
        pipe = self._listen_pipe
        if pipe is not None:
            # Closed in the meantime: the listener is finishing anyway.
            with contextlib.suppress(OSError):
                os.write(pipe[1], b"x")


def service_log(container: Any) -> EventLog:
    """The service's own EventLog, from its `EventStore` dependency (shared/dependencies.py):
    sharing that one object is what lets a commit wake the relay in-process."""
    return log_for(container)


class RelayExtension(DependencyProvider):
    """Runs the service's relay inside its nameko process: started with the container, stopped
    (after its batch in flight) with it. A worker gets the Relay (for `lag()` in a health check).

    `log_factory(container) -> EventLog` gives it the service's log. The default,
    `service_log`, takes the EventLog of the service's `EventStore`, so both share one object
    and each commit wakes the relay in-process (NOTIFY wakes it from other processes). A factory
    that builds a log of its own works too, woken by NOTIFY (PostgreSQL) and polling only.
    """

    def __init__(
        self,
        log_factory: Callable[[Any], EventLog] | None = None,
        *,
        public: Mapping[str, Schema | type[Schema]] | None = None,
        **options: Any,
    ) -> None:
        self.log_factory = log_factory or service_log
        self.public = public
        self.options = options
        self.relay: Relay | None = None

    def setup(self) -> None:
        self.relay = Relay(
            self.log_factory(self.container),
            self.container.config["AMQP_URI"],
            self.container.service_name,
            public=self.public,
            **self.options,
        )

    def start(self) -> None:
        assert self.relay is not None
        self.relay._arm()
        self.container.spawn_managed_thread(self.relay._run, identifier="relay")

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()

    def kill(self) -> None:
        if self.relay is not None:
            self.relay.stop(timeout=0)

    def get_dependency(self, worker_ctx: Any) -> Relay | None:
        return self.relay
