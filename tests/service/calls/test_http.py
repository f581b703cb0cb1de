"""The calls service over HTTP, in a nameko container without a broker (SQLite): a call from draft
to awards, the read models and the CSV, personal data sealed in the log and opened on read, the
rules' 409/422 answers, idempotent commands, the public OpenAPI document."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import requests
from openapi_spec_validator import validate

from shared.clock import UTC
from shared.crypto import Vault, erase_person
from shared.db import make_engine
from shared.eventlog import EventLog
from shared.persons import pseudonym
from tests.helpers import wait_for
from tests.kit.http import AUDITOR, OPERATOR
from tests.service.calls.builders import (
    PSEUDONYM_KEY,
    START,
    awarded_call,
    call_body,
    person_application,
    types,
)
from tests.unit.calls.builders import AFTER, full


def test_a_call_from_draft_to_its_ranking_and_awards(calls, clock):
    client = calls.client
    applications = [person_application(n) for n in range(3)]
    applications[2]["applicant"]["person"]["priorities"] = ["women", "peripheral_area"]
    scores = [full(9, 9, 5), full(8, 8, 4), full(8, 7, 4)]
    done = awarded_call(client, clock, applications, scores)
    call_id, ids = done["call_id"], done["applications"]

    found = client.ok("GET", f"/calls/{call_id}")
    assert (found["status"], found["budget"], found["reserved"], found["available"]) == (
        "ranking_approved",
        "20000.00",
        "16000.00",
        "4000.00",
    )
    assert found["opens_at"] == "2024-02-29T23:00:00.000000Z"
    assert [c["call_id"] for c in client.ok("GET", "/calls")["calls"]] == [call_id]

    ranking = client.ok("GET", f"/calls/{call_id}/ranking")
    assert ranking["tie_break"] == "higher score on social_impact, then earlier submission"
    # the third application's bonus (women 2 + peripheral area 3) puts it second: 77+5 > 80
    assert [(e["application_id"], e["total"], e["award_status"]) for e in ranking["ranking"]] == [
        (ids[0], "93.00", "granted"),
        (ids[2], "82.00", "granted"),
        (ids[1], "80.00", None),
    ]
    listed = f"/calls/{call_id}/applications"
    funded = client.ok("GET", listed, params={"state": "funded"})["applications"]
    assert sorted(a["application_id"] for a in funded) == sorted([ids[0], ids[2]])
    waiting = client.ok("GET", listed, params={"state": "not_funded"})["applications"]
    assert [a["public_reference"] for a in waiting] == ["AVV-2024-01-0002"]

    exported = client.get(f"/calls/{call_id}/ranking.csv", raw=True)
    assert exported.status_code == 200 and exported.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0] == [
        "position",
        "public_reference",
        "sustainability",
        "jobs",
        "social_impact",
        "bonus",
        "total",
        "awarded",
        "status",
    ]
    assert rows[1] == ["1", "AVV-2024-01-0001", "9", "9", "5", "0", "93.00", "8000.00", "granted"]
    assert rows[3] == ["3", "AVV-2024-01-0002", "8", "8", "4", "0", "80.00", "", "not_funded"]
    assert "Persona" not in exported.text and "RSSMRA" not in exported.text

    awards = client.ok("GET", "/awards", params={"call_id": call_id})["awards"]
    assert [(a["public_reference"], a["amount"], a["status"], a["reference"]) for a in awards] == [
        ("AVV-2024-01-0001", "8000.00", "granted", "AVV-2024-01/1"),
        ("AVV-2024-01-0003", "8000.00", "granted", "AVV-2024-01/2"),
    ]
    assert sorted(done["awards"]) == sorted(a["award_id"] for a in awards)
    refused = client.post(
        f"/awards/{awards[0]['award_id']}/tranches",
        {"kind": "advance", "amount": "100.00", "claim_reference": "c-1"},
    )
    assert refused.status_code == 409 and refused.json()["error"] == "award_not_confirmed"
    assert calls.log.verify().ok


def test_personal_data_is_sealed_in_the_log_opened_on_read_and_gone_after_erasure(calls, clock):
    client = calls.client
    clock.set(AFTER.replace(month=3, day=15))
    call_id = client.ok("POST", "/calls", call_body(), status=201)["call_id"]
    client.ok("POST", f"/calls/{call_id}/publish")
    body = person_application(7, email="persona7@example.org", priorities=["women"])
    app_id = client.ok("POST", f"/calls/{call_id}/applications", body, status=201)["application_id"]

    log = calls.log
    stored = next(e for e in log.read_all() if e.type == "application_submitted")
    person = stored.data["applicant"]["person"]
    assert all(
        str(person[k]).startswith("pii:v1:") for k in ("name", "tax_code", "email", "priorities")
    )
    raw = json.dumps(stored.data)
    assert "Persona" not in raw and "RSSMRA80A01A007X" not in raw and "women" not in raw
    person_id = pseudonym(PSEUDONYM_KEY, "RSSMRA80A01A007X")
    assert stored.data["applicant"]["person_id"] == person_id

    shown = client.ok("GET", f"/calls/{call_id}/applications/{app_id}")
    assert shown["applicant"]["person"]["name"] == "Persona Numero7"
    assert shown["applicant"]["person"]["priorities"] == ["women"]
    assert shown["bonus"] == 2

    erase_person(log, Vault(log.engine), person_id, actor="dpo")
    erased = client.ok("GET", f"/calls/{call_id}/applications/{app_id}")
    assert erased["applicant"] is None
    assert erased["public_reference"] == "AVV-2024-01-0001"  # the application itself remains
    assert log.verify().ok


def _applied(client, tax_code_n: int = 7) -> tuple[str, str]:
    """A published call and one person's application to it: (call id, application id)."""
    call_id = client.ok("POST", "/calls", call_body(), status=201)["call_id"]
    client.ok("POST", f"/calls/{call_id}/publish")
    body = person_application(tax_code_n, email="persona@example.org")
    application = client.ok("POST", f"/calls/{call_id}/applications", body, status=201)
    return call_id, application["application_id"]


