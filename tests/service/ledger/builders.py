"""Builders for the ledger's HTTP tests, in the service tier and on the broker: a fresh CUP, a
project and a commitment as the API takes them, a funded project, the seed programme sent."""

from __future__ import annotations

import uuid
from typing import Any

from services.ledger import demo as seed
from tests.kit.http import Client


def a_cup() -> str:
    """A fresh, well-formed CUP (15 capital letters and digits)."""
    return "T" + uuid.uuid4().hex[:14].upper()


def project_body(cup: str, **lines: str) -> dict[str, Any]:
    return {
        "cup": cup,
        "local_code": "BO4.4.8.1.a",
        "title": "Piano per il lavoro",
        "start_date": "2023-12-15",
        "plan_reference": "PO 2024",
        "budget_lines": [{"budget_line": k, "amount": v} for k, v in lines.items()],
    }


def commitment_body(
    cup: str, amount: str, reference: str, line: str = "safeguarding", kind: str = "contract"
) -> dict[str, Any]:
    return {
        "project_cup": cup,
        "budget_line": line,
        "kind": kind,
        "source_reference": reference,
        "signed_on": "2024-07-01",
        "amount": amount,
    }


def funded(client: Client, cup: str, **lines: str) -> None:
    """A project with its lines programmed and fully admitted."""
    client.ok("POST", "/projects", project_body(cup, **lines))
    client.ok(
        "POST",
        f"/projects/{cup}/admissions",
        {
            "act_reference": f"DEC {cup}",
            "adopted_on": "2024-02-29",
            "budget_lines": [{"budget_line": k, "amount": v} for k, v in lines.items()],
        },
    )


def record_seed(client: Client) -> int:
    """Every command of the seed programme, through the API; how many were sent."""
    count = 0
    for method, path, body in seed.requests():
        client.ok(method, path, body)
        count += 1
    return count
