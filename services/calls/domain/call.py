"""A call and its applications: the pure rules of the calls service (no I/O, no nameko, no SQL).

One stream per call, `call-<call_id>`, holds the call and every application to it: the rules that
span applications (one application per applicant, the ranking, the sum of awards within the
budget) then hold under the log's optimistic concurrency on one stream, with no cross-stream
locking. Each award has its own stream, `award-<award_id>` (docs/events.md, F1/F2), whose rules
are in awards.py; the call stream keeps the awards' money (`funds_reserved` / `funds_released`),
so the call's available budget is always budget - reserved + released.

Decisions take the state, the command (commands.py) or plain values (ids, `now`, dates) and
return the events to append;
`evolve` (state.py) folds an event into the state. A broken rule raises one of the errors in
errors.py. This module holds the call's lifecycle and the applications; the ranking and the
awards it funds are in funding.py, an award's own rules in awards.py; the package (domain/)
gathers what the service uses of them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from shared.clock import format_ts
from shared.days import window
from shared.errors import InvalidInput
from shared.money import money_text
from shared.records import NewEvent

from ..commands import DraftCall, SubmitApplication, derived_id
from ..state import Call
from .errors import (
    DuplicateApplication,
    InvalidScore,
    NotAdmitted,
    OutsideWindow,
    RankingBeforeClose,
    require_state,
)

ADMITTED = ("admissible", "accompanied", "scored")
MAX_CLOSE_REASON = 500  # characters of an early closure's reason


# -- the call ------------------------------------------------------------------------------------


def draft_call(call: Call, call_id: str, terms: DraftCall) -> list[NewEvent]:
    require_state("the call", call.status, ("none",), "draft it")
    names = [c.name for c in terms.criteria]
    problems: dict[str, list[str]] = {}
    if sum(c.weight for c in terms.criteria) != 100:
        problems["criteria"] = ["the weights must sum to 100"]
    if len(set(names)) != len(names):
        problems.setdefault("criteria", []).append("criterion names must be unique")
    tie_break = list(terms.tie_break)
    if any(name not in names for name in tie_break) or len(set(tie_break)) != len(tie_break):
        problems["tie_break"] = ["each tie-break must be a criterion of the call, once"]
    if terms.closes_on < terms.opens_on:
        problems["closes_on"] = ["the call cannot close before it opens"]
    if problems:
        raise InvalidInput("invalid call terms", fields=problems)
    opens_at, closes_at = window(terms.opens_on, terms.closes_on)
    data = {
        "call_id": call_id,
        "title": terms.title,
        "reference": terms.reference,
        "kind": terms.kind,
        "budget_line": terms.budget_line,
        "project_cup": terms.project_cup,
        "budget": money_text(terms.budget),
        "opens_on": terms.opens_on.isoformat(),
        "closes_on": terms.closes_on.isoformat(),
        "opens_at": format_ts(opens_at),
        "closes_at": format_ts(closes_at),
        "criteria": [
            {"name": c.name, "weight": c.weight, "max_score": c.max_score} for c in terms.criteria
        ],
        "bonuses": dict(sorted(terms.bonuses.items())),
        "award_cap": money_text(terms.award_cap),
        "max_share": f"{terms.max_share:f}",
        "tie_break": tie_break,
    }
    return [NewEvent("call_drafted", data)]


def publish_call(call: Call, now: dt.datetime) -> list[NewEvent]:
    require_state("the call", call.status, ("draft",), "publish it")
    assert call.closes_at is not None
    if now >= call.closes_at:
        raise OutsideWindow(
            "the call's window has already ended", closes_at=call.terms["closes_at"]
        )
    return [NewEvent("call_published", {**call.terms, "published_at": format_ts(now)})]


def close_call(call: Call, now: dt.datetime, reason: str | None = None) -> list[NewEvent]:
    """Close a published call: at or after its window's end as planned (`reason` optional), or
    earlier by a decision of the office, a "chiusura anticipata" (resources exhausted, say), which
    must say why. The reason stays in the log; the public event says only that it was early."""
    require_state("the call", call.status, ("published",), "close it")
    assert call.opens_at is not None and call.closes_at is not None
    if now < call.opens_at:
        # Nobody could have applied yet: closing would cancel the call, which is not a closure.
        raise OutsideWindow("the call's window has not opened yet", opens_at=call.terms["opens_at"])
    reason = (reason or "").strip() or None
    early = now < call.closes_at
    if early and reason is None:
        raise InvalidInput(
            "closing a call before its window ends needs a reason",
            fields={"reason": [f"required to close before {call.terms['closes_at']}"]},
        )
    if reason is not None and len(reason) > MAX_CLOSE_REASON:
        raise InvalidInput(
            "the reason is too long",
            fields={"reason": [f"at most {MAX_CLOSE_REASON} characters"]},
        )
    data = {
        "call_id": call.call_id,
        "closed_at": format_ts(now),
        "applications": len(call.applications),
        "early": early,
        "reason": reason,
    }
    return [NewEvent("call_closed", data)]


# -- applications --------------------------------------------------------------------------------


def applicant_key(kind: str, person_id: str | None, organisation_tax_code: str | None) -> str:
    """Who counts as the same applicant: a person by their pseudonymous id; a body or group by
    its tax code, or a group without one by its reference person."""
    if kind == "person" or (kind == "informal_group" and not organisation_tax_code):
        assert person_id, "a person applicant has a person id"
        return f"{kind}:{person_id}"
    assert organisation_tax_code, "a body has a tax code"
    return f"{kind}:{organisation_tax_code}"


def identified(applicant: Mapping[str, Any], person_id: str | None) -> tuple[dict[str, Any], str]:
    """The applicant with its person's pseudonymous id (None for a body without a reference
    person), and the key that makes one applicant one applicant (`applicant_key`)."""
    organisation = applicant.get("organisation") or {}
    key = applicant_key(applicant["kind"], person_id, organisation.get("tax_code"))
    return {**applicant, "person_id": person_id}, key


def submit_application(
    call: Call, application: SubmitApplication, *, key: str, now: dt.datetime
) -> list[NewEvent]:
    """`application` as loaded, its applicant `identified`; plaintext here: the store seals the
    personal fields as it appends (events.CONTRACTS.persons)."""
    require_state("the call", call.status, ("published",), "take applications")
    assert call.opens_at is not None and call.closes_at is not None
    if not call.opens_at <= now < call.closes_at:
        raise OutsideWindow(
            "applications are taken only while the call is open",
            opens_at=call.terms["opens_at"],
            closes_at=call.terms["closes_at"],
        )
    if key in call.applicants:
        raise DuplicateApplication(
            "this applicant has already applied to this call",
            application_id=call.applicants[key],
        )
    seq = len(call.applications) + 1
    applicant = application.applicant
    holder = applicant.get("person") if applicant["kind"] == "person" else applicant["organisation"]
    priorities = sorted(set((holder or {}).get("priorities", [])))
    bonus = sum(call.terms["bonuses"].get(p, 0) for p in priorities)
    plan = application.business_plan
    data = {
        "call_id": call.call_id,
        "application_id": derived_id(call.call_id, "application", str(seq)),
        "seq": seq,
        "public_reference": f"{call.terms['reference']}-{seq:04d}",
        "applicant_key": key,
        "applicant": dict(applicant),
        "project_title": application.project_title,
        "business_plan": {
            "eligible_cost": money_text(plan.eligible_cost),
            "requested_amount": money_text(plan.requested_amount),
            "jobs_created": plan.jobs_created,
        },
        "bonus": bonus,
        "submitted_at": format_ts(now),
    }
    return [NewEvent("application_submitted", data)]


def admit(call: Call, application_id: str) -> list[NewEvent]:
    app = call.application(application_id)
    require_state("the call", call.status, ("published", "closed"), "decide admissibility")
    require_state("the application", app.status, ("submitted",), "admit it")
    return [
        NewEvent(
            "application_admitted", {"call_id": call.call_id, "application_id": app.application_id}
        )
    ]


def reject(call: Call, application_id: str, reason: str, note: str | None) -> list[NewEvent]:
    app = call.application(application_id)
    require_state("the call", call.status, ("published", "closed"), "decide admissibility")
    require_state("the application", app.status, ("submitted",), "find it inadmissible")
    data = {
        "call_id": call.call_id,
        "application_id": application_id,
        "reason": reason,
        "note": note,
    }
    return [NewEvent("application_rejected", data)]


def start_accompaniment(call: Call, application_id: str, started_on: dt.date) -> list[NewEvent]:
    app = call.application(application_id)
    require_state("the call", call.status, ("published", "closed"), "start accompaniment")
    if app.status not in ("admissible",):
        raise NotAdmitted("only an admitted application is accompanied", status=app.status)
    data = {
        "call_id": call.call_id,
        "application_id": application_id,
        "started_on": started_on.isoformat(),
    }
    return [NewEvent("accompaniment_started", data)]


def hold_codesign_session(
    call: Call, application_id: str, held_on: dt.date, topic: str, notes: str | None
) -> list[NewEvent]:
    app = call.application(application_id)
    require_state("the application", app.status, ("accompanied",), "hold a co-design session")
    data = {
        "call_id": call.call_id,
        "application_id": application_id,
        "session": app.sessions + 1,
        "held_on": held_on.isoformat(),
        "topic": topic,
        "notes": notes,
    }
    return [NewEvent("codesign_session_held", data)]


def score(
    call: Call, application_id: str, scores: Mapping[str, int], evaluator: str
) -> list[NewEvent]:
    app = call.application(application_id)
    require_state("the call", call.status, ("published", "closed"), "score applications")
    if app.status not in ADMITTED:
        raise NotAdmitted("scores are given only to admitted applications", status=app.status)
    maxima = {c.name: c.max_score for c in call.criteria}
    problems = {
        f"scores.{name}": [
            "not a criterion of this call" if name not in maxima else f"must be 0..{maxima[name]}"
        ]
        for name, value in scores.items()
        if name not in maxima or not 0 <= value <= maxima[name]
    }
    if not scores:
        problems["scores"] = ["give at least one criterion's score"]
    if problems:
        raise InvalidScore("invalid scores for this call", fields=problems)
    data = {
        "call_id": call.call_id,
        "application_id": application_id,
        "scores": dict(sorted(scores.items())),
        "evaluator": evaluator,
    }
    return [NewEvent("application_scored", data)]


def complete_evaluation(call: Call) -> list[NewEvent]:
    if call.status == "published":
        raise RankingBeforeClose("the call must be closed before its evaluation ends")
    require_state("the call", call.status, ("closed",), "complete the evaluation")
    pending = sorted(
        a.public_reference
        for a in call.applications.values()
        if a.status not in ("scored", "inadmissible")
    )
    if pending:
        raise RankingBeforeClose(
            "every application must be found inadmissible or fully scored first", pending=pending
        )
    statuses = [a.status for a in call.applications.values()]
    data = {
        "call_id": call.call_id,
        "scored": statuses.count("scored"),
        "inadmissible": statuses.count("inadmissible"),
    }
    return [NewEvent("evaluation_completed", data)]
