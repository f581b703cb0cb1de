"""The integration tier: services on the real RabbitMQ (tests/kit/broker.py) and databases of
their own, SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from tests import infra
from tests.kit.broker import Harness


@pytest.fixture
def harness(request, amqp_uri, unique) -> Iterator[Harness]:
    # The test's databases first, so that they are dropped only once its services have stopped.
    for databases in ("store_url", "databases"):
        if databases in request.fixturenames:
            request.getfixturevalue(databases)
    harness = Harness(amqp_uri, unique)
    yield harness
    harness.close()


@pytest.fixture(params=["sqlite", "postgres"])
def databases(request, tmp_path) -> Iterator[Callable[[str], dict[str, str]]]:
    """A database of its own for each name a test asks for, as a service's configuration: a
    SQLite file, or a PostgreSQL schema (dropped at the end)."""
    url = infra.postgres_url() if request.param == "postgres" else None
    schemas: list[str] = []

    def database(name: str) -> dict[str, str]:
        if url is None:
            return {"DATABASE_URL": f"sqlite:///{tmp_path / name}.db"}
        schemas.append("t_" + uuid.uuid4().hex[:16])
        return {"DATABASE_URL": url, "DATABASE_SCHEMA": schemas[-1]}

    yield database
    if url is not None:
        for schema in schemas:
            infra.drop_schema(url, schema)
