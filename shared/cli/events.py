"""`lavoro events tail`: the events services append, one readable line each, as they come."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from shared import services
from shared.cli.common import CliError, NoDatabase, cli_errors, command_group, open_engine

app = command_group("Follow the events services append.")


def _event_line(service: str, event: Any, width: int = 100) -> str:
    from shared.canonical import canonical
    from shared.clock import format_ts

    data = canonical(event.data)
    if len(data) > width:
        data = data[: width - 1] + "…"
    return (
        f"{format_ts(event.recorded_at)}  {service}  #{event.position}  {event.stream}  "
        f"{event.type}  {data}"
    )


@app.command("tail")
@cli_errors
def events_tail(
    service: Annotated[
        list[str] | None, typer.Option("--service", "-s", help="only these services")
    ] = None,
    type_: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="only these event types")
    ] = None,
    from_start: bool = typer.Option(False, "--from-start", help="from position 1, not the head"),
    limit: int = typer.Option(0, help="stop after this many events (0: never)"),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="keep waiting for new events"),
    interval: float = typer.Option(0.5, help="seconds between looks at the logs"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object a line"),
) -> None:
    """Follow events as services append them, one readable line each.

    Each line: time recorded, service, position, stream, type, data (shortened).

    Example: lavoro events tail --service ledger --type payment_disbursed
    """
    from shared.canonical import canonical
    from shared.eventlog import EventLog

    specs = [services.get(name) for name in service] if service else services.available()
    logs: dict[str, Any] = {}
    after: dict[str, int] = {}
    for spec in specs:
        try:
            engine = open_engine(spec)
        except NoDatabase:
            if service:
                raise
            continue
        logs[spec.name] = EventLog(engine)
        after[spec.name] = 0 if from_start else logs[spec.name].head()[0]
    if not logs:
        raise CliError("no service has a database yet: start them with `lavoro run`")
    printed = 0
    types = list(type_) if type_ else None
    try:
        while True:
            for name, log in logs.items():
                while True:
                    page = log.read_page(after[name], 500, types=types, upcast=False)
                    for event in page:
                        if as_json:
                            typer.echo(canonical({"service": name, **event.to_json()}))
                        else:
                            typer.echo(_event_line(name, event))
                        after[name] = event.position
                        printed += 1
                        if limit and printed >= limit:
                            return
                    if len(page) < 500:
                        break
            if not follow:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return  # Ctrl-C is how one stops following
    finally:
        for log in logs.values():
            log.engine.dispose()
