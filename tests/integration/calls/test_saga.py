"""The calls service's side of the saga with the ledger (docs/events.md, F1 and F2), on the real
broker with SQLite and PostgreSQL. The test plays the ledger: it publishes the answers in the
documented format on `<ledger>.events`, as the ledger's relay would. Every answer redelivered twice
changes nothing; an answer that contradicts the award is parked, never applied; an award left
without an answer raises an alert, by the injected clock (no sleeps)."""

from __future__ import annotations

import datetime as dt

import eventlet
import pytest
import sqlalchemy as sa
import structlog

from services.calls import readmodels
from shared import tables as t
from shared.clock import UTC
from shared.consumer import consumer_stats
from tests.helpers import wait_for
from tests.kit.service import database_of
from tests.service.calls.builders import (
    award_ids,
    awarded_call,
    call_body,
    commitment_recorded,
    commitment_rejected,
    grants,
    payment_disbursed,
    payment_rejected,
    person_application,
    types,
)
from tests.unit.calls.builders import full


@pytest.fixture
def start(start_calls, store_url):
    return lambda **config: start_calls(database_of(store_url), **config)


@pytest.fixture
def answer(harness, clock):
    def answer(type_, data, *, cause=None):
        """One ledger answer, published on the ledger's exchange as its relay would."""
        stream = f"commitment-grant-{data['award_id']}"
        body = harness.event("ledger", type_, stream, data, cause=cause, at=clock.now())
        harness.publish("ledger", body)
        return body

    return answer


def snapshot(engine):
    with engine.connect() as conn:
        return {
            table.name: sorted(tuple(map(str, row)) for row in conn.execute(sa.select(table)))
            for table in readmodels.metadata.sorted_tables
        }


def award_statuses(client, call_id):
    return [a["status"] for a in client.ok("GET", "/awards", params={"call_id": call_id})["awards"]]


def test_f1_confirms_suspends_releases_money_and_ignores_redeliveries(
    start, answer, harness, clock
):
    calls = start()
    client = calls.client
    scores = [full(9, 9, 5), full(8, 8, 5), full(7, 7, 4), full(6, 6, 3)]
    done = awarded_call(
        client, clock, [person_application(n) for n in range(4)], scores, budget="24000.00"
    )
    call_id = done["call_id"]
    log = calls.log
    granted = grants(log)
    ordered = sorted(granted.values(), key=lambda e: e.position)
    assert len(ordered) == 3 and client.ok("GET", f"/calls/{call_id}")["available"] == "0.00"

    answers = [
        answer("commitment_recorded", commitment_recorded(ordered[0].data), cause=ordered[0]),
        answer("commitment_recorded", commitment_recorded(ordered[1].data), cause=ordered[1]),
        answer(
            "commitment_rejected",
            commitment_rejected(ordered[2].data, "16000.00"),
            cause=ordered[2],
        ),
    ]
    wait_for(
        lambda: award_statuses(client, call_id) == ["confirmed", "confirmed", "suspended"],
        15,
        "the answers",
    )
    assert (
        client.ok("GET", f"/calls/{call_id}")["available"] == "8000.00"
    )  # the suspended award's money is back

    reactions = {
        e.type: e
        for e in log.read_all()
        if e.type in ("grant_confirmed", "grant_suspended", "funds_released")
    }
    suspended = reactions["grant_suspended"]
    assert suspended.causation_id == answers[2]["id"]
    assert (
        suspended.correlation_id == ordered[2].correlation_id
    )  # the chain goes back to the ranking
    assert (
        suspended.data["reason"] == "line_lacks_room" and suspended.data["available"] == "16000.00"
    )
    assert reactions["funds_released"].causation_id == answers[2]["id"]

    head = log.head()
    for body in answers * 2:  # every message redelivered twice
        harness.publish("ledger", body)
    wait_for(lambda: consumer_stats(calls.container)["duplicate"] >= 6, 15, "six duplicates seen")
    assert log.head() == head
    assert award_statuses(client, call_id) == ["confirmed", "confirmed", "suspended"]

    # the operator gives the released money to the next applicant in the ranking
    nxt = client.ok("POST", f"/calls/{call_id}/awards/next")
    assert types(nxt) == ["funds_reserved", "grant_awarded"] and len(award_ids(nxt)) == 1
    fourth = grants(log)[nxt["award_id"]]
    assert fourth.data["reference"] == "AVV-2024-01/4"
    assert client.ok("GET", f"/calls/{call_id}")["available"] == "0.00"
    assert client.post(f"/calls/{call_id}/awards/next").status_code == 409
    assert log.verify().ok


