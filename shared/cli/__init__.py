"""The `lavoro` command line: run the system, watch it, and operate on each service's log.

Every command reads a service's database with the same configuration the service uses
(`<SERVICE>_DATABASE_URL`, default SQLite under `var/`) and knows the services from the one
registry, shared/services.py. Errors are one line on stderr and a non-zero exit; `--json` prints
what a script wants on stdout.

The chassis's commands, a module a group: run.py (`run`, `serve`, `status`), demo.py, audit.py,
events.py, dlq.py, projections.py, tokens.py, keys.py, persons.py; common.py is what they
share. A service adds a group of its own, `lavoro <service> ...`, by naming a module in its
registry entry (`ServiceSpec.cli`) whose `app` is a typer.Typer: `lavoro ledger progress` is
services/ledger/cli.py.

`app` is built when it is first asked for (`from shared.cli import app`, the console script), so
that a service's module may import shared.cli.common without an import cycle.
"""

from __future__ import annotations

import warnings

# Before nameko is imported: its eventlet notice is not for the people typing these commands.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from typing import Any  # noqa: E402

import typer  # noqa: E402

_built: typer.Typer | None = None


def build() -> typer.Typer:
    """The `lavoro` command: the chassis's commands and groups, then each available service's."""
    from shared import services
    from shared.cli import audit, demo, dlq, events, keys, persons, projections, run, tokens
    from shared.cli.common import first_line

    app = typer.Typer(
        help="lavoro: Bologna's work plan, event-sourced. Start with `lavoro run`.",
        no_args_is_help=True,
        rich_markup_mode="markdown",
    )
    app.command("run")(run.run)
    app.command("serve")(run.serve)
    app.command("status")(run.status)
    app.command("demo")(demo.demo_command)
    app.add_typer(audit.app, name="audit")
    app.add_typer(events.app, name="events")
    app.add_typer(dlq.app, name="dlq")
    app.add_typer(projections.app, name="projections")
    app.add_typer(tokens.app, name="tokens")
    app.add_typer(keys.app, name="keys")
    app.add_typer(persons.app, name="persons")
    for spec in services.available():
        try:
            group = services.cli_of(spec)
        except Exception as exc:  # the chassis's commands must still work, and say why
            typer.echo(
                f"warning: `lavoro {spec.name}` is unavailable: {spec.cli} does not import: "
                f"{type(exc).__name__}: {first_line(str(exc))}",
                err=True,
            )
            continue
        if group is None:
            continue
        if not isinstance(group, typer.Typer):
            raise services.RegistryError(f"{spec.cli}.app is not a typer.Typer")
        app.add_typer(group, name=spec.name)
    return app


def __getattr__(name: str) -> Any:
    global _built
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _built is None:
        _built = build()
    return _built
