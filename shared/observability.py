"""Watching a running service: `GET /health`, `GET /metrics`, and the figures both read.

A service inherits `Observable` and gets, with nothing else to write:

- `GET /health`, public (no token, for load balancers and compose healthchecks): its database
  (the log head answers), the broker (a connection opens), its relay (leading or standing by,
  and its lag), its tokens file (read, or broken with the last good tokens in force). JSON;
  503 and `failing` when the database, the broker or the relay fails; else 200, `degraded`
  when the tokens file is broken, `ok` when all is well.
- `GET /metrics`, public, Prometheus text (prometheus-client): events appended (the log head:
  gapless positions make it the exact count, whichever replica appended), relay lag, handler
  successes and failures, dead letters, inbox size, projection lag, and a histogram of HTTP
  latency by method, route and status. Every label is bounded: a method outside `HTTP_METHODS`
  is `other`, a route is the rule that matched (`/calls/<call_id>`) or `unmatched`. Each container has its own registry, so two services in
  one process (tests) never mix their numbers.

`read_figures(engine)` is the one definition of the log's numbers (head, relay lag, inbox, dead
letters, projection checkpoints); `lavoro status` reads them from the service's database with it,
and the metrics come from it too.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.wrappers import Response

from shared import failover
from shared import tables as t
from shared.auth import Tokens
from shared.broker import client_properties, connection_name
from shared.chain import GENESIS
from shared.consumer import consumer_stats
from shared.dependencies import store_for
from shared.relay import RelayExtension
from shared.web import LavoroHttp, LavoroWebServer, http, json_response

RELAY_CHECKPOINT = "relay"
PROJECTION_PREFIX = "projection:"
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The values the `method` and `route` labels may take: every label is bounded, whatever is sent.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
BROKER_TIMEOUT = 2.0  # seconds: a health check must answer well within a healthcheck's timeout

# Database trouble a health check or a scrape reports rather than raises.
_DB_ERRORS = (sa.exc.DBAPIError, sa.exc.TimeoutError, OSError)


# -- the log's figures -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LogFigures:
    """What a service's database says about its log and the work behind it."""

    head_position: int
    head_hash: str
    relay_checkpoint: int
    inbox: int  # events of other services handled (the inbox's rows)
    dead_letters: dict[str, int]  # rows by status: parked, retrying, retried, skipped
    projections: dict[str, int]  # projection name -> checkpoint

    @property
    def relay_lag(self) -> int:
        """Events the broker has not confirmed yet."""
        return self.head_position - self.relay_checkpoint

    @property
    def parked(self) -> int:
        return self.dead_letters.get("parked", 0)

    @property
    def projection_lag(self) -> int:
        """The most any projection is behind the head (0 without projections)."""
        return max((self.head_position - cp for cp in self.projections.values()), default=0)

    def to_json(self) -> dict[str, Any]:
        return {
            "head_position": self.head_position,
            "head_hash": self.head_hash,
            "relay_lag": self.relay_lag,
            "inbox": self.inbox,
            "dead_letters": self.parked,
            "projection_lag": self.projection_lag,
            "projections": {name: self.head_position - cp for name, cp in self.projections.items()},
        }


def read_figures(engine: Engine, projections: Iterable[str] | None = None) -> LogFigures:
    """The figures, read in one connection. `projections`: the names whose lag counts (a
    projection that never ran counts from 0); None: every projection checkpoint found."""
    with engine.connect() as conn:
        head = conn.execute(
            sa.select(t.log_head.c.position, t.log_head.c.hash).where(t.log_head.c.id == 1)
        ).one_or_none()
        stored = {
            row.name: int(row.position)
            for row in conn.execute(sa.select(t.checkpoints.c.name, t.checkpoints.c.position))
        }
        inbox = conn.execute(sa.select(sa.func.count()).select_from(t.inbox)).scalar_one()
        dead = {
            status: int(count)
            for status, count in conn.execute(
                sa.select(t.dead_letters.c.status, sa.func.count()).group_by(
                    t.dead_letters.c.status
                )
            )
        }
    if projections is None:
        folded = {
            name[len(PROJECTION_PREFIX) :]: position
            for name, position in stored.items()
            if name.startswith(PROJECTION_PREFIX)
        }
    else:
        folded = {name: stored.get(PROJECTION_PREFIX + name, 0) for name in projections}
    return LogFigures(
        head_position=int(head.position) if head else 0,
        head_hash=str(head.hash) if head else GENESIS,
        relay_checkpoint=stored.get(RELAY_CHECKPOINT, 0),
        inbox=int(inbox),
        dead_letters=dead,
        projections=folded,
    )


