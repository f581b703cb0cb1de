"""`lavoro run`, `lavoro serve` and `lavoro status`: start the services, one or all, and ask
whether each is up and nothing is behind, parked or stuck."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import typer
from rich.table import Table

from shared import services
from shared.cli.common import (
    NoDatabase,
    cli_errors,
    disposing,
    echo_json,
    fail,
    first_line,
    new_console,
    open_engine,
)

BROKER_HELP = (
    "start one with `rabbitmq-server -detached`, "
    "or `docker compose -f deploy/compose.yaml up -d rabbitmq`"
)


@cli_errors
def run(
    start_timeout: float = typer.Option(60.0, help="seconds each service may take to answer HTTP"),
    stop_timeout: float = typer.Option(
        30.0, help="seconds each service may take to stop before it is killed"
    ),
) -> None:
    """Start every service, each in its own process (needs RabbitMQ at AMQP_URI).

    Upgrades each service's database, starts it with its relay inside, writes an operator and
    an auditor token under var/ for the CLI (and a development key-encryption key, var/kek, if
    none is configured), and prints where each service listens. Ctrl-C (or SIGTERM) stops them
    all cleanly: in-flight messages go back to the broker, relays resume.

    Example: lavoro run
    """
    from shared import failover
    from shared.config import amqp_uri, log_format
    from shared.observability import broker_answers, local_url
    from shared.runner import (
        WEB_SERVER_KEY,
        Supervisor,
        check_address_free,
        ensure_dev_kek,
        ensure_dev_tokens,
        service_settings,
    )
    from shared.runner import upgrade as upgrade_database

    log_format()  # a malformed LOG_FORMAT is one line now, not one per service
    uri = amqp_uri()
    refused = broker_answers(uri, timeout=3.0, name="lavoro-run")
    if refused is not None:
        fail(f"RabbitMQ does not answer at {failover.describe(uri)} ({refused}): {BROKER_HELP}")
    specs = services.available()
    if not specs:
        typer.echo("no service is built yet: nothing to start (see shared/services.py)")
        return
    addresses = [(spec, service_settings(spec)[WEB_SERVER_KEY]) for spec in specs]
    for spec, address in addresses:
        # Before anything starts: a port another system holds stops this one, in one line.
        check_address_free(spec, address)
    kek_file = ensure_dev_kek()  # before the upgrades: a database may hold keys to wrap
    planned = []
    for spec, address in addresses:
        database = upgrade_database(spec)
        typer.echo(f"{spec.name}: database upgraded ({database})")
        planned.append((spec, address, database))
    token_files = ensure_dev_tokens()

    supervisor = Supervisor()
    supervisor.install_signal_handlers()
    failed: str | None = None
    try:
        for spec, address, database in planned:
            supervisor.start(spec, address, database)
        laggard = supervisor.wait_until_serving(start_timeout)
        if laggard is not None and not supervisor.stop_requested.is_set():
            code = laggard.process.poll()
            failed = (
                f"{laggard.spec.name} exited with code {code} while starting (its log is above)"
                if code is not None
                else f"{laggard.spec.name} did not answer at {laggard.address} "
                f"within {start_timeout:g}s"
            )
        if failed is None and not supervisor.stop_requested.is_set():
            table = Table(title="lavoro is running")
            for column in ("service", "HTTP", "OpenAPI", "database", "pid"):
                table.add_column(column)
            for child in supervisor.children:
                table.add_row(
                    child.spec.name,
                    local_url(child.address),
                    local_url(child.address, "/openapi.json"),
                    child.database,
                    str(child.process.pid),
                )
            console = new_console()
            console.print(table)
            for role, path in token_files.items():
                console.print(f"{role} token: {path}")
            if kek_file is not None:
                console.print(
                    f"key-encryption key: {kek_file} (development only: set LAVORO_KEK_FILE "
                    "to keep it apart from the databases)"
                )
            console.print("Ctrl-C stops every service.")
            died = supervisor.watch()
            if died is not None:
                failed = f"{died.spec.name} exited with code {died.process.returncode}"
    finally:
        codes = supervisor.stop(stop_timeout)
        supervisor.restore_signal_handlers()
    typer.echo("stopped: " + ", ".join(f"{name} (exit {code})" for name, code in codes.items()))
    if failed is not None:
        fail(f"{failed}; stopped the others")
    if any(code != 0 for code in codes.values()):
        raise typer.Exit(1)


@cli_errors
def serve(service: str = typer.Argument(..., help="the registered service to run")) -> None:
    """Run one service in this process until SIGTERM/SIGINT (the Docker entrypoint).

    Example: lavoro serve ledger
    """
    from shared.config import log_format
    from shared.db import ROOT

    services.get(service)  # an unknown name is a one-line error here, before the exec
    log_format()  # and so is a malformed LOG_FORMAT
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    sys.stdout.flush()
    # exec: the service becomes this process, so signals (docker stop) reach it directly.
    os.execve(sys.executable, [sys.executable, "-m", "shared.runner", service], env)


def _read(spec: services.ServiceSpec, names: list[str] | None) -> Any:
    from shared.observability import read_figures

    with disposing(open_engine(spec)) as engine:
        return read_figures(engine, names)


def _projection_names(spec: services.ServiceSpec) -> tuple[list[str] | None, str | None]:
    """The names of the service's projections (None: count every checkpoint found), and why
    its code could not be read, if it could not."""
    if not spec.exists():
        return None, None
    try:
        return [p.name for p in services.projections_of(spec)] or None, None
    except Exception as exc:  # status must still report what the database says
        return None, f"its code does not import: {type(exc).__name__}: {first_line(str(exc))}"


def _status_of(spec: services.ServiceSpec) -> dict[str, Any]:
    from shared.observability import fetch_health
    from shared.runner import WEB_SERVER_KEY, service_settings

    address = service_settings(spec)[WEB_SERVER_KEY]
    state, health = fetch_health(address)
    row: dict[str, Any] = {"service": spec.name, "state": state, "http": address, "problems": []}
    if state == "down":
        row["problems"].append(f"down: {health.get('error', 'no answer')}")
    elif state == "failing":
        failing = [name for name, check in health.get("checks", {}).items() if not check["ok"]]
        row["problems"].append("failing: " + (", ".join(failing) or health.get("error", "?")))
    elif health.get("status") == "degraded":
        # It serves, but something needs a hand: the check says what.
        row["state"] = "degraded"
        for name, check in health.get("checks", {}).items():
            if not check["ok"]:
                row["problems"].append(f"degraded: {name}: {check.get('error', '?')}")
    row["health"] = health
    names, broken = _projection_names(spec)
    if broken:
        row["problems"].append(broken)
    row["_names"] = names
    try:
        figures = _read(spec, names)
    except NoDatabase as exc:
        row["problems"].append(str(exc))
        row["_figures"] = None
        return row
    row["_figures"] = figures
    row.update(figures.to_json())
    if figures.parked:
        row["problems"].append(f"{figures.parked} dead letter(s) parked: `lavoro dlq list`")
    return row


def _stuck(before: Any, after: Any) -> list[str]:
    """Lags that did not move between two readings."""
    problems = []
    if after.relay_lag > 0 and after.relay_checkpoint <= before.relay_checkpoint:
        problems.append(f"relay stuck at {after.relay_checkpoint} (lag {after.relay_lag})")
    for name, checkpoint in after.projections.items():
        lag = after.head_position - checkpoint
        if lag > 0 and checkpoint <= before.projections.get(name, 0):
            problems.append(f"projection {name} stuck at {checkpoint} (lag {lag})")
    return problems


@cli_errors
def status(
    service: str | None = typer.Option(None, "--service", "-s", help="only this service"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    settle: float = typer.Option(
        2.0, help="seconds to watch a lag before calling it stuck (0: do not wait)"
    ),
) -> None:
    """Is each service up, and is anything behind, parked or stuck?

    Per service: up/degraded/failing/down (its /health), log head position and hash, relay lag
    (events the broker has not confirmed), inbox size, dead letters parked, projection lag. A
    lag that does not move within --settle seconds is stuck. Exits 1 if anything is down,
    degraded, failing, parked or stuck.

    Example: lavoro status --json
    """
    specs = [services.get(service)] if service else services.available()
    rows = [_status_of(spec) for spec in specs]
    lagging = [r for r in rows if r["_figures"] is not None and _lagging(r["_figures"])]
    if lagging and settle > 0:
        time.sleep(settle)
        for row in lagging:
            again = _read(services.get(row["service"]), row["_names"])
            row["problems"].extend(_stuck(row["_figures"], again))
            row.update(again.to_json())
    for row in rows:
        row.pop("_figures")
        row.pop("_names")
    if as_json:
        echo_json(rows)
    elif not rows:
        typer.echo("no service is built yet")
    else:
        table = Table()
        for column in (
            "service",
            "state",
            "head",
            "head hash",
            "relay lag",
            "inbox",
            "dead letters",
            "proj. lag",
            "problems",
        ):
            table.add_column(column)
        for row in rows:
            table.add_row(
                row["service"],
                row["state"],
                str(row.get("head_position", "-")),
                str(row.get("head_hash", "-"))[:16],
                str(row.get("relay_lag", "-")),
                str(row.get("inbox", "-")),
                str(row.get("dead_letters", "-")),
                str(row.get("projection_lag", "-")),
                "; ".join(row["problems"]) or "ok",
            )
        new_console().print(table)
    if any(row["problems"] for row in rows):
        raise typer.Exit(1)


def _lagging(figures: Any) -> bool:
    return bool(figures.relay_lag > 0 or figures.projection_lag > 0)
