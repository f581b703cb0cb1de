"""The ledger's reads over HTTP: progress now and as at the end of a day in Bologna (replayed from
the log, not read from the stored tables), the lists, the overdue and retention reports, the CSV
export, and the OpenAPI document (valid, public)."""

from __future__ import annotations

import csv
import datetime as dt
import io

import sqlalchemy as sa
from openapi_spec_validator import validate

from services.ledger import events as schemas
from services.ledger import readmodels
from services.ledger.service import LedgerService
from shared.clock import UTC, FixedClock
from shared.dependencies import EventStore
from tests.kit.http import AUDITOR
from tests.service.ledger.builders import a_cup, commitment_body, funded, project_body


def paying(
    client, cup: str, commitment_id: str, claim: str, claim_date: str, paid_on: str, amount: str
):
    return client.ok(
        "POST",
        f"/commitments/{commitment_id}/payments",
        {"claim_reference": claim, "claim_date": claim_date, "paid_on": paid_on, "amount": amount},
    )


def test_progress_as_of_a_day_is_the_books_at_the_end_of_that_day_in_bologna(serve):
    clock = FixedClock(dt.datetime(2024, 3, 1, 9, 0, tzinfo=UTC))
    store = EventStore(
        projections=[readmodels.projection], upcasters=schemas.upcasters, clock=clock
    )
    at = serve(type("LedgerAt", (LedgerService,), {"store": store}))
    client, log = at.client, at.log
    cup = a_cup()
    funded(client, cup, safeguarding="1000.00")
    clock.set(dt.datetime(2024, 5, 10, 21, 30, tzinfo=UTC))  # 23:30 on 10 May in Bologna
    client.ok("POST", "/commitments", commitment_body(cup, "300.00", "CIG-1"))
    clock.set(dt.datetime(2024, 5, 10, 22, 30, tzinfo=UTC))  # 00:30 on 11 May in Bologna
    paying(client, cup, "contract-cig-1", "FT-1", "2024-05-01", "2024-05-10", "100.00")

    def total(as_of: str | None) -> tuple[str, ...]:
        params = {"as_of": as_of} if as_of else None
        body = client.get(f"/projects/{cup}/progress", params=params).json()
        assert body["as_of"] == as_of
        figures = body["total"]
        return tuple(figures[k] for k in ("programmed", "admitted", "legally_binding", "disbursed"))

    assert total("2024-02-29") == ("0.00", "0.00", "0.00", "0.00")
    assert total("2024-03-01") == ("1000.00", "1000.00", "0.00", "0.00")
    assert total("2024-05-10") == ("1000.00", "1000.00", "300.00", "0.00")
    assert total("2024-05-11") == ("1000.00", "1000.00", "300.00", "100.00")
    assert total(None) == total("2024-05-11")

    # The stored read model is altered behind the projection's back: the live view shows it, the
    # view as of a day does not, because it is replayed from the log.
    with log.engine.begin() as conn:
        conn.execute(sa.update(readmodels.lines).values(disbursed="999.00"))
    assert total(None)[3] == "999.00"
    assert total("2024-05-11")[3] == "100.00"

    bad = client.get(f"/projects/{cup}/progress", params={"as_of": "11/05/2024"})
    assert bad.status_code == 422
    assert list(bad.json()["fields"]) == ["as_of"]
    # A day outside the plausible range is refused the same way (9999-12-31 overflowed: a 500).
    for day in ("9999-12-31", "0001-01-01"):
        far = client.get(f"/projects/{cup}/progress", params={"as_of": day})
        assert far.status_code == 422, far.json()
        assert far.json()["fields"] == {
            "as_of": ["Outside the plausible range, 1900-01-01 to 2199-12-31."]
        }


