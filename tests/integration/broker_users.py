"""Throw-away RabbitMQ users and a vhost of their own, made with rabbitmqctl for one test and
deleted after it; and the broker's view of who is connected."""

from __future__ import annotations

import dataclasses
import subprocess
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from kombu.utils.url import parse_url


def rabbitmqctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, check=check)


@dataclasses.dataclass(frozen=True)
class Vhost:
    name: str
    amqp_uri: str  # the test's broker, any user: host and port come from it
    passwords: dict[str, str]

    def uri(self, user: str) -> str:
        parts = parse_url(self.amqp_uri)
        password = self.passwords[user]
        host = f"{parts['hostname']}:{parts['port'] or 5672}"
        return f"amqp://{user}:{password}@{host}/{urllib.parse.quote(self.name, safe='')}"


@contextmanager
def vhost_with_users(amqp_uri: str, unique: str, *roles: str) -> Iterator[Vhost]:
    """A vhost `<unique>-v` and a user `<unique>-<role>` per role, each allowed everything there
    (as the development guest is on the default vhost)."""
    name = f"{unique}-v"
    passwords = {f"{unique}-{role}": uuid.uuid4().hex for role in roles}
    rabbitmqctl("add_vhost", name)
    try:
        for user, password in passwords.items():
            rabbitmqctl("add_user", user, password)
            rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        yield Vhost(name, amqp_uri, passwords)
    finally:
        rabbitmqctl("delete_vhost", name, check=False)
        for user in passwords:
            rabbitmqctl("delete_user", user, check=False)


@dataclasses.dataclass(frozen=True)
class Seen:
    pid: str
    user: str
    name: str | None  # the client-provided connection name, if the client gave one


def connections_of(user: str) -> list[Seen]:
    """The broker's open connections of `user`, with the name each client gave."""
    listing = rabbitmqctl(
        "list_connections", "--no-table-headers", "pid", "user", "client_properties"
    ).stdout
    found = []
    for line in listing.splitlines():
        pid, who, properties = (line.split("\t") + ["", ""])[:3]
        if who != user:
            continue
        name = None
        marker = '{"connection_name","'
        if marker in properties:
            name = properties.split(marker, 1)[1].split('"', 1)[0]
        found.append(Seen(pid, who, name))
    return found


def close(pid: str) -> None:
    rabbitmqctl("close_connection", pid, "closed by a test", check=False)
