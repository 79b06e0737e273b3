"""Tests of Namespace: membership, waiting for peers, raw payloads, peer events, modes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from scatterbrained import Identity, OperatingMode, PeerEvent
from scatterbrained.errors import ConfigurationError, ModeError, PeerTimeoutError

pytestmark = pytest.mark.timeout(10)

Run = Callable[..., None]
Eventually = Callable[..., Awaitable[None]]


async def open_all(cluster: Any, ids: str, name: str = "X", **options: Any) -> list[Any]:
    """Start one node per character of ``ids``, each in namespace ``name``."""
    namespaces = []
    for node in await cluster.start(*ids):
        ns = node.namespace(name, **options)
        await ns.open()
        namespaces.append(ns)
    return namespaces


def ids(peers: set[Identity]) -> set[str]:
    return {p.id for p in peers}


# ---------------------------------------------------------------------- membership


def test_peers_are_identities_in_this_namespace(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            a, b = await open_all(cluster, "ab")

            peers = await a.wait_for_peers(1, timeout=3)

            assert peers == a.peers
            (peer,) = peers
            assert (peer.id, peer.namespace, peer.address) == ("b", "X", b.node.address)
            assert a.peer_mode("b") is OperatingMode.PEER
            assert a.peer_mode("nobody") is None

    arun(main)


def test_peer_filter_excludes_peers(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            nodes = await cluster.start("a", "b", "c")
            a = nodes[0].namespace("X", peer_filter=lambda p: p.id != "c")
            others = [n.namespace("X") for n in nodes[1:]]
            for ns in (a, *others):
                await ns.open()

            await others[1].wait_for_peers(2, timeout=3)  # c sees a and b
            await a.wait_for_peers(1, timeout=3)
            await asyncio.sleep(0.1)

            assert ids(a.peers) == {"b"}
            assert "c" in nodes[0].peers  # known to the node, not a member here
            with pytest.raises(ConfigurationError, match="not a peer"):
                await a.send_to("c", b"x")

    arun(main)


def test_a_raising_peer_filter_excludes_without_crashing(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        def broken(peer: Identity) -> bool:
            raise RuntimeError("bug in user code")

        async with cluster_factory() as cluster:
            nodes = await cluster.start("a", "b")
            a, b = nodes[0].namespace("X", peer_filter=broken), nodes[1].namespace("X")
            await a.open()
            await b.open()

            await b.wait_for_peers(1, timeout=3)
            await asyncio.sleep(0.1)

            assert a.peers == set()

    arun(main)


# ---------------------------------------------------------------------- wait_for_peers


def test_wait_for_peers_by_count_and_by_ids(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            a, *_ = await open_all(cluster, "abc")

            by_default = await a.wait_for_peers(timeout=3)  # at least one
            by_ids = await a.wait_for_peers(["b", "c"], timeout=3)
            by_count = await a.wait_for_peers(2, timeout=3)

            assert len(by_default) >= 1
            assert ids(by_ids) == ids(by_count) == {"b", "c"}

    arun(main)


def test_wait_for_peers_waits_for_late_arrivals(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (a,) = await open_all(cluster, "a")

            async def late() -> None:
                await asyncio.sleep(0.2)
                await open_all(cluster, "b")

            starter = asyncio.ensure_future(late())
            start = time.monotonic()
            peers = await a.wait_for_peers(["b"], timeout=3)
            await starter

            assert ids(peers) == {"b"}
            assert time.monotonic() - start >= 0.2

    arun(main)


def test_wait_for_peers_timeout_says_who_is_missing_and_who_is_here(
    arun: Run, cluster_factory: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            a, _ = await open_all(cluster, "ab")
            await a.wait_for_peers(1, timeout=3)

            with pytest.raises(PeerTimeoutError) as by_ids:
                await a.wait_for_peers(["b", "zed"], timeout=0.2)
            with pytest.raises(PeerTimeoutError) as by_count:
                await a.wait_for_peers(5, timeout=0.1)

            message = str(by_ids.value)
            assert "'X'" in message and "0.2 s" in message
            assert "zed" in message and "present: ['b']" in message
            assert "5 peer(s)" in str(by_count.value)

    arun(main)


def test_wait_for_peers_alone_times_out_with_nobody(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (a,) = await open_all(cluster, "a")

            with pytest.raises(PeerTimeoutError, match="present: nobody"):
                await a.wait_for_peers(timeout=0.1)

    arun(main)


# ---------------------------------------------------------------------- raw payloads


def test_send_to_and_recv_round_trip(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            a, b = await open_all(cluster, "ab")
            await a.wait_for_peers(1, timeout=3)
            await b.wait_for_peers(1, timeout=3)
            (b_identity,) = a.peers

            assert await a.send_to(b_identity, b"one", b"", memoryview(b"three"))
            assert await b.send_to("a", b"reply")
            got_b, got_a = await b.recv(timeout=2), await a.recv(timeout=2)

            assert (got_b[0].id, got_b[1]) == ("a", [b"one", b"", b"three"])
            assert (got_a[0].id, got_a[1]) == ("b", [b"reply"])
            assert a.bytes_sent > 0 and b.bytes_received > 0

    arun(main)


def test_recv_times_out_with_peer_timeout_error(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (a,) = await open_all(cluster, "a")

            with pytest.raises(PeerTimeoutError, match=r"no payload within 0\.05 s"):
                await a.recv(timeout=0.05)

    arun(main)


def test_send_to_a_non_member_is_a_configuration_error(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (a,) = await open_all(cluster, "a")

            with pytest.raises(ConfigurationError, match="wait_for_peers"):
                await a.send_to("b", b"x")

    arun(main)


# ---------------------------------------------------------------------- peer events


def test_peer_events_iterator_sees_join_and_leave(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (a,) = await open_all(cluster, "a")
            events: list[PeerEvent] = []

            async def collect() -> None:
                async for event in a.peer_events():
                    events.append(event)
                    if len(events) == 2:
                        return

            collector = asyncio.ensure_future(collect())
            await asyncio.sleep(0)  # the iterator subscribes
            (b,) = await open_all(cluster, "b")
            await a.wait_for_peers(1, timeout=3)
            await b.wait_for_peers(1, timeout=3)  # so that b says Bye to a
            await b.close()
            await asyncio.wait_for(collector, 3)

            assert [(e.kind, e.peer.id) for e in events] == [("joined", "b"), ("left", "b")]
            assert a.node.bus.streams == 0  # the finished iterator unsubscribed
            assert "PeerEvent('joined'" in repr(events[0])

    arun(main)


def test_on_peer_change_callbacks_and_unsubscribe(
    arun: Run, cluster_factory: Any, eventually: Eventually
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (a,) = await open_all(cluster, "a")
            seen: list[tuple[str, str]] = []
            ignored: list[PeerEvent] = []

            def failing(event: PeerEvent) -> None:
                raise RuntimeError("callbacks may fail")

            a.on_peer_change(failing)
            a.on_peer_change(lambda e: seen.append((e.kind, e.peer.id)))
            unsubscribe = a.on_peer_change(ignored.append)
            unsubscribe()
            (b,) = await open_all(cluster, "b")
            await a.wait_for_peers(1, timeout=3)
            await b.wait_for_peers(1, timeout=3)  # so that b says Bye to a
            await b.close()
            await eventually(lambda: len(seen) == 2, what="left event")

            assert seen == [("joined", "b"), ("left", "b")]
            assert ignored == []

    arun(main)


def test_closing_a_namespace_emits_left_for_remaining_members(
    arun: Run, cluster_factory: Any
) -> None:
    async def main() -> None:
        async with cluster_factory(peer_timeout=30.0) as cluster:
            a, b = await open_all(cluster, "ab")
            await a.wait_for_peers(1, timeout=3)
            await b.wait_for_peers(1, timeout=3)
            seen: list[tuple[str, str]] = []
            a.on_peer_change(lambda e: seen.append((e.kind, e.peer.id)))

            await a.close()
            await a.close()  # idempotent
            await asyncio.sleep(0)

            assert seen == [("left", "b")]
            assert a.peers == set()
            assert b.peers == set()  # b got the namespace Bye at once
            assert "a" in b.node.peers  # but the node a is still known to b's node

    arun(main)


# ---------------------------------------------------------------------- modes


def test_mode_setter_accepts_names_and_records_history(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (a,) = await open_all(cluster, "a")

            a.mode = "Seeding"
            a.mode = OperatingMode.SEEDING  # no change: not recorded
            a.mode = OperatingMode.LEECHING

            assert a.mode is OperatingMode.LEECHING
            assert [(s.old, s.new) for s in a.mode_history] == [
                (OperatingMode.PEER, OperatingMode.SEEDING),
                (OperatingMode.SEEDING, OperatingMode.LEECHING),
            ]
            with pytest.raises(ConfigurationError, match="unknown operating mode"):
                a.mode = "napping"
            assert a.mode is OperatingMode.LEECHING

    arun(main)


def test_peers_learn_mode_changes(arun: Run, cluster_factory: Any, eventually: Eventually) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            a, b = await open_all(cluster, "ab")
            await a.wait_for_peers(1, timeout=3)

            b.mode = "seeding"

            await eventually(lambda: a.peer_mode("b") is OperatingMode.SEEDING, what="seeding")
            assert ids(a.peers) == {"b"}

    arun(main)


def test_offline_hides_the_namespace_from_peers(
    arun: Run, cluster_factory: Any, eventually: Eventually
) -> None:
    async def main() -> None:
        async with cluster_factory(peer_timeout=30.0) as cluster:
            a, b = await open_all(cluster, "ab")
            await a.wait_for_peers(1, timeout=3)

            b.mode = "offline"
            await eventually(lambda: not a.peers, what="b hidden")
            hidden_in_beacons = b.node._discovery._beacon is None  # b announces nothing
            b.mode = "peer"
            await a.wait_for_peers(["b"], timeout=3)

            assert hidden_in_beacons
            assert a.peer_mode("b") is OperatingMode.PEER

    arun(main)


def test_a_node_offline_from_the_start_is_never_seen(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (a,) = await open_all(cluster, "a")
            (b,) = await open_all(cluster, "b", mode="offline")

            with pytest.raises(PeerTimeoutError):
                await a.wait_for_peers(1, timeout=0.3)
            silent = "b" not in a.node.peers  # not even a node-level Hello
            b.mode = "peer"
            await a.wait_for_peers(["b"], timeout=3)

            assert silent

    arun(main)


@pytest.mark.parametrize("mode", ["leeching", "offline"])
def test_send_to_in_a_mode_that_does_not_send_raises_mode_error(
    mode: str, arun: Run, cluster_factory: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            a, _ = await open_all(cluster, "ab")
            await a.wait_for_peers(1, timeout=3)
            a.mode = mode

            with pytest.raises(ModeError, match=f"is {mode}"):
                await a.send_to("b", b"x")

    arun(main)


def test_seeding_drops_incoming_raw_payloads(
    arun: Run, cluster_factory: Any, eventually: Eventually
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            a, b = await open_all(cluster, "ab")
            await a.wait_for_peers(1, timeout=3)
            await b.wait_for_peers(1, timeout=3)
            b.mode = "seeding"

            assert await a.send_to("b", b"ignored")
            await eventually(lambda: b.node.stats.dropped["mode"] == 1, what="mode drop")

            with pytest.raises(PeerTimeoutError):
                await b.recv(timeout=0.05)
            assert await b.send_to("a", b"but seeding still sends")
            assert (await a.recv(timeout=2))[1] == [b"but seeding still sends"]

    arun(main)


def test_leeching_receives_raw_payloads(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            a, b = await open_all(cluster, "ab", mode="leeching")
            a.mode = "peer"
            await a.wait_for_peers(1, timeout=3)

            await a.send_to("b", b"to a leecher")

            assert (await b.recv(timeout=2))[1] == [b"to a leecher"]

    arun(main)
