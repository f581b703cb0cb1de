"""The nameko dependency provider through which a service method touches its own database.

`EventStore(projections=[...], upcasters=..., clock=...)` builds ONE EventLog per container (the
engine from the container config's `DATABASE_URL`, else `default_url(service)`; `DATABASE_SCHEMA`
isolates a PostgreSQL schema; migrated at setup) and its Vault (the KEKs from the config's
`LAVORO_KEK_FILE` / `LAVORO_KEK`, else the environment: a service whose contracts name persons
refuses to start without one), and gives each worker a narrow `Store`: `load`,
`append`, `transaction`, `clock`, and read-only `query`/`read_model`. Never an engine or a session.

Who and what caused an append is filled in from the worker context, not passed by the method:
- a handler of another service's event (shared/consumer.py): causation = the incoming event's
  id, correlation = its correlation id (or its id, for the first event of a chain), actor = its
  actor;
- any other worker (HTTP, RPC): the context data keys below, which the edge sets (and nameko
  passes on to RPC calls as headers); without one, a correlation id is made for the worker, so
  all events of one command share it.

The digest of an HTTP command's body comes the same way: the store records it with the command
id the edge gave that request, and a command id seen before with another digest is refused
(`IdempotencyKeyReused`, 422) instead of answered with the first run's events. Other command ids
(a handler's, a script's) have no digest: their id alone decides.

In a handler, everything the store writes is one unit of work: it commits together with the
inbox row after the handler returns and rolls back if it raises (the consumer drives this through
`EventStore.finish`). Elsewhere each `append` (or `transaction()` block) commits at once.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar, overload

import eventlet
import sqlalchemy as sa
import structlog
from nameko.extensions import DependencyProvider
from sqlalchemy.engine import Connection, Engine
from structlog.contextvars import bound_contextvars

from shared.aggregates import load as load_aggregate
from shared.clock import Clock
from shared.contracts import Contracts
from shared.crypto import Vault
from shared.db import default_url, is_sqlite, make_engine, migrate
from shared.eventlog import (
    AppendResult,
    EventLog,
    RecordedEvent,
    Transaction,
    Upcasters,
)
from shared.kek import KEK_FILE_KEY, KEK_KEY, KekConfigError, Keyring
from shared.records import Aggregate, Events, IncomingEvent, Loaded, NewEvent
from shared.stream_locks import stream_locks

S = TypeVar("S")

ACTOR_KEY = "lavoro.actor"
CORRELATION_KEY = "lavoro.correlation_id"
CAUSATION_KEY = "lavoro.causation_id"
COMMAND_ID_KEY = "lavoro.command_id"  # as shared.web sets them for a command
REQUEST_DIGEST_KEY = "lavoro.request_digest"
DATABASE_URL_KEY = "DATABASE_URL"
DATABASE_SCHEMA_KEY = "DATABASE_SCHEMA"
PROJECTION_POLL_KEY = "LAVORO_PROJECTION_POLL"  # seconds between looks for others' appends; 0: off
DEFAULT_PROJECTION_POLL = 1.0
_log = structlog.get_logger("lavoro.store")
_READ_ONLY_SQL = re.compile(r"^\s*(select|with)\b", re.IGNORECASE)


def notify_channel(service: str) -> str:
    """The PostgreSQL NOTIFY channel on which a service's log announces each commit."""
    return f"lavoro_{service}"


class _Rollback(Exception):
    """Thrown into an open unit of work to roll it back."""


class ReadOnlyViolation(ValueError):
    """`query` got a statement that is not a SELECT."""


class Writer:
    """Appends inside one `Store.transaction()`; seals each event's personal fields there, with
    the person's key created or locked in the same transaction (so an event never commits
    without its key, and an erasure waits for it)."""

    def __init__(
        self,
        tx: Transaction,
        cause: dict[str, str | None],
        sealer: _Sealer | None = None,
        request: _Request | None = None,
    ) -> None:
        self._tx = tx
        self._cause = cause
        self._sealer = sealer
        self._request = request or _Request()

    def append(
        self, stream: str, expected_version: int, events: Events, *, command_id: str | None = None
    ) -> AppendResult:
        if self._sealer is not None:
            events = [self._sealer.seal(event, self._tx.conn) for event in events]
        return self._tx.append(
            stream,
            expected_version,
            events,
            command_id=command_id,
            command_digest=self._request.digest_of(command_id),
            **self._cause,
        )


