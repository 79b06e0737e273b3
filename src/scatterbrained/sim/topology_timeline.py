"""The topology over time: one small panel per epoch where a node changed mode or a fault hit.

:func:`topology_frames` reads the ``metrics.jsonl`` rows of a run and returns the frames to
draw; :func:`draw_timeline` draws them side by side onto a figure, :func:`timeline_figure`
does both. Each frame shows every
node coloured by its mode in THAT epoch (dead nodes grey and hatched), the edges the nodes
actually merged over in that epoch (each row's ``merged_from``), and a black ring around
each node that changed since the previous frame.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

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
)

__all__ = [
    "CHANGED_RING",
    "Frame",
    "draw_timeline",
    "shared_layout",
    "timeline_figure",
    "topology_frames",
]

logger = logging.getLogger(__name__)

#: Edge colour of the ring around a node that changed in a frame.
CHANGED_RING = "#000000"
_DEAD = "dead"
_LABEL_MAX_NODES = 24
_PANEL_COLUMNS = 3
_PANEL_INCHES = (4.2, 3.3)  # width, height of a square layout without its title
_DPI = 100
_TITLE_CHANGES = 3


@dataclass(frozen=True)
class Frame:
    """The state of the federation during one epoch.

    Attributes:
        epoch: the epoch (1-based, as in the metrics rows).
        modes: node -> parsed mode name in this epoch (dead nodes keep their last mode).
        dead: the nodes that are down in this epoch.
        edges: ``(source, target)``: ``target`` merged a model from ``source`` in this epoch.
        changed: nodes whose mode or liveness differs from the previous frame, or that have
            an event in this epoch.
        notes: what happened, e.g. ``"n005 killed"``, ``"n000 leeching -> peer"``.
    """

    epoch: int
    modes: Mapping[str, str]
    dead: frozenset[str]
    edges: frozenset[tuple[str, str]]
    changed: frozenset[str]
    notes: tuple[str, ...]


def _state(row: Mapping[str, Any], where: str) -> str:
    """``dead`` or the row's mode (``peer`` when the row names none)."""
    if row.get("alive") is False:
        return _DEAD
    try:
        return OperatingMode.parse(str(row.get("mode") or OperatingMode.PEER.value)).value
    except ValueError as error:
        raise ConfigurationError(f"{where}: {error}") from None


