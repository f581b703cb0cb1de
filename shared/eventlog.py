"""The append-only, hash-chained event log of one service (ARCHITECTURE.md, "The event log").

`append` writes a command's events in one transaction with gapless positions, the hash chain,
optimistic concurrency per stream and command idempotency (an id, bound to its request's digest
when one is given); hooks given to it (projections, inbox)
write in that same transaction. Reading: one stream, everything after a position in pages, or as
of a time. Upcasters turn old schema versions into the current shape on read; stored rows never
change. The events themselves are values of `shared.records`; the hash rule is `shared.chain`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypedDict, Unpack

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from shared import tables as t
from shared.canonical import canonical
from shared.chain import Anchor, chain_digest, envelope_text, walk
from shared.clock import UTC, Clock, SystemClock, as_utc, format_ts
from shared.db import is_sqlite, write_transaction
from shared.errors import ConcurrencyError, IdempotencyKeyReused
from shared.records import AppendResult, Events, RecordedEvent

ANY_VERSION = -1  # expected_version meaning "whatever the stream is at"


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


class Stamp(TypedDict, total=False):
    """What an append records beside its events: the command it runs (its id, and the digest of
    the request that asked for it) and who and what caused it."""

    command_id: str | None
    command_digest: str | None
    actor: str | None
    correlation_id: str | None
    causation_id: str | None


class Transaction:
    """The handle a unit of work appends through; see `EventLog.transaction`."""

    def __init__(self, log: EventLog, conn: Connection) -> None:
        self.log = log
        self.conn = conn
        self.recorded: list[RecordedEvent] = []
        self._command_id: str | None = None  # the command this transaction records, if any

    def append(
        self, stream: str, expected_version: int, events: Events, **stamp: Unpack[Stamp]
    ) -> AppendResult:
        result = self.log._append(self.conn, stream, expected_version, events, Stamp(**stamp))
        command_id = stamp.get("command_id")
        if not result.duplicate and result.events:
            if command_id is not None:
                self._command_id = command_id
            elif self._command_id is not None:
                # A command that appends to several streams: its row spans all they got (the
                # positions of one transaction are consecutive), so a repeat answers with all.
                self.conn.execute(
                    sa.update(t.commands)
                    .where(t.commands.c.command_id == self._command_id)
                    .values(last_position=result.events[-1].position)
                )
            for projection in self.log.projections:
                projection.apply(self.conn, result.events)
            self.recorded.extend(result.events)
        return result


class _Sql:
    """The append path's statements as driver SQL, per dialect: SQLAlchemy's statement
    compilation cost more than the database work on this path (measured in `make bench`)."""

    COLUMNS = (
        "position, id, stream, version, type, schema_version, data, correlation_id, "
        "causation_id, actor, occurred_at, recorded_at, prev_hash, hash"
    )

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        self.p = p = "?" if self.sqlite else "%s"
        self.begin_append = (
            "SELECT h.position, h.hash, "
            f"(SELECT COALESCE(MAX(version), 0) FROM events WHERE stream = {p}), "
            "c.first_position, c.last_position, c.command_id IS NOT NULL, c.request_digest "
            f"FROM log_head h LEFT JOIN commands c ON c.command_id = {p} "
            "WHERE h.id = 1"
        )
        if not self.sqlite:
            # Lock the head first, then read in a second statement: under READ COMMITTED a
            # statement that waited for the row lock keeps its old snapshot for everything but
            # the locked row, so a combined statement would miss what the previous holder wrote.
            # Two statements in one query string still make one round trip.
            self.begin_append = (
                "SELECT 1 FROM log_head WHERE id = 1 FOR UPDATE; " + self.begin_append
            )
        self._row = "(" + ", ".join([p] * 14) + ")"
        self._insert_events = f"INSERT INTO events ({self.COLUMNS}) VALUES "
        self._move_head = f"UPDATE log_head SET position = {p}, hash = {p} WHERE id = 1"
        self._insert_command = (
            "INSERT INTO commands "
            "(command_id, stream, first_position, last_position, recorded_at, request_digest) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
        )

    def read_time(self, value: Any) -> dt.datetime:
        if self.sqlite:
            return dt.datetime.fromisoformat(value).replace(tzinfo=UTC)
        return value if value.tzinfo is UTC else value.astimezone(UTC)

    def stored_time(self, value: dt.datetime) -> Any:
        # What SQLAlchemy's SQLite DateTime stores (and UTCDateTime reads back): naive UTC text.
        return value.strftime("%Y-%m-%d %H:%M:%S.%f") if self.sqlite else value

    def write(
        self,
        cur: Any,
        rows: list[tuple[Any, ...]],
        head: tuple[int, str] | None,
        command: tuple[Any, ...] | None,
    ) -> None:
        """Insert the events, move the head, record the command."""
        if self.sqlite:  # in-process: several statements cost little
            if rows:
                cur.executemany(self._insert_events + self._row, rows)
                cur.execute(self._move_head, head)
            if command:
                cur.execute(self._insert_command, command)
            return
        # PostgreSQL: one round trip, one multi-row INSERT (psycopg2's executemany is a round
        # trip a row) with the head move and the command row as data-modifying CTEs.
        parts: list[str] = []
        params: list[Any] = []
        if rows:
            parts.append("e AS (" + self._insert_events + ", ".join([self._row] * len(rows)) + ")")
            params.extend(value for row in rows for value in row)
        if command:
            parts.append("c AS (" + self._insert_command + ")")
            params.extend(command)
        if head:
            statement = self._move_head
            params.extend(head)
        else:
            statement = "SELECT 1"
        prefix = ("WITH " + ", ".join(parts) + " ") if parts else ""
        cur.execute(prefix + statement, params)


def _same_request(recorded: str | None, given: str | None) -> None:
    """A command id seen before, asked again: refused if both runs have a request digest and
    they differ. Without one on either side (a handler's command; a row older than revision
    0003) the id alone decides."""
    if recorded is not None and given is not None and recorded != given:
        raise IdempotencyKeyReused()


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
        self._sql = _Sql(engine.dialect.name)
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
        self, stream: str, expected_version: int, events: Events, **stamp: Unpack[Stamp]
    ) -> AppendResult:
        """Append `events` to `stream` if it is at `expected_version` (0: new; ANY_VERSION: any).

        Raises ConcurrencyError if the stream moved on. With a `command_id` seen before, returns
        the events that command appended the first time and appends nothing; if the first run
        recorded a `command_digest` (of its request) and this one gives another, raises
        IdempotencyKeyReused instead. The log's projections fold the new events in the same
        transaction.
        """
        with self.transaction() as tx:
            return tx.append(stream, expected_version, events, **stamp)

    def _notify(self, position: int) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(position)

    def _append(
        self, conn: Connection, stream: str, expected_version: int, events: Events, stamp: Stamp
    ) -> AppendResult:
        command_id, command_digest = stamp.get("command_id"), stamp.get("command_digest")
        actor, correlation_id = stamp.get("actor"), stamp.get("correlation_id")
        causation_id = stamp.get("causation_id")
        sql = self._sql
        # The DBAPI cursor of the transaction's own connection: same transaction, none of
        # SQLAlchemy's per-statement cost on the hottest path.
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        # One round trip: lock the head, then read it, the stream's version and any earlier run
        # of this command.
        cur.execute(sql.begin_append, (stream, command_id))
        head_position, head_hash, current, first, last, seen, seen_digest = cur.fetchone()
        if seen:
            _same_request(seen_digest, command_digest)
            earlier = [] if first is None else list(self._read_range(conn, first, last))
            return AppendResult(earlier, duplicate=True)
        if expected_version != ANY_VERSION and current != expected_version:
            raise ConcurrencyError(stream, expected_version, current)

        now = as_utc(self.clock.now())
        stored_now = sql.stored_time(now)
        now_text = format_ts(now)
        recorded: list[RecordedEvent] = []
        rows: list[tuple[Any, ...]] = []
        prev = head_hash
        position, version = head_position, current
        for new in events:
            position += 1
            version += 1
            event_id = new.id or str(uuid.uuid4())
            occurred = as_utc(new.occurred_at) if new.occurred_at else now
            data_json = canonical(new.data)
            digest = chain_digest(
                prev,
                envelope_text(
                    position,
                    event_id,
                    stream,
                    version,
                    new.type,
                    new.schema_version,
                    data_json,
                    correlation_id,
                    causation_id,
                    actor,
                    now_text if occurred is now else format_ts(occurred),
                    now_text,
                ),
            )
            rows.append(
                (
                    position,
                    event_id,
                    stream,
                    version,
                    new.type,
                    new.schema_version,
                    data_json,
                    correlation_id,
                    causation_id,
                    actor,
                    stored_now if occurred is now else sql.stored_time(occurred),
                    stored_now,
                    prev,
                    digest,
                )
            )
            recorded.append(
                RecordedEvent(
                    position,
                    event_id,
                    stream,
                    version,
                    new.type,
                    new.schema_version,
                    new.data,
                    correlation_id,
                    causation_id,
                    actor,
                    occurred,
                    now,
                    prev,
                    digest,
                )
            )
            prev = digest
        command_row = None
        if command_id is not None:
            command_row = (
                command_id,
                stream,
                rows[0][0] if rows else None,
                position if rows else None,
                stored_now,
                command_digest,
            )
        sql.write(cur, rows, (position, prev) if rows else None, command_row)
        return AppendResult(recorded, duplicate=False)

    # -- reading -----------------------------------------------------------------------------

    def _rows_to_events(
        self, rows: Iterable[Sequence[Any]], upcast: bool = True
    ) -> list[RecordedEvent]:
        """Rows in `_Sql.COLUMNS` order to events; the replay hot path, so no SQLAlchemy here."""
        to_time = self._sql.read_time
        steps = self.upcasters._steps if upcast else {}
        loads = json.loads
        events = []
        for row in rows:
            data = loads(row[6])
            schema_version = row[5]
            if steps and (row[4], schema_version) in steps:
                schema_version, data = self.upcasters.upcast(row[4], schema_version, data)
            events.append(
                RecordedEvent(
                    row[0],
                    row[1],
                    row[2],
                    row[3],
                    row[4],
                    schema_version,
                    data,
                    row[7],
                    row[8],
                    row[9],
                    to_time(row[10]),
                    to_time(row[11]),
                    row[12],
                    row[13],
                )
            )
        return events

    def _select(
        self,
        conn: Connection | None,
        where: str,
        params: Sequence[Any],
        order: str,
        limit: int | None = None,
        upcast: bool = True,
    ) -> list[RecordedEvent]:
        statement = f"SELECT {self._sql.COLUMNS} FROM events WHERE {where} ORDER BY {order}"
        if limit is not None:
            statement += f" LIMIT {int(limit)}"
        if conn is not None:
            cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cur.execute(statement, tuple(params))
            return self._rows_to_events(cur.fetchall(), upcast)
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute(statement, tuple(params))
            rows = cur.fetchall()
            cur.close()
            raw.commit()  # end the read transaction PostgreSQL opened
        finally:
            raw.close()
        return self._rows_to_events(rows, upcast)

    def _read_range(self, conn: Connection, first: int, last: int) -> Iterator[RecordedEvent]:
        p = self._sql.p
        yield from self._select(
            conn, f"position >= {p} AND position <= {p}", (first, last), "position"
        )

    def read_stream(
        self, stream: str, after_version: int = 0, *, conn: Connection | None = None
    ) -> list[RecordedEvent]:
        """A stream's events after `after_version`; with `conn`, inside that transaction."""
        p = self._sql.p
        return self._select(
            conn, f"stream = {p} AND version > {p}", (stream, after_version), "version"
        )

    def read_page(
        self,
        after: int = 0,
        limit: int = 1000,
        *,
        until: dt.datetime | None = None,
        types: Iterable[str] | None = None,
        upto: int | None = None,
        upcast: bool = True,
        conn: Connection | None = None,
    ) -> list[RecordedEvent]:
        """Up to `limit` events after position `after` (and at most `upto`), recorded by `until`,
        of the given `types`. With `conn`, on that connection (inside its transaction)."""
        p = self._sql.p
        where = f"position > {p}"
        params: list[Any] = [after]
        if upto is not None:
            where += f" AND position <= {p}"
            params.append(upto)
        if until is not None:
            where += f" AND recorded_at <= {p}"
            params.append(self._sql.stored_time(as_utc(until)))
        if types is not None:
            wanted = list(types)
            if not wanted:
                return []
            where += " AND type IN (" + ", ".join([p] * len(wanted)) + ")"
            params.extend(wanted)
        return self._select(conn, where, params, "position", limit, upcast)

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

    def command_events(
        self, command_id: str, *, digest: str | None = None
    ) -> list[RecordedEvent] | None:
        """The events a command appended the first time it ran (empty if it appended none), or
        None if no command with that id ran. IdempotencyKeyReused if it ran for a request whose
        recorded digest is not `digest`."""
        commands = t.commands.c
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(
                    commands.first_position, commands.last_position, commands.request_digest
                ).where(commands.command_id == command_id)
            ).first()
            if row is None:
                return None
            _same_request(row.request_digest, digest)
            if row.first_position is None:
                return []
            return list(self._read_range(conn, row.first_position, row.last_position))

    # -- audit -------------------------------------------------------------------------------

    def verify(self, page: int = 5000, *, anchor: Anchor | None = None) -> VerifyResult:
        """Walk the chain from position 1 against the head row, the checkpoints and `anchor` (a
        head published earlier), all read in one snapshot; report the first position where the
        log breaks (shared.chain.walk; docs/audit.md lists the reasons)."""
        with self._snapshot() as conn:
            head_row = conn.execute(
                sa.select(t.log_head.c.position, t.log_head.c.hash).where(t.log_head.c.id == 1)
            ).one()
            head = (int(head_row.position), str(head_row.hash))
            checkpoints = {
                str(name): int(position)
                for name, position in conn.execute(
                    sa.select(t.checkpoints.c.name, t.checkpoints.c.position)
                )
            }
            found = walk(self._pages(conn, page), head=head, checkpoints=checkpoints, anchor=anchor)
        if found.broken is None:
            return VerifyResult(True, found.checked, *head)
        return VerifyResult(False, found.checked, *head, found.broken.position, found.broken.reason)

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """One read transaction that sees one state of the database throughout (REPEATABLE READ
        on PostgreSQL; on SQLite in WAL mode a read transaction is a snapshot already)."""
        with self.engine.connect() as conn:
            if not is_sqlite(self.engine):
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def _pages(self, conn: Connection, page: int) -> Iterator[RecordedEvent]:
        after = 0
        while True:
            batch = self.read_page(after, page, upcast=False, conn=conn)
            yield from batch
            if len(batch) < page:
                return
            after = batch[-1].position

    def export(self, write: Callable[[str], Any]) -> int:
        """Write the log as JSON Lines (envelope + prev_hash + hash), in position order."""
        count = 0
        for event in self.read_all(0, upcast=False):
            write(canonical(event.to_json()) + "\n")
            count += 1
        return count
