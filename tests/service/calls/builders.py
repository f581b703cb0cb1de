"""Builders for the calls service's HTTP tests, in the service tier and on the broker: the calls
service on a clock the test moves, a call's terms and a person's application as the API takes
them, the ledger's answers to its awards and tranches (docs/events.md, F1/F2), a call taken from
draft to its awards, and readers of a command's reply and of the service's log."""

from __future__ import annotations

import datetime as dt
from typing import Any

from services.calls import events, readmodels
from services.calls.service import CallsService
from shared.clock import UTC, FixedClock
from shared.dependencies import EventStore
from shared.eventlog import EventLog
from shared.records import RecordedEvent
from tests.kit.http import Client
from tests.unit.calls.builders import AFTER

START = dt.datetime(2024, 3, 10, 9, 0, tzinfo=UTC)  # inside the window of `call_body()`
PSEUDONYM_KEY = "test-pseudonym-key"  # CALLS_PSEUDONYM_KEY of the tests' calls service


def calls_on(clock: FixedClock) -> type:
    """The calls service on the test's clock."""
    store = EventStore(projections=readmodels.PROJECTIONS, contracts=events.CONTRACTS, clock=clock)
    return type("Calls", (CallsService,), {"store": store})


def call_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "title": "Autoimpiego 2024",
        "reference": "AVV-2024-01",
        "kind": "self_employment",
        "budget_line": "labour_policies",
        "budget": "20000.00",
        "opens_on": "2024-03-01",
        "closes_on": "2024-03-31",
        "criteria": [
            {"name": "sustainability", "weight": 40, "max_score": 10},
            {"name": "jobs", "weight": 30, "max_score": 10},
            {"name": "social_impact", "weight": 30, "max_score": 5},
        ],
        "bonuses": {"peripheral_area": 3, "women": 2},
        "award_cap": "8000.00",
        "max_share": "0.80",
        "tie_break": ["social_impact"],
    }
    body.update(overrides)
    return body


def person_application(n: int, *, requested: str = "8000.00", **person: Any) -> dict[str, Any]:
    tax_code = f"RSSMRA80A01A{n:03d}X"
    return {
        "applicant": {
            "kind": "person",
            "person": {
                "name": f"Persona Numero{n}",
                "tax_code": tax_code,
                "priorities": [],
                **person,
            },
        },
        "project_title": f"Project {n}",
        "business_plan": {
            "eligible_cost": "10000.00",
            "requested_amount": requested,
            "jobs_created": 1,
        },
    }


def commitment_recorded(grant: dict[str, Any]) -> dict[str, Any]:
    """The ledger's F1 answer to a `grant_awarded` payload, as docs/events.md states it."""
    return {
        "commitment_id": f"grant-{grant['award_id']}",
        "project_cup": grant["project_cup"],
        "budget_line": grant["budget_line"],
        "kind": "grant",
        "amount": grant["amount"],
        "source_reference": grant["reference"],
        "signed_on": grant["awarded_on"],
        "award_id": grant["award_id"],
    }


def commitment_rejected(grant: dict[str, Any], available: str = "0.00") -> dict[str, Any]:
    return {
        "award_id": grant["award_id"],
        "project_cup": grant["project_cup"],
        "budget_line": grant["budget_line"],
        "amount": grant["amount"],
        "reason": "line_lacks_room",
        "available": available,
    }


def payment_disbursed(tranche: dict[str, Any], paid_on: str = "2024-05-03") -> dict[str, Any]:
    return {
        "payment_id": f"tranche-{tranche['tranche_id']}",
        "commitment_id": f"grant-{tranche['award_id']}",
        "project_cup": "F31D23000140007",
        "budget_line": "labour_policies",
        "amount": tranche["amount"],
        "claim_reference": tranche["claim_reference"],
        "claim_date": tranche["claim_date"],
        "paid_on": paid_on,
        "award_id": tranche["award_id"],
        "tranche_id": tranche["tranche_id"],
    }


def payment_rejected(tranche: dict[str, Any], remaining: str = "0.00") -> dict[str, Any]:
    return {
        "award_id": tranche["award_id"],
        "tranche_id": tranche["tranche_id"],
        "commitment_id": f"grant-{tranche['award_id']}",
        "amount": tranche["amount"],
        "reason": "exceeds_commitment",
        "remaining": remaining,
    }


def awarded_call(
    client: Client,
    clock: FixedClock,
    applications: list[dict[str, Any]],
    scores: list[dict[str, int]],
    **call: Any,
) -> dict[str, Any]:
    """Draft, publish, take `applications`, admit and score them, close, evaluate and approve the
    ranking: what the call's awards came to."""
    clock.set(START)
    call_id = client.ok("POST", "/calls", call_body(**call), status=201)["call_id"]
    client.ok("POST", f"/calls/{call_id}/publish")
    ids = [
        client.ok("POST", f"/calls/{call_id}/applications", a, status=201)["application_id"]
        for a in applications
    ]
    for app_id, score in zip(ids, scores, strict=True):
        client.ok("POST", f"/calls/{call_id}/applications/{app_id}/admit")
        client.ok("POST", f"/calls/{call_id}/applications/{app_id}/scores", {"scores": score})
    clock.set(AFTER)
    client.ok("POST", f"/calls/{call_id}/close")
    client.ok("POST", f"/calls/{call_id}/evaluation/complete")
    approved = client.ok("POST", f"/calls/{call_id}/ranking/approve")
    return {"call_id": call_id, "applications": ids, "awards": award_ids(approved)}


def award_ids(reply: dict[str, Any]) -> list[str]:
    """The awards a command's reply names, in the order it made them (one is `award_id`)."""
    if "award_ids" in reply:
        return list(reply["award_ids"])
    return [reply["award_id"]] if "award_id" in reply else []


def types(reply: dict[str, Any]) -> list[str]:
    """The types of the events a command's reply lists, in log order."""
    return [event["type"] for event in reply["events"]]


def grants(log: EventLog) -> dict[str, RecordedEvent]:
    """award id -> its grant_awarded event, from the service's log."""
    return {e.data["award_id"]: e for e in log.read_all() if e.type == "grant_awarded"}