def test_an_operator_erases_a_person_over_http_once(calls, clock):
    client = calls.client
    clock.set(AFTER.replace(month=3, day=15))
    call_id, app_id = _applied(client)
    person_id = pseudonym(PSEUDONYM_KEY, "RSSMRA80A01A007X")
    body = {"identifier": "rssmra80a01a007x ", "reason": "GDPR request prot. 2024/118"}

    for refused, field in (
        ({"reason": "r"}, "person_id"),
        ({**body, "person_id": person_id}, "person_id"),
        ({"identifier": "RSSMRA80A01A007X"}, "reason"),
        ({"person_id": "p-nothex", "reason": "r"}, "person_id"),
    ):
        answer = client.post("/persons/erasure", refused)
        assert answer.status_code == 422 and field in answer.json()["fields"], answer.text
    assert client.post("/persons/erasure", body, token=AUDITOR).status_code == 403
    application = f"/calls/{call_id}/applications/{app_id}"
    assert client.ok("GET", application)["applicant"] is not None

    reply = client.ok("POST", "/persons/erasure", body, key="erase-1")
    assert reply["person_id"] == person_id and types(reply) == ["person_erased"]
    again = client.ok("POST", "/persons/erasure", body, key="erase-1")
    assert again["repeated"] is True and again["events"] == reply["events"]
    assert client.ok("GET", application)["applicant"] is None
    [erased] = [e for e in calls.log.read_all() if e.type == "person_erased"]
    assert erased.data == {"person_id": person_id, "reason": "GDPR request prot. 2024/118"}
    assert erased.actor == "ada"  # the operator's token's subject
    # The same key for another person is another request under a key already taken: refused,
    # never answered as a repeat of the first erasure while the second person stays readable.
    other = {"identifier": "VRDLGU70B02A008Y", "reason": "GDPR request prot. 2024/119"}
    reused = client.post("/persons/erasure", other, key="erase-1")
    assert reused.status_code == 422 and reused.json()["error"] == "idempotency_key_reused"
    assert len([e for e in calls.log.read_all() if e.type == "person_erased"]) == 1


def test_an_erasure_appended_by_another_process_reaches_the_read_models(calls, clock):
    """Appended on the service's database by another process (a maintenance command), which
    folds no read model: the running service folds it without an append of its own."""
    client = calls.client
    clock.set(AFTER.replace(month=3, day=15))
    call_id, app_id = _applied(client)
    other = EventLog(make_engine(calls.container.config["DATABASE_URL"]))
    try:
        person_id = pseudonym(PSEUDONYM_KEY, "RSSMRA80A01A007X")
        assert erase_person(other, Vault(other.engine), person_id, reason="r").events
    finally:
        other.engine.dispose()
    application = f"/calls/{call_id}/applications/{app_id}"
    wait_for(
        lambda: client.ok("GET", application)["applicant"] is None,
        10,
        "the read model to fold the erasure",
    )


