"""The `lavoro` command line: run the system, audit a service's log."""

from __future__ import annotations

import sys

import typer

from shared.db import default_url, make_engine, migrate
from shared.eventlog import EventLog

app = typer.Typer(help="lavoro: Bologna's work plan, event-sourced.", no_args_is_help=True)
audit = typer.Typer(
    help="Verify and export a service's hash-chained event log.", no_args_is_help=True
)
app.add_typer(audit, name="audit")

SERVICES = ("placement", "calls", "safeguarding", "charters", "ledger")


def _log(service: str) -> EventLog:
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    engine = make_engine(default_url(service))
    migrate(engine, service)
    return EventLog(engine)


@audit.command("verify")
def audit_verify(
    service: str = typer.Option(..., "--service", "-s", help="the service whose log to verify"),
) -> None:
    """Walk the hash chain. Exit 0 and print the head hash, or exit 1 and the first broken position.

    Example: lavoro audit verify --service ledger
    """
    result = _log(service).verify()
    if result.ok:
        typer.echo(
            f"{service}: OK, {result.checked} events, head {result.head_position} {result.head_hash}"
        )
        return
    typer.echo(f"{service}: BROKEN at position {result.broken_at}: {result.reason}", err=True)
    raise typer.Exit(1)


@audit.command("export")
def audit_export(
    service: str = typer.Option(..., "--service", "-s", help="the service whose log to export"),
) -> None:
    """Write the log to stdout as JSON Lines, one event a line in position order.

    Example: lavoro audit export --service ledger > ledger.jsonl
    """
    _log(service).export(sys.stdout.write)


@app.command("run")
def run() -> None:
    """Start every service that exists, each in its own process (needs RabbitMQ at AMQP_URI)."""
    typer.echo("no service is built yet: nothing to start")


if __name__ == "__main__":
    app()
