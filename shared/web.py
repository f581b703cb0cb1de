"""The HTTP edge of a service: nameko `@http` entrypoints that speak JSON only, check who is
calling, and hand a command to the service method already validated.

    from shared.web import command, query, json_response

    class CallsService:
        name = "calls"

        @command("POST", "/calls", schema=OpenCallSchema)      # role may "command": operator
        def open_call(self, cmd):                              # cmd: CommandRequest
            ...                                                # cmd.data, cmd.id, cmd.actor
            return json_response(201, {"call_id": ...})

        @query("/calls/<call_id>")                             # role may "read"
        def get_call(self, request, call_id):
            return {"call_id": call_id, ...}                   # a plain value means 200

Every request needs `Authorization: Bearer <token>` (shared.auth; 401/403 otherwise) unless its
endpoint is declared `public=True`. A command also needs an `Idempotency-Key` header; the command
id (`cmd.id`) is that key scoped to the actor and the endpoint (`scoped_command_id`), bound by the
store to the digest of the body (the same id with another body is 422), and a second request with
the same id while the first is being answered is 409. Its JSON body (shared.request_body) is loaded
with the endpoint's marshmallow schema before the method is called. The correlation id comes from
`X-Correlation-Id` or is made up, and is sent back in that header on every response. Actor,
correlation id and command id go into the worker's context data (`worker_ctx.data`, keys below)
so that the store stamps them on the events it appends.

Every response is JSON. Errors take their status and body from shared.errors (the one mapping);
a marshmallow ValidationError is `InvalidInput` (422, each field named); anything unexpected is a
500 `{"error": "internal", "message": "internal error", "id": <correlation id>}`, logged with its
traceback under that id, never shown to the client.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import decimal
import enum
import functools
import hashlib
import inspect
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from eventlet import wsgi
from eventlet.event import Event
from marshmallow import Schema, ValidationError
from nameko.exceptions import ContainerBeingKilled, IncorrectSignature
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import HttpOnlyProtocol, WebServer, WsgiApp
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from shared.auth import COMMAND, READ, Principal, Tokens, authorise, bearer_token
from shared.clock import format_ts
from shared.config import MAX_BODY_BYTES_KEY, ConfigError
from shared.errors import (
    IDEMPOTENCY_HEADER,
    CommandInFlight,
    InvalidInput,
    LavoroError,
    Unauthorized,
)
from shared.logs import bind_request, get_logger
from shared.ports import listen
from shared.request_body import check_media_type, digest, parse_json, read_body
from shared.schemas import invalid_input
from shared.unit_of_work import Outcome

# Keys of nameko's worker context data (worker_ctx.data) that the store dependency reads.
ACTOR_KEY = "lavoro.actor"
ROLE_KEY = "lavoro.role"
CORRELATION_ID_KEY = "lavoro.correlation_id"
COMMAND_ID_KEY = "lavoro.command_id"
IDEMPOTENCY_KEY_KEY = "lavoro.idempotency_key"
REQUEST_DIGEST_KEY = "lavoro.request_digest"

CORRELATION_HEADER = "X-Correlation-Id"
MAX_IDEMPOTENCY_KEY = 200  # the log keeps a digest of it (scoped_command_id), not the key
MAX_CORRELATION_ID = 36  # the log's `events.correlation_id` column (a UUID)
MAX_BODY_BYTES = 1024 * 1024  # the default of LAVORO_MAX_BODY_BYTES
JSON_TYPE = "application/json"

_ENVIRON_KEY = "lavoro.request"
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: safe in a header, a log and a column
_READ_METHODS = frozenset({"GET", "HEAD"})

log = get_logger("lavoro.web")
F = TypeVar("F", bound=Callable[..., Any])


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return format(value, "f")  # "1E+2" would be a surprise for a client reading amounts
    if isinstance(value, dt.datetime):
        return format_ts(value)  # refuses a naive datetime instead of guessing its zone
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


def to_json(value: Any) -> str:
    """JSON text of a response body: Decimal as a string, datetimes as `format_ts`."""
    return json.dumps(value, default=_json_default, ensure_ascii=False, allow_nan=False)


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response; what a service method returns when the status is not 200."""
    return Response(to_json(body), status=status, headers=dict(headers or {}), mimetype=JSON_TYPE)


