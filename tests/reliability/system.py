"""calls and ledger as a deployment runs them: each a process of its own (`python -m
shared.runner <service>`, what `lavoro serve` execs), on a broker (a vhost of the shared one, or
the suite's cluster) and on PostgreSQL, in a schema of its own per service. A service may run
as several replicas on one schema. The suite kills them (SIGKILL), starts them again, and ends
their PostgreSQL sessions: each process names its sessions (`application_name`) so that
`pg_stat_activity` tells them apart.

Logs are JSON lines, a file a process under the scenario's folder; a failing check names it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from shared.db import ROOT, make_engine, normalise_url
from shared.eventlog import EventLog
from tests.helpers import wait_for
from tests.kit.http import TOKENS
from tests.reliability.rabbit import free_port

START_TIMEOUT = 60.0
SERVICES = ("calls", "ledger")


def _clean_environment() -> dict[str, str]:
    """This process's environment without anything that would point a service elsewhere."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in ("LAVORO_SERVICES", "LAVORO_TOKENS_FILE", "LAVORO_TOKENS", "AMQP_URI")
        and not key.endswith(("_DATABASE_URL", "_HTTP"))
        and not key.startswith("LAVORO_RETRY")
    }


@dataclasses.dataclass
class Process:
    """One replica of a service: the process, its HTTP port, its log file."""

    service: str
    replica: int
    env: dict[str, str]
    port: int
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def label(self) -> str:
        return f"{self.service}-{self.replica}"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        out = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "shared.runner", self.service],
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self.starts += 1

    def healthy(self) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            raise AssertionError(
                f"{self.label} exited with {self.popen.returncode}; see {self.log_path}"
            )
        try:
            return requests.get(self.base + "/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        wait_for(self.healthy, timeout, f"{self.label}'s /health (see {self.log_path})")

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no graceful anything, as an OOM killer or a pulled plug."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(30)

    def stop(self, timeout: float = 30.0) -> None:
        if not self.running:
            return
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclasses.dataclass
class Database:
    """A service's PostgreSQL schema, as its processes and the checks reach it."""

    url: str  # the server's URL, without schema
    schema: str
    application_name: str

    @property
    def service_url(self) -> str:
        """What `<SERVICE>_DATABASE_URL` says: the schema and the session name in the URL."""
        query = urllib.parse.urlencode(
            {"options": f"-csearch_path={self.schema}", "application_name": self.application_name}
        )
        return f"{self.url}?{query}"

    def engine(self) -> sa.Engine:
        return make_engine(self.url, schema=self.schema)


class System:
    """The services of one scenario: their databases, their processes, and what the checks read."""

    def __init__(self, folder: Path, amqp_uri: str, pg_url: str, **settings: str) -> None:
        self.folder = folder
        self.amqp_uri = amqp_uri
        self.pg_url = pg_url
        tag = uuid.uuid4().hex[:10]
        self.databases = {
            service: Database(pg_url, f"rel_{tag}_{service}", f"lavoro-rel-{tag}-{service}")
            for service in SERVICES
        }
        self.settings = settings
        self.processes: dict[str, list[Process]] = {service: [] for service in SERVICES}
        self._engines: dict[str, sa.Engine] = {}
        self._admin = sa.create_engine(normalise_url(pg_url), pool_size=2)
        with self._admin.begin() as conn:
            for database in self.databases.values():
                conn.exec_driver_sql(f'CREATE SCHEMA "{database.schema}"')

    # -- processes -----------------------------------------------------------------------------

    def add(self, service: str) -> Process:
        """A new replica of `service` (not started)."""
        replicas = self.processes[service]
        port = free_port()
        env = _clean_environment()
        env.update(
            AMQP_URI=self.amqp_uri,
            LAVORO_TOKENS=TOKENS,
            LAVORO_VAR=str(self.folder / "var"),
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
            CALLS_PSEUDONYM_KEY="fault-suite-pseudonym-key",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            **{
                f"{service.upper()}_DATABASE_URL": self.databases[service].service_url,
                f"{service.upper()}_HTTP": f"127.0.0.1:{port}",
            },
            **self.settings,
        )
        (self.folder / "var").mkdir(parents=True, exist_ok=True)
        process = Process(
            service,
            len(replicas) + 1,
            env,
            port,
            self.folder / f"{service}-{len(replicas) + 1}.log",
        )
        replicas.append(process)
        return process

    def start(self, replicas: dict[str, int] | None = None) -> None:
        """The first replica of each service (migrating its schema), then any others."""
        wanted = replicas or {service: 1 for service in SERVICES}
        firsts = [self.add(service) for service in SERVICES if wanted.get(service)]
        for process in firsts:
            process.start()
        for process in firsts:
            process.wait_healthy()
        others = [
            self.add(service) for service in SERVICES for _ in range(wanted.get(service, 0) - 1)
        ]
        for process in others:
            process.start()
        for process in others:
            process.wait_healthy()

    def replica(self, service: str, n: int = 1) -> Process:
        return self.processes[service][n - 1]

    def restart(self, process: Process) -> None:
        """SIGKILL, then start it again on the same port and database."""
        process.kill()
        process.start()
        process.wait_healthy()

    def close(self) -> None:
        for replicas in self.processes.values():
            for process in replicas:
                process.kill()
        for engine in self._engines.values():
            engine.dispose()
        with self._admin.begin() as conn:
            for database in self.databases.values():
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{database.schema}" CASCADE')
        self._admin.dispose()

    # -- what the checks read --------------------------------------------------------------------

    def engine(self, service: str) -> sa.Engine:
        if service not in self._engines:
            self._engines[service] = self.databases[service].engine()
        return self._engines[service]

    def log(self, service: str) -> EventLog:
        return EventLog(self.engine(service))

    def head(self, service: str) -> int:
        with self.engine(service).connect() as conn:
            value = conn.exec_driver_sql("SELECT position FROM log_head WHERE id = 1").scalar()
        return int(value or 0)

    def events(self) -> int:
        return sum(self.head(service) for service in SERVICES)

    def sessions(self, service: str) -> list[dict[str, Any]]:
        """The service's PostgreSQL sessions now: pid, state, what they wait on, their query."""
        with self._admin.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT pid, state, wait_event_type, query FROM pg_stat_activity "
                "WHERE application_name = %(name)s",
                {"name": self.databases[service].application_name},
            ).mappings()
            return [dict(row) for row in rows]

    def terminate_sessions(self, service: str) -> tuple[int, int]:
        """`pg_terminate_backend` on every session of the service; (ended, busy) where busy is
        how many were in the middle of a statement or a transaction."""
        with self._admin.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid), state FROM pg_stat_activity "
                "WHERE application_name = %(name)s",
                {"name": self.databases[service].application_name},
            ).all()
        ended = sum(1 for ok, _state in rows if ok)
        busy = sum(1 for ok, state in rows if ok and state in ("active", "idle in transaction"))
        return ended, busy

    @contextlib.contextmanager
    def admin(self) -> Iterator[sa.Connection]:
        with self._admin.connect() as conn:
            yield conn
