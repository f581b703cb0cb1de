"""Load, decide, append: how the service runs the domain's decisions against its store.

A plan loads the aggregates a decision needs and returns a `Decision`: the events to append, by
stream, with the version each stream was read at (0 for a stream the decision creates, such as a
new award). `execute` appends them in one transaction; the first append carries the command id,
so a repeated command (same Idempotency-Key) finds its first run and returns the events it
appended then, without deciding again (the state has moved on, and deciding again would refuse
what was already done). A concurrent change to a stream (`ConcurrencyError`) makes an HTTP command
load and decide again, a few times; a handler lets the consumer retry it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa
import structlog

from shared import tables as t
from shared.dependencies import Store
from shared.errors import ConcurrencyError, NotFound
from shared.records import NewEvent

from . import awards, domain, tables
from .rules import award_stream, call_stream

Changes = Mapping[str, list[NewEvent]]
_log = structlog.get_logger("lavoro.calls")


@dataclasses.dataclass(frozen=True)
class Decision:
    appends: list[tuple[str, int, list[NewEvent]]]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The (type, data) of the events the command's first stream got, first run or repeated."""

    events: list[tuple[str, dict[str, Any]]]
    repeated: bool = False

    @property
    def types(self) -> list[str]:
        return [type_ for type_, _ in self.events]

    def first(self, key: str) -> Any:
        return next((data[key] for _, data in self.events if key in data), None)

    def all(self, type_: str, key: str) -> list[Any]:
        return [data[key] for t_, data in self.events if t_ == type_]


def decision(changes: Changes, versions: Mapping[str, int]) -> Decision:
    return Decision([(s, versions.get(s, 0), list(e)) for s, e in changes.items() if e])


@dataclasses.dataclass(frozen=True)
class Plan:
    """Load and decide, for the aggregate on `stream` (the one a command is about)."""

    stream: str
    decide: Callable[[], Decision]

    def __call__(self) -> Decision:
        return self.decide()


class _Gate:
    __slots__ = ("lock", "__weakref__")

    def __init__(self) -> None:
        self.lock = threading.Lock()


_gates: weakref.WeakValueDictionary[str, _Gate] = weakref.WeakValueDictionary()
_gates_guard = threading.Lock()


@contextlib.contextmanager
def one_at_a_time(stream: str) -> Iterator[None]:
    """Commands on one stream decide one after another in this process: a call taking many
    applications at once would otherwise have most of them lose the race and decide again
    (seen here: of 30 at once, some lost ten times in a row). Replicas still race;
    that is what the retries are for. Green under eventlet's monkey patching."""
    with _gates_guard:
        gate = _gates.get(stream)
        if gate is None:
            gate = _gates[stream] = _Gate()
    with gate.lock:
        yield


def execute(
    store: Store,
    plan: Callable[[], Decision],
    *,
    command_id: str | None = None,
    attempts: int = 10,
    serial: bool = False,
) -> Outcome:
    """Run `plan` and append its decision, again on a concurrent change (after a short random
    pause) up to `attempts` times. `serial` (HTTP commands): one at a time per stream in this
    process. Not for handlers: their unit of work commits after they return, so the lock would
    not cover the commit, and on SQLite it would be taken while holding the write lock."""
    if command_id is not None:
        done = earlier(store, command_id)
        if done is not None:
            return done
    gate = (
        one_at_a_time(plan.stream)
        if serial and isinstance(plan, Plan)
        else contextlib.nullcontext()
    )
    with gate:
        for attempt in range(1, attempts + 1):
            chosen = plan()
            try:
                return _append(store, chosen, command_id)
            except ConcurrencyError:
                if attempt == attempts:
                    raise
                time.sleep(random.uniform(0, 0.005 * attempt))  # another replica won: let it go on
    raise AssertionError("unreachable")  # pragma: no cover


def _append(store: Store, chosen: Decision, command_id: str | None) -> Outcome:
    if not chosen.appends:
        return Outcome([])
    with store.transaction() as writer:
        first: Outcome | None = None
        for stream, version, events in chosen.appends:
            result = writer.append(
                stream, version, events, command_id=command_id if first is None else None
            )
            if first is None:
                first = Outcome([(e.type, e.data) for e in result.events], result.duplicate)
                if result.duplicate:
                    return first  # a concurrent run of the same command won: append nothing
        assert first is not None
        return first


