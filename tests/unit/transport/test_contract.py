"""The Transport contract, run against both twins: ZmqTransport (127.0.0.1) and MemoryTransport.

Every behaviour documented in :mod:`scatterbrained.transport.base` is checked here once, with
the ``twin`` fixture parametrised over the real transport and its in-memory twin, so the two
cannot drift apart. Twin-specific tests stay in ``test_zmq_transport.py`` and
``test_memory_transport.py``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from scatterbrained.errors import SecurityError, TransportError
from scatterbrained.transport import (
    Envelope,
    KeyPair,
    MemoryNetwork,
    MemoryTransport,
    Transport,
    ZmqTransport,
    parse_tcp_address,
)

HOST = "127.0.0.1"
#: Slack on top of a send timeout for "returns within the timeout" (CI machines are slow).
SLACK = 1.0

pytestmark = pytest.mark.timeout(15)


def run(main: Callable[[], Awaitable[None]], timeout: float = 8.0) -> None:
    """Run one async test body under a hard timeout."""

    async def bounded() -> None:
        await asyncio.wait_for(main(), timeout)

    asyncio.run(bounded())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class Twin:
    """Makes transports of one kind that can reach each other."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.network = MemoryNetwork()

    def make(
        self,
        *,
        recv_hwm: int | None = None,
        send_hwm: int | None = None,
        max_frame_bytes: int | None = None,
        send_timeout: float | None = None,
        keys: KeyPair | None = None,
        allowed_keys: list[str] | None = None,
    ) -> Any:
        options: dict[str, Any] = {"keys": keys, "allowed_keys": allowed_keys}
        if recv_hwm is not None:
            options["recv_hwm"] = recv_hwm
        if max_frame_bytes is not None:
            options["max_frame_bytes"] = max_frame_bytes
        if send_timeout is not None:
            options["send_timeout"] = send_timeout
        if self.kind == "memory":
            return MemoryTransport(self.network, **options)
        if send_hwm is not None:
            options["send_hwm"] = send_hwm
        return ZmqTransport(HOST, reconnect_ivl=0.02, reconnect_ivl_max=0.1, **options)

    def unused_address(self) -> str:
        """An address that is well-formed but that nobody holds."""
        if self.kind == "memory":
            return "tcp://memory:65000"
        return f"tcp://{HOST}:{free_port()}"


@pytest.fixture(params=["zmq", "memory"])
def twin(request: pytest.FixtureRequest) -> Iterator[Twin]:
    yield Twin(request.param)


async def recv_within(transport: Transport, seconds: float) -> Envelope | None:
    try:
        return await asyncio.wait_for(transport.recv(), seconds)
    except asyncio.TimeoutError:
        return None


def texts(envelope: Envelope | None) -> list[bytes] | None:
    return None if envelope is None else [bytes(f) for f in envelope.frames]


async def fill_until_blocked(
    sender: Transport, address: str, frame: bytes, limit: int = 200
) -> asyncio.Task[bool]:
    """Send ``frame`` until a send does not complete at once; return that pending send.

    The receiver must not read meanwhile. Bounded: at most ``limit`` sends.
    """
    for _ in range(limit):
        task = asyncio.ensure_future(sender.send(address, [frame], timeout=5.0))
        done, _ = await asyncio.wait({task}, timeout=0.3)
        if not done:
            return task
        assert task.result() is True
    raise AssertionError(f"the peer's queue never filled within {limit} sends")


# ---------------------------------------------------------------------------- lifecycle


def test_both_twins_implement_the_protocol(twin: Twin) -> None:
    async def main() -> None:
        async with twin.make() as transport:  # Python 3.11 reads `address` to check
            as_protocol: Transport = transport
            assert isinstance(as_protocol, Transport)

    run(main)


def test_start_and_close_are_idempotent_and_close_is_final(twin: Twin) -> None:
    async def main() -> None:
        transport = twin.make()
        await transport.start()
        address = transport.address
        await transport.start()  # no-op while started

        assert transport.address == address
        await transport.close()
        await transport.close()
        with pytest.raises(TransportError, match="closed"):
            await transport.start()

        never_started = twin.make()
        await never_started.close()  # allowed before start
        with pytest.raises(TransportError, match="closed"):
            await never_started.start()

    run(main)


