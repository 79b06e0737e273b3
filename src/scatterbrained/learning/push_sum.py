"""Push-sum: averaging that stays unbiased on directed graphs.

On a directed graph, plain averaging of what the in-neighbours send weighs every node by
how many paths lead out of it: a node with many out-edges pulls the consensus toward its
model. Push-sum (Kempe et al. 2003; with local training, "stochastic gradient push",
Assran et al. 2019) fixes that by sending a scalar *weight* with the weights. A node holds a
weight ``w`` (1 at start) and its model ``z``; at each exchange it splits ``w`` evenly among
itself and the out-neighbours it sends to, sends ``z`` with its share, keeps one share, and
merges what came as the weighted mean ``z = (w z + sum w_k z_k) / (w + sum w_k)`` with
``w = w + sum w_k``. The total weight is conserved (a share the transport gives up on is
taken back; shares of updates superseded before they were merged are added to the fresher
one), so every node reaches the uniform average of all models, as on an undirected graph.

Local training acts on ``z`` (the de-biased model) as usual. Push-sum replaces the
aggregator's mean for merges between peers; it is used on directed topologies with the
default aggregator (a robust aggregator has no weighted form, and is kept as it is).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from ..federation.aggregation import Contribution, FedAvg, weighted_mean
from ..federation.topology import Topology

__all__ = ["MIN_WEIGHT", "PushSum", "is_directed", "wants_push_sum"]

logger = logging.getLogger(__name__)

#: A node's weight never drops below this (a node that gave everything away keeps a floor,
#: so that its model still counts and the mean stays defined).
MIN_WEIGHT = 1e-9

Arrays = Mapping[str, np.ndarray]


def is_directed(topology: Topology, members: Collection[str]) -> bool:
    """True when ``topology`` over ``members`` has an edge without its reverse."""
    edges = set(topology.edges(members))
    return any((b, a) not in edges for a, b in edges)


def wants_push_sum(
    option: bool | None, topology: Topology, aggregator: object, members: Collection[str]
) -> bool:
    """Whether exchanges use push-sum: ``option`` when set, else on directed topologies with
    the default aggregator (:class:`~scatterbrained.federation.aggregation.FedAvg`)."""
    if option is not None:
        return option
    return isinstance(aggregator, FedAvg) and is_directed(topology, members)


class PushSum:
    """One node's push-sum weight (see the module docstring)."""

    def __init__(self) -> None:
        self.weight = 1.0

    def share(self, receivers: int) -> float:
        """Split the weight among this node and ``receivers`` out-neighbours; keep one share.

        Returns:
            The share each receiver's update carries (0 when there are no receivers).
        """
        if receivers <= 0:
            return 0.0
        share = self.weight / (receivers + 1)
        self.weight = max(share, MIN_WEIGHT)
        return share

    def give_back(self, share: float) -> None:
        """Take back a share the transport did not deliver."""
        self.weight += share

    def merge(self, own: Arrays, updates: Sequence[tuple[Arrays, float]]) -> dict[str, np.ndarray]:
        """The push-sum mean of ``own`` and the ``(arrays, weight)`` updates; adds their
        weights to this node's.

        An update without a weight (0: its sender does not use push-sum, e.g. a serving
        node) counts as much as this node and adds no weight.
        """
        weights = [self.weight] + [w if w > 0 else self.weight for _, w in updates]
        others = [Contribution(arrays) for arrays, _ in updates]
        result = weighted_mean(Contribution(own), others, np.array(weights))
        self.weight += sum(w for _, w in updates if w > 0)
        return result
