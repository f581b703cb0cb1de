"""The `lavoro` command line: run the system, watch it, and operate on each service's log.

Every command reads a service's database with the same configuration the service uses
(`<SERVICE>_DATABASE_URL`, default SQLite under `var/`) and knows the services from the one
registry, shared/services.py. Errors are one line on stderr and a non-zero exit; `--json` prints
what a script wants on stdout.
"""

from __future__ import annotations

import warnings

# Before nameko is imported: its eventlet notice is not for the people typing these commands.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import datetime as dt  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, Any, TypeVar  # noqa: E402

import sqlalchemy as sa  # noqa: E402
import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from shared import dlq, services  # noqa: E402
from shared.auth import TokenConfigError  # noqa: E402
from shared.config import ConfigError  # noqa: E402
from shared.errors import NotFound  # noqa: E402

F = TypeVar("F", bound=Callable[..., Any])
TokensFileOption = Annotated[
    Path | None, typer.Option(help="the tokens file (default: LAVORO_TOKENS_FILE, var/tokens.json)")
]

app = typer.Typer(
    help="lavoro: Bologna's work plan, event-sourced. Start with `lavoro run`.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
audit = typer.Typer(
    help="Verify and export services' hash-chained event logs.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
events = typer.Typer(
    help="Follow the events services append.", no_args_is_help=True, rich_markup_mode="markdown"
)
dead_letters = typer.Typer(
    help="Dead letters: events a service could not handle, parked per stream.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
projections = typer.Typer(
    help="A service's read models.", no_args_is_help=True, rich_markup_mode="markdown"
)
tokens = typer.Typer(
    help="Bearer tokens for the HTTP APIs.", no_args_is_help=True, rich_markup_mode="markdown"
)
ledger = typer.Typer(
    help="The programme's books, read from the running ledger service.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(audit, name="audit")
app.add_typer(events, name="events")
app.add_typer(dead_letters, name="dlq")
app.add_typer(projections, name="projections")
app.add_typer(tokens, name="tokens")
app.add_typer(ledger, name="ledger")

BROKER_HELP = (
    "start one with `rabbitmq-server -detached`, "
    "or `docker compose -f deploy/compose.yaml up -d rabbitmq`"
)


class CliError(Exception):
    """Ends a command with its message on one line and exit code 1."""


class NoDatabase(CliError):
    """The service has no database yet (never started or migrated)."""


def _cli_errors(fn: F) -> F:
    """Known failures become one line on stderr and exit 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except (
            CliError,
            services.UnknownService,
            services.RegistryError,
            ConfigError,
            TokenConfigError,
            NotFound,
        ) as exc:
            message = exc.message if isinstance(exc, NotFound) else str(exc)
            _fail(message)
        except sa.exc.DBAPIError as exc:
            _fail(f"database error: {_first_line(str(exc.orig))}")
        except OSError as exc:
            _fail(f"{type(exc).__name__}: {exc}")

    return wrapper  # type: ignore[return-value]


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {_first_line(message)}", err=True)
    raise typer.Exit(code)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def _console() -> Console:
    # Built per command: it must write to the sys.stdout of the moment (the test runner's too).
    # Into a file or a pipe, wide enough that a row stays on one line for grep.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 240)


# -- opening a service's database ----------------------------------------------------------------


def _specs(service: str | None, all_: bool = False) -> list[services.ServiceSpec]:
    if service:
        return [services.get(service)]
    if not all_:
        raise CliError("name a service with --service, or use --all")
    return list(services.registry().values())


def _engine(spec: services.ServiceSpec, *, create: bool = False) -> sa.Engine:
    """An engine on the service's database. Without `create`, NoDatabase if it has none yet;
    with it, the database is created and upgraded (the way the service would at start)."""
    from shared.db import make_engine, migrate
    from shared.runner import database_of

    url, schema = database_of(spec)
    sqlite_path = _sqlite_path(url)
    if not create and sqlite_path is not None and not sqlite_path.exists():
        raise NoDatabase(f"{spec.name} has no database yet ({url}); `lavoro run` creates it")
    engine = make_engine(url, schema=schema)
    if create:
        migrate(engine, spec.name)
        return engine
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("log_head"):
            engine.dispose()
            raise NoDatabase(f"{spec.name} has no event log yet in {_safe_url(engine)}")
    return engine


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///") :].split("?", 1)[0])


def _safe_url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _log(spec: services.ServiceSpec) -> Any:
    from shared.eventlog import EventLog

    return EventLog(_engine(spec))


@contextlib.contextmanager
def _disposing(engine: sa.Engine) -> Iterator[sa.Engine]:
    try:
        yield engine
    finally:
        engine.dispose()


# -- run, serve ------------------------------------------------------------------------------------


@app.command("run")
@_cli_errors
def run(
    start_timeout: float = typer.Option(60.0, help="seconds each service may take to answer HTTP"),
    stop_timeout: float = typer.Option(
        30.0, help="seconds each service may take to stop before it is killed"
    ),
) -> None:
    """Start every service, each in its own process (needs RabbitMQ at AMQP_URI).

    Upgrades each service's database, starts it with its relay inside, writes an operator and
    an auditor token under var/ for the CLI, and prints where each service listens. Ctrl-C (or
    SIGTERM) stops them all cleanly: in-flight messages go back to the broker, relays resume.

    Example: lavoro run
    """
    from kombu.utils.url import sanitize_url

    from shared.config import amqp_uri
    from shared.observability import broker_answers, local_url
    from shared.runner import WEB_SERVER_KEY, Supervisor, ensure_dev_tokens, service_settings
    from shared.runner import upgrade as upgrade_database

    uri = amqp_uri()
    refused = broker_answers(uri, timeout=3.0)
    if refused is not None:
        _fail(f"RabbitMQ does not answer at {sanitize_url(uri)} ({refused}): {BROKER_HELP}")
    specs = services.available()
    if not specs:
        typer.echo("no service is built yet: nothing to start (see shared/services.py)")
        return
    planned = []
    for spec in specs:
        address = service_settings(spec)[WEB_SERVER_KEY]
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
            console = _console()
            console.print(table)
            for role, path in token_files.items():
                console.print(f"{role} token: {path}")
            console.print("Ctrl-C stops every service.")
            died = supervisor.watch()
            if died is not None:
                failed = f"{died.spec.name} exited with code {died.process.returncode}"
    finally:
        codes = supervisor.stop(stop_timeout)
        supervisor.restore_signal_handlers()
    typer.echo("stopped: " + ", ".join(f"{name} (exit {code})" for name, code in codes.items()))
    if failed is not None:
        _fail(f"{failed}; stopped the others")
    if any(code != 0 for code in codes.values()):
        raise typer.Exit(1)


@app.command("serve")
@_cli_errors
def serve(service: str = typer.Argument(..., help="the registered service to run")) -> None:
    """Run one service in this process until SIGTERM/SIGINT (the Docker entrypoint).

    Example: lavoro serve ledger
    """
    from shared.db import ROOT

    services.get(service)  # an unknown name is a one-line error here, before the exec
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    sys.stdout.flush()
    # exec: the service becomes this process, so signals (docker stop) reach it directly.
    os.execve(sys.executable, [sys.executable, "-m", "shared.runner", service], env)


# -- status ----------------------------------------------------------------------------------------


def _read(spec: services.ServiceSpec, names: list[str] | None) -> Any:
    from shared.observability import read_figures

    with _disposing(_engine(spec)) as engine:
        return read_figures(engine, names)


def _projection_names(spec: services.ServiceSpec) -> tuple[list[str] | None, str | None]:
    """The names of the service's projections (None: count every checkpoint found), and why
    its code could not be read, if it could not."""
    if not spec.exists():
        return None, None
    try:
        return [p.name for p in services.projections_of(spec)] or None, None
    except Exception as exc:  # status must still report what the database says
        return None, f"its code does not import: {type(exc).__name__}: {_first_line(str(exc))}"


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


@app.command("status")
@_cli_errors
def status(
    service: str | None = typer.Option(None, "--service", "-s", help="only this service"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    settle: float = typer.Option(
        2.0, help="seconds to watch a lag before calling it stuck (0: do not wait)"
    ),
) -> None:
    """Is each service up, and is anything behind, parked or stuck?

    Per service: up/failing/down (its /health), log head position and hash, relay lag (events
    the broker has not confirmed), inbox size, dead letters parked, projection lag. A lag that
    does not move within --settle seconds is stuck. Exits 1 if anything is down, failing,
    parked or stuck.

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
        _echo_json(rows)
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
        _console().print(table)
    if any(row["problems"] for row in rows):
        raise typer.Exit(1)


def _lagging(figures: Any) -> bool:
    return bool(figures.relay_lag > 0 or figures.projection_lag > 0)


# -- events ----------------------------------------------------------------------------------------


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


@events.command("tail")
@_cli_errors
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
            engine = _engine(spec)
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


# -- dead letters ----------------------------------------------------------------------------------


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


@dead_letters.command("list")
@_cli_errors
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
            engine = _engine(spec)
        except NoDatabase:
            if service:
                raise
            continue
        with _disposing(engine):
            found += [
                _letter_json(spec.name, letter)
                for letter in dlq.list_parked(engine, source=source, stream=stream)
            ]
    if as_json:
        _echo_json(found)
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
            _first_line(row["error"])[:80],
        )
    _console().print(table)


@dead_letters.command("retry")
@_cli_errors
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
    with _disposing(_engine(spec)) as engine:
        parked = dlq.list_parked(engine, source=source, stream=stream)
        for key in dict.fromkeys((letter.source, letter.stream) for letter in parked):
            released += dlq.retry(engine, *key)
    if as_json:
        _echo_json([_letter_json(spec.name, letter) for letter in released])
        return
    streams = {(letter.source, letter.stream) for letter in released}
    typer.echo(f"{service}: released {len(released)} event(s) of {len(streams)} stream(s)")


@dead_letters.command("skip")
@_cli_errors
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
    with _disposing(_engine(spec)) as engine:
        result = dlq.skip(engine, source, stream, event)
    if as_json:
        _echo_json(
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


# -- projections -----------------------------------------------------------------------------------


@projections.command("rebuild")
@_cli_errors
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
            _echo_json([])
        else:
            typer.echo(f"{service} has no projections: nothing to rebuild")
        return
    results = []
    with _disposing(_engine(spec)) as engine:
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
        _echo_json(results)
        return
    for result in results:
        typer.echo(
            f"{service}: rebuilt {result['projection']}, {result['folded']} events folded, "
            f"checkpoint {result['checkpoint']}"
        )


# -- audit -----------------------------------------------------------------------------------------


@audit.command("verify")
@_cli_errors
def audit_verify(
    service: str | None = typer.Option(
        None, "--service", "-s", help="the service whose log to verify"
    ),
    all_: bool = typer.Option(False, "--all", help="every service that has a log"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Walk a log's hash chain end to end.

    Exit 0 and print the head hash, or exit 1 and the first broken position. With --all,
    every service's log; exit 1 if any breaks.

    Example: lavoro audit verify --all
    """
    results = []
    broken = False
    for spec in _specs(service, all_):
        try:
            log = _log(spec)
        except NoDatabase as exc:
            if not all_:
                raise
            results.append({"service": spec.name, "ok": None, "reason": str(exc)})
            continue
        with _disposing(log.engine):
            result = log.verify()
        broken = broken or not result.ok
        results.append({"service": spec.name, **dataclasses.asdict(result)})
    if as_json:
        _echo_json(results)
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


@audit.command("export")
@_cli_errors
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
        log = _log(_specs(service)[0])
        with _disposing(log.engine):
            log.export(sys.stdout.write)
        return
    if out is None:
        raise CliError("--all writes one file per service: name the directory with --out")
    out.mkdir(parents=True, exist_ok=True)
    for spec in _specs(None, True):
        try:
            log = _log(spec)
        except NoDatabase as exc:
            typer.echo(f"{spec.name}: skipped, {exc}", err=True)
            continue
        path = out / f"{spec.name}.jsonl"
        with _disposing(log.engine), path.open("w", encoding="utf-8") as handle:
            count = log.export(handle.write)
        typer.echo(f"{spec.name}: {count} events to {path}", err=True)


# -- the demo and the ledger's figures -------------------------------------------------------------


@app.command("demo")
@_cli_errors
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

    steps = len(demo.script(dt.date.today(), dt.date.today())) + 1
    try:
        ready = demo.connect(token=token, timeout=timeout)
    except demo.DemoError as exc:
        raise CliError(str(exc)) from exc
    bar = Progress(
        TextColumn("{task.description:<48}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=as_json,
    )
    try:
        with bar:
            task = bar.add_task("lavoro demo", total=steps)

            def advance(label: str) -> None:
                bar.update(task, description=label[:48], completed=bar.tasks[0].completed + 1)

            result = ready.run(advance)
            bar.update(task, description="done", completed=steps)
    except demo.DemoError as exc:
        raise CliError(str(exc)) from exc
    if as_json:
        _echo_json(result.to_json())
    else:
        console = _console()
        console.print(demo.progress_table(result.progress, "The ledger after the demo"))
        for line in demo.describe(result):
            console.print(line)
    if result.mismatches:
        raise CliError(demo.mismatch_line(result.mismatches))


@ledger.command("progress")
@_cli_errors
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
        _echo_json(progress)
        return
    _console().print(demo.progress_table(progress))
    typer.echo(f"disbursed: {progress['disbursed_percent']}% of programmed")


# -- tokens ----------------------------------------------------------------------------------------


def _tokens_path(file: Path | None) -> Path:
    from shared.runner import tokens_file

    return file or tokens_file()


@tokens.command("issue")
@_cli_errors
def tokens_issue(
    subject: str = typer.Option(..., help="who: becomes the actor of the events they cause"),
    role: str = typer.Option(..., help="operator (commands and reads) or auditor (reads, audit)"),
    file: TokensFileOption = None,
) -> None:
    """Issue a token: printed once, only its SHA-256 is stored.

    Running services accept it at once, without a restart.

    Example: lavoro tokens issue --subject maria.rossi --role operator
    """
    from shared.auth import issue_token

    typer.echo(issue_token(_tokens_path(file), subject, role))


@tokens.command("list")
@_cli_errors
def tokens_list(
    file: TokensFileOption = None,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Subjects and roles in the tokens file (only hashes are kept, never tokens).

    Example: lavoro tokens list
    """
    entries = _token_entries(_tokens_path(file))
    if as_json:
        _echo_json(entries)
        return
    for entry in entries:
        typer.echo(
            f"{entry['subject']}  {entry['role']}  issued {entry.get('issued_at', '?')}  "
            f"sha256 {entry['token_sha256'][:12]}…"
        )


@tokens.command("revoke")
@_cli_errors
def tokens_revoke(
    subject: str = typer.Option(..., help="every token of this subject is revoked"),
    file: TokensFileOption = None,
) -> None:
    """Revoke every token of a subject.

    Running services refuse them at once, without a restart.

    Example: lavoro tokens revoke --subject maria.rossi
    """
    path = _tokens_path(file)
    entries = _token_entries(path)
    kept = [entry for entry in entries if entry["subject"] != subject]
    if len(kept) == len(entries):
        raise CliError(f"no token of {subject!r} in {path}")
    _write_tokens(path, kept)
    typer.echo(f"revoked {len(entries) - len(kept)} token(s) of {subject}")


def _token_entries(path: Path) -> list[dict[str, Any]]:
    from shared.auth import read_tokens_file

    if not path.exists():
        return []
    read_tokens_file(path)  # refuses a malformed file with a message naming the entry
    return list(json.loads(path.read_text(encoding="utf-8"))["tokens"])


def _write_tokens(path: Path, entries: list[dict[str, Any]]) -> None:
    import secrets

    # As shared.auth.issue_token writes it: owner-only, replaced atomically.
    scratch = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"tokens": entries}, out, indent=2)
        out.write("\n")
    os.replace(scratch, path)


if __name__ == "__main__":
    app()
