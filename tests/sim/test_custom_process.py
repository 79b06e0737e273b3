"""Your own model and data in the ``process`` backend: every node is its own OS process.

The user's module sits in a folder that is neither the working folder nor on the workers'
inherited path: the runner must hand its folder to the workers. In-memory data reaches them
through the ``dataset.npz`` the run writes.
"""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from scatterbrained.sim.config import SimConfig
from scatterbrained.sim.runner import run_simulation

pytestmark = pytest.mark.timeout(300)

MODULE = """
from sklearn.datasets import load_digits
from torch import nn

def make_model(input_dim, num_classes):
    return nn.Sequential(nn.Linear(input_dim, 32), nn.ReLU(), nn.Linear(32, num_classes))

def load():
    digits = load_digits()
    return (digits.data / 16.0).astype("float32"), digits.target
"""


def small(out: Path, **changes: object) -> SimConfig:
    """Two processes, two epochs, synchronous rounds: quick and deterministic."""
    return SimConfig.from_mapping(
        {
            "nodes": 2,
            "epochs": 2,
            "partition": "iid",
            "lr": 0.01,
            "backend": "process",
            "out": str(out),
            **changes,
        }
    )


def test_module_function_model_and_data_reach_the_worker_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"user_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / f"{name}.py").write_text(textwrap.dedent(MODULE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))  # importable here, not by the workers' own path
    config = small(tmp_path / "run", model=f"{name}:make_model", dataset=f"{name}:load")

    result = run_simulation(config)

    assert result.summary["nodes_finished"] == 2
    assert result.summary["mean_accuracy"] > 0.5  # chance: 0.1


def test_in_memory_data_reaches_the_worker_processes(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target
    config = small(tmp_path / "run").replace(dataset=(x, y))

    result = run_simulation(config)

    assert (tmp_path / "run" / "dataset.npz").is_file()
    assert result.summary["nodes_finished"] == 2
    assert result.summary["mean_accuracy"] > 0.5
