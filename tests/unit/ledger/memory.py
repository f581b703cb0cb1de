"""The ledger's unit tests' store and factories: the chassis's in-memory store (shared.testing)
runs the ledger's plans (handlers.py), domain and versions without a database; integration tests
run the same plans on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any

from services.ledger import domain, handlers
from services.ledger import events as schemas
from services.ledger.state import Commitment, Project
from shared import unit_of_work
from shared.testing import MemoryStore as ChassisMemoryStore

CUP = "F31D23000140007"
LINES = ("employment_services", "safeguarding", "labour_policies")


class MemoryStore(ChassisMemoryStore):
    """The chassis's in-memory store, with the ledger's contracts and a few readers."""

    def __init__(self) -> None:
        super().__init__(contracts=schemas.CONTRACTS)

    def project(self, cup: str = CUP) -> Project:
        return self.state(handlers.PROJECT, domain.project_stream(cup))

    def commitment(self, commitment_id: str) -> Commitment:
        return self.state(handlers.COMMITMENT, domain.commitment_stream(commitment_id))

    def commitments(self) -> list[Commitment]:
        found = [
            self.commitment(stream.removeprefix("commitment-"))
            for stream in self.streams
            if stream.startswith("commitment-")
        ]
        return [c for c in found if c.recorded]


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
    unit_of_work.run(store, handlers.programme(a_programme(**lines)))
    unit_of_work.run(store, handlers.admit(an_admission(**lines)))
    return store


def replace(obj: Any, **changes: Any) -> Any:
    return dataclasses.replace(obj, **changes)
