"""A hostile peer, as its own process, and the raw-socket helpers the integration tests share.

Run as a script it performs one attack on a node at ``ADDRESS`` (127.0.0.1 only) and exits:

    python hostile_peer.py ATTACK '{"address": "tcp://127.0.0.1:PORT", ...}'

Attacks (arguments as one JSON object):

``flood``       ``count`` Hellos from distinct forged ids at addresses where nobody listens,
                and ``beacons`` forged UDP beacons to ``127.255.255.255:port``.
``overflow``    a Hello, then updates and offers whose counters are ``2**64 - 1``.
``namespaces``  ``count`` Hellos each listing ``per_hello`` namespaces.
``payloads``    joins ``name``, then sends ``count`` Raw payloads of ``size`` bytes.
``reflect``     a Hello claiming the address ``target``, then ``count`` model requests.
``replay``      captures the UDP beacons of ``node_id`` on ``port`` and re-broadcasts the
                last one every 0.2 s for ``seconds`` (keeping a crashed peer "alive").
``envelope``    joins ``name`` and serves a model whose architecture envelope is ``size``
                bytes of empty JSON lists to whoever asks.

The encoder's own checks are switched off in this process (a hostile peer does not run them);
the receiving node must refuse what they would have refused. It prints one JSON line of what
it sent.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from scatterbrained.wire.codec import encode
from scatterbrained.wire.messages import (
    Architecture,
    Body,
    Hello,
    Message,
    ModelOffer,
    ModelRequest,
    ModelUpdate,
    NamespaceInfo,
    Raw,
)

SESSION = 2**40


async def poll(condition: Callable[[], bool], timeout: float) -> bool:
    """Check ``condition`` every 20 ms until it holds (True) or ``timeout`` s pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def dealer(context: zmq.asyncio.Context, address: str) -> zmq.asyncio.Socket:
    """A raw DEALER connected to ``address`` (linger 0), as a peer's outgoing socket."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.connect(address)
    return sock


async def send(sock: zmq.asyncio.Socket, message: Message) -> None:
    """Send ``message`` encoded as a node would."""
    await sock.send_multipart([bytes(f) for f in encode(message)], copy=False)


def hostile_encoder() -> None:
    """Switch off the encoder's field checks in this process, as a hostile peer would."""
    from scatterbrained.wire import schema

    for fields in (schema.HelloFields, schema.ModelUpdateFields, schema.ModelOfferFields):
        fields.check = lambda self: None  # type: ignore[method-assign]


def hello(address: str, *names: str, version: int = 10**6) -> Hello:
    """A Hello claiming a model in each of ``names``."""
    return Hello(address, tuple(NamespaceInfo(n, "peer", version, True) for n in names))


class Speaker:
    """One forged identity speaking over one DEALER."""

    def __init__(self, sock: zmq.asyncio.Socket, sender: str, session: int = SESSION) -> None:
        self.sock, self.sender, self.seq, self.session = sock, sender, 0, session

    async def say(self, namespace: str, body: Body) -> None:
        self.seq += 1
        await send(self.sock, Message(self.sender, namespace, self.session, self.seq, body))


async def member(
    context: zmq.asyncio.Context,
    node_address: str,
    sender: str,
    *names: str,
    session: int = SESSION,
    timeout: float = 10.0,
) -> tuple[Speaker, zmq.asyncio.Socket]:
    """Become a member of ``names`` at the node as a real peer would: listen on a ROUTER,
    say Hello with its address, and echo the challenge the node sends there.

    Returns:
        the speaker (a DEALER to the node) and the ROUTER the node now sends to.

    Raises:
        TimeoutError: the node sent no challenge within ``timeout`` seconds.
    """
    from scatterbrained.wire.codec import decode

    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    address = f"tcp://127.0.0.1:{port}"
    speaker = Speaker(dealer(context, node_address), sender, session)
    await speaker.say("", Hello(address, hello(address, *names).namespaces, None, True))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not await router.poll(100):
            continue
        body = decode((await router.recv_multipart())[1:]).body
        if isinstance(body, Hello) and body.challenge:
            infos = hello(address, *names).namespaces
            await speaker.say("", Hello(address, infos, None, False, 0, body.challenge))
            return speaker, router
    raise TimeoutError(f"no challenge from {node_address} in {timeout} s")


async def flood(context: zmq.asyncio.Context, args: dict[str, Any]) -> dict[str, int]:
    sock = dealer(context, args["address"])
    for i in range(args["count"]):
        address = f"tcp://127.0.0.1:{20000 + i % 20000}"
        await Speaker(sock, f"forged-{i}").say("", hello(address, args["name"]))
    sent_beacons = beacons(args.get("port"), args.get("beacons", 0), args["name"])
    await asyncio.sleep(0.5)  # let the socket flush before the context goes
    return {"hellos": args["count"], "beacons": sent_beacons}


