"""The peer protocol's pure parts: bootstrap entries, where to reach a peer, LOST back-dating."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from scatterbrained.errors import ConfigurationError
from scatterbrained.membership import parse_bootstrap

pytestmark = pytest.mark.timeout(20)

Run = Callable[..., None]
KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("tcp://10.0.0.5:5555", ("tcp://10.0.0.5:5555", None)),
        (f"tcp://host.example:7#{KEY}", ("tcp://host.example:7", KEY)),
        ("tcp://10.0.0.5:5555#", ("tcp://10.0.0.5:5555", None)),
    ],
)
def test_bootstrap_entries_parse_into_address_and_key(
    entry: str, expected: tuple[str, str | None]
) -> None:
    assert parse_bootstrap(entry) == expected


@pytest.mark.parametrize(
    ("entry", "message"),
    [("tcp://:5555", "needs a host"), ("10.0.0.5", "bootstrap entry"), ("tcp://h:x", "entry")],
)
def test_bad_bootstrap_entries_say_what_is_expected(entry: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_bootstrap(entry)


def test_a_wildcard_peer_is_reached_where_its_hello_came_from_then_where_we_knew_it(
    arun: Run, cluster_factory: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (node,) = await cluster.start("a")
            membership = node._membership

            from_source = membership.resolve_host("p", "tcp://:9000", "10.1.2.3")
            fallback = membership.resolve_host("p", "tcp://:9000", None)
            explicit = membership.resolve_host("p", "tcp://10.9.9.9:9000", "10.1.2.3")
            broken = membership.resolve_host("p", "not an address", None)

            assert from_source == ("10.1.2.3", 9000)
            assert fallback == ("127.0.0.1", 9000)
            assert explicit == ("10.9.9.9", 9000)  # an advertised host wins
            assert broken is None

    arun(main)


def test_a_lost_beacon_back_dates_the_peer_but_leaves_heartbeats_time(
    arun: Run, cluster_factory: Any
) -> None:
    async def main() -> None:
        async with cluster_factory(peer_timeout=1.0) as cluster:
            a, b = await cluster.start("a", "b", heartbeat_interval=0.2)
            for node in (a, b):
                await node.namespace("Y").open()
            await a.namespaces["Y"].wait_for_peers(1, timeout=3)
            record = a.peers.get("b")
            assert record is not None
            now = time.monotonic()
            record.last_seen = now

            a._membership.beacons_stopped("b", now)

            left = record.last_seen + a.peer_timeout - now
            assert left == pytest.approx(2 * a.heartbeat_interval, abs=1e-6)

    arun(main)
