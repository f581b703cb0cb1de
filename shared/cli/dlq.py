"""`lavoro dlq list|retry|skip`: the events a service could not handle, parked per stream, and
releasing them for the running service to replay."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from shared import dlq, services
from shared.cli.common import (
    NoDatabase,
    cli_errors,
    command_group,
    disposing,
    echo_json,
    first_line,
    new_console,
    open_engine,
)

app = command_group("Dead letters: events a service could not handle, parked per stream.")


def _letter_json(service: str, letter: dlq.DeadLetter) -> dict[str, Any]:
    return {
        "service": service,
        "id": letter.id,
        "event_id": letter.event_id,
        "source": letter.source,
        "stream": letter.stream,
        "position": letter.position,
        "type": letter.type,
        "attempts": letter.attempts,
        "status": letter.status,
        "error": letter.error,
        "parked_at": letter.parked_at.isoformat(),
    }


@app.command("list")
@cli_errors
def dlq_list(
    service: str | None = typer.Option(None, "--service", "-s", help="only this service"),
    source: str | None = typer.Option(None, help="only events from this source service"),
    stream: str | None = typer.Option(None, help="only this stream"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Parked events, by service, source, stream and position.

    Example: lavoro dlq list --service ledger
    """
    found: list[dict[str, Any]] = []
    specs = [services.get(service)] if service else services.available()
    for spec in specs:
        try:
            engine = open_engine(spec)
        except NoDatabase:
            if service:
                raise
            continue
        with disposing(engine):
            found += [
                _letter_json(spec.name, letter)
                for letter in dlq.list_parked(engine, source=source, stream=stream)
            ]
    if as_json:
        echo_json(found)
        return
    if not found:
        typer.echo("no dead letters parked")
        return
    table = Table()
    for column in ("service", "source", "stream", "position", "type", "tries", "error"):
        table.add_column(column)
    for row in found:
        table.add_row(
            row["service"],
            row["source"],
            row["stream"],
            str(row["position"]),
            row["type"],
            str(row["attempts"]),
            first_line(row["error"])[:80],
        )
    new_console().print(table)


@app.command("retry")
@cli_errors
def dlq_retry(
    service: str = typer.Option(..., "--service", "-s", help="the service that parked them"),
    source: str | None = typer.Option(None, help="only streams of this source service"),
    stream: str | None = typer.Option(None, help="only this stream"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Release parked streams for the running service to replay, in order.

    Each replayed event is then retried, or parked again if it still fails.

    Example: lavoro dlq retry --service ledger --source calls --stream award-42
    """
    spec = services.get(service)
    released: list[dlq.DeadLetter] = []
    with disposing(open_engine(spec)) as engine:
        parked = dlq.list_parked(engine, source=source, stream=stream)
        for key in dict.fromkeys((letter.source, letter.stream) for letter in parked):
            released += dlq.retry(engine, *key)
    if as_json:
        echo_json([_letter_json(spec.name, letter) for letter in released])
        return
    streams = {(letter.source, letter.stream) for letter in released}
    typer.echo(f"{service}: released {len(released)} event(s) of {len(streams)} stream(s)")


@app.command("skip")
@cli_errors
def dlq_skip(
    service: str = typer.Option(..., "--service", "-s", help="the service that parked it"),
    source: str = typer.Option(..., help="the source service of the stream"),
    stream: str = typer.Option(..., help="the stream"),
    event: str | None = typer.Option(
        None, help="the event id to give up on (default: the first parked, the one in front)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Give up on one parked event on purpose; release the rest of its stream.

    The skipped event is never handled; the others of its stream are replayed in order.

    Example: lavoro dlq skip --service ledger --source calls --stream award-42
    """
    spec = services.get(service)
    with disposing(open_engine(spec)) as engine:
        result = dlq.skip(engine, source, stream, event)
    if as_json:
        echo_json(
            {
                "skipped": [_letter_json(spec.name, letter) for letter in result.skipped],
                "released": [_letter_json(spec.name, letter) for letter in result.released],
            }
        )
        return
    typer.echo(
        f"{service}: skipped {', '.join(letter.event_id for letter in result.skipped)}; "
        f"released {len(result.released)} event(s) behind it"
    )
