"""The inbox: which events from other services this service has handled.

The event as it arrives is `shared.records.IncomingEvent`. The `inbox` table holds one row per
handled event id, written in the same transaction as whatever the handler appended, so a
redelivered message finds its id and changes nothing. Its positions also let the consumer see an
event of a stream arriving after a newer one of the same stream (`last_position`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from shared import tables as t
from shared.dlq import PARKED, RETRYING
from shared.records import IncomingEvent


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
