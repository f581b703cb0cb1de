"""What the calls service publishes to partners, on the real broker: the public types of a call
taken to its awards reach `lavoro.public` as CloudEvents, without personal data."""

from __future__ import annotations

import json

from tests.service.calls.builders import awarded_call, person_application
from tests.unit.calls.builders import full


def test_public_events_reach_lavoro_public_without_personal_data(
    harness, start_calls, clock, tmp_path
):
    public = harness.tap_public("calls")
    calls = start_calls({"DATABASE_URL": f"sqlite:///{tmp_path / 'calls.db'}"})
    apps = [person_application(1, email="persona1@example.org", priorities=["women"])]
    awarded_call(calls.client, clock, apps, [full(9, 9, 5)])
    got = harness.take(public, 7)
    types = [m["type"].rsplit(".", 1)[1] for m in got]
    assert types == [
        "call_published",
        "application_submitted",
        "application_admitted",
        "call_closed",
        "evaluation_completed",
        "ranking_approved",
        "grant_awarded",
    ]  # no call_drafted, no scores, no funds bookkeeping
    submitted = got[1]
    assert submitted["source"] == f"/lavoro/{harness.name('calls')}"
    assert set(submitted["data"]) == {
        "call_id",
        "application_id",
        "public_reference",
        "submitted_at",
    }
    text = json.dumps(got)
    assert "Persona" not in text and "RSSMRA" not in text and "pii:" not in text
    assert got[-1]["data"]["amount"] == "8000.00"