def _by_epoch(
    records: Sequence[Mapping[str, Any]], nodes: Sequence[str]
) -> dict[int, dict[str, Mapping[str, Any]]]:
    known = set(nodes)
    table: dict[int, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for index, record in enumerate(records):
        if "node" not in record or "epoch" not in record:
            raise ConfigurationError(
                f"metrics record {index} lacks 'node' or 'epoch' (keys: {sorted(record)}); "
                "every record needs node, epoch, alive and mode"
            )
        if str(record["node"]) not in known:
            raise ConfigurationError(
                f"metrics record {index} names node {record['node']!r}, which is not in the "
                "node list; pass every node of the records in nodes"
            )
        table[int(record["epoch"])][str(record["node"])] = record
    return dict(sorted(table.items()))


def _edges_of(
    rows: Mapping[str, Mapping[str, Any]], fallback: frozenset[tuple[str, str]]
) -> frozenset[tuple[str, str]]:
    if not any("merged_from" in row for row in rows.values()):
        return fallback
    return frozenset(
        (str(source), node)
        for node, row in rows.items()
        for source in row.get("merged_from") or ()
        if str(source) in rows and str(source) != node
    )


def _note(node: str, state: str | None, before: str | None, event: object) -> str | None:
    """What happened to ``node`` since the epoch before, or None."""
    if event:
        return f"{node} {event}"
    if before is not None and state != before:
        return f"{node} {before} \u2192 {state}"
    if before is None and state not in (None, OperatingMode.PEER.value):
        return f"{node} {state}"  # the first frame: name the modes other than the default
    return None


def _all_frames(
    records: Sequence[Mapping[str, Any]], nodes: Sequence[str], fallback: Iterable[tuple[str, str]]
) -> list[Frame]:
    """One frame per epoch, each compared with the epoch before."""
    static = frozenset(checked_edges(nodes, fallback))
    previous: dict[str, str] = {}
    last_mode = dict.fromkeys(nodes, OperatingMode.PEER.value)
    frames = []
    for epoch, rows in _by_epoch(records, nodes).items():
        states = {
            node: _state(row, f"metrics of {node}, epoch {epoch}") for node, row in rows.items()
        }
        notes, changed = [], set()
        for node in nodes:
            state, before = states.get(node, previous.get(node)), previous.get(node)
            event = rows[node].get("event") if node in rows else None
            note = _note(node, state, before, event)
            if note:
                notes.append(note)
            if event or (before is not None and state != before):
                changed.add(node)
            if state is not None and state != _DEAD:
                last_mode[node] = state
        previous.update(states)
        dead = frozenset(node for node, state in states.items() if state == _DEAD)
        edges = _edges_of(rows, static)
        frames.append(Frame(epoch, dict(last_mode), dead, edges, frozenset(changed), tuple(notes)))
    return frames


def topology_frames(
    records: Sequence[Mapping[str, Any]],
    nodes: Sequence[str],
    *,
    edges: Iterable[tuple[str, str]] = (),
    max_frames: int = 6,
) -> tuple[list[Frame], int]:
    """Choose the frames of the timeline: the first epoch, each epoch where a node changed
    mode or liveness or had an event, and the last epoch.

    When there are more change epochs than ``max_frames - 2``, evenly spaced ones are kept.

    Args:
        records: ``metrics.jsonl`` rows (``node``, ``epoch``, ``alive``, ``mode``, ``event``,
            ``merged_from``).
        nodes: every node id, in layout order.
        edges: the edges drawn in every frame when the rows carry no ``merged_from``.
        max_frames: the most frames returned (>= 2).

    Returns:
        The frames in epoch order, and how many change epochs were left out.

    Raises:
        ConfigurationError: a row lacks ``node`` or ``epoch``, names an unknown mode, or an
            edge names an unknown node; ``max_frames`` < 2.
    """
    if max_frames < 2:
        raise ConfigurationError(
            f"max_frames must be >= 2 (first and last epoch), got {max_frames}"
        )
    frames = _all_frames(records, nodes, edges)
    if len(frames) <= 1:
        return frames, 0
    changes = [frame for frame in frames[1:-1] if frame.changed]
    room = max_frames - 2
    kept = changes
    if len(changes) > room:
        picks = {round(i * (len(changes) - 1) / max(room - 1, 1)) for i in range(room)}
        kept = [changes[i] for i in sorted(picks)]
    return [frames[0], *kept, frames[-1]], len(changes) - len(kept)


def _panel_title(frame: Frame, first: bool, last: bool) -> str:
    head = f"epoch {frame.epoch}" + (" (start)" if first else " (end)" if last else "")
    notes = list(frame.notes[:_TITLE_CHANGES])
    if len(frame.notes) > _TITLE_CHANGES:
        notes.append(f"+{len(frame.notes) - _TITLE_CHANGES} more")
    return head + ("\n" + ", ".join(notes) if notes else "\n ")


def _draw_frame(
    ax: Axes,
    frame: Frame,
    pos: Mapping[str, tuple[float, float]],
    node_size: float,
    title: str,
) -> bool:
    """Draw one panel; return whether it drew arrows."""
    directed, _ = draw_edges(ax, pos, set(frame.edges), frame.dead, node_size)
    draw_nodes(ax, pos, frame.modes, frame.dead, node_size)
    if frame.changed:
        xy = np.array([pos[node] for node in sorted(frame.changed)])
        ax.scatter(
            xy[:, 0],
            xy[:, 1],
            s=node_size * 2.2,
            facecolors="none",
            edgecolors=CHANGED_RING,
            linewidths=2.0,
            zorder=4,
            gid="changed",
        )
    if len(pos) <= _LABEL_MAX_NODES:
        draw_labels(ax, pos, node_size, fontsize=8)
    for artist in [*ax.collections, *ax.patches, *ax.texts]:
        artist.set_clip_on(False)  # rings and labels may reach past the panel's box
    ax.set_title(title, fontsize=10)
    ax.set_aspect("equal")
    ax.margins(0.12)
    ax.set_axis_off()
    return directed


def _legend(figure: Figure, directed: bool) -> None:
    handles: list[Patch | Line2D] = [
        Patch(facecolor=colour, label=mode) for mode, colour in MODE_COLOURS.items()
    ]
    handles.append(Patch(facecolor=DEAD_COLOUR, edgecolor="#555555", hatch="////", label="dead"))
    handles.append(
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            markerfacecolor="none",
            markeredgecolor=CHANGED_RING,
            markersize=12,
            markeredgewidth=2.0,
            label="changed in this frame",
        )
    )
    handles.append(Line2D([], [], color="#8a8a8a", label="merged both ways"))
    if directed:
        handles.append(Line2D([], [], color="#8a8a8a", marker=">", label="merged one way (arrow)"))
    figure.legend(handles=handles, loc="outside right upper", fontsize=10)


