"""`lavoro tokens issue|list|revoke`: the bearer tokens of the HTTP APIs (only their hashes are
kept)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.cli.common import CliError, cli_errors, echo_json

TokensFileOption = Annotated[
    Path | None, typer.Option(help="the tokens file (default: LAVORO_TOKENS_FILE, var/tokens.json)")
]

app = typer.Typer(
    help="Bearer tokens for the HTTP APIs.", no_args_is_help=True, rich_markup_mode="markdown"
)


def _tokens_path(file: Path | None) -> Path:
    from shared.runner import tokens_file

    return file or tokens_file()


@app.command("issue")
@cli_errors
def tokens_issue(
    subject: str = typer.Option(..., help="who: becomes the actor of the events they cause"),
    role: str = typer.Option(..., help="operator (commands and reads) or auditor (reads, audit)"),
    expires: str | None = typer.Option(
        None, help="refused from this time on, RFC 3339 with an offset: 2027-01-01T00:00:00Z"
    ),
    file: TokensFileOption = None,
) -> None:
    """Issue a token: printed once, only its SHA-256 is stored.

    Running services accept it at once, without a restart; from --expires on they answer 401.

    Example: lavoro tokens issue --subject maria.rossi --role operator --expires 2027-01-01T00:00:00Z
    """
    from shared.auth import issue_token
    from shared.clock import parse_ts

    expires_at = None
    if expires is not None:
        try:
            expires_at = parse_ts(expires)
        except ValueError:
            raise CliError(
                f"--expires {expires!r}: expected an RFC 3339 time with an offset, "
                "e.g. 2027-01-01T00:00:00Z"
            ) from None
    typer.echo(issue_token(_tokens_path(file), subject, role, expires_at=expires_at))


@app.command("list")
@cli_errors
def tokens_list(
    file: TokensFileOption = None,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Subjects and roles in the tokens file (only hashes are kept, never tokens).

    Example: lavoro tokens list
    """
    entries = _token_entries(_tokens_path(file))
    if as_json:
        echo_json(entries)
        return
    for entry in entries:
        expiry = f"  expires {entry['expires_at']}" if entry.get("expires_at") else ""
        typer.echo(
            f"{entry['subject']}  {entry['role']}  issued {entry.get('issued_at', '?')}{expiry}  "
            f"sha256 {entry['token_sha256'][:12]}…"
        )


@app.command("revoke")
@cli_errors
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
