"""Compute-graph topologies: deterministic rules over the live membership.

A topology never stores the membership. Given the node ids that are present now (and the
epoch, for topologies that change over time) it derives the directed graph; every node sorts
the ids, so every node derives the same graph from the same membership. An edge ``(a, b)``
means ``a`` sends its parameters to ``b``. There are never self-loops.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigurationError
from ._regular import random_regular_pairs
from ._spec import SpecParams, build_from_spec

__all__ = [
    "FullyConnected",
    "Graph",
    "Grid",
    "Neighbourhoods",
    "Neighbours",
    "RandomRegular",
    "Ring",
    "Star",
    "Topology",
    "check_node_ids",
    "named_nodes",
    "topology_from_spec",
]

logger = logging.getLogger(__name__)

Edge = tuple[str, str]

#: Node ids a :class:`Graph` warns about (once each) before it stops warning.
_MAX_WARNED_NODES = 64


@dataclass(frozen=True)
class Neighbours:
    """The peers one node exchanges parameters with.

    Attributes:
        out: peers this node sends to.
        inbound: peers this node receives from (merges).
    """

    out: frozenset[str]
    inbound: frozenset[str]


@runtime_checkable
class Topology(Protocol):
    """A rule that turns the live membership into a directed compute graph."""

    def neighbours(self, node: str, members: Collection[str], epoch: int = 0) -> Neighbours:
        """Return ``node``'s neighbours; ``members`` may or may not contain ``node``."""
        ...

    def edges(self, members: Collection[str], epoch: int = 0) -> set[Edge]:
        """Return the directed edges ``(sender, receiver)`` over ``members``."""
        ...

    def center(self, members: Collection[str]) -> str | None:
        """Return the aggregation hub for centralized rounds, or ``None`` if decentralized."""
        ...


def _undirected(pairs: Iterable[Edge]) -> set[Edge]:
    return {e for a, b in pairs if a != b for e in ((a, b), (b, a))}


class _EdgeRule:
    """Base class: ``neighbours`` and ``center`` derived from :meth:`edges`."""

    def edges(self, members: Collection[str], epoch: int = 0) -> set[Edge]:
        raise NotImplementedError

    def neighbours(self, node: str, members: Collection[str], epoch: int = 0) -> Neighbours:
        """Return ``node``'s neighbours in the graph over ``members`` plus ``node`` itself."""
        edges = self.edges(set(members) | {node}, epoch)
        out = frozenset(b for a, b in edges if a == node)
        inbound = frozenset(a for a, b in edges if b == node)
        return Neighbours(out=out, inbound=inbound)

    def center(self, members: Collection[str]) -> str | None:
        """Return ``None``: decentralized topologies have no hub."""
        return None

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class FullyConnected(_EdgeRule):
    """Every member sends to and receives from every other member."""

    def edges(self, members: Collection[str], epoch: int = 0) -> set[Edge]:
        """Return all ordered pairs of distinct members."""
        return {(a, b) for a in members for b in members if a != b}

    def neighbours(self, node: str, members: Collection[str], epoch: int = 0) -> Neighbours:
        """Return every other member, both ways (O(n), without building the edge set)."""
        others = frozenset(members) - {node}
        return Neighbours(out=others, inbound=others)


class Star(_EdgeRule):
    """Classic centralized FL: every client exchanges with one centre, clients not with each other.

    Args:
        center: the hub's node id; ``None`` picks the smallest member id (so the hub moves when
            that node leaves). When a named centre is not a member, there are no edges at all:
            clients stay isolated (and keep training alone) until the centre is back.
    """

    def __init__(self, center: str | None = None) -> None:
        if center is not None and not (isinstance(center, str) and center):
            raise ConfigurationError(f"Star center must be a non-empty node id, got {center!r}")
        self.hub = center

    def center(self, members: Collection[str]) -> str | None:
        """Return the configured hub (even while absent), else the smallest member id."""
        if self.hub is not None:
            return self.hub
        return min(members, default=None)

    def edges(self, members: Collection[str], epoch: int = 0) -> set[Edge]:
        """Return hub <-> client edges; none when the hub is not a member."""
        hub = self.center(members)
        if hub is None or hub not in members:
            return set()
        return _undirected((hub, m) for m in members)