def test_address_is_tcp_host_port_only_while_started(twin: Twin) -> None:
    async def main() -> None:
        first, second = twin.make(), twin.make()
        with pytest.raises(TransportError, match="not started"):
            _ = first.address
        async with first, second:
            parsed = parse_tcp_address(first.address)

            assert parsed is not None
            assert parsed[1] == first.bound_port
            assert first.address != second.address
        with pytest.raises(TransportError, match="closed"):
            _ = first.address
        assert first.bound_port is None

    run(main)


def test_send_and_recv_need_a_started_open_transport(twin: Twin) -> None:
    async def main() -> None:
        async with twin.make() as peer:
            transport = twin.make()
            with pytest.raises(TransportError, match="not started"):
                await transport.send(peer.address, [b"x"])
            with pytest.raises(TransportError, match="not started"):
                await asyncio.wait_for(transport.recv(), 1.0)
            await transport.start()
            await transport.close()
            with pytest.raises(TransportError, match="closed"):
                await transport.send(peer.address, [b"x"])
            started = time.monotonic()
            with pytest.raises(TransportError, match="closed"):
                await asyncio.wait_for(transport.recv(), 1.0)  # raises at once, never hangs
            assert time.monotonic() - started < 0.5

    run(main)


def test_close_wakes_a_pending_recv(twin: Twin) -> None:
    async def main() -> None:
        transport = twin.make()
        await transport.start()
        waiting = asyncio.ensure_future(transport.recv())
        await asyncio.sleep(0.05)  # let the receive start waiting

        await transport.close()

        with pytest.raises(TransportError, match="closed while receiving"):
            await asyncio.wait_for(waiting, 1.0)

    run(main)


# ---------------------------------------------------------------------------- messages


def test_frames_arrive_intact_multipart_and_zero_length(twin: Twin) -> None:
    async def main() -> None:
        async with twin.make() as a, twin.make() as b:
            frames: list[Any] = [b"header", b"", bytearray(b"body"), memoryview(b"tail"), b""]
            sent = await a.send(b.address, frames)
            envelope = await asyncio.wait_for(b.recv(), 2.0)

            assert sent is True
            assert texts(envelope) == [b"header", b"", b"body", b"tail", b""]
            assert all(isinstance(f, memoryview) and f.readonly for f in envelope.frames)

    run(main)


def test_a_single_empty_frame_is_a_message_but_no_frames_is_an_error(twin: Twin) -> None:
    async def main() -> None:
        async with twin.make() as a, twin.make() as b:
            assert await a.send(b.address, [b""]) is True
            assert texts(await asyncio.wait_for(b.recv(), 2.0)) == [b""]
            with pytest.raises(TransportError, match="empty message"):
                await a.send(b.address, [])

    run(main)


def test_messages_from_one_sender_arrive_in_order_both_ways(twin: Twin) -> None:
    async def main() -> None:
        async with twin.make() as a, twin.make() as b:
            for index in range(50):
                assert await a.send(b.address, [index.to_bytes(2, "big")])
            assert await b.send(a.address, [b"reply"])
            got = [(await asyncio.wait_for(b.recv(), 2.0)).frames[0].tobytes() for _ in range(50)]
            reply = await asyncio.wait_for(a.recv(), 2.0)

            assert got == [index.to_bytes(2, "big") for index in range(50)]
            assert texts(reply) == [b"reply"]

    run(main)


def test_envelope_fields_and_stats(twin: Twin) -> None:
    async def main() -> None:
        async with twin.make() as a, twin.make() as b:
            assert await a.send(b.address, [b"abc", b"", b"defg"])
            envelope = await asyncio.wait_for(b.recv(), 2.0)
            sender_host = parse_tcp_address(a.address)

            assert envelope.nbytes == 7
            assert envelope.peer_key is None  # no keys configured
            assert sender_host is not None and envelope.peer_host == sender_host[0]
            assert (a.stats.messages_out, a.stats.bytes_out, a.stats.send_dropped) == (1, 7, 0)
            assert (b.stats.messages_in, b.stats.bytes_in) == (1, 7)

    run(main)


