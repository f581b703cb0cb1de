"""`Observable`: a service that inherits it serves `/health` and `/metrics`, on the real broker,
with SQLite and PostgreSQL. The service is the probe of test_runner.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
from nameko.containers import ServiceContainer
from prometheus_client.parser import text_string_to_metric_families

from shared.db import make_engine, migrate
from shared.eventlog import EventLog
from shared.observability import Observability, read_figures
from shared.records import NewEvent
from shared.relay import Relay
from shared.web import LavoroHttp
from tests.helpers import wait_for
from tests.integration.test_runner import free_port, probe_service
from tests.kit.http import OPERATOR, Client
from tests.kit.service import Running, database_of


@pytest.fixture
def run_probe(harness, store_url) -> Callable[..., Running]:
    """Start the probe on the broker (or on `amqp`) and the test's database, handling `source`."""

    def start(*, source: str | None = None, amqp: str | None = None) -> Running:
        config = {"LAVORO_RETRY_ATTEMPTS": 2, "LAVORO_RETRY_BASE_DELAY": 0.01}
        if amqp:
            config["AMQP_URI"] = amqp
        return harness.start(probe_service("probe", source), database_of(store_url), **config)

    return start


def metrics(base: str) -> dict[tuple[str, tuple], float]:
    reply = requests.get(f"{base}/metrics", timeout=5)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "service"))
            samples[(sample.name, labels)] = sample.value
    return samples


def add_note(client: Client, note_id: str, token: str | None = OPERATOR) -> requests.Response:
    body = {"note_id": note_id, "text": "x"}
    return client.post("/notes", body, token=token, key=f"add-{note_id}")


def test_nameko_takes_the_endpoints_and_the_dependency_from_the_base_class(unique, tmp_path):
    # A database of its own: building the container already opens the EventStore's log.
    config = {"AMQP_URI": "memory://", "DATABASE_URL": f"sqlite:///{tmp_path / 'probe.db'}"}
    container = ServiceContainer(probe_service(unique), config)
    routes = {(e.method_name, e.url) for e in container.entrypoints if isinstance(e, LavoroHttp)}
    assert {("health", "/health"), ("metrics", "/metrics"), ("add_note", "/notes")} <= routes
    assert any(isinstance(d, Observability) for d in container.dependencies)
    public = {e.method_name for e in container.entrypoints if getattr(e, "public", False)}
    assert public == {"health", "metrics"}


def test_health_and_metrics_of_a_running_service(run_probe, harness, amqp_uri, tmp_path):
    probe = run_probe(source="src")
    base = probe.client.base

    answer = wait_for(
        lambda: (r := requests.get(f"{base}/health", timeout=5)).status_code == 200 and r,
        message="a healthy probe",
    )
    body = answer.json()  # no token needed
    assert body["status"] == "ok" and body["service"] == harness.name("probe")
    assert body["checks"]["database"] == {"ok": True, "head_position": 0, "head_hash": "0" * 64}
    assert body["checks"]["broker"] == {"ok": True}
    assert body["checks"]["relay"] == {"ok": True, "state": "leading", "lag": 0}

    for n in range(3):
        assert add_note(probe.client, f"n{n}").status_code == 201
    assert add_note(probe.client, "anonymous", token=None).status_code == 401

    # Another service's events: one handled, one that fails both tries and is parked.
    source_log = EventLog(make_engine(f"sqlite:///{tmp_path / 'source.db'}"))
    migrate(source_log.engine)
    source_log.append("s-1", 0, [NewEvent("ping", {"fail": False})])
    source_log.append("s-2", 0, [NewEvent("ping", {"fail": True})])
    Relay(source_log, amqp_uri, harness.name("src")).publish_pending()

    def settled():
        found = metrics(base)
        return (
            found[("lavoro_handler_successes_total", ())] == 1
            and found[("lavoro_dead_letters", (("status", "parked"),))] == 1
            and found[("lavoro_relay_lag_events", ())] == 0
            and found
        )

    found = wait_for(settled, timeout=20, message="the handled and the parked event")
    # 3 notes and 1 pong: the head of the log is the count of events appended.
    assert found[("lavoro_events_appended_total", ())] == 4
    assert found[("lavoro_consumer_events_total", (("outcome", "retries"),))] == 1
    assert found[("lavoro_consumer_events_total", (("outcome", "handled"),))] == 1
    assert found[("lavoro_inbox_events", ())] == 1
    assert found[("lavoro_projection_lag_events", (("projection", "probe_notes"),))] == 0
    assert found[("lavoro_relay_leading", ())] == 1
    assert found[("lavoro_relay_published_events_total", ())] == 4
    assert found[("lavoro_database_up", ())] == 1
    created = (("method", "POST"), ("route", "/notes"), ("status", "201"))
    refused = (("method", "POST"), ("route", "/notes"), ("status", "401"))
    assert found[("lavoro_http_request_duration_seconds_count", created)] == 3
    assert found[("lavoro_http_request_duration_seconds_count", refused)] == 1
    assert found[("lavoro_http_request_duration_seconds_sum", created)] > 0
    health = (("method", "GET"), ("route", "/health"), ("status", "200"))
    assert found[("lavoro_http_request_duration_seconds_count", health)] >= 1

    figures = read_figures(probe.log.engine, ["probe_notes"])
    assert (figures.head_position, figures.parked, figures.inbox) == (4, 1, 1)
    assert figures.head_hash == probe.log.head()[1]
    source_log.engine.dispose()


def test_health_is_503_naming_the_broker_when_it_does_not_answer(run_probe):
    closed = free_port()
    base = run_probe(amqp=f"amqp://guest:guest@127.0.0.1:{closed}/").client.base
    reply = requests.get(f"{base}/health", timeout=10)
    assert reply.status_code == 503
    body = reply.json()
    assert body["status"] == "failing"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["broker"]["error"].startswith("ConnectionRefusedError")
    # Metrics still answer: the database is fine, the relay cannot publish.
    assert metrics(base)[("lavoro_database_up", ())] == 1
