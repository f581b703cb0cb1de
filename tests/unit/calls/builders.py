"""Builders for the calls service's tests: call terms, applications, and folding decisions into
state without a database (each NewEvent becomes a RecordedEvent at a given instant)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from services.calls import domain
from services.calls.commands import (
    BusinessPlan,
    CriterionTerms,
    DraftCall,
    SubmitApplication,
    call_stream,
)
from services.calls.domain import awards
from shared.clock import UTC
from shared.records import NewEvent, RecordedEvent
from tests.kit.events import recorded

# The call below is open from 1 March (Bologna) to 31 March 2024, DST starting on the 31st.
OPENS_ON, CLOSES_ON = dt.date(2024, 3, 1), dt.date(2024, 3, 31)
DURING = dt.datetime(2024, 3, 10, 10, 0, tzinfo=UTC)
AFTER = dt.datetime(2024, 4, 2, 9, 0, tzinfo=UTC)
TODAY = dt.date(2024, 4, 5)
CALL_ID = "c0ffee00-0000-4000-8000-000000000001"
_positions = itertools.count(1)


def as_recorded(event: NewEvent, at: dt.datetime) -> RecordedEvent:
    """`event` as the log records it at `at`."""
    return recorded(
        event.type,
        event.data,
        position=next(_positions),
        schema_version=event.schema_version,
        actor="tester",
        at=at,
    )


def apply_call(
    call: domain.Call, events: Iterable[NewEvent], at: dt.datetime = DURING
) -> domain.Call:
    for event in events:
        domain.evolve(call, as_recorded(event, at))
    return call


def apply_award(
    award: awards.Award, events: Iterable[NewEvent], at: dt.datetime = DURING
) -> awards.Award:
    for event in events:
        awards.evolve_award(award, as_recorded(event, at))
    return award


def terms(**overrides: Any) -> DraftCall:
    """Call terms as DraftCallIn loads them (criteria may be given as dicts)."""
    base: dict[str, Any] = {
        "title": "Social innovation 2024/1",
        "reference": "AVV-2024-01",
        "kind": "social_innovation",
        "budget_line": "labour_policies",
        "project_cup": "F31D23000140007",
        "budget": Decimal("20000.00"),
        "opens_on": OPENS_ON,
        "closes_on": CLOSES_ON,
        "criteria": [
            {"name": "sustainability", "weight": 40, "max_score": 10},
            {"name": "jobs", "weight": 30, "max_score": 10},
            {"name": "social_impact", "weight": 30, "max_score": 5},
        ],
        "bonuses": {"peripheral_area": 3, "women": 2, "under_35": 1},
        "award_cap": Decimal("8000.00"),
        "max_share": Decimal("0.80"),
        "tie_break": ["social_impact"],
    }
    base.update(overrides)
    criteria = tuple(CriterionTerms(**c) for c in base.pop("criteria"))
    return DraftCall(**{**base, "tie_break": tuple(base["tie_break"])}, criteria=criteria)


def a_call(status: str = "published", **overrides: Any) -> domain.Call:
    call = apply_call(domain.Call(), domain.draft_call(domain.Call(), CALL_ID, terms(**overrides)))
    if status in ("published", "closed"):
        apply_call(call, domain.publish_call(call, DURING))
    if status == "closed":
        apply_call(call, domain.close_call(call, AFTER), at=AFTER)
    return call


def an_application(
    kind: str = "person",
    *,
    tax_code: str = "RSSMRA80A01A944I",
    priorities: list[str] | None = None,
    eligible: str = "10000.00",
    requested: str = "8000.00",
    person_id: str | None = "p-1",
) -> SubmitApplication:
    """An application as SubmitApplicationIn loads it, with the person id the service adds."""
    if kind == "person":
        applicant: dict[str, Any] = {
            "kind": "person",
            "person_id": person_id,
            "person": {
                "name": "Maria Rossi",
                "tax_code": tax_code,
                "email": None,
                "phone": None,
                "priorities": priorities or [],
            },
            "organisation": None,
        }
    else:
        applicant = {
            "kind": kind,
            "person_id": None,
            "person": None,
            "organisation": {
                "name": "Cooperativa Sociale Esempio",
                "tax_code": tax_code,
                "legal_seat": "Bologna",
                "priorities": priorities or [],
            },
        }
    plan = BusinessPlan(Decimal(eligible), Decimal(requested), jobs_created=2)
    return SubmitApplication(applicant, "A bicycle repair workshop", plan)


def submit(call: domain.Call, key: str, at: dt.datetime = DURING, **application: Any) -> str:
    """Submit one application and return its id."""
    events = domain.submit_application(call, an_application(**application), key=key, now=at)
    apply_call(call, events, at=at)
    return str(events[0].data["application_id"])


def scored_call(
    rows: list[tuple[dict[str, int], dict[str, Any]]], **overrides: Any
) -> tuple[domain.Call, list[str]]:
    """A closed and evaluated call whose applications got `scores` (with `application` kwargs)."""
    call = a_call(**overrides)
    ids = [submit(call, f"person:p{i}", **app) for i, (_, app) in enumerate(rows)]
    for app_id, (scores, _) in zip(ids, rows, strict=True):
        apply_call(call, domain.admit(call, app_id))
        apply_call(call, domain.score(call, app_id, scores, "evaluator-1"))
    apply_call(call, domain.close_call(call, AFTER), at=AFTER)
    apply_call(call, domain.complete_evaluation(call), at=AFTER)
    return call, ids


def approved(call: domain.Call) -> dict[str, list[NewEvent]]:
    changes = domain.approve_ranking(call, TODAY)
    apply_call(call, changes[call_stream(call.call_id)], at=AFTER)
    return changes


def full(sustainability: int, jobs: int, social_impact: int) -> dict[str, int]:
    return {"sustainability": sustainability, "jobs": jobs, "social_impact": social_impact}
