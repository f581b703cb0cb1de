import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.canonical import canonical, canonical_slow

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=500)
@given(json_values)
def test_fast_path_gives_the_rfc8785_bytes(value):
    try:
        expected = canonical_slow(value)
    except Exception:  # rfc8785 refuses it (a lone surrogate): canonical must refuse too
        with pytest.raises(Exception):  # noqa: B017
            canonical(value)
        return
    assert canonical(value) == expected


@given(
    st.dictionaries(
        st.text(alphabet="éü𝄞αβ", min_size=1, max_size=3),
        st.integers(-1000, 1000),
        min_size=2,
        max_size=5,
    )
)
def test_non_ascii_keys_are_sorted_by_utf16_code_units(value):
    assert canonical(value) == canonical_slow(value)


def test_floats_take_the_rfc8785_path():
    assert canonical({"a": 1.0, "b": 1e21}) == canonical_slow({"a": 1.0, "b": 1e21})
    assert canonical({"a": 1.0}) == '{"a":1}'


def test_output_is_compact_sorted_json():
    text = canonical({"b": [1, "x\n"], "a": None, "c": {"z": True, "y": "€"}})
    assert text == '{"a":null,"b":[1,"x\\n"],"c":{"y":"€","z":true}}'
    assert json.loads(text)["c"]["y"] == "€"


def test_timestamps_are_rfc3339_utc_with_microseconds_even_before_year_1000():
    import datetime as dt

    from shared.clock import UTC, format_ts, parse_ts

    assert (
        format_ts(dt.datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == "0999-01-02T03:04:05.000006Z"
    )
    stamp = dt.datetime(2024, 3, 1, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert format_ts(stamp) == "2024-03-01T09:30:00.000000Z"
    assert parse_ts("2024-03-01T09:30:00.000000Z") == stamp