# -- asking a running service --------------------------------------------------------------------


def local_url(address: str, path: str = "") -> str:
    """`http://host:port<path>` for a bind address; `0.0.0.0` and `::` mean this machine."""
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}{path}"


def fetch_health(address: str, timeout: float = 3.0) -> tuple[str, dict[str, Any]]:
    """("up" | "failing" | "down", the health body or an error) from a service's `/health`."""
    try:
        with urllib.request.urlopen(local_url(address, "/health"), timeout=timeout) as reply:
            return "up", json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        # It answers, so it is not down; 503 is its own verdict, anything else (a 404 from a
        # service without Observable) says it cannot tell.
        try:
            body = json.loads(exc.read())
        except ValueError:
            body = {}
        if exc.code != 503 or "checks" not in body:
            body = {"error": f"/health answered HTTP {exc.code}"}
        return "failing", body
    except (OSError, ValueError) as exc:  # refused, timed out, not JSON
        reason = getattr(exc, "reason", None) or exc
        return "down", {"error": str(reason)}


def broker_answers(
    amqp_uri: str, timeout: float = BROKER_TIMEOUT, *, name: str = "lavoro-health"
) -> str | None:
    """None if the broker accepts a connection (and our credentials), else why not. The
    connection is named `name` and closed at once. With several nodes in `amqp_uri` (a
    cluster), one that accepts is enough: the service's connections fail over to it."""
    try:
        conn, _node = failover.connect(
            amqp_uri,
            connect_timeout=timeout,
            client_properties=client_properties(name),
        )
    except failover.CONNECT_ERRORS as exc:
        notes = " (" + "; ".join(exc.__notes__) + ")" if getattr(exc, "__notes__", None) else ""
        return f"{type(exc).__name__}: {exc}".strip() + notes
    conn.collect()
    return None


# -- in the service ------------------------------------------------------------------------------


class _Collector:
    """Reads the database figures and the consumer's counters at each scrape."""

    def __init__(self, provider: Observability) -> None:
        self.provider = provider

    def describe(self) -> list[Metric]:
        return []  # no reading at registration time: the database may not be up yet

    def collect(self) -> Iterator[Metric]:
        provider = self.provider
        service = provider.container.service_name
        labels = ["service"]
        up = GaugeMetricFamily(
            "lavoro_database_up", "1 if the service's database answered this scrape", labels=labels
        )
        try:
            figures = read_figures(provider.engine(), provider.projection_names())
        except (*_DB_ERRORS, LookupError):
            figures = None
        up.add_metric([service], 0 if figures is None else 1)
        yield up
        if figures is not None:
            yield from _figure_metrics(service, figures)
        yield from _relay_metrics(service, provider.relay())
        yield from _consumer_metrics(service, consumer_stats(provider.container))


