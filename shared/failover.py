"""A broker of several nodes: `AMQP_URI` as a failover list.

A RabbitMQ cluster is reached through any of its nodes, so `AMQP_URI` may list them, separated by
`;`, the form kombu takes (its `Connection` cycles through the list when a node does not answer):

    amqp://lavoro:secret@rabbit-1:5672/lavoro;amqp://lavoro:secret@rabbit-2:5672/lavoro;...

Nameko's own connections (the consumer's, a publisher's) are kombu's and fail over by themselves.
What the chassis opens with py-amqp directly, the relay and the health check, goes through
`connect` here: the nodes in turn, starting where the last connection succeeded, the first that
accepts wins. One URI without `;` is a list of one, so nothing changes for a single broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import amqp
from kombu.utils.url import parse_url, sanitize_url

SEPARATOR = ";"


class NoBrokerNode(ValueError):
    """`AMQP_URI` names no node at all (empty, or only separators)."""


def nodes(amqp_uri: str) -> list[str]:
    """Each node's URI, in the order given."""
    found = [part.strip() for part in amqp_uri.split(SEPARATOR) if part.strip()]
    if not found:
        raise NoBrokerNode(f"no broker in AMQP_URI={amqp_uri!r}")
    return found


def describe(amqp_uri: str) -> str:
    """The list with every password masked, for a log line or an error message."""
    return SEPARATOR.join(sanitize_url(node) for node in nodes(amqp_uri))


def connection_to(node_uri: str, **options: Any) -> amqp.Connection:
    """A py-amqp connection to one node's URI, not yet connected. `options` go to
    `amqp.Connection` (connect_timeout, client_properties, heartbeat ...)."""
    parts = parse_url(node_uri)
    secure = parts["transport"] == "amqps"
    return amqp.Connection(
        host=f"{parts['hostname'] or 'localhost'}:{parts['port'] or (5671 if secure else 5672)}",
        userid=parts["userid"] or "guest",
        password=parts["password"] or "guest",
        virtual_host=parts["virtual_host"] or "/",
        ssl=secure,
        **options,
    )


CONNECT_ERRORS: tuple[type[BaseException], ...] = (OSError, amqp.exceptions.AMQPError)


def connect(
    amqp_uri: str,
    *,
    first: int = 0,
    client_properties: Mapping[str, Any] | None = None,
    connect_timeout: float = 10,
) -> tuple[amqp.Connection, int]:
    """A connected py-amqp connection to the first node that accepts, trying them in order from
    the `first`-th (round the list); returns it and that node's index. If none accepts, the
    last node's error is raised, the others' are in its notes."""
    listed = nodes(amqp_uri)
    failures: list[str] = []
    last: BaseException | None = None
    for step in range(len(listed)):
        index = (first + step) % len(listed)
        conn = connection_to(
            listed[index],
            connect_timeout=connect_timeout,
            client_properties=dict(client_properties or {}),
        )
        try:
            conn.connect()
        except CONNECT_ERRORS as exc:
            conn.collect()
            failures.append(f"{sanitize_url(listed[index])}: {type(exc).__name__}: {exc}")
            last = exc
            continue
        return conn, index
    assert last is not None
    if len(failures) > 1:
        last.add_note("every node refused: " + "; ".join(failures))
    raise last
