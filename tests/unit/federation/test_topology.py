"""Tests of scatterbrained.federation.topology."""

from __future__ import annotations

import logging
from collections import Counter

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scatterbrained.errors import ConfigurationError
from scatterbrained.federation.topology import (
    FullyConnected,
    Graph,
    Grid,
    Neighbourhoods,
    Neighbours,
    RandomRegular,
    Ring,
    Star,
    Topology,
    check_node_ids,
    named_nodes,
    topology_from_spec,
)

pytestmark = pytest.mark.timeout(30)


def ids(n: int) -> list[str]:
    return [f"node-{i:02d}" for i in range(n)]


def out_degrees(edges: set[tuple[str, str]], members: list[str]) -> dict[str, int]:
    counts = Counter(a for a, _ in edges)
    return {m: counts.get(m, 0) for m in members}


def is_symmetric(edges: set[tuple[str, str]]) -> bool:
    return all((b, a) in edges for a, b in edges)


ALL_TOPOLOGIES: list[Topology] = [
    FullyConnected(),
    Star(),
    Star(center="node-03"),
    Ring(),
    Ring(bidirectional=False),
    Grid(cols=3),
    Neighbourhoods(hubs=["node-00", "node-01"]),
    Neighbourhoods(groups=[["node-00", "node-02", "node-04"], ["node-01", "node-03"]]),
    RandomRegular(k=3, seed=7),
    Graph([("node-00", "node-01"), ("node-01", "node-02")]),
]


@pytest.mark.parametrize("topology", ALL_TOPOLOGIES, ids=repr)
def test_neighbours_agree_with_edges_and_ignore_whether_node_is_listed(topology: Topology) -> None:
    # Prepare
    members = ids(8)
    edges = topology.edges(members)
    # Execute / Assert
    for node in members:
        with_self = topology.neighbours(node, members)
        without_self = topology.neighbours(node, [m for m in members if m != node])
        assert with_self == without_self
        assert with_self.out == frozenset(b for a, b in edges if a == node)
        assert with_self.inbound == frozenset(a for a, b in edges if b == node)
        assert node not in with_self.out | with_self.inbound


@pytest.mark.parametrize("topology", ALL_TOPOLOGIES, ids=repr)
def test_graph_does_not_depend_on_member_order(topology: Topology) -> None:
    # Prepare
    members = ids(8)
    shuffled = list(np.random.default_rng(0).permutation(members))
    # Execute / Assert
    assert topology.edges(members) == topology.edges(shuffled)
    assert topology.edges(members) == topology.edges(set(members))


@pytest.mark.parametrize("topology", ALL_TOPOLOGIES, ids=repr)
def test_edges_stay_within_members(topology: Topology) -> None:
    members = ids(5)
    edges = topology.edges(members)
    assert all(a in members and b in members and a != b for a, b in edges)
    assert topology.edges([]) == set()
    assert topology.edges(["node-00"]) == set()


def test_fully_connected_links_everyone_both_ways() -> None:
    members = ids(5)
    edges = FullyConnected().edges(members)
    assert len(edges) == 5 * 4
    assert FullyConnected().neighbours("node-00", members) == Neighbours(
        out=frozenset(members[1:]), inbound=frozenset(members[1:])
    )
    assert FullyConnected().center(members) is None


def test_star_defaults_to_smallest_id_as_centre_and_moves_when_it_leaves() -> None:
    # Prepare
    star = Star()
    members = ids(4)
    # Execute
    edges = star.edges(members)
    later = star.edges(members[1:])
    # Assert
    assert star.center(members) == "node-00"
    assert edges == {e for m in members[1:] for e in (("node-00", m), (m, "node-00"))}
    assert star.center(members[1:]) == "node-01"
    assert ("node-01", "node-02") in later
    assert star.neighbours("node-02", members) == Neighbours(
        out=frozenset({"node-00"}), inbound=frozenset({"node-00"})
    )


def test_star_with_absent_named_centre_isolates_clients() -> None:
    star = Star(center="hub")
    assert star.center(ids(3)) == "hub"
    assert star.edges(ids(3)) == set()
    assert star.neighbours("node-01", ids(3)) == Neighbours(frozenset(), frozenset())
    assert len(star.edges([*ids(3), "hub"])) == 6
    assert star.neighbours("hub", ids(3)).out == frozenset(ids(3))


