"""Over 10,000 events through calls and ledger, each a process of its own on the real broker (a
vhost of the suite's) and PostgreSQL, while the broker closes their connections three times, the
ledger is SIGKILLed, the calls relay is SIGKILLed between publish and checkpoint, and every
PostgreSQL session of both is ended twice mid-command. Nothing is lost, nothing happens twice,
the books hold their invariants and come out to the cent, and both logs verify, by the log API
and by `lavoro audit verify` as an operator runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import infra
from tests.reliability.checks import examined, settle
from tests.reliability.faults import Chaos, Faults, connection_names
from tests.reliability.load import Client, Load
from tests.reliability.rabbit import SHARED, NamedConnections, throwaway_vhost
from tests.reliability.system import System

CALLS, APPLICATIONS, SUSPENDED = 17, 24, 2
MIN_EVENTS = 10_000


@pytest.fixture
def system(tmp_path, unique):
    vhost = f"lavoro-rel-{unique}"
    with throwaway_vhost(infra.amqp_uri(), vhost) as uri:
        running = System(tmp_path, uri, infra.postgres_url())
        running.vhost = vhost
        try:
            yield running
        finally:
            running.close()


@pytest.mark.timeout(900)
def test_ten_thousand_events_through_kills_closes_and_ended_sessions(system, figures):
    system.start()
    calls, ledger = system.replica("calls"), system.replica("ledger")
    client = Client()
    load = Load(
        client,
        lambda: calls.base,
        lambda: ledger.base,
        calls=CALLS,
        applications=APPLICATIONS,
        suspended=SUSPENDED,
    )
    faults = Faults(system, NamedConnections(SHARED, system.vhost, connection_names()), figures)
    at = load.estimated_events()
    assert at >= MIN_EVENTS
    chaos = Chaos(
        system,
        [
            (int(at * 0.08), faults.close_connections),
            (int(at * 0.16), faults.kill_consumer),
            (int(at * 0.26), faults.end_database_sessions),
            (int(at * 0.36), faults.kill_relay_between_publish_and_checkpoint),
            (int(at * 0.48), faults.close_connections),
            (int(at * 0.60), faults.end_database_sessions),
            (int(at * 0.72), faults.close_connections),
        ],
    )
    chaos.start(load)
    try:
        load.run()
    finally:
        chaos.wait()
    expected = load.expected()
    settle(system, expected)

    found = examined(system, expected, client, figures)
    assert found.describe() == "nothing", "\n".join(faults.notes)
    assert figures.events >= MIN_EVENTS
    assert chaos.done == len(chaos.plan)
    for service in ("calls", "ledger"):
        assert audit_verify(system, service).returncode == 0


def audit_verify(system: System, service: str) -> subprocess.CompletedProcess[str]:
    """`lavoro audit verify --service <service>`, on the service's database as it runs."""
    env = dict(system.replica(service).env)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lavoro"), "audit", "verify", "--service", service],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done
