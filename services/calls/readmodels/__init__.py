"""The calls service's read models and the one projection that folds the log into them.

| table | one row per | what it answers |
|---|---|---|
| `calls` | call | the call's terms, state and money: budget, reserved, available |
| `applications` | application | applications by call and state; the sealed applicant (opened on read) |
| `ranking_entries` | ranked application | the approved ranking with scores, totals and awards (CSV export) |
| `awards` | award | awards with their state and money: requested in tranches, paid, reported |
| `tranches` | tranche | each tranche and the ledger's answer |
| `expenditure_reports` | report | expenditure reported against an award |
| `alerts` | alert | awards left without the ledger's answer past the timeout |

Handlers run in the append's transaction with SQLAlchemy Core only. Amounts are `Amount` columns;
sums are done in Python with Decimal (SQLite keeps them as text). The applicant is kept exactly as
the event holds it (personal fields sealed); `person_erased` blanks it. The package folds the
calls and applications; award_folds.py the awards, tranches, reports and alerts; both into the one
projection `calls`.
"""

from __future__ import annotations

import json
from decimal import Decimal

from sqlalchemy.engine import Connection

from shared.money import ZERO
from shared.projections import Projection
from shared.records import RecordedEvent
from shared.rows import insert_row

from .award_folds import FOLDS as AWARD_FOLDS
from .tables import (
    applications,
    calls,
    change_row,
    date_of,
    metadata,
    one_row,
    ranking_entries,
    update_row,
)

projection = Projection("calls", metadata, handlers=AWARD_FOLDS)
PROJECTIONS = [projection]


# -- calls ---------------------------------------------------------------------------------------


@projection.on("call_drafted")
def _call_drafted(conn: Connection, event: RecordedEvent) -> None:
    d = event.data
    terms = {k: d[k] for k in ("criteria", "bonuses", "tie_break")}
    insert_row(
        conn,
        calls,
        d,
        status="draft",
        reserved=ZERO,
        available=Decimal(d["budget"]),
        terms=json.dumps(terms, sort_keys=True),
        applications=0,
        updated_at=event.recorded_at,
    )


@projection.on("call_published", "call_closed", "evaluation_completed")
def _call_status(conn: Connection, event: RecordedEvent) -> None:
    status = {"call_published": "published", "call_closed": "closed"}.get(event.type, "evaluated")
    change_row(conn, event, calls, event.data["call_id"], status=status)


@projection.on("funds_reserved", "funds_released")
def _funds(conn: Connection, event: RecordedEvent) -> None:
    d = event.data
    row = one_row(conn, calls, "call_id", d["call_id"])
    sign = 1 if event.type == "funds_reserved" else -1
    reserved = row.reserved + sign * Decimal(d["amount"])
    change_row(conn, event, calls, d["call_id"], reserved=reserved, available=row.budget - reserved)
    if event.type == "funds_reserved":
        change_row(
            conn, event, applications, d["application_id"], status="funded", award_id=d["award_id"]
        )
        conn.execute(
            ranking_entries.update()
            .where(
                ranking_entries.c.call_id == d["call_id"],
                ranking_entries.c.position == d["position"],
            )
            .values(award_id=d["award_id"], awarded=Decimal(d["amount"]), award_status="granted")
        )


# -- applications --------------------------------------------------------------------------------


@projection.on("application_submitted")
def _submitted(conn: Connection, event: RecordedEvent) -> None:
    d = event.data
    applicant = d["applicant"]
    insert_row(
        conn,
        applications,
        {**d, **d["business_plan"]},
        applicant_kind=applicant["kind"],
        person_id=applicant.get("person_id"),
        applicant=json.dumps(applicant, sort_keys=True),
        status="submitted",
        sessions=0,
        scores="{}",
        updated_at=event.recorded_at,
    )
    row = one_row(conn, calls, "call_id", d["call_id"])
    update_row(conn, calls, "call_id", d["call_id"], applications=row.applications + 1)


_APPLICATION_STATUS = {
    "application_admitted": "admissible",
    "application_rejected": "inadmissible",
    "accompaniment_started": "accompanied",
}


@projection.on(*_APPLICATION_STATUS)
def _application_status(conn: Connection, event: RecordedEvent) -> None:
    d = event.data
    change_row(
        conn,
        event,
        applications,
        d["application_id"],
        status=_APPLICATION_STATUS[event.type],
        reason=d.get("reason"),
    )


@projection.on("codesign_session_held")
def _session(conn: Connection, event: RecordedEvent) -> None:
    d = event.data
    change_row(conn, event, applications, d["application_id"], sessions=d["session"])


@projection.on("application_scored")
def _scored(conn: Connection, event: RecordedEvent) -> None:
    d = event.data
    row = one_row(conn, applications, "application_id", d["application_id"])
    scores = {**json.loads(row.scores), **d["scores"]}
    criteria = json.loads(one_row(conn, calls, "call_id", d["call_id"]).terms)["criteria"]
    done = all(c["name"] in scores for c in criteria)
    change_row(
        conn,
        event,
        applications,
        d["application_id"],
        scores=json.dumps(scores, sort_keys=True),
        status="scored" if done else row.status,
    )


@projection.on("ranking_approved")
def _ranking(conn: Connection, event: RecordedEvent) -> None:
    d = event.data
    change_row(
        conn,
        event,
        calls,
        d["call_id"],
        status="ranking_approved",
        ranking_approved_on=date_of(d["approved_on"]),
    )
    for e in d["ranking"]:
        insert_row(
            conn,
            ranking_entries,
            e,
            call_id=d["call_id"],
            scores=json.dumps(e["scores"], sort_keys=True),
        )
        change_row(conn, event, applications, e["application_id"], status="not_funded")


@projection.on("person_erased")
def _erased(conn: Connection, event: RecordedEvent) -> None:
    update_row(conn, applications, "person_id", event.data["person_id"], applicant=None)
