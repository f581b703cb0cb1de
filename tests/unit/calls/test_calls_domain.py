"""The call's lifecycle and its applications: each rule of domain.py, without I/O."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from services.calls import domain, events
from services.calls.domain.errors import (
    DuplicateApplication,
    InvalidScore,
    NotAdmitted,
    OutsideWindow,
    RankingBeforeClose,
    WrongState,
)
from shared.clock import UTC
from shared.days import window
from shared.errors import InvalidInput, NotFound
from shared.records import NewEvent
from tests.unit.calls.builders import (
    AFTER,
    CALL_ID,
    DURING,
    a_call,
    an_application,
    apply_call,
    full,
    submit,
    terms,
)


def test_the_window_is_bologna_days_as_utc_instants_across_daylight_saving():
    opens_at, closes_at = window(dt.date(2024, 3, 1), dt.date(2024, 3, 31))
    assert opens_at == dt.datetime(2024, 2, 29, 23, 0, tzinfo=UTC)  # CET, UTC+1
    assert closes_at == dt.datetime(2024, 3, 31, 22, 0, tzinfo=UTC)  # 1 April 00:00 CEST, UTC+2
    drafted = domain.draft_call(domain.Call(), CALL_ID, terms())[0].data
    assert (drafted["opens_at"], drafted["closes_at"]) == (
        "2024-02-29T23:00:00.000000Z",
        "2024-03-31T22:00:00.000000Z",
    )


def test_weights_must_sum_to_100_and_tie_breaks_name_criteria():
    criteria = [
        {"name": "a", "weight": 50, "max_score": 10},
        {"name": "b", "weight": 49, "max_score": 5},
    ]
    with pytest.raises(InvalidInput) as refused:
        domain.draft_call(domain.Call(), CALL_ID, terms(criteria=criteria, tie_break=["zzz"]))
    assert set(refused.value.fields) == {"criteria", "tie_break"}
    assert refused.value.status == 422
    with pytest.raises(InvalidInput):
        domain.draft_call(domain.Call(), CALL_ID, terms(closes_on=dt.date(2024, 2, 1)))


def test_a_call_is_drafted_once_published_before_its_end_and_closed_after_it():
    call = a_call(status="draft")
    assert call.status == "draft"
    with pytest.raises(WrongState):
        domain.draft_call(call, CALL_ID, terms())
    with pytest.raises(OutsideWindow):
        domain.publish_call(call, AFTER)
    apply_call(call, domain.publish_call(call, DURING))
    assert call.status == "published"
    with pytest.raises(WrongState):
        domain.publish_call(call, DURING)
    closed = domain.close_call(call, AFTER)
    assert closed[0].type == "call_closed"
    assert closed[0].data["early"] is False and closed[0].data["reason"] is None
    assert closed[0].data["closed_at"] == "2024-04-02T09:00:00.000000Z"
    apply_call(call, closed)
    assert call.status == "closed"
    with pytest.raises(WrongState):
        domain.close_call(call, AFTER, "again")


def test_a_call_closes_early_only_with_a_reason_and_records_it():
    call = a_call()
    for missing in (None, "", "   "):
        with pytest.raises(InvalidInput) as refused:
            domain.close_call(call, DURING, missing)
        assert refused.value.status == 422
        assert list(refused.value.fields) == ["reason"]
    with pytest.raises(InvalidInput) as too_long:
        domain.close_call(call, DURING, "x" * 501)
    assert list(too_long.value.fields) == ["reason"]
    closed = domain.close_call(call, DURING, "  resources exhausted (Det. 12/2024)  ")
    assert closed[0].data == {
        "call_id": CALL_ID,
        "closed_at": "2024-03-10T10:00:00.000000Z",
        "applications": 0,
        "early": True,
        "reason": "resources exhausted (Det. 12/2024)",
    }
    apply_call(call, closed, at=DURING)
    assert call.status == "closed"
    with pytest.raises(WrongState) as late:  # applications refused once it closed, early or not
        domain.submit_application(call, an_application(), key="person:p1", now=DURING)
    assert late.value.status == 409
    # the last instant of the window is still early; its end is not
    last = call.closes_at - dt.timedelta(microseconds=1)
    assert domain.close_call(a_call(), last, "r")[0].data["early"] is True
    assert domain.close_call(a_call(), call.closes_at)[0].data["early"] is False


def test_a_call_cannot_close_before_its_window_opens_even_with_a_reason():
    call = a_call()
    assert call.opens_at is not None
    with pytest.raises(OutsideWindow) as refused:
        domain.close_call(call, call.opens_at - dt.timedelta(microseconds=1), "changed our mind")
    assert refused.value.status == 409
    assert domain.close_call(call, call.opens_at, "resources exhausted")[0].data["early"] is True


def test_an_early_closure_lets_the_evaluation_and_ranking_go_on():
    call = a_call()
    app_id = submit(call, "person:p1")
    apply_call(call, domain.admit(call, app_id))
    apply_call(call, domain.close_call(call, DURING, "resources exhausted"), at=DURING)
    apply_call(call, domain.score(call, app_id, full(9, 9, 5), "evaluator"), at=DURING)
    completed = domain.complete_evaluation(call)
    assert completed[0].data["scored"] == 1


def test_a_call_closed_event_from_before_early_closures_still_loads_as_on_time():
    old = {"call_id": CALL_ID, "closed_at": "2024-04-02T09:00:00.000000Z", "applications": 3}
    loaded = events.CallClosedV1().load(old)
    assert (loaded["early"], loaded["reason"]) == (False, None)
    call = a_call()
    apply_call(call, [NewEvent("call_closed", old)], at=AFTER)
    assert call.status == "closed"
    public = events.CallClosedPublic().dump({**old, "early": True, "reason": "secret"})
    assert "reason" not in public and public["early"] is True


@pytest.mark.parametrize(
    "at, accepted",
    [
        (
            dt.datetime(2024, 2, 29, 22, 59, 59, 999999, tzinfo=UTC),
            False,
        ),  # 23:59:59 on 29 Feb in Bologna
        (dt.datetime(2024, 2, 29, 23, 0, tzinfo=UTC), True),  # midnight, 1 March in Bologna
        (
            dt.datetime(2024, 3, 31, 21, 59, 59, 999999, tzinfo=UTC),
            True,
        ),  # last instant of the 31st
        (dt.datetime(2024, 3, 31, 22, 0, tzinfo=UTC), False),  # 1 April in Bologna
    ],
)
def test_applications_only_inside_the_window(at, accepted):
    call = a_call()
    if accepted:
        assert domain.submit_application(call, an_application(), key="person:p1", now=at)
    else:
        with pytest.raises(OutsideWindow) as refused:
            domain.submit_application(call, an_application(), key="person:p1", now=at)
        assert refused.value.status == 409


def test_no_application_to_a_call_that_is_not_published():
    with pytest.raises(WrongState):
        domain.submit_application(a_call(status="draft"), an_application(), key="k", now=DURING)


def test_a_second_application_by_the_same_applicant_is_refused():
    call = a_call()
    first = submit(call, "person:p1")
    with pytest.raises(DuplicateApplication) as refused:
        domain.submit_application(call, an_application(), key="person:p1", now=DURING)
    assert refused.value.details["application_id"] == first
    assert submit(call, "person:p2") != first
    other_call = a_call()
    assert submit(other_call, "person:p1")  # the same person may apply to another call


def test_an_application_gets_a_public_reference_an_id_and_its_bonus():
    call = a_call()
    events = domain.submit_application(
        call,
        an_application(priorities=["women", "under_35", "migrants"]),
        key="person:p1",
        now=DURING,
    )
    data = events[0].data
    assert data["public_reference"] == "AVV-2024-01-0001"
    assert data["seq"] == 1
    assert data["bonus"] == 3  # women 2 + under_35 1; the call gives no points for migrants
    assert data["business_plan"]["requested_amount"] == "8000.00"
    again = domain.submit_application(call, an_application(), key="person:p1", now=DURING)
    assert again[0].data["application_id"] == data["application_id"]  # repeatable


def test_bodies_and_groups_count_their_organisation_priorities():
    call = a_call()
    events = domain.submit_application(
        call,
        an_application("third_sector_body", tax_code="91234560375", priorities=["peripheral_area"]),
        key="third_sector_body:91234560375",
        now=DURING,
    )
    assert events[0].data["bonus"] == 3


def test_applicant_keys():
    assert domain.applicant_key("person", "p-1", None) == "person:p-1"
    assert (
        domain.applicant_key("third_sector_body", None, "91234560375")
        == "third_sector_body:91234560375"
    )
    assert domain.applicant_key("informal_group", "p-9", None) == "informal_group:p-9"
    assert (
        domain.applicant_key("informal_group", "p-9", "91234560375") == "informal_group:91234560375"
    )


def test_admission_then_accompaniment_and_codesign_sessions():
    call = a_call()
    app_id = submit(call, "person:p1")
    with pytest.raises(NotAdmitted):
        domain.start_accompaniment(call, app_id, dt.date(2024, 3, 12))
    apply_call(call, domain.admit(call, app_id))
    with pytest.raises(WrongState):
        domain.admit(call, app_id)
    with pytest.raises(WrongState):
        domain.hold_codesign_session(call, app_id, dt.date(2024, 3, 12), "plan", None)
    apply_call(call, domain.start_accompaniment(call, app_id, dt.date(2024, 3, 12)))
    for n in (1, 2):
        held = domain.hold_codesign_session(call, app_id, dt.date(2024, 3, 12 + n), "plan", None)
        assert held[0].data["session"] == n
        apply_call(call, held)
    assert call.applications[app_id].status == "accompanied"
    assert call.applications[app_id].sessions == 2


def test_an_inadmissible_application_keeps_its_reason_and_cannot_be_scored():
    call = a_call()
    app_id = submit(call, "person:p1")
    apply_call(call, domain.reject(call, app_id, "incomplete", "no business plan attached"))
    assert call.applications[app_id].status == "inadmissible"
    assert call.applications[app_id].reason == "incomplete"
    with pytest.raises(NotAdmitted):
        domain.score(call, app_id, {"jobs": 5}, "ev")


def test_scores_only_for_admitted_applications_and_within_each_maximum():
    call = a_call()
    app_id = submit(call, "person:p1")
    with pytest.raises(NotAdmitted) as not_yet:
        domain.score(call, app_id, {"jobs": 5}, "ev")
    assert not_yet.value.status == 409
    apply_call(call, domain.admit(call, app_id))
    for bad in ({"jobs": 11}, {"jobs": -1}, {"social_impact": 6}, {"beauty": 3}, {}):
        with pytest.raises(InvalidScore) as refused:
            domain.score(call, app_id, bad, "ev")
        assert refused.value.status == 422
    apply_call(call, domain.score(call, app_id, {"jobs": 10, "social_impact": 0}, "ev"))
    assert call.applications[app_id].status == "admissible"  # not every criterion yet
    apply_call(call, domain.score(call, app_id, {"sustainability": 7}, "ev"))
    assert call.applications[app_id].status == "scored"
    apply_call(call, domain.score(call, app_id, {"sustainability": 8}, "ev-2"))  # a re-score
    assert call.applications[app_id].scores == full(8, 10, 0)


def test_the_evaluation_ends_only_after_the_close_with_every_application_decided():
    call = a_call()
    scored_id, pending_id = submit(call, "person:p1"), submit(call, "person:p2")
    apply_call(call, domain.admit(call, scored_id))
    apply_call(call, domain.score(call, scored_id, full(5, 5, 5), "ev"))
    with pytest.raises(RankingBeforeClose):
        domain.complete_evaluation(call)  # still published
    apply_call(call, domain.close_call(call, AFTER), at=AFTER)
    with pytest.raises(RankingBeforeClose) as pending:
        domain.complete_evaluation(call)
    assert pending.value.details["pending"] == ["AVV-2024-01-0002"]
    apply_call(call, domain.reject(call, pending_id, "late", None))
    done = domain.complete_evaluation(call)
    assert done[0].data == {"call_id": CALL_ID, "scored": 1, "inadmissible": 1}


def test_unknown_application_is_not_found():
    with pytest.raises(NotFound):
        domain.admit(a_call(), "nope")


def test_call_terms_are_kept_as_strings_for_the_wire():
    data = domain.draft_call(domain.Call(), CALL_ID, terms(max_share=Decimal("0.8")))[0].data
    assert data["budget"] == "20000.00" and data["award_cap"] == "8000.00"
    assert data["max_share"] == "0.8"
    assert data["bonuses"] == {"peripheral_area": 3, "under_35": 1, "women": 2}
