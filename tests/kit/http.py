"""The tests' HTTP client, the same for every service: a bearer token (the operator's unless a
request names another, or none), a fresh Idempotency-Key on every command unless one is given, and
the rule that every answer is JSON except the raw ones a test asks for (a CSV export)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import requests

from shared.web import bound_port

OPERATOR = "op-" + uuid.uuid4().hex
AUDITOR = "au-" + uuid.uuid4().hex
TOKENS = f"ada:operator:{OPERATOR},bea:auditor:{AUDITOR}"  # LAVORO_TOKENS of a test's services


@dataclasses.dataclass(frozen=True)
class Client:
    base: str

    @classmethod
    def of(cls, container: Any) -> Client:
        """The client of a started container's web server."""
        return cls(f"http://127.0.0.1:{bound_port(container)}")

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
        """One request; `token=None` sends no token, `raw=True` takes an answer that is not JSON."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if method != "GET":
            headers["Idempotency-Key"] = key or uuid.uuid4().hex
        response = requests.request(
            method, self.base + path, json=body, headers=headers, params=params, timeout=10
        )
        if not raw:
            assert response.headers["Content-Type"].startswith("application/json"), response.text
        return response

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.send("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.send("POST", path, body, **kwargs)

    def ok(
        self, method: str, path: str, body: Any = None, *, status: int | None = None, **kwargs: Any
    ) -> Any:
        """The JSON answer of a request that must succeed: 200 or 201, or exactly `status`."""
        response = self.send(method, path, body, **kwargs)
        expected = (status,) if status else (200, 201)
        assert response.status_code in expected, (path, response.status_code, response.text)
        return response.json()
