"""A scatterbrained node in its own OS process, driven by JSON lines (integration-test helper).

Run as ``python node_script.py NAMESPACE`` (with ``PYTHONPATH`` pointing at ``src``). The node is
``sb.Node()`` with no arguments, so its discovery scope comes from ``SCATTERBRAINED_DISCOVERY``
exactly as for a user. It joins ``NAMESPACE`` and prints one JSON object per line on stdout:

* ``{"event": "ready", "id", "address", "at"}`` once the namespace is joined;
* ``{"event": "peer", "kind": "joined"|"left", "id", "at"}`` on every membership change;
* one reply per command (carrying the command's ``rid``).

Commands arrive on stdin, one JSON object per line; each runs as its own task:

* ``{"op": "wait_peers", "ids": [...], "timeout": s}`` -> ``{"event": "peers", "ok", "ids", "hosts",
  "at"}`` (``hosts``: each peer's address host)
* ``{"op": "send", "to": id, "data": text}`` -> ``{"event": "sent", "ok"}``
* ``{"op": "recv", "count": n, "timeout": s}`` -> ``{"event": "received", "messages": [[from,
  text], ...]}`` (fewer than ``n`` when the timeout passed)
* ``{"op": "wait_gone", "id": id, "timeout": s}`` -> ``{"event": "gone", "ok", "at"}``
* ``{"op": "wait_beacon", "id": id, "timeout": s}`` -> ``{"event": "beacon", "ok"}``: wait until
  discovery has heard a beacon of ``id`` (so its liveness comes from beacons, the usual case)
* ``{"op": "stats"}`` -> ``{"event": "stats", "stats": {...}}``
* ``{"op": "quit"}`` (or end of stdin): leave cleanly and exit 0.

Times (``at``) are ``time.monotonic()`` seconds, a clock shared by all processes of a Linux host.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

import scatterbrained as sb

_POLL_S = 0.02


def emit(event: str, **fields: Any) -> None:
    """Print one JSON event line on stdout (flushed at once)."""
    print(json.dumps({"event": event, **fields}), flush=True)


async def wait_peers(ns: sb.Namespace, ids: list[str], timeout: float) -> dict[str, Any]:
    """Wait until every id in ``ids`` is a member of ``ns``."""
    try:
        await ns.wait_for_peers(ids, timeout=timeout)
        ok = True
    except sb.PeerTimeoutError:
        ok = False
    hosts = {p.id: p.host for p in ns.peers}
    return {"event": "peers", "ok": ok, "ids": sorted(hosts), "hosts": hosts}


async def receive(ns: sb.Namespace, count: int, timeout: float) -> dict[str, Any]:
    """Receive up to ``count`` raw payloads within ``timeout`` seconds in total."""
    deadline = time.monotonic() + timeout
    messages: list[list[str]] = []
    while len(messages) < count:
        try:
            peer, frames = await ns.recv(timeout=max(0.0, deadline - time.monotonic()))
        except sb.PeerTimeoutError:
            break
        messages.append([peer.id, b"".join(frames).decode("utf-8", "replace")])
    return {"event": "received", "messages": messages}


async def wait_gone(ns: sb.Namespace, peer_id: str, timeout: float) -> dict[str, Any]:
    """Poll ``ns.peers`` until ``peer_id`` is no longer in it."""
    deadline = time.monotonic() + timeout
    while any(p.id == peer_id for p in ns.peers):
        if time.monotonic() > deadline:
            return {"event": "gone", "ok": False}
        await asyncio.sleep(_POLL_S)
    return {"event": "gone", "ok": True}


async def wait_beacon(node: sb.Node, peer_id: str, timeout: float) -> dict[str, Any]:
    """Poll the node's discovery candidates until ``peer_id`` is one (test-only peek)."""
    deadline = time.monotonic() + timeout
    discovery = node.discovery
    assert discovery is not None
    while all(beacon.node_id != peer_id for beacon in discovery.candidates()):
        if time.monotonic() > deadline:
            return {"event": "beacon", "ok": False}
        await asyncio.sleep(_POLL_S)
    return {"event": "beacon", "ok": True}


async def run_command(node: sb.Node, ns: sb.Namespace, command: dict[str, Any]) -> None:
    """Execute one command and print its reply."""
    op = command.get("op")
    timeout = float(command.get("timeout", 5.0))
    reply: dict[str, Any]
    if op == "wait_peers":
        reply = await wait_peers(ns, list(command["ids"]), timeout)
    elif op == "send":
        ok = await ns.send_to(str(command["to"]), str(command["data"]).encode())
        reply = {"event": "sent", "ok": ok}
    elif op == "recv":
        reply = await receive(ns, int(command.get("count", 1)), timeout)
    elif op == "wait_gone":
        reply = await wait_gone(ns, str(command["id"]), timeout)
    elif op == "wait_beacon":
        reply = await wait_beacon(node, str(command["id"]), timeout)
    elif op == "stats":
        reply = {"event": "stats", "stats": node.stats.as_dict()}
    else:
        reply = {"event": "error", "detail": f"unknown op {op!r}"}
    emit(reply.pop("event"), rid=command.get("rid"), at=time.monotonic(), **reply)


async def command_lines() -> asyncio.StreamReader:
    """Return a reader over this process's stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def serve_commands(node: sb.Node, ns: sb.Namespace) -> None:
    """Run commands from stdin until ``quit`` or end of input."""
    reader = await command_lines()
    tasks: set[asyncio.Task[None]] = set()
    try:
        while line := await reader.readline():
            command = json.loads(line)
            if command.get("op") == "quit":
                break
            task = asyncio.create_task(run_command(node, ns, command))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def main(namespace: str) -> None:
    """Start a default node, join ``namespace`` and serve commands."""
    async with sb.Node() as node, node.namespace(namespace) as ns:
        ns.on_peer_change(lambda e: emit("peer", kind=e.kind, id=e.peer.id, at=time.monotonic()))
        emit("ready", id=node.id, address=node.address, at=time.monotonic())
        await serve_commands(node, ns)
    emit("closed", at=time.monotonic())


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    asyncio.run(main(sys.argv[1]))
