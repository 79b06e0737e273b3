"""CurveZMQ keys and allow-lists between real nodes on 127.0.0.1 (ZeroMQ + loopback UDP).

Nodes with ``keys=sb.KeyPair.generate()`` and ``allowed_keys`` only talk to allow-listed keys:
an allow-listed pair exchanges payloads, while a node whose key is not allow-listed and a node
without keys (both through their own node and through raw sockets) deliver nothing. A message
captured on its way out and sent again with the same session and sequence number, over an
allow-listed CURVE connection, is dropped as a replay.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import zmq
import zmq.asyncio
from hostile_peer import poll

import scatterbrained as sb
from scatterbrained.transport.base import Frame
from scatterbrained.wire.codec import decode, encode
from scatterbrained.wire.messages import Hello, Message, Raw

INTRUDER_WINDOW_S = 3.0  # how long the keyed node must receive nothing from intruders


async def recv_or_none(ns: sb.Namespace, timeout: float) -> Any:
    """The next raw payload of ``ns``, or ``None`` when nothing came within ``timeout`` s."""
    try:
        return await ns.recv(timeout=timeout)
    except sb.PeerTimeoutError:
        return None


def dealer(
    context: zmq.asyncio.Context,
    address: str,
    keys: sb.KeyPair | None = None,
    server_key: str | None = None,
) -> zmq.asyncio.Socket:
    """A raw DEALER connected to ``address`` (a CURVE client when ``keys`` are given)."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None and server_key is not None:
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret.encode())
        sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public.encode())
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_key.encode())
    sock.connect(address)
    return sock


def frames_of(message: Message) -> list[bytes]:
    return [bytes(f) for f in encode(message)]


class RawCapture:
    """Wraps a transport's ``send`` and keeps a copy of every Raw message it sends."""

    def __init__(self, send: Callable[..., Any]) -> None:
        self._send = send
        self.frames: list[list[bytes]] = []

    async def __call__(self, address: str, frames: Sequence[Frame], **kw: Any) -> bool:
        copy = [bytes(f) for f in frames]
        if isinstance(decode(copy).body, Raw):
            self.frames.append(copy)
        result: bool = await self._send(address, frames, **kw)
        return result


async def intrude(
    context: zmq.asyncio.Context, target: sb.Node, namespace: str, intruder_keys: sb.KeyPair
) -> None:
    """Send Hellos and payloads to ``target`` with a non-allow-listed key and with no key."""
    assert target.public_key is not None
    keyed = dealer(context, target.address, intruder_keys, target.public_key)
    plain = dealer(context, target.address)
    for sock, who in ((keyed, "intruder-keyed"), (plain, "intruder-plain")):
        hello = Hello("tcp://127.0.0.1:9", (), intruder_keys.public if sock is keyed else None)
        await sock.send_multipart(frames_of(Message(who, "", 1, 1, hello)), copy=True)
        for seq in range(2, 22):
            body = Raw((b"intrusion",))
            await sock.send_multipart(frames_of(Message(who, namespace, 1, seq, body)))


