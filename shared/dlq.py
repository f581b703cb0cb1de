"""Dead letters: events a service could not handle, parked per stream until an operator decides.

A sequenced dead-letter queue (as Axon's): once an event of a source stream is parked, the later
events of that stream are parked behind it, so that nothing overtakes it; other streams go on.
The `dead_letters` table is the state; the consumer also publishes a copy of each parked message,
with the error, to the durable queue `<service>.dlq` for alerting and inspection.

A row's status moves: `parked` → `retrying` (released by an operator: `retry` or `skip`) →
`retried` (the service handled it), or `parked` → `skipped`. A `retrying` row that fails again is
`parked` again. The operator's functions here only touch the database: the running service
replays `retrying` rows itself, in position order and ahead of any newer event of that stream
(see shared/redelivery.py), so a replay cannot be overtaken the way a re-published message could.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from kombu import Queue
from kombu.common import maybe_declare
from nameko.amqp.publish import Publisher, get_connection
from sqlalchemy.engine import Connection, Engine

from shared import tables as t
from shared.clock import Clock, SystemClock
from shared.db import write_transaction
from shared.errors import NotFound

PARKED = "parked"
RETRYING = "retrying"
RETRIED = "retried"
SKIPPED = "skipped"
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
    one step (the consumer repeats a step that failed for a passing reason)."""

    def __init__(self, engine: Engine, service: str, amqp_uri: str, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self.queue = Queue(dlq_name(service), durable=True, auto_delete=False)
        self._amqp_uri = amqp_uri
        self._publisher = Publisher(amqp_uri, declare=[self.queue], mandatory=True)

    def declare(self) -> None:
        with get_connection(self._amqp_uri) as conn:
            maybe_declare(self.queue, conn.channel())

    def park(self, parcel: Parcel, error: str, attempts: int) -> None:
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
                    status=PARKED,
                    parked_at=self.clock.now(),
                )
            )

    def publish(self, parcel: Parcel, error: str, attempts: int) -> None:
        """The copy in `<service>.dlq`: the original body and headers, plus ours."""
        self._publisher.publish(
            parcel.body,
            routing_key=self.queue.name,
            message_id=parcel.event_id,
            headers={
                **parcel.headers,
                ERROR_HEADER: error[:4000],
                SOURCE_HEADER: parcel.source,
                STREAM_HEADER: parcel.stream,
                ATTEMPTS_HEADER: attempts,
            },
        )

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
