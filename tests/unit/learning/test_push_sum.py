"""Push-sum: on a directed graph every node reaches the uniform average, plain mixing does not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import scatterbrained as sb
from scatterbrained.federation.aggregation import FedAvg, Median
from scatterbrained.learning.push_sum import PushSum, is_directed, wants_push_sum

pytestmark = pytest.mark.timeout(60)

Run = Callable[..., None]
#: Strongly connected, directed, irregular: a reaches b, c and d at once; only d reaches a.
EDGES = [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("c", "d"), ("d", "a")]
IDS = ["a", "b", "c", "d"]
START = {"a": 20.0, "b": 0.0, "c": 4.0, "d": 8.0}  # mean 8.0; plain mixing: 11.6


def mix(rounds: int, push_sum: bool) -> dict[str, float]:
    """Synchronous mixing of scalar models over EDGES (no training): push-sum, or each node
    averaging itself and its in-neighbours equally (what plain gossip does)."""
    values = {n: {"w": np.array([START[n]])} for n in IDS}
    weights = {n: PushSum() for n in IDS}
    for _ in range(rounds):
        outbox: dict[str, list[tuple[dict[str, np.ndarray], float]]] = {n: [] for n in IDS}
        for node in IDS:
            targets = [b for a, b in EDGES if a == node]
            share = weights[node].share(len(targets)) if push_sum else 0.0
            for target in targets:
                outbox[target].append((values[node], share))
        for node in IDS:
            if push_sum:
                values[node] = weights[node].merge(values[node], outbox[node])
            else:
                rows = [values[node]["w"], *(arrays["w"] for arrays, _ in outbox[node])]
                values[node] = {"w": np.mean(rows, axis=0)}
    return {n: float(values[n]["w"][0]) for n in IDS}


def test_push_sum_reaches_the_uniform_average_where_plain_mixing_is_biased() -> None:
    mean = float(np.mean(list(START.values())))

    pushed = mix(60, push_sum=True)
    plain = mix(60, push_sum=False)

    assert all(v == pytest.approx(mean, abs=1e-6) for v in pushed.values()), pushed
    assert len({round(v, 6) for v in plain.values()}) == 1  # plain mixing agrees too ...
    assert abs(plain["a"] - mean) > 1.0  # ... on a value biased toward the senders of many


def test_the_total_weight_is_conserved_and_an_undelivered_share_comes_back() -> None:
    node, other = PushSum(), PushSum()

    share = node.share(3)
    node.give_back(share)  # one of the three posts failed
    merged = other.merge({"w": np.array([1.0])}, [({"w": np.array([3.0])}, share)])

    assert node.weight + 2 * share == pytest.approx(1.0)
    assert other.weight == pytest.approx(1.0 + share)
    assert merged["w"][0] == pytest.approx((1.0 + 3.0 * share) / (1.0 + share))
    assert PushSum().share(0) == 0.0  # no receivers: nothing leaves


def test_an_update_without_a_weight_counts_as_much_as_this_node_and_adds_none() -> None:
    node = PushSum()

    own = {"w": np.array([0.0]), "n": np.array([7])}
    merged = node.merge(own, [({"w": np.array([2.0]), "n": np.array([3])}, 0)])

    assert merged["w"][0] == pytest.approx(1.0)
    assert merged["n"][0] == 7  # integer buffers are kept
    assert node.weight == 1.0


def test_push_sum_is_on_by_default_only_for_directed_graphs_with_fedavg() -> None:
    directed = sb.topology.Ring(bidirectional=False)
    undirected = sb.topology.Ring()

    assert is_directed(directed, IDS) and not is_directed(undirected, IDS)
    assert wants_push_sum(None, directed, FedAvg(), IDS)
    assert not wants_push_sum(None, undirected, FedAvg(), IDS)
    assert not wants_push_sum(None, directed, Median(), IDS)  # no weighted median
    assert wants_push_sum(True, undirected, FedAvg(), IDS)
    assert not wants_push_sum(False, directed, FedAvg(), IDS)


def constant_model(value: float) -> Any:
    import torch

    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


@pytest.mark.parametrize("push_sum", [None, False])
def test_nodes_on_a_directed_graph_agree_on_the_mean_with_default_options(
    arun: Run, cluster_factory: Any, torch_ready: None, push_sum: bool | None
) -> None:
    graph = sb.topology.Graph(EDGES, directed=True)
    finals: dict[str, float] = {}

    async def main() -> None:
        async with cluster_factory() as cluster:
            nodes = await cluster.start(*IDS)
            options: dict[str, Any] = {"sync": True, "round_timeout": 3.0, "topology": graph}
            if push_sum is not None:
                options["push_sum"] = push_sum
            namespaces = [
                n.namespace("X", constant_model(START[i]), **options)
                for n, i in zip(nodes, IDS, strict=True)
            ]
            for ns in namespaces:
                await ns.open()
            for ns in namespaces:
                await ns.wait_for_peers(len(IDS) - 1, timeout=3)
            # no batches: the models only mix
            await asyncio.gather(*(ns.train(40, []) for ns in namespaces))
            for i, ns in zip(IDS, namespaces, strict=True):
                finals[i] = float(ns.model.weight.item())

    arun(main, timeout=50)

    mean = float(np.mean(list(START.values())))
    spread = max(finals.values()) - min(finals.values())
    if push_sum is None:  # the default on a directed graph: push-sum
        assert all(v == pytest.approx(mean, abs=1e-3) for v in finals.values()), finals
    else:
        assert spread < 1e-3 and abs(finals["a"] - mean) > 1.0, finals
