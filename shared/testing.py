"""An in-memory store for the *unit* tests of a service's plans (never for integration tests).

`MemoryStore` does what `shared.unit_of_work` needs of a store, as the real one does it: streams
with expected versions (`ConcurrencyError`), transactions that keep all or nothing, command ids
whose second run gets the first run's events, per-stream gates, and the service's contracts. So
a service's plans, its domain and the versions they carry run without a database; the same
unit-of-work suite runs on it, SQLite and PostgreSQL (tests/integration/test_unit_of_work.py).
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shared.clock import UTC, Clock, FixedClock
from shared.contracts import Contracts
from shared.errors import ConcurrencyError
from shared.records import Aggregate, AppendResult, Events, Loaded, NewEvent, RecordedEvent
from shared.unit_of_work import Writer

EPOCH = dt.datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


class MemoryStore:
    """Streams as lists, one lock for all writes (as the real log serialises on its head)."""

    def __init__(self, *, contracts: Contracts | None = None, clock: Clock | None = None) -> None:
        self.streams: dict[str, list[RecordedEvent]] = defaultdict(list)
        self.position = 0
        self.contracts = contracts
        self.clock = clock or FixedClock(EPOCH)
        self.in_handler = False
        self._commands: dict[str, list[RecordedEvent]] = {}
        self._write = threading.RLock()
        self._gates: dict[str, threading.Lock] = defaultdict(threading.Lock)

    # -- what the unit of work needs -----------------------------------------------------------

    def load(self, aggregate: Aggregate[Any], stream: str) -> Loaded[Any]:
        state, events = aggregate.initial(), list(self.streams.get(stream, []))
        for event in events:
            state = aggregate.evolve(state, event)
        return Loaded(state, len(events))

    @contextmanager
    def transaction(self) -> Iterator[Writer]:
        with self._write:
            writer = _Writer(self)
            yield writer
            for stream, events in writer.pending.items():
                self.streams[stream].extend(events)
            self._commands.update(writer.commands)
            self.position = writer.position

    def command_events(self, command_id: str) -> list[RecordedEvent] | None:
        found = self._commands.get(command_id)
        return None if found is None else list(found)

    @contextmanager
    def one_at_a_time(self, stream: str) -> Iterator[None]:
        with self._gates[stream]:
            yield

    def check_event(self, event: NewEvent) -> None:
        if self.contracts is not None:
            self.contracts.check(event)

    # -- what a test reads -----------------------------------------------------------------------

    def events(self, stream: str) -> list[tuple[str, dict[str, Any]]]:
        return [(e.type, e.data) for e in self.streams.get(stream, [])]

    def snapshot(self) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        return {s: [(e.type, copy.deepcopy(e.data)) for e in es] for s, es in self.streams.items()}

    def state(self, aggregate: Aggregate[Any], stream: str) -> Any:
        return self.load(aggregate, stream).state


class _Writer:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.pending: dict[str, list[RecordedEvent]] = {}
        self.commands: dict[str, list[RecordedEvent]] = {}
        self.position = store.position

    def append(
        self, stream: str, expected_version: int, events: Events, *, command_id: str | None = None
    ) -> AppendResult:
        if command_id is not None:
            earlier = self.store._commands.get(command_id, self.commands.get(command_id))
            if earlier is not None:
                return AppendResult(list(earlier), duplicate=True)
        current = len(self.store.streams.get(stream, [])) + len(self.pending.get(stream, []))
        if current != expected_version:
            raise ConcurrencyError(stream, expected_version, current)
        now = self.store.clock.now()
        recorded = []
        for offset, new in enumerate(events, start=1):
            self.position += 1
            recorded.append(
                RecordedEvent(
                    position=self.position,
                    id=new.id or str(uuid.uuid4()),
                    stream=stream,
                    version=current + offset,
                    type=new.type,
                    schema_version=new.schema_version,
                    data=copy.deepcopy(new.data),
                    correlation_id=None,
                    causation_id=None,
                    actor=None,
                    occurred_at=new.occurred_at or now,
                    recorded_at=now,
                    prev_hash="",
                    hash="",
                )
            )
        self.pending.setdefault(stream, []).extend(recorded)
        if command_id is not None:
            self.commands[command_id] = list(recorded)
        elif recorded:
            for earlier in self.commands.values():  # a command's row spans its transaction
                earlier.extend(recorded)
        return AppendResult(recorded, duplicate=False)
