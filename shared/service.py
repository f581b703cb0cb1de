"""The base of every service class: what each serves without writing it.

    class LedgerService(Service):
        name = "ledger"
        title = "lavoro ledger"
        description = "The books of ..."
        store = EventStore(projections=[...], contracts=events.CONTRACTS)
        relay = RelayExtension()

- `/openapi.json`: the OpenAPI 3 document of the class's `@command`/`@query` endpoints, built
  once per class (it only changes with the code);
- `/health` and `/metrics` (shared.observability).

A subclass declares its endpoints and handlers, each a few lines that run a plan of its
`handlers.py` through the unit of work or answer from its `queries.py`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from werkzeug.wrappers import Request

from shared.observability import Observable
from shared.openapi import document, openapi_spec
from shared.web import http

_documents: dict[type, dict[str, Any]] = {}


class Service(Observable):
    name: ClassVar[str]
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    api_version: ClassVar[str] = "1"

    @http("GET", "/openapi.json", public=True)
    @document(tags=("meta",))
    def openapi(self, request: Request) -> Any:
        """This API as an OpenAPI 3 document."""
        return openapi_document(type(self))


def openapi_document(service_cls: type[Service]) -> dict[str, Any]:
    """The document of a service class, made once."""
    if service_cls not in _documents:
        _documents[service_cls] = openapi_spec(
            service_cls,
            title=service_cls.title or f"lavoro {service_cls.name}",
            version=service_cls.api_version,
            description=service_cls.description or None,
        )
    return _documents[service_cls]
