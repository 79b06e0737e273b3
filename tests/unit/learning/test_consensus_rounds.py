"""Consensus rounds: a ``train`` call on a sparse graph ends with mixing-only exchanges."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

import scatterbrained as sb
from scatterbrained.errors import ConfigurationError
from scatterbrained.learning_options import LearningOptions

pytestmark = pytest.mark.timeout(60)

Run = Callable[..., None]
FAST = {"round_timeout": 3.0, "request_timeout": 2.0, "serve_interval": 0.05}


async def train_all(
    cluster: Any, mlp: Any, digit_loader: Any, ids: Sequence[str], epochs: int, **options: Any
) -> list[Any]:
    """Open namespace "C" on one node per id, train ``epochs`` on each, return them."""
    nodes = await cluster.start(*ids)
    spaces = [n.namespace("C", mlp(i), **{**FAST, **options}) for i, n in enumerate(nodes)]
    for ns in spaces:
        await ns.open()
    for ns in spaces:
        await ns.wait_for_peers(len(ids) - 1, timeout=3)
    await asyncio.gather(
        *(ns.train(epochs, digit_loader(i, len(ids), 64)) for i, ns in enumerate(spaces))
    )
    return spaces


def spread(spaces: Sequence[Any], weights: Any) -> float:
    """The largest distance between two nodes' weights."""
    flat = [np.concatenate([a.ravel() for a in weights(ns.model).values()]) for ns in spaces]
    return max(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(flat, 2))


def test_a_ring_ends_train_with_consensus_rounds_that_bring_the_nodes_together(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, weights: Any
) -> None:
    ring = {"topology": sb.topology.Ring(), "sync": True}
    found: dict[str, tuple[float, list[int]]] = {}

    async def one(name: str, **options: Any) -> None:
        async with cluster_factory() as cluster:
            spaces = await train_all(cluster, mlp, digit_loader, "abcd", 3, **ring, **options)
            rounds = [ns.learner.exchange.round for ns in spaces]
            found[name] = (spread(spaces, weights), rounds)

    async def main() -> None:
        await one("default")
        await one("off", consensus_rounds=0)

    arun(main, timeout=40)

    # 4-node ring, weights 1/3: the second eigenvalue is 1/3, 4 steps reach 2 %: the last
    # epoch's exchange and 3 more, capped at 2 (fewer than the epochs of the call).
    assert found["default"][1] == [3 + 2] * 4
    assert found["off"][1] == [3] * 4
    assert found["default"][0] < 0.3 * found["off"][0], found


def test_a_one_epoch_call_gets_no_consensus_round(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            ring = {"topology": sb.topology.Ring(), "sync": True}
            spaces = await train_all(cluster, mlp, digit_loader, "abcd", 1, **ring)

            assert [ns.learner.exchange.round for ns in spaces] == [1] * 4

    arun(main, timeout=30)


def test_a_complete_graph_gets_no_consensus_round(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            spaces = await train_all(cluster, mlp, digit_loader, "abc", 2, sync=True)

            assert [ns.learner.exchange.round for ns in spaces] == [2, 2, 2]

    arun(main, timeout=30)


def test_consensus_rounds_fixes_the_count_and_train_of_zero_epochs_adds_none(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            spaces = await train_all(
                cluster, mlp, digit_loader, "ab", 1, sync=True, consensus_rounds=2
            )
            assert [ns.learner.exchange.round for ns in spaces] == [1 + 2, 1 + 2]

            await spaces[0].train(0, digit_loader(0, 2, 64))

            assert spaces[0].learner.exchange.round == 3

    arun(main, timeout=30)


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_consensus_rounds_must_be_none_or_a_count(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="consensus_rounds"):
        LearningOptions(consensus_rounds=value)


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "gossip"])
def test_a_directed_ring_keeps_its_round_numbers_in_step_and_never_waits_out_a_round(
    sync: bool, arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    # On a one-way ring an upstream node runs ahead of the node it sends to (nothing holds
    # it back) - most in the consensus rounds, while that node still trains. Its rounds must
    # wait in the store, not be skipped: a skipped number is one the next node waits for.
    timed_out: list[Any] = []
    found: list[int] = []

    async def main() -> None:
        async with cluster_factory() as cluster:
            nodes = await cluster.start(*"abcdef")
            for node in nodes:
                node.subscribe(
                    lambda e: timed_out.append(e) if isinstance(e, sb.events.RoundTimedOut) else 0
                )
            options = {**FAST, "topology": sb.topology.Ring(bidirectional=False), "sync": sync}
            spaces = [n.namespace("D", mlp(i), **options) for i, n in enumerate(nodes)]
            for ns in spaces:
                await ns.open()
            for ns in spaces:
                await ns.wait_for_peers(5, timeout=3)
            # Node a trains on 8 times the data of the others: it is the slow one.
            sizes = [512, 64, 64, 64, 64, 64]
            await asyncio.gather(
                *(
                    ns.train(4, digit_loader(i, 6, size, batch_size=8))
                    for i, (ns, size) in enumerate(zip(spaces, sizes, strict=True))
                )
            )
            found.extend(ns.learner.exchange.round for ns in spaces)
            if not sync:  # gossip waits by its pacer, not by rounds: no waits ran out
                assert all(ns.learner.exchange.pacer.bound() < 1.0 for ns in spaces)

    arun(main, timeout=40)

    assert len(set(found)) == 1 and found[0] > 4, found  # the consensus rounds ran too
    assert timed_out == []
