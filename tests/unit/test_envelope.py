"""The append path writes the envelope's JCS by hand; it must equal rfc8785 on every input."""

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.canonical import canonical_slow
from shared.chain import envelope_of, envelope_text
from shared.clock import UTC, format_ts

texts = st.text().filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
maybe_text = st.none() | texts
times = st.datetimes(
    timezones=st.just(UTC), min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2999, 1, 1)
)
data = st.dictionaries(
    st.text(min_size=1, max_size=6), st.none() | st.integers(-1000, 1000) | texts, max_size=4
)


@settings(max_examples=300)
@given(
    st.integers(1, 2**40),
    texts,
    texts,
    st.integers(1, 2**31),
    texts,
    st.integers(1, 20),
    data,
    maybe_text,
    maybe_text,
    maybe_text,
    times,
    times,
)
def test_hand_written_envelope_equals_rfc8785(
    position, id_, stream, version, type_, schema, payload, corr, caus, actor, occurred, recorded
):
    expected = canonical_slow(
        envelope_of(
            position,
            id_,
            stream,
            version,
            type_,
            schema,
            payload,
            corr,
            caus,
            actor,
            occurred,
            recorded,
        )
    )
    text = envelope_text(
        position,
        id_,
        stream,
        version,
        type_,
        schema,
        canonical_slow(payload),
        corr,
        caus,
        actor,
        format_ts(occurred),
        format_ts(recorded),
    )
    assert text == expected


def test_to_text_is_the_json_of_to_json():
    import json

    from shared.records import RecordedEvent

    stamp = dt.datetime(2024, 3, 1, 9, 30, 0, 120, tzinfo=UTC)
    event = RecordedEvent(
        7,
        "id-1",
        "award-1",
        2,
        "tranche_paid",
        1,
        {"amount": "10.00", "è": ["\n"]},
        None,
        "c-1",
        "op",
        stamp,
        stamp,
        "a" * 64,
        "b" * 64,
    )
    assert json.loads(event.to_text()) == event.to_json()
