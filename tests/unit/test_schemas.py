"""The schema base: money, UTC time, dates, personal-data markers and the 422 body (no I/O)."""

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from marshmallow import fields, validate

from shared.clock import UTC, format_ts
from shared.days import end_of_day, start_of_day, window
from shared.errors import InvalidInput
from shared.money import MAX_INTEGER_DIGITS, format_money, parse_money
from shared.schemas import (
    EARLIEST_DATE,
    ERASED,
    LATEST_DATE,
    LocalDate,
    Money,
    Personal,
    Schema,
    UtcDateTime,
    ValidationError,
    error_body,
    load_input,
    map_personal,
)


class Payment(Schema):
    amount = Money(required=True)
    refund = Money(allow_negative=True)
    paid_at = UtcDateTime()
    due = LocalDate()


class Address(Schema):
    street = Personal(fields.String(), required=True)
    city = fields.String()


class Beneficiary(Schema):
    person_id = fields.String(required=True)
    name = Personal(fields.String(validate=validate.Length(max=20)), required=True)
    tax_code = fields.String(metadata={"personal": True}, data_key="taxCode")
    birth_date = Personal(LocalDate())
    address = fields.Nested(Address)
    children = fields.List(fields.Nested(Address))
    phones = fields.List(Personal(fields.String()))
    grant = Money()


def refusal(schema, data):
    """The messages marshmallow gives, flattened the way the 422 body names them."""
    with pytest.raises(ValidationError) as caught:
        schema.load(data)
    return error_body(caught.value)["fields"]


# -- money ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_", "loaded"),
    [
        ("12.50", Decimal("12.50")),
        ("12.5", Decimal("12.50")),
        ("0", Decimal("0.00")),
        ("-0.00", Decimal("0.00")),
        (12, Decimal("12.00")),
        ("999999999999999.99", Decimal("999999999999999.99")),
    ],
)
def test_money_loads_strings_and_ints_as_cents(given_, loaded):
    amount = Payment().load({"amount": given_})["amount"]
    assert amount == loaded and str(amount) == str(loaded)


@pytest.mark.parametrize("number", [12.5, 12.0, 0.1, float("nan"), float("inf")])
def test_money_refuses_every_float_and_says_why(number):
    (message,) = refusal(Payment(), {"amount": number})["amount"]
    assert "never floats" in message and '"12.50"' in message


@pytest.mark.parametrize(
    ("given_", "words"),
    [
        ("12.505", "two decimal places"),
        ("12.500", "two decimal places"),
        ("-1", "negative"),
        ("-0.01", "negative"),
        ("NaN", "NaN and Infinity"),
        ("-Infinity", "NaN and Infinity"),
        ("inf", "NaN and Infinity"),
        ("sNaN", "NaN and Infinity"),
        ("1e3", "Not an amount"),
        ("12,50", "Not an amount"),
        (" 12.50", "Not an amount"),
        ("+12", "Not an amount"),
        ("١٢", "Not an amount"),  # Arabic-Indic digits: Decimal reads them, we do not
        ("", "Not an amount"),
        (True, "Not an amount"),
        ([12], "Not an amount"),
        ("1" * (MAX_INTEGER_DIGITS + 1), "too large"),
    ],
)
def test_money_refusals_name_the_field_and_the_reason(given_, words):
    body_fields = refusal(Payment(), {"amount": given_})
    assert list(body_fields) == ["amount"]
    assert words in body_fields["amount"][0]


def test_a_negative_amount_passes_only_where_the_field_allows_it():
    assert Payment().load({"amount": "1", "refund": "-3.20"})["refund"] == Decimal("-3.20")
    assert "negative" in refusal(Payment(), {"amount": "-3.20"})["amount"][0]


def test_money_dumps_a_string_with_two_places_and_never_rounds():
    assert Payment().dump({"amount": Decimal("12.5")}) == {"amount": "12.50"}
    assert Payment().dump({"amount": 7}) == {"amount": "7.00"}
    assert format_money(Decimal("-3.2")) == "-3.20"
    with pytest.raises(TypeError, match="not float"):
        Payment().dump({"amount": 12.5})
    with pytest.raises(ValueError, match="two decimal places"):
        Payment().dump({"amount": Decimal("1.005")})


def test_parse_money_refuses_a_non_finite_decimal():
    with pytest.raises(ValueError, match="NaN and Infinity"):
        parse_money(Decimal("Infinity"))


