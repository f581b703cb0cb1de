"""Twelve-factor configuration: every setting comes from the environment, with a default that
works on one machine.

| setting | environment | default |
|---|---|---|
| broker | `AMQP_URI` | `amqp://guest:guest@localhost:5672/` |
| database | `<SERVICE>_DATABASE_URL` | a SQLite file per service under `var/` |
| HTTP bind address | `<SERVICE>_HTTP` (`[host:]port`) | `127.0.0.1:` the service's port below |
| workers per process | `<SERVICE>_MAX_WORKERS`, then `LAVORO_MAX_WORKERS` | 10 |
| API tokens | `LAVORO_TOKENS_FILE`, `LAVORO_TOKENS` | `var/tokens.json` (see shared.auth) |
| who may publish a source's events | `LAVORO_SOURCE_USERS` (`calls=calls,...`) | unset: anyone (see shared.broker) |
| key-encryption key of personal data | `LAVORO_KEK_FILE` or `LAVORO_KEK` (and `..._PREVIOUS...` while rotating) | none; `lavoro run` makes `var/kek` (see shared.kek) |
| largest request body | `LAVORO_MAX_BODY_BYTES` | 1048576 (1 MiB; larger is 413) |
| log level | `LOG_LEVEL` | `INFO` |
| log format | `LOG_FORMAT`: `json` or `console` | `console` on a terminal, else `json` |

A service's `config.yaml` may hold `${ENV:default}` placeholders only; it is read with nameko's
own substitution (the one `nameko run --config` uses), so it means the same in both places.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from nameko.cli.main import IMPLICIT_ENV_VAR_MATCHER, env_var_constructor
from nameko.constants import (
    AMQP_URI_CONFIG_KEY,
    DEFAULT_MAX_WORKERS,
    MAX_WORKERS_CONFIG_KEY,
    WEB_SERVER_CONFIG_KEY,
)
from nameko.web.server import parse_address

from shared.auth import TOKENS_FILE_KEY, TOKENS_KEY
from shared.db import ROOT, default_url
from shared.services import REGISTRY

DEFAULT_AMQP_URI = "amqp://guest:guest@localhost:5672/"
DATABASE_URL_KEY = "DATABASE_URL"
SERVICE_NAME_KEY = "SERVICE_NAME"
LOG_LEVEL_KEY = "LOG_LEVEL"
LOG_FORMAT_KEY = "LOG_FORMAT"
LOG_FORMATS = ("json", "console")  # as shared.logs renders them
MAX_BODY_BYTES_KEY = "LAVORO_MAX_BODY_BYTES"  # read by shared.web

# One port per service so that all five can run on one machine without a proxy; the registry
# (shared/services.py) is where a service and its port are declared, once.
HTTP_PORTS: dict[str, int] = {
    name: spec.port for name, spec in REGISTRY.items() if spec.port is not None
}


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


class _PlaceholderLoader(yaml.SafeLoader):
    """SafeLoader plus nameko's `${ENV:default}` substitution. A subclass, so that loading a
    config does not change PyYAML's global SafeLoader the way nameko's `setup_yaml_parser` does."""


_PlaceholderLoader.add_constructor("!env_var", env_var_constructor)
_PlaceholderLoader.add_constructor("!raw_env_var", partial(env_var_constructor, raw=True))
_PlaceholderLoader.add_implicit_resolver("!env_var", IMPLICIT_ENV_VAR_MATCHER, None)


def _env_name(service: str, suffix: str) -> str:
    return f"{service.upper().replace('-', '_')}_{suffix}"


def load_yaml_config(source: Path | str) -> dict[str, Any]:
    """A nameko config file with `${ENV:default}` placeholders resolved from the environment.

    As in nameko, a substituted value is read as YAML (`${PORT:8000}` gives the int 8000);
    `!raw_env_var` keeps it a string."""
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    try:
        loaded = yaml.load(
            text, Loader=_PlaceholderLoader
        )  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return loaded


def amqp_uri(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("AMQP_URI") or DEFAULT_AMQP_URI


def http_address(service: str, env: Mapping[str, str] | None = None) -> str:
    """`<SERVICE>_HTTP` (`[host:]port`), else this machine only (127.0.0.1) on the service's own
    port: a container that must be reached from elsewhere says 0.0.0.0 (deploy/compose.yaml)."""
    env = os.environ if env is None else env
    name = _env_name(service, "HTTP")
    value = env.get(name)
    if value:
        try:
            parse_address(value)
        except Exception as exc:  # nameko's ConfigurationError: re-raised naming the variable
            raise ConfigError(f"{name}={value!r}: expected [host:]port") from exc
        return value
    if service not in HTTP_PORTS:
        raise ConfigError(
            f"service {service!r} has no default HTTP port (known: {', '.join(HTTP_PORTS)}); "
            f"set {name}"
        )
    return f"127.0.0.1:{HTTP_PORTS[service]}"


def log_format(env: Mapping[str, str] | None = None) -> str | None:
    """`LOG_FORMAT`, `json` or `console` (any case); None when unset, and shared.logs then
    chooses by whether stdout is a terminal."""
    env = os.environ if env is None else env
    value = env.get(LOG_FORMAT_KEY, "")
    if not value.strip():
        return None
    if value.strip().lower() not in LOG_FORMATS:
        raise ConfigError(f"{LOG_FORMAT_KEY}={value!r}: expected json or console")
    return value.strip().lower()


def max_workers(service: str, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    for name in (_env_name(service, "MAX_WORKERS"), "LAVORO_MAX_WORKERS"):
        value = env.get(name)
        if value:
            try:
                workers = int(value)
            except ValueError as exc:
                raise ConfigError(f"{name}={value!r}: expected a whole number") from exc
            if workers < 1:
                raise ConfigError(f"{name}={value!r}: must be at least 1")
            return workers
    return DEFAULT_MAX_WORKERS


def service_config(service: str, path: Path | str | None = None) -> dict[str, Any]:
    """The nameko config of a service: the defaults above from the environment, then the
    service's `config.yaml` (`services/<service>/config.yaml`, or `path`) on top."""
    config: dict[str, Any] = {
        SERVICE_NAME_KEY: service,
        AMQP_URI_CONFIG_KEY: amqp_uri(),
        WEB_SERVER_CONFIG_KEY: http_address(service),
        DATABASE_URL_KEY: default_url(service),
        MAX_WORKERS_CONFIG_KEY: max_workers(service),
        LOG_LEVEL_KEY: os.environ.get(LOG_LEVEL_KEY, "INFO"),
        LOG_FORMAT_KEY: log_format(),
    }
    for key in (TOKENS_FILE_KEY, TOKENS_KEY, MAX_BODY_BYTES_KEY):
        if os.environ.get(key):
            config[key] = os.environ[key]
    source = Path(path) if path else ROOT / "services" / service / "config.yaml"
    if path is not None or source.exists():
        config.update(load_yaml_config(source))
    return config
