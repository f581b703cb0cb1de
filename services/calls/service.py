"""The calls service: metropolitan calls for self-employment and social innovation over HTTP, and
the saga with the ledger (docs/events.md, flows F1 and F2).

Wiring only: each command runs a plan of handlers.py through the chassis's unit of work (which
asks the domain and appends) and answers with the events appended and the ids they name; each
read answers from the read models (queries.py). Commands need a bearer token whose role may
`command` and an `Idempotency-Key` (the same key again returns the first answer and appends
nothing); reads need a role that may `read`; the OpenAPI document is public.

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
`CALLS_PSEUDONYM_KEY` is the key of applicants' pseudonyms (shared.persons); a test that runs the
ledger under a unique name maps it with the chassis's `LAVORO_SOURCES: {"ledger": <name>}`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from nameko.dependency_providers import Config
from nameko.timer import Timer
from werkzeug.wrappers import Request, Response

from shared import unit_of_work
from shared.consumer import handles
from shared.days import office_day
from shared.dependencies import EventStore
from shared.persons import Erasure, PersonalData
from shared.records import IncomingEvent
from shared.relay import RelayExtension
from shared.service import Service
from shared.unit_of_work import Outcome
from shared.web import CommandRequest, QueryRequest, command, query

from . import api, domain, events, handlers, queries, readmodels
from .commands import derived_id
from .domain import awards

ANSWER_TIMEOUT_KEY = "CALLS_AWARD_ANSWER_TIMEOUT"
CHECK_INTERVAL_KEY = "CALLS_AWARD_CHECK_INTERVAL"
DEFAULT_ANSWER_TIMEOUT = 24 * 3600.0


class AnswerCheck(Timer):
    """A timer whose interval comes from config (`CALLS_AWARD_CHECK_INTERVAL`)."""

    interval: float

    def setup(self) -> None:
        self.interval = float(self.container.config.get(CHECK_INTERVAL_KEY) or self.interval)


class CallsService(Erasure, Service):
    name = "calls"
    title = "lavoro calls"
    description = (
        "Metropolitan calls for self-employment and social innovation (PN Metro Plus "
        "BO4.4.8.1.a): applications, evaluation, the ranking and the awards it funds."
    )
    store = EventStore(projections=readmodels.PROJECTIONS, contracts=events.CONTRACTS)
    relay = RelayExtension(public=events.CONTRACTS.public)
    people = PersonalData("CALLS_PSEUDONYM_KEY")
    config = Config()

    def _today(self) -> dt.date:
        return office_day(self.store.clock.now())

    def _run(self, cmd: CommandRequest, plan: unit_of_work.Plan, **named: Any) -> Outcome:
        return unit_of_work.run(self.store, plan, command_id=cmd.id).naming(**named)

    def _on_call(self, cmd: CommandRequest, call_id: str, decide: Any) -> Outcome:
        return self._run(cmd, handlers.on_call(call_id, decide), call_id=call_id)

    def _on_award(self, cmd: CommandRequest, award_id: str, decide: Any) -> Outcome:
        return self._run(cmd, handlers.on_award(award_id, decide), award_id=award_id)

    # -- calls ----------------------------------------------------------------------------------

    @command("POST", "/calls", schema=api.DraftCallIn, status=201, tags=("calls",))
    def draft_call(self, cmd: CommandRequest) -> Outcome:
        """Draft a call: kind, budget line and budget, window (Bologna dates), criteria and
        weights, priority bonuses, cap, maximum share of eligible cost, tie-break."""
        call_id = derived_id("call", cmd.id)
        plan = handlers.on_call(
            call_id, lambda c: domain.draft_call(c, call_id, cmd.data), new=True
        )
        return self._run(cmd, plan, call_id=call_id)

    @command("POST", "/calls/<call_id>/publish", tags=("calls",))
    def publish_call(self, cmd: CommandRequest, call_id: str) -> Outcome:
        """Publish a drafted call (before its window ends)."""
        return self._on_call(cmd, call_id, lambda c: domain.publish_call(c, self.store.clock.now()))

    @command("POST", "/calls/<call_id>/close", schema=api.CloseCallIn, tags=("calls",))
    def close_call(self, cmd: CommandRequest, call_id: str) -> Outcome:
        """Close a published call: once its window has ended, or earlier ("chiusura anticipata",
        e.g. the resources are exhausted) with a `reason`."""
        reason = cmd.data.reason
        return self._on_call(
            cmd, call_id, lambda c: domain.close_call(c, self.store.clock.now(), reason)
        )

    @command("POST", "/calls/<call_id>/evaluation/complete", tags=("calls",))
    def complete_evaluation(self, cmd: CommandRequest, call_id: str) -> Outcome:
        """End the evaluation: every application found inadmissible or fully scored."""
        return self._on_call(cmd, call_id, domain.complete_evaluation)

    @command("POST", "/calls/<call_id>/ranking/approve", tags=("ranking",))
    def approve_ranking(self, cmd: CommandRequest, call_id: str) -> Outcome:
        """Approve the ranking and award in its order while the budget lasts (each award goes
        to the ledger as `grant_awarded`)."""
        return self._on_call(cmd, call_id, lambda c: domain.approve_ranking(c, self._today()))

    @command("POST", "/calls/<call_id>/awards/next", tags=("ranking",))
    def award_next(self, cmd: CommandRequest, call_id: str) -> Outcome:
        """Award the best-placed applicant not yet funded, if it fits the available budget (after
        a suspension released money)."""
        return self._on_call(cmd, call_id, lambda c: domain.award_next(c, self._today()))

    # -- applications ---------------------------------------------------------------------------

    @command(
        "POST",
        "/calls/<call_id>/applications",
        schema=api.SubmitApplicationIn,
        status=201,
        tags=("applications",),
    )
    def submit_application(self, cmd: CommandRequest, call_id: str) -> Outcome:
        """Submit an application while the call is open; one per applicant and call."""
        person = cmd.data.applicant.get("person")
        person_id = self.people.person_id(person["tax_code"]) if person else None
        applicant, key = domain.identified(cmd.data.applicant, person_id)
        application = dataclasses.replace(cmd.data, applicant=applicant)
        now = self.store.clock.now()
        return self._on_call(
            cmd, call_id, lambda c: domain.submit_application(c, application, key=key, now=now)
        )

    @command("POST", "/calls/<call_id>/applications/<application_id>/admit", tags=("applications",))
    def admit(self, cmd: CommandRequest, call_id: str, application_id: str) -> Outcome:
        """Find a submitted application admissible."""
        return self._on_call(cmd, call_id, lambda c: domain.admit(c, application_id))

    @command(
        "POST",
        "/calls/<call_id>/applications/<application_id>/reject",
        schema=api.RejectIn,
        tags=("applications",),
    )
    def reject(self, cmd: CommandRequest, call_id: str, application_id: str) -> Outcome:
        """Find a submitted application inadmissible, with the reason."""
        d = cmd.data
        return self._on_call(
            cmd, call_id, lambda c: domain.reject(c, application_id, d.reason, d.note)
        )

    @command(
        "POST",
        "/calls/<call_id>/applications/<application_id>/accompaniment",
        schema=api.AccompanimentIn,
        tags=("applications",),
    )
    def start_accompaniment(
        self, cmd: CommandRequest, call_id: str, application_id: str
    ) -> Outcome:
        """Start accompaniment (co-design) of an admitted application."""
        day = cmd.data.started_on or self._today()
        return self._on_call(
            cmd, call_id, lambda c: domain.start_accompaniment(c, application_id, day)
        )

    @command(
        "POST",
        "/calls/<call_id>/applications/<application_id>/codesign-sessions",
        schema=api.CodesignSessionIn,
        tags=("applications",),
    )
    def hold_codesign_session(
        self, cmd: CommandRequest, call_id: str, application_id: str
    ) -> Outcome:
        """Record a co-design session held with an accompanied applicant."""
        d = cmd.data
        return self._on_call(
            cmd,
            call_id,
            lambda c: domain.hold_codesign_session(c, application_id, d.held_on, d.topic, d.notes),
        )

    @command(
        "POST",
        "/calls/<call_id>/applications/<application_id>/scores",
        schema=api.ScoreIn,
        tags=("applications",),
    )
    def score(self, cmd: CommandRequest, call_id: str, application_id: str) -> Outcome:
        """Score an admitted application on one or more criteria (the caller is the evaluator)."""
        scores = cmd.data.scores
        return self._on_call(
            cmd, call_id, lambda c: domain.score(c, application_id, scores, cmd.actor)
        )

    # -- awards ---------------------------------------------------------------------------------

    @command(
        "POST",
        "/awards/<award_id>/tranches",
        schema=api.TrancheIn,
        status=201,
        tags=("awards",),
    )
    def request_tranche(self, cmd: CommandRequest, award_id: str) -> Outcome:
        """Request a tranche of a confirmed award (advance, interim or balance), never beyond it."""
        today = self._today()
        return self._on_award(cmd, award_id, lambda a: awards.request_tranche(a, cmd.data, today))

    @command(
        "POST",
        "/awards/<award_id>/expenditure-reports",
        schema=api.ExpenditureIn,
        status=201,
        tags=("awards",),
    )
    def report_expenditure(self, cmd: CommandRequest, award_id: str) -> Outcome:
        """Report expenditure against a confirmed award."""
        today = self._today()
        return self._on_award(
            cmd, award_id, lambda a: awards.report_expenditure(a, cmd.data, today)
        )

    @command("POST", "/awards/<award_id>/revoke", schema=api.RevokeIn, tags=("awards",))
    def revoke(self, cmd: CommandRequest, award_id: str) -> Outcome:
        """Revoke a confirmed award (its money stays committed in the ledger until reduced)."""
        reason, day = cmd.data.reason, self._today()
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
    def on_ledger_answer(self, event: IncomingEvent, message: dict[str, Any]) -> None:
        if not events.answers_calls(message):
            return
        handlers.apply_answer(self.store, event.type, events.wire(message))

    @AnswerCheck.decorator(interval=300)
    def check_answers(self) -> list[str]:
        """Alert on awards still waiting for the ledger's answer past the timeout."""
        seconds = float(self.config.get(ANSWER_TIMEOUT_KEY) or DEFAULT_ANSWER_TIMEOUT)
        timeout, now = dt.timedelta(seconds=seconds), self.store.clock.now()
        waiting = queries.waiting_awards(self.store.query, now - timeout)
        return handlers.flag_overdue(self.store, waiting, now, timeout)

    # -- reads ----------------------------------------------------------------------------------

    @query("/calls", response=api.CallsOut, tags=("calls",))
    def list_calls(self, request: Request) -> Any:
        """Every call with its state, budget, reserved and available money."""
        return queries.list_calls(self.store.query)

    @query("/calls/<call_id>", response=api.CallOut, tags=("calls",))
    def get_call(self, request: Request, call_id: str) -> Any:
        """One call: its terms, state and available budget."""
        return queries.call(self.store.query, call_id)

    @query(
        "/calls/<call_id>/applications",
        response=api.ApplicationsOut,
        args=api.ApplicationsQuery,
        tags=("applications",),
    )
    def list_applications(self, q: QueryRequest, call_id: str) -> Any:
        """A call's applications, optionally in one state."""
        return queries.list_applications(self.store.query, call_id, q.args.get("state"))

    @query(
        "/calls/<call_id>/applications/<application_id>",
        response=api.ApplicationDetailOut,
        tags=("applications",),
    )
    def get_application(self, request: Request, call_id: str, application_id: str) -> Any:
        """One application with its applicant (personal data opened for the reader)."""
        found = queries.application(self.store.query, call_id, application_id)
        if found["applicant"] is not None:
            found["applicant"] = self.people.open(events.ApplicantV1(), found["applicant"])
        return found

    @query("/calls/<call_id>/ranking", response=api.RankingOut, tags=("ranking",))
    def get_ranking(self, request: Request, call_id: str) -> Any:
        """The approved ranking: scores per criterion, bonus, total, award and its state."""
        return queries.ranking(self.store.query, call_id)

    @query("/calls/<call_id>/ranking.csv", media_type="text/csv", tags=("ranking",))
    def ranking_csv(self, request: Request, call_id: str) -> Response:
        """The published ranking as CSV: public references only, never names."""
        text = queries.ranking_csv(self.store.query, call_id)
        disposition = f'attachment; filename="ranking-{call_id}.csv"'
        return Response(text, mimetype="text/csv", headers={"Content-Disposition": disposition})

    @query("/awards", response=api.AwardsOut, args=api.AwardsQuery, tags=("awards",))
    def list_awards(self, q: QueryRequest) -> Any:
        """Awards with their tranches and expenditure reports, by call and state."""
        return queries.list_awards(self.store.query, q.args.get("call_id"), q.args.get("status"))

    @query("/awards/<award_id>", response=api.AwardOut, tags=("awards",))
    def get_award(self, request: Request, award_id: str) -> Any:
        """One award with its tranches and expenditure reports."""
        return queries.award(self.store.query, award_id)

    @query("/alerts", response=api.AlertsOut, args=api.AlertsQuery, tags=("alerts",))
    def list_alerts(self, q: QueryRequest) -> Any:
        """Awards left without the ledger's answer past the timeout."""
        return queries.list_alerts(self.store.query, q.args.get("open"))
