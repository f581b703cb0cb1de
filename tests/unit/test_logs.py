"""Logging (shared.logs): JSON lines from structlog and the standard library alike, each with the
service and the ids bound for the event or request being handled; or, for a person at a
terminal, console lines with the same fields; which one, by `fmt` or by the terminal."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import logging

import eventlet
import pytest
import structlog

from shared.clock import UTC
from shared.logs import bind_event, bind_request, configure_logging, default_format, get_logger
from shared.records import RecordedEvent

EVENT_KEYS = ("event_id", "stream", "correlation_id", "causation_id")


@pytest.fixture
def lines():
    buffer = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("calls", level="DEBUG", stream=buffer)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


def an_event(**overrides) -> RecordedEvent:
    fields = dict(
        position=7,
        id="6f1c0d1e-0000-4000-8000-000000000007",
        stream="call-1",
        version=2,
        type="call_opened",
        schema_version=1,
        data={"title": "t"},
        correlation_id="corr-1",
        causation_id="cause-1",
        actor="ada",
        occurred_at=dt.datetime(2024, 3, 1, 9, 30, tzinfo=UTC),
        recorded_at=dt.datetime(2024, 3, 1, 9, 30, tzinfo=UTC),
        prev_hash="0" * 64,
        hash="1" * 64,
    )
    fields.update(overrides)
    return RecordedEvent(**fields)


def test_a_structlog_line_is_json_with_service_level_time_and_message(lines):
    get_logger("lavoro.test").info("call opened", amount=decimal.Decimal("10.50"))
    (line,) = lines()
    assert line["service"] == "calls"
    assert line["level"] == "info"
    assert line["logger"] == "lavoro.test"
    assert line["message"] == "call opened"
    assert line["amount"] == "10.50"
    assert dt.datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    assert list(line)[:5] == ["timestamp", "level", "service", "logger", "message"]


def test_bind_event_puts_the_event_ids_on_every_line_inside_the_block_only(lines):
    with bind_event(an_event()):
        get_logger("lavoro.test").info("applying")
        logging.getLogger("kombu.test").warning("from %s", "the standard library")
    get_logger("lavoro.test").info("after")

    applying, foreign, after = lines()
    expected = {
        "event_id": "6f1c0d1e-0000-4000-8000-000000000007",
        "stream": "call-1",
        "correlation_id": "corr-1",
        "causation_id": "cause-1",
    }
    for line in (applying, foreign):
        assert {k: line[k] for k in EVENT_KEYS} == expected
        assert line["event_type"] == "call_opened" and line["position"] == 7
    assert foreign["message"] == "from the standard library"
    assert foreign["logger"] == "kombu.test" and foreign["service"] == "calls"
    assert not set(EVENT_KEYS) & set(after)


def test_bind_event_reads_an_envelope_mapping_and_skips_absent_ids(lines):
    envelope = an_event(causation_id=None).envelope()
    with bind_event(envelope):
        get_logger().info("handled")
    (line,) = lines()
    assert line["event_id"] == envelope["id"] and line["stream"] == "call-1"
    assert "causation_id" not in line


def test_bind_request_and_nesting(lines):
    with bind_request("corr-9", actor="ada", command_id="cmd-9"):
        with bind_event(an_event(correlation_id="corr-9")):
            get_logger().info("inner")
        get_logger().info("outer")
    inner, outer = lines()
    assert inner["correlation_id"] == outer["correlation_id"] == "corr-9"
    assert inner["stream"] == "call-1" and "stream" not in outer
    assert outer["actor"] == "ada" and outer["command_id"] == "cmd-9"


def test_an_exception_is_rendered_into_the_json_line(lines):
    try:
        raise RuntimeError("broken")
    except RuntimeError:
        get_logger().exception("failed")
        logging.getLogger("nameko.test").exception("failed too")
    for line in lines():
        assert line["level"] == "error"
        assert "Traceback" in line["exception"] and "RuntimeError: broken" in line["exception"]


def test_greenthreads_start_unbound_but_always_carry_the_service(lines):
    def worker():
        get_logger().info("in worker, before binding")
        with bind_request("corr-w"):
            get_logger().info("in worker, bound")

    with bind_request("corr-parent"):
        eventlet.spawn(worker).wait()
    before, bound = lines()
    assert before["service"] == bound["service"] == "calls"
    assert "correlation_id" not in before  # a spawned greenthread does not inherit the context
    assert bound["correlation_id"] == "corr-w"


def test_expected_nameko_worker_errors_lose_only_their_traceback(lines):
    containers = logging.getLogger("nameko.containers")
    try:
        raise LookupError("no call c1")
    except LookupError as exc:
        containers.warning("(expected) error handling worker %s: %s", "w", exc, exc_info=True)
        containers.exception("error handling worker %s: %s", "w", exc)
    expected, unexpected = lines()
    assert expected["message"].endswith("no call c1") and "exception" not in expected
    assert "Traceback" in unexpected["exception"]


def test_configuring_again_replaces_the_handler_and_honours_the_level():
    root = logging.getLogger()
    level = root.level
    first, second = io.StringIO(), io.StringIO()
    try:
        configure_logging("calls", stream=first)
        handler = configure_logging("ledger", level="WARNING", stream=second)
        get_logger().info("dropped")
        get_logger().warning("kept")
        ours = [h for h in root.handlers if getattr(h, "_lavoro_handler", False)]
        assert ours == [handler]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()
    assert first.getvalue() == ""
    (line,) = [json.loads(text) for text in second.getvalue().splitlines()]
    assert (line["service"], line["message"]) == ("ledger", "kept")


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def configured():
    """configure_logging(...) for a test; undone afterwards."""
    root = logging.getLogger()
    level = root.level
    handlers = []

    def configure(stream, **kwargs):
        handlers.append(configure_logging("ledger", level="DEBUG", stream=stream, **kwargs))

    yield configure
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


def log_a_handled_event():
    with bind_request("corr-1", actor="ada"), bind_event(an_event(correlation_id="corr-1")):
        get_logger("lavoro.test").info("payment disbursed", amount=decimal.Decimal("10.50"))


def test_a_console_line_reads_time_service_level_message_then_the_key_fields(configured):
    out = io.StringIO()
    configured(out, fmt="console")
    log_a_handled_event()
    (line,) = out.getvalue().splitlines()
    assert "\x1b[" not in line  # no colours into a file or a pipe
    time, service, level, rest = line.split(maxsplit=3)
    assert dt.datetime.fromisoformat(time.replace("Z", "+00:00")).tzinfo is not None
    assert (service, level) == ("ledger", "[info")
    assert rest.startswith("] payment disbursed ")
    fields = rest.split("payment disbursed", 1)[1].split()
    assert fields == [
        "event_id=6f1c0d1e-0000-4000-8000-000000000007",
        "stream=call-1",
        "event_type=call_opened",
        "position=7",
        "correlation_id=corr-1",
        "causation_id=cause-1",
        "actor=ada",
        "amount=10.50",
        "logger=lavoro.test",
    ]


def test_a_json_line_has_the_same_fields(configured):
    out = io.StringIO()
    configured(out, fmt="json")
    log_a_handled_event()
    (line,) = [json.loads(text) for text in out.getvalue().splitlines()]
    assert list(line)[:5] == ["timestamp", "level", "service", "logger", "message"]
    assert (line["service"], line["level"], line["message"]) == (
        "ledger",
        "info",
        "payment disbursed",
    )
    assert line["event_id"] == "6f1c0d1e-0000-4000-8000-000000000007"
    assert (line["stream"], line["correlation_id"], line["amount"]) == ("call-1", "corr-1", "10.50")


def test_on_a_console_a_traceback_follows_its_line_and_an_expected_error_has_none(configured):
    out = io.StringIO()
    configured(out, fmt="console")
    try:
        raise RuntimeError("broken")
    except RuntimeError as exc:
        get_logger().exception("failed")
        logging.getLogger("nameko.containers").warning("(expected) %s", exc, exc_info=True)
    lines = out.getvalue().splitlines()
    assert "[error" in lines[0] and "failed" in lines[0]
    assert lines[1] == "Traceback (most recent call last):"
    assert "RuntimeError: broken" in lines
    assert "(expected) broken" in lines[-1]  # the last line: no traceback after it


def test_the_format_follows_the_terminal_unless_told(configured):
    assert default_format(Terminal()) == "console" and default_format(io.StringIO()) == "json"
    terminal = Terminal()
    configured(terminal)
    get_logger().info("for a person")
    assert not terminal.getvalue().startswith("{") and "for a person" in terminal.getvalue()
    assert "\x1b[" in terminal.getvalue()  # a terminal gets colours
    told = Terminal()
    configured(told, fmt="json")
    get_logger().info("for a machine")
    assert json.loads(told.getvalue())["message"] == "for a machine"
    with pytest.raises(ValueError, match="log format 'xml': expected json or console"):
        configure_logging("ledger", stream=io.StringIO(), fmt="xml")
