"""The ledger service: the programme's books over HTTP, and its answers to the calls service.

Wiring only: each method loads its input through a schema (api.py, schemas.py), runs a plan of
books.py (which asks domain.py and appends), and answers from the read models (queries.py).
Commands need a bearer token whose role may `command` and an `Idempotency-Key`; reads need a role
that may `read`; the OpenAPI document is public. The relay publishes the log to `ledger.events`
(and the public types to `lavoro.public`); `@handles` consumes calls' `grant_awarded` and
`tranche_requested` (docs/events.md, F1 and F2).

A test that runs the calls service under a unique name points the ledger at it with the
chassis's config `LAVORO_SOURCES: {"calls": <name>}`.
"""

from __future__ import annotations

from typing import Any, cast

from werkzeug.wrappers import Request, Response

from shared.consumer import handles
from shared.days import end_of_day, office_day
from shared.dependencies import EventStore, Store
from shared.errors import NotFound
from shared.observability import Observable
from shared.openapi import document, openapi_spec
from shared.records import IncomingEvent
from shared.relay import RelayExtension
from shared.schemas import load_input
from shared.web import CommandRequest, command, http, json_response, query

from . import api, books, domain, readmodels, reports, schemas
from .queries import Books, History


def _dump(schema: type[api.Schema], value: Any) -> Any:
    return schema().dump(value)


