"""Tests of scatterbrained.sim.plots: accuracy and topology figures rendered to PNG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

from scatterbrained.errors import ConfigurationError
from scatterbrained.sim.plots import MODE_COLOURS, accuracy_figure, plot_accuracy, plot_topology

pytestmark = pytest.mark.timeout(60)


def _records(nodes: int = 6, epochs: int = 8) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for node in range(nodes):
        for epoch in range(1, epochs + 1):
            dead = node == 1 and 3 <= epoch < 6
            accuracy = None if dead else 0.5 + 0.4 * epoch / epochs + 0.02 * rng.random()
            mode = "offline" if dead else ("leeching" if node == 2 and epoch < 3 else "peer")
            row = {"node": f"n{node}", "epoch": epoch, "accuracy": accuracy, "mode": mode}
            if node == 1 and epoch in (3, 6):
                row["event"] = "killed" if epoch == 3 else "restarted"
            rows.append(row)
    return rows


def _read_png(path: Path) -> np.ndarray:
    image = matplotlib.image.imread(path)
    assert isinstance(image, np.ndarray)
    return image


def _colour_present(image: np.ndarray, hex_colour: str, tolerance: float = 0.02) -> bool:
    rgb = np.array(matplotlib.colors.to_rgb(hex_colour))
    return bool((np.abs(image[..., :3] - rgb).max(axis=-1) < tolerance).any())


def test_plot_accuracy_writes_a_1200x700_png(tmp_path: Path) -> None:
    # Prepare
    out = tmp_path / "nested" / "accuracy.png"
    # Execute
    written = plot_accuracy(_records(), out, centralized=0.93, title="six nodes")
    # Assert
    image = _read_png(written)
    assert written == out and out.stat().st_size > 10_000
    assert image.shape[:2] == (700, 1200)
    assert image[..., :3].std() > 0.05, "the image is blank"
    assert _colour_present(image, "#d62728"), "no centralized line / killed marker drawn"
    assert _colour_present(image, MODE_COLOURS["leeching"], tolerance=0.15)


def test_plot_accuracy_is_deterministic(tmp_path: Path) -> None:
    # Execute
    first = plot_accuracy(_records(), tmp_path / "a.png", centralized=0.9)
    second = plot_accuracy(_records(), tmp_path / "b.png", centralized=0.9)
    # Assert
    np.testing.assert_array_equal(_read_png(first), _read_png(second))


def test_plot_accuracy_without_centralized_or_modes_differs(tmp_path: Path) -> None:
    # Prepare
    plain = [{k: v for k, v in row.items() if k not in ("mode", "event")} for row in _records()]
    # Execute
    full = _read_png(plot_accuracy(_records(), tmp_path / "full.png", centralized=0.9))
    bare = _read_png(plot_accuracy(plain, tmp_path / "bare.png"))
    # Assert
    assert bare.shape == full.shape
    assert not _colour_present(bare, MODE_COLOURS["leeching"], tolerance=0.15)
    assert not np.array_equal(bare, full)


def test_plot_accuracy_with_no_accuracy_still_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Execute
    with caplog.at_level("WARNING", logger="scatterbrained.sim.plots"):
        written = plot_accuracy([{"node": "a", "epoch": 1, "accuracy": None}], tmp_path / "e.png")
    # Assert
    assert _read_png(written).shape[:2] == (700, 1200)
    assert "no record carries an accuracy" in caplog.text


def test_plot_accuracy_rejects_bad_records(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="lacks 'node' or 'epoch'"):
        plot_accuracy([{"node": "a", "accuracy": 0.5}], tmp_path / "x.png")
    with pytest.raises(ConfigurationError, match="unknown operating mode 'sleepy'"):
        bad = [{"node": "a", "epoch": 1, "accuracy": 0.5, "mode": "sleepy"}]
        plot_accuracy(bad + _records(), tmp_path / "y.png")


def test_plot_topology_small_undirected(tmp_path: Path) -> None:
    # Prepare
    nodes = [f"n{i}" for i in range(8)]
    ring = [(nodes[i], nodes[(i + 1) % 8]) for i in range(8)]
    edges = ring + [(b, a) for a, b in ring]
    modes = {"n0": "seeding", "n1": "leeching", "n2": "OFFLINE"}
    # Execute
    written = plot_topology(nodes, edges, modes, tmp_path / "ring.png", dead={"n5"}, title="ring")
    # Assert
    image = _read_png(written)
    assert image.shape[:2] == (700, 1200)
    for mode in ("peer", "seeding", "leeching", "offline"):
        assert _colour_present(image, MODE_COLOURS[mode]), f"no {mode} node drawn"


def test_plot_topology_directed_star_and_large_graph(tmp_path: Path) -> None:
    # Prepare
    leaves = [f"leaf{i}" for i in range(12)]
    star = [("hub", leaf) for leaf in leaves]
    many = [f"node-{i}" for i in range(40)]
    chain = [(many[i], many[i + 1]) for i in range(39)]
    # Execute
    star_png = plot_topology(["hub", *leaves], star, {"hub": "seeding"}, tmp_path / "s.png")
    big_png = plot_topology(many, chain, {}, tmp_path / "big.png", dead=many[:3], seed=1)
    again = plot_topology(many, chain, {}, tmp_path / "big2.png", dead=many[:3], seed=1)
    # Assert
    assert _read_png(star_png).shape[:2] == (700, 1200)
    np.testing.assert_array_equal(_read_png(big_png), _read_png(again))


def test_plot_topology_rejects_unknown_nodes_and_modes(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="edge \\('a', 'z'\\) names a node"):
        plot_topology(["a", "b"], [("a", "z")], {}, tmp_path / "t.png")
    with pytest.raises(ConfigurationError, match="mode of node 'a'"):
        plot_topology(["a", "b"], [("a", "b")], {"a": "lurking"}, tmp_path / "t.png")


def test_plotting_leaves_pyplot_and_rcparams_alone(tmp_path: Path) -> None:
    # Prepare
    before = dict(matplotlib.rcParams)
    script = (
        "import sys, matplotlib\n"
        "from scatterbrained.sim.plots import plot_accuracy, plot_topology\n"
        "backend = dict.__getitem__(matplotlib.rcParams, 'backend')\n"
        f"plot_accuracy([{{'node': 'a', 'epoch': 1, 'accuracy': 0.5}}], r'{tmp_path}/a.png')\n"
        f"plot_topology(['a', 'b'], [('a', 'b')], {{}}, r'{tmp_path}/t.png')\n"
        "assert dict.__getitem__(matplotlib.rcParams, 'backend') == backend\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    # Execute
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=50, check=True
    )
    plot_accuracy(_records(), tmp_path / "here.png")
    # Assert
    assert done.stdout.strip() == "False", done.stderr
    assert dict(matplotlib.rcParams) == before


def _churn_records() -> list[dict[str, Any]]:
    """_records plus n3 paused before epoch 4 (no accuracy while paused) and resumed before 6."""
    rows = _records()
    for row in rows:
        if row["node"] == "n3" and 4 <= row["epoch"] < 6:
            row.update(accuracy=None, mode="offline", event="paused" if row["epoch"] == 4 else None)
        if row["node"] == "n3" and row["epoch"] == 6:
            row["event"] = "resumed"
    return rows


def _accuracy_of(rows: list[dict[str, Any]], node: str, epoch: int) -> float:
    return float(next(r["accuracy"] for r in rows if r["node"] == node and r["epoch"] == epoch))


def _markers(figure: Figure, event: str) -> np.ndarray:
    ax = figure.axes[0]
    found = [c for c in ax.collections if c.get_gid() == f"event:{event}"]
    assert len(found) == 1, f"no {event} markers"
    return np.asarray(found[0].get_offsets())


def test_churn_markers_sit_at_the_nodes_own_accuracy() -> None:
    # Prepare
    rows = _churn_records()
    # Execute
    figure = accuracy_figure(rows, centralized=0.93)
    # Assert: half an epoch before the row's epoch (between the two epochs), at the node's
    # last accuracy for a kill or pause, at its first one back for a restart or resume
    expected = {
        "killed": (2.5, _accuracy_of(rows, "n1", 2)),
        "restarted": (5.5, _accuracy_of(rows, "n1", 6)),
        "paused": (3.5, _accuracy_of(rows, "n3", 3)),
        "resumed": (5.5, _accuracy_of(rows, "n3", 6)),
    }
    for event, xy in expected.items():
        np.testing.assert_allclose(_markers(figure, event), [xy])
    mean_at_2 = np.mean([_accuracy_of(rows, f"n{i}", 2) for i in range(6)])
    assert abs(expected["killed"][1] - mean_at_2) > 1e-3, "the test data cannot tell them apart"
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert {"killed (1)", "restarted (1)", "paused (1)", "resumed (1)"} <= set(labels)
    lines = [line for line in figure.axes[0].lines if line.get_linestyle() == ":"]
    assert {
        round(float(line.get_xdata()[0]), 1) for line in lines if len(line.get_xdata()) == 2
    } >= {
        2.5,
        3.5,
        5.5,
    }, "a dotted vertical line per event epoch"


def test_legend_is_outside_the_axes_and_clear_of_the_baseline() -> None:
    # Prepare: a baseline near the top, where a legend inside would sit
    figure = accuracy_figure(_churn_records(), centralized=0.99)
    figure.canvas.draw()
    ax = figure.axes[0]
    # Execute
    legend = ax.get_legend().get_window_extent()
    axes_box = ax.get_window_extent()
    baseline = next(line for line in ax.lines if line.get_linestyle() == "--")
    # Assert
    assert legend.x0 >= axes_box.x1, "the legend overlaps the axes"
    assert legend.x1 <= figure.bbox.x1 + 1, "the legend is cut off"
    low, high = ax.get_ylim()
    assert low < float(baseline.get_ydata()[0]) < high, "the baseline is outside the axes"


def test_accuracy_subtitle_has_the_final_figures() -> None:
    figure = accuracy_figure(_records(), title="six nodes")
    assert figure.get_suptitle() == "six nodes"
    assert figure.axes[0].get_title().startswith("final epoch 8: mean ")
