"""The HTTP edge (shared.web) on a real nameko container and a real socket: JSON on every answer,
tokens and roles, Idempotency-Key, schema loading, the error mapping, and the ids handed to the
worker. No broker is needed: the test service has HTTP entrypoints only."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import io
import json
import logging
import socket
import uuid
from types import SimpleNamespace

import pytest
import requests
import structlog
from marshmallow import Schema, fields
from nameko.extensions import DependencyProvider
from nameko.testing.utils import get_extension
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.wrappers import Response

from shared.auth import issue_token
from shared.clock import UTC
from shared.errors import Conflict, NotFound
from shared.logs import configure_logging, get_logger
from shared.observability import Observable
from shared.ports import PortInUse
from shared.web import (
    ACTOR_KEY,
    COMMAND_ID_KEY,
    CORRELATION_ID_KEY,
    IDEMPOTENCY_KEY_KEY,
    REQUEST_DIGEST_KEY,
    ROLE_KEY,
    bound_port,
    command,
    http,
    json_response,
    query,
    scoped_command_id,
)

OPERATOR = "op-" + uuid.uuid4().hex
OPENED_AT = dt.datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
MAX_BODY = 500_000  # the edge fixture's LAVORO_MAX_BODY_BYTES: the 200,000-deep body fits
JSON = {"Content-Type": "application/json"}
worker_log = get_logger("tests.edge")


class WorkerData(DependencyProvider):
    """Records what the store dependency would read: nameko's worker context data."""

    def setup(self) -> None:
        self.seen: list[dict] = []

    def get_dependency(self, worker_ctx):
        self.seen.append(dict(worker_ctx.data))
        return worker_ctx.data


class OpenCall(Schema):
    title = fields.String(required=True)
    budget = fields.Decimal(required=True)


class EndCall(Schema):
    reason = fields.String(load_default=None)


class EdgeService:
    name = "edge_test"
    data = WorkerData()

    @command("POST", "/calls", schema=OpenCall)
    def open_call(self, cmd):
        title = cmd.data["title"]
        if title == "boom":
            raise RuntimeError("secret detail of a bug")
        if title == "taken":
            raise Conflict("a call with this title exists", fields={"title": ["taken"]})
        worker_log.info("opening call", title=title)
        body = {
            "title": title,
            "budget": cmd.data["budget"],
            "command_id": cmd.id,
            "key": cmd.key,
            "actor": cmd.actor,
            "opened_at": OPENED_AT,
        }
        return json_response(201, body, {"Location": "/calls/1"})

    @command("POST", "/calls/<call_id>/close")
    def close_call(self, cmd, call_id):
        return {"closed": call_id, "data": cmd.data}

    @command("POST", "/calls/<call_id>/end", schema=EndCall)
    def end_call(self, cmd, call_id):
        return {"ended": call_id, "reason": cmd.data["reason"]}

    @query("/calls/<call_id>")
    def get_call(self, request, call_id):
        if call_id == "missing":
            raise NotFound(f"no call {call_id}")
        if call_id == "boom":
            raise ValueError("secret detail of a bug")
        return {"call_id": call_id, "budget": decimal.Decimal("1000.50")}

    @query("/audit/head", action="audit")
    def audit_head(self, request):
        return {"position": 0}

    @query("/export.csv")
    def export(self, request):
        return Response("position,total\n1,88.50\n", mimetype="text/csv")

    @query("/text")
    def text(self, request):
        return Response("plain words", mimetype="text/plain")

    @http("GET", "/health", public=True)
    def health(self, request):
        return "ok"


@pytest.fixture
def log_lines():
    """Every log line of the process during the test, parsed (they must all be JSON)."""
    buffer = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("edge_test", stream=buffer)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