@dataclasses.dataclass(frozen=True)
class _Request:
    """The command id the edge gave this worker's request, and the digest of its body."""

    command_id: str | None = None
    digest: str | None = None

    def digest_of(self, command_id: str | None) -> str | None:
        return self.digest if command_id is not None and command_id == self.command_id else None


class _Sealer:
    """Seals the personal fields of the event types the contracts name a person for."""

    def __init__(self, contracts: Contracts, vault: Vault) -> None:
        self._contracts = contracts
        self._vault = vault

    def seal(self, event: NewEvent, conn: Connection) -> NewEvent:
        person_id = self._contracts.person_of(event)
        if person_id is None:
            return event
        schema = self._contracts.schema(event.type)
        data = self._vault.seal_fields(schema, event.data, person_id, conn=conn)
        return dataclasses.replace(event, data=data)


class Store:
    """What one worker may do with its service's database."""

    def __init__(
        self,
        log: EventLog,
        cause: dict[str, str | None],
        *,
        deferred: bool,
        contracts: Contracts | None = None,
        sealer: _Sealer | None = None,
        request: _Request | None = None,
    ) -> None:
        self._log = log
        self._cause = cause
        self._contracts = contracts
        self._sealer = sealer
        self._request = request or _Request()
        # A handler's writes wait in one open transaction until the consumer commits them with
        # the inbox row (or rolls them back).
        self._deferred = deferred
        self._stack: ExitStack | None = None
        self._tx: Transaction | None = None

    @property
    def clock(self) -> Clock:
        return self._log.clock

    @property
    def in_handler(self) -> bool:
        """Whether this worker handles another service's event (its writes commit with the
        inbox row after it returns)."""
        return self._deferred

    def command_events(self, command_id: str) -> list[RecordedEvent] | None:
        """The events a command appended the first time it ran, or None if it never ran
        (IdempotencyKeyReused if it ran for another request body)."""
        return self._log.command_events(command_id, digest=self._request.digest_of(command_id))

    def one_at_a_time(self, stream: str) -> ContextManager[None]:
        """Commands on `stream` one after another, in this process and across the replicas that
        share a PostgreSQL log (shared.unit_of_work, shared.stream_locks)."""
        return _one_at_a_time(self._log, stream)

    def check_event(self, event: NewEvent) -> None:
        """Hold an outgoing payload to its contract (BrokenContract if it breaks it)."""
        if self._contracts is not None:
            self._contracts.check(event)

    def load(self, aggregate: Aggregate[S], stream: str) -> Loaded[S]:
        """The aggregate's state and the version `append` expects next."""
        if self._tx is not None:
            # After a handler's first write: read through its own transaction, which sees those
            # writes, and write no snapshot (on SQLite a second writer would wait on our lock).
            return _fold(self._tx.conn, self._log, aggregate, stream)
        return load_aggregate(self._log, aggregate, stream)

    def append(
        self, stream: str, expected_version: int, events: Events, *, command_id: str | None = None
    ) -> AppendResult:
        """Append to one stream (ConcurrencyError if it moved on; a repeated command id appends
        nothing and returns the first result)."""
        if self._deferred:
            with self.transaction() as writer:
                return writer.append(stream, expected_version, events, command_id=command_id)
        return self._log.append(
            stream,
            expected_version,
            events,
            command_id=command_id,
            command_digest=self._request.digest_of(command_id),
            **self._cause,
        )

    @contextmanager
    def transaction(self) -> Iterator[Writer]:
        """Several appends that commit or roll back together. No network I/O inside."""
        if self._deferred:
            tx = self._open()
            # A savepoint: a block that raises leaves nothing behind even if the handler goes on.
            with tx.conn.begin_nested():
                yield Writer(tx, self._cause, self._sealer, self._request)
            return
        with self._log.transaction() as tx:
            yield Writer(tx, self._cause, self._sealer, self._request)

    def query(self, statement: Any, params: dict[str, Any] | None = None) -> list[sa.Row[Any]]:
        """Rows of a SELECT on the service's database (its read models). Writes are refused."""
        if isinstance(statement, str):
            statement = sa.text(statement)
        if isinstance(statement, sa.TextClause):
            if not _READ_ONLY_SQL.match(statement.text):
                raise ReadOnlyViolation("query() runs SELECT statements only")
        elif not isinstance(statement, sa.sql.expression.SelectBase):
            raise ReadOnlyViolation("query() runs SELECT statements only")
        if self._tx is not None:
            return list(self._tx.conn.execute(statement, params or {}))
        return _read_only(self._log.engine, statement, params or {})

    def read_model(self, table: sa.Table, **equals: Any) -> list[dict[str, Any]]:
        """The rows of a read-model table whose columns equal `equals`, as dicts."""
        query = sa.select(table).where(*(table.c[name] == value for name, value in equals.items()))
        return [dict(row._mapping) for row in self.query(query)]

    # -- the unit of work of a handler (driven by EventStore.finish) ---------------------------

    def _open(self) -> Transaction:
        if self._tx is None:
            stack = ExitStack()
            self._tx = stack.enter_context(self._log.transaction())
            self._stack = stack
        return self._tx

    def _close(self, commit: bool) -> None:
        stack, self._stack, self._tx = self._stack, None, None
        if stack is None:
            return
        if commit:
            stack.close()
        else:
            stack.__exit__(_Rollback, _Rollback(), None)

    def _finish(self, commit_with: Callable[[Connection], bool] | None) -> bool:
        if commit_with is None:
            self._close(commit=False)
            return False
        tx = self._open()
        try:
            keep = commit_with(tx.conn)
        except BaseException:
            self._close(commit=False)
            raise
        self._close(commit=keep)
        return keep


