"""A service whose `AMQP_URI` lists several broker nodes (a cluster's) and whose first node is
down: the relay publishes, the consumer consumes and `/health` passes, each through the node
that answers; with every node down `/health` names each. The nodes here are the real broker
and ports nobody listens on; tests/reliability/ stops a node of a real 3-node cluster."""

from __future__ import annotations

import socket
import uuid

import kombu
import pytest
import requests
from nameko.containers import ServiceContainer

from shared.consumer import queue_name
from shared.db import make_engine, migrate
from shared.dependencies import log_for
from shared.dlq import dlq_name
from shared.eventlog import EventLog
from shared.records import NewEvent
from shared.relay import Relay
from shared.web import bound_port
from tests.helpers import wait_for
from tests.infra import drop_schema, postgres_url
from tests.integration.test_runner import probe_service

pytestmark = pytest.mark.integration
TOKEN = "failover-test-operator"


def nobody_listens() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"amqp://guest:guest@127.0.0.1:{sock.getsockname()[1]}/"


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    if request.param == "sqlite":
        yield {"DATABASE_URL": f"sqlite:///{tmp_path / 'probe.db'}"}
        return
    url, schema = postgres_url(), "f_" + uuid.uuid4().hex[:12]
    yield {"DATABASE_URL": url, "DATABASE_SCHEMA": schema}
    drop_schema(url, schema)


@pytest.fixture
def probe(amqp_uri, unique, database):
    containers = []

    def start(broker: str, *, consumes: bool = True) -> tuple[ServiceContainer, str]:
        config = {
            "AMQP_URI": broker,
            "WEB_SERVER_ADDRESS": "127.0.0.1:0",
            "LAVORO_TOKENS": f"tester:operator:{TOKEN}",
            **database,
        }
        source = unique + "src" if consumes else None
        container = ServiceContainer(probe_service(unique, source), config)
        container.start()
        containers.append(container)
        return container, f"http://127.0.0.1:{bound_port(container)}"

    yield start
    for container in containers:
        container.kill()
    with kombu.Connection(amqp_uri) as conn:
        channel = conn.default_channel
        for queue in (queue_name(unique, unique + "src"), dlq_name(unique)):
            channel.queue_delete(queue)
        for exchange in (f"{unique}.events", f"{unique}src.events"):
            channel.exchange_delete(exchange)


def test_the_first_node_down_the_service_publishes_consumes_and_is_healthy(
    probe, amqp_uri, unique, tmp_path
):
    nodes = f"{nobody_listens()};{amqp_uri}"
    container, base = probe(nodes)
    health = requests.get(f"{base}/health", timeout=10)
    assert health.status_code == 200, health.text
    assert health.json()["checks"]["broker"] == {"ok": True}

    reply = requests.post(
        f"{base}/notes",
        json={"note_id": "n1", "text": "x"},
        headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "add-n1"},
        timeout=10,
    )
    assert reply.status_code == 201, reply.text
    log = log_for(container)  # the relay had it confirmed: its checkpoint reaches the head
    wait_for(lambda: _relay_checkpoint(log) == log.head()[0], 20, "the note published")

    # Another service's relay, on the same list, publishes a ping; the consumer handles it.
    source_log = EventLog(make_engine(f"sqlite:///{tmp_path / 'source.db'}"))
    migrate(source_log.engine)
    source_log.append("s-1", 0, [NewEvent("ping", {"fail": False})])
    assert Relay(source_log, nodes, unique + "src").publish_pending() == 1
    wait_for(lambda: any(e.type == "ponged" for e in log.read_all()), 20, "the ping handled")


def test_every_node_down_health_names_each(probe):
    first, second = nobody_listens(), nobody_listens()
    _, base = probe(f"{first};{second}", consumes=False)  # a consumer would wait for a node
    reply = requests.get(f"{base}/health", timeout=20)
    assert reply.status_code == 503
    error = reply.json()["checks"]["broker"]["error"]
    assert error.startswith("ConnectionRefusedError")
    for node in (first, second):
        assert node.replace("guest:guest", "guest:**") in error


def _relay_checkpoint(log: EventLog) -> int:
    from shared.observability import read_figures

    return read_figures(log.engine).relay_checkpoint
