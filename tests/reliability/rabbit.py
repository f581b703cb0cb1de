"""RabbitMQ for the fault suite: a throw-away vhost on the shared broker, RabbitMQ nodes of the
suite's own (a 3-node cluster), and the connections a service holds, found and closed by name.

A node of the suite is the installed `rabbitmq-server` run in the foreground as a child of the
test process, under a name no one else uses (`lavoro-<hex>-<n>@localhost`), on its own AMQP and
distribution ports, with its data, logs, configuration, plugins file and Erlang cookie in a
folder of its own: it never reads the running broker's files and never talks to its node. The
Debian packages wrap the scripts so that they run as the `rabbitmq` user with that user's home
(and cookie); the suite runs the real scripts beside the wrapper instead, as the user it is.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import amqp

from tests.helpers import wait_for

CTL_TIMEOUT = 60.0
BOOT_TIMEOUT = 90.0


def server_binary() -> str | None:
    """The installed `rabbitmq-server`, or None when this machine has none."""
    return shutil.which("rabbitmq-server")


def scripts_dir() -> Path:
    """Where the real `rabbitmq-server` and `rabbitmqctl` scripts are (a Debian symlink points at
    a wrapper that lives beside them)."""
    found = server_binary()
    if found is None:
        raise FileNotFoundError("rabbitmq-server is not installed")
    return Path(os.path.realpath(found)).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- the shared broker: a vhost of the test's own, and its named connections ---------------------


@contextlib.contextmanager
def throwaway_vhost(amqp_uri: str, name: str) -> Iterator[str]:
    """A vhost `name` on the shared broker for the guest user of `amqp_uri`, deleted at the end;
    yields the URI of the vhost."""
    user = urllib.parse.urlsplit(amqp_uri).username or "guest"
    SHARED.run("add_vhost", name)
    try:
        SHARED.run("set_permissions", "-p", name, user, ".*", ".*", ".*")
        yield vhost_uri(amqp_uri, name)
    finally:
        SHARED.run("delete_vhost", name, check=False)


def vhost_uri(amqp_uri: str, vhost: str) -> str:
    parts = urllib.parse.urlsplit(amqp_uri)
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(vhost, safe="")))


@dataclasses.dataclass(frozen=True)
class Connection:
    pid: str  # the broker's id of the connection, which names its node: <rabbit@host.1.2.3>
    vhost: str
    name: str  # the client-provided connection_name, "" if none


@dataclasses.dataclass(frozen=True)
class Ctl:
    """How to run `rabbitmqctl` against one node: its arguments and environment."""

    args: tuple[str, ...]
    env: dict[str, str] | None = None

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.args, *args],
            capture_output=True,
            text=True,
            check=check,
            env=self.env,
            timeout=CTL_TIMEOUT,
        )


SHARED = Ctl(("rabbitmqctl", "-q"))  # the shared broker, as tests/helpers.py calls it


def list_connections(ctl: Ctl) -> list[Connection]:
    """The open connections, with their vhost and client-provided name. (The table form: the
    JSON one gives pids in a shape `close_connection` does not take.)"""
    listing = ctl.run("list_connections", "--no-table-headers", "pid", "vhost", "client_properties")
    found = []
    for line in listing.stdout.splitlines():
        pid, _, rest = line.partition("\t")
        vhost, _, properties = rest.partition("\t")
        named = _CONNECTION_NAME.search(properties)
        found.append(Connection(pid, vhost, named.group(1) if named else ""))
    return found


_CONNECTION_NAME = re.compile(r'\{"connection_name","([^"]*)"\}')


def close_connections(ctl: Ctl, connections: list[Connection], reason: str) -> int:
    """Close each connection from the broker's side, as a network fault would; how many were."""

    def close(connection: Connection) -> bool:
        done = ctl.run("close_connection", connection.pid, reason, check=False)
        return done.returncode == 0  # gone meanwhile (its service reconnected): not counted

    # Each CLI call costs its own Erlang start; in parallel they overlap.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        return sum(pool.map(close, connections))


# -- nodes of the suite's own --------------------------------------------------------------------


class NodeFailed(RuntimeError):
    """A node of the suite did not start; the message ends with its log's last lines."""


