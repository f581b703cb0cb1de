"""Whatever another service sends, the ledger's consumer never loops on it: hypothesis makes the
payloads of calls' events the ledger consumes (grant_awarded, tranche_requested, grant_revoked)
from well-formed to hostile (wrong types, missing and unknown members, huge numbers, floats for
money, odd text), they go through the real broker, and each is either answered (its contract
loads it) or parked at once with the reason; an event sent after them all is still handled."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ledger.events import CONSUMED
from services.ledger.service import LedgerService
from shared import tables as t
from shared.consumer import consumer_stats
from shared.contracts import BrokenContract, Contracts
from tests.helpers import wait_for
from tests.kit.broker import Harness
from tests.kit.service import database_of

TYPES = sorted({type_ for type_, _version in CONSUMED})
EXAMPLES = 40

_text = st.text(max_size=30) | st.sampled_from(
    ["", "\u0000", "\ud800", "x" * 300, "F31D23000140007"]
)
_scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
    | st.sampled_from(["12.50", "-1.00", "0.001", "1e9", "2024-13-45", "2024-05-02"])
)
_value = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3), max_leaves=5)
_MEMBERS = [
    "award_id", "call_id", "application_id", "project_cup", "budget_line", "amount",
    "reference", "awarded_on", "tranche_id", "kind", "claim_reference", "claim_date",
    "revoked_on", "reason", "paid",
]  # fmt: skip
_hostile = st.dictionaries(st.sampled_from(_MEMBERS) | _text, _value, max_size=10)
_id = st.text("abcdef0123456789-", min_size=1, max_size=40)
_amount = st.decimals(min_value="0.01", max_value="99999.99", places=2).map(str)
_day = st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2100, 12, 31)).map(str)
# As calls would send them, with values anywhere their contracts allow (unknown projects, lines,
# amounts past any room, claims in the future): each must be answered, never parked.
_well_formed = {
    "grant_awarded": st.fixed_dictionaries(
        {"award_id": _id, "call_id": _id, "application_id": _id, "amount": _amount,
         "project_cup": st.sampled_from(["F31D23000140007", "X00000000000000"]),
         "budget_line": st.sampled_from(["labour_policies", "nowhere"]),
         "reference": st.text(min_size=1, max_size=40), "awarded_on": _day}
    ),
    "tranche_requested": st.fixed_dictionaries(
        {"award_id": _id, "tranche_id": _id, "amount": _amount, "claim_date": _day,
         "kind": st.sampled_from(["advance", "interim", "balance"]),
         "claim_reference": st.text(min_size=1, max_size=40)}
    ),
    "grant_revoked": st.fixed_dictionaries({"award_id": _id, "call_id": _id, "revoked_on": _day}),
}  # fmt: skip


def test_hostile_payloads_are_answered_or_parked_with_the_reason_never_looped(
    harness: Harness, store_url
):
    ledger = harness.start(LedgerService, database_of(store_url))
    contracts = Contracts(emitted={}, consumed={"calls": CONSUMED})
    sent: list[tuple[dict, bool]] = []  # (body, whether its contract loads it)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(type_=st.sampled_from(TYPES), choice=st.data())
    def send(type_: str, choice: st.DataObject) -> None:
        data = choice.draw(_hostile | _well_formed[type_])
        body = harness.event("calls", type_, f"award-fuzz-{len(sent)}", data)
        try:
            contracts.incoming("calls", type_, 1, body["data"])
            loads = True
        except BrokenContract:
            loads = False
        sent.append((body, loads))
        harness.publish("calls", body)

    send()
    stats = consumer_stats(ledger.container)
    broken = sum(1 for _body, loads in sent if not loads)

    def settled() -> bool:
        return stats["handled"] + stats["broken_contract"] >= len(sent)

    wait_for(settled, 60, f"{len(sent)} fuzzed events answered or parked")
    assert 0 < broken < len(sent)  # both kinds were sent
    assert stats["broken_contract"] == broken and stats["handled"] == len(sent) - broken
    assert stats["retries"] == 0  # a payload never made a handler fail and come round again

    def parked() -> list:
        # The rows, not only the counter: it is counted before its dead letter is written.
        with ledger.log.engine.connect() as conn:
            rows = conn.execute(sa.select(t.dead_letters)).all()
        return rows if len(rows) == broken else []

    letters = wait_for(parked, 20, f"{broken} dead letters") if broken else []
    assert all("breaks its contract" in row.error and row.attempts == 1 for row in letters)
    assert {row.event_id for row in letters} == {b["id"] for b, loads in sent if not loads}

    # Still consuming: a well-formed revocation after them all is handled.
    after = harness.event(
        "calls",
        "grant_revoked",
        "award-after",
        {"award_id": "a", "call_id": "c", "revoked_on": "2024-05-02"},
    )
    harness.publish("calls", after)
    wait_for(lambda: stats["handled"] == len(sent) - broken + 1, 20, "the event after the fuzz")
