"""The calls service's HTTP API without a broker (tests/service/conftest.py), on a clock the test
moves; tests/integration/calls/ runs it on RabbitMQ, answered by the ledger or a test playing it."""

from __future__ import annotations

import pytest

from shared.clock import FixedClock
from tests.kit.service import Running
from tests.service.calls.builders import PSEUDONYM_KEY, START, calls_on


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def calls(serve, clock) -> Running:
    return serve(calls_on(clock), CALLS_PSEUDONYM_KEY=PSEUDONYM_KEY)
