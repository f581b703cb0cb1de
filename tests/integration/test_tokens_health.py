"""A tokens file that turns malformed while a service runs: requests keep the last good tokens
(never a 500), `/health` says degraded and names the problem, `lavoro status` reports it, and
the service recovers when the file reads again. The probe of test_runner.py on the real broker."""

from __future__ import annotations

import json

import kombu
import requests
from nameko.containers import ServiceContainer
from typer.testing import CliRunner

from shared.auth import issue_token
from shared.cli import app
from shared.web import bound_port
from tests.integration.test_cli_ops import cli_env, json_out
from tests.integration.test_runner import probe_service


def test_a_broken_tokens_file_degrades_health_and_keeps_the_last_good_tokens(
    tmp_path, unique, amqp_uri
):
    tokens_file = tmp_path / "tokens.json"
    token = issue_token(tokens_file, "ada", "operator")
    database = f"sqlite:///{tmp_path / 'probe.db'}"
    container = ServiceContainer(
        probe_service(unique),
        {
            "AMQP_URI": amqp_uri,
            "DATABASE_URL": database,
            "WEB_SERVER_ADDRESS": "127.0.0.1:0",
            "LAVORO_TOKENS_FILE": str(tokens_file),
        },
    )
    container.start()
    try:
        port = bound_port(container)
        base = f"http://127.0.0.1:{port}"

        def add(note: str, with_token: str = token) -> requests.Response:
            return requests.post(
                f"{base}/notes",
                json={"note_id": note, "text": "x"},
                headers={"Authorization": f"Bearer {with_token}", "Idempotency-Key": note},
                timeout=5,
            )

        assert add("n1").status_code == 201
        assert requests.get(f"{base}/health", timeout=5).json()["status"] == "ok"

        tokens_file.write_text('{"tokens": [')  # an editor saved half a file
        assert add("n2").status_code == 201  # the last good tokens, not a 500
        assert add("n3", "unknown").status_code == 401
        health = requests.get(f"{base}/health", timeout=5)
        assert health.status_code == 200  # still serving: keep it behind the load balancer
        body = health.json()
        assert body["status"] == "degraded"
        assert body["checks"]["tokens"]["ok"] is False
        assert str(tokens_file) in body["checks"]["tokens"]["error"]
        assert "not valid JSON" in body["checks"]["tokens"]["error"]
        assert token not in json.dumps(body)

        env = cli_env(unique, database, port)
        status = CliRunner().invoke(app, ["status", "--json", "--settle", "0"], env=env)
        assert status.exit_code == 1, status.output
        [row] = json_out(status)
        assert row["state"] == "degraded"
        assert any(
            p.startswith("degraded: tokens: ") and str(tokens_file) in p for p in row["problems"]
        )

        fixed = tmp_path / "fixed.json"
        newer = issue_token(fixed, "bea", "operator")
        fixed.replace(tokens_file)
        assert add("n4", newer).status_code == 201
        assert add("n5").status_code == 401  # the file now says who may come in
        assert requests.get(f"{base}/health", timeout=5).json()["status"] == "ok"
    finally:
        container.kill()
        with kombu.Connection(amqp_uri) as conn:
            conn.default_channel.exchange_delete(f"{unique}.events")
