"""The one registry of lavoro's services: what `lavoro run` starts, `lavoro status` watches and
`deploy/compose.yaml` deploys.

Adding a service is one entry in `REGISTRY`: its name, the nameko class as
`"services.<name>.service:<Name>Service"`, and its HTTP port. A registered service whose module does
not exist yet is known (its database can be audited) but not started.

`LAVORO_SERVICES="name=module:Class[@port],..."` replaces the registry for one process and its
children: tests use it to run a small service of their own through the real `lavoro run`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import re
from collections.abc import Mapping
from typing import Any

OVERRIDE_KEY = "LAVORO_SERVICES"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class UnknownService(LookupError):
    """A name that is not in the registry; the message lists the known ones."""


class RegistryError(ValueError):
    """`LAVORO_SERVICES` is malformed; the message names the item."""


@dataclasses.dataclass(frozen=True)
class ServiceSpec:
    """One registered service."""

    name: str
    target: str  # "services.ledger.service:LedgerService"
    port: int | None  # its HTTP port; None: `<NAME>_HTTP` must say

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    @property
    def class_name(self) -> str:
        return self.target.partition(":")[2]

    @property
    def env_prefix(self) -> str:
        return self.name.upper().replace("-", "_")

    @property
    def database_env(self) -> str:
        """The variable naming its database (read by shared.db.default_url)."""
        return f"{self.env_prefix}_DATABASE_URL"

    @property
    def http_env(self) -> str:
        """The variable naming its HTTP address (read by shared.config.http_address)."""
        return f"{self.env_prefix}_HTTP"

    def exists(self) -> bool:
        """Whether its module is there to import (without importing it)."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:  # a parent package is missing
            return False

    def load(self) -> type:
        """The nameko service class."""
        module = importlib.import_module(self.module)
        try:
            cls = getattr(module, self.class_name)
        except AttributeError as exc:
            raise UnknownService(f"{self.module} has no class {self.class_name}") from exc
        if not isinstance(cls, type):
            raise UnknownService(f"{self.target} is not a class")
        return cls


REGISTRY: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec("placement", "services.placement.service:PlacementService", 8001),
        ServiceSpec("calls", "services.calls.service:CallsService", 8002),
        ServiceSpec("safeguarding", "services.safeguarding.service:SafeguardingService", 8003),
        ServiceSpec("charters", "services.charters.service:ChartersService", 8004),
        ServiceSpec("ledger", "services.ledger.service:LedgerService", 8005),
    )
}


def parse_override(text: str) -> dict[str, ServiceSpec]:
    """`name=module:Class[@port],...` as specs, in the order given."""
    specs: dict[str, ServiceSpec] = {}
    for index, item in enumerate(part.strip() for part in text.split(",")):
        if not item:
            continue
        where = f"{OVERRIDE_KEY} item {index + 1} ({item!r})"
        name, _, rest = item.partition("=")
        target, _, port_text = rest.partition("@")
        name, target = name.strip(), target.strip()
        if not _NAME.match(name):
            raise RegistryError(f"{where}: the name must be lowercase letters, digits and _")
        if not _TARGET.match(target):
            raise RegistryError(f"{where}: expected name=module:Class[@port]")
        port: int | None = None
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise RegistryError(f"{where}: the port must be 1-65535")
            port = int(port_text)
        specs[name] = ServiceSpec(name, target, port)
    return specs


def registry(env: Mapping[str, str] | None = None) -> dict[str, ServiceSpec]:
    """Every registered service by name (the override, if `LAVORO_SERVICES` is set)."""
    env = os.environ if env is None else env
    override = env.get(OVERRIDE_KEY)
    return parse_override(override) if override else dict(REGISTRY)


def get(name: str, env: Mapping[str, str] | None = None) -> ServiceSpec:
    specs = registry(env)
    if name not in specs:
        raise UnknownService(f"unknown service {name!r}; one of {', '.join(specs)}")
    return specs[name]


def available(env: Mapping[str, str] | None = None) -> list[ServiceSpec]:
    """The registered services whose code exists, in registry order."""
    return [spec for spec in registry(env).values() if spec.exists()]


def event_store_of(cls: type) -> Any | None:
    """The class's `EventStore` dependency (its projections and upcasters), or None."""
    from shared.dependencies import EventStore

    for value in _class_attributes(cls):
        if isinstance(value, EventStore):
            return value
    return None


def projections_of(spec: ServiceSpec) -> list[Any]:
    """The service's projections: those its EventStore folds (the very objects the running
    service uses), else `PROJECTIONS` in `<package>/readmodels.py`, else none."""
    if spec.exists():
        store = event_store_of(spec.load())
        if store is not None and store.projections:
            return list(store.projections)
    package = spec.module.rpartition(".")[0]
    if not package:
        return []
    name = f"{package}.readmodels"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name not in (name, package):
            raise  # readmodels exists but imports something missing: say so
        return []
    return list(getattr(module, "PROJECTIONS", []))


def upcasters_of(spec: ServiceSpec) -> Any | None:
    """The upcasters the service reads its log with (projections fold upcast events)."""
    if not spec.exists():
        return None
    store = event_store_of(spec.load())
    return store.upcasters if store is not None else None


def _class_attributes(cls: type) -> list[Any]:
    seen: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        seen.update(vars(klass))
    return list(seen.values())
