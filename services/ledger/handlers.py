"""The ledger's plans: what each command or incoming event loads before domain.py decides.

Each returns a `shared.unit_of_work.Plan`; the unit of work appends the decision in one
transaction with expected versions on every stream the plan read, so the check of a line's room
on the project stream is exact (domain.py, "Consistency boundaries"), and decides again on a
race. A commitment's stream and its project's stream are loaded through the session.
"""

from __future__ import annotations

import datetime as dt

from shared.records import Aggregate
from shared.unit_of_work import Plan, Session

from . import domain
from .domain import answers
from .state import Commitment, Project

PROJECT = Aggregate("ledger_project", Project, domain.evolve_project)
COMMITMENT = Aggregate("ledger_commitment", Commitment, domain.evolve_commitment)


def project(session: Session, cup: str) -> Project:
    return session.load(PROJECT, domain.project_stream(cup))


def commitment(session: Session, commitment_id: str) -> Commitment:
    return session.load(COMMITMENT, domain.commitment_stream(commitment_id))


def programme(cmd: domain.ProgrammeProject) -> Plan:
    return lambda s: domain.programme(project(s, cmd.cup), cmd)


def admit(cmd: domain.AdmitFunding) -> Plan:
    return lambda s: domain.admit(project(s, cmd.cup), cmd)


def record(cmd: domain.RecordCommitment) -> Plan:
    commitment_id = domain.commitment_id_for(cmd.kind, cmd.source_reference)
    return lambda s: domain.record_commitment(
        project(s, cmd.cup), commitment(s, commitment_id), cmd
    )


def reduce(cmd: domain.ReduceCommitment) -> Plan:
    def plan(s: Session) -> domain.Decision:
        found = commitment(s, cmd.commitment_id)
        return domain.reduce_commitment(_project_of(s, found), found, cmd)

    return plan


def disburse(cmd: domain.DisbursePayment) -> Plan:
    def plan(s: Session) -> domain.Decision:
        found = commitment(s, cmd.commitment_id)
        return domain.disburse(_project_of(s, found), found, cmd)

    return plan


def award(event: domain.GrantAward) -> Plan:
    """calls' `grant_awarded` (F1): the commitment, or its rejection."""
    commitment_id = domain.grant_commitment_id(event.award_id)
    return lambda s: answers.answer_award(
        project(s, event.project_cup), commitment(s, commitment_id), event
    )


def revocation(event: domain.GrantRevocation) -> Plan:
    """calls' `grant_revoked` (F3): the commitment reduced by what is left unpaid."""

    def plan(s: Session) -> domain.Decision:
        found = commitment(s, domain.grant_commitment_id(event.award_id))
        return answers.answer_revocation(_project_of(s, found), found, event)

    return plan


def tranche(event: domain.TrancheRequest, today: dt.date) -> Plan:
    """calls' `tranche_requested` (F2): the payment today, or its rejection."""

    def plan(s: Session) -> domain.Decision:
        found = commitment(s, domain.grant_commitment_id(event.award_id))
        owner = project(s, found.project_cup) if found.recorded else None
        return answers.answer_tranche(owner, found, event, today)

    return plan


def _project_of(s: Session, found: Commitment) -> Project:
    # An unrecorded commitment is refused before its project matters.
    return project(s, found.project_cup) if found.recorded else Project()