def earlier(store: Store, command_id: str) -> Outcome | None:
    """The events a command appended the first time it ran, if it ran."""
    rows = store.query(sa.select(t.commands).where(t.commands.c.command_id == command_id))
    if not rows:
        return None
    row = rows[0]
    if row.first_position is None:
        return Outcome([], repeated=True)
    found = store.query(
        sa.select(t.events.c.type, t.events.c.data)
        .where(t.events.c.position.between(row.first_position, row.last_position))
        .order_by(t.events.c.position)
    )
    return Outcome([(r.type, json.loads(r.data)) for r in found], repeated=True)


# -- plans ---------------------------------------------------------------------------------------


def on_call(
    store: Store,
    call_id: str,
    decide: Callable[[domain.Call], list[NewEvent] | Changes],
    *,
    new: bool = False,
) -> Plan:
    """A plan that loads the call and asks `decide`; a missing call is a 404 unless `new`."""

    def plan() -> Decision:
        stream = call_stream(call_id)
        loaded = store.load(domain.CALL, stream)
        if loaded.version == 0 and not new:
            raise NotFound(f"no call {call_id}", call_id=call_id)
        result = decide(loaded.state)
        changes = {stream: result} if isinstance(result, list) else result
        return decision(changes, {stream: loaded.version})

    return Plan(call_stream(call_id), plan)


def on_award(store: Store, award_id: str, decide: Callable[[awards.Award], list[NewEvent]]) -> Plan:
    def plan() -> Decision:
        stream = award_stream(award_id)
        loaded = store.load(awards.AWARD, stream)
        if loaded.version == 0:
            raise NotFound(f"no award {award_id}", award_id=award_id)
        return decision({stream: decide(loaded.state)}, {stream: loaded.version})

    return Plan(award_stream(award_id), plan)


def on_rejected_commitment(
    store: Store, award_id: str, answer: Mapping[str, Any]
) -> Callable[[], Decision]:
    """F1's compensation: the award and its call, decided together."""

    def plan() -> Decision:
        award = store.load(awards.AWARD, award_stream(award_id))
        if award.version == 0:
            raise NotFound(f"no award {award_id}", award_id=award_id)
        call = store.load(domain.CALL, call_stream(award.state.call_id))
        changes = domain.on_commitment_rejected(call.state, award.state, answer)
        versions = {
            award_stream(award_id): award.version,
            call_stream(call.state.call_id): call.version,
        }
        return decision(changes, versions)

    return plan


# -- the ledger's answers and the timeout --------------------------------------------------------

_ANSWERS: dict[str, Callable[[awards.Award, Mapping[str, Any]], list[NewEvent]]] = {
    "commitment_recorded": awards.confirm,
    "payment_disbursed": awards.record_payment,
    "payment_rejected": awards.record_payment_rejection,
}


def react(store: Store, type_: str, answer: Mapping[str, Any]) -> Outcome:
    """One of the ledger's answers (F1, F2), applied once: a handler's unit of work."""
    award_id = answer["award_id"]
    if type_ == "commitment_rejected":
        plan = on_rejected_commitment(store, award_id, answer)
    else:
        decide = _ANSWERS[type_]
        plan = on_award(store, award_id, lambda award: decide(award, answer))
    outcome = execute(store, plan, attempts=1)
    if not outcome.events:
        _log.info("ledger answer already applied", answer=type_, award_id=award_id)
    return outcome


def flag_overdue_awards(store: Store, timeout: dt.timedelta) -> list[str]:
    """Raise `award_answer_overdue` for each award still `granted` after `timeout` (store clock)."""
    now = store.clock.now()
    a = tables.awards.c
    waiting = store.query(
        sa.select(a.award_id, a.call_id, a.awarded_at).where(
            a.status == "granted", a.overdue.is_(False), a.awarded_at <= now - timeout
        )
    )
    flagged = []
    for row in waiting:
        plan = on_award(store, row.award_id, lambda award: awards.flag_overdue(award, now, timeout))
        try:
            outcome = execute(store, plan, attempts=1)
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
