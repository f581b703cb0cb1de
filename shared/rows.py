"""A read-model table's columns, declared once: the row a projection writes from an event's
payload.

    insert_row(conn, awards, event.data, status="granted", paid=ZERO)   # by column type

A payload holds JSON (amounts and dates as strings, instants RFC 3339); a column holds Python
values. `row_of` reads each member that names a column by the column's type, the one place it
is declared:

| column (its `python_type`) | the payload's text read with |
|---|---|
| `Amount`, `Numeric` (Decimal) | `Decimal` |
| `UTCDateTime`, `DateTime` (datetime) | `shared.clock.parse_ts` |
| `Date` (date) | `shared.days.parse_date` |
| anything else | taken as it is |

A projection then says only what the payload does not: a state, a zero, a position, a cause.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator

from shared.clock import parse_ts
from shared.days import parse_date

__all__ = ["insert_row", "row_of"]

_READ: dict[type, Callable[[Any], Any]] = {
    Decimal: Decimal,
    dt.datetime: parse_ts,
    dt.date: parse_date,
}


def _python_type(column: sa.Column[Any]) -> type:
    kind = column.type
    if isinstance(kind, TypeDecorator):  # Amount, UTCDateTime: what they store is their impl's
        kind = kind.impl_instance
    try:
        return kind.python_type
    except NotImplementedError:
        return object


def row_of(table: sa.Table, data: Mapping[str, Any], **values: Any) -> dict[str, Any]:
    """The values of an insert into `table`: each member of `data` (a payload as stored) that
    names a column, read by the column's type, then `values` as they are (they add columns the
    payload does not hold, or replace its members). Other members of `data` are not columns and
    are left out; a column neither gives is left to its default (NULL)."""
    row = {}
    for name, value in data.items():
        column = table.c.get(name)
        if column is None:
            continue
        read = _READ.get(_python_type(column))
        row[name] = value if value is None or read is None else read(value)
    unknown = set(values) - set(table.c.keys())
    if unknown:
        raise KeyError(f"{table.name} has no column {sorted(unknown)}")
    return {**row, **values}


def insert_row(conn: Connection, table: sa.Table, data: Mapping[str, Any], **values: Any) -> None:
    """Insert `row_of(table, data, **values)` into `table` on `conn` (a projection's connection)."""
    conn.execute(table.insert().values(row_of(table, data, **values)))
