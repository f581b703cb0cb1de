"""The calls service: metropolitan calls for self-employment and social innovation over HTTP, and
the saga with the ledger (docs/events.md, flows F1 and F2).

Wiring only: each command loads the aggregate it needs, asks the domain (domain.py, awards.py)
and appends (flows.py); each read answers from the read models (reads.py). Commands need a bearer
token whose role may `command` and an `Idempotency-Key` (the same key again returns the first
answer and appends nothing); reads need a role that may `read`; the OpenAPI document is public.

- The relay publishes the log to `calls.events` and the public types to `lavoro.public`.
- `@handles` consumes the ledger's answers: `commitment_recorded` -> `grant_confirmed`,
  `commitment_rejected` -> `grant_suspended` and the award's money back to the call,
  `payment_disbursed` -> `tranche_paid`, `payment_rejected` -> `tranche_rejected`.
- A suspension never awards the next applicant by itself: an operator does, with
  `POST /calls/<id>/awards/next` (a rejection for lack of room on the budget line would
  otherwise cascade down the whole ranking, each award refused in turn).
- A timer (`CALLS_AWARD_CHECK_INTERVAL` s, default 300) raises `award_answer_overdue` for an award
  still `granted` `CALLS_AWARD_ANSWER_TIMEOUT` s (default 86400) after it was awarded, by the
  store's clock: an error line in the log and a row in the alerts read model.

Config (services/calls/config.yaml over shared.config.service_config("calls")):
`CALLS_PSEUDONYM_KEY` is the key of applicants' pseudonyms (personal.py); a test that runs the
ledger under a unique name maps it with the chassis's `LAVORO_SOURCES: {"ledger": <name>}`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from nameko.dependency_providers import Config
from nameko.timer import Timer
from werkzeug.wrappers import Request, Response

from shared.consumer import handles
from shared.days import office_day as rome_date
from shared.dependencies import EventStore, Store
from shared.observability import Observable
from shared.openapi import document, openapi_spec
from shared.records import IncomingEvent, NewEvent
from shared.relay import RelayExtension
from shared.schemas import load_input
from shared.web import CommandRequest, command, http, json_response, query

from . import answers, awards, domain, events, flows, outputs, readmodels, reads, schemas
from .personal import PersonalData
from .rules import derived_id

ANSWER_TIMEOUT_KEY = "CALLS_AWARD_ANSWER_TIMEOUT"
CHECK_INTERVAL_KEY = "CALLS_AWARD_CHECK_INTERVAL"
DEFAULT_ANSWER_TIMEOUT = 24 * 3600.0


class AnswerCheck(Timer):
    """A timer whose interval comes from config (`CALLS_AWARD_CHECK_INTERVAL`)."""

    interval: float

    def setup(self) -> None:
        self.interval = float(self.container.config.get(CHECK_INTERVAL_KEY) or self.interval)


def _accepted(outcome: flows.Outcome, status: int = 200) -> Response:
    body: dict[str, Any] = {"events": outcome.types}
    granted = outcome.all("funds_reserved", "award_id")
    ids = ("call_id", "application_id", "public_reference", "tranche_id", "report_id")
    for key in ids if granted else (*ids, "award_id"):
        if (value := outcome.first(key)) is not None:
            body[key] = value
    if granted:
        body["awards"] = granted  # a ranking or the next award: every award it made
    return json_response(status, outputs.Accepted().dump(body))


class CallsService(Observable):
    name = "calls"
    # What a worker finds at `self.store` is the provider's narrow Store, not the provider.
    store: Store = EventStore(  # type: ignore[assignment]
        projections=readmodels.PROJECTIONS, upcasters=events.upcasters
    )
    relay = RelayExtension(public=events.PUBLIC)
    people = PersonalData()
    config = Config()

    def _today(self) -> dt.date:
        return rome_date(self.store.clock.now())

    def _run(self, cmd: CommandRequest, plan: Any, status: int = 200) -> Response:
        return _accepted(flows.execute(self.store, plan, command_id=cmd.id, serial=True), status)

    def _on_call(
        self, cmd: CommandRequest, call_id: str, decide: Any, status: int = 200
    ) -> Response:
        return self._run(cmd, flows.on_call(self.store, call_id, decide), status)

    def _on_award(
        self, cmd: CommandRequest, award_id: str, decide: Any, status: int = 200
    ) -> Response:
        return self._run(cmd, flows.on_award(self.store, award_id, decide), status)

    # -- calls ----------------------------------------------------------------------------------

    @command("POST", "/calls", schema=schemas.DraftCallIn)
    @document(status=201, response=outputs.Accepted, tags=("calls",))
    def draft_call(self, cmd: CommandRequest) -> Response:
        """Draft a call: kind, budget line and budget, window (Bologna dates), criteria and
        weights, priority bonuses, cap, maximum share of eligible cost, tie-break."""
        call_id = derived_id("call", cmd.id)
        plan = flows.on_call(
            self.store, call_id, lambda c: domain.draft_call(c, call_id, cmd.data), new=True
        )
        return self._run(cmd, plan, 201)

    @command("POST", "/calls/<call_id>/publish")
    @document(response=outputs.Accepted, tags=("calls",))
    def publish_call(self, cmd: CommandRequest, call_id: str) -> Response:
        """Publish a drafted call (before its window ends)."""
        return self._on_call(cmd, call_id, lambda c: domain.publish_call(c, self.store.clock.now()))

    @command("POST", "/calls/<call_id>/close", schema=schemas.CloseCallIn)
    @document(response=outputs.Accepted, tags=("calls",))
    def close_call(self, cmd: CommandRequest, call_id: str) -> Response:
        """Close a published call: once its window has ended, or earlier ("chiusura anticipata",
        e.g. the resources are exhausted) with a `reason`."""
        reason = cmd.data["reason"]
        return self._on_call(
            cmd, call_id, lambda c: domain.close_call(c, self.store.clock.now(), reason)
        )

    @command("POST", "/calls/<call_id>/evaluation/complete")
    @document(response=outputs.Accepted, tags=("calls",))
    def complete_evaluation(self, cmd: CommandRequest, call_id: str) -> Response:
        """End the evaluation: every application found inadmissible or fully scored."""
        return self._on_call(cmd, call_id, domain.complete_evaluation)

    @command("POST", "/calls/<call_id>/ranking/approve")
    @document(response=outputs.Accepted, tags=("ranking",))
    def approve_ranking(self, cmd: CommandRequest, call_id: str) -> Response:
        """Approve the ranking and award in its order while the budget lasts (each award goes
        to the ledger as `grant_awarded`)."""
        return self._on_call(cmd, call_id, lambda c: domain.approve_ranking(c, self._today()))

    @command("POST", "/calls/<call_id>/awards/next")
    @document(response=outputs.Accepted, tags=("ranking",))
    def award_next(self, cmd: CommandRequest, call_id: str) -> Response:
        """Award the best-placed applicant not yet funded, if it fits the available budget (after
        a suspension released money)."""
        return self._on_call(cmd, call_id, lambda c: domain.award_next(c, self._today()))

    # -- applications ---------------------------------------------------------------------------

    @command("POST", "/calls/<call_id>/applications", schema=schemas.SubmitApplicationIn)
    @document(status=201, response=outputs.Accepted, tags=("applications",))
    def submit_application(self, cmd: CommandRequest, call_id: str) -> Response:
        """Submit an application while the call is open; one per applicant and call."""
        applicant, key = self.people.identify(cmd.data["applicant"])
        application = {**cmd.data, "applicant": applicant}

        def decide(call: domain.Call) -> list[NewEvent]:
            submitted = domain.submit_application(
                call, application, key=key, now=self.store.clock.now()
            )
            return [self._sealed(event) for event in submitted]

        return self._on_call(cmd, call_id, decide, 201)

    def _sealed(self, event: NewEvent) -> NewEvent:
        person_id = event.data["applicant"].get("person_id")
        if not person_id:
            return event
        data = self.people.seal(events.ApplicationSubmittedV1(), event.data, person_id)
        return dataclasses.replace(event, data=data)

    @command("POST", "/calls/<call_id>/applications/<application_id>/admit")
    @document(response=outputs.Accepted, tags=("applications",))
    def admit(self, cmd: CommandRequest, call_id: str, application_id: str) -> Response:
        """Find a submitted application admissible."""
        return self._on_call(cmd, call_id, lambda c: domain.admit(c, application_id))

    @command(
        "POST", "/calls/<call_id>/applications/<application_id>/reject", schema=schemas.RejectIn
    )
    @document(response=outputs.Accepted, tags=("applications",))
    def reject(self, cmd: CommandRequest, call_id: str, application_id: str) -> Response:
        """Find a submitted application inadmissible, with the reason."""
        d = cmd.data
        return self._on_call(
            cmd, call_id, lambda c: domain.reject(c, application_id, d["reason"], d["note"])
        )

    @command(
        "POST",
        "/calls/<call_id>/applications/<application_id>/accompaniment",
        schema=schemas.AccompanimentIn,
    )
    @document(response=outputs.Accepted, tags=("applications",))
    def start_accompaniment(
        self, cmd: CommandRequest, call_id: str, application_id: str
    ) -> Response:
        """Start accompaniment (co-design) of an admitted application."""
        day = cmd.data["started_on"] or self._today()
        return self._on_call(
            cmd, call_id, lambda c: domain.start_accompaniment(c, application_id, day)
        )

    @command(
        "POST",
        "/calls/<call_id>/applications/<application_id>/codesign-sessions",
        schema=schemas.CodesignSessionIn,
    )
    @document(response=outputs.Accepted, tags=("applications",))
    def hold_codesign_session(
        self, cmd: CommandRequest, call_id: str, application_id: str
    ) -> Response:
        """Record a co-design session held with an accompanied applicant."""
        d = cmd.data

        def decide(call: domain.Call) -> list[NewEvent]:
            return domain.hold_codesign_session(
                call, application_id, d["held_on"], d["topic"], d["notes"]
            )

        return self._on_call(cmd, call_id, decide)

    @command(
        "POST", "/calls/<call_id>/applications/<application_id>/scores", schema=schemas.ScoreIn
    )
    @document(response=outputs.Accepted, tags=("applications",))
    def score(self, cmd: CommandRequest, call_id: str, application_id: str) -> Response:
        """Score an admitted application on one or more criteria (the caller is the evaluator)."""
        scores = cmd.data["scores"]
        return self._on_call(
            cmd, call_id, lambda c: domain.score(c, application_id, scores, cmd.actor)
        )

    # -- awards ---------------------------------------------------------------------------------

    @command("POST", "/awards/<award_id>/tranches", schema=schemas.TrancheIn)
    @document(status=201, response=outputs.Accepted, tags=("awards",))
    def request_tranche(self, cmd: CommandRequest, award_id: str) -> Response:
        """Request a tranche of a confirmed award (advance, interim or balance), never beyond it."""
        d = {**cmd.data, "claim_date": cmd.data["claim_date"] or self._today()}
        return self._on_award(cmd, award_id, lambda a: awards.request_tranche(a, **d), 201)

    @command("POST", "/awards/<award_id>/expenditure-reports", schema=schemas.ExpenditureIn)
    @document(status=201, response=outputs.Accepted, tags=("awards",))
    def report_expenditure(self, cmd: CommandRequest, award_id: str) -> Response:
        """Report expenditure against a confirmed award."""
        d = {**cmd.data, "reported_on": self._today()}
        return self._on_award(cmd, award_id, lambda a: awards.report_expenditure(a, **d), 201)

    @command("POST", "/awards/<award_id>/revoke", schema=schemas.RevokeIn)
    @document(response=outputs.Accepted, tags=("awards",))
    def revoke(self, cmd: CommandRequest, award_id: str) -> Response:
        """Revoke a confirmed award (its money stays committed in the ledger until reduced)."""
        reason, day = cmd.data["reason"], self._today()
        return self._on_award(
            cmd, award_id, lambda a: awards.revoke(a, reason=reason, revoked_on=day)
        )

    # -- the ledger's answers and the timeout ---------------------------------------------------

    @handles(
        "ledger",
        "commitment_recorded",
        "commitment_rejected",
        "payment_disbursed",
        "payment_rejected",
    )
    def on_ledger_answer(self, event: IncomingEvent) -> None:
        if not answers.answers_calls(event.data):
            return
        answer = answers.answer(event.type, event.schema_version, event.data)
        flows.react(self.store, event.type, answer)

    @AnswerCheck.decorator(interval=300)
    def check_answers(self) -> list[str]:
        """Alert on awards still waiting for the ledger's answer past the timeout."""
        seconds = float(self.config.get(ANSWER_TIMEOUT_KEY) or DEFAULT_ANSWER_TIMEOUT)
        return flows.flag_overdue_awards(self.store, dt.timedelta(seconds=seconds))

    # -- reads ----------------------------------------------------------------------------------

    @query("/calls")
    @document(response=outputs.CallsOut, tags=("calls",))
    def list_calls(self, request: Request) -> Any:
        """Every call with its state, budget, reserved and available money."""
        return outputs.CallsOut().dump(reads.list_calls(self.store.query))

    @query("/calls/<call_id>")
    @document(response=outputs.CallOut, tags=("calls",))
    def get_call(self, request: Request, call_id: str) -> Any:
        """One call: its terms, state and available budget."""
        return outputs.CallOut().dump(reads.call(self.store.query, call_id))

    @query("/calls/<call_id>/applications")
    @document(
        response=outputs.ApplicationsOut, query=schemas.ApplicationsQuery, tags=("applications",)
    )
    def list_applications(self, request: Request, call_id: str) -> Any:
        """A call's applications, optionally in one state."""
        state = load_input(schemas.ApplicationsQuery(), request.args.to_dict()).get("state")
        return outputs.ApplicationsOut().dump(
            reads.list_applications(self.store.query, call_id, state)
        )

    @query("/calls/<call_id>/applications/<application_id>")
    @document(response=outputs.ApplicationDetailOut, tags=("applications",))
    def get_application(self, request: Request, call_id: str, application_id: str) -> Any:
        """One application with its applicant (personal data opened for the reader)."""
        found = reads.application(self.store.query, call_id, application_id)
        if found["applicant"] is not None:
            found["applicant"] = self.people.open(events.ApplicantV1(), found["applicant"])
        return outputs.ApplicationDetailOut().dump(found)

    @query("/calls/<call_id>/ranking")
    @document(response=outputs.RankingOut, tags=("ranking",))
    def get_ranking(self, request: Request, call_id: str) -> Any:
        """The approved ranking: scores per criterion, bonus, total, award and its state."""
        return outputs.RankingOut().dump(reads.ranking(self.store.query, call_id))

    @query("/calls/<call_id>/ranking.csv")
    @document(media_type="text/csv", tags=("ranking",))
    def ranking_csv(self, request: Request, call_id: str) -> Response:
        """The published ranking as CSV: public references only, never names."""
        text = reads.ranking_csv(self.store.query, call_id)
        disposition = f'attachment; filename="ranking-{call_id}.csv"'
        return Response(text, mimetype="text/csv", headers={"Content-Disposition": disposition})

    @query("/awards")
    @document(response=outputs.AwardsOut, query=schemas.AwardsQuery, tags=("awards",))
    def list_awards(self, request: Request) -> Any:
        """Awards with their tranches and expenditure reports, by call and state."""
        args = load_input(schemas.AwardsQuery(), request.args.to_dict())
        found = reads.list_awards(self.store.query, args.get("call_id"), args.get("status"))
        return outputs.AwardsOut().dump(found)

    @query("/awards/<award_id>")
    @document(response=outputs.AwardOut, tags=("awards",))
    def get_award(self, request: Request, award_id: str) -> Any:
        """One award with its tranches and expenditure reports."""
        return outputs.AwardOut().dump(reads.award(self.store.query, award_id))

    @query("/alerts")
    @document(response=outputs.AlertsOut, query=schemas.AlertsQuery, tags=("alerts",))
    def list_alerts(self, request: Request) -> Any:
        """Awards left without the ledger's answer past the timeout."""
        only_open = load_input(schemas.AlertsQuery(), request.args.to_dict()).get("open")
        return outputs.AlertsOut().dump(reads.list_alerts(self.store.query, only_open))

    @http("GET", "/openapi.json", public=True)
    @document(tags=("meta",))
    def openapi(self, request: Request) -> Any:
        """This API as an OpenAPI 3 document."""
        return _spec(type(self))


_specs: dict[type, dict[str, Any]] = {}


def _spec(service_cls: type) -> dict[str, Any]:
    """Built once per class: the document never changes while the service runs."""
    if service_cls not in _specs:
        _specs[service_cls] = _build_spec(service_cls)
    return _specs[service_cls]


def _build_spec(service_cls: type) -> dict[str, Any]:
    return openapi_spec(
        service_cls,
        title="lavoro calls",
        version="1",
        description="Metropolitan calls for self-employment and social innovation (PN Metro "
        "Plus BO4.4.8.1.a): applications, evaluation, the ranking and the awards it funds.",
    )
