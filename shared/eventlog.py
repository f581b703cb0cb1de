"""The append-only, hash-chained event log of one service (ARCHITECTURE.md, "The event log").

`append` writes a command's events in one transaction with gapless positions, the hash chain,
optimistic concurrency per stream and command idempotency; hooks given to it (projections, inbox)
write in that same transaction. Reading: one stream, everything after a position in pages, or as
of a time. Upcasters turn old schema versions into the current shape on read; stored rows never
change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from shared import tables as t
from shared.canonical import canonical
from shared.clock import Clock, SystemClock, as_utc, format_ts
from shared.db import is_sqlite, write_transaction
from shared.errors import ConcurrencyError

GENESIS = "0" * 64
ANY_VERSION = -1  # expected_version meaning "whatever the stream is at"


@dataclasses.dataclass(frozen=True)
class NewEvent:
    """An event a decision produced, before the log gives it a position."""

    type: str
    data: dict[str, Any]
    schema_version: int = 1
    id: str | None = None
    occurred_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class RecordedEvent:
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

    def envelope(self) -> dict[str, Any]:
        """The members the hash covers, in their JSON form (ARCHITECTURE.md)."""
        return envelope_of(
            self.position,
            self.id,
            self.stream,
            self.version,
            self.type,
            self.schema_version,
            self.data,
            self.correlation_id,
            self.causation_id,
            self.actor,
            self.occurred_at,
            self.recorded_at,
        )

    def to_json(self) -> dict[str, Any]:
        """The envelope plus `prev_hash` and `hash`: one line of an export, one message body."""
        body = self.envelope()
        body["prev_hash"] = self.prev_hash
        body["hash"] = self.hash
        return body


@dataclasses.dataclass(frozen=True)
class AppendResult:
    events: list[RecordedEvent]
    duplicate: bool  # True: the command id was seen before, nothing was appended

    @property
    def version(self) -> int:
        return self.events[-1].version if self.events else 0


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    head_position: int
    head_hash: str
    broken_at: int | None = None
    reason: str | None = None


class Projector(Protocol):
    """Folds recorded events into read-model tables on the connection of the append's transaction."""

    def apply(self, conn: Connection, events: list[RecordedEvent]) -> None: ...


