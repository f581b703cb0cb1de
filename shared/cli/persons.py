"""`lavoro persons erase`: a person's erasure (GDPR art. 17), asked of the running service that
holds their data (`POST /persons/erasure`, shared.persons)."""

from __future__ import annotations

import uuid

import typer

from shared.cli.common import CliError, cli_errors, command_group, echo_json
from shared.client import api

app = command_group("Persons' data: erasure (GDPR art. 17).")


@app.command("erase")
@cli_errors
def erase(
    service: str = typer.Argument(..., help="the service that holds the person's data, e.g. calls"),
    reason: str = typer.Option(..., help="the request's reference (never personal data)"),
    identifier: str | None = typer.Option(
        None, help="what the service pseudonymises (a tax code); never written to the log"
    ),
    person_id: str | None = typer.Option(None, help="the pseudonymous id, instead"),
    key: str | None = typer.Option(
        None, help="the command's Idempotency-Key, to repeat it safely (default: a new one)"
    ),
    token: str | None = typer.Option(
        None, help="an operator's token (default: var/operator.token)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the service's answer as JSON"),
) -> None:
    """Erase a person: their key is deleted, so their sealed data reads `[erased]` everywhere, and
    `person_erased` records it with the reason. The log itself is untouched and still verifies.

    Example: lavoro persons erase calls --identifier RSSMRA80A01H501U --reason "prot. 2024/118"
    """
    if (identifier is None) == (person_id is None):
        raise CliError("give --identifier or --person-id, one of them")
    body = {"reason": reason, "identifier": identifier, "person_id": person_id}
    _status, answer = api(service, token, "operator").post(
        "/persons/erasure",
        {k: v for k, v in body.items() if v is not None},
        key or f"erase-{uuid.uuid4()}",
    )
    if as_json:
        echo_json(answer)
        return
    done = "was already erased by this command" if answer.get("repeated") else "is erased"
    typer.echo(f"{service}: person {answer['person_id']} {done}")
