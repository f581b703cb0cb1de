"""Who may do what, on every endpoint of every service: each endpoint × {no token, a wrong one, a
revoked one, an expired one, an auditor's, an operator's} answers 401, 403 or passes the door as
its role rule says (shared.auth.ROLES), and no token ever reaches a log line.

The endpoints come from the service classes themselves (their `LavoroHttp` entrypoints), so a new
endpoint is in the matrix the day it is written. The services run in real containers on their own
SQLite files, without a broker (their relays replaced), since only the HTTP door is under test.
"""

from __future__ import annotations

import datetime as dt
import inspect
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from nameko.containers import ServiceContainer
from nameko.testing.services import replace_dependencies
from typer.testing import CliRunner

from services.calls.service import CallsService
from services.ledger.service import LedgerService
from shared.auth import ROLES, issue_token
from shared.cli import build
from shared.web import LavoroHttp, bound_port
from tests.helpers import wait_for

SERVICES = (LedgerService, CallsService)
_PARAMETER = re.compile(r"<(?:[a-zA-Z_]+(?:\([^)]*\))?:)?(\w+)>")


def endpoints(service_cls: type) -> list[LavoroHttp]:
    found = []
    for _name, member in inspect.getmembers(service_cls, callable):
        found.extend(
            e for e in getattr(member, "nameko_entrypoints", ()) if isinstance(e, LavoroHttp)
        )
    return sorted(found, key=lambda e: (e.url, e.method))


@pytest.fixture(scope="module")
def door(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Both services on one tokens file (an operator, an auditor, and a revoked token) plus an
    inline token that has expired; yields the services' bases and the tokens by kind."""
    tmp = tmp_path_factory.mktemp("roles")
    tokens_file = tmp / "tokens.json"
    operator = issue_token(tokens_file, "op-roles", "operator")
    auditor = issue_token(tokens_file, "au-roles", "auditor")
    revoked = issue_token(tokens_file, "gone-roles", "operator")
    result = CliRunner().invoke(
        build(), ["tokens", "revoke", "--subject", "gone-roles", "--file", str(tokens_file)]
    )
    assert result.exit_code == 0, result.output
    expired = "expired-" + uuid.uuid4().hex
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    containers, bases = [], {}
    for service_cls in SERVICES:
        config = {
            "AMQP_URI": "memory://",
            "WEB_SERVER_ADDRESS": "127.0.0.1:0",
            "DATABASE_URL": f"sqlite:///{tmp / service_cls.name}.db",
            "LAVORO_TOKENS_FILE": str(tokens_file),
            "LAVORO_TOKENS": f"old-roles:operator:{expired}:expires={past}",
        }
        container = ServiceContainer(service_cls, config)
        replace_dependencies(container, "relay")
        container.start()
        containers.append(container)
        bases[service_cls.name] = f"http://127.0.0.1:{bound_port(container)}"
    yield {
        "bases": bases,
        "tokens": {
            None: None,
            "wrong": "wrong-" + uuid.uuid4().hex,
            "revoked": revoked,
            "expired": expired,
            "auditor": auditor,
            "operator": operator,
        },
    }
    for container in containers:
        container.kill()


def expected(endpoint: LavoroHttp, who: str | None) -> str:
    """`open` (past the door: any answer but 401/403), `401` or `403`."""
    if endpoint.public:
        return "open"
    if who in (None, "wrong", "revoked", "expired"):
        return "401"
    return "open" if endpoint.action in ROLES[who] else "403"


CASES = [
    (service_cls.name, endpoint, who)
    for service_cls in SERVICES
    for endpoint in endpoints(service_cls)
    for who in (None, "wrong", "revoked", "expired", "auditor", "operator")
]


@pytest.mark.parametrize(
    ("service", "endpoint", "who"),
    CASES,
    ids=[f"{s}:{e.method} {e.url}:{w or 'none'}" for s, e, w in CASES],
)
def test_every_endpoint_answers_each_caller_as_its_role_says(door, capfd, service, endpoint, who):
    token = door["tokens"][who]
    path = _PARAMETER.sub("x0", endpoint.url)
    correlation_id = str(uuid.uuid4())
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers["X-Correlation-Id"] = correlation_id
    method = endpoint.method.split(",")[0]
    if endpoint.is_command:
        headers["Idempotency-Key"] = uuid.uuid4().hex
    answer = requests.request(
        method,
        door["bases"][service] + path,
        headers=headers,
        json={} if endpoint.is_command else None,
        timeout=10,
    )
    want = expected(endpoint, who)
    if want == "open":
        assert answer.status_code not in (401, 403), answer.text
    else:
        assert answer.status_code == int(want), answer.text
        assert answer.json()["error"] in ("unauthorized", "forbidden")
    # The service's log lines of the request (its access line comes once the answer is sent).
    captured: list[str] = []

    def logged() -> bool:
        out = capfd.readouterr()
        captured.append(out.out + out.err)
        return any(
            "http request " in line and correlation_id in line
            for line in "".join(captured).splitlines()
        )

    wait_for(logged, 10, "the request's log line")
    if token:
        assert token not in "".join(captured)  # no token in clear in any log line
