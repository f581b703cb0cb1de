"""One pass through the calls domain that emits every event type calls publishes, as the domain
writes them (before the service seals personal fields)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from services.calls import domain
from services.calls.commands import (
    ReportExpenditure,
    RequestTranche,
    SubmitApplication,
    award_stream,
    call_stream,
)
from services.calls.domain import awards
from shared.records import NewEvent
from tests.unit.calls.builders import (
    AFTER,
    DURING,
    TODAY,
    an_application,
    apply_award,
    apply_call,
    full,
    submit,
    terms,
)

DAY = dt.date(2024, 5, 2)


def every_event() -> list[NewEvent]:
    emitted: list[NewEvent] = []

    def keep(events: list[NewEvent]) -> list[NewEvent]:
        emitted.extend(events)
        return events

    call = domain.Call()
    apply_call(call, keep(domain.draft_call(call, "call-1", terms())))
    apply_call(call, keep(domain.publish_call(call, DURING)))
    ids = []
    for n in range(3):
        submitted = domain.submit_application(
            call,
            _application(n),
            key=f"person:p{n}",
            now=DURING,
        )
        apply_call(call, keep(submitted))
        ids.append(submitted[0].data["application_id"])
    rejected = submit(
        call, "third_sector_body:91234560375", kind="third_sector_body", tax_code="91234560375"
    )
    apply_call(call, keep(domain.reject(call, rejected, "incomplete", "no plan")))
    for app_id in ids:
        apply_call(call, keep(domain.admit(call, app_id)))
    apply_call(call, keep(domain.start_accompaniment(call, ids[0], DURING.date())))
    apply_call(
        call, keep(domain.hold_codesign_session(call, ids[0], DURING.date(), "plan", "notes"))
    )
    for app_id, score in zip(ids, [full(9, 9, 5), full(8, 8, 5), full(7, 7, 4)], strict=True):
        apply_call(call, keep(domain.score(call, app_id, score, "evaluator")))
    # Early (the office's decision, with its reason): the payload's every field is then set.
    closing = domain.close_call(call, DURING, "resources exhausted")
    apply_call(call, keep(closing), at=DURING)
    apply_call(call, keep(domain.complete_evaluation(call)), at=AFTER)
    changes = domain.approve_ranking(call, TODAY)
    apply_call(call, keep(changes[call_stream(call.call_id)]), at=AFTER)
    award_ids = [e.data["award_id"] for e in changes[call_stream(call.call_id)][1:]]
    confirmed = apply_award(awards.Award(), keep(changes[award_stream(award_ids[0])]), at=AFTER)
    suspended = apply_award(awards.Award(), keep(changes[award_stream(award_ids[1])]), at=AFTER)

    alert = awards.flag_overdue(confirmed, AFTER + dt.timedelta(days=2), dt.timedelta(days=1))
    apply_award(confirmed, keep(alert))
    commitment = {
        "award_id": award_ids[0],
        "commitment_id": f"grant-{award_ids[0]}",
        "amount": "8000.00",
    }
    apply_award(confirmed, keep(awards.confirm(confirmed, commitment)))
    rejection = {
        "award_id": award_ids[1],
        "amount": "8000.00",
        "reason": "line_lacks_room",
        "available": "0.00",
    }
    compensation = domain.on_commitment_rejected(call, suspended, rejection)
    keep(compensation[award_stream(award_ids[1])])
    apply_call(call, keep(compensation[call_stream(call.call_id)]))

    first = awards.request_tranche(
        confirmed,
        RequestTranche(
            kind="advance", amount=Decimal("1000.00"), claim_reference="PG-1", claim_date=DAY
        ),
        DAY,
    )
    apply_award(confirmed, keep(first))
    tranche_id = first[0].data["tranche_id"]
    paid = {
        "tranche_id": tranche_id,
        "amount": "1000.00",
        "payment_id": f"tranche-{tranche_id}",
        "paid_on": "2024-05-03",
    }
    apply_award(confirmed, keep(awards.record_payment(confirmed, paid)))
    second = awards.request_tranche(
        confirmed,
        RequestTranche(
            kind="interim", amount=Decimal("2000.00"), claim_reference="PG-2", claim_date=DAY
        ),
        DAY,
    )
    apply_award(confirmed, keep(second))
    refusal = {
        "tranche_id": second[0].data["tranche_id"],
        "reason": "exceeds_commitment",
        "remaining": "0.00",
    }
    apply_award(confirmed, keep(awards.record_payment_rejection(confirmed, refusal)))
    report = ReportExpenditure(
        amount=Decimal("900.00"),
        period_from=DAY,
        period_to=DAY,
        description="tools",
    )
    apply_award(confirmed, keep(awards.report_expenditure(confirmed, report, DAY)))
    keep(awards.revoke(confirmed, reason="abandoned", revoked_on=DAY))
    return emitted


def _application(n: int) -> SubmitApplication:
    app = an_application(tax_code=f"RSSMRA80A01A{n:03d}X", priorities=["women"], person_id=f"p-{n}")
    app.applicant["person"]["email"] = f"persona{n}@example.org"
    return app
