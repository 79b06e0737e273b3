"""Quiet serving: does a network of nodes that only serve go quiet once it agrees?

Run from the repository root (the package importable, e.g. ``PYTHONPATH=src``)::

    python benchmarks/quiet.py                  # 4 and 16 nodes, 12 s of serving each
    python benchmarks/quiet.py --sizes 4 --serve 20 --transport memory

For every size, all nodes live in ONE process. By default they use the library's default
transport (real ZeroMQ, bound to 127.0.0.1) and UDP discovery in ``loopback`` scope (the
script sets ``SCATTERBRAINED_DISCOVERY=loopback`` unless it is set already; beacons go to
127.255.255.255 only); ``--transport memory`` uses the in-memory twins instead. Every node
gets its own shard of scikit-learn's digits (``x_train[i::n]``) and a tiny 64-32-10 MLP
(``torch.manual_seed(i)``), joins one namespace with the DEFAULT options (asynchronous
gossip, fully connected, ``serve_interval`` 0.5 s), trains 1 epoch (all nodes at once), then
all serve for ``--serve`` seconds (12 by default).

Measured in the last ``--window`` seconds (8 by default) of serving, per node: how much the
model version rose (``ns.version``) and how many messages it sent per second
(``node.stats.messages_out``: every message queued to a peer, Hellos included). A run is
``ok`` when no node's version rose by more than 3 and no node sent more than 10 messages/s.

Progress goes to stderr; the last line printed is one JSON object:
``{"runs": [{"nodes", "transport", "max_version_rise_last_8s", "max_msgs_per_s_last_8s",
"mean_msgs_per_s_last_8s", "ok", ...}], ...}``.
"""

from __future__ import annotations

import os

os.environ.setdefault("SCATTERBRAINED_DISCOVERY", "loopback")

import argparse
import asyncio
import json
import logging
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger("quiet")

#: The target: at most this version rise and this many messages per second per node.
MAX_RISE = 3
MAX_MSGS_PER_S = 10.0
TRANSPORTS = ("zmq", "memory")


def make_model(seed: int) -> Any:
    """The tiny 64-32-10 MLP with seeded weights."""
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def make_nodes(count: int, transport: str) -> list[Any]:
    """``count`` (not started) nodes on 127.0.0.1 (ZeroMQ) or on one in-memory network."""
    import scatterbrained as sb

    tag = uuid.uuid4().hex[:6]
    if transport == "zmq":
        return [sb.Node(f"quiet-{tag}-{i}", host="127.0.0.1") for i in range(count)]
    from scatterbrained.discovery.memory import MemoryDiscovery, MemoryDiscoveryHub
    from scatterbrained.transport.memory import MemoryNetwork, MemoryTransport

    net, hub = MemoryNetwork(), MemoryDiscoveryHub()
    return [
        sb.Node(
            f"quiet-{tag}-{i}",
            transport=MemoryTransport(net),
            discovery=MemoryDiscovery(hub),
        )
        for i in range(count)
    ]


