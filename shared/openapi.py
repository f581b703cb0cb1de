"""OpenAPI 3 for a service's HTTP API, generated from its endpoints and marshmallow schemas (apispec).

    from shared.openapi import document, openapi_spec

    class CallsService:
        name = "calls"

        @command("POST", "/calls", schema=OpenCall)
        @document(status=201, response=CallOut)
        def open_call(self, cmd):
            "Open a call."                          # the first docstring line is the summary

        @query("/calls/<call_id>")
        @document(response=CallOut, query=CallQuery)
        def get_call(self, request, call_id): ...

    spec = openapi_spec(CallsService, title="lavoro calls", version="1")   # a JSON-ready dict

From the endpoints (every `shared.web` entrypoint of the class): method, URL (werkzeug's
`<name>` becomes a path parameter), a command's body schema, whether the endpoint is public.
From `document`: the answer (status, schema or media type), query parameters (a schema: the same
one the method loads them with), summary, tags. From the chassis's conventions, so that no service
repeats them: bearer security (none on public endpoints), the `Idempotency-Key` header of a
command, `X-Correlation-Id`, and the one JSON error body (shared.errors) on 400, 401, 403, 404,
409, 413, 415, 422 and 500 (each where the edge can answer it). Fields: `Money` is a string of euros with at most two decimals, `UtcDateTime` a
`date-time`, `LocalDate` a `date`, `Personal(field)` what its inner field is.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar

import marshmallow as ma
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from shared.schemas import LocalDate, Money, Personal, UtcDateTime
from shared.web import CORRELATION_HEADER, IDEMPOTENCY_HEADER, MAX_IDEMPOTENCY_KEY, LavoroHttp

__all__ = ["Documented", "ErrorBody", "document", "openapi_spec", "openapi_path"]

OPENAPI_VERSION = "3.0.3"
BEARER = "bearerAuth"
MONEY_PATTERN = r"^[0-9]{1,15}(\.[0-9]{1,2})?$"
SIGNED_MONEY_PATTERN = r"^-?[0-9]{1,15}(\.[0-9]{1,2})?$"
_ATTRIBUTE = "__lavoro_openapi__"
_RULE_PARAMETER = re.compile(r"<(?:(?P<converter>[a-zA-Z_]+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
_INTEGER_CONVERTERS = {"int"}
F = TypeVar("F", bound=Callable[..., Any])

# The statuses every endpoint of a kind may answer (shared/web.py, shared/errors.py): the name of
# the shared response component and what it means.
_ERRORS = {
    400: (
        "BadRequest",
        "A malformed X-Correlation-Id; on a command, a missing Idempotency-Key, or a body that is "
        "not JSON or is nested too deeply",
    ),
    401: ("Unauthorized", "No valid bearer token"),
    403: ("Forbidden", "The token's role may not do this"),
    404: ("NotFound", "Not found"),
    409: (
        "Conflict",
        "Refused: a rule of the domain (named, with its figures), a race, or the same "
        "Idempotency-Key still being answered",
    ),
    413: ("PayloadTooLarge", "The body is over the configured size (LAVORO_MAX_BODY_BYTES)"),
    415: ("UnsupportedMediaType", "A body that is not application/json (UTF-8)"),
    422: (
        "InvalidInput",
        "Invalid input: each refused field is named (a NUL in a parameter; on a command, the "
        "body's members, or an Idempotency-Key used before with another body)",
    ),
    500: ("Internal", "Internal error (its id is in the log)"),
}


class ErrorBody(Schema):
    """The one error body of the chassis (shared.errors.LavoroError.to_body)."""

    error = fields.String(required=True, metadata={"example": "rule_violated"})
    message = fields.String(required=True)
    fields_ = fields.Dict(
        data_key="fields",
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "each refused field and why (422)"},
    )
    details = fields.Dict(metadata={"description": "the figures of a refusal (409)"})
    id = fields.String(metadata={"description": "the correlation id of a 500, to find the log"})


class AppendedEvent(ma.Schema):
    type = fields.String(required=True, metadata={"example": "grant_awarded"})
    stream = fields.String(required=True)
    version = fields.Integer(required=True)
    position = fields.Integer(
        required=True, metadata={"description": "a read model has caught up once past it"}
    )


class CommandReply(ma.Schema):
    """The one answer of every command (shared.unit_of_work.Outcome.reply): the events
    appended, whether the command had already run (the same Idempotency-Key), and, as further
    members, the ids the events name (`award_id`; several as `award_ids`)."""

    class Meta:
        unknown = ma.INCLUDE  # the ids are further members

    events = fields.List(fields.Nested(AppendedEvent), required=True)
    repeated = fields.Boolean(required=True)


@dataclasses.dataclass(frozen=True)
class Documented:
    """What `document` adds to an endpoint."""

    status: int | None = None
    response: type[Schema] | Schema | None = None
    media_type: str = "application/json"
    query: type[Schema] | Schema | None = None
    summary: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()


def document(
    *,
    status: int | None = None,
    response: type[Schema] | Schema | None = None,
    media_type: str = "application/json",
    query: type[Schema] | Schema | None = None,
    summary: str | None = None,
    description: str | None = None,
    tags: tuple[str, ...] = (),
) -> Callable[[F], F]:
    """Describe an endpoint's answer and query parameters for `openapi_spec`. Put it above or
    below `@command`/`@query`: either way it stays on the method."""
    documented = Documented(status, response, media_type, query, summary, description, tags)

    def decorate(fn: F) -> F:
        setattr(fn, _ATTRIBUTE, documented)
        return fn

    return decorate


def openapi_path(url: str) -> tuple[str, list[dict[str, Any]]]:
    """A werkzeug rule as an OpenAPI path and its path parameters: `/a/<int:id>` ->
    `/a/{id}`, `[{"in": "path", "name": "id", "required": true, "schema": {"type": "integer"}}]`."""
    parameters = []
    for match in _RULE_PARAMETER.finditer(url):
        kind = "integer" if match.group("converter") in _INTEGER_CONVERTERS else "string"
        parameters.append(
            {"in": "path", "name": match.group("name"), "required": True, "schema": {"type": kind}}
        )
    return _RULE_PARAMETER.sub(lambda m: "{" + m.group("name") + "}", url), parameters


def _register_fields(plugin: MarshmallowPlugin) -> None:
    plugin.map_to_openapi_type(Money, "string", None)
    plugin.map_to_openapi_type(UtcDateTime, "string", "date-time")
    plugin.map_to_openapi_type(LocalDate, "string", "date")
    converter = plugin.converter
    assert converter is not None

    def lavoro_fields(self: Any, field: fields.Field[Any], **kwargs: Any) -> dict[str, Any]:
        if isinstance(field, Money):
            sign = "" if field.allow_negative else "not negative, "
            return {
                "pattern": SIGNED_MONEY_PATTERN if field.allow_negative else MONEY_PATTERN,
                "example": "1250.00",
                "description": field.metadata.get(
                    "description", f"euros, {sign}at most two decimals, as a string"
                ),
            }
        if isinstance(field, Personal):
            return self.field2property(field.inner)  # type: ignore[no-any-return]
        return {}

    converter.add_attribute_function(lavoro_fields)


def _operations(service_cls: type) -> list[tuple[str, LavoroHttp, Any]]:
    found = []
    for name, member in inspect.getmembers(service_cls, callable):
        for entrypoint in getattr(member, "nameko_entrypoints", ()):
            if isinstance(entrypoint, LavoroHttp):
                found.append((name, entrypoint, member))
    return sorted(found, key=lambda item: (item[1].url, item[1].method))


def _summary(fn: Any, documented: Documented) -> tuple[str, str | None]:
    doc = inspect.getdoc(inspect.unwrap(fn)) or ""
    first, _, rest = doc.partition("\n\n")
    summary = documented.summary or " ".join(first.split()) or fn.__name__.replace("_", " ")
    description = documented.description or (" ".join(rest.split()) or None)
    return summary, description


def _operation(name: str, entrypoint: LavoroHttp, fn: Any) -> tuple[str, str, dict[str, Any]]:
    documented: Documented = getattr(fn, _ATTRIBUTE, None) or Documented(
        status=entrypoint.status,
        response=entrypoint.response or (CommandReply if entrypoint.is_command else None),
        media_type=entrypoint.media_type,
        query=entrypoint.args,
        tags=entrypoint.tags,
    )
    path, parameters = openapi_path(entrypoint.url)
    summary, description = _summary(fn, documented)
    parameters.append(
        {
            "in": "header",
            "name": CORRELATION_HEADER,
            "required": False,
            "description": "ties the request to the events and log lines it causes",
            "schema": {"type": "string", "maxLength": 36},
        }
    )
    if entrypoint.is_command:
        parameters.append(
            {
                "in": "header",
                "name": IDEMPOTENCY_HEADER,
                "required": True,
                "description": "the command's id: the same key again changes nothing",
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
            }
        )
    if documented.query is not None:
        parameters.append({"in": "query", "schema": documented.query})

    status = documented.status or 200
    if documented.response is not None and "json" in documented.media_type:
        content: dict[str, Any] = {documented.media_type: {"schema": documented.response}}
    elif "json" not in documented.media_type:
        content = {documented.media_type: {"schema": {"type": "string"}}}
    else:
        content = {}
    ok: dict[str, Any] = {"description": summary}
    if content:
        ok["content"] = content
    responses: dict[str, Any] = {str(status): ok}
    # Any request may carry a bad X-Correlation-Id (400) or a NUL in a parameter (422).
    errors = [400, 422, 500]
    if not entrypoint.public:
        errors += [401, 403]
    if entrypoint.is_command:
        errors += [409, 413, 415]
    if "{" in path:
        errors += [404]
    for code in sorted(set(errors)):
        responses[str(code)] = _ERRORS[code][0]  # a reference to the shared response

    operation: dict[str, Any] = {
        "operationId": name,
        "summary": summary,
        "tags": list(documented.tags) or [path.strip("/").split("/")[0] or "root"],
        "parameters": parameters,
        "responses": responses,
        "security": [] if entrypoint.public else [{BEARER: []}],
    }
    if description:
        operation["description"] = description
    if entrypoint.is_command and entrypoint.schema is not None:
        # An empty body loads as {}: it may be left out when the schema requires no member.
        required = any(field.required for field in entrypoint.schema.fields.values())
        operation["requestBody"] = {
            "required": required,
            "content": {"application/json": {"schema": entrypoint.schema}},
        }
    method = entrypoint.method.split(",")[0].lower()
    return path, method, operation


def openapi_spec(
    service_cls: type, *, title: str, version: str, description: str | None = None
) -> dict[str, Any]:
    """The OpenAPI 3 document of every `shared.web` endpoint of `service_cls`, as a dict."""
    plugin = MarshmallowPlugin()
    info: dict[str, Any] = {"description": description} if description else {}
    spec = APISpec(
        title=title, version=version, openapi_version=OPENAPI_VERSION, plugins=[plugin], info=info
    )
    _register_fields(plugin)
    spec.components.security_scheme(BEARER, {"type": "http", "scheme": "bearer"})
    spec.components.schema("ErrorBody", schema=ErrorBody)
    for name, meaning in _ERRORS.values():
        spec.components.response(
            name, {"description": meaning, "content": {"application/json": {"schema": "ErrorBody"}}}
        )
    paths: dict[str, dict[str, Any]] = {}
    for name, entrypoint, fn in _operations(service_cls):
        path, method, operation = _operation(name, entrypoint, fn)
        paths.setdefault(path, {})[method] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()
