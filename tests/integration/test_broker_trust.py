"""Only the source's broker user can speak for the source: on the real broker, with two users made
for the test (the source's and an intruder's, both allowed to publish anywhere, as the development
guest is), a consumer configured with `LAVORO_SOURCE_USERS` handles what the source's relay
published and refuses, with the reason, what the intruder published in the source's name."""

from __future__ import annotations

import json

import amqp
import kombu
import pytest
import sqlalchemy as sa
from nameko.containers import ServiceContainer
from nameko.standalone.events import get_event_exchange

from shared import tables as t
from shared.consumer import handles
from shared.db import make_engine, migrate
from shared.dependencies import EventStore, log_for
from shared.dlq import ERROR_HEADER, REFUSED, dlq_name
from shared.eventlog import EventLog
from shared.records import IncomingEvent, NewEvent
from shared.relay import Relay
from tests.helpers import wait_for
from tests.integration.broker_users import vhost_with_users


def ledger_like(name: str, source: str) -> type:
    """Books a commitment for every `grant_awarded` of `source`, as the ledger does."""

    class Books:
        store = EventStore()

        @handles(source, "grant_awarded")
        def on_award(self, event: IncomingEvent) -> None:
            self.store.append(
                f"commitment-{event.stream}-{event.version}",
                0,
                [NewEvent("commitment_recorded", {"amount": event.data["amount"]})],
            )

    Books.name = name
    return Books


def a_log(path) -> EventLog:
    log = EventLog(make_engine(f"sqlite:///{path}"))
    migrate(log.engine)
    return log


def publish_as(uri: str, exchange: str, body: str, **properties) -> None:
    with kombu.Connection(uri, transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer()
        producer.publish(
            body.encode("utf-8"),
            exchange=kombu.Exchange(exchange, type="topic", durable=True),
            routing_key="grant_awarded",
            content_type="application/json",
            content_encoding="utf-8",
            **properties,
        )


@pytest.mark.integration
def test_an_event_published_by_another_broker_user_is_refused_and_dead_lettered(
    amqp_uri, unique, tmp_path
):
    source, books = unique + "calls", unique + "ledger"
    with vhost_with_users(amqp_uri, unique, "calls", "intruder", "ledger") as vhost:
        calls_user, intruder, ledger_user = (
            f"{unique}-{r}" for r in ("calls", "intruder", "ledger")
        )
        container = ServiceContainer(
            ledger_like(books, source),
            {
                "AMQP_URI": vhost.uri(ledger_user),
                "DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
                "LAVORO_SOURCE_USERS": {source: calls_user},
                "LAVORO_RETRY_ATTEMPTS": 1,
            },
        )
        container.start()
        try:
            calls_log = a_log(tmp_path / "calls.db")
            calls_log.append("award-1", 0, [NewEvent("grant_awarded", {"amount": "8000.00"})])
            relay = Relay(calls_log, vhost.uri(calls_user), source)
            assert relay.publish_pending() == 1

            # The intruder's own log makes envelopes that look like the source's.
            forger = a_log(tmp_path / "forger.db")
            forged = [
                forger.append("award-1", 0, [NewEvent("grant_awarded", {"amount": "1.00"})]),
                forger.append("award-9", 0, [NewEvent("grant_awarded", {"amount": "5000.00"})]),
            ]
            exchange = f"{source}.events"
            bodies = [result.events[0].to_text() for result in forged]
            publish_as(vhost.uri(intruder), exchange, bodies[0], user_id=intruder)
            publish_as(vhost.uri(intruder), exchange, bodies[1])  # no user_id at all
            # Claiming to be the source's user: RabbitMQ itself refuses it.
            with pytest.raises(amqp.exceptions.PreconditionFailed):
                publish_as(vhost.uri(intruder), exchange, bodies[1], user_id=calls_user)

            # The source's next event of the same stream is not held behind the forged one.
            calls_log.append("award-1", 1, [NewEvent("grant_awarded", {"amount": "2000.00"})])
            assert relay.publish_pending() == 1

            books_log = log_for(container)

            def refused() -> list:
                with books_log.engine.connect() as conn:
                    return conn.execute(
                        sa.select(t.dead_letters).where(t.dead_letters.c.status == REFUSED)
                    ).all()

            wait_for(lambda: len(refused()) == 2, 20, "two refused events")
            wait_for(lambda: books_log.head()[0] == 2, 20, "two commitments")
            with books_log.engine.connect() as conn:
                handled = conn.execute(sa.select(t.inbox.c.event_id)).scalars().all()
            assert sorted(handled) == sorted(e.id for e in calls_log.read_all())
            amounts = sorted(e.data["amount"] for e in books_log.read_all())
            assert amounts == ["2000.00", "8000.00"]  # never the forged 5000.00

            errors = {json.loads(row.body)["stream"]: row.error for row in refused()}
            assert errors == {
                "award-1": f"refused: published by broker user {intruder!r}, not "
                f"{source}'s {calls_user!r}",
                "award-9": f"refused: published without a broker user, not by {source}'s "
                f"{calls_user!r}",
            }
            with kombu.Connection(vhost.uri(ledger_user)) as conn:
                queue = conn.SimpleQueue(dlq_name(books))
                copies = [queue.get(timeout=5) for _ in range(2)]
                for copy in copies:
                    copy.ack()
                queue.close()
            assert {c.headers[ERROR_HEADER].split(":")[0] for c in copies} == {"refused"}
        finally:
            container.kill()
            calls_log.engine.dispose()


def test_without_source_users_any_publisher_is_accepted_as_in_development(
    amqp_uri, unique, tmp_path
):
    """One broker user for everything (the development guest): nothing to check against."""
    source, books = unique + "calls", unique + "ledger"
    container = ServiceContainer(
        ledger_like(books, source),
        {"AMQP_URI": amqp_uri, "DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"},
    )
    container.start()
    try:
        calls_log = a_log(tmp_path / "calls.db")
        calls_log.append("award-1", 0, [NewEvent("grant_awarded", {"amount": "8000.00"})])
        assert Relay(calls_log, amqp_uri, source).publish_pending() == 1
        wait_for(lambda: log_for(container).head()[0] == 1, 20, "the commitment")
    finally:
        container.kill()
        with kombu.Connection(amqp_uri) as conn:
            channel = conn.default_channel
            channel.queue_delete(f"{books}.from.{source}")
            channel.queue_delete(dlq_name(books))
            channel.exchange_delete(get_event_exchange(source, {}).name)
        calls_log.engine.dispose()
