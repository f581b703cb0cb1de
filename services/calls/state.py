"""The state of a call and its applications, folded from the call's stream, and of an award and
its tranches, folded from the award's. Pure, no I/O.

One stream per call, `call-<call_id>`, holds the call and every application to it (see
domain/call.py for why); one stream per award, `award-<award_id>`. `evolve` and `evolve_award`
fold one event; `CALL` and `AWARD` are the aggregates a plan loads (handlers.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from shared.clock import parse_ts
from shared.errors import NotFound
from shared.money import ZERO
from shared.records import Aggregate, RecordedEvent

from .commands import CriterionTerms as Criterion  # as the call's terms set it: one dataclass


@dataclasses.dataclass(frozen=True)
class Ranked:
    position: int
    application_id: str
    seq: int
    public_reference: str
    scores: Mapping[str, int]
    weighted: Decimal
    bonus: int
    total: Decimal


@dataclasses.dataclass
class Application:
    application_id: str
    seq: int
    public_reference: str
    applicant_key: str
    applicant_kind: str
    eligible_cost: Decimal
    requested: Decimal
    jobs_created: int
    bonus: int
    status: str = "submitted"
    reason: str | None = None
    sessions: int = 0
    scores: dict[str, int] = dataclasses.field(default_factory=dict)
    award_id: str | None = None


@dataclasses.dataclass
class Reservation:
    award_id: str
    application_id: str
    amount: Decimal
    released: bool = False


@dataclasses.dataclass
class Call:
    call_id: str = ""
    status: str = "none"  # draft | published | closed | evaluated | ranking_approved
    terms: dict[str, Any] = dataclasses.field(default_factory=dict)  # as call_drafted holds them
    budget: Decimal = ZERO
    award_cap: Decimal = ZERO
    max_share: Decimal = ZERO
    opens_at: dt.datetime | None = None
    closes_at: dt.datetime | None = None
    criteria: list[Criterion] = dataclasses.field(default_factory=list)
    applications: dict[str, Application] = dataclasses.field(default_factory=dict)
    applicants: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> application
    ranking: list[Ranked] = dataclasses.field(default_factory=list)
    reservations: dict[str, Reservation] = dataclasses.field(default_factory=dict)

    @property
    def reserved(self) -> Decimal:
        return sum((r.amount for r in self.reservations.values() if not r.released), ZERO)

    @property
    def available(self) -> Decimal:
        return self.budget - self.reserved

    def application(self, application_id: str) -> Application:
        found = self.applications.get(application_id)
        if found is None:
            raise NotFound(f"call {self.call_id} has no application {application_id}")
        return found


# -- folding -------------------------------------------------------------------------------------


def evolve(call: Call, event: RecordedEvent) -> Call:
    data = event.data
    handler = _EVOLVE.get(event.type)
    if handler is not None:
        handler(call, data)
    return call


def _drafted(call: Call, d: dict[str, Any]) -> None:
    call.call_id, call.status, call.terms = d["call_id"], "draft", d
    call.budget, call.award_cap = Decimal(d["budget"]), Decimal(d["award_cap"])
    call.max_share = Decimal(d["max_share"])
    call.opens_at, call.closes_at = parse_ts(d["opens_at"]), parse_ts(d["closes_at"])
    call.criteria = [Criterion(c["name"], c["weight"], c["max_score"]) for c in d["criteria"]]


def _submitted(call: Call, d: dict[str, Any]) -> None:
    plan = d["business_plan"]
    app = Application(
        application_id=d["application_id"],
        seq=d["seq"],
        public_reference=d["public_reference"],
        applicant_key=d["applicant_key"],
        applicant_kind=d["applicant"]["kind"],
        eligible_cost=Decimal(plan["eligible_cost"]),
        requested=Decimal(plan["requested_amount"]),
        jobs_created=plan["jobs_created"],
        bonus=d["bonus"],
    )
    call.applications[app.application_id] = app
    call.applicants[app.applicant_key] = app.application_id


def _set_status(status: str) -> Any:
    def apply(call: Call, d: dict[str, Any]) -> None:
        app = call.applications[d["application_id"]]
        app.status = status
        app.reason = d.get("reason")

    return apply


def _session(call: Call, d: dict[str, Any]) -> None:
    call.applications[d["application_id"]].sessions = d["session"]


def _scored(call: Call, d: dict[str, Any]) -> None:
    app = call.applications[d["application_id"]]
    app.scores.update(d["scores"])
    if all(c.name in app.scores for c in call.criteria):
        app.status = "scored"


def _ranked(call: Call, d: dict[str, Any]) -> None:
    call.status = "ranking_approved"
    call.ranking = [
        Ranked(
            e["position"],
            e["application_id"],
            call.applications[e["application_id"]].seq,
            e["public_reference"],
            e["scores"],
            Decimal(e["weighted"]),
            e["bonus"],
            Decimal(e["total"]),
        )
        for e in d["ranking"]
    ]
    for entry in call.ranking:
        call.applications[entry.application_id].status = "not_funded"


def _reserved(call: Call, d: dict[str, Any]) -> None:
    call.reservations[d["award_id"]] = Reservation(
        d["award_id"], d["application_id"], Decimal(d["amount"])
    )
    app = call.applications[d["application_id"]]
    app.status, app.award_id = "funded", d["award_id"]


def _released(call: Call, d: dict[str, Any]) -> None:
    call.reservations[d["award_id"]].released = True


def _call_status(status: str) -> Any:
    def apply(call: Call, d: dict[str, Any]) -> None:
        call.status = status

    return apply


_EVOLVE: dict[str, Any] = {
    "call_drafted": _drafted,
    "call_published": _call_status("published"),
    "call_closed": _call_status("closed"),
    "application_submitted": _submitted,
    "application_admitted": _set_status("admissible"),
    "application_rejected": _set_status("inadmissible"),
    "accompaniment_started": _set_status("accompanied"),
    "codesign_session_held": _session,
    "application_scored": _scored,
    "evaluation_completed": _call_status("evaluated"),
    "ranking_approved": _ranked,
    "funds_reserved": _reserved,
    "funds_released": _released,
}

CALL: Aggregate[Call] = Aggregate("call", Call, evolve)


def fold(events: Sequence[RecordedEvent]) -> Call:
    """A call from its events (tests, replays)."""
    call = Call()
    for event in events:
        evolve(call, event)
    return call


# -- an award and its tranches, folded from the award's stream -----------------------------------

LIVE = ("requested", "paid")


@dataclasses.dataclass
class Tranche:
    tranche_id: str
    kind: str
    amount: Decimal
    status: str = "requested"  # requested | paid | rejected


@dataclasses.dataclass
class Award:
    award_id: str = ""
    call_id: str = ""
    application_id: str = ""
    amount: Decimal = ZERO
    status: str = "none"  # granted | confirmed | suspended | closed | revoked
    awarded_at: dt.datetime | None = None
    commitment_id: str | None = None
    tranches: dict[str, Tranche] = dataclasses.field(default_factory=dict)
    reports: int = 0
    expenditure: Decimal = ZERO
    overdue: bool = False

    @property
    def in_tranches(self) -> Decimal:
        """What the tranches asked for or got: the part of the award no new tranche may take."""
        return sum((t.amount for t in self.tranches.values() if t.status in LIVE), ZERO)

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.in_tranches

    def tranche(self, tranche_id: str) -> Tranche:
        found = self.tranches.get(tranche_id)
        if found is None:
            raise NotFound(f"award {self.award_id} has no tranche {tranche_id}")
        return found


# -- folding an award ----------------------------------------------------------------------------


def evolve_award(award: Award, event: RecordedEvent) -> Award:
    d = event.data
    if event.type == "grant_awarded":
        award.award_id, award.call_id = d["award_id"], d["call_id"]
        award.application_id, award.amount = d["application_id"], Decimal(d["amount"])
        award.status, award.awarded_at = "granted", event.occurred_at
    elif event.type == "grant_confirmed":
        award.status, award.commitment_id = "confirmed", d["commitment_id"]
    elif event.type in ("grant_suspended", "grant_revoked"):
        award.status = "suspended" if event.type == "grant_suspended" else "revoked"
    elif event.type == "tranche_requested":
        award.tranches[d["tranche_id"]] = Tranche(d["tranche_id"], d["kind"], Decimal(d["amount"]))
    elif event.type == "tranche_paid":
        award.tranches[d["tranche_id"]].status = "paid"
        if d["kind"] == "balance" and award.status == "confirmed":
            award.status = "closed"
    elif event.type == "tranche_rejected":
        award.tranches[d["tranche_id"]].status = "rejected"
    elif event.type == "expenditure_reported":
        award.reports += 1
        award.expenditure += Decimal(d["amount"])
    elif event.type == "award_answer_overdue":
        award.overdue = True
    return award


AWARD: Aggregate[Award] = Aggregate("award", Award, evolve_award)
