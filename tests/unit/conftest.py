"""Shared fixtures for node / namespace / learning unit tests (in-memory network only).

Test modules cannot import each other (``--import-mode=importlib``), so helpers are handed out
as fixtures:

* ``cluster_factory``: builds a :class:`MemCluster` *inside* a test's event loop: nodes on one
  ``MemoryNetwork`` and ``MemoryDiscoveryHub`` that find each other within ~0.1 s.
* ``arun``: runs an async test body under a hard timeout with ``asyncio.run``.
* ``eventually``: an async "wait until this condition holds" with a timeout.
* ``digits`` / ``digit_loader`` / ``mlp`` / ``torch_ready``: tiny models and data.

Nothing here sends a packet: the in-memory twins never open a socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import pytest

from scatterbrained.discovery.memory import MemoryDiscovery, MemoryDiscoveryHub
from scatterbrained.node import Node
from scatterbrained.sim.datasets import ArrayLoader, Dataset, load_digits
from scatterbrained.transport.memory import MemoryNetwork, MemoryTransport
from scatterbrained.transport.security import KeyPair

#: Seconds after which an in-memory peer that vanished without a Bye is forgotten.
PEER_TIMEOUT = 1.0


class MemCluster:
    """Nodes on one in-memory network; create it inside the test's event loop.

    Args:
        peer_timeout: the discovery's (and so the nodes') peer timeout in seconds.
        **network: keywords of :class:`MemoryNetwork` (``delay``, ``drop_rate``, ``seed``).
    """

    def __init__(self, peer_timeout: float = PEER_TIMEOUT, **network: Any) -> None:
        self.net = MemoryNetwork(**network)
        self.hub = MemoryDiscoveryHub()
        self.peer_timeout = peer_timeout
        self.nodes: list[Node] = []

    def node(
        self,
        node_id: str,
        *,
        keys: KeyPair | None = None,
        allowed_keys: list[str] | None = None,
        **kwargs: Any,
    ) -> Node:
        """A new (not started) node on this network; ``keys`` enable the Curve simulation."""
        transport = MemoryTransport(self.net, keys=keys, allowed_keys=allowed_keys)
        discovery = MemoryDiscovery(self.hub, interval=0.02, peer_timeout=self.peer_timeout)
        kwargs.setdefault("heartbeat_interval", 0.2)
        node = Node(
            node_id,
            transport=transport,
            discovery=discovery,
            keys=keys,
            allowed_keys=allowed_keys,
            **kwargs,
        )
        self.nodes.append(node)
        return node

    async def start(self, *node_ids: str, **kwargs: Any) -> list[Node]:
        """Create and start one node per id (same keywords for all)."""
        nodes = [self.node(i, **kwargs) for i in node_ids]
        for node in nodes:
            await node.start()
        return nodes

    async def close(self) -> None:
        """Close every node made here (idempotent; aborted nodes are skipped)."""
        for node in self.nodes:
            await node.close()

    async def __aenter__(self) -> MemCluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@pytest.fixture
def cluster_factory() -> type[MemCluster]:
    """The :class:`MemCluster` class (instantiate it inside the running event loop)."""
    return MemCluster


@pytest.fixture
def arun() -> Callable[..., None]:
    """``arun(main, timeout=10.0)``: ``asyncio.run(main())`` under a hard timeout."""

    def run(main: Callable[[], Awaitable[None]], timeout: float = 10.0) -> None:
        async def bounded() -> None:
            await asyncio.wait_for(main(), timeout)

        asyncio.run(bounded())

    return run


@pytest.fixture
def eventually() -> Callable[..., Awaitable[None]]:
    """``await eventually(condition, timeout=3.0, what="...")``: poll until it holds."""

    async def wait(condition: Callable[[], bool], timeout: float = 3.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s: {what}")
            await asyncio.sleep(0.01)

    return wait


@pytest.fixture(scope="session")
def torch_ready() -> Iterator[None]:
    """One torch thread, and torch's one-time first-backward/Adam warm-up paid up front."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.zeros(2, 4)).sum().backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits() -> Dataset:
    """scikit-learn's 8x8 digits: flat float32 inputs in [0, 1], int64 labels."""
    return load_digits()


@pytest.fixture
def digit_loader(digits: Dataset) -> Callable[..., ArrayLoader]:
    """``digit_loader(part, parts, samples=None, batch_size=32, seed=None)``: a shard loader.

    The shard is ``x_train[part::parts]`` (first ``samples`` of it when given); the shuffle
    seed defaults to ``part`` so equal calls give equal batches.
    """

    def make(
        part: int = 0,
        parts: int = 1,
        samples: int | None = None,
        batch_size: int = 32,
        seed: int | None = None,
    ) -> ArrayLoader:
        x = digits.x_train[part::parts][:samples]
        y = digits.y_train[part::parts][:samples]
        return ArrayLoader(x, y, batch_size, seed=part if seed is None else seed)

    return make


@pytest.fixture
def mlp(torch_ready: None) -> Callable[..., Any]:
    """``mlp(seed=0, hidden=16)``: a tiny 64 -> hidden -> 10 MLP with seeded weights."""
    import torch

    def make(seed: int = 0, hidden: int = 16) -> torch.nn.Module:
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)
        )

    return make


@pytest.fixture
def weights() -> Callable[[Any], dict[str, np.ndarray]]:
    """``weights(model)``: the model's state_dict as NumPy copies."""

    def get(model: Any) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}

    return get
