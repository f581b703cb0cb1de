"""The system as a newcomer starts it, and the demo of the real programme on it.

`lavoro run` as a subprocess, exactly as `make run` runs it (each service in its own
process, SQLite under a temporary `LAVORO_VAR`, the local RabbitMQ, HTTP on free ports through
`<SERVICE>_HTTP`); then `lavoro demo` twice: the ledger's four figures are the seed's, and the
second run appends nothing to either log, and each call was closed early with the demo's reason
(no clock is moved). `lavoro audit verify --all` passes, the README's
commands run against the system, personal data never reaches a log in clear, and SIGTERM stops
everything with exit 0.

The broker names are the production ones (`ledger.events`, `ledger.from.calls`, ...): the test
deletes them before and after, and does not run while a consumer is attached to them (a lavoro
started by someone else on this broker).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import amqp
import pytest
import requests
from kombu.utils.url import parse_url

from services.calls.demo import CLOSE_REASON
from services.calls.demo.data import SELF_EMPLOYMENT, SOCIAL_INNOVATION
from services.ledger.demo import CUP
from shared.crypto import ERASED, Vault
from shared.db import make_engine
from shared.kek import Keyring, NoKek
from tests.helpers import wait_for
from tests.infra import amqp_uri as broker_uri
from tests.integration.test_readme import (
    readme_lavoro_commands,
    readme_run_table_header,
    table_words,
)
from tests.integration.test_runner import free_port

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
QUEUES = ("ledger.from.calls", "calls.from.ledger", "ledger.dlq", "calls.dlq")
EXCHANGES = ("ledger.events", "calls.events")
FIGURES = {
    "programmed": "4000000.00",
    "admitted": "4000000.00",
    "legally_binding": "4000000.00",
    "disbursed": "605305.62",
}
# README commands that would run for ever, or that this test runs on its own terms.
NOT_FROM_README = {"run", "demo", "serve"}


def _connection() -> amqp.Connection:
    parts = parse_url(broker_uri())
    conn = amqp.Connection(
        host=f"{parts['hostname'] or 'localhost'}:{parts['port'] or 5672}",
        userid=parts["userid"] or "guest",
        password=parts["password"] or "guest",
        virtual_host=parts["virtual_host"] or "/",
    )
    conn.connect()
    return conn


def consumers_attached() -> dict[str, int]:
    """The fixed queues that exist and have consumers (another lavoro running here)."""
    attached = {}
    with _connection() as conn:
        for queue in QUEUES:
            channel = conn.channel()
            try:
                _name, _messages, consumers = channel.queue_declare(queue, passive=True)
            except amqp.exceptions.NotFound:
                continue  # the broker closed this channel; the next queue gets a new one
            if consumers:
                attached[queue] = consumers
            channel.close()
    return attached


def delete_broker_names() -> None:
    """The demo's queues and exchanges (and with them their bindings); absent ones are fine."""
    with _connection() as conn:
        channel = conn.channel()
        for queue in QUEUES:
            channel.queue_delete(queue)
        for exchange in EXCHANGES:
            channel.exchange_delete(exchange)
        channel.close()