def test_ring_degrees_and_direction() -> None:
    members = ids(6)
    both = Ring().edges(members)
    one_way = Ring(bidirectional=False).edges(members)
    assert set(out_degrees(both, members).values()) == {2}
    assert is_symmetric(both)
    assert set(out_degrees(one_way, members).values()) == {1}
    assert ("node-05", "node-00") in one_way and ("node-00", "node-05") not in one_way
    assert Ring().edges(ids(2)) == {("node-00", "node-01"), ("node-01", "node-00")}


def test_ring_heals_when_a_member_leaves() -> None:
    members = ids(5)
    remaining = [m for m in members if m != "node-02"]
    nb = Ring().neighbours("node-01", remaining)
    assert nb.out == frozenset({"node-00", "node-03"})


def test_grid_uses_row_major_four_neighbourhood() -> None:
    # 0 1 2
    # 3 4 5
    # 6
    members = ids(7)
    grid = Grid(cols=3)
    edges = grid.edges(members)
    assert grid.neighbours("node-04", members).out == frozenset({"node-01", "node-03", "node-05"})
    assert grid.neighbours("node-02", members).out == frozenset({"node-01", "node-05"})
    assert grid.neighbours("node-06", members).out == frozenset({"node-03"})
    assert ("node-02", "node-03") not in edges  # no wrap-around between rows
    assert is_symmetric(edges)
    assert Grid(cols=1).edges(ids(3)) == Ring().edges(ids(3)) - {
        ("node-00", "node-02"),
        ("node-02", "node-00"),
    }


def test_neighbourhoods_with_hubs_only_round_robin_and_hub_mesh() -> None:
    # Prepare
    members = ["a", "b", "e1", "e2", "e3", "e4"]
    topology = Neighbourhoods(hubs=["a", "b"])
    # Execute
    edges = topology.edges(members)
    # Assert
    assert topology.neighbours("a", members).out == frozenset({"b", "e1", "e3"})
    assert topology.neighbours("b", members).out == frozenset({"a", "e2", "e4"})
    assert topology.neighbours("e3", members) == Neighbours(frozenset({"a"}), frozenset({"a"}))
    assert is_symmetric(edges)
    # a hub leaves: its edge nodes fail over to the remaining hub
    assert topology.neighbours("b", ["b", "e1", "e2"]).out == frozenset({"e1", "e2"})


def test_neighbourhoods_with_groups_isolates_a_group_without_its_hub() -> None:
    topology = Neighbourhoods(hubs=["h1", "h2"], groups=[["x", "y"], ["z"]])
    members = ["h1", "h2", "x", "y", "z", "loose"]
    assert topology.neighbours("h1", members).out == frozenset({"h2", "x", "y", "loose"})
    assert topology.neighbours("z", members).out == frozenset({"h2"})
    assert topology.neighbours("x", ["h2", "x", "y"]).out == frozenset()
    assert topology.neighbours("x", members).out == frozenset({"h1"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "hubs, groups"),
        ({"hubs": ["a", "a"]}, "distinct"),
        ({"hubs": ["a"], "groups": [["x"], ["y"]]}, "one hub per group"),
        ({"groups": [["a", "x"], ["b", "x"]]}, "two groups"),
        ({"groups": [[]]}, "non-empty"),
    ],
)
def test_neighbourhoods_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Neighbourhoods(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 40), k=st.integers(1, 8), seed=st.integers(0, 5))
def test_random_regular_degrees(n: int, k: int, seed: int) -> None:
    # Prepare
    members = ids(n)
    # Execute
    edges = RandomRegular(k=k, seed=seed).edges(members)
    degrees = sorted(out_degrees(edges, members).values())
    # Assert
    assert is_symmetric(edges)
    expected_k = min(k, n - 1)
    if (n * expected_k) % 2 == 1:
        assert degrees == [expected_k - 1] + [expected_k] * (n - 1)
    else:
        assert degrees == [expected_k] * n


def test_random_regular_is_deterministic_and_redraws_by_epoch() -> None:
    members = ids(20)
    first = RandomRegular(k=4, seed=3, redraw_every=5)
    second = RandomRegular(k=4, seed=3, redraw_every=5)
    assert first.edges(members, epoch=0) == second.edges(members, epoch=4)
    assert first.edges(members, epoch=0) != first.edges(members, epoch=5)
    assert first.edges(members, epoch=0) != RandomRegular(k=4, seed=4).edges(members)
    assert RandomRegular(k=4, seed=3).edges(members, 0) == RandomRegular(k=4, seed=3).edges(
        members, 99
    )


