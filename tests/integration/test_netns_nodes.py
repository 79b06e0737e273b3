"""Two default nodes on two private hosts (network namespaces joined by a veth pair).

Each runs ``sb.Node()`` with ``SCATTERBRAINED_DISCOVERY=lan`` inside its own namespace, where the
only broadcast-capable interface is the test's ``veth0``: the LAN beacons reach the other
namespace and nothing else. They must find each other by broadcast and exchange payloads over
ZeroMQ between their veth addresses. Skipped unless root with a working ``ip netns``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.netns


@pytest.mark.timeout(90)
def test_lan_nodes_in_two_network_namespaces_find_each_other_and_exchange(
    netns_network: Callable[[int], Any], node_processes: Callable[..., Any]
) -> None:
    # Prepare
    network = netns_network(2)
    namespace = f"netns-{uuid.uuid4().hex[:12]}"
    nodes = [
        node_processes(
            namespace,
            prefix=["ip", "netns", "exec", host.name],
            env={"SCATTERBRAINED_DISCOVERY": "lan"},
        )
        for host in network.hosts
    ]
    ready = [node.expect(lambda e: e.get("event") == "ready", 60.0) for node in nodes]
    (a, b), (id_a, id_b) = nodes, (str(ready[0]["id"]), str(ready[1]["id"]))

    # Execute
    found_a = a.call("wait_peers", 15.0, ids=[id_b], timeout=10.0)
    found_b = b.call("wait_peers", 15.0, ids=[id_a], timeout=10.0)
    recv_b = b.send("recv", count=1, timeout=10.0)
    sent_a = a.call("send", 15.0, to=id_b, data="over the veth")
    got_b = b.expect(lambda e: e.get("rid") == recv_b, 15.0)
    recv_a = a.send("recv", count=1, timeout=10.0)
    sent_b = b.call("send", 15.0, to=id_a, data="and back")
    got_a = a.expect(lambda e: e.get("rid") == recv_a, 15.0)

    # Assert
    print(
        f"found each other {max(found_a['at'], found_b['at']) - max(r['at'] for r in ready):.3f} s "
        "after both joined"
    )
    assert found_a["ok"] and found_b["ok"]
    assert found_a["hosts"] == {id_b: network.hosts[1].address}  # reached over the veth pair
    assert found_b["hosts"] == {id_a: network.hosts[0].address}
    assert sent_a["ok"] and sent_b["ok"]
    assert got_b["messages"] == [[id_a, "over the veth"]]
    assert got_a["messages"] == [[id_b, "and back"]]
