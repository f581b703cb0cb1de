"""`lavoro demo`: the services' demo steps run against the running system, with a progress bar,
then what each service says of the outcome (shared/demo.py runs it)."""

from __future__ import annotations

import typer
from rich.console import Console

from shared.cli.common import CliError, cli_errors, echo_json, new_console


@cli_errors
def demo_command(
    token: str | None = typer.Option(None, help="an operator token (default: var/operator.token)"),
    timeout: float = typer.Option(60.0, help="seconds to wait for each answer between services"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Drive the real programme through the services' HTTP APIs and print the ledger's figures.

    Needs the system started with `lavoro run`. The project CUP F31D23000140007 and its
    admission, the offices' conventions and contracts, a self-employment and a social-innovation
    call with their applications (each call then closed early, with a reason), co-design,
    scores and rankings, the awards reaching the ledger (one finds no room and is suspended),
    advances paid. Exits 1 unless programmed, admitted,
    legally binding and disbursed are 4,000,000.00 / 4,000,000.00 / 4,000,000.00 / 605,305.62.
    Running it again changes nothing.

    Example: lavoro demo
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from shared import demo

    ready = demo.connect(token=token, timeout=timeout)
    steps = ready.steps()
    bar = Progress(
        TextColumn("{task.description:<48}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=as_json,
    )
    with bar:
        task = bar.add_task("lavoro demo", total=steps)

        def advance(label: str) -> None:
            bar.update(task, description=label[:48], completed=bar.tasks[0].completed + 1)

        result = ready.run(advance)
        bar.update(task, description="done", completed=steps)
    if as_json:
        echo_json(result.to_json())
    else:
        console = new_console()
        for item in result.shown():
            console.print(item)
    if result.problems:
        raise CliError("; ".join(result.problems))
