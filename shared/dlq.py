"""Dead letters: events a service could not handle, parked per stream until an operator decides.

A sequenced dead-letter queue (as Axon's): once an event of a source stream is parked, the later
events of that stream are parked behind it, so that nothing overtakes it; other streams go on.
The `dead_letters` table is the state; the consumer also publishes a copy of each parked message,
with the error, to the durable queue `<service>.dlq` for alerting and inspection.

A row's status moves: `parked` → `retrying` (released by an operator: `retry` or `skip`) →
`retried` (the service handled it), or `parked` → `skipped`. A `retrying` row that fails again is
`parked` again. A `refused` row (an event not published by its source's broker user,
shared/broker.py) stays so: it is a record, never replayed, and holds no stream. The operator's functions here only touch the database: the running service
replays `retrying` rows itself, in position order and ahead of any newer event of that stream
(see shared/redelivery.py), so a replay cannot be overtaken the way a re-published message could.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

import kombu
import sqlalchemy as sa
from kombu import Queue
from kombu.exceptions import ChannelError
from nameko.amqp.publish import UndeliverableMessage
from sqlalchemy.engine import Connection, Engine

from shared import tables as t
from shared.broker import broker_user, connection_name, kombu_connection
from shared.clock import Clock, SystemClock
from shared.db import write_transaction
from shared.errors import NotFound

PARKED = "parked"
RETRYING = "retrying"
RETRIED = "retried"
SKIPPED = "skipped"
REFUSED = "refused"  # not published by its source's broker user: never handled, holds nothing
PERSISTENT = 2
_RETRY = {"max_retries": 3, "interval_start": 0.1, "interval_step": 0.5, "interval_max": 2}
_ORDER = (t.dead_letters.c.position, t.dead_letters.c.id)

# Our own headers on the copy in `<service>.dlq` (RabbitMQ's x-death is for its own dead-lettering).
ERROR_HEADER = "x-lavoro-error"
SOURCE_HEADER = "x-lavoro-source"
ATTEMPTS_HEADER = "x-lavoro-attempts"
STREAM_HEADER = "x-lavoro-stream"


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    id: int
    event_id: str
    source: str
    stream: str
    position: int
    type: str
    body: str  # the message body as received (JSON text)
    headers: dict[str, Any]  # the message's original headers
    error: str
    attempts: int
    status: str
    parked_at: dt.datetime
    resolved_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class Resolution:
    skipped: list[DeadLetter]
    released: list[DeadLetter]  # now `retrying`: the service replays them in order


def dlq_name(service: str) -> str:
    return f"{service}.dlq"


def behind_error(head_event_id: str) -> str:
    return f"parked behind {head_event_id}"


def _row(row: Any) -> DeadLetter:
    return DeadLetter(
        id=row.id,
        event_id=row.event_id,
        source=row.source,
        stream=row.stream,
        position=row.position,
        type=row.type,
        body=row.body,
        headers=json.loads(row.headers),
        error=row.error,
        attempts=row.attempts,
        status=row.status,
        parked_at=row.parked_at,
        resolved_at=row.resolved_at,
    )


def _rows(conn: Connection, *where: Any) -> list[DeadLetter]:
    query = sa.select(t.dead_letters).where(*where).order_by(*_ORDER)
    return [_row(row) for row in conn.execute(query)]


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or SystemClock().now()


# -- the operator's side (the CLI) -------------------------------------------------------------


def list_parked(
    engine: Engine, source: str | None = None, stream: str | None = None
) -> list[DeadLetter]:
    """Parked events, by source, stream and position."""
    where = [t.dead_letters.c.status == PARKED]
    if source is not None:
        where.append(t.dead_letters.c.source == source)
    if stream is not None:
        where.append(t.dead_letters.c.stream == stream)
    with engine.connect() as conn:
        rows = _rows(conn, *where)
    return sorted(rows, key=lambda row: (row.source, row.stream, row.position, row.id))


def retry(engine: Engine, source: str, stream: str) -> list[DeadLetter]:
    """Release every parked event of one stream: the running service replays them in position
    order (each is then `retried`, or `parked` again if it still fails). Returns them."""
    with write_transaction(engine) as conn:
        rows = _rows(conn, *_stream(source, stream), t.dead_letters.c.status == PARKED)
        _set_status(conn, [row.id for row in rows], RETRYING)
    return rows


def skip(
    engine: Engine,
    source: str,
    stream: str,
    event_id: str | None = None,
    *,
    now: dt.datetime | None = None,
) -> Resolution:
    """Give up on one parked event of a stream (by default the first, the one the others wait
    behind): it is marked `skipped` and never handled; the stream's other parked events are
    released for the service to replay in order. Raises NotFound if there is no such event."""
    with write_transaction(engine) as conn:
        rows = _rows(conn, *_stream(source, stream), t.dead_letters.c.status == PARKED)
        if not rows:
            raise NotFound(f"no parked event in stream {stream!r} of {source!r}")
        target = event_id or rows[0].event_id
        skipped = [row for row in rows if row.event_id == target]
        if not skipped:
            raise NotFound(f"event {target!r} is not parked in stream {stream!r} of {source!r}")
        released = [row for row in rows if row.event_id != target]
        conn.execute(
            t.dead_letters.update()
            .where(t.dead_letters.c.id.in_([row.id for row in skipped]))
            .values(status=SKIPPED, resolved_at=_now(now))
        )
        _set_status(conn, [row.id for row in released], RETRYING)
    return Resolution(skipped, released)


def _stream(source: str, stream: str) -> tuple[Any, Any]:
    return t.dead_letters.c.source == source, t.dead_letters.c.stream == stream


def _set_status(conn: Connection, ids: list[int], status: str) -> None:
    if ids:
        conn.execute(
            t.dead_letters.update().where(t.dead_letters.c.id.in_(ids)).values(status=status)
        )


# -- the consumer's side -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Parcel:
    """A message to park: what its row and its copy in `<service>.dlq` are made of."""

    event_id: str
    source: str
    stream: str
    position: int
    type: str
    body: Any  # the decoded body, or the raw text of one that could not be decoded
    headers: dict[str, Any]

    @property
    def body_text(self) -> str:
        if isinstance(self.body, str):
            return self.body
        return json.dumps(self.body, sort_keys=True, default=str)

    @classmethod
    def of(cls, letter: DeadLetter) -> Parcel:
        try:
            body: Any = json.loads(letter.body)
        except ValueError:
            body = letter.body
        return cls(
            letter.event_id,
            letter.source,
            letter.stream,
            letter.position,
            letter.type,
            body,
            letter.headers,
        )


class DeadLetterOffice:
    """Writes a consuming service's dead letters and publishes their copies; every method does
    one step (the consumer repeats a step that failed for a passing reason).

    Each declaration and copy opens a connection of its own, named `lavoro-dlq-<service>`, and
    closes it: parking is rare, and no idle connection is left to go stale when the broker drops
    it (a pooled one was, unnamed)."""

    def __init__(self, engine: Engine, service: str, amqp_uri: str, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self.queue = Queue(dlq_name(service), durable=True, auto_delete=False)
        self.connection_name = connection_name("dlq", service)
        self._amqp_uri = amqp_uri
        self._user_id = broker_user(amqp_uri)

    def _connection(self) -> kombu.Connection:
        return kombu_connection(self._amqp_uri, self.connection_name, confirm_publish=True)

    def declare(self) -> None:
        with self._connection() as conn:
            self.queue(conn.default_channel).declare()

    def park(self, parcel: Parcel, error: str, attempts: int, status: str = PARKED) -> None:
        """A row for the parcel: `parked` (it holds its stream), or `refused` (it does not)."""
        with write_transaction(self.engine) as conn:
            conn.execute(
                t.dead_letters.insert().values(
                    event_id=parcel.event_id,
                    source=parcel.source,
                    stream=parcel.stream,
                    position=parcel.position,
                    type=parcel.type,
                    body=parcel.body_text,
                    headers=json.dumps(parcel.headers, sort_keys=True, default=str),
                    error=error,
                    attempts=attempts,
                    status=status,
                    parked_at=self.clock.now(),
                )
            )

    def publish(self, parcel: Parcel, error: str, attempts: int) -> None:
        """The copy in `<service>.dlq`: the original body and headers, plus ours."""
        headers = {
            **parcel.headers,
            ERROR_HEADER: error[:4000],
            SOURCE_HEADER: parcel.source,
            STREAM_HEADER: parcel.stream,
            ATTEMPTS_HEADER: attempts,
        }
        with self._connection() as conn:
            try:
                conn.Producer().publish(
                    parcel.body,
                    routing_key=self.queue.name,
                    declare=[self.queue],
                    serializer="json",
                    delivery_mode=PERSISTENT,
                    mandatory=True,
                    message_id=parcel.event_id,
                    user_id=self._user_id,
                    headers=headers,
                    retry=True,
                    retry_policy=_RETRY,
                )
            except ChannelError as exc:
                if "NO_ROUTE" in str(exc):  # confirmed unroutable: the queue went meanwhile
                    raise UndeliverableMessage() from exc
                raise

    def repark(self, letter: DeadLetter, error: str, attempts: int) -> list[DeadLetter]:
        """A released event failed again: park it again, and the stream's other released events
        behind it. Returns those parked behind."""
        now = self.clock.now()
        with write_transaction(self.engine) as conn:
            conn.execute(
                t.dead_letters.update()
                .where(t.dead_letters.c.id == letter.id)
                .values(
                    status=PARKED, error=error, attempts=letter.attempts + attempts, parked_at=now
                )
            )
            behind = _rows(
                conn,
                *_stream(letter.source, letter.stream),
                t.dead_letters.c.status == RETRYING,
                t.dead_letters.c.id != letter.id,
            )
            if behind:
                conn.execute(
                    t.dead_letters.update()
                    .where(t.dead_letters.c.id.in_([row.id for row in behind]))
                    .values(status=PARKED, error=behind_error(letter.event_id), parked_at=now)
                )
        return behind

    def resolve(self, letter: DeadLetter) -> None:
        with write_transaction(self.engine) as conn:
            mark_retried(conn, letter, self.clock.now())

    def released(self, source: str, stream: str) -> list[DeadLetter]:
        """The stream's events an operator released, in the order they are to be replayed."""
        with self.engine.connect() as conn:
            return _rows(conn, *_stream(source, stream), t.dead_letters.c.status == RETRYING)

    def streams_released(self, sources: Iterable[str]) -> list[tuple[str, str]]:
        """(source, stream) pairs that have released events waiting for a replay."""
        query = (
            sa.select(t.dead_letters.c.source, t.dead_letters.c.stream)
            .where(
                t.dead_letters.c.status == RETRYING,
                t.dead_letters.c.source.in_(list(sources)),
            )
            .distinct()
        )
        with self.engine.connect() as conn:
            return [(row.source, row.stream) for row in conn.execute(query)]


def mark_retried(conn: Connection, letter: DeadLetter, now: dt.datetime) -> None:
    """In the caller's transaction (the handler's, with its inbox row): the replay succeeded."""
    conn.execute(
        t.dead_letters.update()
        .where(t.dead_letters.c.id == letter.id)
        .values(status=RETRIED, resolved_at=now)
    )
