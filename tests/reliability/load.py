"""The load: calls run from draft to paid tranches through the services' HTTP APIs, many at once,
as the offices would, and the client a careful operator's tool is.

Each call has a project of its own in the ledger (its own CUP) whose labour-policies line has
room for `room` awards of 8,000.00; the call takes `applications` applicants, closes early,
ranks them and awards all of them, so the ledger confirms `room` awards and refuses the rest,
whose money goes back to the call; each confirmed award then gets its `tranches`, which the
ledger pays. So the books it must end with are known to the cent (`Expected`).

The client retries a command with the same Idempotency-Key after a refused or broken connection
(the service is being killed), a 5xx (its database session was ended) or a 409 for a busy
stream, until a deadline: the services promise that a retry never doubles anything, and the
checks hold them to it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import eventlet
import requests

from shared.clock import SystemClock
from shared.days import office_day
from tests.helpers import wait_for
from tests.kit.http import OPERATOR

AWARD = Decimal("8000.00")
LINE = "labour_policies"
RETRY_FOR = 120.0  # seconds a command is retried before the load gives up on it
WAIT_FOR_ANSWERS = 240.0  # seconds for the ledger's answers to a call's awards
Base = Callable[[], str]  # the base URL of a service's replica to send the next request to


class Refused(AssertionError):
    """A command the services refused for good (a 4xx that is not a busy stream)."""


@dataclasses.dataclass
class Tally:
    commands: int = 0  # acknowledged (2xx), counted once however many attempts it took
    repeated: int = 0  # of those, answered as a repeat of an earlier attempt that had landed
    retries: int = 0
    statuses: Counter[str] = dataclasses.field(default_factory=Counter)
    seconds: Counter[str] = dataclasses.field(default_factory=Counter)  # by what the path does
    counts: Counter[str] = dataclasses.field(default_factory=Counter)


class Client:
    """HTTP with the operator's token and the retries described above."""

    def __init__(self, tally: Tally | None = None) -> None:
        self.tally = tally or Tally()
        self._sessions: dict[int, requests.Session] = {}

    def _session(self) -> requests.Session:
        # One session (connection pool) per green thread: requests' pools are not shared safely.
        key = id(eventlet.getcurrent())
        if key not in self._sessions:
            self._sessions[key] = requests.Session()
        return self._sessions[key]

    def command(self, base: Base, path: str, body: Any, key: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {OPERATOR}", "Idempotency-Key": key}
        deadline = eventlet.hubs.get_hub().clock() + RETRY_FOR
        delay = 0.05
        what = path.rstrip("/").rsplit("/", 1)[-1]
        started = eventlet.hubs.get_hub().clock()
        while True:
            try:
                response = self._session().post(
                    base() + path, json=body, headers=headers, timeout=30
                )
            except requests.RequestException as exc:
                status, detail = "unreachable", str(exc)
            else:
                status, detail = str(response.status_code), response.text
                if response.status_code in (200, 201):
                    reply = response.json()
                    self.tally.commands += 1
                    self.tally.repeated += bool(reply.get("repeated"))
                    self.tally.statuses[status] += 1
                    self.tally.seconds[what] += eventlet.hubs.get_hub().clock() - started
                    self.tally.counts[what] += 1
                    return reply
                if not _worth_retrying(response):
                    self.tally.statuses[status] += 1
                    raise Refused(f"POST {path} -> {status}: {detail}")
            self.tally.statuses[status] += 1
            self.tally.retries += 1
            if eventlet.hubs.get_hub().clock() > deadline:
                raise AssertionError(f"POST {path} still failing after {RETRY_FOR}s: {detail}")
            eventlet.sleep(delay)
            delay = min(delay * 2, 1.0)

    def read(self, base: Base, path: str, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {OPERATOR}"}
        deadline = eventlet.hubs.get_hub().clock() + RETRY_FOR
        while True:
            try:
                response = self._session().get(
                    base() + path, params=params, headers=headers, timeout=30
                )
                if response.status_code == 200:
                    return response.json()
                detail = f"{response.status_code}: {response.text}"
                if response.status_code < 500:
                    raise AssertionError(f"GET {path} -> {detail}")
            except requests.RequestException as exc:
                detail = str(exc)
            if eventlet.hubs.get_hub().clock() > deadline:
                raise AssertionError(f"GET {path} still failing after {RETRY_FOR}s: {detail}")
            eventlet.sleep(0.2)


def _worth_retrying(response: requests.Response) -> bool:
    if response.status_code >= 500:
        return True
    if response.status_code == 409:
        return response.json().get("error") == "concurrency_conflict"
    return False


# -- what a call is made of ------------------------------------------------------------------------


def today() -> dt.date:
    return office_day(SystemClock().now())


def call_body(n: int, cup: str, applications: int) -> dict[str, Any]:
    opens = today()
    return {
        "title": f"Autoimpiego, prova di carico {n}",
        "reference": f"AVV-REL-{n:03d}",
        "kind": "self_employment",
        "budget_line": LINE,
        "project_cup": cup,
        "budget": str(AWARD * applications),
        "opens_on": opens.isoformat(),
        "closes_on": (opens + dt.timedelta(days=30)).isoformat(),
        "criteria": [
            {"name": "sustainability", "weight": 40, "max_score": 10},
            {"name": "jobs", "weight": 30, "max_score": 10},
            {"name": "social_impact", "weight": 30, "max_score": 5},
        ],
        "bonuses": {"peripheral_area": 3, "women": 2},
        "award_cap": str(AWARD),
        "max_share": "0.80",
        "tie_break": ["social_impact"],
    }


def application_body(n: int) -> dict[str, Any]:
    return {
        "applicant": {
            "kind": "person",
            "person": {"name": f"Persona Numero{n}", "tax_code": f"RSSMRA80A01A{n:03d}X"},
        },
        "project_title": f"Progetto {n}",
        "business_plan": {
            "eligible_cost": "10000.00",
            "requested_amount": str(AWARD),
            "jobs_created": 1,
        },
    }


def scores(n: int) -> dict[str, int]:
    return {"sustainability": 10 - n % 7, "jobs": 10 - n % 5, "social_impact": 5 - n % 3}


def project_body(cup: str, amount: Decimal) -> dict[str, Any]:
    return {
        "cup": cup,
        "local_code": "BO4.4.8.1.a",
        "title": "Piano per il lavoro, prova di carico",
        "start_date": "2023-12-15",
        "plan_reference": "PO 2024",
        "budget_lines": [{"budget_line": LINE, "amount": str(amount)}],
    }


def admission_body(cup: str, amount: Decimal) -> dict[str, Any]:
    return {
        "act_reference": f"DEC {cup}",
        "adopted_on": "2024-02-29",
        "budget_lines": [{"budget_line": LINE, "amount": str(amount)}],
    }


TRANCHES = (
    ("advance", "2000.00"),
    ("interim", "1500.00"),
    ("interim", "1500.00"),
    ("interim", "1000.00"),
    ("balance", "1000.00"),
)


@dataclasses.dataclass
class Call:
    """One call of the load, and what became of it."""

    n: int
    cup: str
    applications: int
    room: int
    call_id: str | None = None
    awards: list[str] = dataclasses.field(default_factory=list)
    confirmed: list[str] = dataclasses.field(default_factory=list)
    tranches: list[str] = dataclasses.field(default_factory=list)
    replies: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Expected:
    """The books the load must leave, whatever broke on the way."""

    calls: list[Call]
    tranches: tuple[tuple[str, str], ...]

    @property
    def paid_per_award(self) -> Decimal:
        return sum((Decimal(amount) for _, amount in self.tranches), Decimal(0))


class Load:
    """`calls` calls of `applications` applicants each, `suspended` of whose awards find no room
    in the ledger, run `parallel` at a time. `calls_at` / `ledger_at` give the replica to send
    each request to."""

    def __init__(
        self,
        client: Client,
        calls_at: Base,
        ledger_at: Base,
        *,
        calls: int,
        applications: int,
        suspended: int,
        parallel: int = 12,
        tranches_at_once: int = 4,
        tranches: tuple[tuple[str, str], ...] = TRANCHES,
    ) -> None:
        self.client = client
        self.calls_at = calls_at
        self.ledger_at = ledger_at
        self.tag = uuid.uuid4().hex[:8]
        self.parallel = parallel
        self.tranches_at_once = tranches_at_once
        self.tranche_plan = tranches
        self.calls = [
            Call(n, "R" + uuid.uuid4().hex[:14].upper(), applications, applications - suspended)
            for n in range(calls)
        ]
        self.done = 0
        self.failures: list[BaseException] = []
        self.aborted: BaseException | None = None

    def abort(self, reason: BaseException) -> None:
        """Stop sending: each call's next command raises `reason` (a fault that went wrong
        fails the scenario now, not after the whole load)."""
        self.aborted = reason

    def estimated_events(self) -> int:
        """At least how many events the load appends to both logs (a call's own events, its
        applications' three, two per award, the answers, four per tranche paid)."""
        total = 0
        for call in self.calls:
            a, r, t = call.applications, call.room, len(self.tranche_plan)
            calls_side = 5 + 3 * a + 2 * a + r + 2 * (a - r) + 2 * t * r
            ledger_side = 2 + a + r + 2 * t * r
            total += calls_side + ledger_side
        return total

    def expected(self) -> Expected:
        return Expected(self.calls, self.tranche_plan)

    def run(self) -> None:
        """Every call, `parallel` at a time; returns once each has had its tranches requested
        (their payments may still be on their way)."""
        pool = eventlet.GreenPool(self.parallel)
        for call in self.calls:
            pool.spawn_n(self._guarded, call)
        pool.waitall()
        if self.aborted is not None:
            raise self.aborted
        if self.failures:
            raise self.failures[0]

    def _guarded(self, call: Call) -> None:
        try:
            self.run_call(call)
        except BaseException as exc:  # reported by run(), after every other call finished
            self.failures.append(exc)
        finally:
            self.done += 1

    def _key(self, *parts: Any) -> str:
        return "-".join(["rel", self.tag, *(str(p) for p in parts)])

    def _calls(self, call: Call, path: str, body: Any, *key: Any) -> dict[str, Any]:
        if self.aborted is not None:
            raise self.aborted
        reply = self.client.command(self.calls_at, path, body, self._key(call.n, *key))
        call.replies.append(("calls", reply))
        return reply

    def run_call(self, call: Call) -> None:
        room = AWARD * call.room
        for path, body, key in (
            ("/projects", project_body(call.cup, room), "project"),
            (f"/projects/{call.cup}/admissions", admission_body(call.cup, room), "admission"),
        ):
            reply = self.client.command(self.ledger_at, path, body, self._key(call.n, key))
            call.replies.append(("ledger", reply))
        call.call_id = self._calls(
            call, "/calls", call_body(call.n, call.cup, call.applications), "draft"
        )["call_id"]
        at = f"/calls/{call.call_id}"
        self._calls(call, f"{at}/publish", None, "publish")
        for n in range(call.applications):
            app = self._calls(call, f"{at}/applications", application_body(n), "apply", n)
            app_at = f"{at}/applications/{app['application_id']}"
            self._calls(call, f"{app_at}/admit", None, "admit", n)
            self._calls(call, f"{app_at}/scores", {"scores": scores(n)}, "score", n)
        self._calls(call, f"{at}/close", {"reason": "fault suite: closed early"}, "close")
        self._calls(call, f"{at}/evaluation/complete", None, "evaluate")
        approved = self._calls(call, f"{at}/ranking/approve", None, "approve")
        call.awards = list(approved.get("award_ids") or [approved["award_id"]])

        def answered() -> list[dict[str, Any]] | None:
            found = self.client.read(self.calls_at, "/awards", call_id=call.call_id)["awards"]
            waiting = [a for a in found if a["status"] == "granted"]
            return None if waiting or len(found) < len(call.awards) else found

        found = wait_for(answered, WAIT_FOR_ANSWERS, f"the ledger's answers to call {call.n}")
        call.confirmed = [a["award_id"] for a in found if a["status"] == "confirmed"]
        # Each award is a stream of its own: their tranches go in parallel, each award's in order.
        pool = eventlet.GreenPool(self.tranches_at_once)
        for award_id in call.confirmed:
            pool.spawn_n(self._tranches, call, award_id)
        pool.waitall()

    def _tranches(self, call: Call, award_id: str) -> None:
        for n, (kind, amount) in enumerate(self.tranche_plan):
            body = {"kind": kind, "amount": amount, "claim_reference": f"CL-{award_id[:8]}-{n}"}
            reply = self._calls(call, f"/awards/{award_id}/tranches", body, "tranche", award_id, n)
            call.tranches.append(reply["tranche_id"])