class Ring(_EdgeRule):
    """Members in sorted order, each linked to the next (and the last to the first).

    Args:
        bidirectional: also link each member to the previous one (default ``True``); when
            ``False`` each member sends only to its successor.
    """

    def __init__(self, bidirectional: bool = True) -> None:
        self.bidirectional = bool(bidirectional)

    def edges(self, members: Collection[str], epoch: int = 0) -> set[Edge]:
        """Return the ring's edges over the sorted members (none with fewer than two)."""
        ids = sorted(set(members))
        pairs = {(ids[i], ids[(i + 1) % len(ids)]) for i in range(len(ids))} - {(a, a) for a in ids}
        return _undirected(pairs) if self.bidirectional else pairs


class Grid(_EdgeRule):
    """Sorted members laid out row-major in ``cols`` columns, linked to their 4-neighbourhood.

    Args:
        cols: number of columns (>= 1); the last row may be partial.

    Raises:
        ConfigurationError: ``cols`` < 1.
    """

    def __init__(self, cols: int) -> None:
        if isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
            raise ConfigurationError(f"Grid cols must be an integer >= 1, got {cols!r}")
        self.cols = cols

    def edges(self, members: Collection[str], epoch: int = 0) -> set[Edge]:
        """Return undirected right/down neighbour edges of the grid."""
        ids = sorted(set(members))
        pairs: list[Edge] = []
        for i, node in enumerate(ids):
            if (i + 1) % self.cols != 0 and i + 1 < len(ids):
                pairs.append((node, ids[i + 1]))
            if i + self.cols < len(ids):
                pairs.append((node, ids[i + self.cols]))
        return _undirected(pairs)


class Neighbourhoods(_EdgeRule):
    """Many edge nodes around a few strong hubs; hubs are fully connected among themselves.

    With ``groups`` each group is a star around its hub: ``hubs[j]`` when ``hubs`` is given
    (``len(hubs) == len(groups)``), else the group's first id. A group whose hub is absent is
    isolated until it returns. Members in no group (and every non-hub when only ``hubs`` is
    given) attach to live hub number ``position % live_hubs``, where ``position`` is their
    index among such members in sorted order and live hubs keep the order of ``hubs``.

    Raises:
        ConfigurationError: neither hubs nor groups, empty or duplicate ids, a node in two
            groups, or ``len(hubs) != len(groups)``.
    """

    def __init__(
        self,
        hubs: Sequence[str] | None = None,
        groups: Sequence[Sequence[str]] | None = None,
    ) -> None:
        if not hubs and not groups:
            raise ConfigurationError("Neighbourhoods needs hubs, groups or both (none given)")
        group_lists = [list(g) for g in groups or ()]
        if any(not g for g in group_lists):
            raise ConfigurationError(f"Neighbourhoods groups must be non-empty, got {groups!r}")
        if hubs and groups and len(hubs) != len(group_lists):
            raise ConfigurationError(
                f"Neighbourhoods needs one hub per group: {len(hubs)} hubs, {len(group_lists)} "
                "groups; pass as many hubs as groups, or only groups (first id is the hub)"
            )
        self.hubs = list(hubs) if hubs else [g[0] for g in group_lists]
        self.groups = group_lists
        if len(set(self.hubs)) != len(self.hubs):
            raise ConfigurationError(f"Neighbourhoods hubs must be distinct, got {self.hubs!r}")
        self._hub_of: dict[str, str] = {}
        for hub, group in zip(self.hubs, group_lists, strict=False):  # no groups: no pairs
            for node in group:
                if self._hub_of.setdefault(node, hub) != hub:
                    raise ConfigurationError(f"Neighbourhoods: node {node!r} is in two groups")

    def edges(self, members: Collection[str], epoch: int = 0) -> set[Edge]:
        """Return hub-hub edges plus each edge node <-> its hub."""
        present = set(members)
        live_hubs = [h for h in self.hubs if h in present]
        pairs = [(a, b) for a in live_hubs for b in live_hubs]
        loose = sorted(m for m in present - set(self.hubs) if m not in self._hub_of)
        for node in sorted(present - set(self.hubs) - set(loose)):
            if self._hub_of[node] in present:
                pairs.append((self._hub_of[node], node))
        if live_hubs:
            pairs += [(live_hubs[i % len(live_hubs)], m) for i, m in enumerate(loose)]
        return _undirected(pairs)


