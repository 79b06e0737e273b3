"""Tests of scatterbrained.sim.topology_timeline: topology.png as frames over a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.colors
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection

from scatterbrained.errors import ConfigurationError
from scatterbrained.sim.plots import plot_topology_timeline
from scatterbrained.sim.topology_drawing import DEAD_COLOUR, MODE_COLOURS
from scatterbrained.sim.topology_timeline import CHANGED_RING, timeline_figure, topology_frames

pytestmark = pytest.mark.timeout(60)

NODES = [f"n{i:03d}" for i in range(8)]


def _ring(nodes: list[str]) -> set[tuple[str, str]]:
    pairs = {(nodes[i], nodes[(i + 1) % len(nodes)]) for i in range(len(nodes))}
    return pairs | {(b, a) for a, b in pairs}


def _demo_rows(epochs: int = 10) -> list[dict[str, Any]]:
    """Like the demo: n000 LEECHING in epoch 1 then PEER; n005 killed before epoch 5 and
    restarted before epoch 7; n003 paused (OFFLINE) before epoch 8."""
    rows = []
    events = {(5, "n005"): "killed", (7, "n005"): "restarted", (8, "n003"): "paused"}
    for epoch in range(1, epochs + 1):
        dead = {"n005"} if 5 <= epoch < 7 else set()
        silent = dead | ({"n003"} if epoch >= 8 else set()) | ({"n000"} if epoch == 1 else set())
        for node in NODES:
            mode = "leeching" if node == "n000" and epoch == 1 else "peer"
            mode = "offline" if node == "n003" and epoch >= 8 else mode
            active = node not in dead and not (node == "n003" and epoch >= 8)
            merged = [a for a, b in sorted(_ring(NODES)) if b == node and a not in silent]
            rows.append(
                {
                    "node": node,
                    "epoch": epoch,
                    "alive": node not in dead,
                    "event": events.get((epoch, node)),
                    "mode": None if node in dead else mode,
                    "merged_from": merged if active else [],
                    "accuracy": 0.5 if active else None,
                }
            )
    return rows


def _faces_at(ax: Axes, xy: tuple[float, float]) -> list[str]:
    """Face colours (hex) of the node markers drawn at ``xy`` in ``ax``, rings left out."""
    faces = []
    for collection in ax.collections:
        if not isinstance(collection, PathCollection) or collection.get_gid() == "changed":
            continue
        offsets = np.asarray(collection.get_offsets())
        hits = np.flatnonzero(np.hypot(*(offsets - np.array(xy)).T) < 1e-9)
        colours = collection.get_facecolors()
        for hit in hits:
            faces.append(matplotlib.colors.to_hex(colours[hit % len(colours)]))
    return faces


def _ringed(ax: Axes) -> int:
    rings = [c for c in ax.collections if c.get_gid() == "changed"]
    return sum(len(c.get_offsets()) for c in rings)


def _arrows(ax: Axes) -> set[tuple[str, str]]:
    """The (source, target) of every arrow in ``ax`` (arrows carry ``source->target`` gids)."""
    gids = [str(patch.get_gid()) for patch in ax.patches]
    return {tuple(gid.split("->")) for gid in gids if "->" in gid}  # type: ignore[misc]


def _position(ax: Axes, node: str) -> tuple[float, float]:
    for text in ax.texts:
        if text.get_text() == node:
            x, y = text.xy  # type: ignore[attr-defined]
            return float(x), float(y)
    raise AssertionError(f"no label {node}")


def test_one_frame_per_change_with_modes_of_that_epoch() -> None:
    # Prepare
    rows = _demo_rows()
    # Execute
    figure = timeline_figure(rows, nodes=NODES, edges=_ring(NODES))
    # Assert
    axes = figure.axes
    titles = [ax.get_title() for ax in axes]
    assert [t.splitlines()[0] for t in titles] == [
        "epoch 1 (start)",
        "epoch 2",
        "epoch 5",
        "epoch 7",
        "epoch 8",
        "epoch 10 (end)",
    ]
    assert "n000 leeching" in titles[0] and "n000 leeching \u2192 peer" in titles[1]
    assert "n005 killed" in titles[2] and "n005 restarted" in titles[3]
    assert "n003 paused" in titles[4]
    first, second, killed = axes[0], axes[1], axes[2]
    leeching = matplotlib.colors.to_hex(MODE_COLOURS["leeching"])
    peer = matplotlib.colors.to_hex(MODE_COLOURS["peer"])
    assert _faces_at(first, _position(first, "n000")) == [leeching]
    assert _faces_at(second, _position(second, "n000")) == [peer]
    assert _faces_at(killed, _position(killed, "n005")) == [matplotlib.colors.to_hex(DEAD_COLOUR)]
    paused = axes[4]
    assert _faces_at(paused, _position(paused, "n003")) == [
        matplotlib.colors.to_hex(MODE_COLOURS["offline"])
    ]
    assert [_ringed(ax) for ax in axes] == [0, 1, 1, 1, 1, 0]
    n000 = {("n001", "n000"), ("n007", "n000")}
    assert _arrows(first) == n000, "a leecher only receives: its edges are one-way arrows"
    assert _arrows(second) == set()
    assert all(not ax.axison for ax in axes), "the circle layout is drawn without axes"


def test_rings_mark_the_changed_node() -> None:
    # Execute
    figure = timeline_figure(_demo_rows(), nodes=NODES, edges=_ring(NODES))
    # Assert
    killed = figure.axes[2]
    ring = next(c for c in killed.collections if c.get_gid() == "changed")
    np.testing.assert_allclose(ring.get_offsets()[0], _position(killed, "n005"))
    assert matplotlib.colors.to_hex(ring.get_edgecolors()[0]) == CHANGED_RING


def test_edges_are_what_the_nodes_merged_from() -> None:
    # Prepare: n001 only receives from n000 (one way), n000 and n002 merge both ways
    rows = [
        {"node": "a", "epoch": 1, "alive": True, "mode": "peer", "merged_from": ["c"]},
        {"node": "b", "epoch": 1, "alive": True, "mode": "leeching", "merged_from": ["a"]},
        {"node": "c", "epoch": 1, "alive": True, "mode": "peer", "merged_from": ["a"]},
    ]
    # Execute
    frames, skipped = topology_frames(rows, ["a", "b", "c"])
    # Assert
    assert skipped == 0 and len(frames) == 1
    assert frames[0].edges == {("c", "a"), ("a", "b"), ("a", "c")}
    assert frames[0].modes == {"a": "peer", "b": "leeching", "c": "peer"}


def test_without_merged_from_the_configured_edges_are_drawn() -> None:
    # Prepare
    rows = [{"node": n, "epoch": e, "alive": True} for e in (1, 2) for n in NODES]
    # Execute
    frames, _ = topology_frames(rows, NODES, edges=_ring(NODES))
    # Assert
    assert [frame.epoch for frame in frames] == [1, 2]
    assert all(frame.edges == _ring(NODES) for frame in frames)


def test_many_changes_keep_first_last_and_evenly_spaced_frames() -> None:
    # Prepare: a node flips between peer and seeding every epoch
    rows = [
        {"node": n, "epoch": e, "alive": True, "mode": "seeding" if n == "a" and e % 2 else "peer"}
        for e in range(1, 21)
        for n in ("a", "b")
    ]
    # Execute
    frames, skipped = topology_frames(rows, ["a", "b"], max_frames=5)
    # Assert
    assert [frame.epoch for frame in frames] == [1, 2, 10, 19, 20]
    assert skipped == 18 - 3


def test_grid_topology_is_laid_out_as_a_grid() -> None:
    # Prepare: 12 nodes in 4 columns
    nodes = [f"g{i:02d}" for i in range(12)]
    pairs = [(nodes[i], nodes[i + 1]) for i in range(12) if (i + 1) % 4 and i + 1 < 12]
    pairs += [(nodes[i], nodes[i + 4]) for i in range(8)]
    rows = [{"node": n, "epoch": 1, "alive": True} for n in nodes]
    # Execute
    figure = timeline_figure(rows, nodes=nodes, edges=pairs)
    # Assert
    ax = figure.axes[0]
    xs = {round(_position(ax, n)[0], 6) for n in nodes}
    ys = {round(_position(ax, n)[1], 6) for n in nodes}
    assert len(xs) == 4 and len(ys) == 3, "not a 4 x 3 lattice"


def test_bad_rows_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="not in the node list"):
        topology_frames([{"node": "z", "epoch": 1}], ["a"])
    with pytest.raises(ConfigurationError, match="unknown operating mode 'dozing'"):
        topology_frames([{"node": "a", "epoch": 1, "mode": "dozing"}], ["a"])
    with pytest.raises(ConfigurationError, match="max_frames must be >= 2"):
        topology_frames([], ["a"], max_frames=1)


def test_plot_topology_timeline_writes_a_png(tmp_path: Path) -> None:
    # Execute
    written = plot_topology_timeline(
        _demo_rows(), tmp_path / "t" / "topology.png", nodes=NODES, edges=_ring(NODES)
    )
    # Assert
    assert written.stat().st_size > 10_000
    empty = plot_topology_timeline([], tmp_path / "empty.png", nodes=NODES)
    assert empty.exists()
