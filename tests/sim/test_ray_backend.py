"""16 nodes as Ray actors on a local Ray instance, over real ZeroMQ, learn as the in-process
simulator does.

The run takes the user's path: ``run_simulation`` with ``backend = "ray"`` and the default
Ray options, so the backend starts a local Ray instance (loopback only) and shuts it down
again. The test is skipped only when Ray cannot start here (:class:`RayStartError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scatterbrained.sim.config import SimConfig
from scatterbrained.sim.runner import RunResult, run_simulation

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

from scatterbrained.sim.ray_backend import RayStartError  # noqa: E402


def config(out: Path, **changes: Any) -> SimConfig:
    """16 nodes on digits in a ring, synchronous rounds (deterministic in memory)."""
    return SimConfig(nodes=16, epochs=8, dataset="digits", out=str(out)).replace(**changes)


def run_on_ray(out: Path) -> RunResult:
    try:
        return run_simulation(config(out, backend="ray"))
    except RayStartError as exc:
        pytest.skip(f"Ray cannot start here: {exc}")


@pytest.mark.timeout(400)
def test_sixteen_ray_actors_reach_the_in_process_accuracy(tmp_path: Path) -> None:
    memory = run_simulation(config(tmp_path / "memory", backend="memory"))

    actors = run_on_ray(tmp_path / "ray")

    assert not ray.is_initialized()  # the backend shut down the instance it started
    assert actors.summary["nodes_finished"] == 16
    assert len(actors.metrics) == 16 * 8
    assert all(row["train_loss"] is not None for row in actors.metrics)
    assert all(row["peers"] == 15 for row in actors.metrics if row["epoch"] == 8)
    gap = abs(actors.summary["mean_accuracy"] - memory.summary["mean_accuracy"])
    assert gap <= 0.02, (actors.summary, memory.summary)
