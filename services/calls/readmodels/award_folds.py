"""The awards' part of the calls read models: awards, tranches, expenditure reports and alerts,
folded from the award streams (readmodels.py builds the one projection from these and its own)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shared.clock import parse_ts
from shared.money import ZERO
from shared.projections import Handler
from shared.records import RecordedEvent
from shared.rows import insert_row

from .tables import (
    alerts,
    applications,
    awards,
    change_row,
    count_rows,
    date_of,
    expenditure_reports,
    one_row,
    ranking_entries,
    tranches,
    update_row,
)

FOLDS: dict[str, Handler] = {}


def _on(*types: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for type_ in types:
            FOLDS[type_] = handler
        return handler

    return register


@_on("grant_awarded")
def _awarded(conn: Connection, event: RecordedEvent) -> None:
    d = event.data
    app = one_row(conn, applications, "application_id", d["application_id"])
    position = conn.execute(
        sa.select(ranking_entries.c.position).where(
            ranking_entries.c.application_id == d["application_id"]
        )
    ).scalar_one()
    insert_row(
        conn,
        awards,
        d,
        public_reference=app.public_reference,
        position=position,
        status="granted",
        awarded_at=event.occurred_at,
        in_tranches=ZERO,
        paid=ZERO,
        expenditure=ZERO,
        overdue=False,
        updated_at=event.recorded_at,
    )


def _award_status(conn: Connection, event: RecordedEvent, status: str, **values: Any) -> None:
    award_id = event.data["award_id"]
    change_row(conn, event, awards, award_id, status=status, **values)
    conn.execute(
        ranking_entries.update()
        .where(ranking_entries.c.award_id == award_id)
        .values(award_status=status)
    )


@_on("grant_confirmed", "grant_suspended")
def _answered(conn: Connection, event: RecordedEvent) -> None:
    d = event.data
    if event.type == "grant_confirmed":
        _award_status(conn, event, "confirmed", commitment_id=d["commitment_id"])
    else:
        _award_status(conn, event, "suspended", reason=d["reason"])
    conn.execute(
        alerts.update()
        .where(alerts.c.award_id == d["award_id"], alerts.c.resolved_at.is_(None))
        .values(resolved_at=event.recorded_at, resolution=event.type)
    )


@_on("grant_revoked")
def _revoked(conn: Connection, event: RecordedEvent) -> None:
    _award_status(conn, event, "revoked", reason=event.data["reason"])


@_on("award_answer_overdue")
def _overdue(conn: Connection, event: RecordedEvent) -> None:
    d = event.data
    update_row(conn, awards, "award_id", d["award_id"], overdue=True)
    insert_row(
        conn,
        alerts,
        d,
        alert_id=f"{d['award_id']}:answer_overdue",
        kind="award_answer_overdue",
        raised_at=parse_ts(d["detected_at"]),
    )


@_on("tranche_requested")
def _tranche(conn: Connection, event: RecordedEvent) -> None:
    d = event.data
    insert_row(
        conn,
        tranches,
        d,
        seq=count_rows(conn, tranches, d["award_id"]) + 1,
        status="requested",
        requested_at=event.recorded_at,
    )
    row = one_row(conn, awards, "award_id", d["award_id"])
    change_row(
        conn, event, awards, d["award_id"], in_tranches=row.in_tranches + Decimal(d["amount"])
    )


@_on("tranche_paid", "tranche_rejected")
def _tranche_answer(conn: Connection, event: RecordedEvent) -> None:
    d = event.data
    amount = Decimal(d["amount"])
    row = one_row(conn, awards, "award_id", d["award_id"])
    if event.type == "tranche_paid":
        update_row(
            conn,
            tranches,
            "tranche_id",
            d["tranche_id"],
            status="paid",
            payment_id=d["payment_id"],
            paid_on=date_of(d["paid_on"]),
        )
        change_row(conn, event, awards, d["award_id"], paid=row.paid + amount)
        if d["kind"] == "balance" and row.status == "confirmed":
            _award_status(conn, event, "closed")
    else:
        update_row(
            conn, tranches, "tranche_id", d["tranche_id"], status="rejected", reason=d["reason"]
        )
        change_row(conn, event, awards, d["award_id"], in_tranches=row.in_tranches - amount)


@_on("expenditure_reported")
def _expenditure(conn: Connection, event: RecordedEvent) -> None:
    d = event.data
    insert_row(
        conn, expenditure_reports, d, seq=count_rows(conn, expenditure_reports, d["award_id"]) + 1
    )
    row = one_row(conn, awards, "award_id", d["award_id"])
    change_row(
        conn, event, awards, d["award_id"], expenditure=row.expenditure + Decimal(d["amount"])
    )
