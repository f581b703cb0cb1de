"""deploy/ without a Docker engine: the compose file is valid against the Compose specification and
agrees with the code; the RabbitMQ definitions load into the real broker (in a throw-away vhost)
and give each service only what it needs; the PostgreSQL init script makes one database and role
per service on the real server; and the image's entrypoint command starts a service."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse
import uuid
from pathlib import Path

import amqp
import pytest
import requests
import sqlalchemy as sa
import yaml
from kombu.utils.url import parse_url
from nameko.containers import ServiceContainer

from shared import services
from shared.broker import broker_user, source_users
from shared.config import http_address
from shared.consumer import queue_name
from shared.db import ROOT, default_url, make_engine, migrate
from shared.eventlog import EventLog
from shared.records import NewEvent
from shared.relay import Relay
from shared.web import bound_port
from tests.helpers import wait_for
from tests.infra import postgres_url
from tests.integration.test_runner import free_port, probe_env, probe_service
from tests.kit.service import handled_sources

DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
INFRASTRUCTURE = {"rabbitmq", "postgres"}
APP_SERVICES = {
    name: block for name, block in COMPOSE["services"].items() if name not in INFRASTRUCTURE
}
# ${NAME}, compose's ${NAME:-default} and ${NAME:?error}, nameko's ${NAME:default}.
PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)(?:[:?-][^}]*)?\}")
# What shared/ reads from the environment for any service (shared.config, shared.db, shared.auth).
CHASSIS_VARIABLES = {
    "AMQP_URI",
    "LAVORO_VAR",
    "LAVORO_TOKENS",
    "LAVORO_TOKENS_FILE",
    "LAVORO_MAX_WORKERS",
    "LAVORO_SOURCE_USERS",
    "LAVORO_KEK",
    "LAVORO_KEK_FILE",
    "LAVORO_KEK_PREVIOUS",
    "LAVORO_KEK_PREVIOUS_FILE",
    "LOG_LEVEL",
    "LOG_FORMAT",
}


def _rabbitmqctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, check=check)


needs_rabbitmqctl = pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None, reason="rabbitmqctl is not on this machine"
)


# -- the compose file ------------------------------------------------------------------------------


def test_the_compose_file_is_valid_against_the_compose_specification(tmp_path):
    check = BIN / "check-jsonschema"
    ok = subprocess.run(
        [str(check), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # The check bites: a condition the specification does not know is refused.
    broken = (DEPLOY / "compose.yaml").read_text().replace("service_healthy", "service_fine", 1)
    (tmp_path / "compose.yaml").write_text(broken)
    refused = subprocess.run(
        [str(check), "--builtin-schema", "vendor.compose-spec", str(tmp_path / "compose.yaml")],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "service_fine" in refused.stdout
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        env = {**os.environ, **_example_env()}
        config = subprocess.run(
            ["docker", "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert config.returncode == 0, config.stderr


def _example_env() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if re.match(r"^[A-Z0-9_]+=", line):
            name, _, value = line.partition("=")
            values[name] = value or "x" + uuid.uuid4().hex
    return values


def test_every_compose_service_is_a_registered_service_with_the_variables_the_code_reads(
    monkeypatch,
):
    registry = services.REGISTRY
    existing = {name for name, spec in registry.items() if spec.exists()}
    assert set(APP_SERVICES) == existing, "deploy exactly the services whose code exists"
    for name, block in APP_SERVICES.items():
        spec = registry[name]
        assert block["command"] == [name]
        environment = block["environment"]
        own = {spec.database_env, spec.http_env, f"{spec.env_prefix}_MAX_WORKERS"}
        config_yaml = ROOT / "services" / name / "config.yaml"
        placeholders = (
            set(PLACEHOLDER.findall(config_yaml.read_text())) if config_yaml.exists() else set()
        )
        unknown = set(environment) - CHASSIS_VARIABLES - own - placeholders
        assert not unknown, f"{name} sets variables the code never reads: {unknown}"
        assert {"AMQP_URI", spec.database_env, spec.http_env} <= set(environment)

        # The code reads exactly these names: set them and see it take them.
        url = PLACEHOLDER.sub("secret", environment[spec.database_env])
        monkeypatch.setenv(spec.database_env, url)
        assert default_url(name) == url
        monkeypatch.setenv(spec.http_env, environment[spec.http_env])
        assert http_address(name) == f"0.0.0.0:{spec.port}"  # the registry's port
        assert block["ports"][0].endswith(f":{spec.port}")
        assert str(spec.port) in block["healthcheck"]["test"][-1]

        # Its own broker user on the lavoro vhost, its own role and database; and the events of
        # each source it consumes accepted only from that source's own user.
        broker = urllib.parse.urlparse(PLACEHOLDER.sub("secret", environment["AMQP_URI"]))
        assert (broker.username, broker.path) == (name, "/lavoro")
        sources = handled_sources(spec.load())
        assert source_users({}, env=environment) == {source: source for source in sources}
        # A service that seals personal data gets its own KEK from deploy/.env, nobody else.
        seals = bool(getattr(spec.load().store.contracts, "persons", None))
        assert ("LAVORO_KEK" in environment) == seals, name
        if seals:
            assert environment["LAVORO_KEK"] == f"${{{name.upper()}_KEK:?set it in deploy/.env}}"
        database = urllib.parse.urlparse(url)
        assert (database.username, database.hostname, database.path) == (
            name,
            "postgres",
            f"/{name}",
        )

        assert block["restart"] == "unless-stopped"
        assert {dep: c["condition"] for dep, c in block["depends_on"].items()} == {
            "rabbitmq": "service_healthy",
            "postgres": "service_healthy",
        }
    for infrastructure in INFRASTRUCTURE:
        assert "healthcheck" in COMPOSE["services"][infrastructure]
    assert COMPOSE["services"]["rabbitmq"]["image"] == "rabbitmq:3.10-management"


def test_every_secret_comes_from_the_env_file_and_the_example_names_them_all():
    text = (DEPLOY / "compose.yaml").read_text()
    used = set(PLACEHOLDER.findall(text))
    example = set(_example_env())
    assert used <= example, f"missing from deploy/.env.example: {used - example}"
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert {
        "POSTGRES_PASSWORD",
        "RABBITMQ_LEDGER_PASSWORD",
        "CALLS_PSEUDONYM_KEY",
        "CALLS_KEK",
    } <= required
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        name, _, value = line.partition("=")
        if name in required:
            assert value == "", f"{name} must not ship with a value"
    # Every database and broker user the deploy makes has its password variable.
    postgres = COMPOSE["services"]["postgres"]["environment"]
    for name in postgres["LAVORO_DATABASES"].split():
        assert f"{name.upper()}_DB_PASSWORD" in postgres
        assert name in services.REGISTRY


def test_the_dockerfile_is_slim_unprivileged_and_pinned():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "pip install -c constraints.txt" in dockerfile
    # Its dependency step installs exactly what pyproject.toml pins, each with ==.
    step = re.search(r'RUN (python -c ".*?") > /tmp/requirements.txt', dockerfile).group(1)
    listed = subprocess.run(step, shell=True, cwd=ROOT, capture_output=True, text=True, check=True)
    pins = listed.stdout.split()
    assert pins and all(re.match(r"^[A-Za-z0-9_.-]+(\[[a-z,]+\])?==[\w.]+$", pin) for pin in pins)
    assert "nameko==2.14.1" in pins


# -- RabbitMQ ----------------------------------------------------------------------------------------


@pytest.fixture
def broker_definitions(tmp_path, unique, amqp_uri):
    """deploy/rabbitmq/definitions.json rendered by its own script, moved to a throw-away vhost
    with prefixed user names, loaded into the real broker; removed afterwards."""
    passwords = {
        f"RABBITMQ_{user}_PASSWORD": uuid.uuid4().hex
        for user in ("ADMIN", *[n.upper() for n in services.REGISTRY])
    }
    rendered = tmp_path / "definitions.json"
    subprocess.run(
        ["sh", str(DEPLOY / "rabbitmq" / "render-definitions.sh")],
        env={
            **os.environ,
            **passwords,
            "LAVORO_DEFINITIONS_TEMPLATE": str(DEPLOY / "rabbitmq" / "definitions.json"),
            "LAVORO_DEFINITIONS": str(rendered),
        },
        check=True,
    )
    document = json.loads(rendered.read_text())
    vhost, prefix = f"{unique}-lavoro", f"{unique}-"
    users = {}
    for user in document["users"]:
        users[user["name"]] = (prefix + user["name"], user["password"])
        user["name"] = prefix + user["name"]
    for item in (*document["vhosts"], *document["permissions"], *document["policies"]):
        key = "name" if item in document["vhosts"] else "vhost"
        assert item[key] == "lavoro"
        item[key] = vhost
        if "user" in item:
            item["user"] = prefix + item["user"]
    # rabbitmqctl reads the file as the broker's user, who may not enter tmp_path (and 3.10
    # refuses "-" for stdin): a readable copy of its own, removed at once.
    scratch = Path(tempfile.mkdtemp(prefix="lavoro-definitions-"))
    try:
        scratch.chmod(0o755)
        loaded = scratch / "definitions.json"
        loaded.write_text(json.dumps(document))
        loaded.chmod(0o644)
        imported = _rabbitmqctl("import_definitions", str(loaded), check=False)
    finally:
        shutil.rmtree(scratch)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    # The import is asynchronous: wait until the last user can log in.
    wait_for(
        lambda: all(
            _rabbitmqctl("authenticate_user", name, password, check=False).returncode == 0
            for name, password in users.values()
        ),
        timeout=20,
        message="the imported users",
    )
    parts = parse_url(amqp_uri)
    host = f"{parts['hostname']}:{parts['port'] or 5672}"

    def uri(user: str) -> str:
        name, password = users[user]
        return f"amqp://{name}:{password}@{host}/{urllib.parse.quote(vhost, safe='')}"

    yield uri, vhost, document
    _rabbitmqctl("delete_vhost", vhost, check=False)
    for name, _ in users.values():
        _rabbitmqctl("delete_user", name, check=False)


def _connect(uri: str) -> amqp.Connection:
    parts = parse_url(uri)
    conn = amqp.Connection(
        host=f"{parts['hostname']}:{parts['port']}",
        userid=parts["userid"],
        password=parts["password"],
        virtual_host=parts["virtual_host"],
    )
    conn.connect()
    return conn


@needs_rabbitmqctl
def test_a_service_user_has_exactly_the_permissions_its_service_needs(broker_definitions, tmp_path):
    uri, vhost, document = broker_definitions

    # The ledger's user runs the chassis the way the ledger does: it consumes calls' events on
    # ledger.from.calls (quorum), parks a failing one in ledger.dlq, and its relay publishes.
    config = {
        "AMQP_URI": uri("ledger"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "WEB_SERVER_ADDRESS": "127.0.0.1:0",
        "LAVORO_TOKENS": "tester:operator:deploy-test-token",
        "LAVORO_RETRY_ATTEMPTS": 1,
        # As compose sets it: calls' events only from calls' own user.
        "LAVORO_SOURCE_USERS": {"calls": broker_user(uri("calls"))},
    }
    ledger = ServiceContainer(probe_service("ledger", "calls"), config)
    ledger.start()
    try:
        base = f"http://127.0.0.1:{bound_port(ledger)}"
        created = requests.post(
            f"{base}/notes",
            json={"note_id": "n1", "text": "x"},
            headers={"Authorization": "Bearer deploy-test-token", "Idempotency-Key": "k1"},
            timeout=5,
        )
        assert created.status_code == 201
        calls_log = EventLog(make_engine(f"sqlite:///{tmp_path / 'calls.db'}"))
        migrate(calls_log.engine)
        calls_log.append("award-1", 0, [NewEvent("ping", {"fail": False})])
        calls_log.append("award-2", 0, [NewEvent("ping", {"fail": True})])
        assert Relay(calls_log, uri("calls"), "calls").publish_pending() == 2

        def settled():
            health = requests.get(f"{base}/health", timeout=5).json()
            figures = health["checks"]
            found = requests.get(f"{base}/metrics", timeout=5).text
            return (
                figures["relay"]["lag"] == 0
                and figures["database"]["head_position"] == 2  # the note and the pong
                and 'lavoro_dead_letters{service="ledger",status="parked"} 1.0' in found
                and health
            )

        health = wait_for(settled, timeout=20, message="the ledger user's work done")
        assert health["checks"]["broker"] == {"ok": True}
        queues = _rabbitmqctl(
            "list_queues", "-p", vhost, "name", "type", "policy", "messages"
        ).stdout
        table = {line.split("\t")[0]: line.split("\t")[1:] for line in queues.splitlines()}
        assert table[queue_name("ledger", "calls")][:2] == ["quorum", "lavoro-quorum-event-queues"]
        assert table["ledger.dlq"][2] == "1"  # the parked event's copy
    finally:
        ledger.stop()
        calls_log.engine.dispose()

    # And nothing more: the ledger may not publish as calls, nor calls take the ledger's queue.
    conn = _connect(uri("ledger"))
    channel = conn.channel()
    channel.confirm_select()
    with pytest.raises(amqp.exceptions.AccessRefused):
        channel.basic_publish_confirm(
            amqp.Message(b"{}"), exchange="calls.events", routing_key="grant_awarded"
        )
    conn.collect()
    conn = _connect(uri("calls"))
    with pytest.raises(amqp.exceptions.AccessRefused):
        conn.channel().queue_declare(
            queue_name("ledger", "calls"),
            passive=False,
            durable=True,
            auto_delete=False,
            arguments={"x-queue-type": "quorum"},
        )
    conn.collect()
    conn = _connect(uri("safeguarding"))
    with pytest.raises(amqp.exceptions.AccessRefused):
        conn.channel().basic_consume("ledger.dlq", callback=lambda message: None)
    conn.collect()


def test_the_definitions_give_each_service_what_its_code_consumes():
    document = json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text())
    permissions = {p["user"]: p for p in document["permissions"] if p["vhost"] == "lavoro"}
    users = {u["name"] for u in document["users"]}
    assert users == {"lavoro-admin", *services.REGISTRY}
    for name, spec in services.REGISTRY.items():
        granted = permissions[name]
        for what in ("configure", "write"):
            assert re.match(granted[what], f"{name}.events") and re.match(
                granted[what], "lavoro.public"
            )
        assert re.match(granted["write"], "amq.default")  # the dead-letter copies
        assert not re.match(granted["write"], "lavoro-admin") and not re.match(
            granted["read"], f"{name}.events"
        )
        if not spec.exists():
            continue
        for source in handled_sources(spec.load()):
            queue = queue_name(name, source)
            assert re.match(granted["configure"], queue) and re.match(granted["read"], queue)
            assert re.match(granted["read"], f"{source}.events"), f"{name} consumes {source}"
        for other in set(services.REGISTRY) - {name}:
            assert not re.match(granted["write"], f"{other}.events")
    [policy] = document["policies"]
    assert re.match(policy["pattern"], "ledger.from.calls") and not re.match(
        policy["pattern"], "ledger.dlq"
    )


# -- PostgreSQL --------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not on this machine")
def test_the_postgres_init_script_makes_one_database_and_role_per_service(unique):
    server = sa.engine.make_url(postgres_url())
    names = [f"{unique}_ledger", f"{unique}_calls"]
    env = {
        **os.environ,
        "PGHOST": server.host or "127.0.0.1",
        "PGPORT": str(server.port or 5432),
        "POSTGRES_USER": server.username or "postgres",
        "POSTGRES_DB": server.database or "postgres",
        "LAVORO_DATABASES": " ".join(names),
        **{f"{name.upper()}_DB_PASSWORD": uuid.uuid4().hex for name in names},
    }
    if server.password:
        env["PGPASSWORD"] = server.password
    admin = sa.create_engine(
        server.set(drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT"
    )
    try:
        done = subprocess.run(
            ["sh", str(DEPLOY / "postgres" / "init.sh")], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        with admin.connect() as conn:
            owners = dict(
                conn.execute(
                    sa.text(
                        "SELECT d.datname, r.rolname FROM pg_database d JOIN pg_roles r "
                        "ON r.oid = d.datdba WHERE d.datname = ANY(:names)"
                    ),
                    {"names": names},
                ).all()
            )
        assert owners == {name: name for name in names}
        ledger, calls = names
        own = sa.create_engine(
            server.set(
                drivername="postgresql+psycopg2",
                username=ledger,
                password=env[f"{ledger.upper()}_DB_PASSWORD"],
                database=ledger,
            )
        )
        with own.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE probe (x int)")  # it owns its database
        own.dispose()
        other = sa.create_engine(
            server.set(drivername="postgresql+psycopg2", username=ledger, database=calls)
        )
        with pytest.raises(sa.exc.OperationalError, match="permission denied for database"):
            other.connect()
        other.dispose()
        again = subprocess.run(
            ["sh", str(DEPLOY / "postgres" / "init.sh")],
            env={**env, "LAVORO_DATABASES": calls, f"{calls.upper()}_DB_PASSWORD": ""},
            capture_output=True,
            text=True,
        )
        assert again.returncode == 1 and f"{calls.upper()}_DB_PASSWORD is not set" in again.stderr
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{name}"')
        admin.dispose()


# -- the image's entrypoint --------------------------------------------------------------------------


def test_the_image_entrypoint_starts_a_service_and_sigterm_stops_it(tmp_path, unique, amqp_uri):
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M).group(1))
    assert entrypoint == ["lavoro", "serve"]
    port = free_port()
    out = (tmp_path / "serve.out").open("w")
    process = subprocess.Popen(
        [str(BIN / entrypoint[0]), *entrypoint[1:], unique],
        env=probe_env(unique, port, tmp_path, amqp_uri),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        reply = wait_for(
            lambda: _health(port),
            timeout=40,
            message="the service started by the entrypoint",
        )
        assert reply["service"] == unique and reply["status"] == "ok"
        process.send_signal(signal.SIGTERM)  # what `docker stop` sends to PID 1
        assert process.wait(timeout=30) == 0
        lines = [json.loads(line) for line in (tmp_path / "serve.out").read_text().splitlines()]
        messages = [line["message"] for line in lines if line.get("logger") == "lavoro.runner"]
        assert messages == ["service.started", "service.stopping", "service.stopped"]
        assert all(line["service"] == unique for line in lines)  # JSON logs, every line
        assert Path(default_url_for(tmp_path, unique)).exists()  # migrated before it served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        out.close()
        from tests.integration.test_runner import delete_exchange

        delete_exchange(amqp_uri, f"{unique}.events")


def default_url_for(var: Path, name: str) -> str:
    return str(var / f"{name}.db")


def _health(port: int):
    try:
        reply = requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
    except requests.ConnectionError:
        return None
    return reply.json() if reply.status_code == 200 else None
