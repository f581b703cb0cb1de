"""A read-model table's columns, declared once: the row a projection writes from an event's
payload, and the output schema that dumps the row to JSON.

    insert_row(conn, awards, event.data, status="granted", paid=ZERO)   # by column type

    class AwardOut(RowSchema):
        class Meta:
            table = awards
            exclude = ("updated_at",)          # marshmallow's own option: columns not shown

        tranches = fields.List(fields.Nested(TrancheOut))   # what the table does not hold

A payload holds JSON (amounts and dates as strings, instants RFC 3339); a column holds Python
values. Both sides follow the column's type, the one place it is declared:

| column (its `python_type`) | `row_of` reads the payload's text with | `RowSchema` field |
|---|---|---|
| `Amount`, `Numeric` (Decimal) | `Decimal` | `Money` |
| `UTCDateTime`, `DateTime` (datetime) | `shared.clock.parse_ts` | `UtcDateTime` |
| `Date` (date) | `shared.days.parse_date` | `LocalDate` |
| `String`, `Text` (str) | as it is | `String` |
| `Integer`, `BigInteger` (int) | as it is | `Integer` |
| `Boolean` (bool) | as it is | `Boolean` |

A projection then says only what the payload does not (a state, a zero, a position, a cause),
and an output schema only what the table does not: a field it declares takes the column's place,
where the column stands; the rest it adds after the columns. A nullable column's field allows
None (OpenAPI: nullable).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from marshmallow import fields
from marshmallow.schema import SchemaMeta, SchemaOpts
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator

from shared.clock import parse_ts
from shared.days import parse_date
from shared.schemas import LocalDate, Money, Schema, UtcDateTime

__all__ = ["RowSchema", "column_field", "insert_row", "row_of"]

_READ: dict[type, Callable[[Any], Any]] = {
    Decimal: Decimal,
    dt.datetime: parse_ts,
    dt.date: parse_date,
}

_FIELDS: dict[type, type[fields.Field[Any]]] = {
    Decimal: Money,
    dt.datetime: UtcDateTime,
    dt.date: LocalDate,
    str: fields.String,
    int: fields.Integer,
    bool: fields.Boolean,
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


def column_field(column: sa.Column[Any]) -> fields.Field[Any]:
    """The output field of a column, by its type (the table above), allowing None where the
    column is nullable."""
    kind = _FIELDS.get(_python_type(column))
    if kind is None:
        raise TypeError(f"no output field for column {column.name} of type {column.type}")
    return kind(allow_none=True) if column.nullable else kind()


class RowOpts(SchemaOpts):
    """`class Meta: table = some_table`: the schema's fields start as the table's columns."""

    def __init__(self, meta: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(meta, *args, **kwargs)
        self.table: sa.Table | None = getattr(meta, "table", None)


class _RowSchemaMeta(SchemaMeta):
    @classmethod
    def get_declared_fields(
        mcs,  # noqa: N804
        klass: Any,
        cls_fields: list[tuple[str, fields.Field[Any]]],
        inherited_fields: list[tuple[str, fields.Field[Any]]],
        dict_cls: type[dict[str, Any]] = dict,
    ) -> dict[str, fields.Field[Any]]:
        # The columns first; then what a base schema declared and what this one declares, each
        # replacing a column of its name where the column stands (a dict keeps the first place).
        table = klass.opts.table
        columns = [(c.name, column_field(c)) for c in table.columns] if table is not None else []
        return dict_cls(columns + inherited_fields + cls_fields)


class RowSchema(Schema, metaclass=_RowSchemaMeta):
    """An output schema of a read-model table's rows (the module says how columns map)."""

    OPTIONS_CLASS = RowOpts
