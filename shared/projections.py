"""Read models: projections that fold the log into tables, their rebuild, and replay "as of" a time.

A service declares its read-model tables on a `MetaData` of its own (in `readmodels.py`) and a
`Projection` with one handler per event type. Given to `EventLog(projections=[...])`, it folds each
append's events in the append's own transaction and moves its checkpoint (`projection:<name>` in
`checkpoints`) in that same transaction, over the event types it ignores too.

One rule keeps it exact: the checkpoint only ever moves forward one contiguous run of positions at a
time. Events at or below it are skipped (so inline folding and catch-up never apply one twice), and
an append whose first new event is not right after the checkpoint (the projection is new, being
rebuilt, or another process appended without it) folds nothing and leaves the projection behind:
`catch_up` folds the gap in order, and `follow(log)` runs it after the next commit in this process.
So `rebuild` can run while the service serves: appends made during it are folded by its catch-up.

Every fold locks the checkpoint row first (`FOR UPDATE` on PostgreSQL; on SQLite the process write
lock plus `BEGIN IMMEDIATE` serialise all writers) and catch-up reads the events after taking it, so
two catch-ups, or a catch-up and an append, cannot both fold the same positions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

from shared import tables as t
from shared.clock import Clock, SystemClock, as_utc
from shared.db import write_transaction
from shared.eventlog import EventLog
from shared.money import CENT
from shared.records import RecordedEvent

Handler = Callable[[Connection, RecordedEvent], None]
Progress = Callable[[int, int], None]

DEFAULT_PAGE = 1000
_log = structlog.get_logger(__name__)


class Amount(TypeDecorator[Decimal]):
    """A money column for read models: Decimal in and out, never float.

    NUMERIC(14, 2) on PostgreSQL. SQLite has no decimal type (its NUMERIC goes through a float), so
    there the amount is stored as its exact text; fold arithmetic in Python, not in SQL.
    """

    impl = sa.Numeric(14, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect):  # type: ignore[no-untyped-def]
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(32))
        return dialect.type_descriptor(sa.Numeric(14, 2, asdecimal=True))

    def process_bind_param(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("float refused for money: use Decimal")
        exact = Decimal(value)
        amount = exact.quantize(CENT)
        if amount != exact:
            raise ValueError(f"{value} has more than two decimal places: round it on purpose")
        return str(amount) if dialect.name == "sqlite" else amount

    def process_result_value(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        return Decimal(value).quantize(CENT)


class Projection:
    """Folds chosen event types into the read-model tables of `metadata`, which it owns.

    ```
    metadata = sa.MetaData()
    call_budgets = sa.Table("call_budgets", metadata, ...)
    projection = Projection("call_budgets", metadata)

    @projection.on("grant_awarded")
    def _(conn, event): ...
    ```
    Handlers get the append's connection and one event; they write with SQLAlchemy Core only (no
    network I/O: on SQLite the process write lock is held) and portable SQL, since replay runs them
    on SQLite.
    """

    def __init__(
        self,
        name: str,
        metadata: sa.MetaData,
        *,
        handlers: Mapping[str, Handler] | None = None,
        clock: Clock | None = None,
    ) -> None:
        clash = sorted(set(metadata.tables) & set(t.metadata.tables))
        if metadata is t.metadata or clash:
            # rebuild drops these tables: never let it reach the log or the chassis's own tables.
            raise ValueError(f"projection {name!r} may not own chassis tables {clash}")
        self.name = name
        self.metadata = metadata
        self.checkpoint_name = f"projection:{name}"
        self.clock = clock or SystemClock()
        self._handlers: dict[str, Handler] = {}
        for type_, handler in (handlers or {}).items():
            self._register(type_, handler)
        # Set when an inline fold found the checkpoint behind; `follow` catches up after commit.
        self._behind = False

    # -- declaring -----------------------------------------------------------------------------

    @property
    def tables(self) -> list[sa.Table]:
        return list(self.metadata.sorted_tables)

    @property
    def types(self) -> frozenset[str]:
        """The event types this projection handles."""
        return frozenset(self._handlers)

    def on(self, *types: str) -> Callable[[Handler], Handler]:
        """Decorator: `handler(conn, event)` folds events of these types."""

        def register(handler: Handler) -> Handler:
            for type_ in types:
                self._register(type_, handler)
            return handler

        return register

    def _register(self, type_: str, handler: Handler) -> None:
        if type_ in self._handlers:
            raise ValueError(f"projection {self.name!r} has two handlers for {type_!r}")
        self._handlers[type_] = handler

    # -- folding -------------------------------------------------------------------------------

    def apply(self, conn: Connection, events: list[RecordedEvent]) -> None:
        """Fold an append's events in its transaction (the `Projector` protocol of EventLog)."""
        if not events:
            return
        checkpoint = self._lock_checkpoint(conn)
        fresh = [event for event in events if event.position > checkpoint]
        if not fresh:
            return
        if fresh[0].position != checkpoint + 1:
            # Folding these would skip the events in between for ever; catch_up folds them in order.
            self._behind = True
            return
        self._fold(conn, fresh, fresh[-1].position)

    def _fold(self, conn: Connection, events: Iterable[RecordedEvent], upto: int) -> None:
        for event in events:
            handler = self._handlers.get(event.type)
            if handler is not None:
                handler(conn, event)
        conn.execute(
            t.checkpoints.update()
            .where(t.checkpoints.c.name == self.checkpoint_name)
            .values(position=upto, updated_at=self.clock.now())
        )

    def _lock_checkpoint(self, conn: Connection) -> int:
        query = (
            sa.select(t.checkpoints.c.position)
            .where(t.checkpoints.c.name == self.checkpoint_name)
            .with_for_update()  # SQLite ignores it: there the write lock already serialises
        )
        position = conn.execute(query).scalar_one_or_none()
        if position is None:
            # ON CONFLICT DO NOTHING: two processes creating the row at once both go on.
            conn.execute(
                _insert_ignoring_conflict(conn).values(
                    name=self.checkpoint_name, position=0, updated_at=self.clock.now()
                )
            )
            position = conn.execute(query).scalar_one()
        return int(position)

    # -- lifecycle -----------------------------------------------------------------------------

    def create(self, engine: Engine) -> None:
        """Create the read-model tables that are missing, and the checkpoint row (at 0) if new."""
        with write_transaction(engine) as conn:
            self._lock_checkpoint(conn)  # serialises replicas creating the tables at once
            self.metadata.create_all(conn, checkfirst=True)

    def checkpoint(self, engine: Engine) -> int:
        """The last position this projection has folded (0: nothing yet)."""
        with engine.connect() as conn:
            position = conn.execute(
                sa.select(t.checkpoints.c.position).where(
                    t.checkpoints.c.name == self.checkpoint_name
                )
            ).scalar_one_or_none()
        return int(position or 0)

    def lag(self, log: EventLog) -> int:
        """How many positions of the log this projection has not folded yet."""
        return log.head()[0] - self.checkpoint(log.engine)

    def catch_up(
        self, log: EventLog, *, page: int = DEFAULT_PAGE, progress: Progress | None = None
    ) -> int:
        """Fold everything after the checkpoint, a page per write transaction, up to the head.

        Creates the tables if missing. Returns how many events a handler folded. `progress(done,
        total)` gets the checkpoint and the head after each page.
        """
        self.create(log.engine)
        self._behind = False
        folded = 0
        while True:
            with write_transaction(log.engine) as conn:
                checkpoint = self._lock_checkpoint(conn)
                # Read the head and the page only after holding the checkpoint: an append that
                # commits later then finds the checkpoint where this page leaves it.
                head = int(
                    conn.execute(
                        sa.select(t.log_head.c.position).where(t.log_head.c.id == 1)
                    ).scalar_one()
                )
                events = _read_page(conn, log, checkpoint, head, self.types, page)
                full = len(events) == page
                # Only handled types are read; a short page means every position up to the head
                # was seen, so the checkpoint moves over the ignored ones after the last event.
                upto = events[-1].position if full else head
                if upto > checkpoint:
                    self._fold(conn, events, upto)
            folded += len(events)
            if progress is not None:
                progress(max(upto, checkpoint), head)
            if not full:
                return folded

    def rebuild(
        self, log: EventLog, progress: Progress | None = None, *, page: int = DEFAULT_PAGE
    ) -> int:
        """Drop the read-model tables, recreate them from `metadata`, and fold from position 0.

        Safe while the service runs: the reset is one write transaction that first takes the
        checkpoint (so it waits for any fold in progress); appends made during the rebuild find the
        checkpoint behind, fold nothing, and this catch-up folds them in order. Readers see a
        partial read model until it returns. On PostgreSQL a transaction that reads these tables and
        then appends can deadlock with the DROP; PostgreSQL aborts one of the two (retry it).
        """
        with write_transaction(log.engine) as conn:
            self._lock_checkpoint(conn)
            self.metadata.drop_all(conn, checkfirst=True)
            self.metadata.create_all(conn)
            conn.execute(
                t.checkpoints.update()
                .where(t.checkpoints.c.name == self.checkpoint_name)
                .values(position=0, updated_at=self.clock.now())
            )
        return self.catch_up(log, page=page, progress=progress)

    def follow(self, log: EventLog) -> None:
        """After each commit in this process, catch up if an append found this projection behind.

        Closes the gaps left by appends from processes that do not run this projection (a rolling
        deploy, a maintenance script) without waiting for the next start.
        """

        def after_commit(_head: int) -> None:
            if not self._behind:
                return
            try:
                self.catch_up(log)
            except Exception:
                # The append has committed: raising here would tell its caller it failed. The
                # projection stays behind (lag > 0) and the next commit tries again.
                self._behind = True
                _log.exception("projection catch-up failed", projection=self.name)

        log.on_commit(after_commit)


