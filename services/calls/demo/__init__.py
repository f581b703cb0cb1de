"""The calls service's part of `lavoro demo`: a self-employment call and a social-innovation call
of the programme (CUP F31D23000140007), driven through the calls service's HTTP API.

In order, after the ledger's steps (the books the awards go to):

1. both calls drafted and published, with applications from persons (personal data, sealed by
   the calls service) and from third-sector bodies and informal groups; the calls closed early by
   the office, with a reason (below); applications found admissible or not, accompanied with
   co-design sessions, scored;
2. the rankings approved, one call after the other: each award goes to the ledger as
   `grant_awarded` and comes back confirmed (flow F1). The social-innovation call makes ten
   awards of 8,000.00 where the labour-policies line has room for nine: whichever of them reaches
   the ledger last is refused (`line_lacks_room`), suspended, and its money released to the call.
   The figures do not depend on which one: the ledger answers awards of different streams in
   parallel, so the demo waits for every answer and reads which awards were confirmed;
3. advances requested on the first confirmed awards of each call, paid by the ledger (flow F2).

It ends on a line per call: its applications, its awards by status, what is left of its budget
and what was paid in advances. The calls and their applicants are data, in data.py.

**Early closure.** A call takes applications only inside its window (Bologna days). The demo runs
on the real clock against a plain `lavoro run`: it drafts both calls with a window of
`WINDOW_DAYS` days from today, takes the applications, then closes each call before its window
ends, which the calls service allows with a reason ("chiusura anticipata", as Italian offices do
when the resources are exhausted). Its keys do not depend on the day, so a run on another day
replays the same commands; a close the service already made counts as done.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any

from shared.demo import Check, Command, Contribution, Demo, DemoError, Outcome, Step, euros, key

from .data import DEMO_CALLS, DemoCall

CLOSE_REASON = "Demo: applications collected, closed early by the office"
CLOSED = ("closed", "evaluated", "ranking_approved")  # a call's states once it was closed
CONFIRMED = ("confirmed", "closed")  # an award's states once the ledger confirmed it
TRANCHES = "calls.tranches"  # the demo's note of the advances it requested: (award, tranche)


# -- the steps ------------------------------------------------------------------------------------


def awards(demo: Demo, ref: str) -> list[dict[str, Any]]:
    """The awards of the call the demo drafted as `ref`, in ranking order."""
    found = demo.api("calls").get("/awards", call_id=demo.fill("{" + ref + "}"))["awards"]
    return sorted(found, key=lambda award: award["position"])


@dataclasses.dataclass(frozen=True)
class AwaitAwards:
    """Wait until the ledger has answered every award of the call; so many must be confirmed
    and so many suspended."""

    label: str
    call: str
    confirmed: int
    suspended: int

    def run(self, demo: Demo) -> None:
        found = demo.wait(
            f"the ledger's answers to the awards of {self.call}",
            lambda: (
                (found := awards(demo, self.call))
                and all(a["status"] != "granted" for a in found)
                and found
            ),
        )
        confirmed = sum(a["status"] in CONFIRMED for a in found)
        suspended = sum(a["status"] == "suspended" for a in found)
        if (confirmed, suspended) != (self.confirmed, self.suspended):
            raise DemoError(
                f"{self.call}: {confirmed} award(s) confirmed and {suspended} suspended where the "
                f"demo expects {self.confirmed} and {self.suspended}: the labour_policies line "
                "had other room than the seed leaves (other books in this database?)"
            )


@dataclasses.dataclass(frozen=True)
class Advance:
    """Request an advance on the `nth` confirmed award of the call, in ranking order."""

    label: str
    call: str
    nth: int
    amount: str
    claim_date: str

    def run(self, demo: Demo) -> None:
        confirmed = [a for a in awards(demo, self.call) if a["status"] in CONFIRMED]
        if len(confirmed) <= self.nth:
            raise DemoError(f"{self.call}: no confirmed award number {self.nth + 1}")
        award = confirmed[self.nth]
        body = {
            "kind": "advance",
            "amount": self.amount,
            "claim_reference": f"{award['reference']}-ANT",
            "claim_date": self.claim_date,
        }
        command_key = key("calls", "tranche", award["award_id"], "advance")
        path = f"/awards/{award['award_id']}/tranches"
        _status, answer = demo.api("calls").post(path, body, command_key)
        demo.note(TRANCHES, (award["award_id"], answer["tranche_id"]))


@dataclasses.dataclass(frozen=True)
class AwaitPaid:
    """Wait until the ledger has paid every tranche the demo requested."""

    label: str

    def run(self, demo: Demo) -> None:
        api = demo.api("calls")

        def tranche_states() -> list[str]:
            states = []
            for award_id, tranche_id in demo.noted(TRANCHES):
                award = api.get(f"/awards/{award_id}")
                states += [t["status"] for t in award["tranches"] if t["tranche_id"] == tranche_id]
            return states

        states = demo.wait(
            "the ledger's payment of the advances",
            lambda: (s := tranche_states()) and all(x != "requested" for x in s) and s,
        )
        if any(state != "paid" for state in states):
            raise DemoError(f"the ledger refused {states.count('rejected')} advance(s)")


def call_steps(call: DemoCall, window: dt.date) -> tuple[list[Step], list[Step]]:
    """(up to the applications; the early closure and the evaluation), for one call whose window
    opens on `window`."""
    ref = call.reference
    base = "/calls/{" + ref + "}"
    opened: list[Step] = [
        Command(f"calls: draft {ref}", "calls", "/calls", call.terms(window), key("calls", ref, "draft"),
                remember={ref: "call_id"}),
        Command(f"calls: publish {ref}", "calls", base + "/publish", None, key("calls", ref, "publish")),
    ]  # fmt: skip
    evaluated: list[Step] = [
        Command(f"calls: close {ref} early", "calls", base + "/close", {"reason": CLOSE_REASON},
                key("calls", ref, "close"), check=Check(base, {"status": CLOSED}))
    ]  # fmt: skip
    for number, app in enumerate(call.applicants, start=1):
        name = f"{ref}#{number}"
        app_path = f"{base}/applications/{{{name}}}"
        body = {
            "applicant": app.applicant,
            "project_title": app.project_title,
            "business_plan": {
                "eligible_cost": app.eligible_cost,
                "requested_amount": app.requested,
                "jobs_created": app.jobs_created,
            },
        }
        who = f"{ref} application {number}"
        opened.append(
            Command(f"calls: {who} submitted", "calls", f"{base}/applications", body,
                    key("calls", ref, "application", str(number)), remember={name: "application_id"})
        )  # fmt: skip
        if app.scores is None:
            reject = {"reason": app.rejected, "note": "found inadmissible by the office"}
            evaluated.append(
                Command(f"calls: {who} inadmissible", "calls", f"{app_path}/reject", reject,
                        key("calls", ref, "reject", str(number)))
            )  # fmt: skip
            continue
        evaluated.append(
            Command(f"calls: {who} admitted", "calls", f"{app_path}/admit", None,
                    key("calls", ref, "admit", str(number)))
        )  # fmt: skip
        if app.sessions:
            evaluated.append(
                Command(f"calls: {who} accompanied", "calls", f"{app_path}/accompaniment",
                        {"started_on": window.isoformat()}, key("calls", ref, "accompany", str(number)))
            )  # fmt: skip
        for session, topic in enumerate(app.sessions, start=1):
            held = {"held_on": window.isoformat(), "topic": topic, "notes": None}
            evaluated.append(
                Command(f"calls: {who} co-design: {topic}", "calls",
                        f"{app_path}/codesign-sessions", held,
                        key("calls", ref, "codesign", str(number), str(session)))
            )  # fmt: skip
        evaluated.append(
            Command(f"calls: {who} scored", "calls", f"{app_path}/scores",
                    {"scores": dict(app.scores)}, key("calls", ref, "score", str(number)))
        )  # fmt: skip
    evaluated.append(
        Command(f"calls: {ref} evaluation completed", "calls", base + "/evaluation/complete",
                None, key("calls", ref, "evaluation"))
    )  # fmt: skip
    return opened, evaluated


def script(window: dt.date, claim_date: dt.date) -> list[Step]:
    """The calls' steps, in order. `window`: the day both calls' windows open (today);
    `claim_date`: the advances' claims (today for the ledger, which pays them)."""
    steps: list[Step] = []
    evaluations: list[Step] = []
    for call in DEMO_CALLS:
        opened, evaluated = call_steps(call, window)
        steps += opened
        evaluations += evaluated
    steps += evaluations
    for call in DEMO_CALLS:
        ref = call.reference
        steps.append(
            Command(f"calls: {ref} ranking approved, awards to the ledger", "calls",
                    "/calls/{" + ref + "}/ranking/approve", None, key("calls", ref, "ranking"))
        )  # fmt: skip
        steps.append(
            AwaitAwards(f"ledger: answers to the awards of {ref}", ref,
                        call.funding.confirmed, call.funding.suspended)
        )  # fmt: skip
    for call in DEMO_CALLS:
        for nth, amount in enumerate(call.funding.advances):
            steps.append(
                Advance(f"calls: advance on award {nth + 1} of {call.reference}", call.reference,
                        nth, amount, claim_date.isoformat())
            )  # fmt: skip
    steps.append(AwaitPaid("ledger: pays the advances"))
    return steps


