"""The service tier: a service's HTTP API in a nameko container with no broker, on a SQLite file
of its own (tests/kit/service.py). What needs RabbitMQ is in tests/integration/."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.kit.service import Running, without_broker


@pytest.fixture
def serve(container_factory, tmp_path) -> Callable[..., Running]:
    """Start a service class's HTTP API (`config` over the common configuration)."""

    def serve(service_cls: type, **config) -> Running:
        db = {"DATABASE_URL": f"sqlite:///{tmp_path / service_cls.name}.db"}
        return without_broker(container_factory, service_cls, db, **config)

    return serve