class RandomRegular(_EdgeRule):
    """A random k-regular undirected graph over the sorted members, the same on every node.

    The graph depends only on the membership, ``seed`` and ``epoch // redraw_every`` (always
    draw 0 when ``redraw_every`` is ``None``). It starts from a circulant k-regular graph and
    is randomised by ``10 * edges`` degree-preserving double-edge swaps (``random.Random``,
    seeded by text, so it is identical on every platform and Python version).

    Degrading: with ``k >= n`` members the graph is complete (degree ``n - 1``); when
    ``n * k`` is odd one member (chosen by the seed) has degree ``k - 1``.

    Raises:
        ConfigurationError: ``k < 1`` or ``redraw_every < 1``.
    """

    def __init__(self, k: int, seed: int = 0, redraw_every: int | None = None) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigurationError(f"RandomRegular k (degree) must be an integer >= 1, got {k!r}")
        if redraw_every is not None and (not isinstance(redraw_every, int) or redraw_every < 1):
            raise ConfigurationError(
                f"RandomRegular redraw_every must be None or an integer >= 1, got {redraw_every!r}"
            )
        self.k = k
        self.seed = int(seed)
        self.redraw_every = redraw_every
        self._cache: dict[tuple[frozenset[str], int], frozenset[Edge]] = {}

    def edges(self, members: Collection[str], epoch: int = 0) -> set[Edge]:
        """Return the (cached) random regular graph for this membership and draw."""
        draw = 0 if self.redraw_every is None else epoch // self.redraw_every
        key = (frozenset(members), draw)
        if key not in self._cache:
            if len(self._cache) >= 8:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = frozenset(self._draw(sorted(key[0]), draw))
        return set(self._cache[key])

    def _draw(self, ids: list[str], draw: int) -> set[Edge]:
        n = len(ids)
        k = min(self.k, n - 1)
        if k <= 0:
            return set()
        rng = random.Random(f"scatterbrained-random-regular:{self.seed}:{draw}:{n}")
        labels = ids[:]
        rng.shuffle(labels)
        return _undirected((labels[a], labels[b]) for a, b in random_regular_pairs(n, k, rng))


