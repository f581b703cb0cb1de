"""`lavoro run` and the registry: a small test service (`Probe`, below) started through the real
`lavoro run`, in a child process of its own, answering `/health`, and stopped cleanly by SIGTERM.

`Probe` is also the service the observability, CLI and deploy tests run: a child process imports
it from here through the registry override `LAVORO_SERVICES`, named by `LAVORO_PROBE_NAME`.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import requests
import sqlalchemy as sa
from marshmallow import fields
from typer.testing import CliRunner

from shared import services
from shared.auth import hash_token, read_tokens_file
from shared.cli import app
from shared.consumer import handles
from shared.db import ROOT
from shared.dependencies import EventStore
from shared.kek import Kek
from shared.observability import Observable
from shared.projections import Projection
from shared.records import IncomingEvent, NewEvent
from shared.relay import RelayExtension
from shared.runner import service_settings
from shared.schemas import Schema
from shared.web import command, json_response
from tests.helpers import wait_for

BIN = Path(sys.executable).parent

notes_metadata = sa.MetaData()
notes = sa.Table(
    "probe_notes",
    notes_metadata,
    sa.Column("note_id", sa.String(60), primary_key=True),
    sa.Column("text", sa.String(200), nullable=False),
)
notes_projection = Projection("probe_notes", notes_metadata)


@notes_projection.on("note_added")
def _fold_note(conn, event):
    conn.execute(notes.insert().values(note_id=event.data["note_id"], text=event.data["text"]))


class AddNote(Schema):
    note_id = fields.String(required=True)
    text = fields.String(required=True)


def probe_service(name: str, source: str | None = None) -> type:
    """A service on the chassis with `Observable`: a command that appends `note_added` (folded
    by a projection, published by its relay), and, given a `source`, a handler of that source's
    `ping` events that fails when told to."""

    class Probe(Observable):
        store = EventStore(projections=[notes_projection])
        relay = RelayExtension(poll_interval=0.2, backoff=(0.05, 0.5))

        @command("POST", "/notes", schema=AddNote)
        def add_note(self, cmd):
            note = cmd.data
            self.store.append(
                f"note-{note['note_id']}", 0, [NewEvent("note_added", note)], command_id=cmd.id
            )
            return json_response(201, note)

        if source is not None:

            @handles(source, "ping")
            def on_ping(self, event: IncomingEvent) -> None:
                if event.data.get("fail"):
                    raise RuntimeError("told to fail")
                self.store.append(f"pong-{event.id}", 0, [NewEvent("ponged", {"id": event.id})])

    Probe.name = name
    Probe.__qualname__ = Probe.__name__ = f"Probe_{name}"
    return Probe


# What a child process started through the registry override runs.
Probe = probe_service(os.environ.get("LAVORO_PROBE_NAME", "probe"))


class Misnamed(Observable):
    """Registered under another name than its own: the runner refuses to start it."""

    name = "not_what_the_registry_says"
    store = EventStore()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def probe_env(name: str, port: int, var: Path, amqp_uri: str, **extra: str) -> dict[str, str]:
    """The environment under which `lavoro` knows only the probe service `name`."""
    env = {
        **os.environ,
        "LAVORO_SERVICES": f"{name}=tests.integration.test_runner:Probe@{port}",
        "LAVORO_PROBE_NAME": name,
        "LAVORO_VAR": str(var),
        "AMQP_URI": amqp_uri,
        f"{name.upper()}_HTTP": f"127.0.0.1:{port}",
        "PYTHONPATH": str(ROOT),
        **extra,
    }
    env.pop("LAVORO_TOKENS_FILE", None)
    return env


def delete_exchange(amqp_uri: str, name: str) -> None:
    import kombu

    with kombu.Connection(amqp_uri) as conn:
        conn.channel().exchange_delete(name)


def health(port: int) -> requests.Response | None:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
    except requests.ConnectionError:
        return None


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not collected it yet.
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"


def test_lavoro_run_starts_the_service_in_its_own_process_and_stops_it_on_sigterm(
    tmp_path, unique, amqp_uri
):
    port = free_port()
    out = (tmp_path / "run.out").open("w")
    run = subprocess.Popen(
        [str(BIN / "lavoro"), "run"],
        env=probe_env(unique, port, tmp_path, amqp_uri),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        answer = wait_for(
            lambda: (r := health(port)) is not None and r.status_code == 200 and r,
            timeout=40,
            message="the probe's /health",
        )
        assert answer.json()["service"] == unique
        assert answer.json()["checks"]["relay"]["state"] == "leading"
        printed = wait_for(
            lambda: "Ctrl-C stops" in (text := (tmp_path / "run.out").read_text()) and text,
            message="the table",
        )
        assert f"http://127.0.0.1:{port}/openapi.json" in printed
        row = next(line for line in printed.splitlines() if f"│ {unique}" in line)
        child = int(row.strip("│ ").split("│")[-1])
        started = next(json.loads(x) for x in printed.splitlines() if "service.started" in x)
        assert started["pid"] == child and started["service"] == unique
        assert child != run.pid and _parent_of(child) == run.pid  # its own process

        # The development tokens: hashes in the tokens file, the token itself beside it (0600),
        # and the service accepts it.
        token_file = tmp_path / "operator.token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        entries = read_tokens_file(tmp_path / "tokens.json")
        assert {(e.token_sha256, e.role) for e in entries} >= {(hash_token(token), "operator")}
        assert (tmp_path / "auditor.token").exists()
        created = requests.post(
            f"http://127.0.0.1:{port}/notes",
            json={"note_id": "n1", "text": "hello"},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "k1"},
            timeout=5,
        )
        assert created.status_code == 201, created.text

        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=40) == 0
        assert not _alive(child)
        text = (tmp_path / "run.out").read_text()
        assert f"stopped: {unique} (exit 0)" in text
        stopped = [json.loads(line) for line in text.splitlines() if '"service.stopped"' in line]
        assert stopped and stopped[0]["service"] == unique
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        out.close()
        delete_exchange(amqp_uri, f"{unique}.events")


def test_lavoro_run_keeps_var_to_its_owner_and_makes_a_development_kek(tmp_path, unique, amqp_uri):
    var = tmp_path / "var"
    var.mkdir(mode=0o755)  # as an older checkout left it
    var.chmod(0o755)
    port = free_port()
    env = probe_env(unique, port, var, amqp_uri)
    env.pop("LAVORO_KEK", None)
    out = (tmp_path / "run.out").open("w")
    run = subprocess.Popen(
        [str(BIN / "lavoro"), "run"], env=env, stdout=out, stderr=subprocess.STDOUT
    )
    try:
        wait_for(
            lambda: (r := health(port)) is not None and r.status_code == 200,
            timeout=40,
            message="the probe's /health",
        )
        token = (var / "operator.token").read_text().strip()
        created = requests.post(  # an append: the log, its WAL, the relay's lock file
            f"http://127.0.0.1:{port}/notes",
            json={"note_id": "n1", "text": "hello"},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "k1"},
            timeout=5,
        )
        assert created.status_code == 201, created.text
        printed = wait_for(
            lambda: "Ctrl-C stops" in (text := (tmp_path / "run.out").read_text()) and text,
            message="the table",
        )
        assert f"key-encryption key: {var / 'kek'} (development only" in printed
        kek = (var / "kek").read_text().strip()
        assert Kek.parse(kek, "var/kek") and kek not in printed

        modes = {path.name: path.stat().st_mode & 0o777 for path in var.iterdir()}
        assert var.stat().st_mode & 0o777 == 0o700
        assert {f"{unique}.db", "tokens.json", "operator.token", "kek"} <= set(modes)
        assert any(name.endswith(".lock") for name in modes), modes
        assert any(name.endswith("-wal") for name in modes), modes
        assert {name: mode for name, mode in modes.items() if mode != 0o600} == {}
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGTERM)
            run.wait(timeout=40)
        out.close()
        delete_exchange(amqp_uri, f"{unique}.events")


def held_port() -> tuple[socket.socket, int]:
    """A port another process's server holds, listening as nameko's eventlet listener used to
    (SO_REUSEPORT, with which a second listener on the same port was let in without a word)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, int(sock.getsockname()[1])


