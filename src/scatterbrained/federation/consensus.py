"""How many mixing-only exchanges bring a sparse graph's nodes to (near) consensus.

Decentralized training on a sparse graph (a ring, a grid) ends with every node holding a
different model: one exchange per epoch mixes only with the neighbours, and local training
on label-skewed data pulls the models apart again. The nodes' mean accuracy is then well
below that of the average of their models (``benchmarks/ring_processes.py``: 8 processes on
a ``Ring()``, per-node mean 0.942, average model 0.964, centralized 0.975).

A few exchanges without training at the end close that gap: each one multiplies the
nodes' disagreement by the second-largest eigenvalue modulus ``lambda`` of the mixing
matrix. :func:`consensus_steps` computes ``lambda`` for the graph a topology draws over the
members, with every node averaging itself and its in-neighbours uniformly (the weights of
gossip on a regular graph and of push-sum), and returns the number of mixing steps that
shrink the disagreement to ``tolerance``: ``ceil(log(tolerance) / log(lambda))``. A
complete graph needs 1, an 8-node ring 19, an 8-node directed ring 50 (at the default
tolerance of 2 %). The learner subtracts the exchange its last epoch already made and caps
the rest (see :mod:`scatterbrained.learning.learner`).
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np

from .topology import Topology

__all__ = ["CONSENSUS_TOLERANCE", "MAX_EXACT_MEMBERS", "consensus_steps", "mixing_matrix"]

#: The disagreement left after the consensus steps, relative to before them.
CONSENSUS_TOLERANCE = 0.02
#: Past this many members the eigenvalues are not computed (``O(n**3)``): the graph counts
#: as slow-mixing and the caller's cap applies.
MAX_EXACT_MEMBERS = 512


def mixing_matrix(topology: Topology, members: Collection[str], epoch: int = 0) -> np.ndarray:
    """The row-stochastic matrix of uniform averaging over ``topology``'s graph.

    Row ``i`` (members sorted by id) gives node ``i`` and each of its in-neighbours the
    weight ``1 / (1 + in-degree)``.
    """
    ids = sorted(members)
    index = {node: i for i, node in enumerate(ids)}
    matrix = np.eye(len(ids))
    for sender, receiver in topology.edges(ids, epoch):
        if sender != receiver and sender in index and receiver in index:
            matrix[index[receiver], index[sender]] = 1.0
    matrix /= matrix.sum(axis=1, keepdims=True)
    return matrix


def consensus_steps(
    topology: Topology,
    members: Collection[str],
    epoch: int = 0,
    tolerance: float = CONSENSUS_TOLERANCE,
    limit: int = 1 << 30,
) -> int:
    """Mixing steps after which the members' disagreement is ``tolerance`` of what it was.

    Args:
        topology: the namespace's topology.
        members: the members that take part (this node included).
        epoch: the round the topology draws its graph for.
        tolerance: the disagreement left, relative (0 < tolerance < 1).
        limit: the most steps returned (a disconnected or very slowly mixing graph, or one
            over :data:`MAX_EXACT_MEMBERS` members, gets ``limit``).

    Returns:
        0 for fewer than two members, else between 1 and ``limit``.

    Raises:
        ValueError: ``tolerance`` is not between 0 and 1.
    """
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance must be between 0 and 1, got {tolerance!r}")
    if len(members) < 2:
        return 0
    if len(members) > MAX_EXACT_MEMBERS:
        return limit
    moduli = np.sort(np.abs(np.linalg.eigvals(mixing_matrix(topology, members, epoch))))
    second = float(moduli[-2])  # the largest is 1 (row-stochastic)
    if second <= tolerance:
        return min(1, limit)
    if second >= 1.0 - 1e-9:  # disconnected: no number of steps reaches consensus
        return limit
    return min(limit, math.ceil(math.log(tolerance) / math.log(second)))
