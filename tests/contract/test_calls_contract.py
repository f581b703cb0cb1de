"""The calls service's contracts: what it publishes is what docs/events.md says (F1/F2/F3 and the
`## calls` section) and what the ledger's consumer schemas accept; what the ledger answers, as
documented and as the ledger's own event schemas describe it, is what calls can read; no public
schema lets personal data out. The ledger's code is imported here only, never by services/calls."""

from __future__ import annotations

import json

import pytest

from services.calls import events
from shared.crypto import Vault
from shared.db import make_engine, migrate
from shared.persons import pseudonym
from shared.schemas import personal_paths
from tests.contract import docs
from tests.contract.calls_scenario import every_event
from tests.service.calls.builders import (
    commitment_recorded,
    commitment_rejected,
    payment_disbursed,
    payment_rejected,
)

ledger_schemas = pytest.importorskip("services.ledger.events")


@pytest.fixture(scope="module")
def emitted():
    return every_event()


def by_type(emitted):
    found = {}
    for event in emitted:
        found.setdefault(event.type, event)
    return found


def test_the_scenario_emits_every_event_type_calls_declares(emitted):
    assert set(by_type(emitted)) == set(events.EVENTS)


def test_f1_f2_f3_payloads_are_exactly_the_documented_fields(emitted):
    flows = docs.flow_fields()
    for type_ in ("grant_awarded", "tranche_requested", "grant_revoked"):
        assert list(by_type(emitted)[type_].data) == flows[type_], type_


def test_the_ledgers_consumer_schemas_accept_what_calls_publishes(emitted):
    for type_ in ("grant_awarded", "tranche_requested", "grant_revoked"):
        every = [e for e in emitted if e.type == type_]
        schema = ledger_schemas.CONSUMED[(type_, 1)]()
        for event in every:
            loaded = schema.load(event.data)
            assert loaded is not None
            assert str(loaded.award_id) == event.data["award_id"]


def test_every_payload_matches_its_v1_schema_and_the_calls_section(emitted):
    documented = docs.calls_published()
    assert set(documented) == set(events.EVENTS)
    for type_, (version, schema_cls) in events.EVENTS.items():
        row = documented[type_]
        assert row["version"] == version
        assert row["data"] == list(schema_cls().fields), type_
        stream = row["stream"]
        assert stream in ("call-<call_id>", "award-<award_id>")
    for event in emitted:
        schema = events.EVENTS[event.type][1]()
        assert sorted(event.data) == sorted(schema.fields), event.type
        schema.load(event.data)  # raises on a wrong shape or value


def test_the_public_column_is_the_public_schemas(emitted):
    documented = docs.calls_published()
    for type_, row in documented.items():
        public = events.PUBLIC.get(type_)
        if row["public"] is None:
            assert public is None, type_
        elif row["public"] == "all":
            assert public is events.EVENTS[type_][1], type_
        else:
            assert row["public"] == list(public().fields), type_


def test_public_schemas_let_no_personal_data_out(emitted, tmp_path):
    for type_, schema_cls in events.PUBLIC.items():
        assert personal_paths(schema_cls()) == [], type_
    engine = make_engine(f"sqlite:///{tmp_path / 'vault.db'}")
    migrate(engine)
    vault = Vault(engine)
    for event in emitted:
        data = event.data
        if event.type == "application_submitted":
            data = vault.seal_fields(
                events.ApplicationSubmittedV1(), data, data["applicant"]["person_id"]
            )
            sealed = data["applicant"]["person"]
            assert all(
                str(sealed[k]).startswith("pii:v1:")
                for k in ("name", "tax_code", "email", "priorities")
            )
        if event.type in events.PUBLIC:
            # as the relay does it: the stored payload (strings) through the public schema
            public = json.dumps(events.PUBLIC[event.type]().dump(data))
            for secret in ("pii:", "Maria", "RSSMRA", "example.org", "A bicycle", "no plan", "p-0"):
                assert secret not in public, (event.type, secret)
            if event.type == "application_submitted":  # no applicant, no priorities, no bonus
                assert set(json.loads(public)) == {
                    "call_id",
                    "application_id",
                    "public_reference",
                    "submitted_at",
                }
    engine.dispose()


ANSWERS = {
    "commitment_recorded": lambda g, t: commitment_recorded(g),
    "commitment_rejected": lambda g, t: commitment_rejected(g, "100.00"),
    "payment_disbursed": lambda g, t: payment_disbursed(t),
    "payment_rejected": lambda g, t: payment_rejected(t, "7000.00"),
}


@pytest.mark.parametrize("type_", sorted(ANSWERS))
def test_the_ledgers_answers_as_documented_are_read_by_calls(emitted, type_):
    grant = by_type(emitted)["grant_awarded"].data
    tranche = by_type(emitted)["tranche_requested"].data
    payload = ANSWERS[type_](grant, tranche)
    assert list(payload) == docs.flow_fields()[type_]  # the documented fields, in order
    ledger_version, ledger_schema = ledger_schemas.EVENTS[type_]
    assert ledger_version == 1
    assert sorted(ledger_schema().fields) == sorted(payload)  # the ledger writes these fields
    ledger_schema().load(payload)
    read = events.wire(events.CONTRACTS.incoming("ledger", type_, 1, payload))
    assert read["award_id"] == grant["award_id"]
    required = docs.calls_consumed()[type_]["requires"]
    assert required == [n for n, f in events.CONSUMED[(type_, 1)]().fields.items() if f.required]
    assert set(required) <= set(payload)


def test_calls_reads_an_answer_with_a_member_it_does_not_know(emitted):
    grant = by_type(emitted)["grant_awarded"].data
    payload = {**commitment_recorded(grant), "new_member": 1}
    read = events.wire(events.CONTRACTS.incoming("ledger", "commitment_recorded", 1, payload))
    assert "new_member" not in read


def test_pseudonyms_are_stable_and_keyed():
    assert pseudonym("k", "rssmra80a01a944i") == pseudonym("k", "RSSMRA80A01A944I ")
    assert pseudonym("k", "RSSMRA80A01A944I") != pseudonym("other", "RSSMRA80A01A944I")
