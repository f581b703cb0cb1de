"""The ledger's HTTP API in a real nameko container on a free port, with its own SQLite file and
no broker: the relay is replaced (nameko's replace_dependencies) and only the HTTP entrypoints run
(restrict_entrypoints). The integration tests run the whole service on RabbitMQ and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from nameko.testing.services import replace_dependencies, restrict_entrypoints

from services.ledger.service import LedgerService
from shared.dependencies import log_for
from shared.eventlog import EventLog
from shared.web import bound_port
from tests.service.ledger.client import HTTP_ENDPOINTS, TOKENS, Client


@pytest.fixture
def start_ledger(container_factory, tmp_path) -> Callable[..., tuple[Client, EventLog]]:
    def start(service_cls: type = LedgerService) -> tuple[Client, EventLog]:
        config = {
            "AMQP_URI": "memory://",
            "WEB_SERVER_ADDRESS": "127.0.0.1:0",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
            "LAVORO_TOKENS": TOKENS,
        }
        container = container_factory(service_cls, config)
        replace_dependencies(container, "relay")
        restrict_entrypoints(container, *HTTP_ENDPOINTS)
        container.start()
        return Client(f"http://127.0.0.1:{bound_port(container)}"), log_for(container)

    return start


@pytest.fixture
def ledger(start_ledger) -> tuple[Client, EventLog]:
    return start_ledger()
