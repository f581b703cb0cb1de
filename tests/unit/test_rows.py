"""A read-model row from an event's payload (shared/rows.py): each member that names a column,
read by the column's type; what the payload does not hold, given by the projection."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from shared.clock import UTC
from shared.projections import Amount
from shared.rows import row_of
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
