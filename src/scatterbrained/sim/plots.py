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
from types import MappingProxyType
from typing import Any

import networkx as nx
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..errors import ConfigurationError
from ..types import OperatingMode
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

__all__ = ["DEAD_COLOUR", "MODE_COLOURS", "plot_accuracy", "plot_topology"]

logger = logging.getLogger(__name__)

#: Event marker (style, colour) of churn records.
_EVENT_STYLES = MappingProxyType({"killed": ("X", "#d62728"), "restarted": ("^", "#17becf")})
_FIGSIZE_INCHES = (12.0, 7.0)
_DPI = 100
_LABEL_MAX_NODES = 64


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
    """Thin grey line per node; a dead epoch (accuracy None) breaks the line."""
    per_node: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for record in records:
        accuracy = record.get("accuracy")
        value = float("nan") if accuracy is None else float(accuracy)
        per_node[str(record["node"])].append((float(record["epoch"]), value))
    for points in per_node.values():
        points.sort()
        ax.plot(*zip(*points, strict=True), color="#808080", linewidth=0.7, alpha=0.35, zorder=1)


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


def _draw_events(
    ax: Axes, records: Sequence[Mapping[str, Any]], stats: dict[str, np.ndarray]
) -> None:
    for event, (marker, colour) in _EVENT_STYLES.items():
        points = []
        for record in records:
            if record.get("event") != event:
                continue
            epoch = float(record["epoch"])
            accuracy = record.get("accuracy")
            if accuracy is None:  # a dead node: mark it on the mean curve
                accuracy = np.interp(epoch, stats["epoch"], stats["mean"]) if len(stats) else 0.0
            points.append((epoch, float(accuracy)))
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(
                xs,
                ys,
                marker=marker,
                s=70,
                color=colour,
                edgecolors="white",
                linewidths=0.8,
                zorder=5,
                label=f"{event} ({len(points)})",
            )


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
    final = f"final epoch {epochs[-1]:g}: mean {stats['mean'][-1]:.3f}, "
    final += f"min {stats['min'][-1]:.3f}, max {stats['max'][-1]:.3f}"
    ax.text(
        0.01,
        0.99,
        final,
        transform=ax.transAxes,
        va="top",
        ha="left",
        fontsize=11,
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "#cccccc"},
    )


def plot_accuracy(
    records: Sequence[Mapping[str, Any]],
    out: Path | str,
    *,
    centralized: float | None = None,
    title: str = "Test accuracy per epoch",
) -> Path:
    """Plot accuracy over epochs across nodes and save it (PNG unless ``out`` says otherwise).

    Draws the mean per epoch, the inter-quartile and min-max bands across nodes, a thin line
    per node, dots coloured by operating mode (when not all PEER), churn markers for records
    whose ``event`` is ``"killed"`` or ``"restarted"``, and a dashed centralized baseline.

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
    rows = _accuracy_rows(records)
    figure, ax = _new_figure()
    if rows:
        stats = _epoch_stats(rows)
        _draw_node_lines(ax, records)
        _draw_summary(ax, stats, centralized, len({node for node, _, _ in rows}))
        _draw_mode_dots(ax, records)
        _draw_events(ax, records, stats)
        lowest = min(float(stats["min"].min()), centralized if centralized is not None else 1.0)
        ax.set_ylim(max(0.0, lowest - 0.05), 1.0)
        ax.legend(loc="lower right", fontsize=10, framealpha=0.9)
    else:
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
    ax.set_title(title, fontsize=14)
    ax.grid(alpha=0.3)
    return _save(figure, out)


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
