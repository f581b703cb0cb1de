"""Every AMQP connection a running service opens has a name, and every one comes back after the
broker closes it: two services on the real broker, under a broker user of the test's own (so that
the broker's list tells their connections from everyone else's), each of their connections closed
from the broker's side, then an event still goes from one to the other."""

from __future__ import annotations

import pytest
import requests
from nameko.containers import ServiceContainer

from shared.consumer import handles
from shared.dependencies import EventStore, log_for
from shared.records import IncomingEvent, NewEvent
from shared.relay import RelayExtension
from shared.service import Service
from shared.web import bound_port, command, json_response
from tests.helpers import wait_for
from tests.integration.broker_users import close, connections_of, vhost_with_users
from tests.integration.test_runner import AddNote

TOKEN = "connections-test-operator"


def writer(name: str) -> type:
    class Writer(Service):
        store = EventStore()
        relay = RelayExtension(poll_interval=0.2, backoff=(0.05, 0.5))

        @command("POST", "/notes", schema=AddNote)
        def add_note(self, cmd):
            note = cmd.data
            self.store.append(f"note-{note['note_id']}", 0, [NewEvent("note_added", note)])
            return json_response(201, note)

    Writer.name = name
    return Writer


def reader(name: str, source: str) -> type:
    class Reader(Service):
        store = EventStore()
        relay = RelayExtension(poll_interval=0.2, backoff=(0.05, 0.5))

        @handles(source, "note_added")
        def on_note(self, event: IncomingEvent) -> None:
            self.store.append(f"seen-{event.data['note_id']}", 0, [NewEvent("note_seen", {})])

    Reader.name = name
    return Reader


@pytest.mark.integration
def test_every_connection_is_named_and_comes_back_after_the_broker_closes_it(
    amqp_uri, unique, tmp_path
):
    alpha, beta = unique + "alpha", unique + "beta"
    with vhost_with_users(amqp_uri, unique, "svc") as vhost:
        user = f"{unique}-svc"
        containers = []
        for cls, name in ((writer(alpha), alpha), (reader(beta, alpha), beta)):
            config = {
                "AMQP_URI": vhost.uri(user),
                "DATABASE_URL": f"sqlite:///{tmp_path / name}.db",
                "WEB_SERVER_ADDRESS": "127.0.0.1:0",
                "LAVORO_TOKENS": f"tester:operator:{TOKEN}",
            }
            container = ServiceContainer(cls, config)
            container.start()
            containers.append(container)
        try:
            expected = {
                f"lavoro-relay-{alpha}",
                f"lavoro-relay-{beta}",
                f"lavoro-consumer-{beta}",
            }
            ports = [bound_port(c) for c in containers]

            def open_now() -> list:
                for port in ports:  # the health checks open (and close) theirs meanwhile
                    requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
                return connections_of(user)

            def settled() -> list | None:
                found = open_now()
                named = {seen.name for seen in found}
                return found if expected <= named else None

            before = wait_for(settled, 20, "the services' connections")
            assert [seen for seen in before if seen.name is None] == []

            for seen in before:
                close(seen.pid)

            old = {seen.pid for seen in before}

            def back() -> list | None:
                found = [seen for seen in open_now() if seen.pid not in old]
                return found if expected <= {seen.name for seen in found} else None

            again = wait_for(back, 30, "every named connection to come back")
            assert [seen for seen in again if seen.name is None] == []
            assert {seen.name for seen in again} <= expected | {
                f"lavoro-health-{alpha}",
                f"lavoro-health-{beta}",
                f"lavoro-dlq-{beta}",
            }

            created = requests.post(
                f"http://127.0.0.1:{ports[0]}/notes",
                json={"note_id": "n1", "text": "after the broker closed everything"},
                headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "n1"},
                timeout=5,
            )
            assert created.status_code == 201, created.text
            beta_log = log_for(containers[1])
            wait_for(
                lambda: [e.type for e in beta_log.read_all()] == ["note_seen"],
                30,
                "the note to reach beta",
            )
        finally:
            for container in containers:
                container.kill()
