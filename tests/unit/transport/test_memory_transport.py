"""Tests of the in-memory transport twin: delivery, delay, drops, partitions, keys."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from scatterbrained.errors import ConfigurationError, SecurityError, TransportError
from scatterbrained.transport import (
    Envelope,
    KeyPair,
    MemoryNetwork,
    MemoryTransport,
    Transport,
)

pytestmark = pytest.mark.timeout(5)


def run(main: Callable[[], Awaitable[None]], timeout: float = 3.0) -> None:
    """Run one async test body under a hard timeout."""

    async def bounded() -> None:
        await asyncio.wait_for(main(), timeout)

    asyncio.run(bounded())


async def recv_within(transport: MemoryTransport, seconds: float) -> Envelope | None:
    try:
        return await asyncio.wait_for(transport.recv(), seconds)
    except asyncio.TimeoutError:
        return None


def texts(envelope: Envelope | None) -> list[bytes] | None:
    return None if envelope is None else [bytes(f) for f in envelope.frames]


def test_delivery_both_ways_copies_frames_once() -> None:
    async def main() -> None:
        network = MemoryNetwork()
        async with MemoryTransport(network) as a, MemoryTransport(network) as b:
            buffer = bytearray(b"weights")
            sent = await a.send(b.address, [b"hdr", buffer])
            buffer[:] = b"changed"
            await b.send(a.address, [b"reply"])

            at_b, at_a = await b.recv(), await a.recv()

            assert sent
            assert texts(at_b) == [b"hdr", b"weights"]
            assert texts(at_a) == [b"reply"]
            assert all(f.readonly for f in at_b.frames)
            assert at_b.peer_key is None
            assert (a.stats.messages_out, a.stats.bytes_out) == (1, 10)
            assert (b.stats.messages_in, b.stats.bytes_in) == (1, 10)
            assert a.address != b.address and a.address.startswith("tcp://memory:")
            assert network.stats.delivered == 2
            as_protocol: Transport = a  # mypy checks the structural match
            assert isinstance(as_protocol, Transport)

    run(main)


def test_delay_holds_messages_in_flight() -> None:
    async def main() -> None:
        network = MemoryNetwork(delay=0.2)
        async with MemoryTransport(network) as a, MemoryTransport(network) as b:
            loop = asyncio.get_running_loop()
            started = loop.time()
            await a.send(b.address, [b"slow"])

            early = await recv_within(b, 0.1)
            late = await recv_within(b, 0.5)

            assert early is None
            assert texts(late) == [b"slow"]
            assert loop.time() - started >= 0.19

    run(main)


def test_drop_rate_is_deterministic_with_a_seed() -> None:
    async def delivered_indices(seed: int) -> list[int]:
        network = MemoryNetwork(drop_rate=0.5, seed=seed)
        async with MemoryTransport(network) as a, MemoryTransport(network) as b:
            for index in range(100):
                assert await a.send(b.address, [index.to_bytes(1, "big")])
            got = [(await b.recv()).frames[0][0] for _ in range(network.stats.delivered)]
            assert network.stats.dropped + network.stats.delivered == 100
            assert await recv_within(b, 0.01) is None
            return got

    async def main() -> None:
        first, second = await delivered_indices(7), await delivered_indices(7)

        assert first == second
        assert 20 < len(first) < 80
        assert first == sorted(first)

    run(main)


def test_partition_cuts_both_ways_and_heal_restores() -> None:
    async def main() -> None:
        network = MemoryNetwork()
        async with (
            MemoryTransport(network) as a,
            MemoryTransport(network) as b,
            MemoryTransport(network) as c,
        ):
            network.partition([a.address], [b.address, "tcp://memory:999"])
            await a.send(b.address, [b"a->b"])
            await b.send(a.address, [b"b->a"])
            await c.send(b.address, [b"c->b"])
            cut_a, via_c = await recv_within(a, 0.05), await b.recv()
            cut_b = await recv_within(b, 0.05)

            network.heal()
            await a.send(b.address, [b"healed"])

            assert cut_a is None and cut_b is None
            assert texts(via_c) == [b"c->b"]
            assert texts(await b.recv()) == [b"healed"]
            assert network.stats.partitioned == 2

    run(main)


def test_closed_and_unknown_addresses_are_refused_at_once_and_counted() -> None:
    async def main() -> None:
        network = MemoryNetwork()
        async with MemoryTransport(network) as a:
            b = MemoryTransport(network)
            await b.start()
            gone = b.address
            await b.close()
            await b.close()

            to_closed = await a.send(gone, [b"x"], timeout=10.0)  # known at once: no wait
            to_unknown = await a.send("tcp://memory:4242", [b"y"], timeout=10.0)

            assert to_closed is False and to_unknown is False
            assert a.stats.send_dropped == 2 and a.stats.messages_out == 0
            assert network.stats.lost == 2
            assert gone not in network.addresses
            with pytest.raises(TransportError, match="closed"):
                await b.send(a.address, [b"z"])
            with pytest.raises(TransportError, match="closed"):
                await b.start()

    run(main)


def test_full_inbound_queue_waits_for_room_then_drops_and_counts() -> None:
    async def main() -> None:
        network = MemoryNetwork()
        async with MemoryTransport(network) as a, MemoryTransport(network, recv_hwm=2) as b:
            loop = asyncio.get_running_loop()
            results = [await a.send(b.address, [bytes([i])], timeout=0.05) for i in range(2)]
            started = loop.time()
            results.append(await a.send(b.address, [b"\x02"], timeout=0.05))
            waited = loop.time() - started

            assert results == [True, True, False]
            assert 0.04 <= waited < 1.0
            assert a.stats.send_dropped == 1 and a.stats.messages_out == 2
            assert network.stats.overflow == 1
            assert texts(await b.recv()) == [b"\x00"]

    run(main)


def test_delayed_message_to_a_receiver_gone_on_arrival_is_counted_lost() -> None:
    async def main() -> None:
        network = MemoryNetwork(delay=0.05)
        async with MemoryTransport(network) as a:
            b = MemoryTransport(network)
            await b.start()

            in_flight = await a.send(b.address, [b"x"])  # reachable when sent
            await b.close()
            for _ in range(100):  # bounded poll until the message has landed
                if network.stats.lost:
                    break
                await asyncio.sleep(0.01)

            assert in_flight is True
            assert network.stats.lost == 1 and network.stats.delivered == 0

    run(main)


def test_oversized_frame_is_counted_and_the_rest_flows() -> None:
    async def main() -> None:
        network = MemoryNetwork()
        async with (
            MemoryTransport(network) as a,
            MemoryTransport(network, max_frame_bytes=8) as b,
        ):
            assert await a.send(b.address, [b"123456789"])
            assert await a.send(b.address, [b"12345678"])

            assert texts(await b.recv()) == [b"12345678"]
            assert network.stats.oversized == 1 and network.stats.delivered == 1
            assert await recv_within(b, 0.02) is None

    run(main)


def test_recv_raises_when_closed_while_waiting() -> None:
    async def main() -> None:
        network = MemoryNetwork()
        transport = MemoryTransport(network)
        await transport.start()
        waiting = asyncio.ensure_future(transport.recv())
        await asyncio.sleep(0.01)

        await transport.close()

        with pytest.raises(TransportError, match="closed while receiving"):
            await waiting

    run(main)


def test_ports_auto_increment_and_conflicts_raise() -> None:
    async def main() -> None:
        network = MemoryNetwork()
        async with MemoryTransport(network, port=1) as fixed, MemoryTransport(network) as auto:
            clash = MemoryTransport(network, port=1)

            assert fixed.address == "tcp://memory:1"
            assert auto.address == "tcp://memory:2"
            with pytest.raises(TransportError, match="already in use"):
                await clash.start()

    run(main)


def test_key_simulation_accepts_only_allowed_authenticated_senders() -> None:
    server_keys, friend_keys = KeyPair.generate(), KeyPair.generate()

    async def main() -> None:
        network = MemoryNetwork()
        async with (
            MemoryTransport(network, keys=server_keys, allowed_keys=[friend_keys.public]) as srv,
            MemoryTransport(network, keys=friend_keys) as friend,
            MemoryTransport(network, keys=KeyPair.generate()) as stranger,
            MemoryTransport(network) as keyless,
        ):
            await stranger.send(srv.address, [b"s"], server_key=server_keys.public)
            await keyless.send(srv.address, [b"k"])
            await friend.send(srv.address, [b"wrong"], server_key=friend_keys.public)
            await friend.send(keyless.address, [b"curve to plain"], server_key="x" * 40)
            await friend.send(srv.address, [b"f"], server_key=server_keys.public)

            envelope = await srv.recv()

            assert texts(envelope) == [b"f"] and envelope.peer_key == friend_keys.public
            assert await recv_within(keyless, 0.02) is None
            assert network.stats.refused == 4
            srv.deny_key(friend_keys.public)
            await friend.send(srv.address, [b"after deny"], server_key=server_keys.public)
            assert await recv_within(srv, 0.02) is None
            with pytest.raises(SecurityError, match="server_key"):
                await friend.send(srv.address, [b"no key"])

    run(main)


def test_invalid_settings_raise_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="drop_rate"):
        MemoryNetwork(drop_rate=1.5)
    with pytest.raises(ConfigurationError, match="delay"):
        MemoryNetwork(delay=-1)
    with pytest.raises(ConfigurationError, match="allowed_keys needs keys"):
        MemoryTransport(MemoryNetwork(), allowed_keys=[])
    with pytest.raises(ConfigurationError, match="send_timeout"):
        MemoryTransport(MemoryNetwork(), send_timeout=0)
    with pytest.raises(ConfigurationError, match="max_frame_bytes"):
        MemoryTransport(MemoryNetwork(), max_frame_bytes=0)
