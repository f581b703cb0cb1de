"""The ledger service: the programme's books over HTTP, and its answers to the calls service.

Wiring only: each command runs a plan of handlers.py through the chassis's unit of work (which
asks domain.py and appends) and answers with the events appended and the ids they name; each read
answers from the read models (queries.py).
Commands need a bearer token whose role may `command` and an `Idempotency-Key`; reads need a role
that may `read`; the OpenAPI document is public. The relay publishes the log to `ledger.events`
(and the public types to `lavoro.public`); `@handles` consumes calls' `grant_awarded` and
`tranche_requested` (docs/events.md, F1 and F2).

A test that runs the calls service under a unique name points the ledger at it with the
chassis's config `LAVORO_SOURCES: {"calls": <name>}`.
"""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request, Response

from shared import unit_of_work
from shared.consumer import handles
from shared.days import end_of_day, office_day
from shared.dependencies import EventStore
from shared.errors import NotFound
from shared.records import IncomingEvent
from shared.relay import RelayExtension
from shared.service import Service
from shared.unit_of_work import Outcome
from shared.web import CommandRequest, QueryRequest, command, query

from . import api, domain, events, handlers, readmodels
from .queries import Books, History, reports


class LedgerService(Service):
    name = "ledger"
    title = "lavoro ledger"
    description = (
        "The books of PN Metro Plus project CUP F31D23000140007: programmed, admitted, legally "
        "binding and disbursed, every euro traced to its cause."
    )
    store = EventStore(projections=[readmodels.projection], contracts=events.CONTRACTS)
    relay = RelayExtension(public=events.CONTRACTS.public)
    history = History()

    def _books(self) -> Books:
        return Books(self.store.query)

    def _run(self, plan: unit_of_work.Plan, cmd: CommandRequest, **named: Any) -> Outcome:
        return unit_of_work.run(self.store, plan, command_id=cmd.id).naming(**named)

    # -- commands -------------------------------------------------------------------------------

    @command("POST", "/projects", schema=api.ProgrammeProjectIn, status=201, tags=("projects",))
    def programme_project(self, cmd: CommandRequest) -> Outcome:
        """Programme a project: its CUP, local code, title, start date and budget lines."""
        return self._run(handlers.programme(cmd.data), cmd, project_cup=cmd.data.cup)

    @command(
        "POST",
        "/projects/<cup>/admissions",
        schema=api.AdmitFundingIn,
        status=201,
        tags=("projects",),
    )
    def admit_funding(self, cmd: CommandRequest, cup: str) -> Outcome:
        """Record an admission-to-funding act (admitted <= programmed, per line)."""
        data = cmd.data
        act = domain.AdmitFunding(
            cup, data["act_reference"], data["adopted_on"], api.AdmitFundingIn.amounts(data)
        )
        return self._run(handlers.admit(act), cmd, act_id=domain.slug(act.act_reference))

    @command(
        "POST", "/commitments", schema=api.RecordCommitmentIn, status=201, tags=("commitments",)
    )
    def record_commitment(self, cmd: CommandRequest) -> Outcome:
        """Record a signed convention, contract or grant agreement (legally binding <= admitted,
        per line); its id is its kind and reference, e.g. `contract-cig-9876543210`."""
        commitment_id = domain.commitment_id_for(cmd.data.kind, cmd.data.source_reference)
        return self._run(handlers.record(cmd.data), cmd, commitment_id=commitment_id)

    @command(
        "POST",
        "/commitments/<commitment_id>/reductions",
        schema=api.ReduceCommitmentIn,
        status=201,
        tags=("commitments",),
    )
    def reduce_commitment(self, cmd: CommandRequest, commitment_id: str) -> Outcome:
        """Reduce a commitment (never below what was already paid)."""
        reduction = domain.ReduceCommitment(commitment_id=commitment_id, **cmd.data)
        return self._run(handlers.reduce(reduction), cmd, commitment_id=commitment_id)

    @command(
        "POST",
        "/commitments/<commitment_id>/payments",
        schema=api.DisbursePaymentIn,
        status=201,
        tags=("payments",),
    )
    def disburse(self, cmd: CommandRequest, commitment_id: str) -> Outcome:
        """Record a payment on a commitment (never more than what is left of it)."""
        payment = domain.DisbursePayment(commitment_id=commitment_id, **cmd.data)
        payment_id = domain.payment_id_for(payment.claim_reference)
        return self._run(
            handlers.disburse(payment), cmd, commitment_id=commitment_id, payment_id=payment_id
        )

    # -- reads ----------------------------------------------------------------------------------

    @query("/projects/<cup>", response=api.ProjectOut, tags=("projects",))
    def get_project(self, request: Request, cup: str) -> Any:
        """A project and the four amounts of each budget line."""
        return self._project(cup)

    @query(
        "/projects/<cup>/progress",
        response=api.ProgressOut,
        args=api.AsOfQuery,
        tags=("projects",),
    )
    def progress(self, q: QueryRequest, cup: str) -> Any:
        """Programmed, admitted, legally binding and disbursed, in total and per line.

        With `as_of`, as the books stood at the end of that day in Bologna, replayed from the log.
        """
        as_of = q.args.get("as_of")
        self._project(cup)
        if as_of is None:
            return self._books().progress(cup)
        with self.history.books_at(end_of_day(as_of)) as then:
            return then.progress(cup, as_of)

    @query("/projects/<cup>/admissions", response=api.AdmissionsOut, tags=("projects",))
    def admissions(self, request: Request, cup: str) -> Any:
        """The admission-to-funding acts of a project."""
        self._project(cup)
        return {"project_cup": cup, "admissions": self._books().admissions(cup)}

    @query("/projects/<cup>/commitments", response=api.CommitmentsOut, tags=("commitments",))
    def commitments(self, request: Request, cup: str) -> Any:
        """A project's commitments in the order of record, each with its reductions and payments."""
        self._project(cup)
        return {"project_cup": cup, "commitments": self._books().commitments(cup)}

    @query("/commitments/<commitment_id>", response=api.CommitmentOut, tags=("commitments",))
    def get_commitment(self, request: Request, commitment_id: str) -> Any:
        """One commitment: amount, paid, what is left, its reductions and payments, its cause."""
        found = self._books().commitment(commitment_id)
        if found is None:
            raise NotFound(f"no commitment {commitment_id}", commitment_id=commitment_id)
        return found

    @query("/projects/<cup>/payments", response=api.PaymentsOut, tags=("payments",))
    def payments(self, request: Request, cup: str) -> Any:
        """A project's payments in the order of record."""
        self._project(cup)
        return {"project_cup": cup, "payments": self._books().payments(cup)}

    @query("/projects/<cup>/overdue", response=api.OverdueOut, tags=("reports",))
    def overdue(self, request: Request, cup: str) -> Any:
        """Payments made more than 80 days after their claim (Reg. 2021/1060 art. 74)."""
        self._project(cup)
        return reports.overdue(cup, self._books().payments(cup))

    @query("/projects/<cup>/retention", response=api.RetentionOut, tags=("reports",))
    def retention(self, request: Request, cup: str) -> Any:
        """Each document and the day until which it is kept (Reg. 2021/1060 art. 82)."""
        self._project(cup)
        return reports.retention(cup, self._books().commitments(cup))

    @query("/projects/<cup>/export.csv", media_type="text/csv", tags=("reports",))
    def export_csv(self, request: Request, cup: str) -> Response:
        """Commitments and payments as CSV, the CUP on every row."""
        self._project(cup)
        text = reports.csv_export(cup, self._books().commitments(cup))
        disposition = f'attachment; filename="ledger-{cup}.csv"'
        return Response(text, mimetype="text/csv", headers={"Content-Disposition": disposition})

    # -- reacting to calls (F1, F2) -------------------------------------------------------------

    @handles("calls", "grant_awarded", "tranche_requested", "grant_revoked")
    def on_calls_event(
        self,
        event: IncomingEvent,
        message: domain.GrantAward | domain.TrancheRequest | domain.GrantRevocation,
    ) -> None:
        if isinstance(message, domain.GrantAward):
            unit_of_work.run(self.store, handlers.award(message))
        elif isinstance(message, domain.GrantRevocation):
            unit_of_work.run(self.store, handlers.revocation(message))
        else:
            today = office_day(self.store.clock.now())
            unit_of_work.run(self.store, handlers.tranche(message, today))

    # -- helpers --------------------------------------------------------------------------------

    def _project(self, cup: str) -> dict[str, Any]:
        found = self._books().project(cup)
        if found is None:
            raise NotFound(f"no project with CUP {cup}", project_cup=cup)
        return found
