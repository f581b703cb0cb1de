"""Consuming other services' events: one queue per source, in order per stream, exactly once in effect.

```
class Ledger:
    name = "ledger"
    store = EventStore()

    @handles("calls", "grant_awarded", "tranche_requested")
    def on_call_event(self, event: IncomingEvent) -> None: ...
```

- One durable quorum queue per (this service, source service), `<service>.from.<source>`, bound
  to `<source>.events` once per event type handled (shared/queues.py).
- Inside the process, events of one source stream run one after another, in arrival order (one
  lane, a greenthread, per stream); different streams run in parallel, up to `max_workers`.
- A handler's writes through the EventStore and the event's `inbox` row commit in one transaction
  after it returns; a delivery whose id is in the inbox is acknowledged and skipped.
- An event of a stream older than one already handled, and not in the inbox, is out of order: it
  is logged as an error, counted, and parked (never handled behind the newer ones' back).
- With `LAVORO_SOURCE_USERS` (source -> broker user), an event whose AMQP `user_id` is not its
  source's user is refused before anything else: a `dead_letters` row with status `refused` and
  the reason, a copy in `<service>.dlq`, an error line; it never runs and holds no stream
  (shared/broker.py).
- A failing event is retried in place with exponential backoff, holding its stream, then parked:
  a `dead_letters` row and a copy in `<service>.dlq`, then the original is acknowledged. Later
  events of that stream are parked behind it until an operator retries or skips it
  (shared/dlq.py); the service then replays the released events from the table, in order
  (shared/redelivery.py).

Container config: `LAVORO_SOURCE_USERS` (unset: every publisher accepted, as in development with
one broker user), `LAVORO_RETRY_ATTEMPTS` (5 tries), `LAVORO_RETRY_BASE_DELAY` (0.5 s, doubled
each try), `LAVORO_RETRY_MAX_DELAY` (30 s), `LAVORO_PREFETCH_COUNT` (10 × max_workers),
`LAVORO_REPLAY_POLL_INTERVAL` (2 s: how soon released dead letters of a quiet stream replay).
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import traceback
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import amqp.exceptions
import eventlet
import kombu.exceptions
import sqlalchemy as sa
import structlog
from eventlet.event import Event
from nameko.amqp.publish import UndeliverableMessage
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.exceptions import ContainerBeingKilled
from nameko.extensions import Entrypoint, SharedExtension
from sqlalchemy.engine import Connection
from structlog.contextvars import bound_contextvars

from shared import dlq, inbox
from shared.broker import impostor, source_users
from shared.contracts import BrokenContract
from shared.dependencies import ACTOR_KEY, CAUSATION_KEY, CORRELATION_KEY, EventStore, store_for
from shared.queues import EventQueueConsumer, SourceQueue, queue_name
from shared.records import IncomingEvent, MalformedEvent
from shared.redelivery import Redelivery

__all__ = ["handles", "HandlesEntrypoint", "queue_name", "consumer_stats"]

RETRY_ATTEMPTS_KEY = "LAVORO_RETRY_ATTEMPTS"
RETRY_BASE_DELAY_KEY = "LAVORO_RETRY_BASE_DELAY"
RETRY_MAX_DELAY_KEY = "LAVORO_RETRY_MAX_DELAY"
REPLAY_POLL_KEY = "LAVORO_REPLAY_POLL_INTERVAL"
DEFAULT_RETRY_ATTEMPTS = 5
DEFAULT_RETRY_BASE_DELAY = 0.5
DEFAULT_RETRY_MAX_DELAY = 30.0
DEFAULT_REPLAY_POLL = 2.0
UNKNOWN_STREAM = "(malformed)"

# The database or the broker is away for a moment: wait and try again, never drop the event.
_TRANSIENT = (
    sa.exc.DBAPIError,
    sa.exc.TimeoutError,
    OSError,
    amqp.exceptions.ConnectionError,
    kombu.exceptions.OperationalError,
    UndeliverableMessage,
)
_log = structlog.get_logger("lavoro.consumer")
T = TypeVar("T")


class _Stopping(Exception):
    """The container is stopping: leave the event unacknowledged for the broker to redeliver."""


@dataclasses.dataclass
class _Item:
    source: str
    stream: str
    message: Any = None  # kombu Message; None for a replay of released dead letters
    body: Any = None
    event: IncomingEvent | None = None
    malformed: str | None = None
    replay: bool = False


@dataclasses.dataclass(frozen=True)
class _Outcome:
    status: str  # handled | duplicate | failed
    error: str | None = None


class EventDispatcher(SharedExtension):
    """One per container: owns the source queues, the per-stream lanes, retries and parking."""

    queue_consumer = EventQueueConsumer()

    def __init__(self) -> None:
        self._sources: dict[str, SourceQueue] = {}
        self._live: set[HandlesEntrypoint] = set()
        self._lanes: dict[tuple[str, str], collections.deque[_Item]] = {}
        self._lane_threads: dict[tuple[str, str], Any] = {}
        self._stopping = False
        self._stopped = False
        self._wake = Event()
        self._store: EventStore | None = None
        self._dead_letters: dlq.DeadLetterOffice | None = None
        self._source_users: dict[str, str] = {}
        self.stats: collections.Counter[str] = collections.Counter()
        self._redelivery = Redelivery(self)
        super().__init__()

    # -- lifecycle -----------------------------------------------------------------------------

    def register(self, entrypoint: HandlesEntrypoint) -> None:
        source = self._sources.get(entrypoint.source)
        if source is None:
            source = self._sources[entrypoint.source] = SourceQueue(self, entrypoint.source)
            self.queue_consumer.register_provider(source)
        for type_ in entrypoint.types:
            other = source.routes.get(type_)
            if other is not None and other is not entrypoint:
                raise ValueError(
                    f"{entrypoint.source}/{type_} is handled by both {other.method_name} and "
                    f"{entrypoint.method_name}"
                )
            source.routes[type_] = entrypoint
        self._live.add(entrypoint)

    def unregister(self, entrypoint: HandlesEntrypoint) -> None:
        # Routes stay until the last entrypoint stops: an event must never find its type unrouted
        # because its handler stopped a moment before another one.
        self._live.discard(entrypoint)
        if not self._live:
            self._shut_down()

    def setup(self) -> None:
        self._source_users = source_users(self.container.config)
        self._store = store_for(self.container)
        log = self._store.ensure_log()
        self._dead_letters = dlq.DeadLetterOffice(
            log.engine,
            self.container.service_name,
            self.container.config[AMQP_URI_CONFIG_KEY],
            log.clock,
        )

    def start(self) -> None:
        self.office().declare()
        self.container.spawn_managed_thread(self._poll_releases, identifier="dlq replay poller")

    def stop(self) -> None:
        self._shut_down()

    def kill(self) -> None:
        self._stopping = True
        if not self._wake.ready():
            self._wake.send(None)

    def _shut_down(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.kill()
        # Let each lane finish (and acknowledge) the event in hand; what is still queued in a lane
        # stays unacknowledged and comes back from the broker, in order, on the next start.
        for thread in list(self._lane_threads.values()):
            thread.wait()
        # Each removal waits for a turn of the consuming loop: ask for all at once.
        removals = [
            eventlet.spawn(self.queue_consumer.unregister_provider, source)
            for source in self._sources.values()
        ]
        for removal in removals:
            removal.wait()

    def _config(self, key: str, default: float) -> float:
        value = self.container.config.get(key)
        return default if value is None else float(value)

    # Methods, not properties: nameko reads every attribute of an extension before it is bound.
    def _engine(self) -> Any:
        assert self._store is not None
        return self._store.engine()

    def office(self) -> dlq.DeadLetterOffice:
        assert self._dead_letters is not None
        return self._dead_letters

    def route(self, source: str, type_: str) -> HandlesEntrypoint | None:
        return self._sources[source].routes.get(type_)

    # -- arrival: synchronous, in the consuming greenthread ------------------------------------

    def receive(self, source: str, body: Any, message: Any, malformed: str | None = None) -> None:
        if self._stopping:
            return  # unacknowledged: the broker gives it to the next consumer
        item = _Item(source, UNKNOWN_STREAM, message=message, body=body, malformed=malformed)
        if malformed is None:
            try:
                item.event = IncomingEvent.from_body(source, body)
                item.stream = item.event.stream
            except MalformedEvent as exc:
                item.malformed = str(exc)
        if item.event is None and isinstance(body, dict) and isinstance(body.get("stream"), str):
            item.stream = body["stream"]  # an unreadable event still holds its stream
        self._enqueue(item)

    def _enqueue(self, item: _Item) -> None:
        key = (item.source, item.stream)
        self._lanes.setdefault(key, collections.deque()).append(item)
        if key not in self._lane_threads:
            self._lane_threads[key] = self.container.spawn_managed_thread(
                partial(self._run_lane, key), identifier=f"lane {key[0]}/{key[1]}"
            )

    def enqueue_replay(self, source: str, stream: str) -> None:
        self._enqueue(_Item(source, stream, replay=True))

    def _poll_releases(self) -> None:
        """Replay released events of streams that get no new event to trigger it."""
        try:
            self._redelivery.poll(self._sources, self._config(REPLAY_POLL_KEY, DEFAULT_REPLAY_POLL))
        except _Stopping:
            return

    # -- one lane per stream -------------------------------------------------------------------

    def _run_lane(self, key: tuple[str, str]) -> None:
        lane = self._lanes[key]
        try:
            while lane and not self._stopping:
                item = lane.popleft()
                with bound_contextvars(**_log_fields(self.container.service_name, item)):
                    self._process(item)
        except _Stopping:
            pass
        finally:
            # No yield between the emptiness check in the loop and here: an item enqueued
            # meanwhile would have found this lane alive.
            del self._lane_threads[key]
            if not lane:
                del self._lanes[key]

    def _process(self, item: _Item) -> None:
        if item.replay:
            self._redelivery.replay_queued(item.source, item.stream)
            return
        refusal = self._impostor(item)
        if refusal is not None:
            # Not the source's event at all: recorded and copied for people to see, but it
            # holds no stream (a forger must not be able to stop a real one).
            self._park_new(item, refusal, attempts=0, counter="refused", status=dlq.REFUSED)
            return
        if item.event is None:
            self._park_new(item, f"malformed: {item.malformed}", attempts=0, counter="malformed")
            return
        event = item.event
        route = self.route(event.source, event.type)
        if route is None:
            # A binding left from an older version of this service: nothing here handles it.
            _log.warning("event has no handler here; acknowledged unhandled")
            self.stats["unrouted"] += 1
            self._ack(item)
            return
        while True:
            standing = self.steadily("reading the inbox", partial(self._standing, event))
            if standing.handled or standing.dead_letter in (dlq.PARKED, dlq.SKIPPED):
                _log.info("event seen before; acknowledged", seen=standing.dead_letter or "handled")
                self.stats["duplicate"] += 1
                self._ack(item)
                return
            if standing.dead_letter == dlq.RETRYING:
                # A copy of a released event: the replay from the table handles it, in order.
                self._ack(item)
                return
            if not standing.released:
                break
            # Released events of the stream go first; then look again.
            self._redelivery.replay(event.source, event.stream)
        if standing.blocker is not None:
            head = standing.blocker
            self._park_new(item, dlq.behind_error(head), attempts=0, counter="parked_behind")
            return
        last = standing.last_position
        if last is not None and event.position < last:
            self.stats["out_of_order"] += 1
            _log.error("event out of order", last_handled_position=last)
            error = f"out of order: position {event.position} after {last} of this stream"
            self._park_new(item, error, attempts=0, counter="parked")
            return
        outcome, attempts = self.attempts(route, event)
        if outcome.status == "failed":
            assert outcome.error is not None
            self._park_new(item, outcome.error, attempts=attempts, counter="parked")
            return
        self._ack(item)

    def _impostor(self, item: _Item) -> str | None:
        """Why the message is refused as not published by its source's broker user, if it is."""
        if item.message is None:
            return None
        expected = self._source_users.get(item.source)
        return impostor(item.source, expected, item.message.properties.get("user_id"))

    def _standing(self, event: IncomingEvent) -> inbox.Standing:
        with self._engine().connect() as conn:
            return inbox.standing(conn, event)

    # -- handling, with retries in place -------------------------------------------------------

    def attempts(
        self, route: HandlesEntrypoint, event: IncomingEvent, letter: dlq.DeadLetter | None = None
    ) -> tuple[_Outcome, int]:
        tries = int(self._config(RETRY_ATTEMPTS_KEY, DEFAULT_RETRY_ATTEMPTS))
        base = self._config(RETRY_BASE_DELAY_KEY, DEFAULT_RETRY_BASE_DELAY)
        ceiling = self._config(RETRY_MAX_DELAY_KEY, DEFAULT_RETRY_MAX_DELAY)
        outcome = _Outcome("failed", "not attempted")
        try:
            args = self._arguments(route, event)
        except BrokenContract as broken:
            # Retrying cannot mend a payload: parked at once, with the reason.
            self.stats["broken_contract"] += 1
            return _Outcome("failed", f"BrokenContract: {broken}"), 1
        for attempt in range(1, max(tries, 1) + 1):
            outcome = self._run_worker(route, args, letter)
            if outcome.status == "handled":
                self.stats["handled"] += 1
                _log.info("event handled", attempts=attempt)
                return outcome, attempt
            if outcome.status == "duplicate":
                self.stats["duplicate"] += 1
                _log.info("event handled by another delivery; rolled back")
                return outcome, attempt
            if attempt < tries:
                delay = min(base * 2 ** (attempt - 1), ceiling)
                self.stats["retries"] += 1
                _log.warning(
                    "event failed; retrying",
                    attempt=attempt,
                    delay=delay,
                    error=_first_line(outcome.error),
                )
                self.pause(delay)
        return outcome, max(tries, 1)

    def _arguments(self, route: HandlesEntrypoint, event: IncomingEvent) -> tuple[Any, ...]:
        """The handler's arguments: the event, and, when the service declares contracts for the
        source, its payload loaded with the contract (the typed value the handler decides on)."""
        contracts = self._store.contracts if self._store is not None else None
        if contracts is None or route.contract_source not in contracts.consumed:
            return (event,)
        message = contracts.incoming(
            route.contract_source, event.type, event.schema_version, event.data
        )
        return (event, message)

    def _run_worker(
        self, route: HandlesEntrypoint, args: tuple[Any, ...], letter: dlq.DeadLetter | None
    ) -> _Outcome:
        event: IncomingEvent = args[0]
        store = self._store
        assert store is not None
        done: Event = Event()

        def commit_with(conn: Connection) -> bool:
            now = self.office().clock.now()
            if not inbox.record(conn, event, now):
                return False
            if letter is not None:
                dlq.mark_retried(conn, letter, now)
            return True

        def handle_result(worker_ctx: Any, result: Any, exc_info: Any) -> tuple[Any, Any]:
            # Runs in the worker's greenthread, which owns the unit of work (and, on SQLite, the
            # process write lock): it must be closed here, not in the lane.
            try:
                if exc_info is None:
                    committed = store.finish(worker_ctx, commit_with)
                    done.send(_Outcome("handled" if committed else "duplicate"))
                else:
                    store.finish(worker_ctx, None)
                    done.send(_Outcome("failed", _describe(exc_info)))
            except Exception:  # the commit itself failed: a failed attempt like the handler's own
                exc_info = sys.exc_info()
                done.send(_Outcome("failed", _describe(exc_info)))
            return result, exc_info

        context = {
            CORRELATION_KEY: event.chain_correlation_id,
            CAUSATION_KEY: event.id,
            ACTOR_KEY: event.actor,
        }
        try:
            self.container.spawn_worker(
                route,
                args,
                {},
                context_data={k: v for k, v in context.items() if v is not None},
                handle_result=handle_result,
            )
        except ContainerBeingKilled as exc:
            raise _Stopping() from exc
        return done.wait()

    def pause(self, seconds: float) -> None:
        self._wake.wait(seconds)
        if self._stopping:
            raise _Stopping()

    def steadily(self, what: str, step: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return step()
            except _TRANSIENT as exc:
                attempt += 1
                _log.error(f"{what} failed; trying again", attempt=attempt, error=str(exc))
                self.pause(min(0.1 * 2 ** min(attempt, 8), 30.0))

    def _ack(self, item: _Item) -> None:
        if item.message is not None:
            self.queue_consumer.ack_message(item.message)

    # -- parking -------------------------------------------------------------------------------

    def _park_new(
        self, item: _Item, error: str, *, attempts: int, counter: str, status: str = dlq.PARKED
    ) -> None:
        parcel = _parcel(item)
        # The table first: it is what holds the stream. Then the copy for people and alerts.
        self.steadily("parking", partial(self.office().park, parcel, error, attempts, status))
        self.steadily(
            "publishing to the dead-letter queue",
            partial(self.office().publish, parcel, error, attempts),
        )
        self.stats[counter] += 1
        _log.error(f"event {status}", error=_first_line(error), attempts=attempts)
        self._ack(item)


class HandlesEntrypoint(Entrypoint):
    """`@handles(source, *types)`: the method gets an IncomingEvent of one of `types` from
    `source` and, if the service's contracts declare what it consumes from `source`, the payload
    loaded with that contract: `method(self, event, message)`. A payload that breaks its contract
    is parked at once with the reason. The writes the method makes through the EventStore are one
    unit of work with the inbox row."""

    dispatcher = EventDispatcher()
    unit_of_work = True  # read by shared.dependencies.EventStore

    def __init__(self, source: str, *types: str, **kwargs: Any) -> None:
        if not types:
            raise ValueError("@handles needs the source service and at least one event type")
        self.source = source
        self.contract_source = source  # the contracts name a source as the code does
        self.types = tuple(types)
        super().__init__(**kwargs)

    def setup(self) -> None:
        # A source may run under another name (a test's unique name, a staging copy): config
        # `LAVORO_SOURCES: {"calls": "calls-staging"}` renames it without touching the service.
        aliases = self.container.config.get(SOURCES_KEY) or {}
        self.source = aliases.get(self.source, self.source)
        self.dispatcher.register(self)

    def stop(self) -> None:
        self.dispatcher.unregister(self)


handles = HandlesEntrypoint.decorator
SOURCES_KEY = "LAVORO_SOURCES"


def consumer_stats(container: Any) -> collections.Counter[str]:
    """Counts of what the container's consumer did: handled, duplicate, retries, parked,
    parked_behind, out_of_order, malformed, refused, replayed, unrouted."""
    dispatcher = container.shared_extensions.get(EventDispatcher)
    return dispatcher.stats if dispatcher is not None else collections.Counter()


def _describe(exc_info: Any) -> str:
    """The error and the last frames of its traceback, for the dead letter."""
    kind, value, tb = exc_info
    frames = "".join(traceback.format_tb(tb, limit=-5))
    return f"{kind.__name__}: {value}\n{frames}".rstrip()


def _parcel(item: _Item) -> dlq.Parcel:
    message, event = item.message, item.event
    headers = dict(message.headers or {}) if message is not None else {}
    if event is not None:
        return dlq.Parcel(
            event.id, item.source, item.stream, event.position, event.type, item.body, headers
        )
    # Unreadable: keep what the broker says about it.
    properties = message.properties if message is not None else {}
    routing_key = message.delivery_info.get("routing_key") if message is not None else None
    event_id = str(properties.get("message_id") or uuid.uuid4())[:36]
    return dlq.Parcel(
        event_id, item.source, item.stream, 0, str(routing_key or "?"), item.body, headers
    )


def _first_line(error: str | None) -> str:
    return (error or "").split("\n", 1)[0]


def _log_fields(service: str, item: _Item) -> dict[str, Any]:
    fields: dict[str, Any] = {"service": service, "source": item.source, "stream": item.stream}
    event = item.event
    if event is not None:
        fields.update(
            event_id=event.id,
            event_type=event.type,
            position=event.position,
            correlation_id=event.chain_correlation_id,
            causation_id=event.causation_id,
        )
    return {name: value for name, value in fields.items() if value is not None}