class Graph(_EdgeRule):
    """An explicit graph; edges touching non-members are ignored, self-loops dropped.

    Args:
        edges: ``(a, b)`` pairs of node ids.
        directed: when ``False`` (default) every edge works both ways; when ``True``,
            ``(a, b)`` means only ``a`` sends to ``b``.

    Raises:
        ConfigurationError: an edge is not a pair of non-empty strings.
    """

    def __init__(self, edges: Iterable[tuple[str, str]], directed: bool = False) -> None:
        pairs: set[Edge] = set()
        for edge in edges:
            if len(edge) != 2 or not all(isinstance(x, str) and x for x in edge):
                raise ConfigurationError(f"Graph edges must be (id, id) string pairs, got {edge!r}")
            if edge[0] != edge[1]:
                pairs.add((edge[0], edge[1]))
        self.directed = bool(directed)
        self._edges = frozenset(pairs if directed else _undirected(pairs))
        self._nodes = frozenset(x for edge in self._edges for x in edge)
        self._warned: set[str] = set()

    @property
    def nodes(self) -> frozenset[str]:
        """Every node id that appears in an edge."""
        return self._nodes

    @classmethod
    def from_networkx(cls, graph: Any) -> Graph:
        """Build from a ``networkx`` graph (directed iff it is directed; ids via ``str``)."""
        return cls(((str(a), str(b)) for a, b in graph.edges()), directed=graph.is_directed())

    @classmethod
    def from_adjacency(cls, matrix: Any, ids: Sequence[str], directed: bool | None = None) -> Graph:
        """Build from a square matrix: a nonzero ``matrix[i][j]`` is an edge ``ids[i] -> ids[j]``.

        The diagonal is ignored (mixing matrices have one). ``directed=None`` means directed
        unless the matrix is symmetric.

        Raises:
            ConfigurationError: the matrix is not square, or ``ids`` is not a list of as many
                distinct ids as it has rows.
        """
        adjacency = np.asarray(matrix)
        if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
            raise ConfigurationError(f"adjacency must be a square matrix, got {adjacency.shape}")
        if len(ids) != adjacency.shape[0] or len(set(ids)) != len(ids):
            raise ConfigurationError(
                f"adjacency of size {adjacency.shape[0]} needs as many distinct ids, got {ids!r}"
            )
        nonzero = adjacency != 0
        if directed is None:
            directed = not bool(np.array_equal(nonzero, nonzero.T))
        rows, cols = np.nonzero(nonzero)
        return cls(
            ((ids[i], ids[j]) for i, j in zip(rows.tolist(), cols.tolist(), strict=True)),
            directed=directed,
        )

    def edges(self, members: Collection[str], epoch: int = 0) -> set[Edge]:
        """Return the configured edges whose both ends are members."""
        present = set(members)
        return {(a, b) for a, b in self._edges if a in present and b in present}

    def neighbours(self, node: str, members: Collection[str], epoch: int = 0) -> Neighbours:
        """Return ``node``'s neighbours; warn once when no edge names ``node`` at all.

        Such a node exchanges with nobody and trains alone, which is almost always a typo in
        the edges or in the node's id.
        """
        unseen = node not in self._nodes and node not in self._warned
        if unseen and len(self._warned) < _MAX_WARNED_NODES:
            self._warned.add(node)
            logger.warning(
                "Graph topology has no edge naming node %r (its nodes: %s): this node "
                "exchanges with nobody and trains alone; name it in an edge or give the "
                "node one of those ids",
                node,
                _show_ids(self._nodes) or "none",
            )
        return super().neighbours(node, members, epoch)

    def __repr__(self) -> str:
        return f"Graph({sorted(self._edges)!r}, directed={self.directed})"


def _show_ids(ids: Collection[str], limit: int = 10) -> str:
    ordered = sorted(ids)
    if len(ordered) <= limit:
        return ", ".join(ordered)
    return f"{', '.join(ordered[: limit - 2])}, ..., {ordered[-1]} ({len(ordered)} ids)"


def named_nodes(topology: Topology) -> frozenset[str]:
    """Return the node ids ``topology`` names explicitly.

    A :class:`Graph`'s nodes, a :class:`Star`'s configured centre, the hubs and group members
    of :class:`Neighbourhoods`; empty for rules that name no node (ring, grid, ...).
    """
    if isinstance(topology, Graph):
        return topology.nodes
    if isinstance(topology, Star):
        return frozenset() if topology.hub is None else frozenset({topology.hub})
    if isinstance(topology, Neighbourhoods):
        return frozenset(topology.hubs) | {n for group in topology.groups for n in group}
    return frozenset()


def check_node_ids(topology: Topology, ids: Collection[str], *, name: str | None = None) -> None:
    """Check that every node id ``topology`` names is one of ``ids``.

    Use it where the node ids are known in advance (a simulation's ``n000``, ``n001``, ...):
    an edge or hub naming an id that no node has leaves nodes without neighbours.

    Args:
        topology: the topology to check (see :func:`named_nodes`).
        ids: the ids of every node of the federation.
        name: how to name the topology in the message (default ``topology <class name>``),
            e.g. the spec it was built from.

    Raises:
        ConfigurationError: the topology names unknown ids; the message lists them and the
            valid ones.
    """
    unknown = named_nodes(topology) - set(ids)
    if not unknown:
        return
    valid = _show_ids(ids) or "none"
    first = sorted(ids)[:2]
    hint = ""
    if isinstance(topology, Graph) and len(first) == 2:
        hint = f" (e.g. graph:edges={first[0]}~{first[1]})"
    elif isinstance(topology, Star) and first:
        hint = f" (e.g. star:center={first[0]})"
    raise ConfigurationError(
        f"{name or 'topology ' + type(topology).__name__} names node id(s) "
        f"{', '.join(sorted(unknown))} "
        f"that no node has; valid node ids: {valid}; use those ids{hint}"
    )