@dataclasses.dataclass(frozen=True)
class RequestContext:
    """Who asked and under which ids; kept in the request's WSGI environ."""

    correlation_id: str
    actor: str | None = None
    role: str | None = None
    command_id: str | None = None  # a command's id: its Idempotency-Key, scoped
    idempotency_key: str | None = None  # as the client sent it
    request_digest: str | None = None  # what the command id is bound to

    def context_data(self) -> dict[str, str]:
        values = {
            CORRELATION_ID_KEY: self.correlation_id,
            ACTOR_KEY: self.actor,
            ROLE_KEY: self.role,
            COMMAND_ID_KEY: self.command_id,
            IDEMPOTENCY_KEY_KEY: self.idempotency_key,
            REQUEST_DIGEST_KEY: self.request_digest,
        }
        return {k: v for k, v in values.items() if v is not None}


def scoped_command_id(actor: str, method: str, path: str, key: str) -> str:
    """The id the log records for a command: its Idempotency-Key within the actor and the
    endpoint (method and path), so that the same key from another actor or on another endpoint
    is another command. A digest, so that it fits the log's column whatever its parts."""
    scope = json.dumps([actor, method.upper(), path, key], ensure_ascii=True)
    return hashlib.sha256(scope.encode("ascii")).hexdigest()


@dataclasses.dataclass(frozen=True)
class CommandRequest:
    """What a command endpoint hands its method: the loaded body and who/what/why."""

    id: str  # the command id: the Idempotency-Key scoped to actor and endpoint (run it with this)
    data: Any  # what the endpoint's schema loaded (the parsed JSON object without a schema)
    actor: str
    role: str
    correlation_id: str
    request: Request
    key: str = ""  # the Idempotency-Key as sent
    digest: str | None = None  # SHA-256 of the body, which the command id is bound to

    @property
    def context(self) -> RequestContext:
        return RequestContext(
            self.correlation_id, self.actor, self.role, self.id, self.key or None, self.digest
        )


@dataclasses.dataclass(frozen=True)
class QueryRequest:
    """What a `query` endpoint hands its method: the query string loaded with the endpoint's
    `args` schema (422 naming the parameter otherwise; the raw parameters without a schema)."""

    args: Mapping[str, Any]
    request: Request


def request_context(request: Request) -> RequestContext | None:
    """The context of a request being served by a LavoroHttp entrypoint."""
    return request.environ.get(_ENVIRON_KEY)


def _error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "message": message, **extra}


def _http_exception_response(exc: HTTPException) -> Response:
    """A werkzeug error (404, 405, 413, a bad JSON body read by the method...) as JSON."""
    code = (exc.name or "error").lower().replace(" ", "_")
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    return json_response(exc.code or 500, _error_body(code, exc.description or code), headers)


def _internal_response(error_id: str) -> Response:
    return json_response(500, _error_body("internal", "internal error", id=error_id))


def _new_correlation_id() -> str:
    return str(uuid.uuid4())


def _bad_header(header: str, message: str, status: int = 400) -> LavoroError:
    error = InvalidInput if status == 422 else LavoroError
    return error(f"{header} header: {message}", fields={header: [message]})


def _supplied_correlation_id(request: Request) -> tuple[str, LavoroError | None]:
    supplied = request.headers.get(CORRELATION_HEADER)
    if supplied is None:
        return _new_correlation_id(), None
    if len(supplied) > MAX_CORRELATION_ID or not _PRINTABLE.match(supplied):
        return _new_correlation_id(), _bad_header(
            CORRELATION_HEADER, f"must be 1-{MAX_CORRELATION_ID} visible ASCII characters"
        )
    return supplied, None