cents = st.integers(min_value=0, max_value=10 ** (MAX_INTEGER_DIGITS + 2) - 1)


@given(
    st.builds(
        lambda c, places: Decimal(c // 10 ** (2 - places)).scaleb(-places),
        cents,
        st.sampled_from([0, 1, 2]),
    )
)
def test_any_amount_with_at_most_two_places_round_trips_exactly(amount):
    schema = Payment()
    dumped = schema.dump({"amount": amount})
    assert dumped["amount"] == f"{amount:.2f}"
    loaded = schema.load(dumped)["amount"]
    assert loaded == amount
    assert str(loaded) == dumped["amount"]  # always two places, the one canonical form
    assert schema.dump(schema.load(dumped)) == dumped


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_no_float_is_ever_an_amount(number):
    with pytest.raises(ValueError, match="never floats"):
        parse_money(number)


# -- time ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2024-03-01T09:30:00Z", dt.datetime(2024, 3, 1, 9, 30, tzinfo=UTC)),
        ("2024-03-01T10:30:00+01:00", dt.datetime(2024, 3, 1, 9, 30, tzinfo=UTC)),
        ("2024-03-01t04:30:00.5-05:00", dt.datetime(2024, 3, 1, 9, 30, 0, 500000, tzinfo=UTC)),
        # nanoseconds (Go's RFC3339Nano) are truncated to what a datetime holds
        ("2024-03-01T09:30:00.123456789Z", dt.datetime(2024, 3, 1, 9, 30, 0, 123456, tzinfo=UTC)),
    ],
)
def test_utc_datetime_loads_any_offset_as_aware_utc(text, utc):
    loaded = Payment().load({"amount": "1", "paid_at": text})["paid_at"]
    assert loaded == utc and loaded.tzinfo is UTC


@pytest.mark.parametrize("text", ["2024-03-01T09:30:00", "2024-03-01 09:30:00.250"])
def test_a_naive_timestamp_is_refused_not_guessed(text):
    (message,) = refusal(Payment(), {"amount": "1", "paid_at": text})["paid_at"]
    assert "UTC offset" in message


@pytest.mark.parametrize(
    "text", ["2024-02-30T09:30:00Z", "2024-03-01", "20240301T093000Z", "yesterday", 1709285400]
)
def test_a_malformed_timestamp_is_refused(text):
    (message,) = refusal(Payment(), {"amount": "1", "paid_at": text})["paid_at"]
    assert "RFC 3339" in message


def test_utc_datetime_takes_aware_datetimes_refuses_naive_ones_and_dumps_the_log_form():
    rome = dt.timezone(dt.timedelta(hours=2))
    aware = dt.datetime(2024, 6, 1, 11, 0, tzinfo=rome)
    assert Payment().load({"amount": "1", "paid_at": aware})["paid_at"] == aware
    naive = dt.datetime(2024, 6, 1, 11, 0)
    assert "UTC offset" in refusal(Payment(), {"amount": "1", "paid_at": naive})["paid_at"][0]
    assert (
        Payment().dump({"amount": 1, "paid_at": aware})["paid_at"] == "2024-06-01T09:00:00.000000Z"
    )


# Within the plausible range, which starts in 1900 (format_ts uses strftime, whose %Y does not
# pad years below 1000 to four digits, in any case).
@given(
    st.datetimes(
        min_value=dt.datetime(1900, 1, 1),
        max_value=dt.datetime(2199, 12, 31, 23, 59, 59),
        timezones=st.just(UTC),
    )
)
def test_any_instant_round_trips_through_dump_and_load(instant):
    schema = Payment()
    dumped = schema.dump({"amount": 1, "paid_at": instant})
    assert dumped["paid_at"] == format_ts(instant)
    assert schema.load(dumped)["paid_at"] == instant


