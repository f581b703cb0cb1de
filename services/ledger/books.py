"""One unit of work of the ledger: load what a decision needs, decide, append it in one transaction.

`run(store, plan, command_id=...)` loads the streams the plan reads (remembering their versions),
asks domain.py, and appends each stream's events with its expected version in one
`store.transaction()`. A stream that was read but not written is checked too (an append of no
events with its expected version): a rejection decided on a project's totals must not stand if
those totals moved meanwhile. Appends serialise on the log's head, and every change to a line's
totals bumps the project stream, so the check is exact. On a `ConcurrencyError` the plan runs
again on fresh state, a few times, then the error goes up (409 at the edge; a retry in a handler).

The command id (Idempotency-Key) goes with the first stream's append: a command that ran before
appends nothing and gets what it appended the first time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from shared.errors import ConcurrencyError
from shared.records import Aggregate, RecordedEvent

from . import domain, flows, schemas
from .state import Commitment, Project

PROJECT = Aggregate("ledger_project", Project, domain.evolve_project)
COMMITMENT = Aggregate("ledger_commitment", Commitment, domain.evolve_commitment)
ATTEMPTS = 8
S = TypeVar("S")
_log = structlog.get_logger("lavoro.ledger")


class Loader:
    """Loads aggregates for one attempt of a plan and remembers each stream's version."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.versions: dict[str, int] = {}

    def project(self, cup: str) -> Project:
        return self._load(PROJECT, domain.project_stream(cup))

    def commitment(self, commitment_id: str) -> Commitment:
        return self._load(COMMITMENT, domain.commitment_stream(commitment_id))

    def _load(self, aggregate: Aggregate[S], stream: str) -> S:
        loaded = self._store.load(aggregate, stream)
        self.versions[stream] = loaded.version
        return loaded.state


Plan = Callable[[Loader], domain.Decision]


def run(store: Any, plan: Plan, *, command_id: str | None = None) -> list[RecordedEvent]:
    """Decide and append (see the module docstring); the events appended (none if nothing new)."""
    for attempt in range(1, ATTEMPTS + 1):
        loader = Loader(store)
        decision = plan(loader)
        if not decision:
            return []
        try:
            return _append(store, loader.versions, decision, command_id)
        except ConcurrencyError as error:
            if attempt == ATTEMPTS:
                raise
            _log.info("ledger decision raced; deciding again", stream=error.stream, attempt=attempt)
    raise AssertionError("unreachable")


def _append(
    store: Any, versions: dict[str, int], decision: domain.Decision, command_id: str | None
) -> list[RecordedEvent]:
    unread = set(decision) - set(versions)
    if unread:
        raise AssertionError(f"a decision wrote to streams it did not read: {sorted(unread)}")
    for events in decision.values():
        for event in events:
            _check_payload(event.type, event.data)
    recorded: list[RecordedEvent] = []
    with store.transaction() as writer:
        for index, (stream, events) in enumerate(decision.items()):
            first = index == 0
            result = writer.append(
                stream, versions[stream], events, command_id=command_id if first else None
            )
            if result.duplicate:
                return list(result.events)  # the command ran before; its transaction held it all
            recorded.extend(result.events)
        for stream, version in versions.items():
            if stream not in decision:
                writer.append(stream, version, [])
    return recorded


def _check_payload(type_: str, data: dict[str, Any]) -> None:
    """What the ledger publishes holds to its own schema: a bug here must not reach the wire."""
    _version, schema = schemas.EVENTS[type_]
    errors = schema().validate(data)
    if errors:
        raise ValueError(f"{type_} payload breaks its schema: {errors}")


# -- the plans: what each command or event reads before domain.py decides -----------------------


def programme(cmd: domain.ProgrammeProject) -> Plan:
    return lambda load: domain.programme(load.project(cmd.cup), cmd)


def admit(cmd: domain.AdmitFunding) -> Plan:
    return lambda load: domain.admit(load.project(cmd.cup), cmd)


def record(cmd: domain.RecordCommitment) -> Plan:
    commitment_id = domain.commitment_id_for(cmd.kind, cmd.source_reference)
    return lambda load: domain.record_commitment(
        load.project(cmd.cup), load.commitment(commitment_id), cmd
    )


def reduce(cmd: domain.ReduceCommitment) -> Plan:
    def plan(load: Loader) -> domain.Decision:
        commitment = load.commitment(cmd.commitment_id)
        return domain.reduce_commitment(_project_of(load, commitment), commitment, cmd)

    return plan


def disburse(cmd: domain.DisbursePayment) -> Plan:
    def plan(load: Loader) -> domain.Decision:
        commitment = load.commitment(cmd.commitment_id)
        return domain.disburse(_project_of(load, commitment), commitment, cmd)

    return plan


def award(event: domain.GrantAward) -> Plan:
    commitment_id = domain.grant_commitment_id(event.award_id)
    return lambda load: flows.answer_award(
        load.project(event.project_cup), load.commitment(commitment_id), event
    )


def tranche(event: domain.TrancheRequest, today: Any) -> Plan:
    def plan(load: Loader) -> domain.Decision:
        commitment = load.commitment(domain.grant_commitment_id(event.award_id))
        project = load.project(commitment.project_cup) if commitment.recorded else None
        return flows.answer_tranche(project, commitment, event, today)

    return plan


def _project_of(load: Loader, commitment: Commitment) -> Project:
    # An unrecorded commitment is refused before its project matters.
    return load.project(commitment.project_cup) if commitment.recorded else Project()
