"""Plots of a simulation: accuracy over epochs across nodes, and the topology with modes.

Rendering uses :class:`matplotlib.figure.Figure` with the Agg canvas directly: no ``pyplot``,
no global figure registry, no change to ``matplotlib.rcParams`` or to the selected backend,
so it is safe in libraries, threads and headless machines. Figures are 1200x700 pixels.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..errors import ConfigurationError
from ..types import OperatingMode
from .plot_events import EVENT_STYLES, draw_events
from .topology_drawing import (
    DEAD_COLOUR,
    MODE_COLOURS,
    checked_edges,
    draw_edges,
    draw_labels,
    draw_nodes,
    layout,
    topology_legend,
)

__all__ = [
    "DEAD_COLOUR",
    "MODE_COLOURS",
    "accuracy_figure",
    "plot_accuracy",
    "plot_topology",
    "plot_topology_timeline",
]

logger = logging.getLogger(__name__)

_FIGSIZE_INCHES = (12.0, 7.0)
_DPI = 100
_LABEL_MAX_NODES = 64
_HIGHLIGHT_MAX_NODES = 6


def _new_figure() -> tuple[Figure, Axes]:
    figure = Figure(figsize=_FIGSIZE_INCHES, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save(figure: Figure, out: Path | str) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=_DPI)
    return path


def _parse_mode(value: object, where: str) -> str:
    try:
        return OperatingMode.parse(str(value)).value
    except ValueError as error:
        raise ConfigurationError(f"{where}: {error}") from None


def _accuracy_rows(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, float, float]]:
    """Return (node, epoch, accuracy) of the records that carry an accuracy."""
    rows = []
    for index, record in enumerate(records):
        if "node" not in record or "epoch" not in record:
            raise ConfigurationError(
                f"metrics record {index} lacks 'node' or 'epoch' (keys: {sorted(record)}); "
                "every record needs node, epoch and accuracy (None for a dead node)"
            )
        accuracy = record.get("accuracy")
        if accuracy is not None and np.isfinite(float(accuracy)):
            rows.append((str(record["node"]), float(record["epoch"]), float(accuracy)))
    return rows


def _epoch_stats(rows: list[tuple[str, float, float]]) -> dict[str, np.ndarray]:
    by_epoch: dict[float, list[float]] = defaultdict(list)
    for _, epoch, accuracy in rows:
        by_epoch[epoch].append(accuracy)
    epochs = np.array(sorted(by_epoch))
    values = [np.array(by_epoch[epoch]) for epoch in epochs]
    return {
        "epoch": epochs,
        "mean": np.array([v.mean() for v in values]),
        "min": np.array([v.min() for v in values]),
        "max": np.array([v.max() for v in values]),
        "q25": np.array([np.percentile(v, 25) for v in values]),
        "q75": np.array([np.percentile(v, 75) for v in values]),
    }


def _draw_node_lines(ax: Axes, records: Sequence[Mapping[str, Any]]) -> None:
    """Thin grey line per node; an epoch without accuracy (dead, paused) breaks the line.

    Nodes with a churn event (up to six of them) are drawn darker, their gaps bridged by a
    dotted line, so that each event marker visibly belongs to its node's line.
    """
    per_node: dict[str, list[tuple[float, float]]] = defaultdict(list)
    churned = {str(r["node"]) for r in records if r.get("event") in EVENT_STYLES}
    if len(churned) > _HIGHLIGHT_MAX_NODES:
        churned = set()  # many dark lines would hide the spread: markers only
    for record in records:
        accuracy = record.get("accuracy")
        value = float("nan") if accuracy is None else float(accuracy)
        per_node[str(record["node"])].append((float(record["epoch"]), value))
    for node, points in per_node.items():
        points.sort()
        xs, ys = (np.array(values) for values in zip(*points, strict=True))
        if node not in churned:
            ax.plot(xs, ys, color="#808080", linewidth=0.7, alpha=0.35, zorder=1)
            continue
        label = "a node with churn" if node == min(churned) else None
        ax.plot(xs, ys, color="#333333", linewidth=1.3, zorder=3, gid=f"node:{node}", label=label)
        known = ~np.isnan(ys)
        ax.plot(xs[known], ys[known], color="#333333", linewidth=1.0, linestyle=":", zorder=3)


def _draw_mode_dots(ax: Axes, records: Sequence[Mapping[str, Any]]) -> None:
    by_mode: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for index, record in enumerate(records):
        if record.get("mode") is not None and record.get("accuracy") is not None:
            mode = _parse_mode(record["mode"], f"metrics record {index}")
            by_mode[mode].append((float(record["epoch"]), float(record["accuracy"])))
    if len(by_mode) < 2 and set(by_mode) <= {OperatingMode.PEER.value}:
        return  # all PEER: dots would only add noise
    for mode in (mode for mode in MODE_COLOURS if mode in by_mode):  # legend in a fixed order
        xs, ys = zip(*by_mode[mode], strict=True)
        colour = MODE_COLOURS[mode]
        ax.scatter(xs, ys, s=10, color=colour, alpha=0.9, zorder=2, label=f"mode: {mode}")


def _draw_summary(
    ax: Axes, stats: dict[str, np.ndarray], centralized: float | None, nodes: int
) -> None:
    epochs = stats["epoch"]
    ax.fill_between(
        epochs,
        stats["min"],
        stats["max"],
        color="#1f77b4",
        alpha=0.12,
        linewidth=0,
        label="min-max across nodes",
        zorder=1,
    )
    ax.fill_between(
        epochs,
        stats["q25"],
        stats["q75"],
        color="#1f77b4",
        alpha=0.28,
        linewidth=0,
        label="inter-quartile range",
        zorder=1,
    )
    ax.plot(
        epochs,
        stats["mean"],
        color="#0b3d91",
        linewidth=2.6,
        marker="o",
        markersize=3.5,
        label=f"mean of {nodes} nodes",
        zorder=4,
    )
    if centralized is not None:
        ax.axhline(
            centralized,
            color="#d62728",
            linestyle="--",
            linewidth=1.8,
            label=f"centralized baseline ({centralized:.3f})",
            zorder=3,
        )


def _y_limits(stats: dict[str, np.ndarray], centralized: float | None) -> tuple[float, float]:
    """From a little under the lowest accuracy (or baseline) to just over the highest, <= 1."""
    values = [float(stats["min"].min()), float(stats["max"].max())]
    if centralized is not None:
        values.append(float(centralized))
    low, high = max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.05)
    return low, (1.01 if high >= 1.0 else high)  # a baseline of 1.0 stays visible


def _draw_accuracy(
    ax: Axes,
    records: Sequence[Mapping[str, Any]],
    rows: list[tuple[str, float, float]],
    centralized: float | None,
) -> str:
    """Draw everything of a non-empty plot; return the line of final-epoch figures."""
    stats = _epoch_stats(rows)
    low, high = _y_limits(stats, centralized)
    _draw_node_lines(ax, records)
    _draw_summary(ax, stats, centralized, len({node for node, _, _ in rows}))
    _draw_mode_dots(ax, records)
    draw_events(ax, records, low + 0.01)
    ax.set_ylim(low, high)
    # outside the axes, on the right: it can never hide the baseline or a marker
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=10, borderaxespad=0.0)
    final = f"final epoch {stats['epoch'][-1]:g}: mean {stats['mean'][-1]:.3f}, "
    return final + f"min {stats['min'][-1]:.3f}, max {stats['max'][-1]:.3f}"


def accuracy_figure(
    records: Sequence[Mapping[str, Any]],
    *,
    centralized: float | None = None,
    title: str = "Test accuracy per epoch",
) -> Figure:
    """Build the figure that :func:`plot_accuracy` saves (for tests and notebooks).

    Raises:
        ConfigurationError: a record lacks ``node`` or ``epoch``, or names an unknown mode.
    """
    rows = _accuracy_rows(records)
    figure, ax = _new_figure()
    if rows:
        figure.suptitle(title, fontsize=14)
        ax.set_title(_draw_accuracy(ax, records, rows, centralized), fontsize=11)
    else:
        ax.set_title(title, fontsize=14)
        logger.warning("plot_accuracy: no record carries an accuracy; writing an empty plot")
        ax.text(
            0.5,
            0.5,
            "no accuracy recorded",
            transform=ax.transAxes,
            ha="center",
            fontsize=16,
            color="#808080",
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch", fontsize=12)
    ax.set_ylabel("test accuracy", fontsize=12)
    ax.grid(alpha=0.3)
    return figure


def plot_accuracy(
    records: Sequence[Mapping[str, Any]],
    out: Path | str,
    *,
    centralized: float | None = None,
    title: str = "Test accuracy per epoch",
) -> Path:
    """Plot accuracy over epochs across nodes and save it (PNG unless ``out`` says otherwise).

    Draws the mean per epoch, the inter-quartile and min-max bands across nodes, a thin line
    per node, dots coloured by operating mode (when not all PEER), a dashed centralized
    baseline, and for each record whose ``event`` is ``killed``, ``restarted``, ``paused`` or
    ``resumed`` a marker at that node's own accuracy half an epoch before the record's epoch
    (the event happened between the two epochs) with a dotted
    vertical line. The legend sits outside the axes, on the right; the final epoch's mean,
    min and max are the subtitle.

    Args:
        records: metrics rows with keys ``node``, ``epoch``, ``accuracy`` (a fraction in
            ``[0, 1]``, or ``None`` for a dead node) and optionally ``mode`` and ``event``.
        out: image path; parent folders are created.
        centralized: accuracy of the centralized baseline, drawn as a dashed line.
        title: the figure's title.

    Returns:
        The path written.

    Raises:
        ConfigurationError: a record lacks ``node`` or ``epoch``, or names an unknown mode.
    """
    return _save(accuracy_figure(records, centralized=centralized, title=title), out)


def plot_topology(
    nodes: Sequence[str],
    edges: Iterable[tuple[str, str]],
    modes: Mapping[str, str],
    out: Path | str,
    *,
    title: str = "Topology",
    dead: Collection[str] = (),
    seed: int = 0,
) -> Path:
    """Draw the compute graph with nodes coloured by operating mode and save it.

    Layout: circular for up to 32 nodes (nodes linked to all others, like a star's hub, go in
    the middle), else a spring layout seeded with ``seed`` (the same
    inputs give the same picture). Edges are drawn as arrows only when some edge lacks its
    reverse; otherwise as plain lines. Dead nodes are grey and hatched. Names are drawn for up
    to 64 nodes.

    Args:
        nodes: node ids, in layout order.
        edges: ``(source, target)`` pairs; self-loops are ignored.
        modes: node id -> operating mode name (``peer``, ``seeding``, ``leeching``,
            ``offline``); a node missing here is drawn as ``peer`` (the default mode).
        out: image path; parent folders are created.
        title: the figure's title.
        dead: ids of nodes that are down.
        seed: seed of the spring layout.

    Returns:
        The path written.

    Raises:
        ConfigurationError: an edge names an unknown node, or a mode name is unknown.
    """
    node_list = [str(node) for node in nodes]
    edge_set = checked_edges(node_list, edges)
    node_modes = {
        node: _parse_mode(modes.get(node, OperatingMode.PEER.value), f"mode of node {node!r}")
        for node in node_list
    }
    graph = nx.Graph()
    graph.add_nodes_from(node_list)
    graph.add_edges_from(edge_set)
    pos = layout(graph, seed)
    node_size = float(np.clip(9000.0 / max(len(node_list), 1), 60.0, 900.0))
    figure, ax = _new_figure()
    dead_set = {str(node) for node in dead}
    directed, edge_count = draw_edges(ax, pos, edge_set, dead_set, node_size)
    draw_nodes(ax, pos, node_modes, dead_set, node_size)
    if len(node_list) <= _LABEL_MAX_NODES:
        draw_labels(ax, pos, node_size, fontsize=10 if len(node_list) <= 24 else 8)
    topology_legend(ax, node_modes, dead_set, directed)
    kind = "directed" if directed else "undirected"
    ax.set_title(f"{title} ({len(node_list)} nodes, {edge_count} {kind} edges)", fontsize=14)
    ax.set_aspect("equal")
    ax.margins(0.08)
    ax.set_axis_off()
    return _save(figure, out)


def plot_topology_timeline(
    records: Sequence[Mapping[str, Any]],
    out: Path | str,
    *,
    nodes: Sequence[str] | None = None,
    edges: Iterable[tuple[str, str]] = (),
    title: str = "Topology over time",
    max_frames: int = 6,
    seed: int = 0,
) -> Path:
    """Draw the topology over a run, one panel per epoch where something changed, and save it.

    Panels: the first epoch, every epoch where a node changed mode (a LEECHING node turning
    PEER, a pause going OFFLINE) or liveness or had a churn event, and the last epoch; at most
    ``max_frames``, evenly spaced when there are more. In each panel nodes are coloured by
    their mode in that epoch, dead nodes are grey and hatched, edges are what the nodes
    merged from in that epoch (``merged_from``; one-way edges are arrows), and a black ring
    marks each node that changed. Nodes keep their place from panel to panel: a grid topology
    is laid out as a grid, up to 32 other nodes on a circle, more by a seeded spring layout.
    No axes are drawn. The figure is 4.2 x 4 inches a panel (three a row) plus the legend.

    Args:
        records: ``metrics.jsonl`` rows: ``node``, ``epoch``, ``alive``, ``mode``, ``event``,
            ``merged_from`` (when absent, ``edges`` is drawn in every panel).
        out: image path; parent folders are created.
        nodes: every node id in layout order (default: the nodes of ``records``, sorted).
        edges: the configured topology's ``(source, target)`` edges: they fix the layout, and
            are drawn when the rows carry no ``merged_from``.
        title: the figure's title.
        max_frames: the most panels (>= 2).
        seed: seed of the spring layout.

    Returns:
        The path written.

    Raises:
        ConfigurationError: a row lacks ``node`` or ``epoch`` or names an unknown mode, an
            edge names an unknown node, or ``max_frames`` < 2.
    """
    from .topology_timeline import timeline_figure

    figure = timeline_figure(
        records, nodes=nodes, edges=edges, title=title, max_frames=max_frames, seed=seed
    )
    return _save(figure, out)
