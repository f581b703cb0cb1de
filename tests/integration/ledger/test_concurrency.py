"""The room check under concurrency, on SQLite and PostgreSQL: two commitments that each fit but
not together, decided on the same state at the same moment, cannot both be recorded; the loser
finds the project stream moved on, decides again and is refused. A burst of writers never takes
a line past its admitted amount."""

from __future__ import annotations

import contextlib

import eventlet
import pytest
from eventlet.event import Event

from services.ledger import handlers
from shared import unit_of_work
from shared.dependencies import Store
from shared.errors import ConcurrencyError, RuleViolation
from tests.unit.ledger.memory import CUP, a_commitment, a_reduction, an_award, funded

pytestmark = pytest.mark.integration


class Lockstep(Store):
    """A store whose first loads wait until `parties` workers have loaded: every worker decides on
    the same state before any appends (the race made certain, on any database)."""

    def __init__(self, log, gate: dict) -> None:
        super().__init__(log, {}, deferred=False)
        self._gate = gate
        self._waited = False

    def one_at_a_time(self, stream):
        # Each worker stands for a replica of its own: the in-process gate is not shared.
        return contextlib.nullcontext()

    def load(self, aggregate, stream):
        loaded = super().load(aggregate, stream)
        if not self._waited and stream.startswith("project-"):
            self._waited = True
            self._gate["arrived"] += 1
            if self._gate["arrived"] == self._gate["parties"]:
                self._gate["all"].send(True)
            self._gate["all"].wait()
        return loaded


def outcome(store: Store, plan: unit_of_work.Plan) -> str:
    try:
        unit_of_work.run(store, plan)
    except RuleViolation as refusal:
        return refusal.details["invariant"]
    except ConcurrencyError:
        return "gave up"
    return "recorded"


def race(log, *plans: unit_of_work.Plan) -> list[str]:
    gate = {"arrived": 0, "parties": len(plans), "all": Event()}
    workers = [eventlet.spawn(outcome, Lockstep(log, gate), plan) for plan in plans]
    return [worker.wait() for worker in workers]


def test_two_commitments_that_fit_only_one_at_a_time_cannot_both_pass(log):
    store = funded(Store(log, {}, deferred=False), safeguarding="1000.00")
    results = race(
        log,
        handlers.record(a_commitment("600.00", reference="A")),
        handlers.record(a_commitment("600.00", reference="B")),
    )
    assert sorted(results) == ["legally_binding_within_admitted", "recorded"]
    line = store.load(handlers.PROJECT, f"project-{CUP}").state.lines["safeguarding"]
    assert line.legally_binding == line.admitted - 400


def test_an_award_racing_a_commitment_is_rejected_when_the_other_took_the_room(log):
    store = funded(Store(log, {}, deferred=False), labour_policies="1000.00")
    results = race(
        log,
        handlers.record(a_commitment("600.00", line="labour_policies", reference="A")),
        handlers.award(an_award("a1", "600.00")),
    )
    awarded = log.read_stream("commitment-grant-a1")
    if results[0] == "recorded":  # the commitment won: the award was answered with a rejection
        assert [e.type for e in awarded] == ["commitment_rejected"]
        assert awarded[0].data["available"] == "400.00"
    else:
        assert [e.type for e in awarded] == ["commitment_recorded"]
    assert results[1] == "recorded"  # a reaction is always answered, never refused
    line = store.load(handlers.PROJECT, f"project-{CUP}").state.lines["labour_policies"]
    assert line.legally_binding == 600


def test_a_burst_of_writers_never_takes_a_line_past_what_was_admitted(log):
    store = funded(Store(log, {}, deferred=False), safeguarding="1000.00")
    plans = [handlers.record(a_commitment("150.00", reference=f"R{n}")) for n in range(12)]
    workers = [eventlet.spawn(outcome, Store(log, {}, deferred=False), plan) for plan in plans]
    results = [worker.wait() for worker in workers]
    recorded = results.count("recorded")
    # 6 x 150 fit in 1000, a 7th would not; a writer may give up after its retries (a 409 asking
    # the client to try again), never record past the room.
    assert recorded == 6 or (recorded < 6 and "gave up" in results)
    assert set(results) <= {"recorded", "legally_binding_within_admitted", "gave up"}
    line = store.load(handlers.PROJECT, f"project-{CUP}").state.lines["safeguarding"]
    assert line.legally_binding == 150 * recorded
    assert log.verify().ok


def test_a_rejection_never_stands_on_totals_that_moved_before_it_was_stored(log):
    """An award decided "no room" while a reduction frees room: either the rejection was stored
    before the reduction (then it was true), or the award is decided again and recorded."""
    store = funded(Store(log, {}, deferred=False), labour_policies="1000.00")
    unit_of_work.run(
        store, handlers.record(a_commitment("1000.00", line="labour_policies", reference="A"))
    )
    reduce = handlers.reduce(a_reduction("convention-a", "600.00"))
    results = race(log, reduce, handlers.award(an_award("a1", "500.00")))
    assert results == ["recorded", "recorded"]
    answer = log.read_stream("commitment-grant-a1")[0]
    reduction = log.read_stream("commitment-convention-a")[-1]
    assert reduction.type == "commitment_reduced"
    if answer.type == "commitment_rejected":
        assert answer.position < reduction.position  # it was true when it was stored
    else:
        assert answer.type == "commitment_recorded"
