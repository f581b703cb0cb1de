"""The ledger's commands over HTTP in a nameko container: 201 with the resource, 422 naming the
field, 409 naming the invariant with its figures and nothing stored, 404 for what does not exist,
tokens and roles, and the Idempotency-Key."""

from __future__ import annotations

import requests

from tests.kit.http import AUDITOR, OPERATOR
from tests.service.ledger.builders import a_cup, commitment_body, funded, project_body


def test_a_project_is_programmed_and_read_back(ledger):
    client = ledger.client
    cup = a_cup()
    created = client.post(
        "/projects", project_body(cup, safeguarding="900.00", labour_policies="100.00")
    )
    assert created.status_code == 201
    # The one reply of every command: the events appended and the ids they name.
    assert created.json()["project_cup"] == cup and created.json()["repeated"] is False
    assert [(e["type"], e["stream"], e["version"]) for e in created.json()["events"]] == [
        ("project_programmed", f"project-{cup}", 1)
    ]
    read = client.get(f"/projects/{cup}").json()
    assert read["project_cup"] == cup
    assert read["budget_lines"][0] == {
        "budget_line": "safeguarding",
        "programmed": "900.00",
        "admitted": "0.00",
        "legally_binding": "0.00",
        "disbursed": "0.00",
    }


def test_a_bad_amount_a_float_or_a_missing_cup_is_a_422_naming_the_field(ledger):
    client, log = ledger.client, ledger.log
    cup = a_cup()
    funded(client, cup, safeguarding="1000.00")
    head = log.head()
    cases = [
        ({"amount": "10.001"}, "amount"),
        ({"amount": "-10.00"}, "amount"),
        ({"amount": 10.5}, "amount"),  # a JSON number with a fraction
        ({"project_cup": None}, "project_cup"),
    ]
    for change, field in cases:
        body = {**commitment_body(cup, "10.00", "CIG-1"), **change}
        if change.get("project_cup", "") is None:
            del body["project_cup"]
        response = client.post("/commitments", body)
        assert response.status_code == 422, response.json()
        assert response.json()["error"] == "invalid_input"
        assert list(response.json()["fields"]) == [field]
    assert log.head() == head  # nothing stored


def test_a_commitment_beyond_the_admitted_room_is_a_409_with_the_figures_and_stores_nothing(ledger):
    client, log = ledger.client, ledger.log
    cup = a_cup()
    funded(client, cup, safeguarding="1000.00")
    client.ok("POST", "/commitments", commitment_body(cup, "700.00", "CIG-1"))
    head = log.head()
    refused = client.post("/commitments", commitment_body(cup, "300.01", "CIG-2"))
    assert refused.status_code == 409
    assert refused.json()["error"] == "rule_violated"
    assert refused.json()["details"] == {
        "invariant": "legally_binding_within_admitted",
        "budget_line": "safeguarding",
        "admitted": "1000.00",
        "legally_binding": "700.00",
        "requested": "300.01",
        "available": "300.00",
    }
    assert "above the 1000.00 admitted" in refused.json()["message"]
    assert log.head() == head
    assert client.get("/commitments/contract-cig-2").status_code == 404


def test_an_admission_beyond_the_programme_is_a_409(ledger):
    client = ledger.client
    cup = a_cup()
    client.ok("POST", "/projects", project_body(cup, safeguarding="100.00"))
    refused = client.post(
        f"/projects/{cup}/admissions",
        {
            "act_reference": "DEC 1",
            "adopted_on": "2024-02-29",
            "budget_lines": [{"budget_line": "safeguarding", "amount": "100.01"}],
        },
    )
    assert refused.status_code == 409
    assert refused.json()["details"]["invariant"] == "admitted_within_programmed"
    assert refused.json()["details"]["available"] == "100.00"


