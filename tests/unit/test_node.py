"""Tests of Node on the in-memory twins: lifecycle, membership, stats, replays, identities."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from scatterbrained import KeyPair, Node, NodeStats
from scatterbrained.errors import ConfigurationError
from scatterbrained.transport.base import Envelope
from scatterbrained.transport.memory import MemoryTransport
from scatterbrained.wire.codec import encode
from scatterbrained.wire.messages import Hello, Message, NamespaceInfo, Raw

pytestmark = pytest.mark.timeout(10)

Run = Callable[..., None]
Eventually = Callable[..., Awaitable[None]]


async def joined(*namespaces: Any, n: int) -> None:
    """Wait until every namespace sees ``n`` peers."""
    await asyncio.gather(*(ns.wait_for_peers(n, timeout=3) for ns in namespaces))


def frames_of(message: Message) -> list[bytes]:
    return [bytes(memoryview(f)) for f in encode(message)]


# ---------------------------------------------------------------------- construction


def test_default_ids_are_unique_and_prefixed() -> None:
    ids = {Node().id for _ in range(20)}

    assert len(ids) == 20
    assert all(i.startswith("node-") and len(i) == len("node-") + 12 for i in ids)


def test_explicit_id_is_kept() -> None:
    assert Node("alice").id == "alice"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"allowed_keys": []}, "allowed_keys needs keys"),
        ({"keys": KeyPair.generate()}, "allowed_keys"),
        ({"heartbeat_interval": 0}, "heartbeat_interval"),
        ({"bootstrap": ["tcp://:5555"]}, "needs a host"),
        ({"bootstrap": ["http://h:1"]}, "bootstrap entry"),
        ({"require_keys": True}, "require_keys=True but no keys"),
    ],
)
def test_inconsistent_arguments_raise_configuration_error(
    kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Node(**kwargs)


def test_require_keys_with_keys_starts() -> None:
    node = Node(keys=KeyPair.generate(), allowed_keys=[], require_keys=True)

    assert node.public_key is not None


def test_transport_property_before_start_says_how_to_start() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        _ = Node().transport


def test_node_stats_totals_and_snapshot() -> None:
    stats = NodeStats(messages_in=2, bytes_in=10)
    stats.dropped["replay"] += 2
    stats.dropped["mode"] += 1

    assert stats.dropped_total == 3
    assert stats.as_dict() == {
        "messages_in": 2,
        "bytes_in": 10,
        "messages_out": 0,
        "bytes_out": 0,
        "dropped": {"replay": 2, "mode": 1},
    }


# ---------------------------------------------------------------------- lifecycle


def test_address_comes_from_the_transport_and_is_unique(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            a, b = await cluster.start("a", "b")

            assert a.address == a.transport.address
            assert a.address.startswith("tcp://memory:")
            assert a.address != b.address

    arun(main)


def test_discovery_is_none_before_start_then_the_running_discovery(
    arun: Run, cluster_factory: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            node = cluster.node("a")
            before = node.discovery

            await node.start()

            assert before is None
            assert node.discovery is not None
            assert node.discovery.peer_timeout == node.peer_timeout

    arun(main)


def test_close_is_idempotent_and_a_never_started_close_is_a_no_op(
    arun: Run, cluster_factory: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (a,) = await cluster.start("a")
            async with a.namespace("X") as ns:
                pass
            await a.close()
            await a.close()
            await Node("never-started").close()

            assert a.namespaces == {}
            assert not ns._open
            assert cluster.net.addresses == frozenset()

    arun(main)


def test_close_closes_open_namespaces(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (a,) = await cluster.start("a")
            ns = a.namespace("X")
            await ns.open()
            assert set(a.namespaces) == {"X"}

            await a.close()

            assert a.namespaces == {} and not ns._open

    arun(main)


@pytest.mark.parametrize("name", ["", "x" * 257])
def test_namespace_name_must_be_1_to_256_characters(name: str) -> None:
    with pytest.raises(ConfigurationError, match=r"1\.\.256"):
        Node("a").namespace(name)


def test_duplicate_namespace_is_refused(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (a,) = await cluster.start("a")
            first, twin = a.namespace("X"), a.namespace("X")
            await first.open()

            with pytest.raises(ConfigurationError, match="already in namespace 'X'"):
                a.namespace("X")
            with pytest.raises(ConfigurationError, match="already in namespace 'X'"):
                await twin.open()
            assert a.namespaces["X"] is first

    arun(main)


def test_unknown_namespace_option_suggests_the_closest(arun: Run) -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'round_timeout'"):
        Node("a").namespace("X", round_timout=1.0)


def test_invalid_namespace_mode_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="operating mode"):
        Node("a").namespace("X", mode="sleepy")


# ---------------------------------------------------------------------- membership


def test_peers_appear_via_discovery_and_hello(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            a, b, c = await cluster.start("a", "b", "c")
            ns_a, ns_b = a.namespace("X"), b.namespace("X")
            ns_c = c.namespace("Other")
            for ns in (ns_a, ns_b, ns_c):
                await ns.open()

            await joined(ns_a, ns_b, n=1)

            assert {p.id for p in ns_a.peers} == {"b"}
            record = a.peers.get("b")
            assert record is not None and record.greeted
            assert record.address == b.address
            assert set(record.namespaces) == {"X"}
            assert "c" not in a.peers  # no shared namespace: never greeted
            assert ns_c.peers == set()

    arun(main)


def test_bye_removes_a_peer_immediately(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory(peer_timeout=30.0) as cluster:
            a, b = await cluster.start("a", "b")
            ns_a, ns_b = a.namespace("X"), b.namespace("X")
            await ns_a.open()
            await ns_b.open()
            await joined(ns_a, ns_b, n=1)

            await b.close()
            await asyncio.sleep(0)  # let a's receive loop run once

            assert ns_a.peers == set()
            assert "b" not in a.peers

    arun(main)


def test_aborted_peer_expires_after_peer_timeout(
    arun: Run, cluster_factory: Any, eventually: Eventually
) -> None:
    async def main() -> None:
        async with cluster_factory(peer_timeout=0.5) as cluster:
            a, b = await cluster.start("a", "b")
            ns_a, ns_b = a.namespace("X"), b.namespace("X")
            await ns_a.open()
            await ns_b.open()
            await joined(ns_a, ns_b, n=1)
            left: list[str] = []
            ns_a.on_peer_change(lambda e: left.append(e.peer.id) if e.kind == "left" else None)

            start = time.monotonic()
            await b.abort()
            await b.abort()  # idempotent
            await asyncio.sleep(0.2)
            still_there = {p.id for p in ns_a.peers}
            await eventually(lambda: not ns_a.peers, timeout=4.0, what="b expires")

            # No Bye: the in-memory discovery reports the closed node LOST at once, and the
            # peer is probed for two heartbeat intervals (0.4 s) before it is dropped.
            assert still_there == {"b"}
            assert 0.4 <= time.monotonic() - start < 4.0
            assert left == ["b"] and "b" not in a.peers
            assert b.namespaces == {}

    arun(main)


def test_a_namespace_opened_later_learns_existing_peers(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            a, b = await cluster.start("a", "b")
            ns_a, ns_b = a.namespace("X"), b.namespace("X")
            await ns_a.open()
            await ns_b.open()
            await joined(ns_a, ns_b, n=1)

            late = a.namespace("Y")
            await b.namespace("Y").open()
            await late.open()

            assert {p.id for p in (await late.wait_for_peers(1, timeout=3))} == {"b"}

    arun(main)


# ---------------------------------------------------------------------- stats


def test_stats_count_what_the_transport_moved(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            a, b = await cluster.start("a", "b")
            ns_a, ns_b = a.namespace("X"), b.namespace("X")
            await ns_a.open()
            await ns_b.open()
            await joined(ns_a, ns_b, n=1)
            out0, bytes0, sent0 = a.stats.messages_out, a.stats.bytes_out, ns_a.bytes_sent

            assert await ns_a.send_to("b", b"x" * 1000, b"yz")
            delta_messages, delta_bytes = a.stats.messages_out - out0, a.stats.bytes_out - bytes0
            peer, payload = await ns_b.recv(timeout=2)

            assert (peer.id, payload) == ("a", [b"x" * 1000, b"yz"])
            assert delta_messages == 1
            assert delta_bytes == ns_a.bytes_sent - sent0 > 1002
            for node in (a, b):
                transport = node.transport.stats
                assert node.stats.messages_in == transport.messages_in > 0
                assert node.stats.bytes_in == transport.bytes_in > 0
                assert node.stats.messages_out == transport.messages_out > 0
                assert node.stats.bytes_out == transport.bytes_out
                assert node.stats.dropped_total == 0

    arun(main)


def test_garbage_and_unknown_senders_are_dropped_and_counted(
    arun: Run, cluster_factory: Any, eventually: Eventually
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (a,) = await cluster.start("a")
            await a.namespace("X").open()
            async with MemoryTransport(cluster.net) as rogue:
                await rogue.send(a.address, [b"\x00not a header"])
                ghost = Message("ghost", "X", 1, 1, Raw((b"hi",)))
                await rogue.send(a.address, frames_of(ghost))
                me = Message("a", "X", 1, 1, Raw((b"hi",)))
                await rogue.send(a.address, frames_of(me))

                await eventually(lambda: a.stats.dropped_total >= 3, what="3 drops")

            assert a.stats.dropped["unknown_peer"] == 1
            assert a.stats.dropped["self"] == 1
            assert a.stats.dropped_total == 3  # the garbage under its wire reason
            assert a.stats.messages_in == 3

    arun(main)


# ---------------------------------------------------------------------- replays


def test_a_duplicated_message_is_dropped_as_replay(
    arun: Run, cluster_factory: Any, eventually: Eventually
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            a, b = await cluster.start("a", "b")
            ns_a, ns_b = a.namespace("X"), b.namespace("X")
            await ns_a.open()
            await ns_b.open()
            await joined(ns_a, ns_b, n=1)
            transport = a.transport
            original = transport.send

            async def send_twice(address: str, frames: Any, **kw: Any) -> bool:
                first: bool = await original(address, frames, **kw)
                await original(address, frames, **kw)
                return first

            transport.send = send_twice  # type: ignore[method-assign]
            await ns_a.send_to("b", b"once")
            transport.send = original  # type: ignore[method-assign]

            assert await ns_b.recv(timeout=2) == (next(iter(ns_b.peers)), [b"once"])
            await eventually(lambda: b.stats.dropped["replay"] == 1, what="replay drop")
            with pytest.raises(Exception, match="no payload"):
                await ns_b.recv(timeout=0.1)

    arun(main)


def test_a_replayed_old_sequence_number_is_dropped(
    arun: Run, cluster_factory: Any, eventually: Eventually
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            a, b = await cluster.start("a", "b")
            ns_a, ns_b = a.namespace("X"), b.namespace("X")
            await ns_a.open()
            await ns_b.open()
            await joined(ns_a, ns_b, n=1)
            old = Message("a", "X", a.session, 1, Raw((b"replayed",)))

            async with MemoryTransport(cluster.net) as attacker:
                await attacker.send(b.address, frames_of(old))
                await eventually(lambda: b.stats.dropped["replay"] == 1, what="replay drop")

            with pytest.raises(Exception, match="no payload"):
                await ns_b.recv(timeout=0.1)

    arun(main)


# ---------------------------------------------------------------------- identities (keys)


def test_keyed_nodes_that_allow_each_other_become_peers(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        ka, kb = KeyPair.generate(), KeyPair.generate()
        async with cluster_factory() as cluster:
            (a,) = await cluster.start("a", keys=ka, allowed_keys=[kb.public])
            (b,) = await cluster.start("b", keys=kb, allowed_keys=[ka.public])
            ns_a, ns_b = a.namespace("X"), b.namespace("X")
            await ns_a.open()
            await ns_b.open()
            await joined(ns_a, ns_b, n=1)
            await ns_a.send_to("b", b"secret")

            peer, payload = await ns_b.recv(timeout=2)

            assert (peer.id, payload) == ("a", [b"secret"])
            record = b.peers.get("a")
            assert record is not None and record.public_key == ka.public
            assert b.peers.bound_id(ka.public) == "a"
            assert a.public_key == ka.public

    arun(main)


def test_a_node_with_an_unlisted_key_never_becomes_a_peer(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        ka, kb, stranger = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
        async with cluster_factory() as cluster:
            (a,) = await cluster.start("a", keys=ka, allowed_keys=[kb.public])
            (s,) = await cluster.start("s", keys=stranger, allowed_keys=[ka.public])
            ns_a, ns_s = a.namespace("X"), s.namespace("X")
            await ns_a.open()
            await ns_s.open()
            await asyncio.sleep(0.4)

            assert ns_a.peers == set()
            assert "s" not in a.peers
            assert a.stats.dropped["beacon_key"] > 0  # a ignores the stranger's beacon
            assert cluster.net.stats.refused > 0  # and the stranger's Hellos are refused

    arun(main)


def test_a_keyed_peer_cannot_speak_under_another_id(
    arun: Run, cluster_factory: Any, eventually: Eventually
) -> None:
    async def main() -> None:
        ka, kb, kc = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
        everyone = [ka.public, kb.public, kc.public]
        async with cluster_factory() as cluster:
            a, b, c = [
                (await cluster.start(i, keys=k, allowed_keys=everyone))[0]
                for i, k in (("a", ka), ("b", kb), ("c", kc))
            ]
            namespaces = [n.namespace("X") for n in (a, b, c)]
            for ns in namespaces:
                await ns.open()
            await joined(*namespaces, n=2)
            spoof = Message("a", "X", a.session, 10**9, Raw((b"from a, honest",)))
            lying_hello = Message(
                "c",
                "",
                c.session,
                10**9,
                Hello(c.address, (NamespaceInfo("X", "peer"),), kb.public),
            )

            await c.transport.send(b.address, frames_of(spoof), server_key=kb.public)
            await c.transport.send(b.address, frames_of(lying_hello), server_key=kb.public)
            await eventually(lambda: b.stats.dropped_total >= 2, what="two drops")

            assert b.stats.dropped["identity"] == 1
            assert b.stats.dropped["key_mismatch"] == 1
            with pytest.raises(Exception, match="no payload"):
                await namespaces[1].recv(timeout=0.1)

    arun(main)


def test_a_keyed_node_drops_unauthenticated_envelopes(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        ka = KeyPair.generate()
        async with cluster_factory() as cluster:
            (a,) = await cluster.start("a", keys=ka, allowed_keys=[])
            message = Message("x", "X", 1, 1, Raw((b"p",)))

            a._on_envelope(Envelope([memoryview(f) for f in frames_of(message)], None))

            assert a.stats.dropped == {"unauthenticated": 1}

    arun(main)
