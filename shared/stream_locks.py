"""Commands on one stream one after another across processes: the replicas of a service that
share a PostgreSQL log.

The unit of work gates a command on the first stream it loads (shared.unit_of_work). Within a
process an in-process lock does it (shared.dependencies); replicas in other processes cannot see
that lock, and without more they race on a hot stream until one exhausts its retries and answers
409 though its command would have fit. So, on PostgreSQL, the gate also holds a transaction-level
advisory lock keyed by the log's schema and the stream, from before the plan reads until after
it appends:

- on a connection of its own small pool, never the log's: a command holding the lock still gets
  a connection to read and append with, so the two pools cannot wait on each other;
- `pg_advisory_xact_lock`, released when that transaction ends, also when the process dies (the
  server drops its connection), so a killed replica never leaves a stream locked;
- waiting at most `LOCK_TIMEOUT_MS` (`lock_timeout`), then a `ConcurrencyError` (409) for the
  stream, as a lost race would be.

SQLite needs none: one file is written by one process at a time, and lavoro runs one replica
per SQLite log.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine

from shared.db import is_sqlite
from shared.errors import ConcurrencyError, Conflict

LOCK_TIMEOUT_MS = 10_000
POOL_SIZE = 4  # connections kept for locks; more open while commands on many streams wait
MAX_OVERFLOW = 28

_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


class StreamBusy(ConcurrencyError):
    """Another command held the stream longer than the lock timeout (409, as a lost race)."""

    def __init__(self, stream: str) -> None:
        Conflict.__init__(
            self,
            f"stream {stream!r} stayed busy with another command for {LOCK_TIMEOUT_MS} ms",
            stream=stream,
        )
        self.stream = stream


class StreamLocks:
    """Advisory locks per stream over `engine`'s database (nothing on SQLite)."""

    def __init__(self, engine: Engine) -> None:
        self.namespace = getattr(engine, "info_schema", None) or "public"
        self._engine: Engine | None = None
        if not is_sqlite(engine):
            self._engine = sa.create_engine(
                engine.url, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW, pool_pre_ping=False
            )

    @contextmanager
    def hold(self, stream: str) -> Iterator[None]:
        """Hold `stream`'s lock for the body; ConcurrencyError if it stays taken too long."""
        if self._engine is None:
            yield
            return
        with self._engine.connect() as conn, conn.begin():
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(LOCK_TIMEOUT_MS)}")
            try:
                conn.execute(_LOCK, {"key": f"{self.namespace}:{stream}"})
            except sa.exc.OperationalError as error:
                if getattr(error.orig, "pgcode", None) != "55P03":  # lock_not_available
                    raise
                raise StreamBusy(stream) from error
            yield

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


_by_engine: weakref.WeakKeyDictionary[Engine, StreamLocks] = weakref.WeakKeyDictionary()
_guard = threading.Lock()


def stream_locks(engine: Engine) -> StreamLocks:
    """The one StreamLocks of `engine`, disposed with it."""
    with _guard:
        locks = _by_engine.get(engine)
        if locks is None:
            locks = _by_engine[engine] = StreamLocks(engine)
            sa_event.listen(engine, "engine_disposed", lambda _engine: locks.dispose())
    return locks
