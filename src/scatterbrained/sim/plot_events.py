"""Churn markers of :func:`scatterbrained.sim.plots.plot_accuracy`: kills, restarts, pauses.

Everything here draws onto a given :class:`matplotlib.axes.Axes`; nothing touches ``pyplot``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
from matplotlib.axes import Axes

__all__ = ["EVENT_STYLES", "draw_events", "event_points"]

#: Event marker (style, colour) of churn records.
EVENT_STYLES = MappingProxyType(
    {
        "killed": ("X", "#d62728"),
        "restarted": ("^", "#17becf"),
        "paused": ("s", "#9467bd"),
        "resumed": (">", "#8c564b"),
    }
)
_EVENT_NAMES_MAX = 12


def event_points(
    records: Sequence[Mapping[str, Any]], lowest: float
) -> dict[str, list[tuple[float, float, str]]]:
    """Return event -> [(x, y, node)] of the churn markers.

    An event's ``epoch`` is the first epoch it affects (it happened after epoch - 1 ended), so
    its marker sits half an epoch before it, at the node's own accuracy: at that epoch when the
    node has one (a restart, a resume), else its last one before (a kill, a pause), else its
    first one after, else ``lowest`` (the bottom of the axes).
    """
    history: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for record in records:
        accuracy = record.get("accuracy")
        if accuracy is not None and np.isfinite(float(accuracy)):
            history[str(record["node"])].append((float(record["epoch"]), float(accuracy)))
    points: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for record in records:
        event = record.get("event")
        if event not in EVENT_STYLES:
            continue
        node, epoch = str(record["node"]), float(record["epoch"])
        known = sorted(history[node])
        at = [a for e, a in known if e == epoch]
        before = [a for e, a in known if e < epoch]
        after = [a for e, a in known if e > epoch]
        y = (at or before[-1:] or after[:1] or [lowest])[0]
        points[str(event)].append((epoch - 0.5, y, node))
    return points


def draw_events(ax: Axes, records: Sequence[Mapping[str, Any]], lowest: float) -> None:
    """Churn markers at the node's own accuracy, a dotted vertical line at each event and the
    node's name beside its marker (up to a dozen events)."""
    points = event_points(records, lowest)
    named = sum(len(p) for p in points.values()) <= _EVENT_NAMES_MAX
    for event, (marker, colour) in EVENT_STYLES.items():
        if event not in points:
            continue
        xs, ys, nodes = zip(*points[event], strict=True)
        for x in sorted(set(xs)):
            ax.axvline(x, color=colour, linestyle=":", linewidth=1.0, alpha=0.6, zorder=2)
        ax.scatter(
            xs,
            ys,
            marker=marker,
            s=80,
            color=colour,
            edgecolors="black",
            linewidths=0.6,
            zorder=6,
            label=f"{event} ({len(xs)})",
            gid=f"event:{event}",
        )
        if named:
            for x, y, node in zip(xs, ys, nodes, strict=True):
                ax.annotate(
                    node,
                    (x, y),
                    xytext=(0, 9),
                    textcoords="offset points",
                    ha="center",
                    fontsize=9,
                    color=colour,
                    zorder=6,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "alpha": 0.8, "lw": 0},
                )
