"""The ledger's part of `lavoro demo`, and its seed: CUP F31D23000140007 as published, broken
into plausible documents.

What is official (pnmetroplus.it, the project's public sheet; DOMAIN.md): PN Metro Plus 2021-2027,
FSE+, action 4.4.8.1, local code BO4.4.8.1.a, CUP F31D23000140007, beneficiary Comune di Bologna,
start 15/12/2023, and the four totals: programmed 4,000,000.00, admitted 4,000,000.00, legally
binding 4,000,000.00, disbursed 605,305.62 (15.1%).

What is NOT official, but inferred to make the books plausible: the split across the three budget
lines, the admission act's reference and date, every convention, contract and grant (their
references, dates and amounts), and every payment. No public source itemises them. The pieces are
shaped on what DOMAIN.md says about the offices (Insieme per il lavoro with the Città
metropolitana, the municipal job desk, the Tavolo di salvaguardia, the over-indebtedness desk,
the self-employment and social-innovation calls with their caps of 10,000 and 8,000 euros) and add
up exactly to the published totals; every payment is made within the 80 days of Reg. 2021/1060.
The figures are data, in `seed.yaml` beside this module, which loads them into the dataclasses
below.

Two renditions of the same books. The grants of the two metropolitan calls are, in the programme,
the calls service's awards reaching the ledger (docs/events.md, F1) and their advances the
tranches it pays (F2): `CALLS` holds what those awards and tranches come to, and `lavoro demo`
(services/calls/demo/) makes the calls service award exactly them, ONE more award of the social
innovation call finding no room left on the line (suspended, its money released to the call).
`requests()` records the same books through the ledger's HTTP API alone, each award as a `grant`
commitment and each advance as a payment (the ledger's own tests use it): both end on the same
four figures, `EXPECTED`. `OFFICE_COMMITMENTS` are the documents the offices record themselves.

In the demo (`contribution`, registered in shared/services.py) the ledger goes first: the project
(three budget lines), its admission to funding, and the offices' documents with their payments
(`ledger_steps()`). It ends on the ledger's progress: programmed, admitted, legally binding and
disbursed must be exactly `EXPECTED`, or the demo exits 1.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from shared.demo import Check, Command, Contribution, Demo, Outcome, Step, euros, key

from ..domain import commitment_id_for

# Every scalar of the seed loads as text (BaseLoader): an amount or a date reads exactly as
# written there, never as a float or a date object.
_SEED: dict[str, Any] = yaml.load(
    (Path(__file__).parent / "seed.yaml").read_text(encoding="utf-8"), Loader=yaml.BaseLoader
)
PROJECT: dict[str, Any] = _SEED["project"]
CUP: str = PROJECT["cup"]
ADMISSION: dict[str, Any] = {**_SEED["admission"], "budget_lines": PROJECT["budget_lines"]}
EXPECTED = {name: Decimal(amount) for name, amount in _SEED["expected"].items()}


@dataclasses.dataclass(frozen=True)
class Payment:
    claim_reference: str
    claim_date: str
    paid_on: str
    amount: str


@dataclasses.dataclass(frozen=True)
class Commitment:
    budget_line: str
    kind: str
    source_reference: str
    signed_on: str
    amount: str
    about: str  # what it pays for (not recorded: a note for people reading the seed)
    payments: tuple[Payment, ...] = ()


@dataclasses.dataclass(frozen=True)
class CallGrants:
    """What one metropolitan call's awards come to, in ranking order (inferred figures)."""

    reference: str  # the call's act; an award's reference is `<reference>/<position>`
    kind: str  # self_employment | social_innovation (the calls service's kinds)
    awards: tuple[str, ...]  # the awards the line has room for, by ranking position
    advances: tuple[str, ...]  # the advance paid on the first awards, by ranking position
    signed_on: str  # the day the grant agreements were signed (`requests()` only)
    claim_date: str  # the advances' claims and payment (`requests()` only)
    paid_on: str
    over_room: tuple[str, ...] = ()  # awards the ledger refuses: no room left on the line

    @property
    def budget(self) -> Decimal:
        """The call's budget: every award it makes, including those the line refuses."""
        return sum((Decimal(a) for a in (*self.awards, *self.over_room)), Decimal("0.00"))

    def commitments(self) -> list[Commitment]:
        """The grant agreements as commitments recorded by hand (`requests()`)."""
        grants = []
        for number, amount in enumerate(self.awards, start=1):
            payments: tuple[Payment, ...] = ()
            if number <= len(self.advances):
                claim = f"{self.reference}/{number:02d}-ANT"
                payments = (
                    Payment(claim, self.claim_date, self.paid_on, self.advances[number - 1]),
                )
            grants.append(
                Commitment(
                    "labour_policies",
                    "grant",
                    f"{self.reference}/{number:02d}",
                    self.signed_on,
                    amount,
                    f"grant agreement {number} of call {self.reference}",
                    payments,
                )
            )
        return grants


def _call_grants(entry: Mapping[str, Any]) -> CallGrants:
    lists = {k: tuple(entry.get(k, ())) for k in ("awards", "advances", "over_room")}
    return CallGrants(**{**entry, **lists})


def _commitment(entry: Mapping[str, Any]) -> Commitment:
    payments = tuple(Payment(**payment) for payment in entry.get("payments", ()))
    return Commitment(**{**entry, "payments": payments})


CALLS: tuple[CallGrants, ...] = tuple(_call_grants(entry) for entry in _SEED["calls"])
OFFICE_COMMITMENTS: tuple[Commitment, ...] = tuple(
    _commitment(entry) for entry in _SEED["office_commitments"]
)