def replay_as_of(
    log: EventLog,
    projections: Sequence[Projection],
    until: dt.datetime,
    *,
    page: int = DEFAULT_PAGE,
) -> Engine:
    """Fold the events recorded at or before `until` into a scratch in-memory SQLite database.

    Returns its engine: query the projections' tables there to see the read models as they stood
    at `until`. The service's own database is only read. The scratch database lives as long as the
    engine (one connection shared through a StaticPool: use it from one thread at a time).
    """
    until = as_utc(until)
    scratch = sa.create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    with scratch.begin() as conn:
        t.checkpoints.create(conn)
        for projection in projections:
            projection.metadata.create_all(conn)
            projection._lock_checkpoint(conn)
    types = frozenset().union(*(projection.types for projection in projections))
    after = 0
    while True:
        batch = log.read_page(after, page, until=until, types=types)
        if batch:
            # Not `apply`: a time cut may leave positions out (a later position recorded earlier
            # by a skewed clock), which must not stop the fold.
            with scratch.begin() as conn:
                for projection in projections:
                    mine = [event for event in batch if event.type in projection.types]
                    projection._fold(conn, mine, batch[-1].position)
        if len(batch) < page:
            return scratch
        after = batch[-1].position


def _read_page(
    conn: Connection,
    log: EventLog,
    after: int,
    upto: int,
    types: frozenset[str],
    limit: int,
) -> list[RecordedEvent]:
    # On the fold's own connection: a second pooled connection per fold could exhaust the pool
    # under many concurrent green workers, each holding one and waiting for another.
    return log.read_page(after, limit, types=sorted(types), upto=upto, conn=conn)


def _insert_ignoring_conflict(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(t.checkpoints).on_conflict_do_nothing(index_elements=["name"])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(t.checkpoints).on_conflict_do_nothing(index_elements=["name"])
