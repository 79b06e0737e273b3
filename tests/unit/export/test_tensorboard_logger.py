"""TensorBoardLogger: rows in, TensorBoard's own reader gets the same series back."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scatterbrained.errors import ConfigurationError

pytest.importorskip("tensorboardX")

from scatterbrained.export import TensorBoardLogger
from scatterbrained.export.tensorboard_logger import run_name

pytestmark = pytest.mark.timeout(30)

Read = Callable[[Path], dict[str, Any]]


def rows_of(epoch: int) -> list[dict[str, Any]]:
    """Three nodes; n002 is dead in epoch 2 (no accuracy), like a simulator's rows."""
    rows = []
    for i in range(3):
        dead = i == 2 and epoch == 2
        rows.append(
            {
                "node": f"n{i:03d}", "index": i, "epoch": epoch, "alive": not dead,
                "event": "killed" if dead else None,
                "accuracy": None if dead else 0.1 * i + 0.05 * epoch,
                "loss": None if dead else 2.0 / epoch, "train_loss": None if dead else 1.0,
                "mode": "peer", "merged_from": [] if dead else ["x"],
                "bytes_sent": 0 if dead else 1000 * epoch, "bytes_received": 0,
                "wall_s": 0.25, "peers": 2,
            }
        )  # fmt: skip
    return rows


def f32(value: float) -> float:
    return float(np.float32(value))  # TensorBoard stores scalars as float32


def test_per_node_and_aggregated_series_read_back_equal(
    tmp_path: Path, read_tensorboard: Read
) -> None:
    logdir = tmp_path / "tb"
    epochs = {epoch: rows_of(epoch) for epoch in (1, 2, 3)}

    with TensorBoardLogger(logdir) as tb:
        for epoch, rows in epochs.items():
            tb.log_epoch(epoch, rows)
    runs = read_tensorboard(logdir)

    assert set(runs) == {"all", "n000", "n001", "n002"}
    for node in ("n000", "n001", "n002"):
        expected = [
            (e, f32(r["accuracy"]))
            for e, rows in epochs.items()
            for r in rows
            if r["node"] == node and r["accuracy"] is not None
        ]
        assert runs[node]["accuracy"] == expected
    assert runs["n002"]["alive"] == [(1, 1.0), (2, 0.0), (3, 1.0)]
    mean = [
        (e, f32(np.mean([r["accuracy"] for r in rows if r["alive"]]))) for e, rows in epochs.items()
    ]
    assert [(s, pytest.approx(v)) for s, v in runs["all"]["accuracy"]] == mean
    assert runs["all"]["accuracy_min"] == [(1, f32(0.05)), (2, f32(0.1)), (3, f32(0.15))]
    assert runs["all"]["bytes_sent"] == [(1, 3000.0), (2, 4000.0), (3, 9000.0)]
    assert runs["all"]["nodes_alive"] == [(1, 3.0), (2, 2.0), (3, 3.0)]


def test_one_node_writes_no_aggregate_and_nothing_before_the_first_epoch(
    tmp_path: Path, read_tensorboard: Read
) -> None:
    logdir = tmp_path / "tb"
    tb = TensorBoardLogger(logdir)
    assert not logdir.exists()

    tb.log_epoch(1, rows_of(1)[:1])
    tb.close()
    tb.close()  # idempotent
    tb.log_epoch(2, rows_of(2)[:1])  # after close: ignored

    runs = read_tensorboard(logdir)
    assert set(runs) == {"n000"}
    assert [step for step, _ in runs["n000"]["accuracy"]] == [1]


def test_per_node_runs_are_bounded(tmp_path: Path, read_tensorboard: Read) -> None:
    logdir = tmp_path / "tb"

    with TensorBoardLogger(logdir, max_nodes=2) as tb:
        tb.log_epoch(1, rows_of(1))

    runs = read_tensorboard(logdir)
    assert set(runs) == {"all", "n000", "n001"}
    assert runs["all"]["nodes_reporting"] == [(1, 3.0)]


def test_node_ids_become_safe_folder_names() -> None:
    assert run_name("../etc/x") == "_etc_x"
    assert run_name("all") == "node-all"
    assert run_name("node-1a.b") == "node-1a.b"


def test_without_tensorboardx_the_error_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboardX", None)

    with pytest.raises(ConfigurationError, match=r"scatterbrained\[tensorboard\]"):
        TensorBoardLogger(tmp_path / "tb")
