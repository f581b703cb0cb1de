"""The calls service on the real broker (tests/kit/broker.py), on a clock the test moves, listening
to the ledger under its name in the test (run by the test, or played by it)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.clock import FixedClock
from tests.kit.broker import Harness
from tests.kit.service import Running
from tests.service.calls.builders import PSEUDONYM_KEY, START, calls_on


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def start_calls(harness: Harness, clock: FixedClock) -> Callable[..., Running]:
    """Start calls on `db` (`config` over the common configuration)."""

    def start(db: dict[str, str], **config) -> Running:
        return harness.start(
            calls_on(clock),
            db,
            CALLS_PSEUDONYM_KEY=PSEUDONYM_KEY,
            LAVORO_RETRY_ATTEMPTS=2,
            **config,
        )

    return start