def test_rules_answer_409_and_422_with_the_chassis_error_body(calls, clock):
    client = calls.client
    bad_weights = call_body(criteria=[{"name": "a", "weight": 60, "max_score": 10}], tie_break=[])
    refused = client.post("/calls", bad_weights)
    assert refused.status_code == 422 and refused.json()["fields"] == {
        "criteria": ["the weights must sum to 100"]
    }
    assert client.post("/calls", call_body(budget="12.505")).status_code == 422  # no third decimal

    call_id = client.ok("POST", "/calls", call_body(), status=201)["call_id"]
    early = client.post(f"/calls/{call_id}/applications", person_application(1))
    assert early.status_code == 409 and early.json()["error"] == "wrong_state"  # still a draft
    client.ok("POST", f"/calls/{call_id}/publish")
    app_id = client.ok("POST", f"/calls/{call_id}/applications", person_application(1), status=201)[
        "application_id"
    ]
    twice = person_application(1)
    twice["applicant"]["person"]["tax_code"] = "rssmra80a01a 001x"  # the same code, typed otherwise
    duplicate = client.post(f"/calls/{call_id}/applications", twice)
    assert duplicate.status_code == 409
    assert duplicate.json()["error"] == "duplicate_application"
    assert duplicate.json()["details"]["application_id"] == app_id

    not_admitted = client.post(
        f"/calls/{call_id}/applications/{app_id}/scores", {"scores": {"jobs": 3}}
    )
    assert not_admitted.status_code == 409 and not_admitted.json()["error"] == "not_admitted"
    client.ok("POST", f"/calls/{call_id}/applications/{app_id}/admit")
    too_high = client.post(
        f"/calls/{call_id}/applications/{app_id}/scores", {"scores": {"jobs": 11}}
    )
    assert too_high.status_code == 422 and too_high.json()["fields"] == {
        "scores.jobs": ["must be 0..10"]
    }
    before_close = client.post(f"/calls/{call_id}/ranking/approve")
    assert (
        before_close.status_code == 409 and before_close.json()["error"] == "ranking_before_close"
    )
    clock.set(AFTER)
    late = client.post(f"/calls/{call_id}/applications", person_application(2))
    assert late.status_code == 409 and late.json()["error"] == "outside_window"

    assert client.get("/calls/nope").status_code == 404
    assert client.post("/calls/nope/publish").json()["error"] == "not_found"
    assert client.get("/calls", token=None).status_code == 401
    assert client.get("/calls", token=AUDITOR).status_code == 200
    assert client.post(f"/calls/{call_id}/close", token=AUDITOR).status_code == 403


def test_a_call_closes_early_only_with_a_reason_and_then_takes_no_application(calls, clock):
    client = calls.client
    clock.set(dt.datetime(2024, 2, 20, 9, 0, tzinfo=UTC))  # before the window opens
    call_id = client.ok("POST", "/calls", call_body(), status=201)["call_id"]
    client.ok("POST", f"/calls/{call_id}/publish")
    not_open = client.post(f"/calls/{call_id}/close", {"reason": "changed our mind"})
    assert not_open.status_code == 409 and not_open.json()["error"] == "outside_window"

    clock.set(START)
    client.ok("POST", f"/calls/{call_id}/applications", person_application(1), status=201)
    for body in (None, {}, {"reason": "   "}):
        missing = client.post(f"/calls/{call_id}/close", body)
        assert missing.status_code == 422 and list(missing.json()["fields"]) == ["reason"], body
    too_long = client.post(f"/calls/{call_id}/close", {"reason": "x" * 501})
    assert too_long.status_code == 422 and list(too_long.json()["fields"]) == ["reason"]
    reason = "Resources exhausted: Det. 12/2024"
    closed = client.ok("POST", f"/calls/{call_id}/close", {"reason": reason})
    assert types(closed) == ["call_closed"] and closed["call_id"] == call_id
    event = next(e for e in calls.log.read_all() if e.type == "call_closed")
    assert event.data == {
        "call_id": call_id,
        "closed_at": "2024-03-10T09:00:00.000000Z",
        "applications": 1,
        "early": True,
        "reason": reason,
    }
    assert client.ok("GET", f"/calls/{call_id}")["status"] == "closed"
    late = client.post(f"/calls/{call_id}/applications", person_application(2))
    assert late.status_code == 409 and late.json()["error"] == "wrong_state"
    again = client.post(f"/calls/{call_id}/close", {"reason": reason})
    assert again.status_code == 409 and again.json()["error"] == "wrong_state"