def _figure_metrics(service: str, figures: LogFigures) -> Iterator[Metric]:
    appended = CounterMetricFamily(
        "lavoro_events_appended",
        "Events appended to the service's log (its head position), by any replica",
        labels=["service"],
    )
    appended.add_metric([service], figures.head_position)
    yield appended
    lag = GaugeMetricFamily(
        "lavoro_relay_lag_events",
        "Events in the log the broker has not confirmed yet",
        labels=["service"],
    )
    lag.add_metric([service], figures.relay_lag)
    yield lag
    inbox = GaugeMetricFamily(
        "lavoro_inbox_events", "Events of other services handled (inbox rows)", labels=["service"]
    )
    inbox.add_metric([service], figures.inbox)
    yield inbox
    dead = GaugeMetricFamily(
        "lavoro_dead_letters", "Dead letters by status", labels=["service", "status"]
    )
    for status in ("parked", "retrying", "retried", "skipped", "refused"):
        dead.add_metric([service, status], figures.dead_letters.get(status, 0))
    yield dead
    projection = GaugeMetricFamily(
        "lavoro_projection_lag_events",
        "Events a projection has not folded yet",
        labels=["service", "projection"],
    )
    for name, checkpoint in sorted(figures.projections.items()):
        projection.add_metric([service, name], figures.head_position - checkpoint)
    yield projection


def _relay_metrics(service: str, relay: Any) -> Iterator[Metric]:
    leading = GaugeMetricFamily(
        "lavoro_relay_leading", "1 if this process's relay holds the lock", labels=["service"]
    )
    leading.add_metric([service], 1 if relay is not None and relay.state == "leading" else 0)
    yield leading
    if relay is not None:
        published = CounterMetricFamily(
            "lavoro_relay_published_events",
            "Events this process's relay published and had confirmed",
            labels=["service"],
        )
        published.add_metric([service], relay.published)
        yield published
        reconnects = CounterMetricFamily(
            "lavoro_relay_reconnects", "Failed relay passes recovered from", labels=["service"]
        )
        reconnects.add_metric([service], relay.reconnects)
        yield reconnects


def _consumer_metrics(service: str, stats: Any) -> Iterator[Metric]:
    successes = CounterMetricFamily(
        "lavoro_handler_successes", "Events of other services handled", labels=["service"]
    )
    successes.add_metric([service], stats.get("handled", 0))
    yield successes
    failures = CounterMetricFamily(
        "lavoro_handler_failures",
        "Failed tries at handling an event (retried in place, or parked)",
        labels=["service"],
    )
    failures.add_metric([service], stats.get("retries", 0) + stats.get("parked", 0))
    yield failures
    outcomes = CounterMetricFamily(
        "lavoro_consumer_events",
        "What the consumer did with each delivery, by outcome",
        labels=["service", "outcome"],
    )
    for outcome, count in sorted(stats.items()):
        outcomes.add_metric([service, outcome], count)
    yield outcomes


class Watch:
    """What the Observable endpoints get: the health report and the metrics text."""

    def __init__(self, provider: Observability) -> None:
        self._provider = provider

    def health(self) -> tuple[bool, dict[str, Any]]:
        return self._provider.health()

    def exposition(self) -> bytes:
        return generate_latest(self._provider.registry)


