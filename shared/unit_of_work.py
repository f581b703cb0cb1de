"""The unit of work: load what a decision needs, decide, append all of it in one transaction.

Every state change of every service walks this one path (STYLE.md, "One writer path"):

    outcome = unit_of_work.run(store, plan, command_id=cmd.id)

- A **plan** is `plan(session) -> Decision`: it loads the aggregates the decision needs through
  the session (which remembers the version each stream was read at) and asks the pure domain;
  the **decision** maps each stream to the events to append to it, in order.
- **One transaction.** Each written stream is appended with the version it was read at (0 for a
  stream the plan did not read: one the decision creates, such as a new award); each stream that
  was read and *not* written is checked too (an append of no events at its version), because a
  refusal or a decision taken on some totals must not stand if those totals moved meanwhile.
- **Concurrency.** A `ConcurrencyError` runs the plan again on fresh state after a short random
  pause, up to `attempts` times, then goes up (409 at the edge; a retry in a handler).
- **Serialised per stream.** Commands on one stream decide one after another in this process (the
  first stream a plan loads is its gate), so a call taking many applications at once does not make
  most of them lose the race and decide again. Handlers are not gated: their transaction stays
  open until the consumer commits it with the inbox row, after the plan returns.
- **Idempotent commands.** A command id (the HTTP `Idempotency-Key`, scoped to actor and
  endpoint) that ran before returns the events its first run appended, `repeated=True`, without
  deciding again: the state has moved on and deciding again would refuse what was already done.
  The first stream's append carries the id, so two concurrent runs of one command append once.
  The store binds an HTTP command's id to its body's digest: the same id with another body
  raises `IdempotencyKeyReused` (422) from `command_events` or that append.
- **Contracts.** Each outgoing payload is checked against the schema registered for its type and
  version (`store.check_event`) before anything is appended: a bug must not reach the log, let
  alone the wire.

`Outcome` is what a command answers (`reply()`: the events appended and the ids they name); it
never depends on a read model having caught up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import Any, Protocol, TypeVar

import structlog

from shared.errors import ConcurrencyError
from shared.records import Aggregate, AppendResult, Events, Loaded, NewEvent, RecordedEvent

S = TypeVar("S")
Decision = Mapping[str, Sequence[NewEvent]]
ATTEMPTS = 10
ID_SUFFIXES = ("_id", "_cup", "_reference")
_PAUSE = 0.005  # seconds × attempt: the longest random pause before deciding again
_log = structlog.get_logger("lavoro.unit_of_work")


class Writer(Protocol):
    def append(
        self, stream: str, expected_version: int, events: Events, *, command_id: str | None = None
    ) -> AppendResult: ...


class UnitStore(Protocol):
    """What the unit of work needs of a store: `shared.dependencies.Store` in a service,
    `shared.testing.MemoryStore` in a unit test."""

    @property
    def in_handler(self) -> bool: ...

    def load(self, aggregate: Aggregate[S], stream: str) -> Loaded[S]: ...

    def transaction(self) -> ContextManager[Writer]: ...

    def command_events(self, command_id: str) -> list[RecordedEvent] | None: ...

    def one_at_a_time(self, stream: str) -> ContextManager[None]: ...

    def check_event(self, event: NewEvent) -> None: ...


class Session:
    """What a plan loads through, for one attempt: each stream's state and the version it was
    read at. Loading a stream twice in one attempt folds it once."""

    def __init__(self, store: UnitStore, gate: Callable[[str], None]) -> None:
        self._store = store
        self._gate = gate
        self._loaded: dict[str, Loaded[Any]] = {}

    @property
    def versions(self) -> dict[str, int]:
        return {stream: loaded.version for stream, loaded in self._loaded.items()}

    def load(self, aggregate: Aggregate[S], stream: str) -> S:
        """The aggregate's state on `stream` (its initial state if the stream is empty)."""
        return self.loaded(aggregate, stream).state

    def loaded(self, aggregate: Aggregate[S], stream: str) -> Loaded[S]:
        """The state and the version it was read at (0: nothing on the stream yet)."""
        if stream not in self._loaded:
            self._gate(stream)
            self._loaded[stream] = self._store.load(aggregate, stream)
        return self._loaded[stream]


