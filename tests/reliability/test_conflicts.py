"""Fifty conflicting commands at once per invariant, spread over two replicas of each service on
one PostgreSQL database (each replica a process of its own, on the broker of the suite's vhost):

- fifty commitments of 1,000.00 on a line with room for thirty,
- fifty payments of 1,000.00 on a commitment of 30,000.00,
- fifty applications by one applicant to one call,
- fifty tranches of 200.00 on an award of 8,000.00.

Exactly the commands that fit succeed, each at its first attempt (the stream's commands wait for
one another across replicas: shared/stream_locks.py), the others are refused by their rule, not
by a lost race; the books hold their invariants and are exactly what the winners made."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

import eventlet
import pytest
import requests

from tests import infra
from tests.helpers import wait_for
from tests.kit.http import OPERATOR
from tests.reliability.checks import FIGURES
from tests.reliability.load import (
    AWARD,
    Client,
    application_body,
    call_body,
    scores,
    today,
)
from tests.reliability.rabbit import throwaway_vhost
from tests.reliability.system import SERVICES, System

AT_ONCE = 50
CUP = "C" + uuid.uuid4().hex[:14].upper()
LINES = {
    "safeguarding": "30000.00",
    "employment_services": "30000.00",
    "labour_policies": "8000.00",
}


@pytest.fixture
def system(tmp_path, unique):
    with throwaway_vhost(infra.amqp_uri(), f"lavoro-rel-{unique}") as uri:
        running = System(tmp_path, uri, infra.postgres_url())
        try:
            running.start({"calls": 2, "ledger": 2})
            yield running
        finally:
            running.close()


def race(system: System, service: str, path: str, bodies: list[Any]) -> Counter[str]:
    """Every body POSTed at once, alternately to each replica, one attempt each: how many got
    which answer (status, and the error code of a refusal)."""
    replicas = itertools.cycle(system.processes[service])
    targets = [(next(replicas).base, body) for body in bodies]
    tag = uuid.uuid4().hex[:8]

    def send(n_target: tuple[int, tuple[str, Any]]) -> str:
        n, (base, body) = n_target
        headers = {"Authorization": f"Bearer {OPERATOR}", "Idempotency-Key": f"race-{tag}-{n}"}
        response = requests.post(base + path, json=body, headers=headers, timeout=60)
        if response.status_code in (200, 201):
            return "ok"
        return f"{response.status_code} {response.json().get('error')}"

    pool = eventlet.GreenPool(len(bodies))
    return Counter(pool.imap(send, enumerate(targets)))


def books(client: Client, at: Any) -> dict[str, dict[str, Decimal]]:
    progress = client.read(at, f"/projects/{CUP}/progress")
    scopes = {line["budget_line"]: line for line in progress["budget_lines"]}
    scopes["total"] = progress["total"]
    return {s: {f: Decimal(v[f]) for f in FIGURES} for s, v in scopes.items()}


@pytest.mark.timeout(600)
def test_fifty_conflicting_commands_per_invariant_against_two_replicas(figures, system):
    client = Client()
    calls, ledger = (lambda: system.replica("calls").base), (lambda: system.replica("ledger").base)
    lines = [{"budget_line": k, "amount": v} for k, v in LINES.items()]
    project = {
        "cup": CUP,
        "local_code": "BO4.4.8.1.a",
        "title": "Piano per il lavoro, prova di concorrenza",
        "start_date": "2023-12-15",
        "plan_reference": "PO 2024",
        "budget_lines": lines,
    }
    client.command(ledger, "/projects", project, f"{CUP}-project")
    admission = {"act_reference": f"DEC {CUP}", "adopted_on": "2024-02-29", "budget_lines": lines}
    client.command(ledger, f"/projects/{CUP}/admissions", admission, f"{CUP}-admission")
    day = today().isoformat()
    contract = client.command(
        ledger,
        "/commitments",
        {
            "project_cup": CUP,
            "budget_line": "employment_services",
            "kind": "contract",
            "source_reference": f"CIG-{CUP}",
            "signed_on": day,
            "amount": "30000.00",
        },
        f"{CUP}-contract",
    )["commitment_id"]
    award = one_confirmed_award(client, calls, CUP)
    applicant_call = client.command(calls, "/calls", call_body(900, CUP, 1), f"{CUP}-call-b")
    at = f"/calls/{applicant_call['call_id']}"
    client.command(calls, f"{at}/publish", None, f"{CUP}-call-b-publish")

    results = {
        "commitments": race(
            system,
            "ledger",
            "/commitments",
            [
                {
                    "project_cup": CUP,
                    "budget_line": "safeguarding",
                    "kind": "contract",
                    "source_reference": f"RACE-{n}",
                    "signed_on": day,
                    "amount": "1000.00",
                }
                for n in range(AT_ONCE)
            ],
        ),
        "payments": race(
            system,
            "ledger",
            f"/commitments/{contract}/payments",
            [
                {
                    "claim_reference": f"PAY-{n}",
                    "claim_date": day,
                    "paid_on": day,
                    "amount": "1000.00",
                }
                for n in range(AT_ONCE)
            ],
        ),
        "applications": race(
            system, "calls", f"{at}/applications", [application_body(7)] * AT_ONCE
        ),
        "tranches": race(
            system,
            "calls",
            f"/awards/{award}/tranches",
            [
                {"kind": "interim", "amount": "200.00", "claim_reference": f"TR-{n}"}
                for n in range(AT_ONCE)
            ],
        ),
    }
    fit = {"commitments": 30, "payments": 30, "applications": 1, "tranches": 40}
    refused = {
        "commitments": "409 rule_violated",
        "payments": "409 rule_violated",
        "applications": "409 duplicate_application",
        "tranches": "409 tranche_exceeds_award",
    }
    figures.commands = client.tally.commands  # the setup's
    for name, counts in results.items():
        figures.commands += counts["ok"]
        figures.lost += max(0, fit[name] - counts["ok"])
        figures.doubled += max(0, counts["ok"] - fit[name])
        figures.notes.append(f"{name}: {dict(counts)}")

    wait_for(
        lambda: client.read(calls, f"/awards/{award}")["paid"] == "8000.00",
        60,
        "the ledger paid the forty tranches",
    )
    found = books(client, ledger)
    for f in found.values():
        if (
            not Decimal(0)
            <= f["disbursed"]
            <= f["legally_binding"]
            <= f["admitted"]
            <= f["programmed"]
        ):
            figures.invariant_breaks += 1
    made = {
        "safeguarding": {"legally_binding": Decimal("30000.00"), "disbursed": Decimal(0)},
        "employment_services": {
            "legally_binding": Decimal("30000.00"),
            "disbursed": Decimal("30000.00"),
        },
        "labour_policies": {"legally_binding": AWARD, "disbursed": AWARD},
    }
    for line, figures_made in made.items():
        for name, value in figures_made.items():
            if found[line][name] != value:
                figures.invariant_breaks += 1
    applications = client.read(calls, f"{at}/applications")["applications"]
    figures.doubled += max(0, len(applications) - 1)
    figures.events = system.events()
    for service in SERVICES:
        assert system.log(service).verify().ok

    assert results == {
        name: Counter({"ok": fit[name], refused[name]: AT_ONCE - fit[name]}) for name in fit
    }, figures.notes
    assert (figures.lost, figures.doubled, figures.invariant_breaks) == (0, 0, 0), found


def one_confirmed_award(client: Client, calls: Any, cup: str) -> str:
    """A call of one applicant on `cup`'s labour-policies line, awarded and confirmed by the
    ledger: the award's id."""
    call_id = client.command(calls, "/calls", call_body(901, cup, 1), f"{cup}-call-a")["call_id"]
    at = f"/calls/{call_id}"
    client.command(calls, f"{at}/publish", None, f"{cup}-a-publish")
    app = client.command(calls, f"{at}/applications", application_body(1), f"{cup}-a-apply")
    app_at = f"{at}/applications/{app['application_id']}"
    client.command(calls, f"{app_at}/admit", None, f"{cup}-a-admit")
    client.command(calls, f"{app_at}/scores", {"scores": scores(1)}, f"{cup}-a-score")
    client.command(calls, f"{at}/close", {"reason": "fault suite: closed early"}, f"{cup}-a-close")
    client.command(calls, f"{at}/evaluation/complete", None, f"{cup}-a-evaluate")
    approved = client.command(calls, f"{at}/ranking/approve", None, f"{cup}-a-approve")
    award = approved.get("award_id") or approved["award_ids"][0]
    wait_for(
        lambda: client.read(calls, f"/awards/{award}")["status"] == "confirmed",
        60,
        "the award confirmed by the ledger",
    )
    return str(award)
