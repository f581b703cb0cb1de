"""A read-model table's columns declared once (shared/rows.py): the row from an event's payload,
each member that names a column read by the column's type; and the output schema of the rows,
a field a column, by the same types."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa
from marshmallow import fields

from shared.clock import UTC
from shared.projections import Amount
from shared.rows import RowSchema, row_of
from shared.schemas import LocalDate, Money, UtcDateTime
from shared.tables import UTCDateTime

metadata = sa.MetaData()
grants = sa.Table(
    "grants",
    metadata,
    sa.Column("grant_id", sa.String(36), primary_key=True),
    sa.Column("amount", Amount, nullable=False),
    sa.Column("awarded_on", sa.Date, nullable=False),
    sa.Column("awarded_at", UTCDateTime, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("paid_on", sa.Date),
    sa.Column("terms", sa.Text),
)
PAYLOAD = {
    "grant_id": "g-1",
    "amount": "1250.50",
    "awarded_on": "2024-03-01",
    "awarded_at": "2024-03-01T09:30:00.000000Z",
    "seq": 3,
    "paid_on": None,
    "call_id": "c-1",  # not a column
}


def test_each_member_that_names_a_column_is_read_by_the_columns_type():
    assert row_of(grants, PAYLOAD) == {
        "grant_id": "g-1",
        "amount": Decimal("1250.50"),
        "awarded_on": dt.date(2024, 3, 1),
        "awarded_at": dt.datetime(2024, 3, 1, 9, 30, tzinfo=UTC),
        "seq": 3,
        "paid_on": None,
    }


def test_the_projection_adds_what_the_payload_lacks_and_replaces_what_it_says_otherwise():
    row = row_of(grants, PAYLOAD, status="granted", amount=Decimal("10.00"), terms="{}")
    assert (row["status"], row["amount"], row["terms"]) == ("granted", Decimal("10.00"), "{}")
    assert row["awarded_on"] == dt.date(2024, 3, 1)


def test_a_value_for_a_column_the_table_does_not_have_is_refused():
    with pytest.raises(KeyError, match="statuss"):
        row_of(grants, PAYLOAD, statuss="granted")


class GrantOut(RowSchema):
    class Meta:
        table = grants
        exclude: tuple[str, ...] = ("terms",)

    seq = fields.String()  # replaces the column, where it stands
    tranches = fields.List(fields.String())  # not a column: after the columns


def test_an_output_schema_has_a_field_a_column_by_its_type_none_allowed_where_nullable():
    found = GrantOut().fields
    assert list(found) == [
        "grant_id",
        "amount",
        "awarded_on",
        "awarded_at",
        "seq",
        "status",
        "paid_on",
        "tranches",
    ]
    kinds = {name: type(field) for name, field in found.items()}
    assert kinds["amount"] is Money and kinds["awarded_on"] is LocalDate
    assert kinds["awarded_at"] is UtcDateTime and kinds["grant_id"] is fields.String
    assert kinds["seq"] is fields.String  # the schema's own
    assert [name for name, field in found.items() if field.allow_none] == ["paid_on"]


def test_a_derived_schema_keeps_its_bases_fields_and_may_show_an_excluded_column():
    class GrantDetailOut(GrantOut):
        class Meta(GrantOut.Meta):
            exclude = ()

        terms = fields.Dict()

    found = GrantDetailOut().fields
    assert type(found["seq"]) is fields.String and type(found["terms"]) is fields.Dict
    assert list(found)[-2:] == ["terms", "tranches"]  # the column's place, then the base's own


def test_an_output_schema_dumps_a_row_in_the_wire_forms():
    row = row_of(grants, PAYLOAD, status="granted", terms="{}")
    assert GrantOut().dump({**row, "tranches": ["t-1"]}) == {
        "grant_id": "g-1",
        "amount": "1250.50",
        "awarded_on": "2024-03-01",
        "awarded_at": "2024-03-01T09:30:00.000000Z",
        "seq": "3",
        "status": "granted",
        "paid_on": None,
        "tranches": ["t-1"],
    }
