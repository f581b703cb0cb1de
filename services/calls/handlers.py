"""The calls service's plans: what each command, ledger answer or timer tick loads before the
domain decides.

Each returns a `shared.unit_of_work.Plan`; the unit of work appends the decision in one
transaction with the version each stream was read at (0 for a stream the decision creates, such
as a new award), repeats a command by its id without deciding again, and decides again on a race.
A call's stream holds the call and its applications; each award has its own stream.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from shared import unit_of_work
from shared.errors import ConcurrencyError, NotFound
from shared.records import NewEvent
from shared.unit_of_work import Decision, Outcome, Plan, Session, UnitStore

from . import domain
from .commands import award_stream, call_stream
from .domain import awards

CallDecision = Callable[[domain.Call], Sequence[NewEvent] | Decision]
AwardDecision = Callable[[awards.Award], Sequence[NewEvent]]
_log = structlog.get_logger("lavoro.calls")


def call(session: Session, call_id: str, *, new: bool = False) -> domain.Call:
    """The call; a call with nothing on its stream is a 404 unless the command creates it."""
    loaded = session.loaded(domain.CALL, call_stream(call_id))
    if loaded.version == 0 and not new:
        raise NotFound(f"no call {call_id}", call_id=call_id)
    return loaded.state


def award(session: Session, award_id: str) -> awards.Award:
    loaded = session.loaded(awards.AWARD, award_stream(award_id))
    if loaded.version == 0:
        raise NotFound(f"no award {award_id}", award_id=award_id)
    return loaded.state


def on_call(call_id: str, decide: CallDecision, *, new: bool = False) -> Plan:
    """Load the call and ask `decide`: events for the call's stream, or events by stream (a
    ranking's awards)."""

    def plan(s: Session) -> Decision:
        result = decide(call(s, call_id, new=new))
        return {call_stream(call_id): result} if isinstance(result, Sequence) else result

    return plan


def on_award(award_id: str, decide: AwardDecision) -> Plan:
    return lambda s: {award_stream(award_id): decide(award(s, award_id))}


# -- the ledger's answers (F1, F2) ---------------------------------------------------------------

_ANSWERS: dict[str, Callable[[awards.Award, Mapping[str, Any]], list[NewEvent]]] = {
    "commitment_recorded": awards.confirm,
    "payment_disbursed": awards.record_payment,
    "payment_rejected": awards.record_payment_rejection,
}


def answer(type_: str, answer: Mapping[str, Any]) -> Plan:
    """One of the ledger's answers, in its wire form (amounts and dates as strings)."""
    award_id = answer["award_id"]
    if type_ == "commitment_rejected":
        # F1's compensation: the award and its call, decided together.
        def plan(s: Session) -> Decision:
            found = award(s, award_id)
            return domain.on_commitment_rejected(call(s, found.call_id), found, answer)

        return plan
    decide = _ANSWERS[type_]
    return on_award(award_id, lambda found: decide(found, answer))


def apply_answer(store: UnitStore, type_: str, message: Mapping[str, Any]) -> Outcome:
    """A handler's unit of work: one attempt, since a race makes the consumer retry the whole
    handler; an answer already applied decides nothing."""
    outcome = unit_of_work.run(store, answer(type_, message), attempts=1)
    if not outcome.events:
        _log.info("ledger answer already applied", answer=type_, award_id=message["award_id"])
    return outcome


# -- the answer timeout --------------------------------------------------------------------------


def flag_overdue(
    store: UnitStore, waiting: Sequence[Any], now: dt.datetime, timeout: dt.timedelta
) -> list[str]:
    """Raise `award_answer_overdue` for each award of `waiting` (rows with award_id, call_id,
    awarded_at) still `granted` after `timeout`; the ids of those flagged."""
    flagged = []
    for row in waiting:
        plan = on_award(row.award_id, lambda found: awards.flag_overdue(found, now, timeout))
        try:
            outcome = unit_of_work.run(store, plan, attempts=1)
        except ConcurrencyError:
            continue  # the award moved on meanwhile (perhaps answered): the next check sees it
        if outcome.events:
            flagged.append(row.award_id)
            _log.error(
                "award without the ledger's answer past the timeout",
                award_id=row.award_id,
                call_id=row.call_id,
                awarded_at=row.awarded_at.isoformat(),
                timeout_seconds=int(timeout.total_seconds()),
            )
    return flagged
