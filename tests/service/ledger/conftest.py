"""The ledger's HTTP API without a broker (tests/service/conftest.py); tests/integration/ledger/
runs the whole service on RabbitMQ and PostgreSQL."""

from __future__ import annotations

import pytest

from services.ledger.service import LedgerService
from tests.kit.service import Running


@pytest.fixture
def ledger(serve) -> Running:
    return serve(LedgerService)
