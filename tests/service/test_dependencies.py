"""The EventStore dependency provider, in a real nameko container without a broker, on SQLite and
PostgreSQL: the narrow object a worker gets, who-caused-it filled from the worker context, a
handler's unit of work, read-only queries, and the one EventLog per container."""

import datetime as dt
import re

import pytest
import sqlalchemy as sa
from eventlet.event import Event
from nameko.containers import ServiceContainer
from nameko.extensions import Entrypoint
from nameko.testing.services import entrypoint_hook

from shared import inbox
from shared.clock import UTC
from shared.dependencies import (
    ACTOR_KEY,
    CAUSATION_KEY,
    CORRELATION_KEY,
    EventStore,
    ReadOnlyViolation,
    log_for,
    notify_channel,
    store_for,
)
from shared.eventlog import ANY_VERSION
from shared.projections import Projection
from shared.records import Aggregate, IncomingEvent, NewEvent
from tests.kit.events import recorded


class Call(Entrypoint):
    """A bare entrypoint: `entrypoint_hook` runs the method, no broker involved."""


class HandlerCall(Entrypoint):
    """Stands in for the consumer's entrypoint: asks the store for one unit of work per worker."""

    unit_of_work = True


call = Call.decorator
handler_call = HandlerCall.decorator

counter = Aggregate("counter", initial=lambda: 0, evolve=lambda total, e: total + e.data["n"])

totals_metadata = sa.MetaData()
totals = sa.Table(
    "totals",
    totals_metadata,
    sa.Column("stream", sa.String(200), primary_key=True),
    sa.Column("total", sa.Integer, nullable=False),
)
totals_projection = Projection("totals", totals_metadata)


@totals_projection.on("added")
def _fold_added(conn, event):
    updated = conn.execute(
        totals.update()
        .where(totals.c.stream == event.stream)
        .values(total=totals.c.total + event.data["n"])
    ).rowcount
    if not updated:
        conn.execute(totals.insert().values(stream=event.stream, total=event.data["n"]))


def added(n):
    return NewEvent("added", {"n": n})


def make_service(name):
    class Service:
        store = EventStore(projections=[totals_projection])

        @call
        def the_store(self):
            return self.store

        @call
        def add(self, stream, n, expected=ANY_VERSION, command_id=None):
            return self.store.append(stream, expected, [added(n)], command_id=command_id)

        @call
        def add_twice(self, stream):
            self.store.append(stream, ANY_VERSION, [added(1)])
            return self.store.append(stream, ANY_VERSION, [added(2)])

        @call
        def add_to_two_then_fail(self, first, second):
            with self.store.transaction() as tx:
                tx.append(first, ANY_VERSION, [added(1)])
                tx.append(second, ANY_VERSION, [added(1)])
                raise RuntimeError("after both appends")

        @call
        def total(self, stream):
            return self.store.load(counter, stream)

        @call
        def query(self, statement, params=None):
            return [tuple(row) for row in self.store.query(statement, params)]

        @call
        def totals(self, stream):
            return self.store.read_model(totals, stream=stream)

        @call
        def now(self):
            return self.store.clock.now()

        @handler_call
        def on_event(self, event, fail=False):
            loaded = self.store.load(counter, f"seen-{event.stream}")
            self.store.append(f"seen-{event.stream}", loaded.version, [added(1)])
            # Read after a write in the same handler: the store reads through the open unit.
            after = self.store.load(counter, f"seen-{event.stream}")
            if fail:
                raise RuntimeError("handler failed after appending")
            return after

    Service.name = name
    return Service


@pytest.fixture
def start(store_url):
    url, schema = store_url
    containers = []

    def start(service_cls, **config):
        settings = {"DATABASE_URL": url, **config}
        if schema:
            settings["DATABASE_SCHEMA"] = schema
        container = ServiceContainer(service_cls, settings)
        container.start()
        containers.append(container)
        return container

    yield start
    for container in containers:
        container.stop()


def hook(container, method, **context):
    with entrypoint_hook(container, method, context_data=context or None) as fn:
        return fn


def an_incoming(source="calls", stream="call-1", position=1, correlation_id=None, actor="mario"):
    event = recorded(
        "grant_awarded",
        {"amount": "100.00"},
        position=position,
        stream=stream,
        version=position,
        correlation_id=correlation_id,
        actor=actor,
        at=dt.datetime(2024, 3, 1, 9, 30, tzinfo=UTC),
    )
    return IncomingEvent.from_body(source, event.to_json())


def run_handler(container, event, *, fail=False, commit=True):
    """Spawn the handler as the consumer does: close its unit of work in handle_result, writing the
    inbox row inside it. Returns (committed, result, error)."""
    provider = store_for(container)
    entrypoint = next(e for e in container.entrypoints if e.method_name == "on_event")
    done = Event()

    def commit_with(conn):
        return inbox.record(conn, event, dt.datetime.now(UTC)) and commit

    def handle_result(worker_ctx, result, exc_info):
        committed = provider.finish(worker_ctx, commit_with if exc_info is None else None)
        done.send((committed, result, exc_info[1] if exc_info else None))
        return result, exc_info

    container.spawn_worker(entrypoint, (event,), {"fail": fail}, handle_result=handle_result)
    return done.wait()


def test_a_worker_gets_a_narrow_store_not_an_engine(start, unique):
    container = start(make_service(unique))
    store = hook(container, "the_store")()
    public = {name for name in dir(store) if not name.startswith("_")}
    assert public == {
        "clock",
        "load",
        "append",
        "transaction",
        "query",
        "read_model",
        # what shared.unit_of_work asks of it
        "in_handler",
        "command_events",
        "one_at_a_time",
        "check_event",
    }
    assert hook(container, "now")().tzinfo is not None