def test_the_lists_show_each_entry_with_its_cause(ledger):
    client = ledger.client
    cup = a_cup()
    funded(client, cup, safeguarding="1000.00", labour_policies="500.00")
    client.ok("POST", "/commitments", commitment_body(cup, "300.00", "CIG-1"))
    client.ok(
        "POST", "/commitments", commitment_body(cup, "200.00", "G-1", "labour_policies", "grant")
    )
    paying(client, cup, "contract-cig-1", "FT-1", "2024-05-01", "2024-05-10", "100.00")

    admissions = client.get(f"/projects/{cup}/admissions").json()["admissions"]
    assert [(a["act_reference"], a["amount"]) for a in admissions] == [(f"DEC {cup}", "1500.00")]
    commitments = client.get(f"/projects/{cup}/commitments", token=AUDITOR).json()["commitments"]
    assert [(c["commitment_id"], c["remaining"]) for c in commitments] == [
        ("contract-cig-1", "200.00"),
        ("grant-g-1", "200.00"),
    ]
    cause = commitments[0]["cause"]
    assert cause["actor"] == "ada" and cause["causation_id"] is None and cause["event_id"]
    assert commitments[0]["payments"][0]["claim_reference"] == "FT-1"
    payments = client.get(f"/projects/{cup}/payments").json()["payments"]
    assert [(p["payment_id"], p["amount"]) for p in payments] == [("claim-ft-1", "100.00")]
    progress = client.get(f"/projects/{cup}/progress").json()
    assert [line["budget_line"] for line in progress["budget_lines"]] == [
        "safeguarding",
        "labour_policies",
    ]
    assert progress["disbursed_percent"] == "6.7"


def test_the_overdue_and_retention_reports(ledger):
    client = ledger.client
    cup = a_cup()
    funded(client, cup, safeguarding="1000.00")
    client.ok("POST", "/commitments", commitment_body(cup, "600.00", "CIG-1"))
    client.ok("POST", "/commitments", commitment_body(cup, "400.00", "CIG-2"))
    paying(client, cup, "contract-cig-1", "FT-1", "2024-01-10", "2024-03-30", "100.00")  # day 80
    paying(client, cup, "contract-cig-1", "FT-2", "2024-01-10", "2024-04-10", "100.00")  # day 91
    overdue = client.get(f"/projects/{cup}/overdue").json()
    assert overdue["limit_days"] == 80
    assert [(p["claim_reference"], p["deadline"], p["days_late"]) for p in overdue["late"]] == [
        ("FT-2", "2024-03-30", 11)
    ]
    documents = client.get(f"/projects/{cup}/retention").json()["documents"]
    assert [(d["reference"], d["retain_until"]) for d in documents] == [
        ("CIG-1", "2029-12-31"),
        ("FT-1", "2029-12-31"),
        ("FT-2", "2029-12-31"),
        ("CIG-2", None),
    ]


def test_the_csv_export_has_the_cup_on_every_row(ledger):
    client = ledger.client
    cup = a_cup()
    funded(client, cup, safeguarding="1000.00")
    client.ok("POST", "/commitments", commitment_body(cup, "600.00", "CIG-1"))
    paying(client, cup, "contract-cig-1", "FT-1", "2024-01-10", "2024-02-10", "100.00")
    response = client.get(f"/projects/{cup}/export.csv", raw=True)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    assert cup in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["record"], r["project_cup"], r["amount"]) for r in rows] == [
        ("commitment", cup, "600.00"),
        ("payment", cup, "100.00"),
    ]
    missing = client.get(f"/projects/{a_cup()}/export.csv")  # errors stay JSON
    assert missing.status_code == 404
    assert client.get(f"/projects/{cup}/export.csv", token=None).status_code == 401


def test_the_openapi_document_is_public_valid_and_describes_the_api(ledger):
    client = ledger.client
    spec = client.get("/openapi.json", token=None).json()
    validate(spec)
    paths = spec["paths"]
    assert "/projects/{cup}/progress" in paths and "/commitments/{commitment_id}/payments" in paths
    progress = paths["/projects/{cup}/progress"]["get"]
    assert {p["name"] for p in progress["parameters"]} >= {"cup", "as_of"}
    commit = paths["/commitments"]["post"]
    assert commit["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RecordCommitmentIn"
    }
    amount = spec["components"]["schemas"]["RecordCommitmentIn"]["properties"]["amount"]
    assert amount["type"] == "string" and "pattern" in amount
    assert set(commit["responses"]) >= {"201", "409", "422"}


def test_a_project_created_over_http_reads_the_same_through_every_role(ledger):
    client = ledger.client
    cup = a_cup()
    client.ok("POST", "/projects", project_body(cup, employment_services="5.00"))
    assert client.get(f"/projects/{cup}", token=AUDITOR).json()["project_cup"] == cup
    assert client.get(f"/projects/{cup}", token=None).status_code == 401
