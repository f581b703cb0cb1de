"""Small test helpers: waiting on a condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import eventlet

T = TypeVar("T")
POLL_INTERVAL = 0.01


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    message: str = "condition",
    *,
    interval: float = POLL_INTERVAL,
) -> T:
    """Poll `predicate` every `interval` seconds until it returns a truthy value; fail the test
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        eventlet.sleep(interval)  # yield to the greenlets doing the work, then look again


def rabbitmq_connection_pids(connection_name: str) -> list[str]:
    """The broker's ids of the open connections with this client-provided name."""
    import subprocess

    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "--no-table-headers", "pid", "client_properties"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("\t")[0] for line in listing.splitlines() if f'"{connection_name}"' in line]


def close_rabbitmq_connections(connection_name: str) -> int:
    """Kill the named connections from the broker's side, as a network fault would."""
    import subprocess

    pids = rabbitmq_connection_pids(connection_name)
    for pid in pids:
        subprocess.run(
            ["rabbitmqctl", "-q", "close_connection", pid, "killed by a test"], check=True
        )
    return len(pids)
