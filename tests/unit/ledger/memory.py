"""An in-memory stand-in for the EventStore, for unit tests of the ledger's plans (books.py).

It keeps streams as lists of events and checks expected versions as the real log does, so the
plans, the domain and the versions they carry run without a database. Integration tests run the
same plans on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from services.ledger import books, domain
from services.ledger.state import Commitment, Project
from shared.clock import UTC
from shared.errors import ConcurrencyError
from shared.records import Aggregate, AppendResult, Loaded, NewEvent, RecordedEvent

CUP = "F31D23000140007"
LINES = ("employment_services", "safeguarding", "labour_policies")


class MemoryStore:
    def __init__(self) -> None:
        self.streams: dict[str, list[RecordedEvent]] = defaultdict(list)
        self.position = 0

    def load(self, aggregate: Aggregate[Any], stream: str) -> Loaded[Any]:
        state = aggregate.initial()
        for event in self.streams.get(stream, []):
            state = aggregate.evolve(state, event)
        return Loaded(state, len(self.streams.get(stream, [])))

    @contextmanager
    def transaction(self) -> Iterator[_Writer]:
        writer = _Writer(self)
        yield writer
        for stream, events in writer.pending.items():
            self.streams[stream].extend(events)
        self.position = writer.position

    def snapshot(self) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        return {s: [(e.type, copy.deepcopy(e.data)) for e in es] for s, es in self.streams.items()}

    def events(self, stream: str) -> list[tuple[str, dict[str, Any]]]:
        return [(e.type, e.data) for e in self.streams.get(stream, [])]

    def project(self, cup: str = CUP) -> Project:
        return self.load(books.PROJECT, domain.project_stream(cup)).state

    def commitment(self, commitment_id: str) -> Commitment:
        return self.load(books.COMMITMENT, domain.commitment_stream(commitment_id)).state

    def commitments(self) -> list[Commitment]:
        found = [
            self.commitment(stream.removeprefix("commitment-"))
            for stream in self.streams
            if stream.startswith("commitment-")
        ]
        return [c for c in found if c.recorded]


class _Writer:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.pending: dict[str, list[RecordedEvent]] = {}
        self.position = store.position

    def append(
        self,
        stream: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        command_id: str | None = None,
    ) -> AppendResult:
        current = len(self.store.streams.get(stream, [])) + len(self.pending.get(stream, []))
        if current != expected_version:
            raise ConcurrencyError(stream, expected_version, current)
        recorded = []
        for offset, new in enumerate(events, start=1):
            self.position += 1
            now = dt.datetime(2024, 3, 1, tzinfo=UTC)
            recorded.append(
                RecordedEvent(
                    self.position,
                    str(uuid.uuid4()),
                    stream,
                    current + offset,
                    new.type,
                    new.schema_version,
                    new.data,
                    None,
                    None,
                    None,
                    now,
                    now,
                    "",
                    "",
                )  # fmt: skip
            )
        self.pending.setdefault(stream, []).extend(recorded)
        return AppendResult(recorded, duplicate=False)


# -- factories ----------------------------------------------------------------------------------


def d(text: str) -> Decimal:
    return Decimal(text)


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def a_programme(**lines: str) -> domain.ProgrammeProject:
    amounts = {line: d(amount) for line, amount in (lines or {"safeguarding": "1000.00"}).items()}
    return domain.ProgrammeProject(
        CUP, "BO4.4.8.1.a", "Piano per il lavoro", day("2023-12-15"), "PO 2024", amounts
    )


def an_admission(reference: str = "DEC-1", **lines: str) -> domain.AdmitFunding:
    amounts = {line: d(amount) for line, amount in lines.items()}
    return domain.AdmitFunding(CUP, reference, day("2024-02-29"), amounts)


def a_commitment(
    amount: str, line: str = "safeguarding", reference: str = "CONV-1", kind: str = "convention"
) -> domain.RecordCommitment:
    return domain.RecordCommitment(CUP, line, kind, reference, day("2024-04-15"), d(amount))


def a_payment(commitment_id: str, amount: str, claim: str = "DR-1") -> domain.DisbursePayment:
    return domain.DisbursePayment(
        commitment_id, claim, day("2024-05-02"), day("2024-06-20"), d(amount)
    )


def a_reduction(commitment_id: str, amount: str, act: str = "DD-9") -> domain.ReduceCommitment:
    return domain.ReduceCommitment(commitment_id, d(amount), "savings", act, day("2024-09-01"))


def an_award(
    award_id: str = "a1", amount: str = "8000.00", line: str = "labour_policies", cup: str = CUP
) -> domain.GrantAward:
    return domain.GrantAward(
        award_id, "call-1", "app-1", cup, line, d(amount), "AVV-2024-01/3", day("2024-10-21")
    )


def a_tranche(
    award_id: str = "a1", tranche_id: str = "t1", amount: str = "4000.00"
) -> domain.TrancheRequest:
    return domain.TrancheRequest(
        award_id, tranche_id, "advance", d(amount), "CL-7", day("2024-11-04")
    )


def funded(store: MemoryStore, **lines: str) -> MemoryStore:
    """A programmed project with everything admitted, through the plans."""
    books.run(store, books.programme(a_programme(**lines)))
    books.run(store, books.admit(an_admission(**lines)))
    return store


def replace(obj: Any, **changes: Any) -> Any:
    return dataclasses.replace(obj, **changes)