def test_random_regular_with_k_at_least_n_is_complete() -> None:
    assert RandomRegular(k=10).edges(ids(4)) == FullyConnected().edges(ids(4))


def test_graph_undirected_directed_and_membership() -> None:
    undirected = Graph([("a", "b"), ("b", "c"), ("c", "c")])
    directed = Graph([("a", "b"), ("b", "c")], directed=True)
    assert undirected.edges(["a", "b", "c"]) == {
        ("a", "b"),
        ("b", "a"),
        ("b", "c"),
        ("c", "b"),
    }
    assert undirected.edges(["a", "c"]) == set()
    assert directed.neighbours("b", ["a", "b", "c"]) == Neighbours(
        out=frozenset({"c"}), inbound=frozenset({"a"})
    )


def test_graph_from_networkx_and_adjacency() -> None:
    g = nx.path_graph(3)
    dg = nx.DiGraph([(0, 1)])
    matrix = [[1, 1, 0], [0, 1, 1], [0, 0, 1]]  # diagonal ignored, not symmetric -> directed
    assert Graph.from_networkx(g).edges(["0", "1", "2"]) == {
        ("0", "1"),
        ("1", "0"),
        ("1", "2"),
        ("2", "1"),
    }
    assert Graph.from_networkx(dg).edges(["0", "1"]) == {("0", "1")}
    assert Graph.from_adjacency(matrix, ["a", "b", "c"]).edges(["a", "b", "c"]) == {
        ("a", "b"),
        ("b", "c"),
    }
    assert len(Graph.from_adjacency(np.ones((3, 3)), ["a", "b", "c"]).edges(["a", "b", "c"])) == 6


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Grid(cols=0), "cols"),
        (lambda: RandomRegular(k=0), "k"),
        (lambda: RandomRegular(k=2, redraw_every=0), "redraw_every"),
        (lambda: Star(center=""), "center"),
        (lambda: Graph([("a", "")]), "pairs"),
        (lambda: Graph.from_adjacency(np.ones((2, 3)), ["a", "b"]), "square"),
        (lambda: Graph.from_adjacency(np.ones((2, 2)), ["a", "a"]), "distinct"),
    ],
)
def test_constructors_validate(build: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("fully-connected", FullyConnected),
        ("Fully_Connected", FullyConnected),
        ("ring", Ring),
        ("star", Star),
        ("grid:cols=4", Grid),
        ("random-regular:k=4,seed=1", RandomRegular),
        ("neighbourhoods:hubs=a|b", Neighbourhoods),
        ("graph:edges=node-1~node-2|b>c,directed=true", Graph),
        ({"name": "grid", "cols": 2}, Grid),
    ],
)
def test_topology_from_spec_builds_the_named_class(spec: object, expected: type) -> None:
    assert isinstance(topology_from_spec(spec), expected)  # type: ignore[arg-type]


def test_topology_from_spec_passes_parameters() -> None:
    star = topology_from_spec("star:center=node-0")
    ring = topology_from_spec("ring:bidirectional=false")
    rr = topology_from_spec("random-regular:k=4,seed=1,redraw_every=3")
    graph = topology_from_spec("graph:edges=a>b,directed=true")
    hubs = topology_from_spec("neighbourhoods:groups=h1+x|h2+y")
    hyphens = topology_from_spec("graph:edges=node-1~node-2|node-2->node-3")
    assert star.center(["a"]) == "node-0"
    assert ring.edges(["a", "b", "c"]) == Ring(bidirectional=False).edges(["a", "b", "c"])
    assert isinstance(rr, RandomRegular) and (rr.k, rr.seed, rr.redraw_every) == (4, 1, 3)
    assert graph.edges(["a", "b"]) == {("a", "b")}
    assert ("node-3", "node-2") in hyphens.edges(["node-1", "node-2", "node-3"])
    assert len(hyphens.edges(["node-1", "node-2", "node-3"])) == 4
    assert hubs.neighbours("x", ["h1", "h2", "x", "y"]).out == frozenset({"h1"})
    assert topology_from_spec(star) is star


