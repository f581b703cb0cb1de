"""`lavoro audit verify|export`: walk a service's hash chain end to end, or export its log."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import typer

from shared.cli.common import (
    CliError,
    NoDatabase,
    cli_errors,
    disposing,
    echo_json,
    named_specs,
    open_log,
)

app = typer.Typer(
    help="Verify and export services' hash-chained event logs.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


@app.command("verify")
@cli_errors
def audit_verify(
    service: str | None = typer.Option(
        None, "--service", "-s", help="the service whose log to verify"
    ),
    all_: bool = typer.Option(False, "--all", help="every service that has a log"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    anchor: str | None = typer.Option(
        None,
        help="a head published earlier, <position>:<hash>: a log cut short or rewritten before "
        "it breaks there (with --service)",
    ),
) -> None:
    """Walk a log's hash chain end to end, against its head row and checkpoints.

    Exit 0 and print the head hash, or exit 1 and the first broken position with the reason
    (docs/audit.md lists them). With --all, every service's log; exit 1 if any breaks.

    Example: lavoro audit verify --service ledger --anchor 42:<the head hash printed before>
    """
    from shared.chain import Anchor

    if anchor is not None and not service:
        raise CliError("an anchor is one log's head: give it with --service")
    try:
        published = Anchor.parse(anchor) if anchor is not None else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    results = []
    broken = False
    for spec in named_specs(service, all_):
        try:
            log = open_log(spec)
        except NoDatabase as exc:
            if not all_:
                raise
            results.append({"service": spec.name, "ok": None, "reason": str(exc)})
            continue
        with disposing(log.engine):
            result = log.verify(anchor=published)
        broken = broken or not result.ok
        results.append({"service": spec.name, **dataclasses.asdict(result)})
    if as_json:
        echo_json(results)
    for row in results if not as_json else []:
        name = row["service"]
        if row["ok"] is None:
            typer.echo(f"{name}: skipped, {row['reason']}")
        elif row["ok"]:
            typer.echo(
                f"{name}: OK, {row['checked']} events, head {row['head_position']} "
                f"{row['head_hash']}"
            )
        else:
            typer.echo(f"{name}: BROKEN at position {row['broken_at']}: {row['reason']}", err=True)
    if broken:
        raise typer.Exit(1)


@app.command("export")
@cli_errors
def audit_export(
    service: str | None = typer.Option(
        None, "--service", "-s", help="the service whose log to export"
    ),
    all_: bool = typer.Option(False, "--all", help="every service that has a log, into --out"),
    out: Annotated[
        Path | None, typer.Option(help="with --all: the directory for <service>.jsonl")
    ] = None,
) -> None:
    """Export a log as JSON Lines, one event a line in position order.

    To stdout; with --all, each service's log to <out>/<service>.jsonl.

    Example: lavoro audit export --service ledger > ledger.jsonl
    """
    if not all_:
        log = open_log(named_specs(service)[0])
        with disposing(log.engine):
            log.export(sys.stdout.write)
        return
    if out is None:
        raise CliError("--all writes one file per service: name the directory with --out")
    out.mkdir(parents=True, exist_ok=True)
    for spec in named_specs(None, True):
        try:
            log = open_log(spec)
        except NoDatabase as exc:
            typer.echo(f"{spec.name}: skipped, {exc}", err=True)
            continue
        path = out / f"{spec.name}.jsonl"
        with disposing(log.engine), path.open("w", encoding="utf-8") as handle:
            count = log.export(handle.write)
        typer.echo(f"{spec.name}: {count} events to {path}", err=True)
