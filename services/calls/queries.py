"""Answers from the read models: calls with their available budget, applications by state, the
ranking (JSON and the published CSV), awards with their tranches, alerts.

Every function takes the worker's read-only `query` (shared.dependencies.Store.query) and returns
plain values that the HTTP schemas dump. The CSV is the graduatoria as published: public
references only, never an applicant's name.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from shared.errors import NotFound

from .readmodels.tables import (
    alerts,
    applications,
    awards,
    calls,
    expenditure_reports,
    ranking_entries,
    tranches,
)

Query = Callable[..., list[Any]]
FUNDED = ("granted", "confirmed", "closed", "revoked")


def _rows(query: Query, statement: Any) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in query(statement)]


def _call_view(row: dict[str, Any]) -> dict[str, Any]:
    terms = json.loads(row.pop("terms"))
    row.pop("updated_at", None)
    return {**row, **terms}


def list_calls(query: Query) -> dict[str, Any]:
    rows = _rows(query, sa.select(calls).order_by(calls.c.opens_at, calls.c.call_id))
    return {"calls": [_call_view(r) for r in rows]}


def call(query: Query, call_id: str) -> dict[str, Any]:
    rows = _rows(query, sa.select(calls).where(calls.c.call_id == call_id))
    if not rows:
        raise NotFound(f"no call {call_id}", call_id=call_id)
    return _call_view(rows[0])


def _application_view(row: dict[str, Any]) -> dict[str, Any]:
    row["scores"] = json.loads(row["scores"])
    return row


def list_applications(query: Query, call_id: str, state: str | None) -> dict[str, Any]:
    call(query, call_id)
    statement = sa.select(applications).where(applications.c.call_id == call_id)
    if state:
        statement = statement.where(applications.c.status == state)
    rows = _rows(query, statement.order_by(applications.c.seq))
    for row in rows:
        row.pop("applicant")
    return {"call_id": call_id, "applications": [_application_view(r) for r in rows]}


def application(query: Query, call_id: str, application_id: str) -> dict[str, Any]:
    """The application with its applicant as stored (personal fields still sealed)."""
    rows = _rows(
        query,
        sa.select(applications).where(
            applications.c.call_id == call_id, applications.c.application_id == application_id
        ),
    )
    if not rows:
        raise NotFound(f"call {call_id} has no application {application_id}")
    row = _application_view(rows[0])
    row["applicant"] = json.loads(row["applicant"]) if row["applicant"] else None
    return row


def tie_break_text(tie_break: list[str]) -> str:
    steps = [f"higher score on {name}" for name in tie_break] + ["earlier submission"]
    return ", then ".join(steps)


def ranking(query: Query, call_id: str) -> dict[str, Any]:
    found = call(query, call_id)
    if found["ranking_approved_on"] is None:
        raise NotFound(f"call {call_id} has no approved ranking yet", call_id=call_id)
    rows = _rows(
        query,
        sa.select(ranking_entries)
        .where(ranking_entries.c.call_id == call_id)
        .order_by(ranking_entries.c.position),
    )
    for row in rows:
        row.pop("call_id")
        row["scores"] = json.loads(row["scores"])
        row["weighted"], row["total"] = f"{row['weighted']:f}", f"{row['total']:f}"
    return {
        "call_id": call_id,
        "approved_on": found["ranking_approved_on"],
        "tie_break": tie_break_text(found["tie_break"]),
        "criteria": [c["name"] for c in found["criteria"]],
        "ranking": rows,
    }


def ranking_csv(query: Query, call_id: str) -> str:
    """position, public reference, one column per criterion, bonus, total, awarded, status."""
    found = ranking(query, call_id)
    criteria = found["criteria"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["position", "public_reference", *criteria, "bonus", "total", "awarded", "status"]
    )
    for e in found["ranking"]:
        status = e["award_status"] or "not_funded"
        awarded = f"{e['awarded']:f}" if e["awarded"] is not None and status in FUNDED else ""
        writer.writerow(
            [
                e["position"],
                e["public_reference"],
                *(e["scores"][c] for c in criteria),
                e["bonus"],
                e["total"],
                awarded,
                status,
            ]
        )
    return out.getvalue()


def _with_details(query: Query, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not rows:
        return rows
    ids = [r["award_id"] for r in rows]
    parts = _rows(
        query,
        sa.select(tranches)
        .where(tranches.c.award_id.in_(ids))
        .order_by(tranches.c.award_id, tranches.c.seq),
    )
    reports = _rows(
        query,
        sa.select(expenditure_reports)
        .where(expenditure_reports.c.award_id.in_(ids))
        .order_by(expenditure_reports.c.award_id, expenditure_reports.c.seq),
    )
    for row in rows:
        row["tranches"] = [p for p in parts if p["award_id"] == row["award_id"]]
        row["expenditure_reports"] = [r for r in reports if r["award_id"] == row["award_id"]]
    return rows


def list_awards(query: Query, call_id: str | None, status: str | None) -> dict[str, Any]:
    statement = sa.select(awards)
    if call_id:
        statement = statement.where(awards.c.call_id == call_id)
    if status:
        statement = statement.where(awards.c.status == status)
    rows = _rows(query, statement.order_by(awards.c.call_id, awards.c.position))
    return {"awards": _with_details(query, rows)}


def award(query: Query, award_id: str) -> dict[str, Any]:
    rows = _rows(query, sa.select(awards).where(awards.c.award_id == award_id))
    if not rows:
        raise NotFound(f"no award {award_id}", award_id=award_id)
    return _with_details(query, rows)[0]


def list_alerts(query: Query, only_open: bool | None) -> dict[str, Any]:
    statement = sa.select(alerts)
    if only_open:
        statement = statement.where(alerts.c.resolved_at.is_(None))
    return {"alerts": _rows(query, statement.order_by(alerts.c.raised_at, alerts.c.alert_id))}


def waiting_awards(query: Query, awarded_before: dt.datetime) -> list[Any]:
    """Awards still `granted`, not yet flagged, awarded at or before `awarded_before` (rows with
    award_id, call_id, awarded_at): those the answer timeout looks at."""
    a = awards.c
    return query(
        sa.select(a.award_id, a.call_id, a.awarded_at).where(
            a.status == "granted", a.overdue.is_(False), a.awarded_at <= awarded_before
        )
    )