async def run_size(count: int, transport: str, serve_s: float, window_s: float) -> dict[str, Any]:
    """One run of ``count`` nodes: train 1 epoch, serve ``serve_s`` s, measure the last window."""
    from scatterbrained.sim.datasets import ArrayLoader, load_digits

    data = load_digits()
    started = time.monotonic()
    name = f"quiet-{uuid.uuid4().hex[:8]}"  # no other process on this host shares it
    nodes = make_nodes(count, transport)
    namespaces = []
    try:
        for node in nodes:
            await node.start()
        for i, node in enumerate(nodes):
            ns = node.namespace(name, make_model(i), lambda model: _adam(model))
            await ns.open()
            namespaces.append(ns)
        await asyncio.gather(*(ns.wait_for_peers(count - 1, timeout=30) for ns in namespaces))
        setup_s = time.monotonic() - started
        logger.info("%d nodes (%s): everyone sees everyone after %.1f s", count, transport, setup_s)

        loaders = [
            ArrayLoader(data.x_train[i::count], data.y_train[i::count], 32, seed=i)
            for i in range(count)
        ]
        t0 = time.monotonic()
        await asyncio.gather(
            *(ns.train(1, loader) for ns, loader in zip(namespaces, loaders, strict=True))
        )
        train_s = time.monotonic() - t0
        logger.info("%d nodes: trained 1 epoch in %.1f s; serving %.0f s", count, train_s, serve_s)

        def snapshot() -> tuple[list[int], list[int], float]:
            versions = [ns.version for ns in namespaces]
            sent = [node.stats.messages_out for node in nodes]
            return versions, sent, time.monotonic()

        marks: dict[str, tuple[list[int], list[int], float]] = {}

        async def mark_window_start() -> None:
            await asyncio.sleep(serve_s - window_s)
            marks["start"] = snapshot()

        marks["serve"] = snapshot()
        await asyncio.gather(
            mark_window_start(), *(ns.serve(duration=serve_s) for ns in namespaces)
        )
        marks["end"] = snapshot()
    finally:
        for node in nodes:
            await node.close()

    v0, m0, t_start = marks["start"]
    v1, m1, t_end = marks["end"]
    vs, ms, _ = marks["serve"]
    seconds = t_end - t_start
    rises = [b - a for a, b in zip(v0, v1, strict=True)]
    rates = [(b - a) / seconds for a, b in zip(m0, m1, strict=True)]
    max_rise, max_rate = max(rises), max(rates)
    return {
        "nodes": count,
        "transport": "zmq-127.0.0.1" if transport == "zmq" else "memory",
        "discovery": (
            f"udp-{os.environ['SCATTERBRAINED_DISCOVERY']}" if transport == "zmq" else "memory"
        ),
        "max_version_rise_last_8s": max_rise,
        "max_msgs_per_s_last_8s": round(max_rate, 2),
        "mean_msgs_per_s_last_8s": round(sum(rates) / len(rates), 2),
        "ok": max_rise <= MAX_RISE and max_rate <= MAX_MSGS_PER_S,
        "window_s": round(seconds, 2),
        "version_rise_per_node": rises,
        "msgs_per_s_per_node": [round(r, 2) for r in rates],
        "version_rise_whole_serve": [b - a for a, b in zip(vs, v1, strict=True)],
        "msgs_whole_serve": [b - a for a, b in zip(ms, m1, strict=True)],
        "setup_s": round(setup_s, 2),
        "train_s": round(train_s, 2),
    }


def _adam(model: Any) -> Any:
    import torch

    return torch.optim.Adam(model.parameters(), lr=1e-3)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="4,16", help="comma-separated node counts")
    parser.add_argument("--transport", choices=TRANSPORTS, default="zmq")
    parser.add_argument("--serve", type=float, default=12.0, help="seconds of serving")
    parser.add_argument("--window", type=float, default=8.0, help="measured last seconds")
    args = parser.parse_args(argv)
    if not 0 < args.window <= args.serve:
        parser.error("need 0 < --window <= --serve")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every size; print one JSON line."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    logging.getLogger("scatterbrained").setLevel(logging.WARNING)
    if os.environ["SCATTERBRAINED_DISCOVERY"] != "loopback" and args.transport == "zmq":
        logger.warning("SCATTERBRAINED_DISCOVERY=%s", os.environ["SCATTERBRAINED_DISCOVERY"])
    import torch

    torch.set_num_threads(1)  # many nodes in one process: one thread each is plenty
    started = time.monotonic()
    runs = []
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        runs.append(asyncio.run(run_size(size, args.transport, args.serve, args.window)))
    result = {
        "runs": runs,
        "target": {"max_version_rise": MAX_RISE, "max_msgs_per_s": MAX_MSGS_PER_S},
        "options": "namespace defaults (gossip, FullyConnected, serve_interval 0.5 s)",
        "wall_s": round(time.monotonic() - started, 1),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result), flush=True)
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
