"""Replaying the dead letters an operator released: in order, ahead of newer events of the stream.

`shared.dlq.retry` and `skip` only mark rows `retrying`; the running service replays them from the
`dead_letters` table. (Re-publishing them was rejected: a newer event already queued would
overtake them.) A replay runs in the lane of its stream (shared/consumer.py), so nothing else of
that stream runs meanwhile: a new event of the stream has its released predecessors replayed
first, and a poller queues a replay for the streams that get no new event. A replayed event is
handled as a new one is (retried in place) and marked `retried` in the handler's transaction; if
it fails again it is parked again, and the rest of its stream stays behind it.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol, TypeVar

import structlog
from structlog.contextvars import bound_contextvars

from shared import dlq
from shared.records import IncomingEvent, MalformedEvent

_log = structlog.get_logger("lavoro.consumer")
T = TypeVar("T")


class Outcome(Protocol):
    @property
    def status(self) -> str: ...  # handled | duplicate | failed

    @property
    def error(self) -> str | None: ...


class Lanes(Protocol):
    """What a replay needs from the consumer it runs in (shared.consumer.EventDispatcher)."""

    stats: collections.Counter[str]

    def office(self) -> dlq.DeadLetterOffice: ...

    def route(self, source: str, type_: str) -> Any | None:
        """The entrypoint that handles `type_` from `source` here, if any."""

    def attempts(
        self, route: Any, event: IncomingEvent, letter: dlq.DeadLetter | None
    ) -> tuple[Outcome, int]:
        """Handle the event, retrying in place; the last outcome and the attempts it took."""

    def steadily(self, what: str, step: Callable[[], T]) -> T:
        """`step()`, waited out and tried again while the database or broker is away."""

    def pause(self, seconds: float) -> None:
        """Wait; raises (ending a replay or the poller) when the container stops."""

    def enqueue_replay(self, source: str, stream: str) -> None:
        """Queue a replay of the stream's released events in the stream's lane."""


class Redelivery:
    """The replays of one consumer."""

    def __init__(self, lanes: Lanes) -> None:
        self.lanes = lanes
        self._queued: set[tuple[str, str]] = set()  # streams with a poller's replay in their lane

    def replay_queued(self, source: str, stream: str) -> None:
        """A replay the poller queued has reached its stream's lane."""
        self._queued.discard((source, stream))
        self.replay(source, stream)

    def replay(self, source: str, stream: str) -> None:
        """Handle the stream's released events in position order; stop at one parked again."""
        office = self.lanes.office()
        for letter in self.lanes.steadily(
            "reading released events", partial(office.released, source, stream)
        ):
            with bound_contextvars(event_id=letter.event_id, position=letter.position, replay=True):
                if not self._replay_one(source, letter):
                    return

    def poll(self, sources: Iterable[str], interval: float) -> None:
        """Every `interval` seconds, queue a replay for each stream of `sources` with released
        events and none queued yet; runs until `pause` raises as the container stops."""
        find = partial(self.lanes.office().streams_released, sources)
        while True:
            self.lanes.pause(interval)
            for key in self.lanes.steadily("looking for released events", find):
                if key not in self._queued:
                    self._queued.add(key)
                    self.lanes.enqueue_replay(*key)

    def _replay_one(self, source: str, letter: dlq.DeadLetter) -> bool:
        """Handle one released event; False if it was parked again (the rest wait behind it)."""
        try:
            event = IncomingEvent.from_body(source, json.loads(letter.body))
        except (MalformedEvent, ValueError) as exc:
            return self._repark(letter, f"malformed: {exc}", 0)
        route = self.lanes.route(source, event.type)
        if route is None:
            return self._repark(letter, f"no handler for {event.type} here", 0)
        outcome, attempts = self.lanes.attempts(route, event, letter)
        if outcome.status == "failed":
            return self._repark(letter, outcome.error or "", attempts)
        if outcome.status == "duplicate":
            office = self.lanes.office()
            self.lanes.steadily("resolving a dead letter", partial(office.resolve, letter))
        self.lanes.stats["replayed"] += 1
        return True

    def _repark(self, letter: dlq.DeadLetter, error: str, attempts: int) -> bool:
        office = self.lanes.office()
        behind = self.lanes.steadily(
            "parking again", partial(office.repark, letter, error, attempts)
        )
        total = letter.attempts + attempts
        self.lanes.steadily(
            "publishing to the dead-letter queue",
            partial(office.publish, dlq.Parcel.of(letter), error, total),
        )
        self.lanes.stats["parked"] += 1
        _log.error(
            "released event failed again; parked",
            error=error.partition("\n")[0],
            behind=len(behind),
        )
        return False
