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

from scatterbrained.errors import ConfigurationError
from scatterbrained.sim.plots import MODE_COLOURS, plot_accuracy, plot_topology

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
