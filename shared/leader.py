"""One active holder of a role per service database: the lock that lets one relay publish while
its replicas wait (ARCHITECTURE.md, "one relay per service by lock").

PostgreSQL: a session-level `pg_try_advisory_lock(key)` held on a connection of its own (taken out
of the engine's pool, so no other code can reuse or reset it) for as long as the holder leads. If
the holder's process dies, PostgreSQL sees the socket close, ends the session and frees the lock.
The key is derived from the role name and the engine's schema, so two services (or two tests) in
one database do not exclude each other.

SQLite: `fcntl.flock` on a lock file beside the database file. flock locks belong to an open file
description, not to a process, so two holders in one process exclude each other as two processes
do, and the kernel frees the lock when the holder's process dies. SQLite is single-host, so a
file lock is enough. An in-memory database has no file: a lock in this process stands in.

Waiting is polling with `try` (never a blocking lock call): under eventlet a blocked call would
stall every greenlet, and a poll lets the waiter give up when it is asked to stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import threading
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from shared.db import is_sqlite
from shared.files import narrow_if_present


class LeaderLock(Protocol):
    """A lock one holder among replicas takes to lead; `still_held` tells it when it lost it."""

    name: str

    @property
    def held(self) -> bool: ...

    def try_acquire(self) -> bool: ...

    def acquire(self, stop: threading.Event | None = None, retry_interval: float = 1.0) -> bool:
        """Wait until the lock is ours (True) or `stop` is set (False)."""
        ...

    def still_held(self) -> bool: ...

    def release(self) -> None: ...


def leader_lock(engine: Engine, name: str) -> LeaderLock:
    """The lock for role `name` (e.g. `relay:calls`) on the database of `engine`."""
    if is_sqlite(engine):
        database = engine.url.database
        if not database or database == ":memory:":
            return LocalLock(name)
        return FileLock(lock_path(database, name), name)
    return AdvisoryLock(engine, name)


def advisory_key(name: str, schema: str | None) -> int:
    """A signed 64-bit advisory-lock key from the role name and the PostgreSQL schema."""
    digest = hashlib.sha256(f"lavoro:{schema or 'public'}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_path(database: str, name: str) -> Path:
    """The lock file of role `name` beside the SQLite file `database`."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", name)
    return Path(f"{database}.{safe}.lock")


def dedicated_connection(engine: Engine) -> Any:
    """A PostgreSQL DBAPI connection in autocommit, taken out of the engine's pool for good: a
    session-level lock or a LISTEN lives as long as its session, and a pool would reset the
    session or hand it to other code."""
    pooled = engine.raw_connection()
    conn: Any = pooled.driver_connection
    pooled.detach()
    conn.autocommit = True
    return conn


class _Polling:
    def try_acquire(self) -> bool:
        raise NotImplementedError

    def acquire(self, stop: threading.Event | None = None, retry_interval: float = 1.0) -> bool:
        stop = stop or threading.Event()
        while not stop.is_set():
            if self.try_acquire():
                return True
            stop.wait(retry_interval)
        return False


class AdvisoryLock(_Polling):
    """`pg_try_advisory_lock` on a dedicated connection kept for as long as the lock is held."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self.key = advisory_key(name, getattr(engine, "info_schema", None))
        self._conn: Any = None  # the DBAPI connection that holds the lock

    @property
    def held(self) -> bool:
        return self._conn is not None

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend holding the lock (for `pg_stat_activity`), if held."""
        return None if self._conn is None else int(self._conn.info.backend_pid)

    def try_acquire(self) -> bool:
        if self._conn is not None:
            return True
        conn = dedicated_connection(self.engine)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
                got = bool(cur.fetchone()[0])
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def still_held(self) -> bool:
        """False once the lock's session is gone (server restart, terminated backend, network)."""
        if self._conn is None:
            return False
        try:
            with self._conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
            return True
        except Exception:  # any failure of the session means its lock is gone with it
            self._close()
            return False

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            with self._conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        except Exception:  # the session is already gone, and its lock with it
            pass
        self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        # Closing a broken connection may fail; it is closed either way.
        with contextlib.suppress(Exception):
            conn.close()


class FileLock(_Polling):
    """`flock(LOCK_EX | LOCK_NB)` on a file beside the SQLite database."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        # Beside the database, and as private (shared/files.py): made 0600, an older one narrowed.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        narrow_if_present(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        # Who holds it, for a person looking at the file; the lock itself is the flock.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return True

    def still_held(self) -> bool:
        # Nothing but this process can take a flock away from an open descriptor.
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


_local_locks: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


class LocalLock(_Polling):
    """For an in-memory SQLite database, which only this process can see."""

    def __init__(self, name: str) -> None:
        self.name = name
        with _local_guard:
            self._lock = _local_locks.setdefault(name, threading.Lock())
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def try_acquire(self) -> bool:
        if not self._held:
            self._held = self._lock.acquire(blocking=False)
        return self._held

    def still_held(self) -> bool:
        return self._held

    def release(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()
