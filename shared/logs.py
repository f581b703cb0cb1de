"""Logging: every line of a process on stdout, for structlog and standard-library loggers alike,
in one of two formats (`LOG_FORMAT`, read by shared.config):

- `json`: one JSON object a line, for machines (containers, CI, anything reading a pipe);
- `console`: structlog's ConsoleRenderer, for a person at a terminal: time, service, level,
  message, then the ids bound (event id, stream, correlation id, ...), then the rest as
  key=value; colours only on a terminal, a traceback after its line.

Unset, it is `console` when stdout is a terminal and `json` when it is not.

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
import os
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
FORMATS = ("json", "console")
# After time, service, level and message, what a person looks for first on a console line.
KEY_FIELDS = (
    "event_id",
    "stream",
    "event_type",
    "position",
    "correlation_id",
    "causation_id",
    "actor",
    "command_id",
)
SERVICE_WIDTH = 12  # the longest registered name, safeguarding: the messages line up


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


def _key_fields_first(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    # Console: the key fields in a fixed order after the columns, the logger's name last.
    ordered = {key: event_dict.pop(key) for key in KEY_FIELDS if key in event_dict}
    logger = event_dict.pop("logger", None)
    ordered.update(event_dict)
    if logger is not None:
        ordered["logger"] = logger
    return ordered


def default_format(stream: IO[str]) -> str:
    """`console` when `stream` is a terminal, else `json`."""
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def _console_value(value: Any) -> str:
    # As structlog shows a value (a string with spaces or quotes in quotes), but an amount, an
    # id or a time as the JSON line has it: `10.50`, not `Decimal('10.50')`.
    if isinstance(value, str):
        return repr(value) if set(value) & set(" \t=\r\n\"'") else value
    if isinstance(value, decimal.Decimal | uuid.UUID | dt.date):
        return str(_json_default(value))
    return repr(value)


def _console_renderer(colors: bool) -> structlog.dev.ConsoleRenderer:
    renderer = structlog.dev.ConsoleRenderer(
        colors=colors,
        event_key="message",
        sort_keys=False,
        pad_event_to=40,
        # No locals in a traceback: they may hold personal data or a token.
        exception_formatter=structlog.dev.plain_traceback,
    )

    def style(code: str) -> str:
        return code if colors else ""

    reset = style(structlog.dev.RESET_ALL)
    fields = structlog.dev.Column(
        "",
        structlog.dev.KeyValueColumnFormatter(
            key_style=style(structlog.dev.CYAN),
            value_style=style(structlog.dev.MAGENTA),
            reset_style=reset,
            value_repr=_console_value,
        ),
    )
    service = structlog.dev.Column(
        "service",
        structlog.dev.KeyValueColumnFormatter(
            key_style=None,
            value_style=style(structlog.dev.BLUE),
            reset_style=reset,
            value_repr=str,
            width=SERVICE_WIDTH,
        ),
    )
    # Its own columns: timestamp, level, message, logger. The service goes after the time, the
    # logger's name to the end of the line (_key_fields_first), the rest as key=value.
    columns = [c for c in renderer.columns if c.key not in ("", "logger", "logger_name")]
    at = next(i for i, c in enumerate(columns) if c.key == "timestamp") + 1
    renderer.columns = [fields, *columns[:at], service, *columns[at:]]
    return renderer


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
    service: str,
    level: str | int = "INFO",
    *,
    stream: IO[str] | None = None,
    fmt: str | None = None,
) -> logging.Handler:
    """Send every log line of this process to `stream` (stdout), as `fmt` (`json` or `console`;
    None: `default_format(stream)`). Calling it again replaces the handler it installed before;
    other handlers on the root logger are left alone. Returns the handler (tests remove it)."""
    out = stream if stream is not None else sys.stdout
    fmt = fmt or default_format(out)
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: expected json or console")
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
    rendering: list[Processor]
    if fmt == "json":
        rendering = [
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("message"),
            _first_keys_first,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
    else:
        colors = default_format(out) == "console" and not os.environ.get("NO_COLOR")
        rendering = [
            structlog.processors.EventRenamer("message"),
            _key_fields_first,
            _console_renderer(colors),
        ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
    )
    handler = logging.StreamHandler(out)
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
