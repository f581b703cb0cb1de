"""What every `lavoro` command shares: one-line errors, JSON and tables on stdout, and opening a
service's database with the configuration the service itself uses.

A service's own commands (its registry entry's `cli` module) use these too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
import typer
from rich.console import Console

from shared import services
from shared.auth import TokenConfigError
from shared.client import ClientError
from shared.config import ConfigError
from shared.errors import NotFound
from shared.kek import KeyUnwrapError
from shared.ports import PortInUse

F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """Ends a command with its message on one line and exit code 1."""


class NoDatabase(CliError):
    """The service has no database yet (never started or migrated)."""


def cli_errors(fn: F) -> F:
    """Known failures become one line on stderr and exit 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except (
            CliError,
            ClientError,
            services.UnknownService,
            services.RegistryError,
            ConfigError,
            TokenConfigError,
            KeyUnwrapError,
            NotFound,
            PortInUse,
        ) as exc:
            message = exc.message if isinstance(exc, NotFound) else str(exc)
            fail(message)
        except sa.exc.DBAPIError as exc:
            fail(f"database error: {first_line(str(exc.orig))}")
        except OSError as exc:
            fail(f"{type(exc).__name__}: {exc}")

    return wrapper  # type: ignore[return-value]


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {first_line(message)}", err=True)
    raise typer.Exit(code)


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def new_console() -> Console:
    # Built per command: it must write to the sys.stdout of the moment (the test runner's too).
    # Into a file or a pipe, wide enough that a row stays on one line for grep.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 240)


# -- opening a service's database ----------------------------------------------------------------


def named_specs(service: str | None, all_: bool = False) -> list[services.ServiceSpec]:
    if service:
        return [services.get(service)]
    if not all_:
        raise CliError("name a service with --service, or use --all")
    return list(services.registry().values())


def open_engine(spec: services.ServiceSpec, *, create: bool = False) -> sa.Engine:
    """An engine on the service's database. Without `create`, NoDatabase if it has none yet;
    with it, the database is created and upgraded (the way the service would at start)."""
    from shared.db import make_engine, migrate
    from shared.runner import database_of

    url, schema = database_of(spec)
    sqlite_file = sqlite_path(url)
    if not create and sqlite_file is not None and not sqlite_file.exists():
        raise NoDatabase(f"{spec.name} has no database yet ({url}); `lavoro run` creates it")
    engine = make_engine(url, schema=schema)
    if create:
        migrate(engine, spec.name)
        return engine
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("log_head"):
            engine.dispose()
            raise NoDatabase(f"{spec.name} has no event log yet in {safe_url(engine)}")
    return engine


def sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///") :].split("?", 1)[0])


def safe_url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def open_log(spec: services.ServiceSpec) -> Any:
    from shared.eventlog import EventLog

    return EventLog(open_engine(spec))


@contextlib.contextmanager
def disposing(engine: sa.Engine) -> Iterator[sa.Engine]:
    try:
        yield engine
    finally:
        engine.dispose()
