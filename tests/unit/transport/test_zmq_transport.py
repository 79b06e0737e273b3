"""Tests of ZmqTransport over real sockets on 127.0.0.1 (plain and CurveZMQ)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

import numpy as np
import pytest
import zmq

from scatterbrained.errors import ConfigurationError, SecurityError, TransportError
from scatterbrained.transport import Envelope, Transport, ZmqTransport, parse_tcp_address
from scatterbrained.transport.security import KeyPair

HOST = "127.0.0.1"

pytestmark = pytest.mark.timeout(5)


def run(main: Callable[[], Awaitable[None]], timeout: float = 3.0) -> None:
    """Run one async test body under a hard timeout."""

    async def bounded() -> None:
        await asyncio.wait_for(main(), timeout)

    asyncio.run(bounded())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


async def recv_within(transport: ZmqTransport, seconds: float) -> Envelope | None:
    try:
        return await asyncio.wait_for(transport.recv(), seconds)
    except asyncio.TimeoutError:
        return None


def fast(**kwargs: object) -> ZmqTransport:
    return ZmqTransport(HOST, reconnect_ivl=0.02, reconnect_ivl_max=0.1, **kwargs)  # type: ignore[arg-type]


@pytest.mark.timeout(5)
def test_messages_flow_both_ways() -> None:
    async def main() -> None:
        async with fast() as a, fast() as b:
            sent_ab = await a.send(b.address, [b"header", b"", bytearray(b"payload")])
            at_b = await b.recv()
            sent_ba = await b.send(a.address, [memoryview(b"reply")])
            at_a = await a.recv()

            assert sent_ab and sent_ba
            assert [bytes(f) for f in at_b.frames] == [b"header", b"", b"payload"]
            assert [bytes(f) for f in at_a.frames] == [b"reply"]
            assert at_a.peer_key is None and at_b.peer_key is None
            assert (a.stats.messages_out, a.stats.bytes_out) == (1, 13)
            assert (b.stats.messages_in, b.stats.bytes_in) == (1, 13)

    run(main)


@pytest.mark.timeout(10)
def test_big_frame_arrives_intact_without_copy() -> None:
    payload = np.random.default_rng(0).integers(0, 256, size=50_000_000, dtype=np.uint8)

    async def main() -> None:
        async with fast() as a, fast() as b:
            assert await a.send(b.address, [b"h", payload.data], timeout=2.0)
            envelope = await b.recv()

            big = envelope.frames[1]
            assert big.nbytes == payload.nbytes
            assert isinstance(big.obj, zmq.Frame)  # a view of the received message, no copy
            assert big.readonly
            assert np.array_equal(np.frombuffer(big, dtype=np.uint8), payload)

    run(main, timeout=8.0)


@pytest.mark.timeout(5)
def test_frame_over_limit_is_not_delivered_and_transport_stays_up() -> None:
    async def main() -> None:
        async with fast() as sender, fast(max_frame_bytes=1024) as receiver:
            await sender.send(receiver.address, [b"x" * 4096])
            first = None
            for _ in range(40):  # the oversized frame cut the connection; it comes back
                await sender.send(receiver.address, [b"next"], timeout=0.1)
                first = await recv_within(receiver, 0.05)
                if first is not None:
                    break

            assert first is not None
            assert [bytes(f) for f in first.frames] == [b"next"]
            assert receiver.stats.bytes_in == 4

    run(main)


@pytest.mark.timeout(5)
def test_send_to_dead_port_returns_false_within_timeout() -> None:
    async def main() -> None:
        async with fast() as a:
            started = time.monotonic()
            delivered = await a.send(f"tcp://{HOST}:{free_port()}", [b"lost"], timeout=0.3)
            elapsed = time.monotonic() - started

            assert delivered is False
            assert 0.25 <= elapsed < 2.0
            assert a.stats.send_dropped == 1 and a.stats.messages_out == 0

    run(main)


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "address", ["inproc://zeromq.zap.01", "ipc:///tmp/x", "tcp://*:1", "tcp://host", "junk"]
)
def test_malformed_address_is_dropped_not_dialled(address: str) -> None:
    async def main() -> None:
        async with fast() as a:
            assert await a.send(address, [b"x"], timeout=0.1) is False
            assert a.stats.extra == {"send_bad_address": 1}

    run(main)


@pytest.mark.timeout(5)
def test_forget_during_a_pending_send_returns_false_promptly() -> None:
    async def main() -> None:
        async with fast() as a:
            dead = f"tcp://{HOST}:{free_port()}"
            pending = asyncio.ensure_future(a.send(dead, [b"x"], timeout=2.5))
            await asyncio.sleep(0.05)
            started = time.monotonic()

            a.forget(dead)
            delivered = await pending

            assert delivered is False
            assert time.monotonic() - started < 1.0

    run(main)


@pytest.mark.timeout(5)
def test_close_is_idempotent_and_final() -> None:
    async def main() -> None:
        transport = fast()
        await transport.start()
        address = transport.address

        await transport.close()
        await transport.close()

        with pytest.raises(TransportError, match="closed"):
            await transport.send(address, [b"x"])
        with pytest.raises(TransportError, match="closed"):
            await transport.start()

    run(main)


@pytest.mark.timeout(5)
def test_port_conflict_raises_transport_error() -> None:
    async def main() -> None:
        async with fast() as first:
            second = ZmqTransport(HOST, first.bound_port)
            with pytest.raises(TransportError, match=f"{first.bound_port}.*port=None"):
                await second.start()
            await second.close()

    run(main)


@pytest.mark.timeout(5)
def test_recv_raises_transport_error_when_closed_while_waiting() -> None:
    async def main() -> None:
        transport = fast()
        await transport.start()
        waiting = asyncio.ensure_future(transport.recv())
        await asyncio.sleep(0.05)

        await transport.close()

        with pytest.raises(TransportError, match="closed while receiving"):
            await waiting

    run(main)


@pytest.mark.timeout(5)
def test_forget_closes_connection_and_next_send_reconnects() -> None:
    async def main() -> None:
        async with fast() as a, fast() as b:
            await a.send(b.address, [b"one"])
            await b.recv()

            a.forget(b.address)
            a.forget(b.address)
            assert await a.send(b.address, [b"two"])
            again = await b.recv()

            assert bytes(again.frames[0]) == b"two"

    run(main)


def test_address_rules_and_protocol() -> None:
    async def main() -> None:
        wildcard = ZmqTransport("0.0.0.0", heartbeat_ivl=0.5)
        with pytest.raises(TransportError, match="not started"):
            _ = wildcard.address
        async with wildcard, ZmqTransport(HOST, advertise_host="node7.lan") as advertised:
            assert wildcard.address == f"tcp://127.0.0.1:{wildcard.bound_port}"
            assert advertised.address == f"tcp://node7.lan:{advertised.bound_port}"
            as_protocol: Transport = wildcard  # mypy checks the structural match
            assert isinstance(as_protocol, Transport)

    run(main)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tcp://127.0.0.1:5555", ("127.0.0.1", 5555)),
        ("tcp://[::1]:80", ("::1", 80)),
        ("tcp://host.example:65535", ("host.example", 65535)),
        ("tcp://h:0", None),
        ("tcp://h:70000", None),
        ("tcp://:5", None),
        ("tcp://a;b:5", None),
        ("udp://h:5", None),
    ],
)
def test_parse_tcp_address(text: str, expected: tuple[str, int] | None) -> None:
    assert parse_tcp_address(text) == expected


def test_invalid_settings_raise_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="send_timeout"):
        ZmqTransport(HOST, send_timeout=0)
    with pytest.raises(ConfigurationError, match="allowed_keys needs keys"):
        ZmqTransport(HOST, allowed_keys=[KeyPair.generate().public])
    with pytest.raises(ConfigurationError, match="port"):
        ZmqTransport(HOST, 70000)


# ---------------------------------------------------------------------------------- CURVE


@pytest.mark.timeout(5)
def test_curve_allowed_peer_delivers_with_its_key() -> None:
    server_keys, client_keys = KeyPair.generate(), KeyPair.generate()

    async def main() -> None:
        async with (
            fast(keys=server_keys, allowed_keys=[client_keys.public]) as server,
            fast(keys=client_keys) as client,
        ):
            sent = await client.send(server.address, [b"hi"], server_key=server_keys.public)
            envelope = await server.recv()

            assert sent
            assert envelope.peer_key == client_keys.public
            assert bytes(envelope.frames[0]) == b"hi"
            assert server.public_key == server_keys.public

    run(main)


@pytest.mark.timeout(5)
def test_curve_unknown_key_and_keyless_client_deliver_nothing() -> None:
    server_keys, friend_keys = KeyPair.generate(), KeyPair.generate()

    async def main() -> None:
        async with (
            fast(keys=server_keys, allowed_keys=[friend_keys.public]) as server,
            fast(keys=KeyPair.generate()) as stranger,
            fast() as keyless,
            fast(keys=friend_keys) as friend,
        ):
            await stranger.send(server.address, [b"s"], server_key=server_keys.public, timeout=0.3)
            await keyless.send(server.address, [b"k"], timeout=0.3)
            leaked = await recv_within(server, 0.3)
            await friend.send(server.address, [b"f"], server_key=server_keys.public)
            from_friend = await server.recv()

            assert leaked is None
            assert from_friend.peer_key == friend_keys.public
            assert server.stats.messages_in == 1

    run(main)


@pytest.mark.timeout(5)
def test_curve_keys_can_be_allowed_and_denied_at_run_time() -> None:
    server_keys, client_keys = KeyPair.generate(), KeyPair.generate()

    async def main() -> None:
        async with (
            fast(keys=server_keys, allowed_keys=[]) as server,
            fast(keys=client_keys) as client,
        ):
            refused = await client.send(
                server.address, [b"0"], server_key=server_keys.public, timeout=0.2
            )
            server.allow_key(client_keys.public)
            accepted = await client.send(
                server.address, [b"1"], server_key=server_keys.public, timeout=1.5
            )
            first = await server.recv()
            server.deny_key(client_keys.public)
            await client.send(server.address, [b"2"], server_key=server_keys.public)
            after_deny = await recv_within(server, 0.2)

            assert refused is False and accepted is True
            assert bytes(first.frames[0]) == b"1"
            assert after_deny is None
            assert server.stats.extra.get("recv_refused") == 1

    run(main)


@pytest.mark.timeout(5)
def test_curve_send_without_server_key_is_a_security_error() -> None:
    async def main() -> None:
        async with fast(keys=KeyPair.generate()) as a:
            with pytest.raises(SecurityError, match="server_key"):
                await a.send(a.address, [b"x"])

    run(main)


@pytest.mark.timeout(5)
def test_self_check_refuses_to_start_without_authenticator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ZmqTransport, "_start_zap_handler", lambda self: None)

    async def main() -> None:
        transport = fast(keys=KeyPair.generate(), allowed_keys=[])
        with pytest.raises(SecurityError, match="authentication is not enforced"):
            await transport.start()
        assert transport.bound_port is None  # everything was released
        with pytest.raises(TransportError, match="not started"):
            await transport.recv()
        await transport.close()

    run(main)


@pytest.mark.timeout(30)
def test_thousands_of_addresses_never_exhaust_sockets_or_raise() -> None:
    """Outgoing connections are a capped pool: 2,000 distinct (dead) addresses, more than
    libzmq's 1,023 sockets per context, cost at most ``max_connections`` sockets, every send
    returns False instead of raising, and a live peer is still reached afterwards."""

    async def main() -> None:
        async with fast(max_connections=16) as a, fast() as b:
            results = await asyncio.gather(
                *(a.send(f"tcp://{HOST}:{20000 + i}", [b"x"], timeout=1.0) for i in range(2000))
            )
            delivered = await a.send(b.address, [b"alive"], timeout=2.0)
            got = await recv_within(b, 2.0)

            assert not any(results)
            assert a.stats.extra["connection_evicted"] >= 2000 - 16
            assert delivered and got is not None and bytes(got.frames[0]) == b"alive"

    run(main, timeout=25)


def test_max_connections_out_of_range_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="max_connections"):
        ZmqTransport(HOST, max_connections=0)
