"""Applicants who are persons: a pseudonymous id per person, and their data sealed per person.

`PersonalData` is a nameko dependency giving a worker a narrow `Applicants` object:

- `person_id(tax_code)`: `p-` + HMAC-SHA256(key, normalised tax code), truncated to 32 hex
  digits. The same person gets the same id whoever typed the application, so "one application
  per applicant per call" holds for persons without the tax code ever entering the log in
  clear. The id is the key id of the person's data (shared.crypto), as the chassis intends. The
  HMAC key comes from config (`CALLS_PSEUDONYM_KEY`); without it a development key is used and
  a warning is logged at start (production must set it: with a known key, ids of known tax
  codes can be recomputed).
- `seal(schema, data, person_id)` / `open(schema, data)`: `shared.crypto.Vault` on the
  service's database (the keys live in `person_keys`, beside the log).

Sealing happens before the append's transaction opens, in a transaction of its own: the
worker's `Store` does not hand out the append's connection. If the person is erased between the
two, the event commits with a ciphertext whose key is already gone: it reads `[erased]`, which is
the safe way round (see the report on `Writer.conn`).
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

from .domain import applicant_key

PSEUDONYM_KEY = "CALLS_PSEUDONYM_KEY"
DEVELOPMENT_KEY = "lavoro-calls-development-only"
_log = structlog.get_logger("lavoro.calls")


def pseudonym(key: str, tax_code: str) -> str:
    normalised = "".join(tax_code.split()).upper()
    digest = hmac.new(key.encode("utf-8"), normalised.encode("utf-8"), hashlib.sha256)
    return "p-" + digest.hexdigest()[:32]


class Applicants:
    """What a worker may do with applicants' personal data."""

    def __init__(self, vault: Vault, key: str) -> None:
        self._vault = vault
        self._key = key

    def person_id(self, tax_code: str) -> str:
        return pseudonym(self._key, tax_code)

    def identify(self, applicant: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        """The applicant with its person's pseudonymous id (None for a body without a reference
        person), and the key that makes one applicant one applicant (domain.applicant_key)."""
        person = applicant.get("person")
        person_id = self.person_id(person["tax_code"]) if person else None
        organisation = applicant.get("organisation") or {}
        key = applicant_key(applicant["kind"], person_id, organisation.get("tax_code"))
        return {**applicant, "person_id": person_id}, key

    def seal(self, schema: ma.Schema, data: Mapping[str, Any], person_id: str) -> dict[str, Any]:
        return self._vault.seal_fields(schema, data, person_id)

    def open(self, schema: ma.Schema, data: Mapping[str, Any]) -> dict[str, Any]:
        return self._vault.open_fields(schema, data)


class PersonalData(DependencyProvider):
    def setup(self) -> None:
        engine = store_for(self.container).engine()
        self.vault = Vault(engine)
        self.key = self.container.config.get(PSEUDONYM_KEY) or DEVELOPMENT_KEY
        if self.key == DEVELOPMENT_KEY:
            _log.warning(
                "calls uses the development pseudonym key: set CALLS_PSEUDONYM_KEY in production",
                service=self.container.service_name,
            )

    def get_dependency(self, worker_ctx: Any) -> Applicants:
        return Applicants(self.vault, self.key)
