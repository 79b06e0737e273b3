"""Drawing helpers of :func:`scatterbrained.sim.plots.plot_topology`: layout, edges, nodes.

Everything here draws onto a given :class:`matplotlib.axes.Axes`; nothing touches ``pyplot``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import networkx as nx
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, Patch

from ..errors import ConfigurationError
from ..types import OperatingMode

__all__ = [
    "DEAD_COLOUR",
    "MODE_COLOURS",
    "checked_edges",
    "draw_edges",
    "draw_labels",
    "draw_nodes",
    "grid_columns",
    "layout",
    "topology_legend",
]

#: Face colour of each operating mode, shared by both plots.
MODE_COLOURS: Mapping[str, str] = MappingProxyType(
    {
        OperatingMode.PEER.value: "#1f77b4",
        OperatingMode.SEEDING.value: "#2ca02c",
        OperatingMode.LEECHING.value: "#ff7f0e",
        OperatingMode.OFFLINE.value: "#3b3b3b",
    }
)
#: Face colour of dead (killed, not restarted) nodes; they are also hatched.
DEAD_COLOUR = "#d0d0d0"
_CIRCULAR_MAX_NODES = 32


def layout(graph: nx.Graph, seed: int) -> dict[str, tuple[float, float]]:
    """Place the nodes: deterministic for the same graph (same node order) and seed.

    A grid (see :func:`grid_columns`): rows and columns. Else up to 32 nodes: a circle, with
    nodes linked to every other node (a star's hubs) on an inner circle or in the middle.
    More nodes: a spring layout seeded with ``seed``.

    Returns:
        node -> (x, y) in layout units (roughly ``[-1, 1]``).
    """
    count = graph.number_of_nodes()
    hubs = [node for node, degree in graph.degree() if degree == count - 1]
    cols = grid_columns(graph)
    if cols is not None:
        scale = 2.0 / max(cols - 1, (count - 1) // cols, 1)
        return {
            str(node): ((i % cols) * scale - 1.0, 1.0 - (i // cols) * scale)
            for i, node in enumerate(graph)
        }
    if count <= _CIRCULAR_MAX_NODES and 0 < len(hubs) < count - 1:
        rest = [node for node in graph if node not in hubs]
        positions = nx.shell_layout(graph, nlist=[hubs, rest])  # a star: hubs in the middle
    elif count <= _CIRCULAR_MAX_NODES:
        positions = nx.circular_layout(graph)
    else:
        positions = nx.spring_layout(graph, seed=seed)
    return {str(node): (float(xy[0]), float(xy[1])) for node, xy in positions.items()}


def grid_columns(graph: nx.Graph) -> int | None:
    """The column count when ``graph`` is exactly a grid of its nodes in their order, else None.

    A grid as :class:`scatterbrained.federation.topology.Grid` builds it: nodes row-major in
    ``cols`` columns (the last row may be partial), each linked to its right and lower
    neighbour; at least two rows and two columns. Direction is ignored.
    """
    nodes = list(graph)
    count = len(nodes)
    have = {frozenset(edge) for edge in graph.edges() if edge[0] != edge[1]}
    for cols in range(2, count // 2 + 1):
        rows = -(-count // cols)
        if len(have) != (count - rows) + (count - cols):  # a grid's edge count
            continue
        want = {frozenset((nodes[i], nodes[i + 1])) for i in range(count - 1) if (i + 1) % cols}
        want |= {frozenset((nodes[i], nodes[i + cols])) for i in range(count - cols)}
        if want == have:
            return cols
    return None


def checked_edges(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Return the edges as a set of ``(source, target)`` without self-loops.

    Raises:
        ConfigurationError: an edge names a node that is not in ``nodes``.
    """
    known = set(nodes)
    checked = set()
    for source, target in edges:
        if source not in known or target not in known:
            raise ConfigurationError(
                f"edge ({source!r}, {target!r}) names a node that is not in the node list; "
                "pass every endpoint in nodes"
            )
        if source != target:
            checked.add((source, target))
    return checked


def _edge_style(source: str, target: str, dead: Collection[str]) -> dict[str, Any]:
    """Edges touching a dead node are faint and dashed."""
    if source in dead or target in dead:
        return {"color": "#c8c8c8", "linestyle": "--"}
    return {"color": "#8a8a8a", "linestyle": "-"}


def _crosses_a_node(
    pos: Mapping[str, tuple[float, float]], source: str, target: str, points: np.ndarray
) -> bool:
    """Whether the straight segment source-target passes over a third node (as in a grid row)."""
    a, b = np.array(pos[source]), np.array(pos[target])
    span = b - a
    length2 = float(span @ span)
    if length2 < 1e-12:
        return False
    t = (points - a) @ span / length2
    distance = np.hypot(*(a + np.outer(t, span) - points).T)
    return bool(((t > 0.02) & (t < 0.98) & (distance < 0.03 * np.sqrt(length2))).any())


def _arrow(
    ax: Axes, pos: Mapping[str, tuple[float, float]], edge: tuple[str, str], **style: Any
) -> None:
    ax.add_patch(FancyArrowPatch(pos[edge[0]], pos[edge[1]], linewidth=0.9, zorder=1, **style))


def draw_edges(
    ax: Axes,
    pos: Mapping[str, tuple[float, float]],
    edges: set[tuple[str, str]],
    dead: Collection[str],
    node_size: float,
) -> tuple[bool, int]:
    """Draw an edge present both ways as a plain line and a one-way edge as an arrow.

    An edge whose straight line would pass over a third node is bent around it. Each arrow's
    gid is ``"source->target"``, each bent two-way edge's ``"a--b"``.

    Returns:
        Whether any arrow was drawn, and the number of edges drawn (a two-way pair is one).
    """
    pairs = sorted({(min(edge), max(edge)) for edge in edges if edge[::-1] in edges})
    one_way = sorted(edge for edge in edges if edge[::-1] not in edges)
    points = np.array(list(pos.values()))
    bent = {e for e in [*pairs, *one_way] if _crosses_a_node(pos, e[0], e[1], points)}
    for faint in (False, True):
        chosen = [(a, b) for a, b in pairs if (a in dead or b in dead) == faint]
        straight = [edge for edge in chosen if edge not in bent]
        if straight:
            style = _edge_style(*straight[0], dead)
            ax.add_collection(
                LineCollection(
                    [(pos[a], pos[b]) for a, b in straight],
                    colors=style["color"],
                    linestyles=style["linestyle"],
                    linewidths=1.0,
                    zorder=1,
                )
            )
    bend = "arc3,rad=0.2"
    for a, b in (edge for edge in pairs if edge in bent):
        _arrow(
            ax,
            pos,
            (a, b),
            arrowstyle="-",
            connectionstyle=bend,
            gid=f"{a}--{b}",
            **_edge_style(a, b, dead),
        )
    shrink = (node_size**0.5) / 2 + 2  # points: marker radius plus a gap
    for source, target in one_way:
        _arrow(
            ax,
            pos,
            (source, target),
            arrowstyle="-|>",
            mutation_scale=12,
            shrinkA=shrink,
            shrinkB=shrink,
            connectionstyle=bend if (source, target) in bent else "arc3,rad=0",
            gid=f"{source}->{target}",
            **_edge_style(source, target, dead),
        )
    return bool(one_way), len(pairs) + len(one_way)


def draw_labels(
    ax: Axes, pos: Mapping[str, tuple[float, float]], node_size: float, fontsize: float
) -> None:
    """Write each name just outside its node, pointing away from the layout's centre."""
    centre = np.mean(np.array(list(pos.values())), axis=0)
    radius = (node_size**0.5) / 2 + 3  # points
    for node, (x, y) in pos.items():
        direction = np.array([x, y]) - centre
        length = float(np.hypot(*direction))
        dx, dy = (direction / length) if length > 1e-9 else (0.0, -1.0)
        ax.annotate(
            node,
            (x, y),
            xytext=(dx * radius, dy * radius),
            textcoords="offset points",
            ha="left" if dx > 0.3 else "right" if dx < -0.3 else "center",
            va="bottom" if dy > 0.3 else "top" if dy < -0.3 else "center",
            fontsize=fontsize,
            bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "alpha": 0.75, "lw": 0},
        )


