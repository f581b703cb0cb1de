"""A 3-node RabbitMQ cluster of the suite's own (its node names, ports and folders; the running
broker is never touched), its event queues quorum queues on all three nodes, and the services'
`AMQP_URI` listing the three. Mid-load the node every service is connected to is stopped, then
started again: the relays and consumers reconnect to a surviving node, and every event is
handled once in effect (the checks of the fault load: nothing lost, nothing doubled, the books
to the cent, both logs verify)."""

from __future__ import annotations

import pytest

from tests import infra
from tests.helpers import wait_for
from tests.reliability.checks import examined, settle
from tests.reliability.faults import Chaos, connection_names
from tests.reliability.load import Client, Load
from tests.reliability.rabbit import Cluster, NamedConnections, server_binary
from tests.reliability.system import System

CALLS, APPLICATIONS, SUSPENDED = 5, 20, 2


@pytest.fixture
def cluster(tmp_path):
    if server_binary() is None:
        pytest.skip("rabbitmq-server is not installed here: the suite's 3-node cluster needs it")
    nodes = Cluster(tmp_path / "rabbitmq")
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.close()


@pytest.fixture
def system(tmp_path, cluster):
    running = System(tmp_path, cluster.uri, infra.postgres_url())
    try:
        yield running
    finally:
        running.close()


def on_node(connections: NamedConnections, node: str) -> bool:
    """Whether every named connection is open, and on `node` (its pid names its node)."""
    now = connections.now()
    return all(pids and all(node in pid for pid in pids) for pids in now.values())


@pytest.mark.timeout(600)
def test_a_node_stopped_mid_load_and_started_again(figures, cluster, system):
    first, second, _third = cluster.nodes
    system.start()
    calls, ledger = system.replica("calls"), system.replica("ledger")
    watch = NamedConnections(second.ctl, "/", connection_names())
    wait_for(lambda: on_node(watch, first.name), 30, f"every service connected to {first.name}")
    queues = second.ctl.run("list_queues", "--no-table-headers", "name", "type", "members")
    event_queues = [line for line in queues.stdout.splitlines() if ".from." in line]
    assert len(event_queues) == 2 and all(
        "quorum" in line and all(node.name in line for node in cluster.nodes)
        for line in event_queues
    ), queues.stdout

    client = Client()
    load = Load(
        client,
        lambda: calls.base,
        lambda: ledger.base,
        calls=CALLS,
        applications=APPLICATIONS,
        suspended=SUSPENDED,
    )

    def stop_first() -> None:
        before = watch.now()
        first.stop()
        figures.node_stops += 1
        figures.reconnects += watch.wait_back(before)
        assert not any(first.name in pid for pids in watch.now().values() for pid in pids)
        figures.notes.append(f"stopped {first.name}; every service reconnected to another node")

    def start_first() -> None:
        first.start()
        first.wait_until_serving()
        wait_for(lambda: len(cluster.running_nodes(second)) == 3, 60, "the node back in")
        figures.notes.append(f"started {first.name} again; it rejoined the cluster")

    at = load.estimated_events()
    chaos = Chaos(system, [(int(at * 0.3), stop_first), (int(at * 0.55), start_first)])
    chaos.start(load)
    try:
        load.run()
    finally:
        chaos.wait()
    expected = load.expected()
    settle(system, expected)

    found = examined(system, expected, client, figures)
    assert found.describe() == "nothing"
    assert chaos.done == 2
