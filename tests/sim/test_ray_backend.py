"""16 nodes as Ray actors on a local Ray instance, over real ZeroMQ, learn as the in-process
simulator does; faults on actors (ray.kill, a restart on the same machine, a pause at the
gate) give the same rows as in the in-memory backend.

The run takes the user's path: ``run_simulation`` with ``backend = "ray"`` and the default
Ray options, so the backend starts a local Ray instance (loopback only) and shuts it down
again. The test is skipped only when Ray cannot start here (:class:`RayStartError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scatterbrained.sim.config import FaultEvent, SimConfig
from scatterbrained.sim.runner import RunResult, run_simulation

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

from scatterbrained.sim.ray_backend import RayStartError  # noqa: E402


def config(out: Path, **changes: Any) -> SimConfig:
    """16 nodes on digits in a ring, label skew, synchronous rounds (deterministic in memory)."""
    base = SimConfig(nodes=16, epochs=8, dataset="digits", lr=0.02, batch_size=16, out=str(out))
    return base.replace(**changes)


def run_on_ray(config: SimConfig) -> RunResult:
    try:
        return run_simulation(config)
    except RayStartError as exc:
        pytest.skip(f"Ray cannot start here: {exc}")


@pytest.mark.timeout(400)
def test_sixteen_ray_actors_reach_the_in_process_accuracy(tmp_path: Path) -> None:
    memory = run_simulation(config(tmp_path / "memory", backend="memory"))

    actors = run_on_ray(config(tmp_path / "ray", backend="ray"))

    assert memory.summary["mean_accuracy"] >= 0.7  # the premise: the federation learns
    assert not ray.is_initialized()  # the backend shut down the instance it started
    assert actors.summary["nodes_finished"] == 16
    assert len(actors.metrics) == 16 * 8
    assert all(row["train_loss"] is not None for row in actors.metrics)
    assert all(row["peers"] == 15 for row in actors.metrics if row["epoch"] == 8)
    gap = abs(actors.summary["mean_accuracy"] - memory.summary["mean_accuracy"])
    assert gap <= 0.02, (actors.summary, memory.summary)


FAULTS = (
    FaultEvent(1, 1, "kill"),
    FaultEvent(3, 1, "restart"),
    FaultEvent(2, 2, "pause"),
    FaultEvent(4, 2, "resume"),
)


def shape(result: RunResult) -> list[tuple[Any, ...]]:
    """Who was alive, trained, in which mode, with which event marker, epoch by epoch."""
    return [
        (r["node"], r["epoch"], r["alive"], r["event"], r["train_loss"] is not None, r["mode"])
        for r in result.metrics
    ]


@pytest.mark.extended  # minutes of actor restarts on 2 cores: `pytest -m extended`
@pytest.mark.timeout(600)
def test_faults_on_actors_give_the_in_memory_backends_rows(tmp_path: Path) -> None:
    small = SimConfig(
        nodes=3,
        epochs=6,
        dataset="digits",
        partition="iid",
        hidden=32,
        sync=False,
        gossip_wait=0.0,
        faults=FAULTS,
    )
    memory = run_simulation(small.replace(out=str(tmp_path / "memory")))

    actors = run_on_ray(small.replace(backend="ray", out=str(tmp_path / "ray")))

    assert shape(actors) == shape(memory)
    assert actors.summary["events"] == memory.summary["events"]
    restarted = next(r for r in actors.metrics if r["node"] == "n001" and r["epoch"] == 4)
    assert restarted["version"] >= 3  # resumed from its checkpoint and caught up
    assert all("n002" not in r["merged_from"] for r in actors.metrics if r["epoch"] in (3, 4))
