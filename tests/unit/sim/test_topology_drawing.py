"""Tests of scatterbrained.sim.topology_drawing: layout and edge handling of topology plots."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from matplotlib.figure import Figure

from scatterbrained.errors import ConfigurationError
from scatterbrained.sim.topology_drawing import checked_edges, draw_edges, grid_columns, layout


def _graph(nodes: list[str], edges: list[tuple[str, str]]) -> nx.Graph:
    graph = nx.Graph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    return graph


def test_star_hub_goes_in_the_middle() -> None:
    # Prepare
    leaves = [f"l{i}" for i in range(6)]
    graph = _graph(["hub", *leaves], [("hub", leaf) for leaf in leaves])
    # Execute
    pos = layout(graph, seed=0)
    # Assert
    assert np.hypot(*pos["hub"]) < 1e-9
    radii = [float(np.hypot(*pos[leaf])) for leaf in leaves]
    assert min(radii) > 0.3 and max(radii) == pytest.approx(min(radii))


def test_small_graphs_are_circular_and_large_ones_seeded() -> None:
    # Prepare
    ring = [f"r{i}" for i in range(10)]
    small = _graph(ring, [(ring[i], ring[(i + 1) % 10]) for i in range(10)])
    many = [f"m{i}" for i in range(40)]
    large = _graph(many, [(many[i], many[i + 1]) for i in range(39)])
    # Execute
    circle = layout(small, seed=0)
    first, again, other = layout(large, 3), layout(large, 3), layout(large, 4)
    # Assert
    assert all(np.hypot(*xy) == pytest.approx(1.0) for xy in circle.values())
    assert first == again and first != other


def test_checked_edges_drops_self_loops_and_rejects_strangers() -> None:
    assert checked_edges(["a", "b"], [("a", "b"), ("a", "a")]) == {("a", "b")}
    with pytest.raises(ConfigurationError, match="pass every endpoint in nodes"):
        checked_edges(["a"], [("a", "b")])


def test_draw_edges_uses_arrows_only_for_one_way_edges() -> None:
    # Prepare
    pos = {"a": (0.0, 0.0), "b": (1.0, 0.0), "c": (0.0, 1.0)}
    ax = Figure().add_subplot()
    symmetric = {("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")}
    # Execute
    undirected = draw_edges(ax, pos, symmetric, dead={"c"}, node_size=100.0)
    directed = draw_edges(ax, pos, symmetric | {("a", "c")}, dead=(), node_size=100.0)
    # Assert
    assert undirected == (False, 2)
    assert directed == (True, 3)  # two two-way pairs as lines, one arrow
    assert [patch.get_gid() for patch in ax.patches] == ["a->c"]


def test_grid_columns_finds_grids_only() -> None:
    # Prepare: 10 nodes row-major in 4 columns (the last row partial), as Grid builds them
    nodes = [f"g{i}" for i in range(10)]
    pairs = [(nodes[i], nodes[i + 1]) for i in range(9) if (i + 1) % 4]
    pairs += [(nodes[i], nodes[i + 4]) for i in range(6)]
    ring = [(nodes[i], nodes[(i + 1) % 10]) for i in range(10)]
    # Execute
    found, not_grid = grid_columns(_graph(nodes, pairs)), grid_columns(_graph(nodes, ring))
    pos = layout(_graph(nodes, pairs), seed=0)
    # Assert
    assert (found, not_grid) == (4, None)
    assert pos["g0"][1] == pos["g3"][1] > pos["g4"][1] > pos["g8"][1]
    assert pos["g0"][0] == pos["g4"][0] == pos["g8"][0] < pos["g1"][0]


def test_edges_over_a_third_node_are_bent_around_it() -> None:
    # Prepare: a, b, c in a row: a-c would run straight over b
    pos = {"a": (0.0, 0.0), "b": (1.0, 0.0), "c": (2.0, 0.0), "d": (0.0, 1.0)}
    ax = Figure().add_subplot()
    edges = {("a", "c"), ("c", "a"), ("a", "b"), ("b", "a"), ("d", "c")}
    # Execute
    drawn = draw_edges(ax, pos, edges, dead=(), node_size=100.0)
    # Assert
    assert drawn == (True, 3)
    assert sorted(str(patch.get_gid()) for patch in ax.patches) == ["a--c", "d->c"]
    assert len(ax.collections) == 1  # a-b, straight, in one LineCollection
