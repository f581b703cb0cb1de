"""`lavoro ledger progress`: the programme's books, read from the running ledger service."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from shared.cli.common import CliError, cli_errors, echo_json, new_console

app = typer.Typer(
    help="The programme's books, read from the running ledger service.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


@app.command("progress")
@cli_errors
def ledger_progress(
    as_of: Annotated[
        dt.datetime | None,
        typer.Option(
            "--as-of",
            formats=["%Y-%m-%d"],
            help="the books as they stood at the end of this day in Bologna (YYYY-MM-DD)",
        ),
    ] = None,
    cup: str = typer.Option("F31D23000140007", help="the project's CUP"),
    token: str | None = typer.Option(
        None, help="a token that may read (default: var/auditor.token, else var/operator.token)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Programmed, admitted, legally binding and disbursed, in total and per budget line.

    Read from the running ledger service (GET /projects/<cup>/progress).

    Example: lavoro ledger progress --as-of 2025-06-30
    """
    from shared import demo

    try:
        progress = demo.read_progress(token=token, cup=cup, as_of=as_of.date() if as_of else None)
    except demo.DemoError as exc:
        raise CliError(str(exc)) from exc
    if as_json:
        echo_json(progress)
        return
    new_console().print(demo.progress_table(progress))
    typer.echo(f"disbursed: {progress['disbursed_percent']}% of programmed")
