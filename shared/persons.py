"""Persons in a service: a pseudonymous id per person, and their sealed data opened for a reader.

    people = PersonalData("CALLS_PSEUDONYM_KEY")   # the config key holding the HMAC key

- `person_id(identifier)`: `p-` + HMAC-SHA256(key, identifier without spaces, upper case),
  truncated to 32 hex digits. The same person gets the same id whoever typed their identifier (a
  tax code, say), without the identifier ever entering the log in clear; the id is the key id of
  the person's data (shared.crypto). Without the key in config a development key is used and a
  warning is logged at start: production must set it, since with a known key the ids of known
  identifiers can be recomputed.
- `open(schema, data)`: the personal fields of `data` opened (`[erased]` once the person is).
- `erase(person_id, reason, ...)`: GDPR art. 17 (`shared.crypto.erase_person`): the person's key
  deleted and `person_erased` appended, in one transaction.

`Erasure` is the operator's path to it, for a service class that holds personal data:
`class CallsService(Erasure, Service)` serves `POST /persons/erasure` with `{"identifier": <the
tax code>, "reason": <the request's reference>}` (or `"person_id"` instead of the identifier);
`lavoro persons erase <service>` sends it. The answer is the chassis's one command reply, naming
the `person_id`; the same Idempotency-Key again erases nothing more.

Sealing is not here: the store seals the fields of the event types the service's contracts name
a person for, inside the append's transaction (`Contracts.persons`). Both use the one `Vault` of
the container's `EventStore`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import marshmallow as ma
import structlog
from marshmallow import ValidationError, fields, validate
from nameko.extensions import DependencyProvider

from shared.crypto import Vault, erase_person
from shared.dependencies import store_for
from shared.eventlog import EventLog
from shared.schemas import Schema
from shared.unit_of_work import Outcome
from shared.web import CommandRequest, command

DEVELOPMENT_KEY = "lavoro-calls-development-only"
_log = structlog.get_logger("lavoro.persons")


def pseudonym(key: str, identifier: str) -> str:
    normalised = "".join(identifier.split()).upper()
    digest = hmac.new(key.encode("utf-8"), normalised.encode("utf-8"), hashlib.sha256)
    return "p-" + digest.hexdigest()[:32]


class Persons:
    """What a worker may do with persons' data."""

    def __init__(self, vault: Vault, key: str, log: EventLog | None = None) -> None:
        self._vault = vault
        self._key = key
        self._log = log

    def person_id(self, identifier: str) -> str:
        return pseudonym(self._key, identifier)

    def open(self, schema: ma.Schema, data: Mapping[str, Any]) -> dict[str, Any]:
        return self._vault.open_fields(schema, data)

    def erase(self, person_id: str, reason: str, cmd: CommandRequest) -> Outcome:
        """Erase the person for the command `cmd` (its actor, id and correlation id)."""
        assert self._log is not None, "PersonalData gives its log"
        result = erase_person(
            self._log,
            self._vault,
            person_id,
            reason=reason,
            actor=cmd.actor,
            command_id=cmd.id,
            command_digest=cmd.digest,  # the same key with another body is refused (422)
            correlation_id=cmd.correlation_id,
        )
        return Outcome(tuple(result.events), repeated=result.duplicate).naming(person_id=person_id)


class PersonalData(DependencyProvider):
    """Gives a worker `Persons` on the vault of the container's EventStore."""

    def __init__(self, key_name: str, development_key: str = DEVELOPMENT_KEY) -> None:
        self.key_name = key_name
        self.development_key = development_key

    def setup(self) -> None:
        store = store_for(self.container)
        store.ensure_log()
        assert store.vault is not None, "the store builds its vault with its log"
        self.vault: Vault = store.vault
        self.log: EventLog = store.ensure_log()
        self.key: str = self.container.config.get(self.key_name) or self.development_key
        if self.key == self.development_key:
            _log.warning(
                f"the development pseudonym key is in use: set {self.key_name} in production",
                service=self.container.service_name,
            )

    def get_dependency(self, worker_ctx: Any) -> Persons:
        return Persons(self.vault, self.key, self.log)


class ErasureIn(Schema):
    identifier = fields.String(
        load_default=None,
        validate=validate.Length(min=1, max=64),
        metadata={"description": "what the service pseudonymises, e.g. the person's tax code"},
    )
    person_id = fields.String(
        load_default=None,
        validate=validate.Regexp(r"^p-[0-9a-f]{32}$", error="A person id is p- and 32 hex digits."),
        metadata={"description": "the pseudonymous id, instead of the identifier"},
    )
    reason = fields.String(
        required=True,
        validate=validate.Length(min=1, max=300),
        metadata={"description": "the request's reference (never personal data), kept in the log"},
    )

    @ma.validates_schema
    def _one_person(self, data: dict[str, Any], **_: Any) -> None:
        if (data.get("identifier") is None) == (data.get("person_id") is None):
            raise ValidationError("Give the identifier or the person_id, one of them.", "person_id")


class Erasure:
    """Serves `POST /persons/erasure` on a service class with a `people = PersonalData(...)`."""

    people: Persons

    @command("POST", "/persons/erasure", schema=ErasureIn, tags=("persons",))
    def erase_person(self, cmd: CommandRequest) -> Outcome:
        """Erase a person (GDPR art. 17): their key is deleted, so every sealed value of theirs
        in the log reads `[erased]`; `person_erased` records it with the reason; the read models
        blank what they hold. The log itself is untouched and still verifies."""
        data = cmd.data
        person_id = data["person_id"] or self.people.person_id(data["identifier"])
        return self.people.erase(person_id, data["reason"].strip(), cmd)
