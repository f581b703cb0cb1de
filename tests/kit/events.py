"""A recorded event as a service's log hands it out, for tests that need one without that log:
in a fold, or as the body a relay publishes. Its hashes are placeholders: no test of the chain
reads them."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from shared.clock import UTC
from shared.records import RecordedEvent


def recorded(
    type_: str,
    data: dict[str, Any],
    *,
    position: int,
    stream: str = "s",
    version: int = 1,
    schema_version: int = 1,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    actor: str | None = None,
    at: dt.datetime | None = None,
) -> RecordedEvent:
    """The event at `position` of a log, recorded `at` (now, if not given)."""
    now = at or dt.datetime.now(UTC)
    return RecordedEvent(
        position=position,
        id=str(uuid.uuid4()),
        stream=stream,
        version=version,
        type=type_,
        schema_version=schema_version,
        data=data,
        correlation_id=correlation_id,
        causation_id=causation_id,
        actor=actor,
        occurred_at=now,
        recorded_at=now,
        prev_hash="0" * 64,
        hash="f" * 64,
    )
