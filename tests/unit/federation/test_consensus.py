"""How many mixing-only steps a graph needs: the spectral gap of uniform averaging."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scatterbrained.federation.consensus import (
    CONSENSUS_TOLERANCE,
    MAX_EXACT_MEMBERS,
    consensus_steps,
    mixing_matrix,
)
from scatterbrained.federation.topology import FullyConnected, Graph, Ring

EIGHT = [f"n{i}" for i in range(8)]


def steps_for(second: float, tolerance: float = CONSENSUS_TOLERANCE) -> int:
    return math.ceil(math.log(tolerance) / math.log(second))


def test_the_mixing_matrix_averages_each_node_with_its_in_neighbours() -> None:
    matrix = mixing_matrix(Ring(), ["c", "a", "b", "d"])

    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    # a (row 0) averages itself and its ring neighbours b and d; not c.
    np.testing.assert_allclose(matrix[0], [1 / 3, 1 / 3, 0.0, 1 / 3])


def test_a_complete_graph_mixes_in_one_step() -> None:
    assert consensus_steps(FullyConnected(), EIGHT) == 1


def test_a_ring_needs_the_steps_its_spectral_gap_asks_for() -> None:
    second = 1 / 3 + 2 / 3 * math.cos(2 * math.pi / 8)  # uniform weights 1/3 on 8 nodes

    assert consensus_steps(Ring(), EIGHT) == steps_for(second) == 19


def test_a_directed_ring_mixes_slower_than_an_undirected_one() -> None:
    second = math.cos(math.pi / 8)  # |(1 + e^{2 pi i / 8}) / 2|

    assert consensus_steps(Ring(bidirectional=False), EIGHT) == steps_for(second) == 50


def test_limit_caps_the_steps() -> None:
    assert consensus_steps(Ring(), EIGHT, limit=5) == 5


def test_a_lone_node_needs_no_step() -> None:
    assert consensus_steps(Ring(), ["a"]) == 0
    assert consensus_steps(Ring(), []) == 0


def test_a_disconnected_graph_gets_the_limit() -> None:
    split = Graph([("a", "b"), ("c", "d")])

    assert consensus_steps(split, ["a", "b", "c", "d"], limit=7) == 7


def test_too_many_members_get_the_limit_without_computing() -> None:
    members = [f"m{i:04d}" for i in range(MAX_EXACT_MEMBERS + 1)]

    assert consensus_steps(FullyConnected(), members, limit=3) == 3


@pytest.mark.parametrize("tolerance", [0.0, 1.0, -0.5, 2.0])
def test_tolerance_must_be_between_zero_and_one(tolerance: float) -> None:
    with pytest.raises(ValueError, match="tolerance"):
        consensus_steps(Ring(), EIGHT, tolerance=tolerance)
