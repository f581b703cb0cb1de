"""`lavoro ledger ...`: the programme's books, read from the running ledger service.

The registry entry (shared/services.py, `cli="services.ledger.cli"`) names this module; the
chassis adds `app` to the `lavoro` command as the group `ledger`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer

from shared.cli.common import cli_errors, command_group, echo_json, new_console
from shared.client import api

from .demo import CUP, progress_table

app = command_group("The programme's books, read from the running ledger service.")


def read_progress(
    *, token: str | None = None, cup: str = CUP, as_of: dt.date | None = None
) -> dict[str, Any]:
    """GET /projects/<cup>/progress[?as_of=] from the running ledger, with `token`, else the
    development auditor's (or operator's) token."""
    ledger = api("ledger", token, "auditor", "operator")
    params = {"as_of": as_of.isoformat()} if as_of else {}
    return dict(ledger.get(f"/projects/{cup}/progress", **params))


@app.command("progress")
@cli_errors
def progress(
    as_of: Annotated[
        dt.datetime | None,
        typer.Option(
            "--as-of",
            formats=["%Y-%m-%d"],
            help="the books as they stood at the end of this day in Bologna (YYYY-MM-DD)",
        ),
    ] = None,
    cup: str = typer.Option(CUP, help="the project's CUP"),
    token: str | None = typer.Option(
        None, help="a token that may read (default: var/auditor.token, else var/operator.token)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Programmed, admitted, legally binding and disbursed, in total and per budget line.

    Read from the running ledger service (GET /projects/<cup>/progress).

    Example: lavoro ledger progress --as-of 2025-06-30
    """
    found = read_progress(token=token, cup=cup, as_of=as_of.date() if as_of else None)
    if as_json:
        echo_json(found)
        return
    new_console().print(progress_table(found))
    typer.echo(f"disbursed: {found['disbursed_percent']}% of programmed")
