"""The ledger's schemas at its edges: a bad amount, a missing CUP, a claim paid before it was made
are refused naming the field; calls' events are read tolerantly; what is public; the seed adds up
to the published figures."""

from __future__ import annotations

import decimal
from collections import defaultdict

import pytest

from services.ledger import api, domain
from services.ledger import demo as seed
from services.ledger import events as schemas
from shared.errors import InvalidInput
from shared.schemas import load_input
from tests.unit.ledger.memory import CUP, d, day

COMMITMENT = {
    "project_cup": CUP,
    "budget_line": "safeguarding",
    "kind": "contract",
    "source_reference": "CIG B1A2C3D403",
    "signed_on": "2024-07-01",
    "amount": "330000.00",
}


def refused_fields(schema, data) -> dict:
    with pytest.raises(InvalidInput) as caught:
        load_input(schema, data)
    assert caught.value.status == 422
    return caught.value.fields


def test_a_commitment_loads_as_a_command_with_decimal_euros():
    cmd = load_input(api.RecordCommitmentIn(), COMMITMENT)
    assert cmd == domain.RecordCommitment(
        CUP, "safeguarding", "contract", "CIG B1A2C3D403", day("2024-07-01"), d("330000.00")
    )


@pytest.mark.parametrize(
    ("amount", "says"),
    [
        ("12.345", "two decimal places"),
        ("-5.00", "negative"),
        (decimal.Decimal("1.5"), "float"),  # how the edge reads the JSON number 1.5
        (1.5, "float"),
        ("0.00", "more than zero"),
        ("abc", "not an amount"),
    ],
)
def test_a_bad_amount_is_refused_naming_the_field(amount, says):
    fields = refused_fields(api.RecordCommitmentIn(), {**COMMITMENT, "amount": amount})
    assert list(fields) == ["amount"]
    assert says in " ".join(fields["amount"]).lower()


def test_a_missing_or_malformed_cup_is_refused_naming_the_field():
    missing = {k: v for k, v in COMMITMENT.items() if k != "project_cup"}
    assert list(refused_fields(api.RecordCommitmentIn(), missing)) == ["project_cup"]
    bad = {**COMMITMENT, "project_cup": "f31d23000140007"}
    assert list(refused_fields(api.RecordCommitmentIn(), bad)) == ["project_cup"]


def test_an_unknown_line_kind_or_member_is_refused():
    fields = refused_fields(
        api.RecordCommitmentIn(),
        {**COMMITMENT, "budget_line": "x", "kind": "loan", "note": "typo"},
    )
    assert set(fields) == {"budget_line", "kind", "note"}


def test_a_programme_names_each_line_once():
    body = {**seed.PROJECT, "budget_lines": [seed.PROJECT["budget_lines"][0]] * 2}
    assert list(refused_fields(api.ProgrammeProjectIn(), body)) == ["budget_lines"]


def test_a_reference_needs_a_letter_or_digit_to_become_an_id():
    fields = refused_fields(api.RecordCommitmentIn(), {**COMMITMENT, "source_reference": "--/"})
    assert list(fields) == ["source_reference"]


def test_calls_events_are_read_tolerantly_and_strictly_where_it_matters():
    award = {
        "award_id": "a1",
        "call_id": "c1",
        "application_id": "p1",
        "project_cup": CUP,
        "budget_line": "somewhere_new",  # not a validation error: the ledger answers unknown_line
        "amount": "8000.00",
        "reference": "AVV-2024-01/3",
        "awarded_on": "2024-10-21",
        "added_later": "ignored",
    }
    loaded = load_input(schemas.GrantAwardedV1(), award)
    assert isinstance(loaded, domain.GrantAward)
    assert loaded.amount == d("8000.00")
    assert list(refused_fields(schemas.GrantAwardedV1(), {**award, "amount": "8000.001"})) == [
        "amount"
    ]
    tranche = {
        "award_id": "a1",
        "tranche_id": "t1",
        "kind": "bonus",
        "amount": "1.00",
        "claim_reference": "CL",
        "claim_date": "2024-11-04",
    }
    assert list(refused_fields(schemas.TrancheRequestedV1(), tranche)) == ["kind"]


def test_the_public_types_are_the_seven_ledger_events_and_not_the_bookkeeping():
    assert set(schemas.PUBLIC) == {
        "project_programmed",
        "funding_admitted",
        "commitment_recorded",
        "commitment_rejected",
        "commitment_reduced",
        "payment_disbursed",
        "payment_rejected",
    }
    assert all(version == 1 for version, _ in schemas.EVENTS.values())


def test_the_seed_adds_up_to_the_published_figures_on_three_lines():
    programmed = {item["budget_line"]: d(item["amount"]) for item in seed.PROJECT["budget_lines"]}
    committed: dict[str, decimal.Decimal] = defaultdict(decimal.Decimal)
    paid = d("0.00")
    for commitment in seed.COMMITMENTS:
        committed[commitment.budget_line] += d(commitment.amount)
        for payment in commitment.payments:
            paid += d(payment.amount)
            assert (day(payment.paid_on) - day(payment.claim_date)).days <= 80
    assert sum(programmed.values()) == seed.EXPECTED["programmed"]
    assert dict(committed) == programmed  # every line fully committed
    assert paid == seed.EXPECTED["disbursed"]
    assert len({c.budget_line for c in seed.COMMITMENTS}) == 3
    assert len(seed.COMMITMENTS) > 3 * 3  # documents, not a lump sum per line
    for method, path, body in seed.requests():
        assert method == "POST" and path.startswith("/")
        assert body
