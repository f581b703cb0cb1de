"""Engines for a service's database (SQLite or PostgreSQL), migrations, and the write lock.

SQLite under eventlet, as measured: a writer waiting on SQLite's file lock blocks the whole
process (the busy timeout stalls the hub, then fails with "database is locked"). So on SQLite
every write transaction of a process takes one in-process lock first (green under eventlet's
monkey patching) and opens with `BEGIN IMMEDIATE`; nothing yields inside it. PostgreSQL writers
serialise on the log's head row (`SELECT ... FOR UPDATE`) and are made cooperative with psycogreen
when eventlet is running.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine

from shared.files import narrow_if_present, private_dir, private_file

ROOT = Path(__file__).resolve().parent.parent
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SEARCH_PATH = re.compile(r"-c\s*search_path\s*=\s*\"?([A-Za-z_][A-Za-z0-9_$]*)")
_locks: dict[str, threading.RLock] = {}
_locks_guard = threading.Lock()


def default_url(service: str) -> str:
    """`<SERVICE>_DATABASE_URL`, else a SQLite file per service under `var/`."""
    url = os.environ.get(f"{service.upper()}_DATABASE_URL")
    if url:
        return url
    var = private_dir(os.environ.get("LAVORO_VAR", ROOT / "var"))
    return f"sqlite:///{var / (service + '.db')}"


def normalise_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg2 here (SQLAlchemy 2.1 would pick psycopg 3)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def schema_in_url(url: str) -> str | None:
    """The schema a PostgreSQL URL selects with `?options=-csearch_path%3D<schema>`, if any."""
    options = sa.engine.make_url(normalise_url(url)).query.get("options")
    for text in [options] if isinstance(options, str) else list(options or ()):
        found = _SEARCH_PATH.search(text)
        if found:
            return found.group(1)
    return None


def make_engine(url: str, *, schema: str | None = None, **kwargs: Any) -> Engine:
    """An engine set up for the event log. `schema` (PostgreSQL) isolates a service or a test;
    a schema given in the URL instead counts the same for the locks keyed by schema (the relay's
    leader lock, the streams' advisory locks), so two logs in one database never share them."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        _private_sqlite_files(engine)
        _setup_sqlite(engine)
        return engine
    connect_args: dict[str, Any] = {}
    if schema:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"bad schema name {schema!r}")
        connect_args["options"] = f"-csearch_path={schema}"
        with sa.create_engine(url).begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    kwargs.setdefault("pool_pre_ping", False)
    engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
    engine.info_schema = schema or schema_in_url(url)  # type: ignore[attr-defined]
    return engine


def _private_sqlite_files(engine: Engine) -> None:
    """The database file made 0600 before SQLite creates it (its -wal and -shm then take the
    same mode), and an older, wider one narrowed (shared/files.py)."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    private_file(database)
    for suffix in ("-wal", "-shm"):
        narrow_if_present(database + suffix)


def _setup_sqlite(engine: Engine) -> None:
    @sa_event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event below emit BEGIN, so that IMMEDIATE is possible.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=5000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa_event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        immediate = conn.get_execution_options().get("immediate", False)
        # Straight to the driver: this runs once a transaction, on the append path.
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def lock_key(engine: Engine) -> str:
    return f"{engine.url.render_as_string(hide_password=True)}#{getattr(engine, 'info_schema', '')}"


def process_lock(engine: Engine) -> threading.RLock:
    """The in-process write lock of one database (shared by every EventLog on it)."""
    key = lock_key(engine)
    with _locks_guard:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = threading.RLock()
        return lock


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One write transaction: serialised in-process on SQLite, plain on PostgreSQL."""
    if is_sqlite(engine):
        with process_lock(engine), engine.connect() as conn:
            conn = conn.execution_options(immediate=True)
            with conn.begin():
                yield conn
    else:
        with engine.begin() as conn:
            yield conn


def alembic_config(engine: Engine, service: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    locations = [str(_MIGRATIONS / "versions")]
    if service:
        own = ROOT / "services" / service / "migrations"
        if own.is_dir():
            locations.append(str(own))
    cfg.set_main_option("version_locations", " ".join(locations))
    cfg.set_main_option("path_separator", "space")
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, service: str | None = None, *, keyring: Any = None) -> None:
    """Upgrade the database to the newest revision: the chassis tables, then the service's own.
    `keyring` (shared.kek.Keyring) wraps person keys stored before they were wrapped (revision
    0002); without it the KEK comes from the environment."""
    cfg = alembic_config(engine, service)
    cfg.attributes["keyring"] = keyring
    if is_sqlite(engine):
        with process_lock(engine):
            command.upgrade(cfg, "heads")
    else:
        command.upgrade(cfg, "heads")


def disable_append_only(conn: Connection) -> None:
    """For tamper tests only: switch the log's guard triggers off inside this transaction."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS events_no_update")
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS events_no_delete")
    else:
        conn.exec_driver_sql("ALTER TABLE events DISABLE TRIGGER events_append_only")
