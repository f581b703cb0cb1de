"""`lavoro projections rebuild`: drop a service's read models and fold its log again."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from shared import services
from shared.cli.common import CliError, cli_errors, command_group, disposing, echo_json, open_engine

app = command_group("A service's read models.")


@app.command("rebuild")
@cli_errors
def projections_rebuild(
    service: str = typer.Option(..., "--service", "-s", help="the service whose read models"),
    projection: Annotated[
        list[str] | None, typer.Option("--projection", "-p", help="only these")
    ] = None,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Drop a service's read models and fold its whole log again.

    Safe while the service runs: appends made meanwhile are folded too; readers see partial
    read models until it ends.

    Example: lavoro projections rebuild --service ledger
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from shared.eventlog import EventLog

    spec = services.get(service)
    found = services.projections_of(spec)
    if projection:
        unknown = sorted(set(projection) - {p.name for p in found})
        if unknown:
            raise CliError(
                f"{service} has no projection {', '.join(unknown)}; "
                f"it has {', '.join(p.name for p in found) or 'none'}"
            )
        found = [p for p in found if p.name in projection]
    if not found:
        if as_json:
            echo_json([])
        else:
            typer.echo(f"{service} has no projections: nothing to rebuild")
        return
    results = []
    with disposing(open_engine(spec)) as engine:
        log = EventLog(engine, upcasters=services.upcasters_of(spec))
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=Console(stderr=True),
            transient=as_json,
        ) as bar:
            for item in found:
                task = bar.add_task(item.name, total=None)

                def advance(done: int, total: int, task: Any = task) -> None:
                    bar.update(task, completed=done, total=total)

                folded = item.rebuild(log, progress=advance)
                results.append(
                    {
                        "projection": item.name,
                        "folded": folded,
                        "checkpoint": item.checkpoint(engine),
                    }
                )
    if as_json:
        echo_json(results)
        return
    for result in results:
        typer.echo(
            f"{service}: rebuilt {result['projection']}, {result['folded']} events folded, "
            f"checkpoint {result['checkpoint']}"
        )
