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

Standard library, `rfc8785` and `shared.canonical` only: an auditor can read this module alone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from json.encoder import encode_basestring as _encode_string  # type: ignore[attr-defined]
from typing import Any

from shared.canonical import canonical
from shared.clock import format_ts

GENESIS = "0" * 64


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
