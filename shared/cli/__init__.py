"""The `lavoro` command line: run the system, watch it, and operate on each service's log.

Every command reads a service's database with the same configuration the service uses
(`<SERVICE>_DATABASE_URL`, default SQLite under `var/`) and knows the services from the one
registry, shared/services.py. Errors are one line on stderr and a non-zero exit; `--json` prints
what a script wants on stdout.

A module a group: run.py (`run`, `serve`, `status`), demo.py, audit.py, events.py, dlq.py,
projections.py, tokens.py, ledger.py; common.py is what they share.
"""

from __future__ import annotations

import warnings

# Before nameko is imported: its eventlet notice is not for the people typing these commands.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import typer  # noqa: E402

from shared.cli import audit, demo, dlq, events, ledger, projections, run, tokens  # noqa: E402

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
app.add_typer(ledger.app, name="ledger")
