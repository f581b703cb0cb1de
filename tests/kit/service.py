"""A service started for a test, what every test's service starts with (a free port, the tests'
tokens, a database of its own), and what a service class declares (its HTTP methods, the sources
it handles). The `service/` tier runs a service's HTTP API in a nameko container with no broker:
AMQP_URI memory://, the relay replaced (nameko's replace_dependencies) and only the HTTP
entrypoints running (restrict_entrypoints). What needs RabbitMQ starts through tests/kit/broker.py
instead, in `integration/`."""

from __future__ import annotations

import dataclasses
import inspect
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

from nameko.containers import ServiceContainer
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR
from nameko.testing.services import replace_dependencies, restrict_entrypoints

from shared.consumer import HandlesEntrypoint
from shared.dependencies import log_for
from shared.eventlog import EventLog
from shared.web import LavoroHttp
from tests.kit.http import TOKENS, Client

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Running:
    """A started service: its container, a client of its HTTP API, its event log."""

    container: ServiceContainer

    @property
    def client(self) -> Client:
        return Client.of(self.container)

    @property
    def log(self) -> EventLog:
        return log_for(self.container)


def database_of(store_url: tuple[str, str | None]) -> dict[str, str]:
    """The `store_url` fixture's database as a service's configuration."""
    url, schema = store_url
    return {"DATABASE_URL": url, **({"DATABASE_SCHEMA": schema} if schema else {})}


def database_url(store_url: tuple[str, str | None]) -> str:
    """The `store_url` fixture's database as one URL, its schema in it (as the CLI takes it)."""
    url, schema = store_url
    if schema:
        url += "?options=" + urllib.parse.quote(f"-csearch_path={schema}")
    return url


def settings(amqp_uri: str, db: dict[str, str], **config: Any) -> dict[str, Any]:
    """A test service's configuration: `config` over its broker, a free port, the tests' tokens
    and its database."""
    return {
        "AMQP_URI": amqp_uri,
        "WEB_SERVER_ADDRESS": "127.0.0.1:0",
        "LAVORO_TOKENS": TOKENS,
        **db,
        **config,
    }


def entrypoints(service_cls: type, kind: type[T]) -> list[tuple[str, T]]:
    """(method name, entrypoint) of each of the service's entrypoints of the class `kind`."""
    return [
        (name, entrypoint)
        for name, member in inspect.getmembers(service_cls)
        for entrypoint in getattr(member, ENTRYPOINT_EXTENSIONS_ATTR, ())
        if isinstance(entrypoint, kind)
    ]


def http_endpoints(service_cls: type) -> list[str]:
    """The names of the service's methods that answer HTTP."""
    return sorted({name for name, _ in entrypoints(service_cls, LavoroHttp)})


def handled_sources(service_cls: type) -> set[str]:
    """The sources the service's `@handles` methods name, as its code names them."""
    return {entrypoint.source for _, entrypoint in entrypoints(service_cls, HandlesEntrypoint)}


def without_broker(
    container_factory: Callable[..., ServiceContainer],
    service_cls: type,
    db: dict[str, str],
    **config: Any,
) -> Running:
    """The service's HTTP API in a container of nameko's `container_factory`, with no broker."""
    container = container_factory(service_cls, settings("memory://", db, **config))
    replace_dependencies(container, "relay")
    restrict_entrypoints(container, *http_endpoints(service_cls))
    container.start()
    return Running(container)
