"""Small test helpers: waiting on a condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import eventlet

T = TypeVar("T")
POLL_INTERVAL = 0.01


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, message: str = "condition") -> T:
    """Poll `predicate` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        eventlet.sleep(POLL_INTERVAL)  # yield to the greenlets doing the work, then look again