class Transaction:
    """The handle a unit of work appends through; see `EventLog.transaction`."""

    def __init__(self, log: EventLog, conn: Connection) -> None:
        self.log = log
        self.conn = conn
        self.recorded: list[RecordedEvent] = []

    def append(
        self,
        stream: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        command_id: str | None = None,
        actor: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> AppendResult:
        result = self.log._append(
            self.conn,
            stream,
            expected_version,
            events,
            command_id,
            actor,
            correlation_id,
            causation_id,
        )
        if not result.duplicate and result.events:
            for projection in self.log.projections:
                projection.apply(self.conn, result.events)
            self.recorded.extend(result.events)
        return result


def envelope_of(
    position: int,
    id: str,
    stream: str,
    version: int,
    type: str,
    schema_version: int,
    data: dict[str, Any],
    correlation_id: str | None,
    causation_id: str | None,
    actor: str | None,
    occurred_at: dt.datetime | str,
    recorded_at: dt.datetime | str,
) -> dict[str, Any]:
    return {
        "position": position,
        "id": id,
        "stream": stream,
        "version": version,
        "type": type,
        "schema_version": schema_version,
        "data": data,
        "correlation_id": correlation_id,
        "causation_id": causation_id,
        "actor": actor,
        "occurred_at": occurred_at if isinstance(occurred_at, str) else format_ts(occurred_at),
        "recorded_at": recorded_at if isinstance(recorded_at, str) else format_ts(recorded_at),
    }


def chain_hash(prev_hash: str, envelope: dict[str, Any]) -> str:
    """SHA-256(ASCII(prev_hash) ‖ JCS(envelope)), lowercase hex."""
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(canonical(envelope).encode("utf-8"))
    return digest.hexdigest()


class Upcasters:
    """Functions that lift an event's data from one schema version to the next, on read."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}

    def register(
        self, type: str, from_version: int
    ) -> Callable[
        [Callable[[dict[str, Any]], dict[str, Any]]], Callable[[dict[str, Any]], dict[str, Any]]
    ]:
        def decorate(
            fn: Callable[[dict[str, Any]], dict[str, Any]],
        ) -> Callable[[dict[str, Any]], dict[str, Any]]:
            if (type, from_version) in self._steps:
                raise ValueError(f"two upcasters for {type} v{from_version}")
            self._steps[(type, from_version)] = fn
            return fn

        return decorate

    def current_version(self, type: str) -> int:
        version = 1
        while (type, version) in self._steps:
            version += 1
        return version

    def upcast(self, type: str, version: int, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        while (type, version) in self._steps:
            data = self._steps[(type, version)](dict(data))
            version += 1
        return version, data


class EventLog:
    """One service's log. Thread- and greenlet-safe; share one instance per process and database."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock | None = None,
        upcasters: Upcasters | None = None,
        projections: Sequence[Projector] = (),
        notify_channel: str | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock or SystemClock()
        self.upcasters = upcasters or Upcasters()
        self.projections = list(projections)
        # PostgreSQL NOTIFY channel that wakes relays in other processes after each commit.
        self.notify_channel = notify_channel
        self._listeners: list[Callable[[int], None]] = []
        self._listeners_lock = threading.Lock()

    # -- writing -----------------------------------------------------------------------------

    def on_commit(self, listener: Callable[[int], None]) -> None:
        """Call `listener(head_position)` in this process right after each append commits."""
        with self._listeners_lock:
            self._listeners.append(listener)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction: several appends, the projections, an inbox row; all or nothing.

        No network I/O inside it: on SQLite it holds the process's write lock.
        """
        with write_transaction(self.engine) as conn:
            tx = Transaction(self, conn)
            yield tx
            if tx.recorded and self.notify_channel and not is_sqlite(self.engine):
                conn.execute(
                    sa.text("SELECT pg_notify(:channel, :position)"),
                    {"channel": self.notify_channel, "position": str(tx.recorded[-1].position)},
                )
        if tx.recorded:
            self._notify(tx.recorded[-1].position)

    def append(
        self,
        stream: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        command_id: str | None = None,
        actor: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> AppendResult:
        """Append `events` to `stream` if it is at `expected_version` (0: new; ANY_VERSION: any).

        Raises ConcurrencyError if the stream moved on. With a `command_id` seen before, returns
        the events that command appended the first time and appends nothing. The log's
        projections fold the new events in the same transaction.
        """
        with self.transaction() as tx:
            return tx.append(
                stream,
                expected_version,
                events,
                command_id=command_id,
                actor=actor,
                correlation_id=correlation_id,
                causation_id=causation_id,
            )

    def _notify(self, position: int) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(position)

    def _append(
        self,
        conn: Connection,
        stream: str,
        expected_version: int,
        events: Sequence[NewEvent],
        command_id: str | None,
        actor: str | None,
        correlation_id: str | None,
        causation_id: str | None,
    ) -> AppendResult:
        head_query = sa.select(t.log_head.c.position, t.log_head.c.hash).where(t.log_head.c.id == 1)
        if not is_sqlite(self.engine):
            head_query = head_query.with_for_update()
        head_position, head_hash = conn.execute(head_query).one()

        if command_id is not None:
            seen = conn.execute(
                sa.select(t.commands.c.first_position, t.commands.c.last_position).where(
                    t.commands.c.command_id == command_id
                )
            ).first()
            if seen is not None:
                first, last = seen
                earlier = [] if first is None else list(self._read_range(conn, first, last))
                return AppendResult(earlier, duplicate=True)

        current = conn.execute(
            sa.select(sa.func.coalesce(sa.func.max(t.events.c.version), 0)).where(
                t.events.c.stream == stream
            )
        ).scalar_one()
        if expected_version != ANY_VERSION and current != expected_version:
            raise ConcurrencyError(stream, expected_version, current)

        now = self.clock.now()
        recorded: list[RecordedEvent] = []
        rows: list[dict[str, Any]] = []
        prev = head_hash
        for offset, new in enumerate(events, start=1):
            event_id = new.id or str(uuid.uuid4())
            occurred = new.occurred_at or now
            envelope = envelope_of(
                head_position + offset,
                event_id,
                stream,
                current + offset,
                new.type,
                new.schema_version,
                new.data,
                correlation_id,
                causation_id,
                actor,
                occurred,
                now,
            )
            digest = chain_hash(prev, envelope)
            rows.append(
                {
                    "position": head_position + offset,
                    "id": event_id,
                    "stream": stream,
                    "version": current + offset,
                    "type": new.type,
                    "schema_version": new.schema_version,
                    "data": canonical(new.data),
                    "correlation_id": correlation_id,
                    "causation_id": causation_id,
                    "actor": actor,
                    "occurred_at": occurred,
                    "recorded_at": now,
                    "prev_hash": prev,
                    "hash": digest,
                }
            )
            recorded.append(
                RecordedEvent(
                    head_position + offset,
                    event_id,
                    stream,
                    current + offset,
                    new.type,
                    new.schema_version,
                    new.data,
                    correlation_id,
                    causation_id,
                    actor,
                    as_utc(occurred),
                    as_utc(now),
                    prev,
                    digest,
                )
            )
            prev = digest
        if rows:
            conn.execute(t.events.insert(), rows)
            conn.execute(
                t.log_head.update()
                .where(t.log_head.c.id == 1)
                .values(position=rows[-1]["position"], hash=prev)
            )
        if command_id is not None:
            conn.execute(
                t.commands.insert().values(
                    command_id=command_id,
                    stream=stream,
                    first_position=rows[0]["position"] if rows else None,
                    last_position=rows[-1]["position"] if rows else None,
                    recorded_at=now,
                )
            )
        return AppendResult(recorded, duplicate=False)

    # -- reading -----------------------------------------------------------------------------

    def _row_to_event(self, row: Any, *, upcast: bool = True) -> RecordedEvent:
        data = json.loads(row.data)
        schema_version = row.schema_version
        if upcast:
            schema_version, data = self.upcasters.upcast(row.type, schema_version, data)
        return RecordedEvent(
            row.position,
            row.id,
            row.stream,
            row.version,
            row.type,
            schema_version,
            data,
            row.correlation_id,
            row.causation_id,
            row.actor,
            row.occurred_at,
            row.recorded_at,
            row.prev_hash,
            row.hash,
        )

    def _read_range(self, conn: Connection, first: int, last: int) -> Iterator[RecordedEvent]:
        rows = conn.execute(
            sa.select(t.events)
            .where(t.events.c.position.between(first, last))
            .order_by(t.events.c.position)
        )
        for row in rows:
            yield self._row_to_event(row)

    def read_stream(self, stream: str, after_version: int = 0) -> list[RecordedEvent]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.events)
                .where(t.events.c.stream == stream, t.events.c.version > after_version)
                .order_by(t.events.c.version)
            ).all()
        return [self._row_to_event(row) for row in rows]

    def read_page(
        self,
        after: int = 0,
        limit: int = 1000,
        *,
        until: dt.datetime | None = None,
        types: Iterable[str] | None = None,
        upcast: bool = True,
    ) -> list[RecordedEvent]:
        query = sa.select(t.events).where(t.events.c.position > after)
        if until is not None:
            query = query.where(t.events.c.recorded_at <= until)
        if types is not None:
            query = query.where(t.events.c.type.in_(list(types)))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.events.c.position).limit(limit)).all()
        return [self._row_to_event(row, upcast=upcast) for row in rows]

    def read_all(
        self,
        after: int = 0,
        *,
        until: dt.datetime | None = None,
        page: int = 1000,
        upcast: bool = True,
    ) -> Iterator[RecordedEvent]:
        """Every event after `after` in position order, read in pages (optionally as of `until`)."""
        while True:
            batch = self.read_page(after, page, until=until, upcast=upcast)
            yield from batch
            if len(batch) < page:
                return
            after = batch[-1].position

    def head(self) -> tuple[int, str]:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.log_head.c.position, t.log_head.c.hash).where(t.log_head.c.id == 1)
            ).one()
        return int(row.position), str(row.hash)

    def stream_version(self, stream: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.coalesce(sa.func.max(t.events.c.version), 0)).where(
                        t.events.c.stream == stream
                    )
                ).scalar_one()
            )

    # -- audit -------------------------------------------------------------------------------

    def verify(self, page: int = 5000) -> VerifyResult:
        """Walk the chain from position 1; report the first position where it breaks."""
        expected_position = 1
        prev = GENESIS
        checked = 0
        for event in self.read_all(0, page=page, upcast=False):
            if event.position != expected_position:
                return VerifyResult(
                    False,
                    checked,
                    *self.head(),
                    expected_position,
                    f"position {expected_position} is missing",
                )
            if event.prev_hash != prev:
                return VerifyResult(
                    False,
                    checked,
                    *self.head(),
                    event.position,
                    f"prev_hash does not match the hash of position {event.position - 1}",
                )
            if chain_hash(prev, event.envelope()) != event.hash:
                return VerifyResult(
                    False,
                    checked,
                    *self.head(),
                    event.position,
                    "hash does not match the event's content",
                )
            prev = event.hash
            expected_position += 1
            checked += 1
        head_position, head_hash = self.head()
        if head_position != checked:
            return VerifyResult(
                False,
                checked,
                head_position,
                head_hash,
                checked + 1 if head_position > checked else head_position,
                f"the head says position {head_position}, the log ends at {checked}",
            )
        if head_hash != prev:
            return VerifyResult(
                False,
                checked,
                head_position,
                head_hash,
                head_position,
                "the head hash does not match the last event",
            )
        return VerifyResult(True, checked, head_position, head_hash)

    def export(self, write: Callable[[str], Any]) -> int:
        """Write the log as JSON Lines (envelope + prev_hash + hash), in position order."""
        count = 0
        for event in self.read_all(0, upcast=False):
            write(canonical(event.to_json()) + "\n")
            count += 1
        return count