def edge(container_factory, tmp_path):
    """The running test service: its base url, a token per role, the WorkerData provider."""
    tokens_file = tmp_path / "tokens.json"
    auditor = issue_token(tokens_file, "bea", "auditor")
    config = {
        "AMQP_URI": "memory://",
        "WEB_SERVER_ADDRESS": "127.0.0.1:0",
        "LAVORO_TOKENS_FILE": str(tokens_file),
        "LAVORO_TOKENS": f"ada:operator:{OPERATOR}",
        "LAVORO_MAX_BODY_BYTES": MAX_BODY,
    }
    container = container_factory(EdgeService, config)
    container.start()
    yield SimpleNamespace(
        base=f"http://127.0.0.1:{bound_port(container)}",
        tokens={"operator": OPERATOR, "auditor": auditor},
        data=get_extension(container, WorkerData),
        tokens_file=tokens_file,
    )
    container.stop()


def send(method, url, *, token=None, key=None, headers=None, **kwargs):
    """One request; every answer must be JSON whatever happened."""
    all_headers = dict(headers or {})
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    if key:
        all_headers["Idempotency-Key"] = key
    response = requests.request(method, url, headers=all_headers, timeout=5, **kwargs)
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    response.body = response.json()
    return response


def test_read_returns_json_with_decimal_as_string_and_echoes_correlation_id(edge):
    base, tokens = edge.base, edge.tokens
    for role in ("operator", "auditor"):
        response = send(
            "GET", f"{base}/calls/c1", token=tokens[role], headers={"X-Correlation-Id": "req-1"}
        )
        assert response.status_code == 200
        assert response.body == {"call_id": "c1", "budget": "1000.50"}
        assert response.headers["X-Correlation-Id"] == "req-1"