def test_a_closure_sent_in_chunks_keeps_its_reason(calls):
    """`Transfer-Encoding: chunked` (no Content-Length): the reason is read, not lost."""
    client = calls.client
    call_id = client.ok("POST", "/calls", call_body(), status=201)["call_id"]
    client.ok("POST", f"/calls/{call_id}/publish")
    headers = {
        "Authorization": f"Bearer {OPERATOR}",
        "Idempotency-Key": "close-in-chunks",
        "Content-Type": "application/json",
    }
    chunks = iter([b'{"reason": ', b'"Resources exhausted"}'])  # requests sends it chunked
    closed = requests.post(
        f"{client.base}/calls/{call_id}/close", data=chunks, headers=headers, timeout=10
    )
    assert closed.status_code == 200, closed.text
    event = next(e for e in calls.log.read_all() if e.type == "call_closed")
    assert (event.data["early"], event.data["reason"]) == (True, "Resources exhausted")


def test_a_repeated_command_returns_its_first_answer_and_appends_nothing(calls):
    client = calls.client
    call_id = client.ok("POST", "/calls", call_body(), status=201, key="draft-1")["call_id"]
    assert client.ok("POST", "/calls", call_body(), status=201, key="draft-1")["call_id"] == call_id
    client.ok("POST", f"/calls/{call_id}/publish", key="publish-1")
    # the first answer again: deciding again would be a 409
    again = client.ok("POST", f"/calls/{call_id}/publish", key="publish-1")
    assert types(again) == ["call_published"] and again["repeated"] is True
    first = client.ok(
        "POST", f"/calls/{call_id}/applications", person_application(3), status=201, key="submit-3"
    )
    head = calls.log.head()
    repeat = client.ok(
        "POST", f"/calls/{call_id}/applications", person_application(3), status=201, key="submit-3"
    )
    assert first["repeated"] is False and repeat == {**first, "repeated": True}
    assert calls.log.head() == head


def test_the_openapi_document_is_public_and_valid(calls):
    client = calls.client
    response = client.get("/openapi.json", token=None)
    assert response.status_code == 200
    spec = response.json()
    validate(spec)
    paths = spec["paths"]
    assert "/calls/{call_id}/applications/{application_id}/scores" in paths
    assert "text/csv" in paths["/calls/{call_id}/ranking.csv"]["get"]["responses"]["200"]["content"]
    submit = paths["/calls/{call_id}/applications"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in submit["parameters"])
    assert {"401", "409", "422"} <= set(submit["responses"])


def test_lavoro_persons_erase_asks_the_running_service(calls, clock, tmp_path):
    from typer.testing import CliRunner

    from shared.cli import build
    from shared.web import bound_port

    client = calls.client
    clock.set(AFTER.replace(month=3, day=15))
    call_id, app_id = _applied(client)
    env = {"CALLS_HTTP": f"127.0.0.1:{bound_port(calls.container)}", "LAVORO_VAR": str(tmp_path)}
    erase = ["persons", "erase", "calls", "--reason", "prot. 2024/118", "--token", OPERATOR]
    runner = CliRunner()

    neither = runner.invoke(build(), erase, env=env)
    assert neither.exit_code == 1 and "give --identifier or --person-id" in neither.output
    done = runner.invoke(
        build(), [*erase, "--identifier", "RSSMRA80A01A007X", "--key", "k1"], env=env
    )
    person_id = pseudonym(PSEUDONYM_KEY, "RSSMRA80A01A007X")
    # (the service runs in this process: its log lines land in the same output)
    assert (
        done.exit_code == 0 and f"calls: person {person_id} is erased" in done.output.splitlines()
    )
    again = runner.invoke(
        build(), [*erase, "--identifier", "RSSMRA80A01A007X", "--key", "k1"], env=env
    )
    assert again.exit_code == 0 and "already erased by this command" in again.output
    # The same key with another body (the pseudonym instead of the identifier) is another
    # request under a key already taken: the service's 422, in one line.
    other = runner.invoke(build(), [*erase, "--person-id", person_id, "--key", "k1"], env=env)
    assert other.exit_code == 1 and "answered 422" in other.output
    assert "Idempotency-Key header: already used" in other.output
    assert client.ok("GET", f"/calls/{call_id}/applications/{app_id}")["applicant"] is None