def test_append_takes_actor_and_correlation_from_the_worker_context(start, unique):
    container = start(make_service(unique))
    add = hook(
        container,
        "add",
        **{ACTOR_KEY: "operator:anna", CORRELATION_KEY: "corr-1", CAUSATION_KEY: "cmd-9"},
    )
    (event,) = add("counter-1", 5, expected=0).events
    assert (event.actor, event.correlation_id, event.causation_id) == (
        "operator:anna",
        "corr-1",
        "cmd-9",
    )
    loaded = hook(container, "total")("counter-1")
    assert (loaded.state, loaded.version) == (5, 1)
    (stored,) = log_for(container).read_stream("counter-1")
    assert stored.actor == "operator:anna" and stored.correlation_id == "corr-1"


def test_without_a_correlation_id_a_worker_makes_one_for_all_its_events(start, unique):
    container = start(make_service(unique))
    hook(container, "add_twice")("s-1")
    hook(container, "add_twice")("s-2")
    events = log_for(container).read_stream("s-1") + log_for(container).read_stream("s-2")
    first, second, third, fourth = (e.correlation_id for e in events)
    assert first == second and third == fourth and first != third
    assert re.fullmatch(r"[0-9a-f-]{36}", first)


def test_a_command_id_seen_before_appends_nothing(start, unique):
    container = start(make_service(unique))
    add = hook(container, "add")
    first = add("s", 1, command_id="cmd-1")
    again = add("s", 1, command_id="cmd-1")
    assert again.duplicate and [e.id for e in again.events] == [e.id for e in first.events]
    assert log_for(container).head()[0] == 1


def test_a_transaction_that_raises_leaves_no_event(start, unique):
    container = start(make_service(unique))
    with pytest.raises(RuntimeError):
        hook(container, "add_to_two_then_fail")("a", "b")
    assert log_for(container).head()[0] == 0


def test_projections_fold_in_the_append_and_read_models_are_readable(start, unique):
    container = start(make_service(unique))
    hook(container, "add")("call-7", 3)
    hook(container, "add")("call-7", 4)
    assert hook(container, "totals")("call-7") == [{"stream": "call-7", "total": 7}]


def test_query_reads_and_refuses_to_write(start, unique):
    container = start(make_service(unique))
    hook(container, "add")("s", 1)
    query = hook(container, "query")
    assert query("SELECT stream, version FROM events") == [("s", 1)]
    assert query(sa.select(sa.func.count()).select_from(sa.table("events"))) == [(1,)]
    with pytest.raises(ReadOnlyViolation):
        query("DELETE FROM events")
    with pytest.raises(ReadOnlyViolation):
        query(sa.delete(totals))
    # Past the keyword check, the database itself refuses: a read-only transaction / query_only.
    with pytest.raises(sa.exc.DBAPIError):
        query("WITH doomed AS (SELECT 1) DELETE FROM totals")
    assert hook(container, "totals")("s") == [{"stream": "s", "total": 1}]


def test_one_event_log_per_container_for_other_extensions(start, unique):
    container = start(make_service(unique))
    log = log_for(container)
    assert log is log_for(container) is store_for(container).log
    assert log.notify_channel == notify_channel(unique) == f"lavoro_{unique}"
    # Migrated at setup: the chassis tables are there.
    with log.engine.connect() as conn:
        assert inbox.count(conn) == 0

    class NoStore:
        name = unique + "x"

        @call
        def nothing(self):
            return None

    with pytest.raises(LookupError):
        log_for(ServiceContainer(NoStore, {}))


def test_handler_writes_and_the_inbox_row_commit_together(start, unique):
    container = start(make_service(unique))
    event = an_incoming(correlation_id=None)
    committed, result, error = run_handler(container, event)
    assert committed and error is None
    # The read after the write inside the handler saw it.
    assert (result.state, result.version) == (1, 1)
    (seen,) = log_for(container).read_stream("seen-call-1")
    assert seen.causation_id == event.id
    assert seen.correlation_id == event.id  # first event of a chain: its own id
    assert seen.actor == "mario"
    with log_for(container).engine.connect() as conn:
        assert inbox.handled(conn, event.id)

    # The same event again: the inbox row exists, so the handler's appends roll back.
    committed, _, _ = run_handler(container, event)
    assert not committed
    assert len(log_for(container).read_stream("seen-call-1")) == 1


def test_a_handler_that_appends_then_raises_leaves_no_event_and_no_inbox_row(start, unique):
    container = start(make_service(unique))
    event = an_incoming(correlation_id="chain-1")
    committed, _, error = run_handler(container, event, fail=True)
    assert not committed and isinstance(error, RuntimeError)
    assert log_for(container).read_stream("seen-call-1") == []
    with log_for(container).engine.connect() as conn:
        assert not inbox.handled(conn, event.id)

    committed, _, _ = run_handler(container, event)
    assert committed
    (seen,) = log_for(container).read_stream("seen-call-1")
    assert seen.correlation_id == "chain-1"


def test_without_database_url_the_service_database_comes_from_the_environment(
    tmp_path, monkeypatch, unique
):
    path = tmp_path / f"{unique}.db"
    monkeypatch.setenv(f"{unique.upper()}_DATABASE_URL", f"sqlite:///{path}")
    container = ServiceContainer(make_service(unique), {})
    container.start()
    try:
        hook(container, "add")("s", 2)
        assert path.exists()
        assert log_for(container).engine.url.database == str(path)
        assert log_for(container).head()[0] == 1
    finally:
        container.stop()
