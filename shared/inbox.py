"""The inbox: which events from other services this service has handled, and the event as it arrives.

An `IncomingEvent` is another service's event as its relay published it (the JSON of
`RecordedEvent.to_json()`), plus the name of the service it came from. The `inbox` table holds
one row per handled event id, written in the same transaction as whatever the handler appended,
so a redelivered message finds its id and changes nothing. Its positions also let the consumer see
an event of a stream arriving after a newer one of the same stream (`last_position`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from shared import tables as t
from shared.clock import parse_ts
from shared.dlq import PARKED, RETRYING

_FIELDS = (
    "position",
    "id",
    "stream",
    "version",
    "type",
    "schema_version",
    "data",
    "correlation_id",
    "causation_id",
    "actor",
    "occurred_at",
    "recorded_at",
    "prev_hash",
    "hash",
)


class MalformedEvent(ValueError):
    """A message body that is not the envelope of an event; it is parked, never retried."""


@dataclasses.dataclass(frozen=True)
class IncomingEvent:
    """Another service's event, as a handler receives it."""

    source: str
    position: int
    id: str
    stream: str
    version: int
    type: str
    schema_version: int
    data: dict[str, Any]
    correlation_id: str | None
    causation_id: str | None
    actor: str | None
    occurred_at: dt.datetime
    recorded_at: dt.datetime
    prev_hash: str
    hash: str

    @classmethod
    def from_body(cls, source: str, body: Any) -> IncomingEvent:
        """Read a message body; raise MalformedEvent naming what is wrong with it."""
        if not isinstance(body, Mapping):
            raise MalformedEvent(f"the body is a {type(body).__name__}, not a JSON object")
        missing = [name for name in _FIELDS if name not in body]
        if missing:
            raise MalformedEvent(f"the body lacks {', '.join(missing)}")
        try:
            event = cls(
                source=source,
                position=_integer(body, "position"),
                id=_text(body, "id"),
                stream=_text(body, "stream"),
                version=_integer(body, "version"),
                type=_text(body, "type"),
                schema_version=_integer(body, "schema_version"),
                data=dict(body["data"]),
                correlation_id=_optional_text(body, "correlation_id"),
                causation_id=_optional_text(body, "causation_id"),
                actor=_optional_text(body, "actor"),
                occurred_at=parse_ts(_text(body, "occurred_at")),
                recorded_at=parse_ts(_text(body, "recorded_at")),
                prev_hash=_text(body, "prev_hash"),
                hash=_text(body, "hash"),
            )
        except (TypeError, ValueError) as exc:
            raise MalformedEvent(f"the body does not read as an event: {exc}") from exc
        return event

    @property
    def chain_correlation_id(self) -> str:
        """What the events a handler appends carry as correlation id: the incoming event's own
        correlation id, or, for the first event of a chain, its id."""
        return self.correlation_id or self.id


def _text(body: Mapping[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _optional_text(body: Mapping[str, Any], name: str) -> str | None:
    value = body[name]
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or null")
    return value


def _integer(body: Mapping[str, Any], name: str) -> int:
    value = body[name]
    # bool is an int in Python, and a float position would be a producer bug: refuse both.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer")
    return value


def record(conn: Connection, event: IncomingEvent, handled_at: dt.datetime) -> bool:
    """Insert the event's inbox row in the caller's transaction. False: it was there already
    (another delivery of it committed first), and the caller rolls its transaction back."""
    values = {
        "event_id": event.id,
        "source": event.source,
        "stream": event.stream,
        "position": event.position,
        "type": event.type,
        "handled_at": handled_at,
    }
    # ON CONFLICT DO NOTHING rather than catching the IntegrityError: on PostgreSQL an error
    # aborts the whole transaction, and a concurrent insert of the same id waits for the other
    # transaction and then reports the conflict as "nothing inserted".
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(t.inbox).values(**values).on_conflict_do_nothing()
    return conn.execute(statement).rowcount == 1


@dataclasses.dataclass(frozen=True)
class Standing:
    """What the consumer must know about an arriving event before it runs a handler."""

    handled: bool  # its id is in the inbox
    dead_letter: str | None  # status of its newest dead letter, if it has one
    released: bool  # its stream has dead letters an operator released, waiting for a replay
    blocker: str | None  # id of the first parked event of its stream (the others wait behind)
    last_position: int | None  # highest position of its stream handled so far


def standing(conn: Connection, event: IncomingEvent) -> Standing:
    """All of `Standing` in one round trip (it is asked for every message)."""
    letters = t.dead_letters.c
    of_stream = (letters.source == event.source, letters.stream == event.stream)
    row = conn.execute(
        sa.select(
            sa.exists().where(t.inbox.c.event_id == event.id).label("handled"),
            sa.select(letters.status)
            .where(letters.event_id == event.id)
            .order_by(letters.id.desc())
            .limit(1)
            .scalar_subquery()
            .label("dead_letter"),
            sa.exists().where(*of_stream, letters.status == RETRYING).label("released"),
            sa.select(letters.event_id)
            .where(*of_stream, letters.status == PARKED)
            .order_by(letters.position, letters.id)
            .limit(1)
            .scalar_subquery()
            .label("blocker"),
            sa.select(sa.func.max(t.inbox.c.position))
            .where(t.inbox.c.source == event.source, t.inbox.c.stream == event.stream)
            .scalar_subquery()
            .label("last_position"),
        )
    ).one()
    return Standing(
        handled=bool(row.handled),
        dead_letter=row.dead_letter,
        released=bool(row.released),
        blocker=row.blocker,
        last_position=row.last_position,
    )


def handled(conn: Connection, event_id: str) -> bool:
    row = conn.execute(sa.select(t.inbox.c.event_id).where(t.inbox.c.event_id == event_id)).first()
    return row is not None


def last_position(conn: Connection, source: str, stream: str) -> int | None:
    """The highest source position handled for one stream of one source (None: none yet)."""
    return conn.execute(
        sa.select(sa.func.max(t.inbox.c.position)).where(
            t.inbox.c.source == source, t.inbox.c.stream == stream
        )
    ).scalar_one()


def count(conn: Connection, source: str | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(t.inbox)
    if source is not None:
        query = query.where(t.inbox.c.source == source)
    return int(conn.execute(query).scalar_one())
