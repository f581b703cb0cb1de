"""Reading the books: the ledger's read models as the answers of its HTTP API, now or as of a time.

`Books(read)` takes a function that runs a SELECT, so the same reads serve the live read models
(`store.query`) and the books as they stood at an instant (`History`: the log replayed into a
scratch database by shared.projections.replay_as_of; never a stored copy).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from nameko.extensions import DependencyProvider

from shared.dependencies import log_for
from shared.eventlog import EventLog
from shared.money import ZERO
from shared.projections import replay_as_of

from ..readmodels import (
    CAUSE,
    Reader,
    admissions,
    commitments,
    lines,
    payments,
    projection,
    projects,
    reductions,
)

FIGURES = ("programmed", "admitted", "legally_binding", "disbursed")


def _entry(row: Any) -> dict[str, Any]:
    """An entry's row (a commitment, a reduction, a payment) as the API answers it: its columns,
    the cause's gathered in one member."""
    entry = dict(row._mapping)
    entry["cause"] = {name: entry.pop(name) for name in CAUSE}
    return entry


class Books:
    def __init__(self, read: Reader) -> None:
        self._read = read

    def project(self, cup: str) -> dict[str, Any] | None:
        rows = self._read(sa.select(projects).where(projects.c.project_cup == cup))
        if not rows:
            return None
        return {**rows[0]._mapping, "budget_lines": self.lines(cup)}

    def lines(self, cup: str) -> list[dict[str, Any]]:
        rows = self._read(
            sa.select(lines).where(lines.c.project_cup == cup).order_by(lines.c.position)
        )
        return [
            {"budget_line": row.budget_line, **{name: getattr(row, name) for name in FIGURES}}
            for row in rows
        ]

    def progress(self, cup: str, as_of: dt.date | None = None) -> dict[str, Any]:
        by_line = self.lines(cup)
        total = {name: sum((line[name] for line in by_line), ZERO) for name in FIGURES}
        share = ZERO
        if total["programmed"]:
            share = (total["disbursed"] * 100 / total["programmed"]).quantize(Decimal("0.1"))
        return {
            "project_cup": cup,
            "as_of": as_of,
            "total": total,
            "disbursed_percent": format(share, "f"),
            "budget_lines": by_line,
        }

    def admissions(self, cup: str) -> list[dict[str, Any]]:
        rows = self._read(
            sa.select(admissions)
            .where(admissions.c.project_cup == cup)
            .order_by(admissions.c.adopted_on, admissions.c.act_id)
        )
        acts: dict[str, dict[str, Any]] = {}
        for row in rows:
            act = acts.setdefault(
                row.act_id,
                {
                    "act_id": row.act_id,
                    "act_reference": row.act_reference,
                    "adopted_on": row.adopted_on,
                    "amount": ZERO,
                    "budget_lines": [],
                },
            )
            act["amount"] += row.amount
            act["budget_lines"].append({"budget_line": row.budget_line, "amount": row.amount})
        return list(acts.values())

    def commitments(self, cup: str | None = None, commitment_id: str | None = None) -> list[dict]:
        """Commitments of a project (or the one with `commitment_id`), in the order of record,
        each with its reductions and payments."""
        query = sa.select(commitments).order_by(commitments.c.position)
        if cup is not None:
            query = query.where(commitments.c.project_cup == cup)
        if commitment_id is not None:
            query = query.where(commitments.c.commitment_id == commitment_id)
        rows = self._read(query)
        ids = [row.commitment_id for row in rows]
        paid = self._entries_of(payments, ids)
        reduced = self._entries_of(reductions, ids)
        return [
            {
                **_entry(row),
                "remaining": row.amount - row.paid,
                "reductions": reduced[row.commitment_id],
                "payments": paid[row.commitment_id],
            }
            for row in rows
        ]

    def commitment(self, commitment_id: str) -> dict[str, Any] | None:
        found = self.commitments(commitment_id=commitment_id)
        return found[0] if found else None

    def payments(self, cup: str) -> list[dict[str, Any]]:
        rows = self._read(
            sa.select(payments).where(payments.c.project_cup == cup).order_by(payments.c.position)
        )
        return [_entry(row) for row in rows]

    def _entries_of(self, table: sa.Table, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The rows of `table` (payments, reductions) on each of the commitments `ids`, in the
        order of record."""
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        if ids:
            rows = self._read(
                sa.select(table).where(table.c.commitment_id.in_(ids)).order_by(table.c.position)
            )
            for row in rows:
                found[row.commitment_id].append(_entry(row))
        return found


class Replayer:
    """What a worker gets from `History`: the books as they stood at an instant."""

    def __init__(self, log: EventLog) -> None:
        self._log = log

    @contextmanager
    def books_at(self, until: dt.datetime) -> Iterator[Books]:
        """Books over the events recorded at or before `until`; the scratch database goes with
        the block."""
        scratch = replay_as_of(self._log, [projection], until)
        try:
            with scratch.connect() as conn:
                yield Books(lambda statement: list(conn.execute(statement)))
        finally:
            scratch.dispose()


class History(DependencyProvider):
    """Gives a worker a `Replayer` on the service's own log (the EventStore's)."""

    def get_dependency(self, worker_ctx: Any) -> Replayer:
        return Replayer(log_for(self.container))
