"""A small HTTP client for the ledger's tests: bearer tokens, an Idempotency-Key per command, and
the rule that every answer except the CSV export is JSON."""

from __future__ import annotations

import dataclasses
import inspect
import uuid
from typing import Any

import requests

from services.ledger import demo as seed
from services.ledger.service import LedgerService
from shared.web import LavoroHttp

OPERATOR = "op-" + uuid.uuid4().hex
AUDITOR = "au-" + uuid.uuid4().hex
TOKENS = f"ada:operator:{OPERATOR},bea:auditor:{AUDITOR}"
HTTP_ENDPOINTS = sorted(
    name
    for name, member in inspect.getmembers(LedgerService)
    if any(isinstance(ep, LavoroHttp) for ep in getattr(member, "nameko_entrypoints", ()))
)


@dataclasses.dataclass
class Client:
    base: str
    session: requests.Session = dataclasses.field(default_factory=requests.Session)

    def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = OPERATOR,
        key: str | None = None,
        params: dict[str, str] | None = None,
        raw: bool = False,
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if method != "GET":
            headers["Idempotency-Key"] = key or uuid.uuid4().hex
        response = self.session.request(
            method, self.base + path, json=body, headers=headers, params=params, timeout=10
        )
        if not raw:
            assert response.headers["Content-Type"].startswith("application/json"), response.text
            response.body = response.json()  # type: ignore[attr-defined]
        return response

    def post(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.send("POST", path, body, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.send("GET", path, **kwargs)

    def ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = self.send(method, path, body, **kwargs)
        assert response.status_code in (200, 201), (path, response.status_code, response.text)
        return response.body  # type: ignore[attr-defined]

    def record_seed(self) -> int:
        """Every command of the seed programme, through the API; how many were sent."""
        count = 0
        for method, path, body in seed.requests():
            self.ok(method, path, body)
            count += 1
        return count


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