# Every commitment of the books: the offices' documents, then the calls' grant agreements.
COMMITMENTS: tuple[Commitment, ...] = (
    *OFFICE_COMMITMENTS,
    *(grant for call in CALLS for grant in call.commitments()),
)


def commitment_path(commitment: Commitment) -> str:
    return f"/commitments/{commitment_id_for(commitment.kind, commitment.source_reference)}"


def requests(
    commitments: Iterable[Commitment] = COMMITMENTS,
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, JSON body) of every command that records the seed, in order; each needs its
    own Idempotency-Key. `lavoro demo` gives `OFFICE_COMMITMENTS`: the grants come from calls."""
    commitments = tuple(commitments)
    yield "POST", "/projects", PROJECT
    yield "POST", f"/projects/{CUP}/admissions", ADMISSION
    for commitment in commitments:
        body = {
            "project_cup": CUP,
            "budget_line": commitment.budget_line,
            "kind": commitment.kind,
            "source_reference": commitment.source_reference,
            "signed_on": commitment.signed_on,
            "amount": commitment.amount,
        }
        yield "POST", "/commitments", body
    for commitment in commitments:
        for payment in commitment.payments:
            yield "POST", commitment_path(commitment) + "/payments", dataclasses.asdict(payment)


# -- the demo: the ledger's steps, and the figures it ends on -------------------------------------

FIGURES = ("programmed", "admitted", "legally_binding", "disbursed")


def ledger_steps() -> list[Step]:
    """The project, its admission, the offices' documents and their payments."""
    steps: list[Step] = []
    commitments = {commitment_path(c): c for c in OFFICE_COMMITMENTS}
    for _method, path, body in requests(OFFICE_COMMITMENTS):
        if path == "/projects":
            label, command_key = "ledger: programme the project", key("ledger", "project", CUP)
            same = {k: body[k] for k in ("local_code", "title", "start_date", "plan_reference")}
            check = Check(f"/projects/{CUP}", same)
        elif path.endswith("/admissions"):
            label = "ledger: admit it to funding"
            command_key = key("ledger", "admission", body["act_reference"])
            check = Check(
                path,
                {"adopted_on": body["adopted_on"]},
                "admissions",
                {"act_reference": body["act_reference"]},
            )
        elif path == "/commitments":
            reference = body["source_reference"]
            label = f"ledger: {body['kind']} {reference}"
            command_key = key("ledger", "commitment", reference)
            commitment = next(c for c in commitments.values() if c.source_reference == reference)
            same = {k: body[k] for k in ("budget_line", "kind", "signed_on")}
            check = Check(commitment_path(commitment), {**same, "original_amount": body["amount"]})
        else:
            commitment = commitments[path.removesuffix("/payments")]
            claim = body["claim_reference"]
            label, command_key = f"ledger: pay {claim}", key("ledger", "payment", claim)
            same = {k: body[k] for k in ("claim_date", "paid_on", "amount")}
            check = Check(commitment_path(commitment), same, "payments", {"claim_reference": claim})
        steps.append(Command(label, "ledger", path, body, command_key, check=check))
    return steps


def mismatches(progress: Mapping[str, Any]) -> dict[str, tuple[Decimal, Decimal]]:
    """figure -> (the ledger's, the seed's) for each total that differs from the seed's."""
    found = {}
    for name in FIGURES:
        got = Decimal(str(progress["total"][name]))
        if got != EXPECTED[name]:
            found[name] = (got, EXPECTED[name])
    return found


def mismatch_line(found: Mapping[str, tuple[Decimal, Decimal]]) -> str:
    return "the ledger's figures differ from the seed's: " + ", ".join(
        f"{name} {euros(got)} (expected {euros(wanted)})" for name, (got, wanted) in found.items()
    )


def progress_table(progress: Mapping[str, Any], title: str | None = None) -> Any:
    """The four amounts per budget line and in total, as a rich table."""
    from rich.table import Table

    as_of = f" as of {progress['as_of']}" if progress.get("as_of") else ""
    table = Table(title=title or f"CUP {progress['project_cup']}{as_of}")
    table.add_column("budget line")
    for name in FIGURES:
        table.add_column(name.replace("_", " "), justify="right")
    for line in progress["budget_lines"]:
        table.add_row(line["budget_line"], *(euros(line[name]) for name in FIGURES))
    total = progress["total"]
    table.add_row("total", *(euros(total[name]) for name in FIGURES), style="bold")
    return table


def outcome(demo: Demo) -> Outcome:
    """The ledger's progress after the demo: its table, the four totals, and a problem unless
    they are the published ones."""
    progress = demo.api("ledger").get(f"/projects/{CUP}/progress")
    found = mismatches(progress)
    figures = " / ".join(euros(progress["total"][name]) for name in FIGURES)
    return Outcome(
        json={
            "project_cup": progress["project_cup"],
            "total": progress["total"],
            "disbursed_percent": progress["disbursed_percent"],
            "budget_lines": progress["budget_lines"],
            "expected": {name: f"{EXPECTED[name]:.2f}" for name in FIGURES},
            "matches": not found,
        },
        show=[progress_table(progress, "The ledger after the demo")],
        verdict=f"programmed / admitted / legally binding / disbursed: {figures} "
        f"({progress['disbursed_percent']}% disbursed)",
        problem=mismatch_line(found) if found else None,
    )


def _steps(_today: dt.date) -> list[Step]:
    return ledger_steps()  # the ledger's documents carry their own dates


contribution = Contribution(steps=_steps, outcome=outcome, outcome_label="ledger: the four figures")
