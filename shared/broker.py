"""The chassis's side of RabbitMQ: named connections, and who may speak for a source.

Every connection a service opens gives RabbitMQ a name (the client property `connection_name`),
so that `rabbitmqctl list_connections name client_properties` shows whose each one is:

| name | opened by | lives |
|---|---|---|
| `lavoro-relay-<service>` | the relay (shared/relay.py) | while it leads; reopened with backoff |
| `lavoro-consumer-<service>` | the consumer of other services' events (shared/queues.py) | the container's life; nameko reconnects it |
| `lavoro-dlq-<service>` | a dead letter's copy to `<service>.dlq` (shared/dlq.py) | one publish |
| `lavoro-health-<service>` | `/health`'s broker check (shared/observability.py) | one check |

Trust between services (ARCHITECTURE.md): the relay stamps every message with the AMQP `user_id`
property, the broker user of its connection; RabbitMQ refuses a message whose `user_id` is not
the connection's user (PRECONDITION_FAILED), so the property cannot be forged. A consumer given
`LAVORO_SOURCE_USERS` (source service -> its broker user) refuses an event of a source whose
`user_id` is another user's, or absent: dead-lettered with the reason, never handled. Without
it (development: one `guest` user for everything) there is nothing to tell apart and every
event is accepted. Compose gives each service its own user, named as the service, and sets it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import kombu
from kombu.utils.url import parse_url

from shared import failover
from shared.config import ConfigError

SOURCE_USERS_KEY = "LAVORO_SOURCE_USERS"


class SourceUsersError(ConfigError):
    """`LAVORO_SOURCE_USERS` is malformed; the message says how."""


def connection_name(role: str, service: str) -> str:
    return f"lavoro-{role}-{service}"


def client_properties(name: str) -> dict[str, Any]:
    return {"connection_name": name}


def broker_user(amqp_uri: str) -> str:
    """The user a connection to `amqp_uri` logs in as (kombu's default, `guest`, if none); for a
    list of a cluster's nodes, the first's (each node is given the same user)."""
    return parse_url(failover.nodes(amqp_uri)[0])["userid"] or "guest"


def kombu_connection(amqp_uri: str, name: str, **transport_options: Any) -> kombu.Connection:
    """A kombu connection to `amqp_uri` named `name` (lazy: it connects when first used)."""
    options = {**transport_options, "client_properties": client_properties(name)}
    return kombu.Connection(amqp_uri, transport_options=options)


def name_connection(conn: kombu.Connection, name: str) -> kombu.Connection:
    """`conn` (a kombu connection not yet connected) named `name`, whatever it was called."""
    options = dict(conn.transport_options or {})
    options["client_properties"] = {
        **(options.get("client_properties") or {}),
        **client_properties(name),
    }
    conn.transport_options = options
    return conn


def source_users(
    config: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Source service -> the broker user that alone may publish its events.

    From the container config's `LAVORO_SOURCE_USERS` (a mapping, or text), else the environment
    (text): `calls=calls,ledger=ledger`. Keys are the sources as they run (the exchange
    `<source>.events`, after any `LAVORO_SOURCES` renaming)."""
    value = (config or {}).get(SOURCE_USERS_KEY)
    if value is None:
        value = (os.environ if env is None else env).get(SOURCE_USERS_KEY) or ""
    if isinstance(value, Mapping):
        pairs = [(str(k), v) for k, v in value.items()]
    else:
        pairs = []
        for item in filter(None, (part.strip() for part in str(value).split(","))):
            source, sep, user = item.partition("=")
            if not sep:
                raise SourceUsersError(f"{SOURCE_USERS_KEY}: {item!r} is not <source>=<user>")
            pairs.append((source.strip(), user.strip()))
    users = {}
    for source, user in pairs:
        if not source or not isinstance(user, str) or not user:
            raise SourceUsersError(f"{SOURCE_USERS_KEY}: {source!r} needs a broker user")
        users[source] = user
    return users


def impostor(source: str, expected: str | None, user_id: Any) -> str | None:
    """Why a message on `<source>.events` stamped `user_id` is refused, or None if it is not:
    with `expected` (the source's broker user) it must be exactly that user."""
    if expected is None or user_id == expected:
        return None
    if not user_id:
        return f"refused: published without a broker user, not by {source}'s {expected!r}"
    return f"refused: published by broker user {user_id!r}, not {source}'s {expected!r}"