def test_local_date_is_exactly_yyyy_mm_dd():
    assert Payment().load({"amount": "1", "due": "2024-02-29"})["due"] == dt.date(2024, 2, 29)
    assert Payment().dump({"amount": 1, "due": dt.date(2024, 2, 29)})["due"] == "2024-02-29"
    for bad in ["2023-02-29", "20240229", "2024-02-29T00:00:00Z", "٢٠٢٤-٠٢-٢٩"]:
        assert "Not a date" in refusal(Payment(), {"amount": "1", "due": bad})["due"][0]


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("due", "0001-01-01"),
        ("due", "1899-12-31"),
        ("due", "2200-01-01"),
        ("due", "9999-12-31"),  # end_of_day(9999-12-31) overflowed: a 500 on ledger progress
        ("paid_at", "0001-01-01T00:00:00+01:00"),  # in UTC it would be year 0: OverflowError
        ("paid_at", "9999-12-31T23:59:59Z"),
        ("paid_at", "1899-12-30T23:59:59Z"),
        ("paid_at", "2200-01-02T00:00:00Z"),
    ],
)
def test_a_date_or_an_instant_outside_the_plausible_range_is_refused_naming_it(field, text):
    (message,) = refusal(Payment(), {"amount": "1", field: text})[field]
    assert message.startswith("Outside the plausible range, 1900-01-01 to 2199-12-31")


def test_the_plausible_range_includes_its_first_and_last_days():
    loaded = Payment().load(
        {"amount": "1", "due": "1900-01-01", "paid_at": "2199-12-31T23:59:59.999999Z"}
    )
    assert loaded["due"] == dt.date(1900, 1, 1)
    assert loaded["paid_at"] == dt.datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert Payment().load({"amount": "1", "due": "2199-12-31"})["due"] == dt.date(2199, 12, 31)
    # An instant within those days anywhere: Bologna's first day began in 1899 in UTC, and the
    # instant that ends its last day (the end of a window) is in 2200 there.
    for edge in ("1899-12-31T23:00:00Z", "2199-12-31T23:00:00Z", "2200-01-01T23:59:59Z"):
        assert Payment().load({"amount": "1", "paid_at": edge})


def test_every_bologna_instant_of_the_plausible_days_loads_as_an_instant():
    # A call open from the first plausible day to the last stores its window as instants:
    # the date range and the instant range must agree, or drafting it would break its contract.
    opens, closes = window(EARLIEST_DATE, LATEST_DATE)
    for instant in (opens, closes, end_of_day(LATEST_DATE), start_of_day(EARLIEST_DATE)):
        assert Payment().load({"amount": "1", "paid_at": format_ts(instant)})["paid_at"] == instant


def test_a_stored_date_dumps_as_it_was_stored_even_outside_the_range():
    # A payload already in a log (written before the range was enforced) still goes out.
    stored = {"amount": "1.00", "due": "0001-01-01", "paid_at": "9999-12-31T23:59:59.000000Z"}
    assert Payment().dump(stored) == stored


# -- schema base and 422 body --------------------------------------------------------------------


def test_unknown_keys_are_refused_by_name():
    assert refusal(Payment(), {"amount": "1", "amuont": "2"}) == {"amuont": ["Unknown field."]}


def test_the_422_body_names_every_field_nested_ones_by_path():
    data = {
        "name": "Zoë",
        "address": {},
        "children": [{"street": "Via Rizzoli 1"}, {"street": 5}],
        "grant": 1.5,
    }
    with pytest.raises(InvalidInput) as caught:
        load_input(Beneficiary(), data)
    error = caught.value
    assert error.status == 422
    body = error.to_body()
    assert body["error"] == "invalid_input"
    assert set(body["fields"]) == {"person_id", "address.street", "children.1.street", "grant"}
    assert all(isinstance(texts, list) and texts for texts in body["fields"].values())
    for name in body["fields"]:
        assert name in body["message"]


def test_a_schema_level_error_lands_under_schema():
    from marshmallow import validates_schema

    class Window(Schema):
        opens = LocalDate(required=True)
        closes = LocalDate(required=True)

        @validates_schema
        def _order(self, data, **kwargs):
            if data["closes"] < data["opens"]:
                raise ValidationError("a call closes after it opens")

    body = refusal(Window(), {"opens": "2024-03-02", "closes": "2024-03-01"})
    assert body == {"_schema": ["a call closes after it opens"]}


def test_load_input_returns_the_loaded_data_when_valid():
    assert load_input(Payment(), {"amount": "3"}) == {"amount": Decimal("3.00")}


# -- personal data -------------------------------------------------------------------------------


def test_personal_fields_are_found_by_introspection_with_their_json_paths():
    assert Beneficiary().personal_fields() == [
        "name",
        "taxCode",
        "birth_date",
        "address.street",
        "children[].street",
        "phones[]",
    ]
    assert Payment().personal_fields() == []


