"""The ledger's rules: the programme's money from programming to payment, decided without I/O.

Four amounts per budget line (DOMAIN.md, "ledger"): programmed (the operating plan), admitted (the
admission-to-funding act), legally binding (signed conventions, contracts, grant agreements) and
disbursed (cash paid). The invariants, per line and in total:

    disbursed <= legally binding <= admitted <= programmed
    a payment references a commitment and never exceeds what is left of it
    a reduction never takes a commitment below what was already paid

Each rule below names its invariant and carries the figures (`Violation`); `broken_invariants`
checks the whole chain, and every decision is checked against it on the project as it would
stand afterwards, so a rule missed upstream still cannot break the books.

Consistency boundaries. A commitment and its payments are one stream, `commitment-<id>` (flows F1
and F2 of docs/events.md fix `commitment-grant-<award_id>` for awards). The room check of a line
spans every commitment of the project, so the project stream `project-<cup>` guards it: each entry
that moves a line's legally binding or disbursed amount is also posted there (`entry_posted`, with
the line's running totals), and books.py appends both in one transaction with expected versions
on both streams. Of two commitments that each fit but not together, one append finds the project
stream moved on; it reloads, decides again and is refused.

A command from a person that breaks a rule raises (`RuleViolation`, `NotFound`, `Conflict`: 409
or 404 at the edge) and stores nothing. The answers to calls (flows.py) use the same rules but
answer with a rejection event instead. Repeating a command that was already applied decides
nothing (idempotent by its business id); the same id with other figures is a `Conflict`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from shared.errors import Conflict, InvalidInput, NotFound, RuleViolation
from shared.money import ZERO, money_text
from shared.records import NewEvent, RecordedEvent

from ..commands import (
    KINDS,
    AdmitFunding,
    Decision,
    DisbursePayment,
    GrantAward,
    GrantRevocation,
    ProgrammeProject,
    RecordCommitment,
    ReduceCommitment,
    TrancheRequest,
    commitment_id_for,
    commitment_stream,
    grant_commitment_id,
    payment_id_for,
    project_stream,
    slug,
    tranche_payment_id,
)
from ..state import LINES, Commitment, Line, Project, apply_commitment, apply_project
from . import entries

__all__ = [
    "KINDS",
    "LINES",
    "AdmitFunding",
    "Decision",
    "DisbursePayment",
    "GrantAward",
    "GrantRevocation",
    "ProgrammeProject",
    "RecordCommitment",
    "ReduceCommitment",
    "TrancheRequest",
    "Violation",
    "admission_room",
    "admit",
    "broken_invariants",
    "commitment_id_for",
    "commitment_room",
    "commitment_stream",
    "disburse",
    "evolve_commitment",
    "evolve_project",
    "grant_commitment_id",
    "payment_id_for",
    "payment_room",
    "post",
    "programme",
    "project_stream",
    "record_commitment",
    "reduce_commitment",
    "reduction_room",
    "slug",
    "tranche_payment_id",
]


# -- the rules: each names its invariant and carries the figures --------------------------------


@dataclasses.dataclass(frozen=True)
class Violation:
    invariant: str
    message: str
    figures: Mapping[str, str]

    def error(self) -> RuleViolation:
        details: dict[str, Any] = {"invariant": self.invariant, **self.figures}
        return RuleViolation(self.message, **details)


def admission_room(project: Project, line: str, amount: Decimal) -> Violation | None:
    figures = project.lines[line]
    available = figures.programmed - figures.admitted
    if amount <= available:
        return None
    return Violation(
        "admitted_within_programmed",
        f"admitting {money_text(amount)} on {line} would take admitted to "
        f"{money_text(figures.admitted + amount)}, above the {money_text(figures.programmed)} programmed",
        {
            "budget_line": line,
            "programmed": money_text(figures.programmed),
            "admitted": money_text(figures.admitted),
            "requested": money_text(amount),
            "available": money_text(available),
        },
    )


def commitment_room(project: Project, line: str, amount: Decimal) -> Violation | None:
    figures = project.lines[line]
    available = figures.admitted - figures.legally_binding
    if amount <= available:
        return None
    return Violation(
        "legally_binding_within_admitted",
        f"committing {money_text(amount)} on {line} would take the legally binding amount to "
        f"{money_text(figures.legally_binding + amount)}, above the {money_text(figures.admitted)} admitted",
        {
            "budget_line": line,
            "admitted": money_text(figures.admitted),
            "legally_binding": money_text(figures.legally_binding),
            "requested": money_text(amount),
            "available": money_text(available),
        },
    )


def payment_room(commitment: Commitment, amount: Decimal) -> Violation | None:
    if amount <= commitment.remaining:
        return None
    return Violation(
        "payment_within_commitment",
        f"paying {money_text(amount)} on commitment {commitment.commitment_id} would exceed the "
        f"{money_text(commitment.remaining)} left of it",
        {
            "commitment_id": str(commitment.commitment_id),
            "amount": money_text(commitment.amount),
            "paid": money_text(commitment.paid),
            "requested": money_text(amount),
            "remaining": money_text(commitment.remaining),
        },
    )


def claim_made(claim_date: dt.date, paid_on: dt.date) -> InvalidInput | None:
    """A claim cannot be paid before it is made: the rule for a person's payment and for a
    tranche the calls service asks for alike."""
    if paid_on >= claim_date:
        return None
    return InvalidInput(
        "a claim cannot be paid before it is made",
        fields={"paid_on": [f"must be on or after the claim date {claim_date.isoformat()}"]},
    )


def reduction_room(commitment: Commitment, amount: Decimal) -> Violation | None:
    if amount <= commitment.remaining:
        return None
    return Violation(
        "reduction_not_below_paid",
        f"reducing commitment {commitment.commitment_id} by {money_text(amount)} would take it to "
        f"{money_text(commitment.amount - amount)}, below the {money_text(commitment.paid)} already paid",
        {
            "commitment_id": str(commitment.commitment_id),
            "amount": money_text(commitment.amount),
            "paid": money_text(commitment.paid),
            "requested": money_text(amount),
            "remaining": money_text(commitment.remaining),
        },
    )


def broken_invariants(project: Project) -> list[Violation]:
    """Every chain link that does not hold, per line and in total (empty: the books are sound)."""
    broken: list[Violation] = []
    scopes: list[tuple[str, Line]] = list(project.lines.items())
    if project.lines:
        scopes.append(("total", project.total()))
    for scope, figures in scopes:
        chain = [
            ("disbursed_within_legally_binding", figures.disbursed, figures.legally_binding),
            ("legally_binding_within_admitted", figures.legally_binding, figures.admitted),
            ("admitted_within_programmed", figures.admitted, figures.programmed),
            ("disbursed_not_negative", ZERO, figures.disbursed),
        ]
        for invariant, low, high in chain:
            if low > high:
                broken.append(
                    Violation(
                        invariant,
                        f"{scope}: {invariant.replace('_', ' ')} fails ({money_text(low)} > "
                        f"{money_text(high)})",
                        {
                            "scope": scope,
                            **{k: money_text(v) for k, v in _figures(figures).items()},
                        },
                    )
                )
    return broken


FIGURES = ("programmed", "admitted", "legally_binding", "disbursed")


def _figures(line: Line) -> dict[str, Decimal]:
    return {name: getattr(line, name) for name in FIGURES}


# -- commands from people: a refusal raises, nothing is stored ----------------------------------


def programme(project: Project, cmd: ProgrammeProject) -> Decision:
    if project.programmed:
        if _same_programme(project, cmd):
            return {}
        raise Conflict(f"project {cmd.cup} is already programmed", invariant="project_unique")
    event = entries.programmed(
        cmd.cup, cmd.local_code, cmd.title, cmd.start_date, cmd.plan_reference, dict(cmd.lines)
    )
    return _checked(project, {project_stream(cmd.cup): [event]})


def admit(project: Project, cmd: AdmitFunding) -> Decision:
    _require_project(project, cmd.cup)
    act_id = slug(cmd.act_reference)
    earlier = project.admissions.get(act_id)
    if earlier is not None:
        if (earlier.act_reference, earlier.adopted_on, dict(earlier.amounts)) == (
            cmd.act_reference,
            cmd.adopted_on,
            dict(cmd.lines),
        ):
            return {}
        raise Conflict(f"admission act {cmd.act_reference} is already recorded", act_id=act_id)
    for line, amount in cmd.lines.items():
        _require_line(project, line)
        violation = admission_room(project, line, amount)
        if violation is not None:
            raise violation.error()
    event = entries.admitted(cmd.cup, act_id, cmd.act_reference, cmd.adopted_on, dict(cmd.lines))
    return _checked(project, {project_stream(cmd.cup): [event]})


def record_commitment(project: Project, commitment: Commitment, cmd: RecordCommitment) -> Decision:
    _require_project(project, cmd.cup)
    _require_line(project, cmd.budget_line)
    commitment_id = commitment_id_for(cmd.kind, cmd.source_reference)
    if commitment.recorded:
        if (
            commitment.project_cup,
            commitment.budget_line,
            commitment.source_reference,
            commitment.signed_on,
            commitment.original_amount,
        ) == (cmd.cup, cmd.budget_line, cmd.source_reference, cmd.signed_on, cmd.amount):
            return {}
        raise Conflict(
            f"commitment {commitment_id} is already recorded with other figures",
            commitment_id=commitment_id,
        )
    violation = commitment_room(project, cmd.budget_line, cmd.amount)
    if violation is not None:
        raise violation.error()
    recorded = entries.recorded(
        commitment_id,
        cmd.cup,
        cmd.budget_line,
        cmd.kind,
        cmd.amount,
        cmd.source_reference,
        cmd.signed_on,
        award_id=None,
    )
    return post(project, commitment_id, recorded, binding=cmd.amount)


def reduce_commitment(project: Project, commitment: Commitment, cmd: ReduceCommitment) -> Decision:
    _require_commitment(commitment, cmd.commitment_id)
    reduction_id = slug(cmd.source_reference)
    earlier = commitment.reductions.get(reduction_id)
    if earlier is not None:
        if (earlier.amount, earlier.reason, earlier.reduced_on) == (
            cmd.amount,
            cmd.reason,
            cmd.reduced_on,
        ):
            return {}
        raise Conflict(
            f"reduction {cmd.source_reference} of {cmd.commitment_id} is already recorded",
            reduction_id=reduction_id,
        )
    violation = reduction_room(commitment, cmd.amount)
    if violation is not None:
        raise violation.error()
    reduced = entries.reduced(
        commitment, reduction_id, cmd.amount, cmd.reason, cmd.source_reference, cmd.reduced_on
    )
    return post(project, cmd.commitment_id, reduced, binding=-cmd.amount)


def disburse(project: Project, commitment: Commitment, cmd: DisbursePayment) -> Decision:
    _require_commitment(commitment, cmd.commitment_id)
    payment_id = payment_id_for(cmd.claim_reference)
    earlier = commitment.payments.get(payment_id)
    if earlier is not None:
        if (earlier.claim_reference, earlier.claim_date, earlier.paid_on, earlier.amount) == (
            cmd.claim_reference,
            cmd.claim_date,
            cmd.paid_on,
            cmd.amount,
        ):
            return {}
        raise Conflict(
            f"claim {cmd.claim_reference} of {cmd.commitment_id} is already paid",
            payment_id=payment_id,
        )
    unmade = claim_made(cmd.claim_date, cmd.paid_on)
    if unmade is not None:
        raise unmade
    violation = payment_room(commitment, cmd.amount)
    if violation is not None:
        raise violation.error()
    paid = entries.disbursed(
        payment_id,
        commitment,
        cmd.amount,
        cmd.claim_reference,
        cmd.claim_date,
        cmd.paid_on,
        tranche_id=None,
    )
    return post(project, cmd.commitment_id, paid, disbursed=cmd.amount, payment_id=payment_id)


# -- folding ------------------------------------------------------------------------------------


def evolve_project(state: Project, event: RecordedEvent) -> Project:
    return apply_project(state, event.type, event.data)


def evolve_commitment(state: Commitment, event: RecordedEvent) -> Commitment:
    return apply_commitment(state, event.type, event.data)


# -- helpers ------------------------------------------------------------------------------------


def _require_project(project: Project, cup: str) -> None:
    if not project.programmed or project.cup != cup:
        raise NotFound(f"no project with CUP {cup}", project_cup=cup)


def _require_line(project: Project, line: str) -> None:
    if line not in project.lines:
        raise RuleViolation(
            f"budget line {line} is not programmed in project {project.cup}",
            invariant="line_programmed",
            budget_line=line,
            programmed_lines=sorted(project.lines),
        )


def _require_commitment(commitment: Commitment, commitment_id: str) -> None:
    if not commitment.recorded:
        raise NotFound(
            f"no commitment {commitment_id}: a payment or reduction references a recorded one",
            invariant="references_commitment",
            commitment_id=commitment_id,
        )


def _same_programme(project: Project, cmd: ProgrammeProject) -> bool:
    programmed = {line: figures.programmed for line, figures in project.lines.items()}
    known = (project.local_code, project.title, project.start_date, project.plan_reference)
    asked = (cmd.local_code, cmd.title, cmd.start_date, cmd.plan_reference)
    return (known, programmed) == (asked, dict(cmd.lines))


def post(
    project: Project,
    commitment_id: str,
    entry: NewEvent,
    *,
    binding: Decimal = ZERO,
    disbursed: Decimal = ZERO,
    payment_id: str | None = None,
) -> Decision:
    """The entry on its commitment's stream and its posting on the project's, checked."""
    assert project.cup is not None
    posted = entries.posting(
        project, entry, commitment_id, binding=binding, disbursed=disbursed, payment_id=payment_id
    )
    decision = {commitment_stream(commitment_id): [entry], project_stream(project.cup): [posted]}
    return _checked(project, decision)


def _checked(project: Project, decision: Decision) -> Decision:
    """The last guard: the project as it would stand after the decision keeps every invariant.
    The rules above refuse first, with their own figures; this catches a rule that was missed."""
    after = project
    for stream, events in decision.items():
        if stream.startswith("project-"):
            for event in events:
                after = apply_project(after, event.type, event.data)
    broken = broken_invariants(after)
    if broken:
        raise broken[0].error()
    return decision