def test_payments_and_reductions_keep_within_the_commitment(ledger):
    client = ledger.client
    cup = a_cup()
    funded(client, cup, safeguarding="1000.00")
    created = client.ok("POST", "/commitments", commitment_body(cup, "800.00", "CIG 7/24"))
    commitment_id = created["commitment_id"]
    assert commitment_id == "contract-cig-7-24"
    claim = {"claim_reference": "FT 1", "claim_date": "2024-08-01", "paid_on": "2024-09-01"}
    answer = client.ok(
        "POST", f"/commitments/{commitment_id}/payments", {**claim, "amount": "500.00"}
    )
    assert answer["payment_id"] == "claim-ft-1"
    assert [e["type"] for e in answer["events"]] == ["payment_disbursed", "entry_posted"]
    [paid] = client.ok("GET", f"/commitments/{commitment_id}")["payments"]
    assert (paid["payment_id"], paid["amount"], paid["project_cup"]) == (
        "claim-ft-1",
        "500.00",
        cup,
    )
    assert paid["cause"]["actor"] == "ada"
    over = client.post(
        f"/commitments/{commitment_id}/payments",
        {**claim, "claim_reference": "FT 2", "amount": "300.01"},
    )
    assert over.status_code == 409
    assert over.json()["details"]["invariant"] == "payment_within_commitment"
    assert over.json()["details"]["remaining"] == "300.00"
    reduction = {"reason": "savings", "source_reference": "DD 9", "reduced_on": "2024-10-01"}
    below = client.post(
        f"/commitments/{commitment_id}/reductions", {**reduction, "amount": "300.01"}
    )
    assert below.status_code == 409
    assert below.json()["details"]["invariant"] == "reduction_not_below_paid"
    client.ok("POST", f"/commitments/{commitment_id}/reductions", {**reduction, "amount": "300.00"})
    reduced = client.ok("GET", f"/commitments/{commitment_id}")
    assert (
        reduced["original_amount"],
        reduced["amount"],
        reduced["paid"],
        reduced["remaining"],
    ) == (
        "800.00",
        "500.00",
        "500.00",
        "0.00",
    )
    assert reduced["reductions"][0]["source_reference"] == "DD 9"
    progress = client.get(f"/projects/{cup}/progress").json()["total"]
    assert (progress["legally_binding"], progress["disbursed"]) == ("500.00", "500.00")


def test_what_does_not_exist_is_a_404_as_json(ledger):
    client = ledger.client
    cup = a_cup()
    assert client.get(f"/projects/{cup}").status_code == 404
    assert client.get(f"/projects/{cup}/progress").status_code == 404
    missing = client.post(f"/projects/{cup}/admissions", {
        "act_reference": "DEC 1", "adopted_on": "2024-02-29",
        "budget_lines": [{"budget_line": "safeguarding", "amount": "1.00"}],
    })  # fmt: skip
    assert missing.status_code == 404
    payment = {"claim_reference": "FT", "claim_date": "2024-08-01", "paid_on": "2024-08-02"}
    nowhere = client.post("/commitments/contract-nope/payments", {**payment, "amount": "1.00"})
    assert nowhere.status_code == 404
    assert nowhere.json()["details"]["invariant"] == "references_commitment"


def test_the_same_idempotency_key_or_the_same_document_again_changes_nothing(ledger):
    client, log = ledger.client, ledger.log
    cup = a_cup()
    funded(client, cup, safeguarding="1000.00")
    body = commitment_body(cup, "100.00", "CIG-1")
    first = client.post("/commitments", body, key="k-1")
    head = log.head()
    again = client.post("/commitments", body, key="k-1")
    same_document = client.post("/commitments", body, key="k-2")
    assert first.status_code == again.status_code == same_document.status_code == 201
    assert again.json() == {**first.json(), "repeated": True}
    # Another key for the same document: the domain sees it recorded and appends nothing.
    assert same_document.json() == {
        "events": [],
        "repeated": False,
        "commitment_id": "contract-cig-1",
    }
    assert first.json()["commitment_id"] == "contract-cig-1"
    assert log.head() == head
    other_figures = client.post("/commitments", {**body, "amount": "101.00"})
    assert other_figures.status_code == 409
    assert other_figures.json()["error"] == "conflict"


def test_commands_need_an_operator_token_and_an_idempotency_key(ledger):
    client, log = ledger.client, ledger.log
    body = project_body(a_cup(), safeguarding="1.00")
    assert client.post("/projects", body, token=None).status_code == 401
    forbidden = client.post("/projects", body, token=AUDITOR)
    assert forbidden.status_code == 403
    no_key = requests.post(
        client.base + "/projects",
        json=body,
        headers={"Authorization": f"Bearer {OPERATOR}"},
        timeout=10,
    )
    assert no_key.status_code == 400
    assert "Idempotency-Key" in no_key.json()["fields"]
    assert log.head()[0] == 0
    assert client.get(f"/projects/{body['cup']}", token=AUDITOR).status_code == 404  # may read