Plan = Callable[[Session], Decision]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The events a run appended (or, repeated, those its first run appended), in log order."""

    events: tuple[RecordedEvent, ...] = ()
    repeated: bool = False
    named: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def naming(self, **ids: Any) -> Outcome:
        """The same outcome, also naming ids the caller knows (the one a command addresses):
        a decision that appended nothing new still answers with them."""
        return dataclasses.replace(self, named={**self.named, **ids})

    @property
    def types(self) -> list[str]:
        return [event.type for event in self.events]

    def first(self, key: str) -> Any:
        """The first value of a payload member among the events, or None."""
        return next((e.data[key] for e in self.events if e.data.get(key) is not None), None)

    def ids(self) -> dict[str, Any]:
        """Each id the events name (members ending in `_id`, `_cup` or `_reference`): one value
        as it is, several as a list under the plural (`award_ids`), in the order they appear."""
        found: dict[str, list[Any]] = {}
        for event in self.events:
            for key, value in event.data.items():
                if key.endswith(ID_SUFFIXES) and isinstance(value, str) and value:
                    values = found.setdefault(key, [])
                    if value not in values:
                        values.append(value)
        return {
            key if len(v) == 1 else f"{key}s": v[0] if len(v) == 1 else v
            for key, v in found.items()
        }

    def reply(self, **named: Any) -> dict[str, Any]:
        """A command's answer, the same in every service: the events appended (type, stream,
        version, position: a reader may wait for a read model to pass that position), whether
        this was a repeat of a command already run, and the ids the events name. `named` adds
        ids the caller knows (the one a command addresses) for a decision that appended nothing."""
        body: dict[str, Any] = {
            "events": [
                {"type": e.type, "stream": e.stream, "version": e.version, "position": e.position}
                for e in self.events
            ],
            "repeated": self.repeated,
        }
        body.update({k: v for k, v in {**self.named, **named}.items() if v is not None})
        body.update(self.ids())
        return body


def run(
    store: UnitStore,
    plan: Plan,
    *,
    command_id: str | None = None,
    attempts: int = ATTEMPTS,
) -> Outcome:
    """Decide and append (see the module docstring)."""
    if command_id is not None:
        earlier = store.command_events(command_id)
        if earlier is not None:
            return Outcome(tuple(earlier), repeated=True)
    with contextlib.ExitStack() as gates:

        def gate(stream: str) -> None:
            # Only the first stream of the first attempt: one gate per command, so two commands
            # can never wait on each other's.
            if not gated and not store.in_handler:
                gates.enter_context(store.one_at_a_time(stream))
                gated.append(stream)

        gated: list[str] = []
        for attempt in range(1, attempts + 1):
            session = Session(store, gate)
            decision = plan(session)
            try:
                return _append(store, session.versions, decision, command_id)
            except ConcurrencyError as error:
                if attempt == attempts:
                    raise
                _log.info("decision raced; deciding again", stream=error.stream, attempt=attempt)
                time.sleep(random.uniform(0, _PAUSE * attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def _append(
    store: UnitStore, versions: Mapping[str, int], decision: Decision, command_id: str | None
) -> Outcome:
    writes = [(stream, list(events)) for stream, events in decision.items() if events]
    if not writes:
        return Outcome()
    for _stream, events in writes:
        for event in events:
            store.check_event(event)
    recorded: list[RecordedEvent] = []
    with store.transaction() as writer:
        for index, (stream, events) in enumerate(writes):
            result = writer.append(
                stream,
                versions.get(stream, 0),
                events,
                command_id=command_id if index == 0 else None,
            )
            if result.duplicate:
                # A concurrent run of the same command won; its transaction held it all.
                return Outcome(tuple(result.events), repeated=True)
            recorded.extend(result.events)
        written = {stream for stream, _ in writes}
        for stream, version in versions.items():
            if stream not in written:
                writer.append(stream, version, [])
    return Outcome(tuple(recorded))
