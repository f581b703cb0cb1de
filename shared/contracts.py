"""A service's event contracts, in one object: what it emits, what of that is public, what it
consumes from each source, and the upcasters between versions (docs/events.md).

    CONTRACTS = Contracts(
        emitted={"grant_awarded": (1, GrantAwardedV1), ...},   # type -> (current version, schema)
        public={"grant_awarded": GrantAwardedV1, ...},          # what the relay sends to partners
        consumed={"ledger": {("commitment_recorded", 1): CommitmentRecordedIn, ...}},
        upcasters=upcasters,
        persons={"application_submitted": "applicant.person_id"},
    )

- `check(event)` holds an outgoing payload to its type's schema before it is appended (the unit
  of work calls it): a bug must not reach the log, nor the other services.
- `incoming(source, event)` loads another service's payload with the schema this service declared
  for it, into the typed value a handler receives; a type or version it has no contract for, or a
  payload that breaks it, raises `BrokenContract`, which the consumer dead-letters at once with the
  reason (retrying cannot mend a payload).
- `persons[type]` is the dotted path of the member naming the person whose key seals that event's
  personal fields (`shared.crypto`); the store seals them inside the append's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import marshmallow as ma

from shared.eventlog import Upcasters
from shared.records import NewEvent


class BrokenContract(ValueError):
    """A payload that does not hold to its contract (or has none)."""


class Contracts:
    def __init__(
        self,
        *,
        emitted: Mapping[str, tuple[int, type[ma.Schema]]],
        public: Mapping[str, type[ma.Schema]] | None = None,
        consumed: Mapping[str, Mapping[tuple[str, int], type[ma.Schema]]] | None = None,
        upcasters: Upcasters | None = None,
        persons: Mapping[str, str] | None = None,
    ) -> None:
        self.emitted = dict(emitted)
        self.public = dict(public or {})
        self.consumed = {source: dict(types) for source, types in (consumed or {}).items()}
        self.upcasters = upcasters or Upcasters()
        self.persons = dict(persons or {})
        unknown = (set(self.public) | set(self.persons)) - set(self.emitted)
        if unknown:
            raise ValueError(f"public or personal types that are not emitted: {sorted(unknown)}")
        self._schemas: dict[type[ma.Schema], ma.Schema] = {}

    def schema(self, type_: str) -> ma.Schema:
        """The current schema of an emitted type."""
        if type_ not in self.emitted:
            raise BrokenContract(f"{type_} is not an event type this service emits")
        return self._instance(self.emitted[type_][1])

    def check(self, event: NewEvent) -> None:
        """Raise BrokenContract unless the payload holds to its type's current schema."""
        version, _ = self.emitted.get(event.type, (None, None))
        if version is None:
            raise BrokenContract(f"{event.type} is not an event type this service emits")
        if event.schema_version != version:
            raise BrokenContract(
                f"{event.type} is at schema version {version}, not {event.schema_version}"
            )
        errors = self.schema(event.type).validate(event.data)
        if errors:
            raise BrokenContract(f"{event.type} payload breaks its schema: {errors}")

    def person_of(self, event: NewEvent) -> str | None:
        """The person whose key seals the event's personal fields, if it has any."""
        path = self.persons.get(event.type)
        if path is None:
            return None
        value: Any = event.data
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return value if isinstance(value, str) and value else None

    def consumes(self, source: str) -> set[str]:
        """The event types this service has a contract for from `source`."""
        return {type_ for type_, _version in self.consumed.get(source, {})}

    def incoming(self, source: str, type_: str, schema_version: int, data: Any) -> Any:
        """Another service's payload, loaded with this service's contract for it."""
        schema_cls = self.consumed.get(source, {}).get((type_, schema_version))
        if schema_cls is None:
            raise BrokenContract(f"no contract for {source}'s {type_} v{schema_version}")
        try:
            return self._instance(schema_cls).load(data)
        except ma.ValidationError as error:
            raise BrokenContract(
                f"{source}'s {type_} v{schema_version} breaks its contract: {error.messages}"
            ) from error

    def _instance(self, schema_cls: type[ma.Schema]) -> ma.Schema:
        # Schemas hold no per-call state once built; building one costs more than validating.
        found = self._schemas.get(schema_cls)
        if found is None:
            found = self._schemas[schema_cls] = schema_cls()
        return found
