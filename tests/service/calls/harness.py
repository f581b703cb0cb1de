"""Running the calls service in a test: a real nameko container on the real broker, with unique
names (the service and the ledger it listens to), its own database, a clock the test moves, an
HTTP client with an operator token, and a stand-in ledger that publishes answers exactly as the
ledger's relay would (docs/events.md, F1/F2). Everything it declares on the broker is deleted at
the end."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

import kombu
import requests
from nameko.containers import ServiceContainer
from nameko.standalone.events import get_event_exchange

from services.calls import events, readmodels
from services.calls.service import CallsService
from shared.clock import UTC, FixedClock
from shared.consumer import queue_name
from shared.dependencies import EventStore, log_for
from shared.dlq import dlq_name
from shared.records import RecordedEvent
from shared.web import bound_port

TOKEN = "calls-test-operator-" + uuid.uuid4().hex
AUDITOR = "calls-test-auditor-" + uuid.uuid4().hex
START = dt.datetime(2024, 3, 10, 9, 0, tzinfo=UTC)  # inside the window of `call_body()`
AFTER = dt.datetime(2024, 4, 2, 9, 0, tzinfo=UTC)  # after it: the call may close


def calls_class(name: str, clock: FixedClock) -> type:
    """The calls service under another name, on the test's clock."""
    store = EventStore(projections=readmodels.PROJECTIONS, contracts=events.CONTRACTS, clock=clock)
    return type(f"Calls_{name}", (CallsService,), {"name": name, "store": store})


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


class Client:
    """HTTP with the operator's token; every command gets a fresh Idempotency-Key unless given."""

    def __init__(self, base: str, token: str = TOKEN) -> None:
        self.base = base
        self.token = token

    def post(self, path: str, body: Any = None, *, key: str | None = None) -> requests.Response:
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Idempotency-Key": key or uuid.uuid4().hex,
        }
        response = requests.post(self.base + path, json=body, headers=headers, timeout=10)
        assert response.headers["Content-Type"].startswith("application/json"), response.text
        return response

    def ok(
        self, path: str, body: Any = None, *, status: int | None = None, key: str | None = None
    ) -> dict[str, Any]:
        response = self.post(path, body, key=key)
        assert response.status_code in ((status,) if status else (200, 201)), response.text
        return response.json()

    def get(self, path: str, **params: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return requests.get(self.base + path, params=params, headers=headers, timeout=10)

    def read(self, path: str, **params: Any) -> Any:
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        return response.json()


class CallsHarness:
    def __init__(self, amqp_uri: str, unique: str, database: dict[str, str]) -> None:
        self.amqp_uri = amqp_uri
        self.name = unique + "calls"
        self.ledger = unique + "ledger"
        self.database = database
        self.clock = FixedClock(START)
        self.containers: list[ServiceContainer] = []
        self.connection = kombu.Connection(amqp_uri, transport_options={"confirm_publish": True})
        self._positions = itertools.count(1)
        self._versions: dict[str, int] = {}

    def start(self, **config: Any) -> ServiceContainer:
        settings = {
            "AMQP_URI": self.amqp_uri,
            "WEB_SERVER_ADDRESS": "127.0.0.1:0",
            "LAVORO_TOKENS": f"op-anna:operator:{TOKEN},aud-bea:auditor:{AUDITOR}",
            "LAVORO_RETRY_BASE_DELAY": 0.01,
            "LAVORO_RETRY_MAX_DELAY": 0.05,
            "LAVORO_RETRY_ATTEMPTS": 2,
            "LAVORO_SOURCES": {"ledger": self.ledger},
            "CALLS_PSEUDONYM_KEY": "test-pseudonym-key",
            **self.database,
            **config,
        }
        container = ServiceContainer(calls_class(self.name, self.clock), settings)
        container.start()
        self.containers.append(container)
        return container

    def client(self, container: ServiceContainer, token: str = TOKEN) -> Client:
        return Client(f"http://127.0.0.1:{bound_port(container)}", token)

    def log(self, container: ServiceContainer) -> Any:
        return log_for(container)

    def answer(
        self, type_: str, data: dict[str, Any], *, cause: RecordedEvent | None = None
    ) -> dict[str, Any]:
        """Publish one ledger answer on `<ledger>.events`, as the ledger's relay would."""
        stream = f"commitment-grant-{data['award_id']}"
        self._versions[stream] = self._versions.get(stream, 0) + 1
        now = self.clock.now()
        body = RecordedEvent(
            position=next(self._positions),
            id=str(uuid.uuid4()),
            stream=stream,
            version=self._versions[stream],
            type=type_,
            schema_version=1,
            data=data,
            correlation_id=cause.correlation_id if cause else None,
            causation_id=cause.id if cause else None,
            actor=None,
            occurred_at=now,
            recorded_at=now,
            prev_hash="0" * 64,
            hash="f" * 64,
        ).to_json()
        self.publish(body)
        return body

    def publish(self, body: dict[str, Any]) -> None:
        exchange = get_event_exchange(self.ledger, {})
        self.connection.Producer().publish(
            body,
            exchange=exchange,
            routing_key=body["type"],
            message_id=body["id"],
            serializer="json",
            delivery_mode=2,
            declare=[exchange],
        )

    def close(self) -> None:
        for container in self.containers:
            container.kill()
        channel = self.connection.default_channel
        for queue in (queue_name(self.name, self.ledger), dlq_name(self.name)):
            channel.queue_delete(queue)
        for exchange in (f"{self.name}.events", f"{self.ledger}.events"):
            channel.exchange_delete(exchange)
        self.connection.release()


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


def full(sustainability: int, jobs: int, social_impact: int) -> dict[str, int]:
    return {"sustainability": sustainability, "jobs": jobs, "social_impact": social_impact}


def awarded_call(
    harness: CallsHarness,
    client: Client,
    applications: list[dict[str, Any]],
    scores: list[dict[str, int]],
    **call: Any,
) -> dict[str, Any]:
    """Draft, publish, take `applications`, admit and score them, close, evaluate and approve the
    ranking: what the call's awards came to."""
    harness.clock.set(START)
    call_id = client.ok("/calls", call_body(**call), status=201)["call_id"]
    client.ok(f"/calls/{call_id}/publish")
    ids = [
        client.ok(f"/calls/{call_id}/applications", a, status=201)["application_id"]
        for a in applications
    ]
    for app_id, score in zip(ids, scores, strict=True):
        client.ok(f"/calls/{call_id}/applications/{app_id}/admit")
        client.ok(f"/calls/{call_id}/applications/{app_id}/scores", {"scores": score})
    harness.clock.set(AFTER)
    client.ok(f"/calls/{call_id}/close")
    client.ok(f"/calls/{call_id}/evaluation/complete")
    approved = client.ok(f"/calls/{call_id}/ranking/approve")
    return {"call_id": call_id, "applications": ids, "awards": award_ids(approved)}


def award_ids(reply: dict[str, Any]) -> list[str]:
    """The awards a command's reply names, in the order it made them (one is `award_id`)."""
    if "award_ids" in reply:
        return list(reply["award_ids"])
    return [reply["award_id"]] if "award_id" in reply else []


def types(reply: dict[str, Any]) -> list[str]:
    """The types of the events a command's reply lists, in log order."""
    return [event["type"] for event in reply["events"]]


def grants(log: Any) -> dict[str, RecordedEvent]:
    """award id -> its grant_awarded event, from the service's log."""
    return {e.data["award_id"]: e for e in log.read_all() if e.type == "grant_awarded"}
