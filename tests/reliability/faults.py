"""The faults the suite causes while the load runs, each as an operator or an accident would:

- **connections closed** by the broker (`rabbitmqctl close_connection`, by connection name), then
  waited for until the services are connected again;
- **a consumer killed**: the ledger's process SIGKILLed (its messages in flight go back to the
  queue unacknowledged), then started again;
- **a relay killed between publish and checkpoint**: the calls relay's checkpoint row is locked
  by the suite, so the relay publishes a batch, has it confirmed and then waits to move its
  checkpoint; once the ledger has handled events past that checkpoint, calls is SIGKILLed and
  started again, and its relay publishes that batch a second time;
- **PostgreSQL sessions ended** mid-command: `pg_terminate_backend` on every session of both
  services while at least one of them is in a statement or a transaction.

`Chaos` runs them from a green thread at given numbers of events appended, so they land in the
middle of the load, not before or after it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import eventlet
import sqlalchemy as sa

from shared import tables as t
from tests.helpers import wait_for
from tests.reliability.figures import Figures
from tests.reliability.load import Load
from tests.reliability.rabbit import NamedConnections
from tests.reliability.system import SERVICES, System

FAULT_DUE_WITHIN = 600.0  # seconds the load may take to reach a fault's number of events

FAULT_TIMEOUT = 60.0


def connection_names(services: tuple[str, ...] = SERVICES) -> list[str]:
    return [f"lavoro-{role}-{service}" for service in services for role in ("relay", "consumer")]


@dataclasses.dataclass
class Faults:
    system: System
    connections: NamedConnections
    figures: Figures

    @property
    def notes(self) -> list[str]:
        return self.figures.notes

    def close_connections(self) -> None:
        closed, before = self.connections.close()
        self.figures.connection_closes += closed
        self.figures.reconnects += self.connections.wait_back(before)
        self.notes.append(f"closed {closed} broker connections")

    def kill_consumer(self, service: str = "ledger") -> None:
        process = self.system.replica(service)
        before = self.connections.now()
        self.system.restart(process)
        self.figures.kills += 1
        self.figures.reconnects += _back(self.connections, before, service)
        self.notes.append(f"SIGKILLed {process.label} (its consumer) and started it again")

    def kill_relay_between_publish_and_checkpoint(self, service: str = "calls") -> None:
        system, process = self.system, self.system.replica(service)
        before = self.connections.now()
        with system.engine(service).connect() as conn, conn.begin() as hold:
            locked = conn.execute(
                sa.select(t.checkpoints.c.position)
                .where(t.checkpoints.c.name == "relay")
                .with_for_update()
            ).scalar_one()
            published = wait_for(
                lambda: _checkpoint_waiting(system, service),
                FAULT_TIMEOUT,
                f"{service}'s relay published a batch and waits to move its checkpoint",
            )
            assert published > locked
            process.kill()
            hold.rollback()
        head = system.head(service)
        process.start()
        process.wait_healthy()
        self.figures.kills += 1
        self.figures.reconnects += _back(self.connections, before, service)
        self.notes.append(
            f"SIGKILLed {process.label} with its relay between publish and checkpoint "
            f"(confirmed up to {published}, checkpoint left at {locked}, log head {head}) "
            "and started it again"
        )

    def end_database_sessions(self) -> None:
        system = self.system
        wait_for(
            lambda: any(
                s["state"] in ("active", "idle in transaction")
                for service in SERVICES
                for s in system.sessions(service)
            ),
            FAULT_TIMEOUT,
            "a service's session in the middle of a command",
        )
        ended = busy = 0
        for service in SERVICES:
            e, b = system.terminate_sessions(service)
            ended, busy = ended + e, busy + b
        self.figures.db_sessions_ended += ended
        self.notes.append(f"ended {ended} PostgreSQL sessions, {busy} of them mid-command")


def _checkpoint_waiting(system: System, service: str) -> int | None:
    """The position a relay waits to move its checkpoint to: its statement waiting on the lock.
    psycopg2 sends its parameters in the statement's text, so the position is there."""
    for session in system.sessions(service):
        found = _CHECKPOINT_TO.search(session["query"] or "")
        if session["wait_event_type"] == "Lock" and found:
            return int(found.group(1))
    return None


_CHECKPOINT_TO = re.compile(r"INSERT INTO checkpoints .*VALUES \('relay', (\d+)")


def _back(connections: NamedConnections, before: dict[str, set[str]], service: str) -> int:
    """The restarted service's relay and consumer connections, new ones."""
    own = NamedConnections(connections.ctl, connections.vhost, connection_names((service,)))
    return own.wait_back({name: before.get(name, set()) for name in own.names})


class Chaos:
    """Faults at thresholds of events appended (both logs), one after the other, from a green
    thread, while the load runs."""

    def __init__(self, system: System, plan: list[tuple[int, Callable[[], None]]]) -> None:
        self.system = system
        self.plan = sorted(plan, key=lambda step: step[0])
        self.done = 0
        self._thread: eventlet.greenthread.GreenThread | None = None

    def start(self, load: Load) -> None:
        self._thread = eventlet.spawn(self._guarded, load)

    def _guarded(self, load: Load) -> None:
        try:
            self._run(lambda: load.done == len(load.calls))
        except BaseException as exc:
            load.abort(exc)
            raise

    def _run(self, load_finished: Callable[[], bool]) -> None:
        for threshold, fault in self.plan:

            def due(threshold: int = threshold) -> bool:
                events = self.system.events()
                if events < threshold and load_finished():
                    raise AssertionError(
                        f"the load ended at {events} events, before the fault planned at "
                        f"{threshold}"
                    )
                return events >= threshold

            wait_for(due, FAULT_DUE_WITHIN, f"{threshold} events, the next fault's", interval=0.2)
            fault()
            self.done += 1

    def wait(self) -> None:
        assert self._thread is not None
        self._thread.wait()