def shared_layout(
    nodes: Sequence[str],
    layout_edges: Iterable[tuple[str, str]],
    frames: Sequence[Frame],
    seed: int,
) -> dict[str, tuple[float, float]]:
    """One layout for every panel, so nodes keep their place from panel to panel.

    It comes from ``layout_edges`` (the configured topology) when given, else from the union
    of the frames' edges.
    """
    graph = nx.Graph()
    graph.add_nodes_from(nodes)
    chosen = list(layout_edges) or [edge for frame in frames for edge in frame.edges]
    graph.add_edges_from(edge for edge in chosen if edge[0] != edge[1])
    return layout(graph, seed)


def draw_timeline(
    figure: Figure, frames: Sequence[Frame], pos: Mapping[str, tuple[float, float]]
) -> list[Axes]:
    """Draw ``frames`` as panels of ``figure`` (up to three a row) at positions ``pos``.

    Returns:
        The panels' axes, in frame order.
    """
    node_size = float(np.clip(3000.0 / max(len(pos), 1), 20.0, 300.0))
    cols = min(_PANEL_COLUMNS, len(frames))
    rows = -(-len(frames) // cols)
    axes = [figure.add_subplot(rows, cols, i + 1) for i in range(len(frames))]
    directed = False
    for i, (ax, frame) in enumerate(zip(axes, frames, strict=True)):
        title = _panel_title(frame, i == 0, i == len(frames) - 1)
        directed = _draw_frame(ax, frame, pos, node_size, title) or directed
    _legend(figure, directed)
    return axes


def _panel_height(pos: Mapping[str, tuple[float, float]]) -> float:
    """Inches of a panel's height: less for a flat layout (a grid of two rows)."""
    xy = np.array(list(pos.values())) if pos else np.zeros((1, 2))
    width, height = np.ptp(xy[:, 0]), np.ptp(xy[:, 1])
    aspect = float(np.clip(height / width, 0.3, 1.0)) if width > 1e-9 else 1.0
    return _PANEL_INCHES[1] * aspect + 0.8


def timeline_figure(
    records: Sequence[Mapping[str, Any]],
    *,
    nodes: Sequence[str] | None = None,
    edges: Iterable[tuple[str, str]] = (),
    title: str = "Topology over time",
    max_frames: int = 6,
    seed: int = 0,
) -> Figure:
    """Build the figure :func:`scatterbrained.sim.plots.plot_topology_timeline` saves.

    Arguments and errors as there; the figure has one axes per frame, in frame order.
    """
    node_list = (
        [str(n) for n in nodes]
        if nodes is not None
        else sorted({str(r["node"]) for r in records if "node" in r})
    )
    edge_list = list(edges)
    frames, skipped = topology_frames(records, node_list, edges=edge_list, max_frames=max_frames)
    pos = shared_layout(node_list, edge_list, frames, seed)
    cols = min(_PANEL_COLUMNS, max(len(frames), 1))
    rows = -(-max(len(frames), 1) // cols)
    size = (_PANEL_INCHES[0] * cols + 2.4, _panel_height(pos) * rows + 0.5)
    figure = Figure(figsize=size, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    if frames:
        draw_timeline(figure, frames, pos)
    else:
        logger.warning("topology timeline: no metrics rows; writing an empty figure")
    left_out = f"; {skipped} more epochs with changes not shown" if skipped else ""
    figure.suptitle(f"{title} ({len(node_list)} nodes){left_out}", fontsize=14)
    return figure