def test_large_frame_arrives_intact(twin: Twin) -> None:
    payload = bytes(range(256)) * (16 * 4096)  # 16 MiB

    async def main() -> None:
        async with twin.make() as a, twin.make() as b:
            assert await a.send(b.address, [b"h", payload], timeout=3.0)
            envelope = await asyncio.wait_for(b.recv(), 5.0)

            assert envelope.frames[1].nbytes == len(payload)
            assert envelope.frames[1] == memoryview(payload)

    run(main)


def test_frame_over_the_receivers_limit_is_dropped_and_receiver_stays_up(twin: Twin) -> None:
    async def main() -> None:
        async with twin.make() as sender, twin.make(max_frame_bytes=1024) as receiver:
            queued = await sender.send(receiver.address, [b"ok", b"x" * 4096])
            exact = None
            for _ in range(40):  # ZeroMQ cut the connection; it reconnects by itself
                await sender.send(receiver.address, [b"y" * 1024], timeout=0.1)
                exact = await recv_within(receiver, 0.05)
                if exact is not None:
                    break

            assert queued is True  # the limit is the receiver's: no receipt, no error
            assert texts(exact) == [b"y" * 1024]
            assert receiver.stats.messages_in == 1  # the oversized message never surfaced

    run(main)


# ---------------------------------------------------------------------------- failures


def test_send_to_an_unknown_address_returns_false_within_the_timeout(twin: Twin) -> None:
    async def main() -> None:
        async with twin.make() as a:
            started = time.monotonic()
            delivered = await a.send(twin.unused_address(), [b"lost"], timeout=0.3)
            elapsed = time.monotonic() - started

            assert delivered is False
            assert elapsed < 0.3 + SLACK
            assert (a.stats.send_dropped, a.stats.messages_out, a.stats.bytes_out) == (1, 0, 0)

    run(main)


def test_send_to_a_closed_peer_returns_false(twin: Twin) -> None:
    async def main() -> None:
        async with twin.make() as a:
            b = twin.make()
            await b.start()
            gone = b.address
            await b.close()

            assert await a.send(gone, [b"x"], timeout=0.3) is False
            assert a.stats.send_dropped == 1

    run(main)


@pytest.mark.parametrize("address", ["junk", "tcp://host", "tcp://*:1", "inproc://x", "udp://h:5"])
def test_malformed_address_returns_false_without_dialling(twin: Twin, address: str) -> None:
    async def main() -> None:
        async with twin.make() as a:
            started = time.monotonic()
            assert await a.send(address, [b"x"], timeout=2.0) is False
            assert time.monotonic() - started < 0.5  # refused at once, no timeout waited
            assert a.stats.extra == {"send_bad_address": 1}
            assert a.stats.send_dropped == 0

    run(main)


def test_full_queue_send_returns_false_after_the_timeout(twin: Twin) -> None:
    frame = b"f" * (1 << 20)

    async def main() -> None:
        async with twin.make(send_hwm=1) as a, twin.make(recv_hwm=1) as b:
            blocked = await fill_until_blocked(a, b.address, frame)
            blocked.cancel()  # a cancelled send is the caller's business: not counted
            await asyncio.gather(blocked, return_exceptions=True)
            dropped_before = a.stats.send_dropped
            started = time.monotonic()
            delivered = await a.send(b.address, [frame], timeout=0.3)
            elapsed = time.monotonic() - started

            assert delivered is False
            assert 0.2 <= elapsed < 0.3 + SLACK  # waited for room, but not forever
            assert a.stats.send_dropped == dropped_before + 1

    run(main, timeout=12.0)


def test_a_send_waiting_for_room_goes_through_when_the_receiver_reads(twin: Twin) -> None:
    frame = b"f" * (1 << 20)

    async def main() -> None:
        async with twin.make(send_hwm=1) as a, twin.make(recv_hwm=1) as b:
            blocked = await fill_until_blocked(a, b.address, frame)
            received = 0
            while not blocked.done():
                assert await recv_within(b, 2.0) is not None
                received += 1
                await asyncio.sleep(0)

            assert blocked.result() is True
            assert received >= 1

    run(main, timeout=12.0)


