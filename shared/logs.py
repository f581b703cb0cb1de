"""Logging: one JSON object a line on stdout, for structlog and standard-library loggers alike.

Every line carries `service`, `level`, `logger`, `timestamp` and `message`, plus whatever is bound
in the current context: `event_id`, `stream`, `correlation_id`, `causation_id` while an event is
handled (`bind_event`), `correlation_id`, `actor`, `command_id` while a request is served
(`bind_request`). The text goes under `message` rather than structlog's default `event`, which in
an event-sourced system would read as a domain event.

Context is kept in contextvars. Under eventlet every greenthread starts with an empty context (a
spawned worker does not inherit its spawner's), so bind in the greenthread that does the work; the
service name is added by a processor, not bound, so that it is on every line of every greenthread.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

import structlog
from structlog.contextvars import bound_contextvars, merge_contextvars
from structlog.typing import EventDict, Processor, WrappedLogger

from shared.clock import format_ts

_HANDLER_MARK = "_lavoro_handler"


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return format_ts(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return repr(value)  # a log line must never fail to render


def _dumps(event_dict: Any, **kwargs: Any) -> str:
    return json.dumps(event_dict, default=_json_default, ensure_ascii=False)


def _add_service(service: str) -> Processor:
    def add_service(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


_FIRST = ("timestamp", "level", "service", "logger", "message")


def _first_keys_first(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    # The same few keys lead every line, so a person reading the raw stream finds them.
    ordered = {key: event_dict.pop(key) for key in _FIRST if key in event_dict}
    ordered.update(event_dict)
    return ordered


class _ExpectedErrorsWithoutTraceback(logging.Filter):
    """nameko logs a worker's *expected* exception (a domain refusal: 404, 409...) as a warning
    with its traceback. The edge logs the refusal with its reason; the traceback of a rule doing
    its job is noise, so it is dropped. Unexpected errors keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "nameko.containers" and str(record.msg).startswith("(expected)"):
            record.exc_info = None
            record.exc_text = None
        return True


def configure_logging(
    service: str, level: str | int = "INFO", *, stream: IO[str] | None = None
) -> logging.Handler:
    """Send every log line of this process to `stream` (stdout) as JSON. Calling it again replaces
    the handler it installed before; other handlers on the root logger are left alone. Returns
    the handler (tests remove it when done)."""
    shared: list[Processor] = [
        merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _add_service(service),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger taken at import time must follow a later configure_logging.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("message"),
            _first_keys_first,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(formatter)
    handler.addFilter(_ExpectedErrorsWithoutTraceback())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    return handler


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)


def _bind(values: Mapping[str, Any]) -> Any:
    return bound_contextvars(**{k: v for k, v in values.items() if v is not None})


def _field(event: Any, name: str) -> Any:
    if isinstance(event, Mapping):
        return event.get(name)
    return getattr(event, name, None)


@contextmanager
def bind_event(event: Any) -> Iterator[None]:
    """Bind an event's `event_id`, `stream`, `event_type`, `position`, `correlation_id` and
    `causation_id` for the lines logged inside the block. `event` is a RecordedEvent or its JSON
    envelope (a mapping with `id`, `stream`, ...)."""
    with _bind(
        {
            "event_id": _field(event, "id"),
            "stream": _field(event, "stream"),
            "event_type": _field(event, "type"),
            "position": _field(event, "position"),
            "correlation_id": _field(event, "correlation_id"),
            "causation_id": _field(event, "causation_id"),
        }
    ):
        yield


@contextmanager
def bind_request(
    correlation_id: str | None = None,
    *,
    actor: str | None = None,
    command_id: str | None = None,
    **extra: Any,
) -> Iterator[None]:
    """Bind a request's correlation id, actor, command id (and any `extra`) inside the block."""
    with _bind(
        {"correlation_id": correlation_id, "actor": actor, "command_id": command_id, **extra}
    ):
        yield
