"""UdpDiscovery in LAN scope between private network namespaces (root + `ip netns` only).

Inside a namespace the only broadcast-capable interface is the test's own ``veth0``, so the
LAN-scope beacons go to that private subnet's broadcast address (and 127.255.255.255); they
cannot reach the host's network card.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from scatterbrained.discovery import LOOPBACK_BROADCAST

pytestmark = pytest.mark.netns

# Runs inside one namespace: announce, wait until every expected peer is a candidate, keep
# beaconing a little so slower peers hear us too, then print what was found as JSON.
NODE_SCRIPT = """
import asyncio, dataclasses, json, sys, time
from scatterbrained.discovery import Beacon, DiscoveryScope, NamespaceAd, UdpDiscovery

async def main(name: str, port: int, expected: set[str], scope: str) -> None:
    discovery = UdpDiscovery(port, scope=DiscoveryScope(scope), interval=0.2, peer_timeout=2.0)
    discovery.announce(Beacon(name, "", 7000, (NamespaceAd("ns", "peer", 0),), None, 1))
    async with discovery:
        deadline = time.monotonic() + 10.0
        while expected and time.monotonic() < deadline:
            if expected <= {b.node_id for b in discovery.candidates()}:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        found = [dataclasses.asdict(b) for b in discovery.candidates()]
        print(json.dumps({"targets": discovery.targets, "found": found, "stats": discovery.stats}))

expected = set(filter(None, sys.argv[3].split(",")))
asyncio.run(main(sys.argv[1], int(sys.argv[2]), expected, sys.argv[4]))
"""


def run_nodes(network: Any, port: int, scopes: list[str] | None = None) -> list[dict[str, Any]]:
    """Run one node per namespace; each waits for all others unless scopes are given."""
    names = [f"node{i}" for i in range(len(network.hosts))]
    processes = []
    for index, (name, host) in enumerate(zip(names, network.hosts, strict=True)):
        others = ",".join(n for n in names if n != name) if scopes is None else ""
        scope = "lan" if scopes is None else scopes[index]
        processes.append(host.python(NODE_SCRIPT, name, str(port), others, scope))
    reports = []
    for process in processes:
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        assert process.returncode == 0, stderr
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    return reports


@pytest.mark.timeout(90)
@pytest.mark.parametrize("count", [2, 3])
def test_lan_scope_nodes_in_separate_namespaces_find_each_other(
    netns_network: Callable[[int], Any], count: int
) -> None:
    # Prepare
    network = netns_network(count)
    # Execute
    reports = run_nodes(network, port=47474)
    # Assert
    for index, (host, report) in enumerate(zip(network.hosts, reports, strict=True)):
        assert report["targets"] == [host.broadcast, LOOPBACK_BROADCAST]
        found = {b["node_id"]: b["host"] for b in report["found"]}
        expected = {
            f"node{i}": other.address for i, other in enumerate(network.hosts) if i != index
        }
        assert found == expected  # host "" was filled in with each beacon's source address
        assert not any(
            key.startswith("dropped_") and value for key, value in report["stats"].items()
        )


@pytest.mark.timeout(60)
def test_loopback_scope_neither_reaches_nor_hears_another_host(
    netns_network: Callable[[int], Any],
) -> None:
    # Prepare
    network = netns_network(2)
    # Execute
    lan_report, loopback_report = run_nodes(network, port=47474, scopes=["lan", "loopback"])
    # Assert
    assert lan_report["found"] == []  # loopback beacons stayed inside their namespace
    assert loopback_report["found"] == []
    assert loopback_report["targets"] == [LOOPBACK_BROADCAST]
    assert loopback_report["stats"]["dropped_not_loopback"] >= 2  # it did hear the LAN node
