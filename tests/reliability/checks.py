"""What the fault suite holds the services to once the load has settled, read from their logs (the
truth), their read models (through the HTTP API) and their dead letters:

- **lost**: an acknowledged command whose events are not in the log; an award or a tranche that
  the ledger never answered, or whose answer calls never recorded; an event of the other service
  the consumer has no inbox row for; a parked dead letter; books short of what the load made;
- **doubled**: anything that happened twice: an answer, a reaction, a commitment, a payment, an
  application of one applicant, events caused twice by one event; books beyond what it made;
- **invariant breaks**: the ledger's `0 <= disbursed <= legally binding <= admitted <=
  programmed` per line and in total; a call's money (`reserved + available = budget`, neither
  negative); awards confirmed other than those the line had room for; a read model that does not
  add up to its log; a log whose hash chain does not verify.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from shared import tables as t
from shared.records import RecordedEvent
from tests.helpers import wait_for
from tests.reliability.figures import Figures
from tests.reliability.load import AWARD, LINE, Client, Expected
from tests.reliability.system import System

FIGURES = ("programmed", "admitted", "legally_binding", "disbursed")
HANDLED = {"ledger": ("grant_awarded", "tranche_requested", "grant_revoked")}
HANDLED["calls"] = (
    "commitment_recorded",
    "commitment_rejected",
    "payment_disbursed",
    "payment_rejected",
)


@dataclasses.dataclass
class Findings:
    lost: list[str] = dataclasses.field(default_factory=list)
    doubled: list[str] = dataclasses.field(default_factory=list)
    broken: list[str] = dataclasses.field(default_factory=list)

    def describe(self) -> str:
        parts = []
        for name in ("lost", "doubled", "broken"):
            items = getattr(self, name)
            if items:
                parts.append(f"{name} ({len(items)}): " + "; ".join(items[:10]))
        return "\n".join(parts) or "nothing"


def _by(events: list[RecordedEvent], types: tuple[str, ...], member: str) -> Counter[str]:
    return Counter(str(e.data[member]) for e in events if e.type in types)


def settle(system: System, expected: Expected, timeout: float = 180.0) -> None:
    """Wait until every award and tranche of the load is answered and recorded, and both relays
    have had all their log confirmed by the broker; a timeout leaves what is missing to the
    checks (as lost)."""
    awards = sum(len(call.awards) for call in expected.calls)
    tranches = sum(len(call.tranches) for call in expected.calls)

    def settled() -> bool:
        with system.engine("calls").connect() as conn:
            counts = dict(
                conn.execute(
                    sa.select(t.events.c.type, sa.func.count()).group_by(t.events.c.type)
                ).all()
            )
        answered = counts.get("grant_confirmed", 0) + counts.get("grant_suspended", 0)
        paid = counts.get("tranche_paid", 0) + counts.get("tranche_rejected", 0)
        return (
            answered >= awards
            and paid >= tranches
            and all(relay_lag(system, service) == 0 for service in ("calls", "ledger"))
        )

    # What did not arrive in time is counted as lost by the checks.
    with contextlib.suppress(AssertionError):
        wait_for(settled, timeout, "every award and tranche answered and every event relayed")


def relay_lag(system: System, service: str) -> int:
    with system.engine(service).connect() as conn:
        checkpoint = conn.execute(
            sa.select(t.checkpoints.c.position).where(t.checkpoints.c.name == "relay")
        ).scalar()
    return system.head(service) - int(checkpoint or 0)


def examine(system: System, expected: Expected, client: Client) -> Findings:
    found = Findings()
    calls_log = list(system.log("calls").read_all(upcast=False))
    ledger_log = list(system.log("ledger").read_all(upcast=False))
    _commands(found, expected, {"calls": calls_log, "ledger": ledger_log})
    _answers(found, expected, calls_log, ledger_log)
    _causes(found, calls_log, ledger_log)
    for service, other in (("calls", ledger_log), ("ledger", calls_log)):
        _inbox_and_dead_letters(found, system, service, other)
        verified = system.log(service).verify()
        if not verified.ok:
            found.broken.append(
                f"{service}'s log breaks at {verified.broken_at}: {verified.reason}"
            )
    _books(found, system, expected, client, ledger_log)
    _calls_money(found, system, expected, client)
    return found


def _commands(found: Findings, expected: Expected, logs: dict[str, list[RecordedEvent]]) -> None:
    stored = {
        service: {(e.stream, e.version): e.type for e in log} for service, log in logs.items()
    }
    for call in expected.calls:
        for service, reply in call.replies:
            for event in reply["events"]:
                if stored[service].get((event["stream"], event["version"])) != event["type"]:
                    found.lost.append(f"acknowledged {event['type']} {event['stream']}")


def _answers(
    found: Findings,
    expected: Expected,
    calls_log: list[RecordedEvent],
    ledger_log: list[RecordedEvent],
) -> None:
    granted = _by(calls_log, ("grant_awarded",), "award_id")
    reserved = _by(calls_log, ("funds_reserved",), "award_id")
    answered = _by(ledger_log, ("commitment_recorded", "commitment_rejected"), "award_id")
    reacted = _by(calls_log, ("grant_confirmed", "grant_suspended"), "award_id")
    requested = _by(calls_log, ("tranche_requested",), "tranche_id")
    paid = _by(ledger_log, ("payment_disbursed", "payment_rejected"), "tranche_id")
    recorded = _by(calls_log, ("tranche_paid", "tranche_rejected"), "tranche_id")
    applied = Counter(
        (e.data["call_id"], e.data["applicant_key"])
        for e in calls_log
        if e.type == "application_submitted"
    )
    commitments = _by(ledger_log, ("commitment_recorded",), "commitment_id")
    payments = _by(ledger_log, ("payment_disbursed",), "payment_id")

    for call in expected.calls:
        for award in call.awards:
            for what, counter in (
                ("grant_awarded", granted),
                ("funds_reserved", reserved),
                ("the ledger's answer", answered),
                ("calls' record of the answer", reacted),
            ):
                _once(found, counter[award], f"{what} for award {award}")
        for tranche in call.tranches:
            for what, counter in (
                ("tranche_requested", requested),
                ("the ledger's payment", paid),
                ("calls' record of the payment", recorded),
            ):
                _once(found, counter[tranche], f"{what} for tranche {tranche}")
    for counter, what in (
        (applied, "application"),
        (commitments, "commitment"),
        (payments, "payment"),
    ):
        for key, count in counter.items():
            if count > 1:
                found.doubled.append(f"{what} {key} x{count}")


def _once(found: Findings, count: int, what: str) -> None:
    if count == 0:
        found.lost.append(what)
    elif count > 1:
        found.doubled.append(f"{what} x{count}")


def _causes(
    found: Findings, calls_log: list[RecordedEvent], ledger_log: list[RecordedEvent]
) -> None:
    """An event of one service handled twice shows as two events of one type it caused."""
    for log, other in ((calls_log, ledger_log), (ledger_log, calls_log)):
        ids = {e.id for e in other}
        caused = Counter((e.causation_id, e.type) for e in log if e.causation_id in ids)
        for (cause, type_), count in caused.items():
            if count > 1:
                found.doubled.append(f"{type_} caused {count} times by {cause}")


def _inbox_and_dead_letters(
    found: Findings, system: System, service: str, other: list[RecordedEvent]
) -> None:
    wanted = {e.id for e in other if e.type in HANDLED[service]}
    with system.engine(service).connect() as conn:
        inbox = {row.event_id for row in conn.execute(sa.select(t.inbox.c.event_id))}
        parked = conn.execute(
            sa.select(t.dead_letters.c.event_id, t.dead_letters.c.error).where(
                t.dead_letters.c.status == "parked"
            )
        ).all()
    for missing in sorted(wanted - inbox)[:50]:
        found.lost.append(f"{service} never handled {missing}")
    for row in parked:
        found.lost.append(f"{service} parked {row.event_id}: {row.error.splitlines()[0][:200]}")


def _books(
    found: Findings,
    system: System,
    expected: Expected,
    client: Client,
    ledger_log: list[RecordedEvent],
) -> None:
    at = _first(system, "ledger")
    logged: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for e in ledger_log:
        if e.type == "commitment_recorded":
            logged[e.data["project_cup"]]["legally_binding"] += Decimal(e.data["amount"])
        elif e.type == "payment_disbursed":
            logged[e.data["project_cup"]]["disbursed"] += Decimal(e.data["amount"])
    for call in expected.calls:
        progress = client.read(at, f"/projects/{call.cup}/progress")
        scopes = {line["budget_line"]: line for line in progress["budget_lines"]}
        scopes["total"] = progress["total"]
        for scope, figures in scopes.items():
            f = {name: Decimal(figures[name]) for name in FIGURES}
            if not (
                Decimal(0)
                <= f["disbursed"]
                <= f["legally_binding"]
                <= f["admitted"]
                <= f["programmed"]
            ):
                found.broken.append(f"{call.cup} {scope}: {f}")
        line = {name: Decimal(scopes[LINE][name]) for name in FIGURES}
        made = {
            "programmed": AWARD * call.room,
            "admitted": AWARD * call.room,
            "legally_binding": AWARD * len(call.confirmed),
            "disbursed": expected.paid_per_award * len(call.confirmed),
        }
        for name, value in made.items():
            if line[name] > value:
                found.doubled.append(f"{call.cup} {name} {line[name]} > {value}")
            elif line[name] < value:
                found.lost.append(f"{call.cup} {name} {line[name]} < {value}")
        for name in ("legally_binding", "disbursed"):
            if logged[call.cup][name] != line[name]:
                found.broken.append(
                    f"{call.cup} {name}: read model {line[name]}, log {logged[call.cup][name]}"
                )
        if len(call.confirmed) != call.room:
            found.broken.append(
                f"call {call.n}: {len(call.confirmed)} awards confirmed where the line had room"
                f" for {call.room}"
            )


def _calls_money(found: Findings, system: System, expected: Expected, client: Client) -> None:
    at = _first(system, "calls")
    for call in expected.calls:
        if call.call_id is None:
            continue
        read: dict[str, Any] = client.read(at, f"/calls/{call.call_id}")
        budget, reserved, available = (
            Decimal(read[name]) for name in ("budget", "reserved", "available")
        )
        if reserved < 0 or available < 0 or reserved + available != budget:
            found.broken.append(
                f"call {call.n}: budget {budget} reserved {reserved} available {available}"
            )
        if reserved != AWARD * len(call.confirmed):
            found.broken.append(
                f"call {call.n}: reserved {reserved} for {len(call.confirmed)} confirmed awards"
            )


def _first(system: System, service: str) -> Any:
    replica = system.replica(service)
    return lambda: replica.base


def examined(system: System, expected: Expected, client: Client, figures: Figures) -> Findings:
    """`examine` once the load has settled, its counts written into the scenario's figures."""
    found = examine(system, expected, client)
    figures.events = system.events()
    figures.commands = client.tally.commands
    figures.lost, figures.doubled = len(found.lost), len(found.doubled)
    figures.invariant_breaks = len(found.broken)
    return found