def _idempotency_key(request: Request) -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
    if not key:
        raise _bad_header(IDEMPOTENCY_HEADER, "required on a command: it is the command's id")
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise _bad_header(
            IDEMPOTENCY_HEADER, f"at most {MAX_IDEMPOTENCY_KEY} characters", status=422
        )
    if not _PRINTABLE.match(key):
        raise _bad_header(IDEMPOTENCY_HEADER, "visible ASCII characters only", status=422)
    return key


def _refuse_nul(kind: str, pairs: Iterable[tuple[str, Any]]) -> None:
    """A NUL in a path or query parameter (422 naming it): PostgreSQL refuses it in text,
    SQLite keeps it, and the two stores must answer alike."""
    bad = [name for name, value in pairs if "\x00" in name or "\x00" in str(value)]
    if bad:
        reason = f"{kind} parameter contains a NUL character"
        fields = {name.replace("\x00", "\\u0000"): [reason] for name in bad}
        raise InvalidInput(f"invalid input: {', '.join(fields)}: {reason}", fields=fields)


class JsonWsgiApp(WsgiApp):
    """nameko's WSGI app, except that no response (an unknown URL, a wrong method, a crash
    before any entrypoint runs) is HTML or text."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ, shallow=True)
        try:
            adapter = self.url_map.bind_to_environ(environ)
            provider, values = adapter.match()
            request.path_values = values  # type: ignore[attr-defined]
            response = provider.handle_request(request)
        except HTTPException as exc:
            response = _http_exception_response(exc)
        except Exception:
            error_id = _new_correlation_id()
            log.exception("http request failed outside an entrypoint", error_id=error_id)
            response = _internal_response(error_id)
        if CORRELATION_HEADER not in response.headers:
            response.headers[CORRELATION_HEADER] = _supplied_correlation_id(request)[0]
        return response(environ, start_response)


def _max_body_bytes(config: Mapping[str, Any]) -> int:
    value = config.get(MAX_BODY_BYTES_KEY)
    if value is None or value == "":
        return MAX_BODY_BYTES
    try:
        limit = int(value)
    except (TypeError, ValueError):
        limit = 0
    if limit < 1 or isinstance(value, bool):
        raise ConfigError(
            f"{MAX_BODY_BYTES_KEY}={value!r}: expected a whole number of bytes, 1 or more"
        )
    return limit


class _EventletLog:
    """eventlet's server log: its access line repeats the entrypoint's (which has the correlation
    id), so it goes to debug; its errors stay errors."""

    _logger = logging.getLogger("lavoro.web.server")

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._logger.debug(msg.rstrip(), *args)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._logger.debug(msg.rstrip(), *args)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._logger.error(msg.rstrip(), *args)


class LavoroWebServer(WebServer):
    """nameko's web server with the JSON app, the service's tokens, and one access line per
    request written by the entrypoint (with the correlation id) instead of eventlet's."""

    tokens: Tokens
    max_body_bytes: int = MAX_BODY_BYTES
    _running: set[str]  # the command ids being answered (in_flight)

    def setup(self) -> None:
        self.max_body_bytes = _max_body_bytes(self.container.config)
        self._running = set()
        # Loaded at start so that a malformed or missing tokens file stops the service at once.
        self.tokens = Tokens.from_config(self.container.config)
        if not self.tokens.entries:
            log.warning(
                "no API tokens configured: every authenticated request will get 401",
                tokens_file=str(self.tokens.path),
            )

    def start(self) -> None:
        # nameko's start, on a listener of its own: eventlet's listen would set SO_REUSEPORT and
        # let a second system listen on the same port unnoticed (shared.ports).
        if not self._starting:  # type: ignore[has-type]
            self._starting = True
            self._sock = listen(self.bind_addr)
            # As nameko does: kombu may have set a global socket timeout (celery/kombu#838).
            self._sock.settimeout(None)
            self._serv = self.get_wsgi_server(self._sock, self.get_wsgi_app())
            self._gt = self.container.spawn_managed_thread(self.run)

    def get_wsgi_app(self) -> JsonWsgiApp:
        return JsonWsgiApp(self)

    @contextlib.contextmanager
    def in_flight(self, command_id: str | None) -> Iterator[None]:
        """The command runs while this block does; CommandInFlight (409) if a request of the
        same command id is still being answered here. (Across replicas the log decides once the
        first commits: the second answers as its repeat.)"""
        if command_id is None:
            yield
            return
        # No yield to the hub between the test and the add: green threads cannot interleave.
        if command_id in self._running:
            raise CommandInFlight()
        self._running.add(command_id)
        try:
            yield
        finally:
            self._running.discard(command_id)

    def get_wsgi_server(  # type: ignore[override]
        self, sock: Any, wsgi_app: Any, protocol: Any = HttpOnlyProtocol, debug: bool = False
    ) -> Any:
        return wsgi.Server(
            sock,
            sock.getsockname(),
            wsgi_app,
            protocol=protocol,
            debug=False,  # never a traceback in a response
            log=_EventletLog(),
        )

    # A method, not a property: nameko's bind() reads every attribute of an unbound extension.
    def port(self) -> int:
        """The bound port (useful with `WEB_SERVER_ADDRESS` `127.0.0.1:0`)."""
        if self._sock is None:
            raise RuntimeError("the web server is not started")
        return int(self._sock.getsockname()[1])


