"""The calls service's read-model tables (see the package for what each answers and who fills
them), and the few Core helpers the folds share. Declared on their own MetaData, which the
projection owns: rebuild drops and recreates them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shared.days import parse_date
from shared.projections import Amount
from shared.records import RecordedEvent
from shared.tables import UTCDateTime

metadata = sa.MetaData()
_ID = 36

calls = sa.Table(
    "calls",
    metadata,
    sa.Column("call_id", sa.String(_ID), primary_key=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("reference", sa.String(60), nullable=False),
    sa.Column("kind", sa.String(30), nullable=False),
    sa.Column("budget_line", sa.String(30), nullable=False),
    sa.Column("project_cup", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("budget", Amount, nullable=False),
    sa.Column("reserved", Amount, nullable=False),
    sa.Column("available", Amount, nullable=False),
    sa.Column("award_cap", Amount, nullable=False),
    sa.Column("max_share", sa.String(12), nullable=False),
    sa.Column("opens_on", sa.Date, nullable=False),
    sa.Column("closes_on", sa.Date, nullable=False),
    sa.Column("opens_at", UTCDateTime, nullable=False),
    sa.Column("closes_at", UTCDateTime, nullable=False),
    sa.Column("terms", sa.Text, nullable=False),  # JSON: criteria, bonuses, tie_break
    sa.Column("applications", sa.Integer, nullable=False),
    sa.Column("ranking_approved_on", sa.Date),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

applications = sa.Table(
    "applications",
    metadata,
    sa.Column("application_id", sa.String(_ID), primary_key=True),
    sa.Column("call_id", sa.String(_ID), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("public_reference", sa.String(80), nullable=False),
    sa.Column("applicant_kind", sa.String(30), nullable=False),
    sa.Column("person_id", sa.String(100), index=True),
    sa.Column("applicant", sa.Text),  # JSON as the event holds it; NULL once the person is erased
    sa.Column("project_title", sa.String(200), nullable=False),
    sa.Column("eligible_cost", Amount, nullable=False),
    sa.Column("requested_amount", Amount, nullable=False),
    sa.Column("jobs_created", sa.Integer, nullable=False),
    sa.Column("bonus", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("reason", sa.String(40)),
    sa.Column("sessions", sa.Integer, nullable=False),
    sa.Column("scores", sa.Text, nullable=False),  # JSON {criterion: score}
    sa.Column("award_id", sa.String(_ID)),
    sa.Column("submitted_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

ranking_entries = sa.Table(
    "ranking_entries",
    metadata,
    sa.Column("call_id", sa.String(_ID), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("application_id", sa.String(_ID), nullable=False),
    sa.Column("public_reference", sa.String(80), nullable=False),
    sa.Column("scores", sa.Text, nullable=False),
    sa.Column("weighted", Amount, nullable=False),
    sa.Column("bonus", sa.Integer, nullable=False),
    sa.Column("total", Amount, nullable=False),
    sa.Column("award_id", sa.String(_ID)),
    sa.Column("awarded", Amount),
    sa.Column("award_status", sa.String(20)),
)

awards = sa.Table(
    "awards",
    metadata,
    sa.Column("award_id", sa.String(_ID), primary_key=True),
    sa.Column("call_id", sa.String(_ID), nullable=False, index=True),
    sa.Column("application_id", sa.String(_ID), nullable=False),
    sa.Column("public_reference", sa.String(80), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("amount", Amount, nullable=False),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("reference", sa.String(100), nullable=False),
    sa.Column("awarded_on", sa.Date, nullable=False),
    sa.Column("awarded_at", UTCDateTime, nullable=False),
    sa.Column("commitment_id", sa.String(120)),
    sa.Column("in_tranches", Amount, nullable=False),
    sa.Column("paid", Amount, nullable=False),
    sa.Column("expenditure", Amount, nullable=False),
    sa.Column("reason", sa.String(2000)),  # why it was suspended or revoked
    sa.Column("overdue", sa.Boolean, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

tranches = sa.Table(
    "tranches",
    metadata,
    sa.Column("tranche_id", sa.String(_ID), primary_key=True),
    sa.Column("award_id", sa.String(_ID), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),  # 1, 2, 3 ... within the award
    sa.Column("kind", sa.String(10), nullable=False),
    sa.Column("amount", Amount, nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("claim_reference", sa.String(200), nullable=False),
    sa.Column("claim_date", sa.Date, nullable=False),
    sa.Column("payment_id", sa.String(120)),
    sa.Column("paid_on", sa.Date),
    sa.Column("reason", sa.String(60)),
    sa.Column("requested_at", UTCDateTime, nullable=False),
)

expenditure_reports = sa.Table(
    "expenditure_reports",
    metadata,
    sa.Column("report_id", sa.String(_ID), primary_key=True),
    sa.Column("award_id", sa.String(_ID), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("amount", Amount, nullable=False),
    sa.Column("period_from", sa.Date, nullable=False),
    sa.Column("period_to", sa.Date, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("reported_on", sa.Date, nullable=False),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("alert_id", sa.String(80), primary_key=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("award_id", sa.String(_ID), nullable=False),
    sa.Column("call_id", sa.String(_ID), nullable=False),
    sa.Column("awarded_at", UTCDateTime, nullable=False),
    sa.Column("raised_at", UTCDateTime, nullable=False),
    sa.Column("resolved_at", UTCDateTime),
    sa.Column("resolution", sa.String(40)),
)


# -- helpers of the folds (the package and award_folds.py) -------------------------------------


def date_of(text: str | None) -> dt.date | None:
    return None if text is None else parse_date(text)


def update_row(conn: Connection, table: sa.Table, key: str, value: str, **values: Any) -> None:
    conn.execute(table.update().where(table.c[key] == value).values(**values))


def change_row(
    conn: Connection, event: RecordedEvent, table: sa.Table, key: str, **values: Any
) -> None:
    """`values` into the row of `table` whose primary key is `key`, the row stamped with the
    instant the changing event was recorded (`updated_at`)."""
    (column,) = table.primary_key.columns
    conn.execute(table.update().where(column == key).values(**values, updated_at=event.recorded_at))


def count_rows(conn: Connection, table: sa.Table, award_id: str) -> int:
    query = sa.select(sa.func.count()).select_from(table).where(table.c.award_id == award_id)
    return int(conn.execute(query).scalar_one())


def one_row(conn: Connection, table: sa.Table, key: str, value: str) -> Any:
    return conn.execute(sa.select(table).where(table.c[key] == value)).one()
