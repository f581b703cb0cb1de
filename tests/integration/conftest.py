"""The integration tier: services on the real RabbitMQ (tests/kit/broker.py) and databases of
their own, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kit.broker import Harness


@pytest.fixture
def harness(amqp_uri, unique) -> Iterator[Harness]:
    harness = Harness(amqp_uri, unique)
    yield harness
    harness.close()