def test_f2_tranches_paid_rejected_and_the_award_closed(start, answer, clock):
    calls = start()
    client = calls.client
    done = awarded_call(client, clock, [person_application(1)], [full(9, 9, 5)])
    award_id = done["awards"][0]
    log = calls.log
    answer("commitment_recorded", commitment_recorded(grants(log)[award_id].data))
    wait_for(
        lambda: client.ok("GET", f"/awards/{award_id}")["status"] == "confirmed", 15, "confirmation"
    )

    clock.set(dt.datetime(2024, 5, 2, 9, 0, tzinfo=UTC))  # the day the claims are made

    def requested(kind, amount):
        body = {
            "kind": kind,
            "amount": amount,
            "claim_reference": f"PG-{kind}",
            "claim_date": "2024-05-02",
        }
        tranche_id = client.ok("POST", f"/awards/{award_id}/tranches", body, status=201)[
            "tranche_id"
        ]
        return {**body, "award_id": award_id, "tranche_id": tranche_id}

    def tranche_status(tranche_id):
        found = client.ok("GET", f"/awards/{award_id}")["tranches"]
        return next(t["status"] for t in found if t["tranche_id"] == tranche_id)

    advance = requested("advance", "3000.00")
    answer("payment_disbursed", payment_disbursed(advance))
    wait_for(lambda: tranche_status(advance["tranche_id"]) == "paid", 15, "the advance paid")
    too_much = client.post(
        f"/awards/{award_id}/tranches",
        {"kind": "interim", "amount": "5000.01", "claim_reference": "x"},
    )
    assert too_much.status_code == 409 and too_much.json()["details"]["remaining"] == "5000.00"

    interim = requested("interim", "4000.00")
    answer("payment_rejected", payment_rejected(interim, "5000.00"))
    wait_for(
        lambda: tranche_status(interim["tranche_id"]) == "rejected", 15, "the interim rejected"
    )
    found = client.ok("GET", f"/awards/{award_id}")
    assert (found["in_tranches"], found["paid"]) == ("3000.00", "3000.00")
    assert (
        next(t for t in found["tranches"] if t["kind"] == "interim")["reason"]
        == "exceeds_commitment"
    )

    balance = requested("balance", "5000.00")
    answer("payment_disbursed", payment_disbursed(balance, "2024-06-01"))
    wait_for(
        lambda: client.ok("GET", f"/awards/{award_id}")["status"] == "closed",
        15,
        "the award closed",
    )
    found = client.ok("GET", f"/awards/{award_id}")
    assert (found["paid"], [t["status"] for t in found["tranches"]]) == (
        "8000.00",
        ["paid", "rejected", "paid"],
    )
    paid = [e for e in log.read_all() if e.type == "tranche_paid"]
    assert [e.data["payment_id"] for e in paid] == [
        f"tranche-{advance['tranche_id']}",
        f"tranche-{balance['tranche_id']}",
    ]


def test_an_answer_that_contradicts_the_award_is_parked_not_applied(start, answer, clock):
    calls = start()
    client = calls.client
    done = awarded_call(client, clock, [person_application(1)], [full(9, 9, 5)])
    award_id = done["awards"][0]
    log = calls.log
    wrong = {**commitment_recorded(grants(log)[award_id].data), "amount": "7999.00"}
    body = answer("commitment_recorded", wrong)

    def parked():
        with log.engine.connect() as conn:
            return conn.execute(sa.select(t.dead_letters.c.event_id, t.dead_letters.c.error)).all()

    rows = wait_for(parked, 15, "the contradicting answer parked")
    assert rows[0].event_id == body["id"] and "7999.00" in rows[0].error
    assert client.ok("GET", f"/awards/{award_id}")["status"] == "granted"


