"""Persons in a service: a pseudonymous id per person, and their sealed data opened for a reader.

    people = PersonalData("CALLS_PSEUDONYM_KEY")   # the config key holding the HMAC key

- `person_id(identifier)`: `p-` + HMAC-SHA256(key, identifier without spaces, upper case),
  truncated to 32 hex digits. The same person gets the same id whoever typed their identifier (a
  tax code, say), without the identifier ever entering the log in clear; the id is the key id of
  the person's data (shared.crypto). Without the key in config a development key is used and a
  warning is logged at start: production must set it, since with a known key the ids of known
  identifiers can be recomputed.
- `open(schema, data)`: the personal fields of `data` opened (`[erased]` once the person is).

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
from nameko.extensions import DependencyProvider

from shared.crypto import Vault
from shared.dependencies import store_for

DEVELOPMENT_KEY = "lavoro-calls-development-only"
_log = structlog.get_logger("lavoro.persons")


def pseudonym(key: str, identifier: str) -> str:
    normalised = "".join(identifier.split()).upper()
    digest = hmac.new(key.encode("utf-8"), normalised.encode("utf-8"), hashlib.sha256)
    return "p-" + digest.hexdigest()[:32]


class Persons:
    """What a worker may do with persons' data."""

    def __init__(self, vault: Vault, key: str) -> None:
        self._vault = vault
        self._key = key

    def person_id(self, identifier: str) -> str:
        return pseudonym(self._key, identifier)

    def open(self, schema: ma.Schema, data: Mapping[str, Any]) -> dict[str, Any]:
        return self._vault.open_fields(schema, data)


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
        self.key: str = self.container.config.get(self.key_name) or self.development_key
        if self.key == self.development_key:
            _log.warning(
                f"the development pseudonym key is in use: set {self.key_name} in production",
                service=self.container.service_name,
            )

    def get_dependency(self, worker_ctx: Any) -> Persons:
        return Persons(self.vault, self.key)