class LavoroHttp(HttpRequestHandler):
    """A nameko `@http` entrypoint that authenticates, authorises, validates and answers JSON.

    `action` is what the caller's role must allow (shared.auth.ROLES): `read` for GET, `command`
    otherwise, `audit` for the auditors' endpoints. A non-GET endpoint is a command: it needs an
    Idempotency-Key and its method receives a CommandRequest; a GET method receives the werkzeug
    request, as in nameko.
    """

    server = LavoroWebServer()

    def __init__(
        self,
        method: str,
        url: str,
        *,
        action: str | None = None,
        schema: Schema | type[Schema] | None = None,
        public: bool = False,
        status: int | None = None,
        response: Schema | type[Schema] | None = None,
        args: Schema | type[Schema] | None = None,
        tags: tuple[str, ...] = (),
        media_type: str = JSON_TYPE,
        **kwargs: Any,
    ) -> None:
        methods = {m.strip().upper() for m in method.split(",")}
        if methods & _READ_METHODS and methods - _READ_METHODS:
            raise ValueError(f"{method} {url}: a read and a command cannot share an endpoint")
        self.is_command = not methods <= _READ_METHODS
        if public and self.is_command:
            raise ValueError(f"{method} {url}: a command always needs a token (it has an actor)")
        if schema is not None and not self.is_command:
            raise ValueError(f"{method} {url}: only a command has a body to load")
        self.action = action or (COMMAND if self.is_command else READ)
        self.public = public
        self.schema = _instance(schema)
        # One declaration serves the request, the answer and the OpenAPI document.
        self.status = status
        self.response = _instance(response)
        self.args = _instance(args)
        self.tags = tuple(tags)
        self.media_type = media_type
        kwargs.setdefault("expected_exceptions", (LavoroError, ValidationError))
        super().__init__(",".join(sorted(methods)), url, **kwargs)

    def check_signature(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # The method may be wrapped (see `http`): check the caller's arguments against the
        # signature the service author wrote.
        fn = inspect.unwrap(getattr(self.container.service_cls, self.method_name))
        try:
            inspect.getcallargs(fn, None, *args, **kwargs)
        except TypeError as exc:
            raise IncorrectSignature(str(exc)) from exc

    def handle_request(self, request: Request) -> Response:
        started = time.monotonic()
        request.shallow = False
        correlation_id, header_error = _supplied_correlation_id(request)
        principal: Principal | None = None
        with bind_request(correlation_id, method=request.method, path=request.path):
            try:
                if header_error is not None:
                    raise header_error
                if not self.public:
                    principal = self.authenticate(request)
                    authorise(principal, self.action)
                context, args = self._arguments(request, correlation_id, principal)
                kwargs = request.path_values  # type: ignore[attr-defined]
                self.check_signature(args, kwargs)
                with self.server.in_flight(context.command_id):
                    event = Event()
                    self.container.spawn_worker(
                        self,
                        args,
                        kwargs,
                        context_data=context.context_data(),
                        handle_result=functools.partial(self.handle_result, event),
                    )
                    result = event.wait()
                response = self.response_from_result(result)
            except Exception as exc:
                response = self.error_response(exc, correlation_id)
            response.headers[CORRELATION_HEADER] = correlation_id
            log.info(
                "http request",
                status=response.status_code,
                duration_ms=round((time.monotonic() - started) * 1000, 3),
                actor=principal.subject if principal else None,
            )
        return response

    def authenticate(self, request: Request) -> Principal:
        return self.server.tokens.authenticate(bearer_token(request.headers.get("Authorization")))

    def _arguments(
        self, request: Request, correlation_id: str, principal: Principal | None
    ) -> tuple[RequestContext, tuple[Any, ...]]:
        """The request's context and the method's arguments: the request for a read, a
        CommandRequest (Idempotency-Key checked, body loaded) for a command."""
        _refuse_nul("path", request.path_values.items())  # type: ignore[attr-defined]
        _refuse_nul("query", request.args.items(multi=True))
        if not self.is_command:
            if principal is None:  # a public read; a command is never public
                context = RequestContext(correlation_id)
            else:
                context = RequestContext(correlation_id, principal.subject, principal.role)
            request.environ[_ENVIRON_KEY] = context
            if self.args is None:
                return context, (request,)
            return context, (QueryRequest(self.args.load(request.args.to_dict()), request),)
        assert principal is not None
        key = _idempotency_key(request)
        command_id = scoped_command_id(principal.subject, request.method, request.path, key)
        raw = read_body(request, self.server.max_body_bytes)
        check_media_type(request, raw)
        body = parse_json(raw)
        body_digest = digest(raw)
        context = RequestContext(
            correlation_id, principal.subject, principal.role, command_id, key, body_digest
        )
        request.environ[_ENVIRON_KEY] = context
        if self.schema is not None:
            data = self.schema.load(body)
        elif isinstance(body, dict):
            data = body
        else:
            raise InvalidInput(
                "invalid input: the body must be a JSON object",
                fields={"_schema": ["the body must be a JSON object"]},
            )
        cmd = CommandRequest(
            command_id,
            data,
            principal.subject,
            principal.role,
            correlation_id,
            request,
            key,
            body_digest,
        )
        return context, (cmd,)

    def response_from_result(self, result: Any) -> Response:
        if isinstance(result, Outcome):
            return json_response(self.status or 200, result.reply())
        if self.response is not None and not isinstance(result, (Response, tuple)):
            return json_response(self.status or 200, self.response.dump(result))
        if isinstance(result, Response):
            # JSON, JSON Lines (an audit export), a +json type, or CSV (an export for people's
            # spreadsheets); a text/plain or HTML answer is a bug in the method, not something
            # to pass on.
            mimetype = result.mimetype or ""
            if "json" not in mimetype and mimetype != "text/csv":
                raise TypeError(f"{self.method_name} returned a {result.mimetype!r} response")
            return result
        if isinstance(result, tuple) and len(result) == 3:
            status, headers, body = result
            return json_response(status, body, headers)
        if isinstance(result, tuple) and len(result) == 2:
            status, body = result
            return json_response(status, body)
        return json_response(200, result)

    def error_response(self, exc: Exception, correlation_id: str) -> Response:
        """The one place an exception becomes a response (statuses from shared.errors)."""
        if isinstance(exc, ValidationError):
            exc = invalid_input(exc)
        if isinstance(exc, LavoroError):
            headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else {}
            log.info("http request refused", status=exc.status, error=exc.code, reason=exc.message)
            return json_response(exc.status, exc.to_body(), headers)
        if isinstance(exc, HTTPException) and (exc.code or 500) < 500:
            log.info("http request refused", status=exc.code, reason=exc.description)
            return _http_exception_response(exc)
        if isinstance(exc, ContainerBeingKilled):
            return json_response(
                503, _error_body("unavailable", "the service is stopping"), {"Retry-After": "1"}
            )
        log.error("http request failed", error_id=correlation_id, exc_info=exc)
        return _internal_response(correlation_id)


def _bind_logs_in_worker(fn: F) -> F:
    """The worker runs in its own greenthread, which starts with an empty logging context: bind
    the request's ids there too, so the method's and the store's lines carry them."""

    @functools.wraps(fn)
    def handler(self: Any, first: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(first, CommandRequest):
            context: RequestContext | None = first.context
        elif isinstance(first, QueryRequest):
            context = request_context(first.request)
        else:
            context = request_context(first) if isinstance(first, Request) else None
        if context is None:
            return fn(self, first, *args, **kwargs)
        with bind_request(
            context.correlation_id,
            actor=context.actor,
            command_id=context.command_id,
            idempotency_key=context.idempotency_key,
        ):
            return fn(self, first, *args, **kwargs)

    return handler  # type: ignore[return-value]


def http(
    method: str,
    url: str,
    *,
    action: str | None = None,
    schema: Schema | type[Schema] | None = None,
    public: bool = False,
    **kwargs: Any,
) -> Callable[[F], F]:
    """Declare an endpoint: GET is a read, any other method a command (see LavoroHttp)."""

    def decorate(fn: F) -> F:
        wrapped = _bind_logs_in_worker(fn)
        options = dict(action=action, schema=schema, public=public, **kwargs)
        return LavoroHttp.decorator(method, url, **options)(wrapped)  # type: ignore[no-any-return]

    return decorate


def command(
    method: str,
    url: str,
    *,
    schema: Schema | type[Schema] | None = None,
    status: int = 200,
    action: str = COMMAND,
    tags: tuple[str, ...] = (),
    **kwargs: Any,
) -> Callable[[F], F]:
    """Declare a command endpoint: bearer token whose role may `action`, Idempotency-Key, body
    loaded with `schema`; the method is called as `method(self, cmd: CommandRequest, **path)`
    and returns the unit of work's `Outcome`, answered with `status` in the one reply shape of
    every command (`Outcome.reply`)."""
    if method.upper() in _READ_METHODS:
        raise ValueError(f"a command is not a {method}: use query()")
    return http(method, url, action=action, schema=schema, status=status, tags=tags, **kwargs)


def query(
    url: str,
    *,
    response: Schema | type[Schema] | None = None,
    args: Schema | type[Schema] | None = None,
    action: str = READ,
    tags: tuple[str, ...] = (),
    **kwargs: Any,
) -> Callable[[F], F]:
    """Declare a GET endpoint for roles that may `action` (`read`, or `audit`). With `args`, the
    method is called as `method(self, q: QueryRequest, **path)` (q.args loaded, 422 otherwise),
    else as `method(self, request, **path)`; what it returns is dumped with `response` (a werkzeug
    Response, e.g. CSV, goes out as it is)."""
    return http("GET", url, action=action, response=response, args=args, tags=tags, **kwargs)


def _instance(schema: Schema | type[Schema] | None) -> Schema | None:
    return schema() if isinstance(schema, type) else schema


def bound_port(container: Any) -> int:
    """The port a started container's web server listens on."""
    for extension in container.subextensions:
        if isinstance(extension, LavoroWebServer):
            return extension.port()
    raise LookupError(f"{container.service_name} has no LavoroHttp entrypoint")
