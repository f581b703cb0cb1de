"""The hash chain of an event log: the one rule an auditor re-computes (docs/audit.md).

- The envelope of an event is the JSON object with exactly these members: `position`, `id`,
  `stream`, `version`, `type`, `schema_version`, `data`, `correlation_id`, `causation_id`,
  `actor`, `occurred_at`, `recorded_at`. `position`, `version`, `schema_version` are JSON
  integers; `occurred_at`, `recorded_at` are RFC 3339 strings in UTC with microseconds and `Z`
  (`2024-03-01T09:30:00.000000Z`); an absent `correlation_id`, `causation_id` or `actor` is
  `null`; `data` is the payload object exactly as stored (amounts are strings, personal data
  ciphertext strings; no floating-point numbers).
- `hash = lowercase hex of SHA-256( ASCII(prev_hash) ‖ UTF-8(JCS(envelope)) )`, where JCS is the
  JSON Canonicalization Scheme of RFC 8785.
- The event at position 1 has `prev_hash` = 64 zeros (`GENESIS`); every later event's `prev_hash`
  is the `hash` of the event before it. Positions are 1, 2, 3 … without gaps.

`walk` verifies a log against the rule, its head row, its checkpoints and an anchor (a head
published earlier), and names the first position that breaks with the reasons docs/audit.md
lists, in the order its checks run.

Standard library, `rfc8785` and `shared.canonical` only: an auditor can read this module alone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring as _encode_string  # type: ignore[attr-defined]
from typing import Any, Protocol

from shared.canonical import canonical
from shared.clock import format_ts

GENESIS = "0" * 64
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def envelope_of(
    position: int,
    id: str,
    stream: str,
    version: int,
    type: str,
    schema_version: int,
    data: dict[str, Any],
    correlation_id: str | None,
    causation_id: str | None,
    actor: str | None,
    occurred_at: dt.datetime | str,
    recorded_at: dt.datetime | str,
) -> dict[str, Any]:
    """The members the hash covers, in their JSON form."""
    return {
        "position": position,
        "id": id,
        "stream": stream,
        "version": version,
        "type": type,
        "schema_version": schema_version,
        "data": data,
        "correlation_id": correlation_id,
        "causation_id": causation_id,
        "actor": actor,
        "occurred_at": occurred_at if isinstance(occurred_at, str) else format_ts(occurred_at),
        "recorded_at": recorded_at if isinstance(recorded_at, str) else format_ts(recorded_at),
    }


def _json_str(value: str | None) -> str:
    return "null" if value is None else _encode_string(value)


def envelope_text(
    position: int,
    id: str,
    stream: str,
    version: int,
    type: str,
    schema_version: int,
    data_json: str,
    correlation_id: str | None,
    causation_id: str | None,
    actor: str | None,
    occurred_at: str,
    recorded_at: str,
) -> str:
    """JCS of the envelope, written member by member in JCS order, with `data_json` (the JCS of
    the data) spliced in. Equal to `canonical(envelope_of(...))` (a hypothesis test holds them
    equal): strings are escaped as JSON.stringify does, integers are positions and versions far
    below 2**53, timestamps are ASCII. A lone surrogate fails at UTF-8 encoding, as in JCS."""
    return (
        f'{{"actor":{_json_str(actor)},"causation_id":{_json_str(causation_id)},'
        f'"correlation_id":{_json_str(correlation_id)},"data":{data_json},"id":{_json_str(id)},'
        f'"occurred_at":"{occurred_at}","position":{position},"recorded_at":"{recorded_at}",'
        f'"schema_version":{schema_version},"stream":{_json_str(stream)},"type":{_json_str(type)},'
        f'"version":{version}}}'
    )


def chain_digest(prev_hash: str, envelope_json: str) -> str:
    """The rule on the envelope's JCS text: SHA-256(ASCII(prev_hash) ‖ UTF-8(envelope_json))."""
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(envelope_json.encode("utf-8"))
    return digest.hexdigest()


def chain_hash(prev_hash: str, envelope: dict[str, Any]) -> str:
    """SHA-256(ASCII(prev_hash) ‖ JCS(envelope)), lowercase hex."""
    return chain_digest(prev_hash, canonical(envelope))


# -- verifying a log -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Anchor:
    """A head published earlier (`position:hash`, as `lavoro audit verify` prints it)."""

    position: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        position, _, digest = text.strip().partition(":")
        if not position.isdigit() or int(position) < 1 or not _HEX64.match(digest):
            raise ValueError(f"an anchor is <position>:<64 hex digits>, not {text!r}")
        return cls(int(position), digest)


@dataclasses.dataclass(frozen=True)
class Break:
    """The first position where a log stops being what its chain, head and anchor say."""

    position: int
    reason: str


@dataclasses.dataclass(frozen=True)
class Walk:
    """What `walk` found: the first break (None if none), the events that verified before it,
    and the hash of the last of those."""

    broken: Break | None
    checked: int
    last_hash: str


class Chained(Protocol):
    """An event as verification reads it (shared.records.RecordedEvent is one)."""

    position: int
    prev_hash: str
    hash: str

    def envelope(self) -> dict[str, Any]: ...


def walk(
    events: Iterable[Chained],
    *,
    head: tuple[int, str] | None = None,
    checkpoints: Mapping[str, int] | None = None,
    anchor: Anchor | None = None,
) -> Walk:
    """Verify `events` (in position order) against the rule, and against the log's `head`
    (position, hash), its `checkpoints` (name -> position) and an `anchor`, if given.

    At each position, in this order: it is the next one; it is not beyond the head; its hash is
    the rule's hash of its own prev_hash and envelope; its prev_hash is the hash before it; it
    agrees with the anchor. After the last event: the head names it; no checkpoint, and not the
    anchor, is beyond it. docs/audit.md says what each kind of tampering gives."""
    prev, expected = GENESIS, 1

    def broken(position: int, reason: str) -> Walk:
        return Walk(Break(position, reason), expected - 1, prev)

    for event in events:
        if event.position != expected:
            return broken(expected, f"position {expected} is missing")
        if head is not None and expected > head[0]:
            return broken(expected, f"position {expected} is beyond the head ({head[0]})")
        if chain_hash(event.prev_hash, event.envelope()) != event.hash:
            return broken(expected, "hash does not match the event's content")
        if event.prev_hash != prev:
            return broken(expected, f"prev_hash does not match the hash of position {expected - 1}")
        if anchor is not None and anchor.position == expected and anchor.hash != event.hash:
            return broken(expected, f"the hash at position {expected} does not match the anchor")
        prev, expected = event.hash, expected + 1
    last = expected - 1
    if head is not None and head[0] > last:
        return broken(expected, f"position {expected} is missing (the head is at {head[0]})")
    if head is not None and head[1] != prev:
        return broken(last, f"the head hash does not match the event at position {last}")
    ahead = {name: at for name, at in (checkpoints or {}).items() if at > last}
    if ahead:
        name = max(ahead, key=ahead.__getitem__)
        return broken(
            expected, f"position {expected} is missing (the {name} checkpoint is at {ahead[name]})"
        )
    if anchor is not None and anchor.position > last:
        return broken(
            expected, f"position {expected} is missing (the anchor is at {anchor.position})"
        )
    return Walk(None, last, prev)