def test_a_personal_field_validates_as_the_field_it_wraps():
    body = refusal(Beneficiary(), {"person_id": "p1", "name": "x" * 21, "birth_date": "1.1.1990"})
    assert "Longer than maximum length 20." in body["name"][0]
    assert "Not a date" in body["birth_date"][0]
    loaded = Beneficiary().load({"person_id": "p1", "name": "Zoë", "birth_date": "1990-01-01"})
    assert loaded["birth_date"] == dt.date(1990, 1, 1)
    assert Beneficiary().dump(loaded)["birth_date"] == "1990-01-01"


def test_an_erased_value_passes_its_personal_field_both_ways():
    loaded = Beneficiary().load(
        {"person_id": "p1", "name": ERASED, "birth_date": ERASED, "address": {"street": ERASED}}
    )
    assert loaded["name"] == loaded["birth_date"] == loaded["address"]["street"] == ERASED
    assert Beneficiary().dump(loaded)["birth_date"] == ERASED


def test_map_personal_touches_exactly_the_personal_values_that_are_present():
    data = {
        "person_id": "p1",
        "name": "Zoë",
        "taxCode": "RSSZOE90A41A944X",
        "address": {"street": "Via Rizzoli 1", "city": "Bologna"},
        "children": [{"street": "Via Irnerio 2", "city": "Bologna"}],
        "phones": ["051 123", "051 456"],
        "grant": "100.00",
    }
    seen = []

    def mark(path, value):
        seen.append(path)
        return f"<{value}>"

    out = map_personal(Beneficiary(), data, mark)
    assert out == {
        "person_id": "p1",
        "name": "<Zoë>",
        "taxCode": "<RSSZOE90A41A944X>",
        "address": {"street": "<Via Rizzoli 1>", "city": "Bologna"},
        "children": [{"street": "<Via Irnerio 2>", "city": "Bologna"}],
        "phones": ["<051 123>", "<051 456>"],
        "grant": "100.00",
    }
    assert seen == [
        "name",
        "taxCode",
        "address.street",
        "children[].street",
        "phones[]",
        "phones[]",
    ]
    assert data["name"] == "Zoë"  # the input is not changed in place


def test_a_personal_container_of_the_wrong_shape_is_an_error_never_skipped():
    for data in ({"phones": "051 123"}, {"address": "Via Rizzoli 1"}, {"children": {"x": 1}}):
        with pytest.raises(ValueError, match="holds personal data"):
            map_personal(Beneficiary(), data, lambda path, value: "sealed")
    empty = {"address": None, "children": None, "phones": None, "grant": "1.00"}
    assert map_personal(Beneficiary(), empty, lambda path, value: "sealed") == empty


def test_a_whole_object_or_list_can_be_one_personal_value():
    class Contact(Schema):
        address = Personal(fields.Nested(Address))
        phones = Personal(fields.List(fields.String()))

    schema = Contact()
    assert schema.personal_fields() == ["address", "phones"]
    loaded = schema.load({"address": {"street": "Via Rizzoli 1"}, "phones": ["051 123"]})
    assert schema.dump(loaded) == {"address": {"street": "Via Rizzoli 1"}, "phones": ["051 123"]}
    sealed = map_personal(schema, schema.dump(loaded), lambda path, value: f"<{path}>")
    assert sealed == {"address": "<address>", "phones": "<phones>"}
    assert "address.street" in refusal(schema, {"address": {"street": 5}})


def test_a_json_number_with_a_fraction_is_refused_as_money_but_exact_elsewhere():
    import json

    from marshmallow import fields as mf

    from shared.money import JsonFraction
    from shared.schemas import Money, Schema

    class Tranche(Schema):
        amount = Money(required=True)
        share = mf.Decimal(required=True)

    body = json.loads('{"amount": 12.5, "share": 0.80}', parse_float=JsonFraction)
    with pytest.raises(ValidationError) as caught:
        Tranche().load(body)
    assert "never floats" in caught.value.messages["amount"][0]
    assert "share" not in caught.value.messages
    assert Tranche().load({"amount": 12, "share": body["share"]})["share"] == Decimal("0.80")


def test_public_schemas_dump_stored_payloads_checked():
    from shared.schemas import LocalDate, Money, Schema, UtcDateTime

    class Public(Schema):
        amount = Money()
        paid_on = LocalDate()
        at = UtcDateTime()

    stored = {"amount": "1250.00", "paid_on": "2024-03-01", "at": "2024-03-01T09:30:00.000000Z"}
    assert Public().dump(stored) == stored
    with pytest.raises(ValueError):
        Public().dump({"amount": "12.345"})
