"""`lavoro keys generate|rotate`: the key-encryption keys (KEKs) that wrap each person's key
(shared/kek.py). The event log is never touched: a rotation re-wraps rows of `person_keys`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from shared.cli.common import CliError, NoDatabase, cli_errors, disposing, echo_json, named_specs

app = typer.Typer(
    help="Key-encryption keys of personal data: make one, rotate to a new one.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

KekFile = Annotated[Path, typer.Option(exists=True, dir_okay=False, help="a file holding a KEK")]


@app.command("generate")
@cli_errors
def keys_generate(
    out: Annotated[Path, typer.Option(help="the new file (0600); an existing one is not replaced")],
) -> None:
    """Make a new key-encryption key in a file only its owner may read, and print its id.

    Example: lavoro keys generate --out /run/secrets/calls-kek-2026
    """
    from shared.kek import Kek, write_kek

    if out.exists():
        raise CliError(f"{out} exists: a KEK file is never overwritten (choose another name)")
    kek = Kek.generate()
    write_kek(out, kek)
    typer.echo(f"KEK {kek.id} written to {out}")


@app.command("rotate")
@cli_errors
def keys_rotate(
    old_kek_file: KekFile,
    new_kek_file: KekFile,
    service: str | None = typer.Option(None, "--service", "-s", help="the service whose keys"),
    all_: bool = typer.Option(False, "--all", help="every service that has a database"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Re-wrap every person key under the new KEK; the event log is not touched.

    Keys under the old KEK are unwrapped with it and wrapped with the new one, in batches. Run
    it while the services hold both KEKs (LAVORO_KEK_FILE = new, LAVORO_KEK_PREVIOUS_FILE = old),
    or while they are stopped; then configure the new one alone (docs/operations.md).

    Example: lavoro keys rotate --service calls --old-kek-file old.kek --new-kek-file new.kek
    """
    from shared.cli.common import open_engine
    from shared.db import migrate
    from shared.kek import Kek, Keyring, keys_by_kek, rewrap

    old = Kek.parse(_read(old_kek_file), f"--old-kek-file {old_kek_file}")
    new = Kek.parse(_read(new_kek_file), f"--new-kek-file {new_kek_file}")
    if old == new:
        raise CliError("the old and the new KEK are the same key")
    keyring = Keyring(new, previous=[old])
    results: list[dict[str, Any]] = []
    for spec in named_specs(service, all_):
        try:
            engine = open_engine(spec)
        except NoDatabase:
            if not all_:
                raise
            continue
        with disposing(engine):
            migrate(engine, spec.name, keyring=keyring)  # keys stored raw go straight to the new
            done = rewrap(engine, keyring)
            remaining = keys_by_kek(engine)
        results.append(
            {"service": spec.name, "rewrapped": done.rewrapped, "to": new.id, "keys": remaining}
        )
    if as_json:
        echo_json(results)
        return
    for row in results:
        typer.echo(
            f"{row['service']}: {row['rewrapped']} person key(s) re-wrapped from KEK {old.id} to "
            f"{row['to']}; {row['keys'].get(new.id, 0)} under it now; no event touched"
        )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {type(exc).__name__}") from None