class EventStore(DependencyProvider):
    """Gives each worker a `Store` on the service's one EventLog. See the module docstring."""

    def __init__(
        self,
        *,
        projections: Sequence[Any] = (),
        contracts: Contracts | None = None,
        upcasters: Upcasters | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.projections = list(projections)
        self.contracts = contracts
        self.upcasters = (
            upcasters if upcasters is not None else getattr(contracts, "upcasters", None)
        )
        self.clock = clock
        self.vault: Vault | None = None
        self._sealer: _Sealer | None = None
        self.log: EventLog | None = None
        self._guard = threading.Lock()
        self._stores: weakref.WeakKeyDictionary[Any, Store] = weakref.WeakKeyDictionary()
        self._log_context: weakref.WeakKeyDictionary[Any, ExitStack] = weakref.WeakKeyDictionary()

    # Typing only: on the class, the attribute is this provider (nameko finds it there); on a
    # worker's service instance nameko sets the worker's `Store`, which shadows this non-data
    # descriptor. So `self.store` in a service method is typed `Store` with no cast.
    @overload
    def __get__(self, instance: None, owner: type) -> EventStore: ...
    @overload
    def __get__(self, instance: object, owner: type) -> Store: ...
    def __get__(self, instance: object | None, owner: type) -> EventStore | Store:
        if instance is None:
            return self
        raise AttributeError("the store is given to a worker of a running service")

    def setup(self) -> None:
        self.ensure_log()

    def start(self) -> None:
        # An append by another process (a maintenance command, a replica that does not run
        # these projections) leaves the read models behind until something folds it; `follow`
        # does after this process's next commit, which may be long in coming. So look, too.
        interval = float(self.container.config.get(PROJECTION_POLL_KEY, DEFAULT_PROJECTION_POLL))
        if interval > 0 and any(hasattr(p, "catch_up") for p in self.projections):
            self.container.spawn_managed_thread(
                lambda: self._watch_projections(interval), identifier="projections.watch"
            )

    def _watch_projections(self, interval: float) -> None:
        log = self.ensure_log()
        while True:
            eventlet.sleep(interval)
            for projection in self.projections:
                if not hasattr(projection, "catch_up"):
                    continue
                try:
                    if projection.lag(log) > 0:
                        projection.catch_up(log)
                except Exception:  # a failed look is tried again at the next one
                    _log.exception("projection watch failed", projection=projection.name)

    def ensure_log(self) -> EventLog:
        """The container's EventLog, built on first use (other extensions may ask during setup,
        before or after this provider's own setup ran)."""
        with self._guard:
            if self.log is None:
                keys = Keyring.from_config(self.container.config)
                seals = self.contracts is not None and bool(self.contracts.persons)
                if seals and keys.current is None:
                    raise KekConfigError(
                        f"{self.container.service_name} seals personal data and no "
                        f"key-encryption key is configured: set {KEK_FILE_KEY} (a file holding "
                        f"it) or {KEK_KEY}; `lavoro run` makes a development one under var/"
                    )
                self.log = self._build_log(keys)
                self.vault = Vault(self.log.engine, keys=keys)
                if self.contracts is not None and seals:
                    self._sealer = _Sealer(self.contracts, self.vault)
            return self.log

    def _build_log(self, keys: Keyring) -> EventLog:
        service = self.container.service_name
        config = self.container.config
        engine = make_engine(
            config.get(DATABASE_URL_KEY) or default_url(service),
            schema=config.get(DATABASE_SCHEMA_KEY),
        )
        migrate(engine, service, keyring=keys)
        log = EventLog(
            engine,
            clock=self.clock,
            upcasters=self.upcasters,
            projections=self.projections,
            notify_channel=notify_channel(service),
        )
        for projection in self.projections:
            # Projections of shared/projections.py: create their tables, fold what they missed,
            # and keep up with appends that found them behind.
            if hasattr(projection, "catch_up"):
                projection.catch_up(log)
                projection.follow(log)
        return log

    def stop(self) -> None:
        self._dispose()

    def kill(self) -> None:
        self._dispose()

    def _dispose(self) -> None:
        if self.log is not None:
            self.log.engine.dispose()

    def engine(self) -> Engine:
        """For chassis extensions (the consumer), never handed to a service method. A method, not
        a property: nameko reads every attribute of an extension while it builds a container,
        and a property would open (and create) the database then."""
        return self.ensure_log().engine

    def get_dependency(self, worker_ctx: Any) -> Store:
        handler = _is_handler(worker_ctx)
        store = Store(
            self.ensure_log(),
            self._cause(worker_ctx),
            deferred=handler,
            contracts=self.contracts,
            sealer=self._sealer,
            # A handler's commands are its own: no HTTP request body binds them.
            request=None if handler else _request_of(worker_ctx),
        )
        self._stores[worker_ctx] = store
        return store

    def worker_setup(self, worker_ctx: Any) -> None:
        # Each worker is a fresh greenthread with an empty context: bind its log fields here.
        cause = self._stores[worker_ctx]._cause if worker_ctx in self._stores else {}
        fields: dict[str, Any] = {
            "service": self.container.service_name,
            "correlation_id": cause.get("correlation_id"),
            "actor": cause.get("actor"),
        }
        incoming = _incoming(worker_ctx)
        if incoming is not None:
            fields.update(
                source=incoming.source,
                event_id=incoming.id,
                stream=incoming.stream,
                event_type=incoming.type,
                position=incoming.position,
                causation_id=incoming.id,
            )
        stack = ExitStack()
        stack.enter_context(bound_contextvars(**{k: v for k, v in fields.items() if v is not None}))
        self._log_context[worker_ctx] = stack

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        # The consumer closes a handler's unit of work before this (to learn whether it
        # committed); this closes it for any other caller of a deferring entrypoint, e.g. tests.
        store = self._stores.get(worker_ctx)
        if store is not None and store._tx is not None:
            store._close(commit=exc_info is None)

    def worker_teardown(self, worker_ctx: Any) -> None:
        store = self._stores.pop(worker_ctx, None)
        if store is not None and store._tx is not None:
            store._close(commit=False)
        stack = self._log_context.pop(worker_ctx, None)
        if stack is not None:
            stack.close()

    def finish(self, worker_ctx: Any, commit_with: Callable[[Connection], bool] | None) -> bool:
        """Close a handler worker's unit of work. `commit_with(conn)` runs last inside it (the
        consumer writes the inbox row there): True commits everything, False rolls it back.
        Without `commit_with` (the handler failed) it rolls back. Returns whether it committed.
        A handler that wrote nothing gets a transaction of its own for `commit_with`."""
        store = self._stores.get(worker_ctx)
        if store is None:
            store = Store(self.ensure_log(), {}, deferred=True, contracts=self.contracts)
        return store._finish(commit_with)

    def _cause(self, worker_ctx: Any) -> dict[str, str | None]:
        data = worker_ctx.data
        incoming = _incoming(worker_ctx)
        if incoming is not None:
            return {
                "actor": data.get(ACTOR_KEY) or incoming.actor,
                "correlation_id": incoming.chain_correlation_id,
                "causation_id": incoming.id,
            }
        if not data.get(CORRELATION_KEY):
            # Stored in the context data so that RPC calls from this worker carry it on.
            data[CORRELATION_KEY] = str(uuid.uuid4())
        return {
            "actor": data.get(ACTOR_KEY),
            "correlation_id": data[CORRELATION_KEY],
            "causation_id": data.get(CAUSATION_KEY),
        }


def _request_of(worker_ctx: Any) -> _Request:
    data = worker_ctx.data
    return _Request(data.get(COMMAND_ID_KEY), data.get(REQUEST_DIGEST_KEY))


def _is_handler(worker_ctx: Any) -> bool:
    """Whether the worker's entrypoint asks for one unit of work per worker (the consumer's)."""
    return bool(getattr(worker_ctx.entrypoint, "unit_of_work", False))


def _incoming(worker_ctx: Any) -> IncomingEvent | None:
    if (
        _is_handler(worker_ctx)
        and worker_ctx.args
        and isinstance(worker_ctx.args[0], IncomingEvent)
    ):
        return worker_ctx.args[0]
    return None


class _Gate:
    __slots__ = ("lock", "__weakref__")

    def __init__(self) -> None:
        self.lock = threading.Lock()  # green under eventlet's monkey patching


_gates: weakref.WeakValueDictionary[tuple[int, str], _Gate] = weakref.WeakValueDictionary()
_gates_guard = threading.Lock()


@contextmanager
def _one_at_a_time(log: EventLog, stream: str) -> Iterator[None]:
    # Per log and stream; a gate lives while someone holds or waits for it. Then, on PostgreSQL,
    # the stream's advisory lock, which replicas in other processes see too (shared.stream_locks).
    key = (id(log), stream)
    with _gates_guard:
        gate = _gates.get(key)
        if gate is None:
            gate = _gates[key] = _Gate()
    with gate.lock, stream_locks(log.engine).hold(stream):
        yield


def store_for(container: Any) -> EventStore:
    """The container's EventStore provider (a service has exactly one)."""
    stores = [dep for dep in container.dependencies if isinstance(dep, EventStore)]
    if len(stores) != 1:
        raise LookupError(
            f"service {container.service_name!r} needs exactly one EventStore dependency, "
            f"has {len(stores)}"
        )
    return stores[0]


def log_for(container: Any) -> EventLog:
    """The container's EventLog, for other extensions (the relay's `log_factory`, the consumer)."""
    return store_for(container).ensure_log()


def _read_only(engine: Engine, statement: Any, params: dict[str, Any]) -> list[sa.Row[Any]]:
    with engine.connect() as conn:
        # A second guard after the keyword check: the database itself refuses writes here.
        if is_sqlite(engine):
            conn.exec_driver_sql("PRAGMA query_only = ON")
            try:
                return list(conn.execute(statement, params))
            finally:
                conn.exec_driver_sql("PRAGMA query_only = OFF")
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        return list(conn.execute(statement, params))


def _fold(conn: Connection, log: EventLog, aggregate: Aggregate[S], stream: str) -> Loaded[S]:
    state, version = aggregate.initial(), 0
    for event in log.read_stream(stream, conn=conn):
        state = aggregate.evolve(state, event)
        version = event.version
    return Loaded(state, version)