# -- the outcome ----------------------------------------------------------------------------------


def call_summary(demo: Demo, ref: str) -> dict[str, Any]:
    call = demo.api("calls").get(demo.fill("/calls/{" + ref + "}"))
    found = awards(demo, ref)
    by_status: dict[str, int] = {}
    for award in found:
        by_status[award["status"]] = by_status.get(award["status"], 0) + 1
    return {
        "reference": ref,
        "call_id": call["call_id"],
        "kind": call["kind"],
        "status": call["status"],
        "applications": call["applications"],
        "budget": call["budget"],
        "available": call["available"],
        "awards": by_status,
        "paid": f"{sum(Decimal(a['paid']) for a in found):.2f}",
    }


def outcome(demo: Demo) -> Outcome:
    """Each call's applications, awards by status, what is left of its budget, advances paid."""
    calls = [call_summary(demo, call.reference) for call in DEMO_CALLS]
    lines = []
    for call in calls:
        by_status = ", ".join(f"{n} {status}" for status, n in sorted(call["awards"].items()))
        lines.append(
            f"{call['reference']} ({call['kind']}): {call['applications']} applications, "
            f"awards {by_status}; budget {euros(call['budget'])}, available "
            f"{euros(call['available'])}; {euros(call['paid'])} paid in advances"
        )
    return Outcome(json={"calls": calls}, show=lines)


def _steps(today: dt.date) -> list[Step]:
    return script(today, today)


# The awards go to the ledger's books: its project, and the offices' documents before them, so
# that the labour-policies line has exactly the room the demo expects.
contribution = Contribution(steps=_steps, after=("ledger",), outcome=outcome)