def beacons(port: int | None, count: int, name: str) -> int:
    """Forged beacons of ``count`` distinct ids to the loopback broadcast address."""
    if not port or not count:
        return 0
    from scatterbrained.discovery.base import Beacon, NamespaceAd
    from scatterbrained.discovery.codec import encode_beacon

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    try:
        for i in range(count):
            ad = (NamespaceAd(name, "peer", 1),)
            beacon = Beacon(f"beacon-{i}", "127.0.0.1", 30000 + i % 20000, ad, None, SESSION)
            udp.sendto(encode_beacon(beacon), ("127.255.255.255", port))
            if i % 200 == 199:
                time.sleep(0.01)  # the loopback socket buffer is small; do not drop our own
    finally:
        udp.close()
    return count


async def overflow(context: zmq.asyncio.Context, args: dict[str, Any]) -> dict[str, int]:
    name, top = args["name"], 2**64 - 1
    speaker = Speaker(dealer(context, args["address"]), "mallory")
    await speaker.say("", hello("tcp://127.0.0.1:9", name))
    await asyncio.sleep(0.3)
    for _ in range(args.get("count", 20)):
        await speaker.say(name, ModelUpdate(top, 1, "peer", {}, round=top))
        await speaker.say(name, ModelOffer(1, top, 1, {}, round=top))
    await asyncio.sleep(0.5)
    return {"sent": 2 * args.get("count", 20)}


async def namespaces(context: zmq.asyncio.Context, args: dict[str, Any]) -> dict[str, int]:
    names = [f"{i:x}" for i in range(args["per_hello"])]  # short: under the 1 MiB header bound
    speaker = Speaker(dealer(context, args["address"]), "hoarder")
    for _ in range(args["count"]):
        await speaker.say("", hello("tcp://127.0.0.1:9", *names))
    await asyncio.sleep(0.5)
    return {"sent": args["count"]}


async def payloads(context: zmq.asyncio.Context, args: dict[str, Any]) -> dict[str, int]:
    name = args["name"]
    speaker, _ = await member(context, args["address"], "stuffer", name)
    await asyncio.sleep(0.3)
    blob = bytes(args["size"])
    for _ in range(args["count"]):
        await speaker.say(name, Raw((blob,)))
    await asyncio.sleep(1.0)
    return {"sent": args["count"]}


async def reflect(context: zmq.asyncio.Context, args: dict[str, Any]) -> dict[str, int]:
    name = args["name"]
    speaker = Speaker(dealer(context, args["address"]), "reflector")
    await speaker.say("", hello(args["target"], name))
    await asyncio.sleep(0.3)
    for i in range(args["count"]):
        await speaker.say(name, ModelRequest(i + 1, include_architecture=True))
    await asyncio.sleep(0.5)
    return {"sent": args["count"]}


async def envelope(context: zmq.asyncio.Context, args: dict[str, Any]) -> dict[str, int]:
    """Serve a ``size``-byte envelope of empty lists to every request, for ``seconds``."""
    from scatterbrained.adapters.torch_export import MAGIC

    name = args["name"]
    lists = max(1, (args["size"] - 16) // 3)
    payload = MAGIC + b'{"a":[' + b"[]," * lists + b"[]]}"
    speaker, router = await member(context, args["address"], "bomber", name)
    served, deadline = 0, time.monotonic() + args["seconds"]
    from scatterbrained.wire.codec import decode

    while time.monotonic() < deadline:
        if not await router.poll(100):
            continue
        frames = await router.recv_multipart()
        message = decode(frames[1:])
        if isinstance(message.body, ModelRequest):
            arch = Architecture("torch.export", payload)
            await speaker.say(name, ModelOffer(message.body.request_id, 10**6, 1, {}, b"", arch))
            served += 1
    return {"served": served, "envelope_bytes": len(payload)}


async def replay(context: zmq.asyncio.Context, args: dict[str, Any]) -> dict[str, int]:
    """Re-broadcast ``node_id``'s last beacon every 0.2 s; print a line once captured."""
    from scatterbrained.discovery.codec import decode_beacon

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    udp.bind(("", args["port"]))
    udp.setblocking(False)
    captured: bytes | None = None
    replayed, deadline, next_send = 0, time.monotonic() + args["seconds"], 0.0
    try:
        while time.monotonic() < deadline:
            try:
                datagram = udp.recv(65536)
                if decode_beacon(datagram).node_id == args["node_id"]:
                    if captured is None:
                        print(json.dumps({"captured": True}), flush=True)
                    captured = datagram
            except (BlockingIOError, ValueError, Exception):
                await asyncio.sleep(0.01)
            if captured is not None and time.monotonic() >= next_send:
                udp.sendto(captured, ("127.255.255.255", args["port"]))
                replayed, next_send = replayed + 1, time.monotonic() + 0.2
    finally:
        udp.close()
    return {"replayed": replayed}


ATTACKS = {
    "replay": replay,
    "flood": flood,
    "overflow": overflow,
    "namespaces": namespaces,
    "payloads": payloads,
    "reflect": reflect,
    "envelope": envelope,
}


async def main(attack: str, args: dict[str, Any]) -> None:
    hostile_encoder()
    context = zmq.asyncio.Context()
    try:
        result = await ATTACKS[attack](context, args)
    finally:
        context.destroy(linger=0)
    print(json.dumps({"attack": attack, **result}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