@dataclasses.dataclass
class Node:
    """One RabbitMQ node of the suite: a child process, its ports, its folder."""

    name: str  # e.g. lavoro-3fa2c1-1@localhost
    amqp_port: int
    dist_port: int
    base: Path
    peers: list[str]  # every node of its cluster, itself included (classic peer discovery)
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def ctl(self) -> Ctl:
        return Ctl((str(scripts_dir() / "rabbitmqctl"), "-q", "-n", self.name), self.environment())

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.base),  # the Erlang cookie: the node's and its CLI calls'
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.base / "node.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def prepare(self, cookie: str) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        cookie_file = self.base / ".erlang.cookie"
        cookie_file.write_text(cookie)
        cookie_file.chmod(0o400)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        lines = [
            f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}",
            "cluster_formation.peer_discovery_backend = classic_config",
            *(
                f"cluster_formation.classic_config.nodes.{n} = {peer}"
                for n, peer in enumerate(self.peers, 1)
            ),
            "cluster_formation.randomized_startup_delay_range.min = 0",
            "cluster_formation.randomized_startup_delay_range.max = 1",
            "cluster_partition_handling = pause_minority",
            "disk_free_limit.absolute = 50MB",
            "log.console = false",
            "log.file.level = info",
        ]
        (self.base / "rabbitmq.conf").write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        """Start the node (again, after a stop: it keeps its data and rejoins its cluster)."""
        out = (self.base / "server.out").open("ab")
        self.process = subprocess.Popen(
            [str(scripts_dir() / "rabbitmq-server")],
            env=self.environment(),
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()

    def wait_until_serving(self, timeout: float = BOOT_TIMEOUT) -> None:
        def serving() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise NodeFailed(
                    f"{self.name} exited with {self.process.returncode}: {self.tail()}"
                )
            return answers(self.amqp_port) and self.accepts_amqp()

        wait_for(serving, timeout, f"RabbitMQ node {self.name} to accept AMQP")

    def accepts_amqp(self) -> bool:
        conn = amqp.Connection(f"127.0.0.1:{self.amqp_port}", connect_timeout=2)
        try:
            conn.connect()
            return True
        except (OSError, amqp.exceptions.AMQPError):
            return False
        finally:
            with contextlib.suppress(Exception):
                conn.collect()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 60.0) -> None:
        """A graceful stop (SIGTERM, as an operator's service manager sends it)."""
        if not self.running:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap_group()

    def kill(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)

    def _reap_group(self) -> None:
        # erl_child_setup and inet_gethost outlive the VM for a moment; they are ours to end.
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def tail(self, lines: int = 30) -> str:
        texts = []
        for path in [self.base / "server.out", *sorted((self.base / "log").glob("*.log"))]:
            if path.exists():
                texts.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(texts[-lines:])


class Cluster:
    """Three nodes of the suite's own clustered together (classic peer discovery), for quorum
    queues; `uri` lists every node, as a service's AMQP_URI does in such a deployment."""

    def __init__(self, base: Path, size: int = 3) -> None:
        self.base = base
        tag = uuid.uuid4().hex[:6]
        names = [f"lavoro-{tag}-{n}@localhost" for n in range(1, size + 1)]
        self.cookie = uuid.uuid4().hex.upper()
        # The first node knows only itself, so it forms the cluster at once; the others know it
        # and join it (a node that has data rejoins its cluster from it, not from this list).
        self.nodes = [
            Node(
                name,
                free_port(),
                free_port(),
                base / name.split("@")[0],
                [name] if n == 0 else names,
            )
            for n, name in enumerate(names)
        ]

    @property
    def uri(self) -> str:
        return ";".join(node.uri for node in self.nodes)

    def start(self) -> None:
        """The first node, which forms the cluster; then the others, which join it. (Booted all
        at once, a joiner holds peer discovery's lock while it waits for the first node, which
        needs that lock to boot: they wait on each other until the joiner gives up alone.)"""
        for node in self.nodes:
            node.prepare(self.cookie)
        first, *others = self.nodes
        first.start()
        first.wait_until_serving()
        for node in others:
            node.start()
        for node in others:
            node.wait_until_serving()
        wait_for(lambda: len(self.running_nodes(first)) == len(self.nodes), 60, "a cluster of 3")

    def running_nodes(self, via: Node) -> list[str]:
        status = via.ctl.run("cluster_status", "--formatter", "json", check=False)
        if status.returncode != 0:
            return []
        return list(json.loads(status.stdout).get("running_nodes", []))

    def close(self) -> None:
        """Kill every node and delete their folders (data, logs, cookie)."""
        for node in self.nodes:
            node.kill()
            node._reap_group()
        shutil.rmtree(self.base, ignore_errors=True)


class NamedConnections:
    """The connections lavoro's services hold on one vhost, by their names (`lavoro-relay-<s>`,
    `lavoro-consumer-<s>`): closed as a network fault would, and watched until each is back."""

    def __init__(self, ctl: Ctl, vhost: str, names: list[str]) -> None:
        self.ctl = ctl
        self.vhost = vhost
        self.names = names

    def now(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {name: set() for name in self.names}
        for connection in list_connections(self.ctl):
            if connection.vhost == self.vhost and connection.name in found:
                found[connection.name].add(connection.pid)
        return found

    def close(self) -> tuple[int, dict[str, set[str]]]:
        """Close every one of them; (how many were closed, what there was before)."""
        before = self.now()
        victims = [
            Connection(pid, self.vhost, name) for name, pids in before.items() for pid in pids
        ]
        return close_connections(self.ctl, victims, "closed by the fault suite"), before

    def wait_back(self, before: dict[str, set[str]], timeout: float = 60.0) -> int:
        """Wait until each name has a connection it did not have in `before`; how many did."""

        def back() -> dict[str, set[str]] | None:
            now = self.now()
            return now if all(now[name] - before.get(name, set()) for name in self.names) else None

        wait_for(back, timeout, f"{', '.join(self.names)} connected again")
        return len(self.names)
