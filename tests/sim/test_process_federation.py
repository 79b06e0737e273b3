"""Real federations of 8 OS processes (ZeroMQ + UDP loopback discovery) on digits.

Issue checks: a Ring of 8 processes with Dirichlet(0.5) label skew reaches the centralized
accuracy within 3 points and beats the same nodes trained alone by at least 15 points;
with 2 nodes SIGKILLed mid-training and restarted later the survivors finish, the restarted
nodes catch up, and the final accuracy stays within 3 points of the run without churn;
the in-process simulator agrees with the process run within 3 points (in synchronous rounds,
where both are deterministic).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scatterbrained.sim.config import FaultEvent, SimConfig
from scatterbrained.sim.runner import RunResult, run_simulation

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def ring_config(out: Path, **changes: Any) -> SimConfig:
    """The issue's setup: 8 nodes, Ring, digits, Dirichlet(0.5), 30 epochs, gossip."""
    base = SimConfig(
        nodes=8,
        epochs=30,
        dataset="digits",
        partition="dirichlet:alpha=0.5",
        topology="ring",
        model="mlp",
        hidden=128,
        lr=0.05,
        batch_size=16,
        sync=False,
        share_every=2,
        gossip_wait=1.0,  # free-running processes keep pace with their neighbours
        backend="process",
        out=str(out),
    )
    return base.replace(**changes)


@pytest.fixture(scope="module")
def calm_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    out = tmp_path_factory.mktemp("calm")
    return run_simulation(ring_config(out, centralized=True, local_only=True))


@pytest.fixture(scope="module")
def churn_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    out = tmp_path_factory.mktemp("churn")
    faults = (
        FaultEvent(10, 2, "kill"),
        FaultEvent(12, 5, "kill"),
        FaultEvent(18, 2, "restart"),
        FaultEvent(20, 5, "restart"),
    )
    return run_simulation(ring_config(out, faults=faults))


def test_ring_of_processes_matches_centralized(calm_run: RunResult) -> None:
    summary = calm_run.summary

    assert summary["nodes_finished"] == 8
    assert summary["mean_accuracy"] >= summary["centralized_accuracy"] - 0.03, summary


def test_ring_of_processes_beats_local_training(calm_run: RunResult) -> None:
    summary = calm_run.summary

    assert summary["mean_accuracy"] >= summary["local_only_mean_accuracy"] + 0.15, summary


def test_every_node_merged_only_from_its_ring_neighbours(calm_run: RunResult) -> None:
    ids = [f"n{i:03d}" for i in range(8)]
    neighbours = {node: {ids[(i - 1) % 8], ids[(i + 1) % 8]} for i, node in enumerate(ids)}

    merged = {r["node"]: set() for r in calm_run.metrics}
    for row in calm_run.metrics:
        merged[row["node"]].update(row["merged_from"])

    for node, sources in merged.items():
        assert sources, f"{node} never merged"
        assert sources <= neighbours[node], (node, sources)


def test_churn_survivors_finish_and_restarted_nodes_catch_up(
    churn_run: RunResult, calm_run: RunResult
) -> None:
    rows = churn_run.metrics
    killed = {r["node"] for r in rows if r.get("event") == "killed"}
    restarted = {r["node"] for r in rows if r.get("event") == "restarted"}
    last = {r["node"]: r for r in rows if r["epoch"] == 30}

    assert killed == {"n002", "n005"}
    assert restarted == {"n002", "n005"}
    assert all(row["alive"] for row in last.values()), "every node finishes all epochs"
    assert churn_run.summary["nodes_finished"] == 8
    assert churn_run.summary["mean_accuracy"] >= calm_run.summary["mean_accuracy"] - 0.03


@pytest.fixture(scope="module")
def rounds_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """The same ring in synchronous rounds: each merge takes exactly round r of each neighbour."""
    out = tmp_path_factory.mktemp("rounds")
    return run_simulation(ring_config(out, sync=True, share_every=None, gossip_wait=0.0))


def test_in_process_simulation_agrees_with_processes(rounds_run: RunResult, tmp_path: Path) -> None:
    # Synchronous rounds on both sides: the processes merge exactly what the lockstep in-process
    # nodes merge, so the two agree closely. (Free-running gossip is timing-dependent on both
    # sides, in-process included: four in-process gossip runs of this ring gave 0.927 to 0.960.)
    config = ring_config(tmp_path, backend="memory", sync=True, share_every=None, gossip_wait=0.0)

    in_process = run_simulation(config)

    assert rounds_run.summary["nodes_finished"] == 8
    gap = abs(in_process.summary["mean_accuracy"] - rounds_run.summary["mean_accuracy"])
    assert gap <= 0.03, (in_process.summary, rounds_run.summary)