class LedgerService(Observable):
    name = "ledger"
    store = EventStore(projections=[readmodels.projection], upcasters=schemas.upcasters)
    relay = RelayExtension(public=schemas.PUBLIC)
    history = History()

    def _books(self) -> Books:
        return Books(self.store.query)

    # -- commands -------------------------------------------------------------------------------

    @command("POST", "/projects", schema=api.ProgrammeProjectIn)
    @document(status=201, response=api.ProjectOut, tags=("projects",))
    def programme_project(self, cmd: CommandRequest) -> Response:
        """Programme a project: its CUP, local code, title, start date and budget lines."""
        books.run(self.store, books.programme(cmd.data), command_id=cmd.id)
        return self._created(api.ProjectOut, self._books().project(cmd.data.cup))

    @command("POST", "/projects/<cup>/admissions", schema=api.AdmitFundingIn)
    @document(status=201, response=api.AdmissionOut, tags=("projects",))
    def admit_funding(self, cmd: CommandRequest, cup: str) -> Response:
        """Record an admission-to-funding act (admitted <= programmed, per line)."""
        data = cmd.data
        act = domain.AdmitFunding(
            cup, data["act_reference"], data["adopted_on"], api.AdmitFundingIn.amounts(data)
        )
        books.run(self.store, books.admit(act), command_id=cmd.id)
        act_id = domain.slug(act.act_reference)
        found = [a for a in self._books().admissions(cup) if a["act_id"] == act_id]
        return self._created(api.AdmissionOut, found[0] if found else None)

    @command("POST", "/commitments", schema=api.RecordCommitmentIn)
    @document(status=201, response=api.CommitmentOut, tags=("commitments",))
    def record_commitment(self, cmd: CommandRequest) -> Response:
        """Record a signed convention, contract or grant agreement (legally binding <= admitted,
        per line); its id is its kind and reference, e.g. `contract-cig-9876543210`."""
        books.run(self.store, books.record(cmd.data), command_id=cmd.id)
        commitment_id = domain.commitment_id_for(cmd.data.kind, cmd.data.source_reference)
        return self._created(api.CommitmentOut, self._books().commitment(commitment_id))

    @command("POST", "/commitments/<commitment_id>/reductions", schema=api.ReduceCommitmentIn)
    @document(status=201, response=api.CommitmentOut, tags=("commitments",))
    def reduce_commitment(self, cmd: CommandRequest, commitment_id: str) -> Response:
        """Reduce a commitment (never below what was already paid)."""
        reduction = domain.ReduceCommitment(commitment_id=commitment_id, **cmd.data)
        books.run(self.store, books.reduce(reduction), command_id=cmd.id)
        return self._created(api.CommitmentOut, self._books().commitment(commitment_id))

    @command("POST", "/commitments/<commitment_id>/payments", schema=api.DisbursePaymentIn)
    @document(status=201, response=api.PaymentOut, tags=("payments",))
    def disburse(self, cmd: CommandRequest, commitment_id: str) -> Response:
        """Record a payment on a commitment (never more than what is left of it)."""
        payment = domain.DisbursePayment(commitment_id=commitment_id, **cmd.data)
        books.run(self.store, books.disburse(payment), command_id=cmd.id)
        payment_id = domain.payment_id_for(payment.claim_reference)
        found = self._books().commitment(commitment_id) or {"payments": []}
        paid = [p for p in found["payments"] if p["payment_id"] == payment_id]
        return self._created(api.PaymentOut, paid[0] if paid else None)

    # -- reads ----------------------------------------------------------------------------------

    @query("/projects/<cup>")
    @document(response=api.ProjectOut, tags=("projects",))
    def get_project(self, request: Request, cup: str) -> Any:
        """A project and the four amounts of each budget line."""
        return _dump(api.ProjectOut, self._project(cup))

    @query("/projects/<cup>/progress")
    @document(response=api.ProgressOut, query=api.AsOfQuery, tags=("projects",))
    def progress(self, request: Request, cup: str) -> Any:
        """Programmed, admitted, legally binding and disbursed, in total and per line.

        With `as_of`, as the books stood at the end of that day in Bologna, replayed from the log.
        """
        as_of = load_input(api.AsOfQuery(), request.args.to_dict()).get("as_of")
        self._project(cup)
        if as_of is None:
            return _dump(api.ProgressOut, self._books().progress(cup))
        with self.history.books_at(end_of_day(as_of)) as then:
            return _dump(api.ProgressOut, then.progress(cup, as_of))

    @query("/projects/<cup>/admissions")
    @document(response=api.AdmissionsOut, tags=("projects",))
    def admissions(self, request: Request, cup: str) -> Any:
        """The admission-to-funding acts of a project."""
        self._project(cup)
        return _dump(
            api.AdmissionsOut, {"project_cup": cup, "admissions": self._books().admissions(cup)}
        )

    @query("/projects/<cup>/commitments")
    @document(response=api.CommitmentsOut, tags=("commitments",))
    def commitments(self, request: Request, cup: str) -> Any:
        """A project's commitments in the order of record, each with its reductions and payments."""
        self._project(cup)
        found = self._books().commitments(cup)
        return _dump(api.CommitmentsOut, {"project_cup": cup, "commitments": found})

    @query("/commitments/<commitment_id>")
    @document(response=api.CommitmentOut, tags=("commitments",))
    def get_commitment(self, request: Request, commitment_id: str) -> Any:
        """One commitment: amount, paid, what is left, its reductions and payments, its cause."""
        found = self._books().commitment(commitment_id)
        if found is None:
            raise NotFound(f"no commitment {commitment_id}", commitment_id=commitment_id)
        return _dump(api.CommitmentOut, found)

    @query("/projects/<cup>/payments")
    @document(response=api.PaymentsOut, tags=("payments",))
    def payments(self, request: Request, cup: str) -> Any:
        """A project's payments in the order of record."""
        self._project(cup)
        return _dump(api.PaymentsOut, {"project_cup": cup, "payments": self._books().payments(cup)})

    @query("/projects/<cup>/overdue")
    @document(response=api.OverdueOut, tags=("reports",))
    def overdue(self, request: Request, cup: str) -> Any:
        """Payments made more than 80 days after their claim (Reg. 2021/1060 art. 74)."""
        self._project(cup)
        return _dump(api.OverdueOut, reports.overdue(cup, self._books().payments(cup)))

    @query("/projects/<cup>/retention")
    @document(response=api.RetentionOut, tags=("reports",))
    def retention(self, request: Request, cup: str) -> Any:
        """Each document and the day until which it is kept (Reg. 2021/1060 art. 82)."""
        self._project(cup)
        return _dump(api.RetentionOut, reports.retention(cup, self._books().commitments(cup)))

    @query("/projects/<cup>/export.csv")
    @document(media_type="text/csv", tags=("reports",))
    def export_csv(self, request: Request, cup: str) -> Response:
        """Commitments and payments as CSV, the CUP on every row."""
        self._project(cup)
        text = reports.csv_export(cup, self._books().commitments(cup))
        disposition = f'attachment; filename="ledger-{cup}.csv"'
        return Response(text, mimetype="text/csv", headers={"Content-Disposition": disposition})

    @http("GET", "/openapi.json", public=True)
    @document(tags=("meta",))
    def openapi(self, request: Request) -> Any:
        """This API as an OpenAPI 3 document."""
        return _spec(type(self))

    # -- reacting to calls (F1, F2) -------------------------------------------------------------

    @handles("calls", "grant_awarded", "tranche_requested")
    def on_calls_event(self, event: IncomingEvent) -> None:
        schema = schemas.CONSUMED.get((event.type, event.schema_version))
        if schema is None:
            raise ValueError(f"no consumer schema for {event.type} v{event.schema_version}")
        message = load_input(schema(), event.data)
        if isinstance(message, domain.GrantAward):
            books.run(self.store, books.award(message))
        else:
            today = office_day(cast(Store, self.store).clock.now())
            books.run(self.store, books.tranche(message, today))

    # -- helpers --------------------------------------------------------------------------------

    def _project(self, cup: str) -> dict[str, Any]:
        found = self._books().project(cup)
        if found is None:
            raise NotFound(f"no project with CUP {cup}", project_cup=cup)
        return found

    def _created(self, schema: type[api.Schema], value: Any) -> Response:
        if value is None:  # the read model lags the log (a projection being rebuilt)
            raise NotFound("recorded, but not readable yet: read it again in a moment")
        return json_response(201, _dump(schema, value))


_SPECS: dict[str, dict[str, Any]] = {}


def _spec(service_cls: type) -> dict[str, Any]:
    """The document, made once per service class (it only changes with the code)."""
    key = f"{service_cls.__module__}.{service_cls.__qualname__}"
    if key not in _SPECS:
        _SPECS[key] = _make_spec(service_cls)
    return _SPECS[key]


def _make_spec(service_cls: type) -> dict[str, Any]:
    return openapi_spec(
        service_cls,
        title="lavoro ledger",
        version="1",
        description="The books of PN Metro Plus project CUP F31D23000140007: programmed, "
        "admitted, legally binding and disbursed, every euro traced to its cause.",
    )
