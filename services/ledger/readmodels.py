"""The ledger's read models: the books as tables, folded from its events by one projection.

The projection runs inside each append's transaction (shared/projections.py), so a read after a
command sees it; `replay_as_of` folds the same handlers into a scratch database to show the books
as they stood at an instant. Arithmetic is done in Python with `Decimal` (SQLite has no decimal
type), and the SQL is portable for that reason too. Every entry keeps its cause: the ledger event
that recorded it, and the other service's event it answered (causation) when there was one.
`entry_posted` is the project stream's copy of an entry and is not folded: counting it would count
each euro twice.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shared.money import ZERO
from shared.projections import Amount, Projection
from shared.records import RecordedEvent
from shared.rows import insert_row

metadata = sa.MetaData()
Reader = Callable[[Any], list[Any]]  # runs a SELECT, returns its rows

# Each kind of value the books hold, its width written once.
_CUP = sa.String(40)
_LINE = sa.String(60)
_ENTRY_ID = sa.String(120)  # a commitment's or a payment's: derived from its kind and reference
_ID = sa.String(100)  # one another act or service gave: an admission, a reduction, an award
_REFERENCE = sa.String(200)  # a document's reference
_EVENT_ID = sa.String(36)

projects = sa.Table(
    "ledger_projects",
    metadata,
    sa.Column("project_cup", _CUP, primary_key=True),
    sa.Column("local_code", sa.String(40), nullable=False),
    sa.Column("title", sa.String(300), nullable=False),
    sa.Column("start_date", sa.Date, nullable=False),
    sa.Column("plan_reference", _REFERENCE, nullable=False),
)

lines = sa.Table(
    "ledger_lines",
    metadata,
    sa.Column("project_cup", _CUP, primary_key=True),
    sa.Column("budget_line", _LINE, primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),  # the order the plan lists them in
    sa.Column("programmed", Amount, nullable=False),
    sa.Column("admitted", Amount, nullable=False),
    sa.Column("legally_binding", Amount, nullable=False),
    sa.Column("disbursed", Amount, nullable=False),
)


# What every entry keeps of its cause: the ledger event that recorded it, the other service's
# event it answered, the correlation and the actor.
CAUSE = ("event_id", "causation_id", "correlation_id", "actor")


def _cause_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("event_id", _EVENT_ID, nullable=False),
        sa.Column("causation_id", _EVENT_ID),
        sa.Column("correlation_id", _EVENT_ID),
        sa.Column("actor", sa.String(200)),
    ]


admissions = sa.Table(
    "ledger_admissions",
    metadata,
    sa.Column("project_cup", _CUP, primary_key=True),
    sa.Column("act_id", _ID, primary_key=True),
    sa.Column("budget_line", _LINE, primary_key=True),
    sa.Column("act_reference", _REFERENCE, nullable=False),
    sa.Column("adopted_on", sa.Date, nullable=False),
    sa.Column("amount", Amount, nullable=False),
    *_cause_columns(),
)

commitments = sa.Table(
    "ledger_commitments",
    metadata,
    sa.Column("commitment_id", _ENTRY_ID, primary_key=True),
    sa.Column("project_cup", _CUP, nullable=False, index=True),
    sa.Column("budget_line", _LINE, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("source_reference", _REFERENCE, nullable=False),
    sa.Column("signed_on", sa.Date, nullable=False),
    sa.Column("original_amount", Amount, nullable=False),
    sa.Column("amount", Amount, nullable=False),
    sa.Column("paid", Amount, nullable=False),
    sa.Column("award_id", _ID),
    sa.Column("position", sa.BigInteger, nullable=False),  # in the log: the order of record
    *_cause_columns(),
)

reductions = sa.Table(
    "ledger_reductions",
    metadata,
    sa.Column("commitment_id", _ENTRY_ID, primary_key=True),
    sa.Column("reduction_id", _ID, primary_key=True),
    sa.Column("amount", Amount, nullable=False),
    sa.Column("reason", sa.String(300), nullable=False),
    sa.Column("source_reference", _REFERENCE, nullable=False),
    sa.Column("reduced_on", sa.Date, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    *_cause_columns(),
)

payments = sa.Table(
    "ledger_payments",
    metadata,
    sa.Column("commitment_id", _ENTRY_ID, primary_key=True),
    sa.Column("payment_id", _ENTRY_ID, primary_key=True),
    sa.Column("project_cup", _CUP, nullable=False, index=True),
    sa.Column("budget_line", _LINE, nullable=False),
    sa.Column("claim_reference", _REFERENCE, nullable=False),
    sa.Column("claim_date", sa.Date, nullable=False),
    sa.Column("paid_on", sa.Date, nullable=False),
    sa.Column("amount", Amount, nullable=False),
    sa.Column("award_id", _ID),
    sa.Column("tranche_id", _ID),
    sa.Column("position", sa.BigInteger, nullable=False),
    *_cause_columns(),
)

projection = Projection("ledger", metadata)


def _cause(event: RecordedEvent) -> dict[str, Any]:
    return {
        "event_id": event.id,
        "causation_id": event.causation_id,
        "correlation_id": event.correlation_id,
        "actor": event.actor,
    }


def _move_line(conn: Connection, cup: str, line: str, **changes: Decimal) -> None:
    row = conn.execute(
        sa.select(lines).where(lines.c.project_cup == cup, lines.c.budget_line == line)
    ).one()
    conn.execute(
        lines.update()
        .where(lines.c.project_cup == cup, lines.c.budget_line == line)
        .values(**{name: getattr(row, name) + change for name, change in changes.items()})
    )


@projection.on("project_programmed")
def _programmed(conn: Connection, event: RecordedEvent) -> None:
    data = event.data
    insert_row(conn, projects, data)
    for index, item in enumerate(data["budget_lines"]):
        insert_row(
            conn,
            lines,
            item,
            project_cup=data["project_cup"],
            position=index,
            admitted=ZERO,
            legally_binding=ZERO,
            disbursed=ZERO,
        )


@projection.on("funding_admitted")
def _admitted(conn: Connection, event: RecordedEvent) -> None:
    data = event.data
    for item in data["budget_lines"]:
        amount = Decimal(item["amount"])
        insert_row(
            conn, admissions, data, budget_line=item["budget_line"], amount=amount, **_cause(event)
        )
        _move_line(conn, data["project_cup"], item["budget_line"], admitted=amount)


@projection.on("commitment_recorded")
def _recorded(conn: Connection, event: RecordedEvent) -> None:
    data = event.data
    amount = Decimal(data["amount"])
    insert_row(
        conn,
        commitments,
        data,
        original_amount=amount,
        paid=ZERO,
        position=event.position,
        **_cause(event),
    )
    _move_line(conn, data["project_cup"], data["budget_line"], legally_binding=amount)


@projection.on("commitment_reduced")
def _reduced(conn: Connection, event: RecordedEvent) -> None:
    data = event.data
    amount = Decimal(data["amount"])
    insert_row(conn, reductions, data, position=event.position, **_cause(event))
    conn.execute(
        commitments.update()
        .where(commitments.c.commitment_id == data["commitment_id"])
        .values(amount=Decimal(data["new_amount"]))
    )
    _move_line(conn, data["project_cup"], data["budget_line"], legally_binding=-amount)


@projection.on("payment_disbursed")
def _disbursed(conn: Connection, event: RecordedEvent) -> None:
    data = event.data
    amount = Decimal(data["amount"])
    insert_row(conn, payments, data, position=event.position, **_cause(event))
    paid = conn.execute(
        sa.select(commitments.c.paid).where(commitments.c.commitment_id == data["commitment_id"])
    ).scalar_one()
    conn.execute(
        commitments.update()
        .where(commitments.c.commitment_id == data["commitment_id"])
        .values(paid=paid + amount)
    )
    _move_line(conn, data["project_cup"], data["budget_line"], disbursed=amount)
