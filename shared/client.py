"""JSON over HTTP to a running service, the way the `lavoro` commands talk to it (`lavoro demo`,
a service's own commands such as `lavoro ledger progress`): its address from the registry and
the configuration the service itself reads, a bearer token, and every failure one line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

RUN_HINT = "start lavoro with `lavoro run`"


class ClientError(Exception):
    """A service could not be asked, or refused what it was asked: the message is one line for
    the person at the command line."""


class Api:
    """JSON over HTTP to one service, with a bearer token; failures become ClientError lines."""

    def __init__(self, service: str, base: str, token: str, timeout: float = 10.0) -> None:
        import requests

        self.service = service
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = requests.Session()
        self.sent = 0  # commands sent

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        try:
            return self.session.request(
                method, self.base + path, headers=headers, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise ClientError(
                f"{self.service} does not answer at {self.base} ({type(exc).__name__}): {RUN_HINT}"
            ) from exc

    def get(self, path: str, **params: Any) -> Any:
        response = self._send("GET", path, params=params)
        return self._answer("GET", path, response)

    def post(self, path: str, body: Any, key: str, *, allow: Iterable[int] = ()) -> tuple[int, Any]:
        self.sent += 1
        headers = {"Idempotency-Key": key}
        response = self._send("POST", path, json=body, headers=headers)
        if response.status_code in tuple(allow):
            return response.status_code, _json(response)
        return response.status_code, self._answer("POST", path, response)

    def _answer(self, method: str, path: str, response: Any) -> Any:
        if response.status_code < 300:
            return _json(response)
        body = _json(response) if "json" in response.headers.get("Content-Type", "") else {}
        message = body.get("message") or response.text[:200] or response.reason
        if response.status_code == 401:
            message += ": the token was refused (`lavoro run` writes var/operator.token)"
        raise ClientError(
            f"{self.service}: {method} {path} answered {response.status_code}: {message}"
        )


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return {}


def service_address(name: str) -> str:
    """`http://host:port` of a registered service, as its configuration gives it."""
    from shared import services
    from shared.observability import local_url
    from shared.runner import WEB_SERVER_KEY, service_settings

    return local_url(service_settings(services.get(name))[WEB_SERVER_KEY])


def default_token(*roles: str) -> str:
    """The development token `lavoro run` wrote under var/, of the first role that has one."""
    from shared.runner import dev_token_path, read_dev_token

    for role in roles:
        token = read_dev_token(role)
        if token:
            return token
    raise ClientError(
        f"no token: `lavoro run` writes {dev_token_path(roles[0])}; or give one with --token"
    )


def api(service: str, token: str | None, *roles: str) -> Api:
    """An Api on a registered service, with `token`, else the development token of the first of
    `roles` that has one."""
    return Api(service, service_address(service), token or default_token(*roles))