def test_forget_ends_a_waiting_send_and_the_next_send_gets_through(twin: Twin) -> None:
    frame = b"f" * (1 << 20)

    async def main() -> None:
        async with twin.make(send_hwm=1) as a, twin.make(recv_hwm=1) as b:
            a.forget(twin.unused_address())  # never used: harmless
            blocked = await fill_until_blocked(a, b.address, frame)
            started = time.monotonic()

            a.forget(b.address)
            ended = await asyncio.wait_for(blocked, 2.0)
            ended_after = time.monotonic() - started
            fresh = asyncio.ensure_future(a.send(b.address, [b"fresh"], timeout=4.0))
            seen: list[bytes] = []
            while b"fresh" not in seen:
                envelope = await recv_within(b, 2.0)
                assert envelope is not None, "the message after forget() never arrived"
                seen.append(envelope.frames[0].tobytes())

            assert ended is False
            assert ended_after < 1.0
            assert await fresh is True

    run(main, timeout=12.0)


def test_close_ends_a_waiting_send_with_false(twin: Twin) -> None:
    frame = b"f" * (1 << 20)

    async def main() -> None:
        async with twin.make(recv_hwm=1) as b:
            a = twin.make(send_hwm=1)
            await a.start()
            blocked = await fill_until_blocked(a, b.address, frame)

            await a.close()

            assert await asyncio.wait_for(blocked, 2.0) is False

    run(main, timeout=12.0)


def test_default_send_timeout_applies_when_timeout_is_none(twin: Twin) -> None:
    async def main() -> None:
        async with twin.make(send_timeout=0.2) as a:
            started = time.monotonic()
            assert await a.send(twin.unused_address(), [b"x"]) is False
            assert time.monotonic() - started < 0.2 + SLACK

    run(main)


# ---------------------------------------------------------------------------- receive


def test_cancelled_recv_times_out_and_leaves_the_transport_usable(twin: Twin) -> None:
    async def main() -> None:
        async with twin.make() as a, twin.make() as b:
            started = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(b.recv(), 0.2)
            elapsed = time.monotonic() - started
            for _ in range(3):  # repeated cancellations leave nothing behind
                assert await recv_within(b, 0.05) is None

            assert await a.send(b.address, [b"after"])
            envelope = await asyncio.wait_for(b.recv(), 2.0)

            assert 0.15 <= elapsed < 1.0
            assert texts(envelope) == [b"after"]
            assert b.stats.messages_in == 1

    run(main)


def test_cancelling_recvs_loses_no_message(twin: Twin) -> None:
    async def main() -> None:
        async with twin.make() as a, twin.make() as b:
            count = 200
            sending = asyncio.ensure_future(
                asyncio.gather(*(a.send(b.address, [i.to_bytes(2, "big")]) for i in range(count)))
            )
            got: list[int] = []
            deadline = time.monotonic() + 5.0
            while len(got) < count and time.monotonic() < deadline:
                envelope = await recv_within(b, 0.001)  # cancels most receives midway
                if envelope is not None:
                    got.append(int.from_bytes(envelope.frames[0], "big"))
            await sending

            assert sorted(got) == list(range(count))

    run(main)


# ---------------------------------------------------------------------------- keys


def test_keys_authenticate_the_sender_and_refuse_strangers(twin: Twin) -> None:
    server_keys, friend_keys = KeyPair.generate(), KeyPair.generate()

    async def main() -> None:
        async with (
            twin.make(keys=server_keys, allowed_keys=[friend_keys.public]) as server,
            twin.make(keys=friend_keys) as friend,
            twin.make(keys=KeyPair.generate()) as stranger,
            twin.make() as keyless,
        ):
            refused = await stranger.send(
                server.address, [b"s"], server_key=server_keys.public, timeout=0.3
            )
            plain = await keyless.send(server.address, [b"k"], timeout=0.3)
            accepted = await friend.send(
                server.address, [b"f"], server_key=server_keys.public, timeout=2.0
            )
            envelope = await asyncio.wait_for(server.recv(), 2.0)
            leaked = await recv_within(server, 0.2)

            assert (refused, plain, accepted) == (False, False, True)
            assert texts(envelope) == [b"f"]
            assert envelope.peer_key == friend_keys.public
            assert leaked is None
            assert server.public_key == server_keys.public and keyless.public_key is None
            with pytest.raises(SecurityError, match="server_key"):
                await friend.send(server.address, [b"no key"])

    run(main)