def test_a_request_without_a_known_token_gets_401(edge):
    base, data = edge.base, edge.data
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {OPERATOR}"}):
        response = send("GET", f"{base}/calls/c1", headers=headers)
        assert response.status_code == 401
        assert response.body["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert data.seen == []  # no worker ran


def test_roles_decide_what_a_token_may_do(edge):
    base, tokens = edge.base, edge.tokens
    by_auditor = send(
        "POST", f"{base}/calls", token=tokens["auditor"], key="k1", json={"title": "t"}
    )
    assert by_auditor.status_code == 403
    assert by_auditor.body["error"] == "forbidden"
    assert by_auditor.body["details"] == {"role": "auditor", "action": "command"}

    assert send("GET", f"{base}/audit/head", token=tokens["operator"]).status_code == 403
    assert send("GET", f"{base}/audit/head", token=tokens["auditor"]).body == {"position": 0}


def test_a_public_endpoint_needs_no_token_and_still_answers_json(edge):
    base = edge.base
    response = send("GET", f"{base}/health")
    assert (response.status_code, response.body) == (200, "ok")


def test_a_command_hands_its_ids_to_the_worker_and_the_method(edge):
    base, tokens, data = edge.base, edge.tokens, edge.data
    body = b'{"title": "Work 2024", "budget": 1000.10}'
    response = send(
        "POST",
        f"{base}/calls",
        token=tokens["operator"],
        key="cmd-1",
        headers={"X-Correlation-Id": "corr-1", **JSON},
        data=body,
    )
    assert response.status_code == 201, response.body
    assert response.body == {
        "title": "Work 2024",
        "budget": "1000.10",  # parsed as Decimal, never a float
        # The key, scoped to the actor and the endpoint: the id the log records.
        "command_id": scoped_command_id("ada", "POST", "/calls", "cmd-1"),
        "key": "cmd-1",
        "actor": "ada",
        "opened_at": "2024-03-01T09:30:00.000000Z",
    }
    assert response.headers["Location"] == "/calls/1"
    assert response.headers["X-Correlation-Id"] == "corr-1"
    assert data.seen == [
        {
            ACTOR_KEY: "ada",
            ROLE_KEY: "operator",
            CORRELATION_ID_KEY: "corr-1",
            COMMAND_ID_KEY: scoped_command_id("ada", "POST", "/calls", "cmd-1"),
            IDEMPOTENCY_KEY_KEY: "cmd-1",
            REQUEST_DIGEST_KEY: hashlib.sha256(body).hexdigest(),
        }
    ]
    ids = {
        scoped_command_id(*scope)
        for scope in [
            ("ada", "POST", "/calls", "cmd-1"),
            ("bea", "POST", "/calls", "cmd-1"),
            ("ada", "POST", "/calls/c1/close", "cmd-1"),
            ("ada", "PUT", "/calls", "cmd-1"),
            ("ada", "POST", "/calls", "cmd-2"),
        ]
    }
    assert len(ids) == 5 and all(len(i) == 64 for i in ids)


def test_without_x_correlation_id_a_new_uuid_is_made_and_given_back(edge):
    base, tokens, data = edge.base, edge.tokens, edge.data
    response = send("POST", f"{base}/calls/c9/close", token=tokens["operator"], key="close-c9")
    assert response.status_code == 200
    assert response.body == {"closed": "c9", "data": {}}
    correlation_id = response.headers["X-Correlation-Id"]
    assert uuid.UUID(correlation_id).version == 4
    assert data.seen[-1][CORRELATION_ID_KEY] == correlation_id


@pytest.mark.parametrize(
    ("key", "status"),
    [(None, 400), ("", 400), ("k" * 201, 422), ("with space", 422)],
)
def test_a_command_needs_a_sound_idempotency_key(edge, key, status):
    base, tokens, data = edge.base, edge.tokens, edge.data
    headers = {"Idempotency-Key": key} if key is not None else {}
    response = send(
        "POST", f"{base}/calls", token=tokens["operator"], headers=headers, json={"title": "t"}
    )
    assert response.status_code == status
    assert list(response.body["fields"]) == ["Idempotency-Key"]
    assert "Idempotency-Key" in response.body["message"]
    assert data.seen == []


def test_an_idempotency_key_of_200_characters_is_accepted(edge):
    base, tokens, data = edge.base, edge.tokens, edge.data
    key = "k" * 200
    response = send(
        "POST",
        f"{base}/calls",
        token=tokens["operator"],
        key=key,
        json={"title": "t", "budget": "1"},
    )
    assert response.status_code == 201
    assert data.seen[-1][IDEMPOTENCY_KEY_KEY] == key


def test_a_body_the_schema_refuses_is_422_naming_each_field(edge):
    base, tokens, data = edge.base, edge.tokens, edge.data
    response = send(
        "POST",
        f"{base}/calls",
        token=tokens["operator"],
        key="k2",
        json={"budget": "lots", "colour": "red"},
    )
    assert response.status_code == 422
    assert response.body["error"] == "invalid_input"
    assert set(response.body["fields"]) == {"title", "budget", "colour"}
    assert all(isinstance(m, list) and m for m in response.body["fields"].values())
    assert data.seen == []


def test_a_malformed_json_body_is_400_naming_it(edge):
    base, tokens = edge.base, edge.tokens
    response = send(
        "POST",
        f"{base}/calls",
        token=tokens["operator"],
        key="k3",
        headers=JSON,
        data='{"title": "t",',
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.body["message"]
    assert list(response.body["fields"]) == ["body"]


def test_domain_errors_take_status_and_body_from_the_one_mapping(edge):
    base, tokens = edge.base, edge.tokens
    conflict = send(
        "POST",
        f"{base}/calls",
        token=tokens["operator"],
        key="k4",
        json={"title": "taken", "budget": "1"},
    )
    assert conflict.status_code == 409
    assert (
        conflict.body
        == Conflict("a call with this title exists", fields={"title": ["taken"]}).to_body()
    )
    missing = send("GET", f"{base}/calls/missing", token=tokens["auditor"])
    assert missing.status_code == 404
    assert missing.body == {"error": "not_found", "message": "no call missing", "fields": {}}


def test_a_bug_is_a_json_500_with_an_id_and_its_traceback_only_in_the_log(edge, log_lines):
    base, tokens = edge.base, edge.tokens
    for method, url, kwargs in [
        ("GET", f"{base}/calls/boom", {}),
        ("POST", f"{base}/calls", {"key": "k5", "json": {"title": "boom", "budget": "1"}}),
    ]:
        response = send(method, url, token=tokens["operator"], **kwargs)
        assert response.status_code == 500
        error_id = response.headers["X-Correlation-Id"]
        assert response.body == {"error": "internal", "message": "internal error", "id": error_id}
        assert "secret" not in response.text and "Traceback" not in response.text

        failures = [
            line
            for line in log_lines()
            if line["message"] == "http request failed" and line["correlation_id"] == error_id
        ]
        assert len(failures) == 1
        assert failures[0]["level"] == "error"
        assert failures[0]["service"] == "edge_test"
        assert "Traceback" in failures[0]["exception"]
        assert "secret detail of a bug" in failures[0]["exception"]


def test_lines_logged_by_the_method_carry_the_request_ids(edge, log_lines):
    base, tokens = edge.base, edge.tokens
    send(
        "POST",
        f"{base}/calls",
        token=tokens["operator"],
        key="k6",
        headers={"X-Correlation-Id": "corr-6"},
        json={"title": "logged", "budget": "2"},
    )
    opening = [line for line in log_lines() if line["message"] == "opening call"]
    assert len(opening) == 1
    assert opening[0]["correlation_id"] == "corr-6"
    assert opening[0]["actor"] == "ada"
    assert opening[0]["idempotency_key"] == "k6"
    assert opening[0]["command_id"] == scoped_command_id("ada", "POST", "/calls", "k6")
    access = [line for line in log_lines() if line["message"] == "http request"]
    assert access[-1]["status"] == 201 and access[-1]["correlation_id"] == "corr-6"


def test_unknown_urls_wrong_methods_and_bad_correlation_ids_are_json_too(edge):
    base, tokens = edge.base, edge.tokens
    missing = send("GET", f"{base}/nowhere", token=tokens["operator"])
    assert missing.status_code == 404
    assert missing.body["error"] == "not_found"

    wrong = send("DELETE", f"{base}/calls/c1", token=tokens["operator"])
    assert wrong.status_code == 405
    assert wrong.body["error"] == "method_not_allowed"
    assert "GET" in wrong.headers["Allow"]

    bad = send(
        "GET", f"{base}/calls/c1", token=tokens["operator"], headers={"X-Correlation-Id": "x" * 37}
    )
    assert bad.status_code == 400
    assert list(bad.body["fields"]) == ["X-Correlation-Id"]


def test_a_revoked_token_stops_working_without_a_restart(edge):
    assert send("GET", f"{edge.base}/calls/c1", token=edge.tokens["auditor"]).status_code == 200
    edge.tokens_file.unlink()  # revoke every token in the file, then issue a new one
    newcomer = issue_token(edge.tokens_file, "cleo", "auditor")
    assert send("GET", f"{edge.base}/calls/c1", token=edge.tokens["auditor"]).status_code == 401
    assert send("GET", f"{edge.base}/calls/c1", token=newcomer).status_code == 200


def test_a_body_over_the_configured_size_is_413_json_naming_the_body(edge):
    def post(body, **kwargs):
        return send(
            "POST", f"{edge.base}/calls", token=edge.tokens["operator"], headers=JSON, **kwargs
        )

    def padded(size):  # a valid body of exactly `size` bytes
        head = b'{"title": "t", "budget": "1", "x": "'
        return head + b"x" * (size - len(head) - 2) + b'"}'

    too_large = post(None, key="k7", data=padded(MAX_BODY + 1))
    assert too_large.status_code == 413
    assert too_large.body["error"] == "request_entity_too_large"
    assert list(too_large.body["fields"]) == ["body"]
    assert str(MAX_BODY) in too_large.body["message"]
    # Sent in chunks, without a Content-Length, the limit holds all the same.
    chunked = post(
        None, key="k7c", data=iter([padded(MAX_BODY + 1)[:100], padded(MAX_BODY + 1)[100:]])
    )
    assert chunked.status_code == 413 and list(chunked.body["fields"]) == ["body"]
    assert edge.data.seen == []
    # Exactly the limit is read (and refused by the schema for its unknown member, not its size).
    at_limit = post(None, key="k7d", data=padded(MAX_BODY))
    assert at_limit.status_code == 422 and list(at_limit.body["fields"]) == ["x"]


def test_a_chunked_body_is_read(edge):
    """`Transfer-Encoding: chunked` (no Content-Length): the body is read, not taken as empty."""
    base, tokens = edge.base, edge.tokens
    parts = [b'{"reason": ', b'"resources exhausted"}']
    ended = send(
        "POST",
        f"{base}/calls/c1/end",
        token=tokens["operator"],
        key="end-1",
        headers=JSON,
        data=iter(parts),
    )
    assert ended.status_code == 200, ended.body
    assert ended.body == {"ended": "c1", "reason": "resources exhausted"}
    opened = send(
        "POST",
        f"{base}/calls",
        token=tokens["operator"],
        key="open-chunked",
        headers=JSON,
        data=iter([b'{"title": "in chunks", ', b'"budget": "5"}']),
    )
    assert opened.status_code == 201 and opened.body["title"] == "in chunks"


def test_a_command_without_a_body_runs_on_its_defaults(edge):
    base, tokens = edge.base, edge.tokens
    ended = send("POST", f"{base}/calls/c2/end", token=tokens["operator"], key="end-2")
    assert ended.status_code == 200 and ended.body == {"ended": "c2", "reason": None}


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", '{"title": "t", "budget": "1"}'),
        ("application/xml", "<call><title>t</title></call>"),
        ("application/x-www-form-urlencoded", "title=t&budget=1"),
        (None, '{"title": "t", "budget": "1"}'),
        ("application/json; charset=latin-1", '{"title": "t", "budget": "1"}'),
    ],
)
def test_a_command_body_that_is_not_json_is_415_naming_the_content_type(edge, content_type, body):
    headers = {"Content-Type": content_type} if content_type else {}
    response = send(
        "POST",
        f"{edge.base}/calls",
        token=edge.tokens["operator"],
        key="k-415",
        headers=headers,
        data=body.encode(),
    )
    assert response.status_code == 415, response.body
    assert response.body["error"] == "unsupported_media_type"
    assert list(response.body["fields"]) == ["Content-Type"]
    assert edge.data.seen == []


