"""The event values (shared/records.py): an incoming event is the recorded event its source
published, read back from the message body, plus the source's name."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from shared.clock import UTC
from shared.records import IncomingEvent, MalformedEvent, RecordedEvent


def a_recorded(correlation_id: str | None = "corr-1") -> RecordedEvent:
    stamp = dt.datetime(2024, 3, 1, 9, 30, 0, 120, tzinfo=UTC)
    return RecordedEvent(
        position=7,
        id="id-1",
        stream="award-1",
        version=2,
        type="tranche_paid",
        schema_version=1,
        data={"amount": "10.00"},
        correlation_id=correlation_id,
        causation_id="c-1",
        actor="op",
        occurred_at=stamp,
        recorded_at=stamp,
        prev_hash="a" * 64,
        hash="b" * 64,
    )


def test_an_incoming_event_is_the_recorded_event_with_its_source():
    recorded = a_recorded()
    incoming = IncomingEvent.from_body("calls", recorded.to_json())
    assert isinstance(incoming, RecordedEvent)
    assert incoming.source == "calls"
    fields = [field.name for field in dataclasses.fields(RecordedEvent)]
    assert {name: getattr(incoming, name) for name in fields} == dataclasses.asdict(recorded)
    assert incoming.to_json() == recorded.to_json()  # the source is not part of the envelope


def test_the_source_is_keyword_only():
    recorded = a_recorded()
    values = [getattr(recorded, field.name) for field in dataclasses.fields(RecordedEvent)]
    with pytest.raises(TypeError):
        IncomingEvent(*values, "calls")  # type: ignore[call-arg]
    assert IncomingEvent(*values, source="calls").source == "calls"


def test_the_chain_correlation_id_starts_a_chain_at_the_first_event():
    assert IncomingEvent.from_body("calls", a_recorded().to_json()).chain_correlation_id == "corr-1"
    first = IncomingEvent.from_body("calls", a_recorded(correlation_id=None).to_json())
    assert first.chain_correlation_id == "id-1"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([1, 2], "the body is a list, not a JSON object"),
        ({"position": 1}, "the body lacks id, stream, version"),
        ({**a_recorded().to_json(), "position": True}, "position must be an integer"),
        ({**a_recorded().to_json(), "actor": 3}, "actor must be a string or null"),
        ({**a_recorded().to_json(), "occurred_at": "yesterday"}, "does not read as an event"),
    ],
)
def test_a_body_that_is_not_an_event_is_malformed(body, reason):
    with pytest.raises(MalformedEvent, match=reason):
        IncomingEvent.from_body("calls", body)