def test_commitments_and_payments_recorded_by_people_are_taken_without_effect(start, answer):
    calls = start()
    log = calls.log
    ours = [
        answer(
            "commitment_recorded",
            {
                "award_id": None,
                "commitment_id": "contract-cig-1",
                "amount": "50000.00",
                "signed_on": "2024-02-01",
            },
        ),
        answer(
            "payment_disbursed",
            {
                "award_id": None,
                "commitment_id": "contract-cig-1",
                "payment_id": "claim-1",
                "amount": "1000.00",
            },
        ),
    ]

    def handled():
        with log.engine.connect() as conn:
            return {r.event_id for r in conn.execute(sa.select(t.inbox.c.event_id))} >= {
                b["id"] for b in ours
            }

    wait_for(handled, 15, "both events taken")
    with log.engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(t.dead_letters)).scalar_one() == 0
        )
    assert [e for e in log.read_all() if e.causation_id in {b["id"] for b in ours}] == []


def test_an_award_without_an_answer_raises_one_alert_by_the_store_clock(start, answer, clock):
    calls = start(CALLS_AWARD_CHECK_INTERVAL=0.05, CALLS_AWARD_ANSWER_TIMEOUT=3600)
    client = calls.client
    done = awarded_call(
        client,
        clock,
        [person_application(1), person_application(2)],
        [full(9, 9, 5), full(8, 8, 4)],
    )
    first, second = done["awards"]
    log = calls.log
    answer("commitment_recorded", commitment_recorded(grants(log)[first].data))
    wait_for(
        lambda: client.ok("GET", f"/awards/{first}")["status"] == "confirmed", 15, "one answer"
    )
    assert client.ok("GET", "/alerts")["alerts"] == []

    with structlog.testing.capture_logs() as lines:
        clock.advance(minutes=59)
        head = log.head()
        clock.advance(minutes=1)  # an hour after the awards: the second has no answer
        alerts = wait_for(
            lambda: client.ok("GET", "/alerts", params={"open": "true"})["alerts"], 15, "an alert"
        )
    assert [a["award_id"] for a in alerts] == [second]
    assert alerts[0]["awarded_at"] == "2024-04-02T09:00:00.000000Z"
    assert head[0] < log.head()[0]
    overdue = [e for e in log.read_all() if e.type == "award_answer_overdue"]
    assert [e.data["award_id"] for e in overdue] == [second]
    logged = [
        line for line in lines if line.get("award_id") == second and line["log_level"] == "error"
    ]
    assert logged and logged[0]["timeout_seconds"] == 3600

    clock.advance(hours=5)  # later checks raise nothing more (awards.flag_overdue: once)
    answer("commitment_recorded", commitment_recorded(grants(log)[second].data))
    wait_for(
        lambda: client.ok("GET", "/alerts", params={"open": "true"})["alerts"] == [],
        15,
        "the alert resolved",
    )
    resolved = client.ok("GET", "/alerts")["alerts"]
    assert [(a["award_id"], a["resolution"]) for a in resolved] == [(second, "grant_confirmed")]
    assert len([e for e in log.read_all() if e.type == "award_answer_overdue"]) == 1
    assert dt.datetime.fromisoformat(
        resolved[0]["raised_at"].replace("Z", "+00:00")
    ) == clock.now() - dt.timedelta(hours=5)


def test_applications_arriving_together_are_all_taken_once(start):
    calls = start()
    client = calls.client
    call_id = client.ok("POST", "/calls", call_body(), status=201)["call_id"]
    client.ok("POST", f"/calls/{call_id}/publish")
    pool = eventlet.GreenPool(30)
    answers = list(
        pool.imap(
            lambda n: client.post(f"/calls/{call_id}/applications", person_application(n)),
            range(30),
        )
    )
    assert [a.status_code for a in answers] == [201] * 30, [
        a.text for a in answers if a.status_code != 201
    ]
    refs = sorted(a.json()["public_reference"] for a in answers)
    assert refs == [f"AVV-2024-01-{n:04d}" for n in range(1, 31)]
    assert client.ok("GET", f"/calls/{call_id}")["applications"] == 30