def test_json_with_a_charset_of_utf_8_is_json(edge):
    response = send(
        "POST",
        f"{edge.base}/calls",
        token=edge.tokens["operator"],
        key="k-utf8",
        headers={"Content-Type": "application/json; charset=UTF-8"},
        data='{"title": "città", "budget": "1"}'.encode(),
    )
    assert response.status_code == 201 and response.body["title"] == "città"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"[" * 200_000 + b"]" * 200_000, 400, "body"),  # RecursionError in the parser
        (b'{"title": ' + b"[" * 100 + b"]" * 100 + b', "budget": "1"}', 400, "body"),
        (b'{"title": "t", "budget": ' + b"7" * 5000 + b"}", 422, "budget"),  # int digits limit
        (b'{"title": "t", "budget": 9007199254740993}', 422, "budget"),  # not exact as JSON
        (b'{"title": "t", "budget": 1e999999999}', 422, "budget"),
        (b'{"title": "\\ud800", "budget": "1"}', 422, "title"),  # a lone surrogate
        (b'{"title": "a\\u0000b", "budget": "1"}', 422, "title"),  # NUL: PostgreSQL refuses it
        (b'{"title": "t", "budget": "1", "x": {"\\udc00": 1}}', 422, "x.\\udc00"),
        (b'{"title": "t", "budget": NaN}', 400, "body"),
    ],
    ids=[
        "deep",
        "deeper-than-allowed",
        "5000-digits",
        "beyond-2^53",
        "huge-exponent",
        "surrogate",
        "nul",
        "surrogate-key",
        "nan",
    ],
)
def test_hostile_json_is_refused_naming_the_field_before_the_worker(edge, body, status, field):
    response = send(
        "POST",
        f"{edge.base}/calls",
        token=edge.tokens["operator"],
        key="k-hostile",
        headers=JSON,
        data=body,
    )
    assert response.status_code == status, response.body
    assert list(response.body["fields"]) == [field]
    assert edge.data.seen == []