def test_run_refuses_a_port_another_process_holds_in_one_line(tmp_path, unique, amqp_uri):
    holder, port = held_port()
    with holder:
        done = subprocess.run(
            [str(BIN / "lavoro"), "run"],
            env=probe_env(unique, port, tmp_path, amqp_uri),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {unique} cannot listen on 127.0.0.1:{port}: ")
    assert f"in use by pid {os.getpid()} " in lines[0]  # this test holds it
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "operator.token").exists()  # refused before anything started


def test_a_service_refuses_to_start_on_a_port_in_use_in_one_log_line(tmp_path, unique, amqp_uri):
    holder, port = held_port()
    env = {**probe_env(unique, port, tmp_path, amqp_uri), "LOG_FORMAT": "json"}
    with holder:
        done = subprocess.run(
            [sys.executable, "-m", "shared.runner", unique],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    failed = [json.loads(line) for line in done.stdout.splitlines() if "failed_to_start" in line]
    assert len(failed) == 1 and "exception" not in failed[0]  # one line, no traceback
    assert failed[0]["reason"].startswith(f"cannot listen on 127.0.0.1:{port}: in use by pid ")


def test_a_second_run_reuses_the_development_tokens(tmp_path, monkeypatch):
    from shared.runner import ensure_dev_tokens, read_dev_token

    monkeypatch.setenv("LAVORO_VAR", str(tmp_path))
    monkeypatch.delenv("LAVORO_TOKENS_FILE", raising=False)
    first = ensure_dev_tokens()
    operator = read_dev_token("operator")
    assert ensure_dev_tokens() == first
    assert read_dev_token("operator") == operator
    assert len(read_tokens_file(tmp_path / "tokens.json")) == 2
    # A token whose hash left the tokens file (revoked) is replaced by a new one.
    (tmp_path / "tokens.json").write_text('{"tokens": []}')
    ensure_dev_tokens()
    assert read_dev_token("operator") != operator


def test_a_service_that_fails_to_start_stops_run_with_one_line(tmp_path, unique, amqp_uri):
    port = free_port()
    env = probe_env(unique, port, tmp_path, amqp_uri)
    env["LAVORO_SERVICES"] = f"{unique}=tests.integration.test_runner:Misnamed@{port}"
    done = subprocess.run(
        [str(BIN / "lavoro"), "run"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert f"error: {unique} exited with code 1 while starting" in done.stderr
    assert "Traceback" not in done.stderr
    # The child said why, as a JSON log line.
    failed = [json.loads(line) for line in done.stdout.splitlines() if "failed_to_start" in line]
    assert "registered as" in failed[0]["exception"]


def test_run_without_a_broker_says_so_in_one_line_and_how_to_start_one():
    closed = free_port()
    result = CliRunner().invoke(app, ["run"], env={"AMQP_URI": f"amqp://u:pw@127.0.0.1:{closed}/"})
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(
        f"error: RabbitMQ does not answer at amqp://u:**@127.0.0.1:{closed}/"
    )
    assert "rabbitmq-server -detached" in lines[0]
    assert "docker compose -f deploy/compose.yaml up" in lines[0]


def test_run_with_no_service_built_starts_none(amqp_uri):
    result = CliRunner().invoke(
        app,
        ["run"],
        env={"AMQP_URI": amqp_uri, "LAVORO_SERVICES": "ghost=services.ghost.service:Ghost@8999"},
    )
    assert result.exit_code == 0, result.output
    assert "no service is built yet: nothing to start" in result.output


def test_the_registry_override_and_its_errors():
    specs = services.parse_override("a=pkg.mod:A@8100, b=pkg.other:B")
    assert [(s.name, s.module, s.class_name, s.port) for s in specs.values()] == [
        ("a", "pkg.mod", "A", 8100),
        ("b", "pkg.other", "B", None),
    ]
    assert specs["a"].database_env == "A_DATABASE_URL" and specs["a"].http_env == "A_HTTP"
    for bad in ("A=x:Y", "a=x.Y", "a=x:Y@0", "a=x:Y@http"):
        try:
            services.parse_override(bad)
        except services.RegistryError as exc:
            assert "LAVORO_SERVICES item 1" in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")
    env = {
        "LAVORO_SERVICES": "ghost=services.ghost.service:Ghost,probe=tests.integration.test_runner:Probe"
    }
    assert [s.name for s in services.available(env)] == ["probe"]
    try:
        services.get("ledger", env)
    except services.UnknownService as exc:
        assert "unknown service 'ledger'; one of ghost, probe" in str(exc)
    else:
        raise AssertionError("ledger is not in the override")


def test_every_registered_service_that_exists_loads_under_its_own_name():
    assert list(services.REGISTRY) == ["placement", "calls", "safeguarding", "charters", "ledger"]
    assert len({spec.port for spec in services.REGISTRY.values()}) == 5
    for spec in services.REGISTRY.values():
        assert spec.module == f"services.{spec.name}.service"
        if spec.exists():
            assert spec.load().name == spec.name


def test_the_registry_port_is_the_default_http_address(monkeypatch):
    spec = services.ServiceSpec("probe_port", "tests.integration.test_runner:Probe", 8123)
    monkeypatch.delenv(spec.http_env, raising=False)
    assert service_settings(spec)["WEB_SERVER_ADDRESS"] == "127.0.0.1:8123"  # this machine only
    assert spec.http_env not in os.environ  # set only while the config was read
    monkeypatch.setenv(spec.http_env, "127.0.0.1:9000")
    assert service_settings(spec)["WEB_SERVER_ADDRESS"] == "127.0.0.1:9000"


def test_the_children_log_as_the_terminal_of_lavoro_run_decides(monkeypatch):
    from shared.runner import child_environment

    spec = services.ServiceSpec("probe_env", "tests.integration.test_runner:Probe", 8124)
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    monkeypatch.setattr("sys.stdout", io.StringIO())  # lavoro run into a file or a pipe
    env = child_environment(spec, "127.0.0.1:8124")
    assert env["LOG_FORMAT"] == "json" and env["PROBE_ENV_HTTP"] == "127.0.0.1:8124"

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdout", Terminal())  # lavoro run in a terminal: a person reads
    assert child_environment(spec, "127.0.0.1:8124")["LOG_FORMAT"] == "console"
    monkeypatch.setenv("LOG_FORMAT", "JSON")  # said explicitly: kept, whatever the terminal
    assert child_environment(spec, "127.0.0.1:8124")["LOG_FORMAT"] == "json"


def test_an_invalid_log_format_is_one_line_at_start_up(tmp_path, monkeypatch):
    def no_exec(*args):
        raise AssertionError("lavoro serve got as far as exec")

    monkeypatch.setattr(os, "execve", no_exec)
    expected = "LOG_FORMAT='yaml': expected json or console"
    result = CliRunner().invoke(app, ["run"], env={"LOG_FORMAT": "yaml"})
    assert result.exit_code == 1 and result.output.strip() == f"error: {expected}"
    served = CliRunner().invoke(app, ["serve", "ledger"], env={"LOG_FORMAT": "yaml"})
    assert served.exit_code == 1 and served.output.strip() == f"error: {expected}"
    # The image's entrypoint execs the runner itself: the same line, before anything starts.
    env = {**os.environ, "LOG_FORMAT": "yaml", "LAVORO_VAR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "shared.runner", "ledger"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.strip() == f"lavoro serve: {expected}"
    assert done.stdout == "" and not (tmp_path / "ledger.db").exists()
