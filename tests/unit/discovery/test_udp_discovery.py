"""UdpDiscovery on loopback scope only (beacons to 127.255.255.255 never leave the host)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import select
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
import pytest

from scatterbrained.discovery import (
    DISCOVERY_ENV,
    LOOPBACK_BROADCAST,
    MAGIC,
    Beacon,
    Discovery,
    DiscoveryEvent,
    DiscoveryScope,
    EventKind,
    NamespaceAd,
    UdpDiscovery,
    encode_beacon,
    lan_broadcast_addresses,
)
from scatterbrained.errors import ConfigurationError, DiscoveryError

LOOPBACK = DiscoveryScope.LOOPBACK


def run(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(main)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("", 0))
        port: int = probe.getsockname()[1]
        return port


def fast(port: int, **kwargs: Any) -> UdpDiscovery:
    return UdpDiscovery(port, scope=LOOPBACK, interval=0.2, peer_timeout=1.0, **kwargs)


def beacon(node_id: str, mode: str = "peer", port: int = 6000) -> Beacon:
    return Beacon(node_id, "", port, (NamespaceAd("ns", mode, 0),), None, 1)


async def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


async def next_matching(
    discovery: UdpDiscovery, kind: EventKind, node_id: str, timeout: float
) -> DiscoveryEvent:
    async def find() -> DiscoveryEvent:
        while True:
            event = await discovery.next_event()
            if event.kind is kind and event.beacon.node_id == node_id:
                return event

    return await asyncio.wait_for(find(), timeout)


async def started(
    stack: contextlib.AsyncExitStack, discoveries: list[UdpDiscovery]
) -> list[UdpDiscovery]:
    for index, discovery in enumerate(discoveries):
        discovery.announce(beacon(f"n{index}", port=6000 + index))
        await stack.enter_async_context(discovery)
    return discoveries


def recording_sendto(discovery: UdpDiscovery, targets: list[str]) -> None:
    transport = discovery._transport
    assert transport is not None
    original: Callable[..., None] = transport.sendto

    def sendto(data: bytes, addr: tuple[str, int]) -> None:
        targets.append(addr[0])
        original(data, addr)

    transport.sendto = sendto  # type: ignore[method-assign,assignment]


@pytest.mark.timeout(10)
def test_broadcast_reaches_every_socket_bound_to_the_port() -> None:
    # Prepare: four sockets with the implementation's options, one sender
    port = free_udp_port()
    receivers = [fast(port)._open_socket() for _ in range(4)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        # Execute
        sender.sendto(b"ping", (LOOPBACK_BROADCAST, port))
        heard = []
        for receiver in receivers:
            readable, _, _ = select.select([receiver], [], [], 2.0)
            heard.append(receiver.recv(64) if readable else None)
            receiver.close()
    # Assert
    assert heard == [b"ping"] * 4


def test_udp_discovery_implements_the_protocol() -> None:
    # Assert
    assert isinstance(fast(free_udp_port()), Discovery)


@pytest.mark.timeout(20)
def test_three_nodes_on_one_host_find_each_other_and_see_a_closed_one_lost() -> None:
    async def main() -> None:
        # Prepare
        port = free_udp_port()
        async with contextlib.AsyncExitStack() as stack:
            nodes = await started(stack, [fast(port) for _ in range(3)])
            # Execute
            await wait_until(lambda: all(len(n.candidates()) == 2 for n in nodes), 3.0)
            seen = await next_matching(nodes[0], EventKind.SEEN, "n1", 1.0)
            await nodes[2].close()
            closed_at = time.monotonic()
            losses = [next_matching(n, EventKind.LOST, "n2", 3.0) for n in nodes[:2]]
            lost = await asyncio.gather(*losses)
            lost_after = time.monotonic() - closed_at
            # Assert
            assert seen.beacon == Beacon("n1", "127.0.0.1", 6001, beacon("n1").namespaces, None, 1)
            assert {b.node_id for b in nodes[1].candidates()} == {"n0"}
            assert all(event.beacon.node_id == "n2" for event in lost)
            assert 0.5 < lost_after < 2.5  # peer_timeout=1.0 plus one expiry interval

    run(main())


@pytest.mark.timeout(20)
def test_announce_none_stops_beacons_and_peers_lose_the_node() -> None:
    async def main() -> None:
        # Prepare
        port = free_udp_port()
        async with contextlib.AsyncExitStack() as stack:
            quiet, listener = await started(stack, [fast(port), fast(port)])
            await next_matching(listener, EventKind.SEEN, "n0", 3.0)
            # Execute
            quiet.announce(None)
            await asyncio.sleep(0.05)
            sent_before = quiet.stats["sent"]
            await next_matching(listener, EventKind.LOST, "n0", 3.0)
            # Assert
            assert quiet.stats["sent"] == sent_before
            assert listener.candidates() == []
            assert [b.node_id for b in quiet.candidates()] == ["n1"]  # still listening

    run(main())


@pytest.mark.timeout(20)
def test_changed_announcement_is_sent_at_once() -> None:
    async def main() -> None:
        # Prepare: slow interval so only the immediate beacon can explain a quick UPDATED
        port = free_udp_port()

        def slow() -> UdpDiscovery:
            return UdpDiscovery(port, scope=LOOPBACK, interval=3.0, peer_timeout=9.0)

        async with contextlib.AsyncExitStack() as stack:
            changer, listener = await started(stack, [slow(), slow()])
            await next_matching(listener, EventKind.SEEN, "n0", 3.0)
            # Execute
            changed_at = time.monotonic()
            changer.announce(beacon("n0", mode="seeding"))
            event = await next_matching(listener, EventKind.UPDATED, "n0", 2.5)
            # Assert
            assert time.monotonic() - changed_at < 1.5  # rate limit is interval / 4
            assert event.beacon.namespaces[0].mode == "seeding"

    run(main())


@pytest.mark.timeout(20)
def test_loopback_scope_only_ever_sends_to_the_loopback_broadcast() -> None:
    async def main() -> None:
        # Prepare
        targets: list[str] = []
        port = free_udp_port()
        discovery = fast(port)
        discovery.announce(beacon("n0"))
        # Execute
        async with discovery:
            recording_sendto(discovery, targets)
            discovery.announce(beacon("n0", mode="leeching"))
            await asyncio.sleep(0.7)
        # Assert
        assert discovery.targets == [LOOPBACK_BROADCAST]
        assert len(targets) >= 3
        assert set(targets) == {LOOPBACK_BROADCAST}
        assert discovery.stats["sent"] == len(targets)

    run(main())


@pytest.mark.timeout(20)
def test_off_scope_opens_nothing_and_sends_nothing() -> None:
    async def main() -> None:
        # Prepare: a listener on the port that would hear any beacon
        port = free_udp_port()
        listener = fast(port)._open_socket()
        discovery = UdpDiscovery(port, scope=DiscoveryScope.OFF, interval=0.1, peer_timeout=0.5)
        # Execute
        async with discovery:
            discovery.announce(beacon("n0"))
            await asyncio.sleep(0.5)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(discovery.next_event(), 0.1)
        readable, _, _ = select.select([listener], [], [], 0.1)
        listener.close()
        # Assert
        assert readable == []
        assert discovery.targets == []
        assert discovery._transport is None
        assert discovery.stats["sent"] == 0

    run(main())


@pytest.mark.timeout(20)
def test_garbage_datagrams_are_counted_and_ignored() -> None:
    async def main() -> None:
        # Prepare
        port = free_udp_port()
        bad_mode = MAGIC + msgspec.msgpack.encode(["x", "", 1, [["ns", "boss", 0]], None, 1])
        garbage = [b"hello", MAGIC + b"\xc1", b"x" * 1500, bad_mode]
        valid = encode_beacon(Beacon("other", "10.9.8.7", 7000))
        async with fast(port) as discovery:
            discovery.announce(beacon("n0"))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                # Execute
                for datagram in [*garbage, valid]:
                    sender.sendto(datagram, ("127.0.0.1", port))
                await wait_until(lambda: len(discovery.candidates()) == 1, 3.0)
        # Assert
        stats = discovery.stats
        assert discovery.candidates() == [Beacon("other", "10.9.8.7", 7000)]
        assert stats["dropped_bad_magic"] == 1
        assert stats["dropped_too_large"] == 1
        assert stats["dropped_malformed"] == 1
        assert stats["dropped_bad_mode"] == 1
        assert stats["received"] >= 5

    run(main())


@pytest.mark.timeout(20)
def test_own_beacons_are_heard_but_ignored() -> None:
    async def main() -> None:
        # Prepare
        async with fast(free_udp_port()) as discovery:
            discovery.announce(beacon("me"))
            # Execute
            await wait_until(lambda: discovery.stats.get("ignored_own", 0) >= 2, 3.0)
        # Assert
        assert discovery.candidates() == []
        assert discovery.stats["received"] >= 2

    run(main())


@pytest.mark.timeout(20)
def test_full_event_queue_drops_the_oldest_event() -> None:
    async def main() -> None:
        # Prepare
        port = free_udp_port()
        async with contextlib.AsyncExitStack() as stack:
            observer = fast(port, queue_size=1)
            nodes = await started(stack, [observer, fast(port), fast(port), fast(port)])
            # Execute
            await wait_until(lambda: len(observer.candidates()) == 3, 3.0)
            only = await asyncio.wait_for(observer.next_event(), 1.0)
        # Assert
        assert observer.stats["dropped_queue_full"] == 2
        assert only.kind is EventKind.SEEN
        assert len(nodes) == 4

    run(main())


@pytest.mark.timeout(10)
def test_port_held_without_reuse_is_a_discovery_error() -> None:
    async def main() -> None:
        # Prepare
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
            holder.bind(("", 0))
            discovery = fast(holder.getsockname()[1])
            # Execute / Assert
            with pytest.raises(DiscoveryError, match="cannot bind"):
                await discovery.start()

    run(main())


@pytest.mark.timeout(10)
def test_closed_discovery_cannot_restart_and_close_is_idempotent() -> None:
    async def main() -> None:
        # Prepare
        discovery = fast(free_udp_port())
        await discovery.start()
        # Execute
        await discovery.close()
        await discovery.close()
        # Assert
        with pytest.raises(DiscoveryError, match="closed"):
            await discovery.start()

    run(main())


def test_oversized_announcement_is_a_configuration_error() -> None:
    # Prepare
    discovery = fast(free_udp_port())
    many = tuple(NamespaceAd(f"namespace-{i:0>90}", "peer") for i in range(30))
    # Execute / Assert
    with pytest.raises(ConfigurationError):
        discovery.announce(Beacon("n0", "", 6000, many))


@pytest.mark.parametrize(
    "kwargs",
    [{"port": 0}, {"port": 70000}, {"interval": 0.0}, {"interval": 2.0, "peer_timeout": 2.0}],
)
def test_invalid_arguments_are_configuration_errors(kwargs: dict[str, Any]) -> None:
    # Prepare
    arguments: dict[str, Any] = {"port": 47474, "scope": LOOPBACK, **kwargs}
    # Execute / Assert
    with pytest.raises(ConfigurationError):
        UdpDiscovery(**arguments)


@pytest.mark.parametrize(
    ("value", "scope"),
    [("loopback", LOOPBACK), ("LAN", DiscoveryScope.LAN), (" off ", DiscoveryScope.OFF)],
)
def test_scope_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, scope: DiscoveryScope
) -> None:
    # Prepare (nothing is started: no socket, nothing sent)
    monkeypatch.setenv(DISCOVERY_ENV, value)
    # Execute
    discovery = UdpDiscovery(free_udp_port())
    # Assert
    assert discovery.scope is scope


def test_unset_environment_means_lan_and_an_argument_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    monkeypatch.delenv(DISCOVERY_ENV, raising=False)
    # Execute
    default = UdpDiscovery(free_udp_port())
    monkeypatch.setenv(DISCOVERY_ENV, "lan")
    explicit = UdpDiscovery(free_udp_port(), scope=LOOPBACK)
    # Assert
    assert default.scope is DiscoveryScope.LAN
    assert explicit.scope is LOOPBACK


def test_unknown_environment_scope_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare
    monkeypatch.setenv(DISCOVERY_ENV, "everywhere")
    # Execute / Assert
    with pytest.raises(ConfigurationError, match="loopback, lan, off"):
        UdpDiscovery(free_udp_port())


def test_lan_scope_on_loopback_interface_only_targets_the_loopback_broadcast() -> None:
    # Prepare (nothing is started)
    discovery = UdpDiscovery(free_udp_port(), scope=DiscoveryScope.LAN, interfaces=["lo"])
    # Execute
    targets = discovery.targets
    # Assert
    assert targets == [LOOPBACK_BROADCAST]


def test_lan_broadcast_addresses_are_subnet_broadcasts_only() -> None:
    # Execute (reads interface addresses; sends nothing)
    addresses = [ipaddress.IPv4Address(a) for a in lan_broadcast_addresses()]
    # Assert
    assert all(a != ipaddress.IPv4Address("255.255.255.255") for a in addresses)
    assert not any(a.is_loopback or a.is_unspecified or a.is_multicast for a in addresses)
    assert len(set(addresses)) == len(addresses)
    assert lan_broadcast_addresses(["no-such-interface0"]) == []