def test_nul_in_a_path_or_a_query_parameter_is_refused_naming_it(edge):
    base, tokens = edge.base, edge.tokens
    in_path = send("GET", f"{base}/calls/a%00b", token=tokens["auditor"])
    assert in_path.status_code == 422 and list(in_path.body["fields"]) == ["call_id"]
    in_query = send("GET", f"{base}/calls/c1?x=%00", token=tokens["auditor"])
    assert in_query.status_code == 422 and list(in_query.body["fields"]) == ["x"]


def test_a_method_that_answers_text_is_a_500_not_text_to_the_client(edge):
    response = send("GET", f"{edge.base}/text", token=edge.tokens["auditor"])
    assert response.status_code == 500
    assert response.body["error"] == "internal"
    assert "plain words" not in response.text


def test_a_csv_export_passes_through_with_its_own_media_type(edge):
    response = requests.get(
        f"{edge.base}/export.csv",
        headers={"Authorization": f"Bearer {edge.tokens['auditor']}"},
        timeout=5,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    assert response.text.splitlines() == ["position,total", "1,88.50"]


class MeteredEdge(Observable):
    """An observable service with no store: /metrics still answers (the database reads as down)."""

    name = "edge_metered"

    @query("/calls/<call_id>")
    def get_call(self, request, call_id):
        return {"call_id": call_id}


def test_metrics_labels_are_bounded_whatever_the_client_sends(container_factory):
    config = {
        "AMQP_URI": "memory://",
        "WEB_SERVER_ADDRESS": "127.0.0.1:0",
        "LAVORO_TOKENS": f"ada:operator:{OPERATOR}",
    }
    container = container_factory(MeteredEdge, config)
    container.start()
    base = f"http://127.0.0.1:{bound_port(container)}"
    auth = {"Authorization": f"Bearer {OPERATOR}"}
    for n in range(5):
        requests.request(f"PROBEM{n}", f"{base}/calls/c{n}", headers=auth, timeout=5)
        requests.get(f"{base}/calls/c{n}", headers=auth, timeout=5)
        requests.get(f"{base}/nowhere/{n}", headers=auth, timeout=5)
    exposition = requests.get(f"{base}/metrics", timeout=5).text
    label_sets = {
        (sample.labels["method"], sample.labels["route"], sample.labels["status"])
        for family in text_string_to_metric_families(exposition)
        if family.name == "lavoro_http_request_duration_seconds"
        for sample in family.samples
        if sample.name.endswith("_count")
    }
    assert label_sets == {
        ("other", "/calls/<call_id>", "405"),
        ("GET", "/calls/<call_id>", "200"),
        ("GET", "unmatched", "404"),
    }


def test_a_container_refuses_to_listen_on_a_port_another_socket_holds(container_factory):
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as eventlet's listen does
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = {"AMQP_URI": "memory://", "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}"}
        container = container_factory(EdgeService, config)
        with pytest.raises(PortInUse) as refused:
            container.start()
    assert str(refused.value).startswith(f"cannot listen on 127.0.0.1:{port}: in use by pid ")
    assert refused.value.port == port