def draw_nodes(
    ax: Axes,
    pos: Mapping[str, tuple[float, float]],
    modes: Mapping[str, str],
    dead: Collection[str],
    node_size: float,
) -> None:
    """Draw live nodes filled with their mode's colour and dead ones grey and hatched.

    ``node_size`` is the marker area in points squared; ``modes`` holds parsed mode names.
    """
    for mode, colour in MODE_COLOURS.items():
        alive = [
            node for node, node_mode in modes.items() if node_mode == mode and node not in dead
        ]
        if alive:
            xy = np.array([pos[node] for node in alive])
            ax.scatter(
                xy[:, 0],
                xy[:, 1],
                s=node_size,
                color=colour,
                edgecolors="white",
                linewidths=1.2,
                zorder=3,
            )
    gone = [node for node in modes if node in dead]
    if gone:
        xy = np.array([pos[node] for node in gone])
        ax.scatter(
            xy[:, 0],
            xy[:, 1],
            s=node_size,
            facecolor=DEAD_COLOUR,
            edgecolors="#555555",
            hatch="////",
            linewidths=1.0,
            zorder=3,
        )


def topology_legend(
    ax: Axes, modes: Mapping[str, str], dead: Collection[str], directed: bool
) -> None:
    """Legend right of the axes: one entry per mode and for dead nodes, with counts."""
    handles: list[Patch | Line2D] = []
    for mode, colour in MODE_COLOURS.items():
        count = sum(1 for node, m in modes.items() if m == mode and node not in dead)
        handles.append(Patch(facecolor=colour, label=f"{mode} ({count})"))
    handles.append(
        Patch(
            facecolor=DEAD_COLOUR,
            edgecolor="#555555",
            hatch="////",
            label=f"dead ({sum(1 for node in modes if node in dead)})",
        )
    )
    edge_kind = "directed edges" if directed else "undirected edges"
    handles.append(Line2D([], [], color="#9a9a9a", label=edge_kind))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=11)