def _graph_from_params(p: SpecParams) -> Graph:
    pairs = []
    items = p.texts("edges")
    if not items:
        raise ConfigurationError(
            "topology 'graph' needs parameter 'edges' with at least one edge, none given "
            "(e.g. 'graph:edges=a~b|b~c'; 'a>b' is one-way with directed=true)"
        )
    for item in items:  # ids may contain '-', so edges are 'a>b' or 'a~b'
        a, sep, b = item.replace("->", ">").replace("~", ">").partition(">")
        if not sep:
            raise ConfigurationError(f"graph edge must look like 'a>b' or 'a~b', got {item!r}")
        pairs.append((a.strip(), b.strip()))
    return Graph(pairs, directed=p.flag("directed", False))


def _groups_from_params(p: SpecParams) -> list[list[str]] | None:
    value = p.raw("groups")
    if value is None:
        return None
    if isinstance(value, str):  # "a+b+c|d+e"
        return [[x.strip() for x in grp.split("+") if x.strip()] for grp in value.split("|")]
    if isinstance(value, Sequence):
        return [[str(x) for x in grp] for grp in value]
    raise ConfigurationError(f"neighbourhoods groups must be 'a+b|c+d' or lists, got {value!r}")


_FACTORIES: dict[str, Callable[[SpecParams], Topology]] = {
    "fully-connected": lambda p: FullyConnected(),
    "star": lambda p: Star(center=p.optional_text("center")),
    "ring": lambda p: Ring(bidirectional=p.flag("bidirectional", True)),
    "grid": lambda p: Grid(cols=p.integer("cols")),
    "neighbourhoods": lambda p: Neighbourhoods(hubs=p.texts("hubs"), groups=_groups_from_params(p)),
    "random-regular": lambda p: RandomRegular(
        k=p.integer("k"), seed=p.integer("seed", 0), redraw_every=p.optional_integer("redraw_every")
    ),
    "graph": _graph_from_params,
}
_FACTORIES["full"] = _FACTORIES["complete"] = _FACTORIES["fully-connected"]
_FACTORIES["neighborhoods"] = _FACTORIES["neighbourhoods"]
#: Every parameter each factory reads (unknown ones are refused before it runs).
_PARAMETERS: dict[str, tuple[str, ...]] = {
    "fully-connected": (),
    "star": ("center",),
    "ring": ("bidirectional",),
    "grid": ("cols",),
    "neighbourhoods": ("hubs", "groups"),
    "random-regular": ("k", "seed", "redraw_every"),
    "graph": ("edges", "directed"),
}
_PARAMETERS["full"] = _PARAMETERS["complete"] = _PARAMETERS["fully-connected"]
_PARAMETERS["neighborhoods"] = _PARAMETERS["neighbourhoods"]


def topology_from_spec(spec: str | Mapping[str, Any] | Topology) -> Topology:
    """Build a topology from a CLI/config spec (a :class:`Topology` passes through).

    Examples: ``"fully-connected"``, ``"ring"``, ``"ring:bidirectional=false"``, ``"star"``,
    ``"star:center=node-0"``, ``"grid:cols=4"``, ``"random-regular:k=4,seed=1,redraw_every=5"``,
    ``"neighbourhoods:hubs=a|b"``, ``"neighbourhoods:groups=a+x+y|b+z"``,
    ``"graph:edges=a~b|b>c,directed=false"`` (``directed=true``: one-way), or
    ``{"name": "grid", "cols": 4}``.

    Raises:
        ConfigurationError: unknown name (the closest valid name is suggested), unknown
            parameters or invalid values.
    """
    if isinstance(spec, Topology) and not isinstance(spec, (str, Mapping)):
        return spec
    return build_from_spec(spec, "topology", _FACTORIES, _PARAMETERS)