def lavoro(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "lavoro"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def system(tmp_path):
    attached = consumers_attached()
    if attached:
        pytest.skip(
            f"a lavoro is running on this broker (consumers on {attached}): not touching it"
        )
    delete_broker_names()
    ports = {"ledger": free_port(), "calls": free_port()}
    env = {
        key: value
        for key, value in os.environ.items()
        # As on a newcomer's machine: `lavoro run` makes its own tokens and development KEK.
        if key not in ("LAVORO_SERVICES", "LAVORO_TOKENS_FILE", "LAVORO_TOKENS")
        and not key.startswith("LAVORO_KEK")
        and not key.endswith(("_DATABASE_URL", "_HTTP"))
    }
    env.update(
        LAVORO_VAR=str(tmp_path),
        AMQP_URI=broker_uri(),
        LEDGER_HTTP=f"127.0.0.1:{ports['ledger']}",
        CALLS_HTTP=f"127.0.0.1:{ports['calls']}",
    )
    out_path = tmp_path / "run.out"
    with out_path.open("w") as out:
        run = subprocess.Popen(
            [str(BIN / "lavoro"), "run"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        for name, port in ports.items():
            wait_for(
                lambda port=port: _healthy(port),
                timeout=60,
                message=f"{name}'s /health (see {out_path})",
            )
        wait_for(
            lambda: "Ctrl-C stops every service." in out_path.read_text(),
            timeout=30,
            message="the table `lavoro run` prints",
        )
        yield env, run, out_path, ports
    finally:
        stop(run)
        delete_broker_names()


def stop(run: subprocess.Popen) -> None:
    """SIGTERM, as Ctrl-C would: `lavoro run` returns once its services have stopped, so that no
    consumer is left to declare the queues again after they are deleted."""
    if run.poll() is None:
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(timeout=60)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()


def _healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def heads(env: dict[str, str]) -> dict[str, int]:
    done = lavoro(env, "status", "--json", "--settle", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    return {row["service"]: row["head_position"] for row in json.loads(done.stdout)}


def test_the_demo_records_the_real_programme_once_and_every_log_verifies(system):
    env, run, out_path, ports = system
    printed = out_path.read_text()
    assert readme_run_table_header() in table_words(printed), "README's `make run` table"

    first = lavoro(env, "demo", "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["total"] == FIGURES and result["matches"] is True
    assert result["disbursed_percent"] == "15.1"
    lines = {line["budget_line"]: line for line in result["budget_lines"]}
    assert all(line["legally_binding"] == line["admitted"] for line in lines.values())
    calls = {call["reference"]: call for call in result["calls"]}
    autoimp, innsoc = calls[SELF_EMPLOYMENT.reference], calls[SOCIAL_INNOVATION.reference]
    assert autoimp["awards"] == {"confirmed": 10} and autoimp["available"] == "0.00"
    # One award found the line full: suspended, its 8,000.00 back in the call.
    assert innsoc["awards"] == {"confirmed": 9, "suspended": 1}
    assert innsoc["available"] == "8000.00"
    assert (autoimp["paid"], innsoc["paid"]) == ("19650.00", "7750.00")
    token = (Path(env["LAVORO_VAR"]) / "operator.token").read_text().strip()
    calls_url = f"http://127.0.0.1:{ports['calls']}"
    headers = {"Authorization": f"Bearer {token}"}
    suspended = requests.get(
        f"{calls_url}/awards", params={"status": "suspended"}, headers=headers, timeout=5
    ).json()["awards"]
    assert [(a["reason"], a["amount"]) for a in suspended] == [("line_lacks_room", "8000.00")]

    before = heads(env)
    second = lavoro(env, "demo")  # as people read it
    assert second.returncode == 0, second.stderr
    total = next(line for line in second.stdout.splitlines() if line.startswith("│ total"))
    assert table_words(total) == "total 4,000,000.00 4,000,000.00 4,000,000.00 605,305.62"
    assert "awards 9 confirmed, 1 suspended" in second.stdout
    assert heads(env) == before  # nothing appended the second time, in either log

    verified = lavoro(env, "audit", "verify", "--all")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"calls: OK, {before['calls']} events" in verified.stdout
    assert f"ledger: OK, {before['ledger']} events" in verified.stdout

    progress = lavoro(env, "ledger", "progress", "--json")
    assert json.loads(progress.stdout)["total"] == FIGURES

    # Personal data: sealed in the log, opened for a reader with a token.
    exported = lavoro(env, "audit", "export", "--service", "calls").stdout
    person = SELF_EMPLOYMENT.applicants[0].applicant["person"]
    assert exported.count("\n") == before["calls"]
    closures = [
        event["data"]
        for event in map(json.loads, exported.splitlines())
        if event["type"] == "call_closed"
    ]
    assert [(c["early"], c["reason"]) for c in closures] == [(True, CLOSE_REASON)] * 2
    assert person["name"] not in exported and person["tax_code"] not in exported
    found = requests.get(f"{calls_url}/calls", headers=headers, timeout=5).json()["calls"]
    call_id = next(c["call_id"] for c in found if c["reference"] == SELF_EMPLOYMENT.reference)
    first_app = requests.get(
        f"{calls_url}/calls/{call_id}/applications", headers=headers, timeout=5
    ).json()["applications"][0]
    opened = requests.get(
        f"{calls_url}/calls/{call_id}/applications/{first_app['application_id']}",
        headers=headers,
        timeout=5,
    ).json()
    assert opened["applicant"]["person"]["name"] == person["name"]
    # The calls database alone opens none of it: its keys are wrapped by var/kek, made by
    # `lavoro run` for development (0600, in a 0700 var/).
    var = Path(env["LAVORO_VAR"])
    assert f"key-encryption key: {var / 'kek'} (development only" in printed
    assert (var / "kek").stat().st_mode & 0o777 == 0o600 and var.stat().st_mode & 0o777 == 0o700
    submitted = next(
        event["data"]
        for event in map(json.loads, exported.splitlines())
        if event["type"] == "application_submitted" and event["data"]["applicant"].get("person")
    )
    sealed = submitted["applicant"]["person"]["name"]
    engine = make_engine(f"sqlite:///{var / 'calls.db'}")
    try:
        with pytest.raises(NoKek):
            Vault(engine, keys=Keyring(None), cache_ttl=0).open(sealed)
        kek = Keyring.from_config({"LAVORO_KEK_FILE": str(var / "kek")}, env={})
        assert Vault(engine, keys=kek, cache_ttl=0).open(sealed) != ERASED
    finally:
        engine.dispose()

    # The README's commands, against the running system.
    for args in readme_lavoro_commands():
        if args[0] in NOT_FROM_README:
            continue
        done = lavoro(env, *args, timeout=60)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    assert CUP in lavoro(env, "ledger", "progress").stdout

    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) == 0
    assert "stopped: calls (exit 0), ledger (exit 0)" in out_path.read_text()
