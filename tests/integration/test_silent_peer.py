"""A peer that says Hello and never answers must not slow anybody's exchange.

Real nodes on 127.0.0.1 (ZeroMQ + loopback UDP); the silent peers join from raw sockets as
real peers would (Hello, challenge echoed), claiming a model in the namespace, then close
their listening socket: whatever is sent to them waits for a connection that never comes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import zmq.asyncio
from hostile_peer import member
from training import Batches, mlp

import scatterbrained as sb

pytestmark = pytest.mark.timeout(120)


async def three_epochs(ns_a: sb.Namespace, ns_b: sb.Namespace) -> float:
    """Seconds per epoch of both nodes training together, over three epochs."""
    start = time.monotonic()
    for _ in range(3):
        await asyncio.gather(ns_a.train(1, Batches(0)), ns_b.train(1, Batches(1)))
    return (time.monotonic() - start) / 3


async def scenario() -> dict[str, Any]:
    name = f"silent-{uuid.uuid4().hex[:8]}"
    context = zmq.asyncio.Context()
    async with sb.Node(host="127.0.0.1") as a, sb.Node(host="127.0.0.1") as b:
        ns_a = a.namespace(name, mlp(0))
        ns_b = b.namespace(name, mlp(1))
        await ns_a.open()
        await ns_b.open()
        await ns_a.wait_for_peers([b.id], timeout=10)
        baseline = await three_epochs(ns_a, ns_b)
        try:
            silent = [f"silent-{i}" for i in range(3)]
            for peer in silent:
                _, router = await member(context, a.address, peer, name)
                router.close(linger=0)
            await ns_a.wait_for_peers([b.id, *silent], timeout=10)
            per_epoch = await three_epochs(ns_a, ns_b)
            return {
                "baseline": baseline,
                "per_epoch": per_epoch,
                "merged": ns_a.history.last.merged_from,
            }
        finally:
            context.destroy(linger=0)


def test_silent_peers_do_not_slow_a_gossip_epoch() -> None:
    # Execute: three epochs of two honest nodes, with three silent members on one of them.
    result = asyncio.run(scenario())

    # Assert: no epoch waits for the silent peers' send timeout (5 s; before the fix an
    # epoch took ~1.3 s more with them); b is still merged.
    assert result["per_epoch"] < result["baseline"] + 0.6, result
    assert "silent-0" not in result["merged"]
