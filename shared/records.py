"""The values a service's domain code works with: events new, recorded and incoming, aggregates.

Standard library only (plus the hash chain's rule, `shared.chain`), so that a domain module can
import them without the database or the broker: `NewEvent` is what a decision produces,
`RecordedEvent` what the log gives back with a position and its place in the chain, `IncomingEvent`
another service's recorded event as a handler receives it (the JSON of `RecordedEvent.to_json()`,
read by `from_body`, plus the name of its source). `Aggregate` describes how a stream folds into a
state; `shared.aggregates.load` does the folding against a log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from shared.canonical import canonical
from shared.chain import envelope_of, envelope_text
from shared.clock import format_ts, parse_ts

S = TypeVar("S")


def prefixed(prefix: str) -> Callable[[str], str]:
    """Names made of a prefix and an id, the one convention of stream names and derived ids:
    `call_stream = prefixed("call")` gives `call_stream("42") == "call-42"`."""

    def name(id_: str) -> str:
        return f"{prefix}-{id_}"

    name.__qualname__ = name.__name__ = f"{prefix}_name"
    return name


@dataclasses.dataclass(frozen=True)
class NewEvent:
    """An event a decision produced, before the log gives it a position."""

    type: str
    data: dict[str, Any]
    schema_version: int = 1
    id: str | None = None
    occurred_at: dt.datetime | None = None


# Not frozen: the log builds one per row read, and a frozen dataclass is several times slower to
# construct (replays read hundreds of thousands).

Events = Sequence[NewEvent]  # what one append adds to one stream, in order


@dataclasses.dataclass(slots=True)
class RecordedEvent:
    position: int
    id: str
    stream: str
    version: int
    type: str
    schema_version: int
    data: dict[str, Any]
    correlation_id: str | None
    causation_id: str | None
    actor: str | None
    occurred_at: dt.datetime
    recorded_at: dt.datetime
    prev_hash: str
    hash: str

    def envelope(self) -> dict[str, Any]:
        """The members the hash covers, in their JSON form (shared/chain.py)."""
        return envelope_of(
            self.position,
            self.id,
            self.stream,
            self.version,
            self.type,
            self.schema_version,
            self.data,
            self.correlation_id,
            self.causation_id,
            self.actor,
            self.occurred_at,
            self.recorded_at,
        )

    def to_text(self) -> str:
        """`to_json()` as JSON text: the envelope's JCS with `prev_hash` and `hash` appended (the
        message body the relay publishes; cheaper than serialising the dict)."""
        envelope = envelope_text(
            self.position,
            self.id,
            self.stream,
            self.version,
            self.type,
            self.schema_version,
            canonical(self.data),
            self.correlation_id,
            self.causation_id,
            self.actor,
            format_ts(self.occurred_at),
            format_ts(self.recorded_at),
        )
        return f'{envelope[:-1]},"prev_hash":"{self.prev_hash}","hash":"{self.hash}"}}'

    def to_json(self) -> dict[str, Any]:
        """The envelope plus `prev_hash` and `hash`: one line of an export, one message body."""
        body = self.envelope()
        body["prev_hash"] = self.prev_hash
        body["hash"] = self.hash
        return body


@dataclasses.dataclass(frozen=True)
class AppendResult:
    events: list[RecordedEvent]
    duplicate: bool  # True: the command id was seen before, nothing was appended

    @property
    def version(self) -> int:
        return self.events[-1].version if self.events else 0


# -- another service's event, as it arrives ------------------------------------------------------

_FIELDS = tuple(field.name for field in dataclasses.fields(RecordedEvent))


class MalformedEvent(ValueError):
    """A message body that is not the envelope of an event; it is parked, never retried."""


@dataclasses.dataclass(slots=True)
class IncomingEvent(RecordedEvent):
    """Another service's event, as a handler receives it: the event its log recorded, and the
    service it came from (keyword-only, after the recorded event's own fields)."""

    source: str = dataclasses.field(kw_only=True)

    @classmethod
    def from_body(cls, source: str, body: Any) -> IncomingEvent:
        """Read a message body; raise MalformedEvent naming what is wrong with it."""
        if not isinstance(body, Mapping):
            raise MalformedEvent(f"the body is a {type(body).__name__}, not a JSON object")
        missing = [name for name in _FIELDS if name not in body]
        if missing:
            raise MalformedEvent(f"the body lacks {', '.join(missing)}")
        try:
            event = cls(
                source=source,
                position=_integer(body, "position"),
                id=_text(body, "id"),
                stream=_text(body, "stream"),
                version=_integer(body, "version"),
                type=_text(body, "type"),
                schema_version=_integer(body, "schema_version"),
                data=dict(body["data"]),
                correlation_id=_optional_text(body, "correlation_id"),
                causation_id=_optional_text(body, "causation_id"),
                actor=_optional_text(body, "actor"),
                occurred_at=parse_ts(_text(body, "occurred_at")),
                recorded_at=parse_ts(_text(body, "recorded_at")),
                prev_hash=_text(body, "prev_hash"),
                hash=_text(body, "hash"),
            )
        except (TypeError, ValueError) as exc:
            raise MalformedEvent(f"the body does not read as an event: {exc}") from exc
        return event

    @property
    def chain_correlation_id(self) -> str:
        """What the events a handler appends carry as correlation id: the incoming event's own
        correlation id, or, for the first event of a chain, its id."""
        return self.correlation_id or self.id


def _text(body: Mapping[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _optional_text(body: Mapping[str, Any], name: str) -> str | None:
    value = body[name]
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or null")
    return value


def _integer(body: Mapping[str, Any], name: str) -> int:
    value = body[name]
    # bool is an int in Python, and a float position would be a producer bug: refuse both.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer")
    return value


# -- aggregates ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Aggregate(Generic[S]):
    """How one kind of stream folds into a state: `initial()`, then `evolve(state, event)` per
    event; with `snapshot_every`, `to_json`/`from_json` let `shared.aggregates.load` start from a
    snapshot taken with the same `snapshot_tag`."""

    name: str
    initial: Callable[[], S]
    evolve: Callable[[S, RecordedEvent], S]
    snapshot_every: int | None = None
    to_json: Callable[[S], Any] | None = None
    from_json: Callable[[Any], S] | None = None
    snapshot_tag: str = "1"


@dataclasses.dataclass(frozen=True)
class Loaded(Generic[S]):
    state: S
    version: int