async def keyed_scenario(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    name = f"keys-{uuid.uuid4().hex[:12]}"
    key_a, key_b, key_c = (sb.KeyPair.generate() for _ in range(3))
    context = zmq.asyncio.Context()
    async with (
        sb.Node(discovery_scope="loopback", keys=key_a, allowed_keys=[key_b.public]) as a,
        sb.Node(discovery_scope="loopback", keys=key_b, allowed_keys=[key_a.public]) as b,
        sb.Node(discovery_scope="loopback", keys=key_c, allowed_keys=[key_a.public]) as c,
        sb.Node(discovery_scope="loopback") as d,
        a.namespace(name) as ns_a,
        b.namespace(name) as ns_b,
        c.namespace(name) as ns_c,
        d.namespace(name) as ns_d,
    ):
        try:
            joined: list[str] = []
            ns_a.on_peer_change(lambda event: joined.append(event.peer.id))
            capture = RawCapture(b.transport.send)
            monkeypatch.setattr(b.transport, "send", capture)
            await ns_a.wait_for_peers([b.id], timeout=5)
            await ns_b.wait_for_peers([a.id], timeout=5)

            # allow-listed peers exchange payloads
            assert await ns_b.send_to(a.id, b"from b")
            a_got = await ns_a.recv(timeout=5)
            assert await ns_a.send_to(b.id, b"from a")
            b_got = await ns_b.recv(timeout=5)

            # intruders: their nodes run (and greet a), and raw sockets push messages at a
            await intrude(context, a, name, key_c)
            beacons_refused = await poll(lambda: a.stats.dropped["beacon_key"] >= 2, 5.0)
            intruder_payload = await recv_or_none(ns_a, INTRUDER_WINDOW_S)

            # replay: the captured Raw message again, over an allow-listed CURVE connection
            replays_before = a.stats.dropped["replay"]
            replayer = dealer(context, a.address, key_b, key_a.public)
            await replayer.send_multipart(capture.frames[-1])
            replay_dropped = await poll(lambda: a.stats.dropped["replay"] > replays_before, 5.0)
            identity_before = a.stats.dropped["identity"]
            forged = Message(c.id, name, 1, 1, Raw((b"i am c",)))  # b's key, c's name
            await replayer.send_multipart(frames_of(forged))
            identity_dropped = await poll(
                lambda: a.stats.dropped["identity"] > identity_before, 5.0
            )
            duplicate = await recv_or_none(ns_a, 0.5)
            return {
                "ids": (a.id, b.id, c.id, d.id),
                "a_got": (a_got[0].id, a_got[1]),
                "b_got": (b_got[0].id, b_got[1]),
                "beacons_refused": beacons_refused,
                "intruder_payload": intruder_payload,
                "a_members": {p.id for p in ns_a.peers},
                "a_known": {r.id for r in a.peers.records()},
                "joined": joined,
                "c_members": {p.id for p in ns_c.peers},
                "d_members": {p.id for p in ns_d.peers},
                "captured": len(capture.frames),
                "replay_dropped": replay_dropped,
                "identity_dropped": identity_dropped,
                "duplicate": duplicate,
            }
        finally:
            context.destroy(linger=0)


@pytest.mark.timeout(60)
def test_keys_allow_list_blocks_strangers_and_replays(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare / Execute
    result = asyncio.run(keyed_scenario(monkeypatch))

    # Assert
    id_a, id_b, id_c, id_d = result["ids"]
    assert result["a_got"] == (id_b, [b"from b"])
    assert result["b_got"] == (id_a, [b"from a"])
    assert result["beacons_refused"]  # a heard c's and d's beacons and did not greet them
    assert result["intruder_payload"] is None  # 0 messages delivered by c, d or raw intruders
    assert result["a_members"] == {id_b}
    assert result["a_known"] == {id_b}  # neither c, d nor the raw intruders got in
    assert id_c not in result["joined"] and id_d not in result["joined"]
    assert set(result["joined"]) == {id_b}
    assert id_a not in result["c_members"]  # a never answered the stranger's Hello
    assert id_a not in result["d_members"]
    assert result["captured"] >= 1
    assert result["replay_dropped"]
    assert result["identity_dropped"]  # the sender is the authenticated key, not the header
    assert result["duplicate"] is None


async def refused_stranger_scenario(caplog: pytest.LogCaptureFixture) -> list[str]:
    """A keyed node with an empty allow-list; a stranger's key is refused over and over."""
    stranger = sb.KeyPair.generate()
    context = zmq.asyncio.Context()
    async with sb.Node(
        host="127.0.0.1", discovery_scope="off", keys=sb.KeyPair.generate(), allowed_keys=[]
    ) as node:
        assert node.public_key is not None
        socks = [dealer(context, node.address, stranger, node.public_key) for _ in range(3)]

        def refused_three_times() -> bool:
            return sum(stranger.public in r.getMessage() for r in caplog.records) >= 3

        try:
            assert await poll(refused_three_times, 10.0), "the stranger was not refused 3 times"
        finally:
            for sock in socks:
                sock.close(linger=0)
            context.destroy(linger=0)
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.timeout(60)
def test_a_refused_key_is_logged_once_with_how_to_allow_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare
    caplog.set_level(logging.DEBUG, logger="scatterbrained.transport.security")
    # Execute
    warnings = asyncio.run(refused_stranger_scenario(caplog))
    # Assert: three refused handshakes, one warning, naming the key and the fix
    refused = [w for w in warnings if "refused a CURVE connection" in w]
    assert len(refused) == 1, warnings
    assert "--allow " in refused[0] and "allowed_keys=[" in refused[0]
    assert not [w for w in warnings if "refused" in w and w not in refused]  # not the self-check


async def refused_side_scenario(caplog: pytest.LogCaptureFixture) -> list[str]:
    """B (keyed) greets A over CURVE, but A's allow-list does not have B's key."""
    name = f"refused-{uuid.uuid4().hex[:8]}"
    async with sb.Node(
        host="127.0.0.1", discovery_scope="off", keys=sb.KeyPair.generate(), allowed_keys=[]
    ) as a:
        assert a.public_key is not None
        async with sb.Node(
            host="127.0.0.1",
            discovery_scope="off",
            keys=sb.KeyPair.generate(),
            allowed_keys=[a.public_key],
            bootstrap=[f"{a.address}#{a.public_key}"],
        ) as b:
            async with a.namespace(name), b.namespace(name):
                hinted = await poll(
                    lambda: any("over CurveZMQ" in r.getMessage() for r in caplog.records), 20.0
                )
                assert hinted, "the refused node was never told"
                assert b.public_key is not None
                key = b.public_key
    return [r.getMessage() for r in caplog.records if key in r.getMessage()]


@pytest.mark.timeout(60)
def test_a_refused_node_is_told_its_key_may_not_be_allowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare
    caplog.set_level(logging.WARNING, logger="scatterbrained.transport.zmq")
    # Execute
    messages = asyncio.run(refused_side_scenario(caplog))
    # Assert: the refused side names its own key and how the peer's operator allows it
    told = [m for m in messages if "could not deliver" in m]
    assert len(told) == 1, messages
    assert "--allow " in told[0] and "allowed_keys=[" in told[0]


async def keyless_meets_keyed_scenario(caplog: pytest.LogCaptureFixture) -> bool:
    """A keyless node hears the beacon of a keyed node in a shared namespace (loopback)."""
    name = f"keyless-{uuid.uuid4().hex[:8]}"
    async with sb.Node(
        host="127.0.0.1", discovery_scope="loopback", keys=sb.KeyPair.generate(), allowed_keys=[]
    ) as keyed:
        async with sb.Node(host="127.0.0.1", discovery_scope="loopback") as keyless:
            async with keyed.namespace(name), keyless.namespace(name):
                return await poll(
                    lambda: any(
                        keyed.id in r.getMessage() and "has none" in r.getMessage()
                        for r in caplog.records
                    ),
                    20.0,
                )


@pytest.mark.timeout(60)
def test_a_keyless_node_is_told_that_a_keyed_peer_needs_keys(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare
    caplog.set_level(logging.WARNING, logger="scatterbrained.membership")
    # Execute / Assert
    assert asyncio.run(keyless_meets_keyed_scenario(caplog)), "the keyless node was never told"