class Observability(DependencyProvider):
    """The registry, the collector and the HTTP timing of one container."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_seconds: Histogram | None = None

    def setup(self) -> None:
        self.registry = CollectorRegistry()
        self.http_seconds = Histogram(
            "lavoro_http_request_duration_seconds",
            "HTTP requests by method, route and status, from first byte in to response",
            ["service", "method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Collector(self))
        for extension in self.container.subextensions:
            if isinstance(extension, LavoroWebServer):
                # Wrap the app the server builds at start: every request is timed, including
                # the 401s and 404s that never reach a worker.
                build = extension.get_wsgi_app
                extension.get_wsgi_app = functools.partial(self._timed_app, build)  # type: ignore[method-assign,assignment]

    def get_dependency(self, worker_ctx: Any) -> Watch:
        return Watch(self)

    # Methods, not properties: nameko reads every attribute of an extension before it is bound.
    def engine(self) -> Engine:
        return store_for(self.container).engine()

    def projection_names(self) -> list[str]:
        projections = store_for(self.container).projections
        return [p.name for p in projections if hasattr(p, "checkpoint_name")]

    def relay(self) -> Any:
        for dependency in self.container.dependencies:
            if isinstance(dependency, RelayExtension):
                return dependency.relay
        return None

    def health(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, dict[str, Any]] = {}
        try:
            figures = read_figures(self.engine(), self.projection_names())
            checks["database"] = {
                "ok": True,
                "head_position": figures.head_position,
                "head_hash": figures.head_hash,
            }
        except (*_DB_ERRORS, LookupError) as exc:
            figures = None
            checks["database"] = {"ok": False, "error": _one_line(exc)}
        refused = broker_answers(
            self.container.config[AMQP_URI_CONFIG_KEY],
            name=connection_name("health", self.container.service_name),
        )
        checks["broker"] = {"ok": True} if refused is None else {"ok": False, "error": refused}
        relay = self.relay()
        if relay is None:
            checks["relay"] = {"ok": False, "error": "the service has no RelayExtension"}
        else:
            # A standby replica is healthy: it takes over when the leader goes.
            checks["relay"] = {
                "ok": relay.state in ("leading", "standby"),
                "state": relay.state,
                "lag": figures.relay_lag if figures is not None else None,
            }
        ok = all(check["ok"] for check in checks.values())
        tokens = self.tokens()
        problem = tokens.problem if tokens is not None else None
        if tokens is not None:
            # Degraded, not failing: the last good tokens still serve every request.
            checks["tokens"] = {"ok": True} if problem is None else {"ok": False, "error": problem}
        body = {
            "service": self.container.service_name,
            "status": "failing" if not ok else "degraded" if problem else "ok",
            "checks": checks,
        }
        return ok, body

    def tokens(self) -> Tokens | None:
        for extension in self.container.subextensions:
            if isinstance(extension, LavoroWebServer):
                return extension.tokens
        return None

    def _timed_app(self, build: Callable[[], Any]) -> Callable[..., Any]:
        app = build()
        service = self.container.service_name
        histogram = self.http_seconds
        assert histogram is not None

        def timed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            started = time.perf_counter()
            status = ["500"]

            def capture(line: str, headers: Any, exc_info: Any = None) -> Any:
                status[0] = line.split(" ", 1)[0]
                return start_response(line, headers, exc_info)

            try:
                return app(environ, capture)
            finally:
                histogram.labels(
                    service, _method(environ), _route(app, environ), status[0]
                ).observe(time.perf_counter() - started)

        return timed


def _method(environ: dict[str, Any]) -> str:
    # The client chooses the method: an unknown one is "other", or each would be a label set.
    method = environ.get("REQUEST_METHOD", "")
    return method if method in HTTP_METHODS else "other"


def _route(app: Any, environ: dict[str, Any]) -> str:
    # The rule, never the path (the client chooses it): `/calls/<call_id>` for every call, the
    # rule too for a method it does not allow, "unmatched" for any path no rule has.
    adapter = app.url_map.bind_to_environ(environ)
    try:
        rule, _ = adapter.match(return_rule=True)
    except MethodNotAllowed as exc:
        allowed = sorted(exc.valid_methods or ())
        if not allowed:
            return UNMATCHED
        try:
            rule, _ = adapter.match(method=allowed[0], return_rule=True)
        except HTTPException:
            return UNMATCHED
    except HTTPException:
        return UNMATCHED
    return str(rule.rule)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()


class _TextHttp(LavoroHttp):
    """A LavoroHttp entrypoint that may also answer plain text (the Prometheus exposition)."""

    def response_from_result(self, result: Any) -> Response:
        if isinstance(result, Response) and result.mimetype == "text/plain":
            return result
        return super().response_from_result(result)


class Observable:
    """Inherit it to serve `/health` and `/metrics` (see the module docstring)."""

    observability = Observability()

    @http("GET", "/health", public=True)
    def health(self, request: Any) -> Response:
        ok, body = self.observability.health()
        return json_response(200 if ok else 503, body)

    @_TextHttp.decorator("GET", "/metrics", public=True)
    def metrics(self, request: Any) -> Response:
        return Response(self.observability.exposition(), content_type=CONTENT_TYPE_LATEST)