def test_topology_from_spec_unknown_name_suggests_closest() -> None:
    with pytest.raises(ConfigurationError, match=r"did you mean 'ring'.*fully-connected"):
        topology_from_spec("rnig")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("grid", "needs parameter 'cols'"),
        ("grid:cols=x", "integer"),
        ("grid:cols=3,rows=2", "rows"),
        ("ring:bidirectional=maybe", "true or false"),
        ("grid:cols", "key=value"),
        ({"cols": 3}, "name"),
        ("graph:edges=a-b", "a>b"),
    ],
)
def test_topology_from_spec_rejects_bad_parameters(spec: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        topology_from_spec(spec)  # type: ignore[arg-type]


def test_random_regular_is_not_just_a_relabelled_circulant() -> None:
    # Prepare
    members = ids(12)
    circulant = nx.circulant_graph(12, [1, 2])
    # Execute
    draws = [nx.Graph(list(RandomRegular(k=4, seed=s).edges(members))) for s in range(5)]
    # Assert
    assert any(not nx.is_isomorphic(g, circulant) for g in draws)
    assert all(nx.is_connected(g) for g in draws)


# ------------------------------------------------------------- misspelt parameters


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "grid:colums=3",
            "topology 'grid' does not take parameter(s) colums (did you mean 'cols'?); "
            "valid parameters: cols",
        ),
        (
            "random-regular:kk=4,seed=1",
            "topology 'random-regular' does not take parameter(s) kk (did you mean 'k'?); "
            "valid parameters: k, seed, redraw_every",
        ),
        ({"name": "star", "centre": "a"}, "centre (did you mean 'center'?)"),
        ("graph:edgs=a~b", "edgs (did you mean 'edges'?)"),
        ("graph", "topology 'graph' needs parameter 'edges' with at least one edge"),
        ("graph:edges=", "needs parameter 'edges' with at least one edge"),
    ],
)
def test_a_misspelt_parameter_is_named_with_the_valid_ones(spec: object, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        topology_from_spec(spec)  # type: ignore[arg-type]
    assert message in str(caught.value)


# ------------------------------------------------------------- node ids a topology names


def test_named_nodes_of_each_kind() -> None:
    assert named_nodes(Graph([("a", "b"), ("b", "c")])) == {"a", "b", "c"}
    assert named_nodes(Star(center="hub")) == {"hub"}
    assert named_nodes(Star()) == frozenset()
    assert named_nodes(Neighbourhoods(hubs=["h1"], groups=[["h1", "x"]])) == {"h1", "x"}
    assert named_nodes(Ring()) == frozenset() and named_nodes(Grid(cols=2)) == frozenset()


def test_check_node_ids_names_unknown_and_valid_ids() -> None:
    simulated = [f"n{i:03d}" for i in range(4)]
    check_node_ids(Graph([("n000", "n003")]), simulated)
    check_node_ids(Ring(), simulated)

    with pytest.raises(ConfigurationError) as caught:
        check_node_ids(topology_from_spec("graph:edges=a~b|n000~n001"), simulated)

    assert str(caught.value) == (
        "topology Graph names node id(s) a, b that no node has; valid node ids: "
        "n000, n001, n002, n003; use those ids (e.g. graph:edges=n000~n001)"
    )


def test_check_node_ids_shortens_a_long_list_of_valid_ids() -> None:
    simulated = [f"n{i:03d}" for i in range(64)]

    with pytest.raises(ConfigurationError, match=r"n007, \.\.\., n063 \(64 ids\).*star:center"):
        check_node_ids(Star(center="server"), simulated, name="topology = 'star:center=server'")


def test_a_graph_warns_once_about_a_node_no_edge_names(caplog: pytest.LogCaptureFixture) -> None:
    graph = Graph([("a", "b")])
    caplog.set_level(logging.WARNING, logger="scatterbrained.federation.topology")

    for _ in range(3):
        alone = graph.neighbours("c", ["a", "b", "c"])
    in_graph = graph.neighbours("a", ["a", "b", "c"])

    assert alone == Neighbours(frozenset(), frozenset())
    assert in_graph.out == {"b"}
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "Graph topology has no edge naming node 'c' (its nodes: a, b): this node exchanges "
        "with nobody and trains alone; name it in an edge or give the node one of those ids"
    ]
