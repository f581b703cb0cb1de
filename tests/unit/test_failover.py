"""`AMQP_URI` as a failover list (shared/failover.py): how it splits, how it is shown without
passwords, and the order in which `connect` tries the nodes. No broker: the nodes here are
ports nobody listens on, which refuse at once."""

from __future__ import annotations

import re
import socket

import pytest

from shared import failover


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_list_splits_on_semicolons_and_a_single_uri_is_a_list_of_one():
    listed = "amqp://u:p@rabbit-1:5672/lavoro; amqp://u:p@rabbit-2:5672/lavoro;"
    assert failover.nodes(listed) == [
        "amqp://u:p@rabbit-1:5672/lavoro",
        "amqp://u:p@rabbit-2:5672/lavoro",
    ]
    assert failover.nodes("amqp://guest:guest@localhost:5672/") == [
        "amqp://guest:guest@localhost:5672/"
    ]


@pytest.mark.parametrize("empty", ["", " ; ;"])
def test_a_list_of_no_node_is_refused(empty):
    with pytest.raises(failover.NoBrokerNode):
        failover.nodes(empty)


def test_described_without_any_password():
    shown = failover.describe(
        "amqp://lavoro:s3cret@rabbit-1:5672/v;amqp://lavoro:s3cret@rabbit-2/v"
    )
    assert "s3cret" not in shown
    assert shown.count(";") == 1 and "rabbit-1:5672" in shown and "rabbit-2" in shown


def test_a_connection_to_one_node_takes_its_host_port_user_and_vhost():
    conn = failover.connection_to("amqp://ann:pw@rabbit-2:5673/lavoro", connect_timeout=1)
    assert (conn.host, conn.connect_timeout, conn.virtual_host) == ("rabbit-2:5673", 1, "lavoro")
    plain = next(m for m in conn.authentication if type(m).__name__ == "PLAIN")
    assert (plain.username, plain.password) == ("ann", "pw")


def test_when_every_node_refuses_the_error_names_each_in_the_order_tried():
    ports = [closed_port(), closed_port(), closed_port()]
    listed = ";".join(f"amqp://guest:guest@127.0.0.1:{port}/" for port in ports)
    with pytest.raises(ConnectionRefusedError) as refused:
        failover.connect(listed, first=1, connect_timeout=1)
    [note] = refused.value.__notes__
    tried = [int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", note)]
    assert tried == [ports[1], ports[2], ports[0]]
