"""Real federations of OS processes (ZeroMQ + UDP loopback discovery) on digits.

Faults, quick (3 and 4 processes, a few epochs): a node killed after epoch 1 and restarted
after epoch 3 has no rows for epochs 2 and 3 and trains again from epoch 4; a node paused
after epoch 2 and resumed after epoch 4 neither trains nor merges in epochs 3 and 4; both
exactly as in the in-memory backend. A SEEDING node in synchronous rounds keeps every round
in step (its neighbours never wait a ``round_timeout`` for it).

Issue checks (slow, 8 processes): a Ring of 8 processes with Dirichlet(0.5) label skew
reaches the centralized accuracy within 3 points and beats the same nodes trained alone by
at least 15 points;
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
from scatterbrained.sim.experiment import Experiment
from scatterbrained.sim.processes import read_metric_rows
from scatterbrained.sim.runner import RunResult, run_simulation

pytestmark = pytest.mark.timeout(900)

# ------------------------------------------------------------------ faults (quick)

FAULTS = (
    FaultEvent(1, 1, "kill"),
    FaultEvent(3, 1, "restart"),
    FaultEvent(2, 2, "pause"),
    FaultEvent(4, 2, "resume"),
)


def small_config(out: Path, **changes: Any) -> SimConfig:
    """3 processes in a ring on digits, 6 short epochs, gossip."""
    base = SimConfig(
        nodes=3,
        epochs=6,
        dataset="digits",
        partition="iid",
        topology="ring",
        model="mlp",
        hidden=32,
        batch_size=32,
        sync=False,
        gossip_wait=0.0,
        backend="process",
        out=str(out),
    )
    return base.replace(**changes)


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return run_simulation(small_config(tmp_path_factory.mktemp("faults"), faults=FAULTS))


def rows_of(result: RunResult, node: str) -> dict[int, dict[str, Any]]:
    return {r["epoch"]: r for r in result.metrics if r["node"] == node}


def trained(row: dict[str, Any]) -> bool:
    return row["train_loss"] is not None


def test_killed_node_has_no_rows_from_its_kill_to_its_restart(fault_run: RunResult) -> None:
    rows = rows_of(fault_run, "n001")
    worker_rows = read_metric_rows(fault_run.out / "nodes" / "n001.jsonl")

    assert [e for e, r in rows.items() if r["alive"]] == [1, 4, 5, 6]
    assert [e for e, r in rows.items() if trained(r)] == [1, 4, 5, 6]
    assert [r["epoch"] for r in worker_rows] == [1, 4, 5, 6]  # trained 1 epoch, then 3 more
    assert {e: r["event"] for e, r in rows.items() if r["event"]} == {2: "killed", 4: "restarted"}
    assert rows[4]["version"] >= 3  # caught up from a peer before training again


def test_paused_node_neither_trains_nor_merges_until_resumed(fault_run: RunResult) -> None:
    rows = rows_of(fault_run, "n002")
    worker_rows = read_metric_rows(fault_run.out / "nodes" / "n002.jsonl")
    others = [r for r in fault_run.metrics if r["node"] != "n002" and r["epoch"] in (3, 4)]

    assert [r["epoch"] for r in worker_rows] == [1, 2, 5, 6]
    for epoch in (3, 4):
        assert rows[epoch]["alive"] is True
        assert not trained(rows[epoch])
        assert rows[epoch]["merged_from"] == []
        assert rows[epoch]["mode"] == "offline"
    assert trained(rows[5]) and trained(rows[6])
    assert {e: r["event"] for e, r in rows.items() if r["event"]} == {3: "paused", 5: "resumed"}
    assert all("n002" not in r["merged_from"] for r in others)  # it sent nothing either


def test_fault_rows_match_the_in_memory_backend(fault_run: RunResult, tmp_path: Path) -> None:
    memory = run_simulation(small_config(tmp_path, faults=FAULTS, backend="memory"))

    def shape(result: RunResult) -> list[tuple[Any, ...]]:
        return [
            (r["node"], r["epoch"], r["alive"], r["event"], r["mode"] == "offline", trained(r))
            for r in result.metrics
        ]

    assert shape(fault_run) == shape(memory)
    assert fault_run.summary["events"] == memory.summary["events"]
    assert fault_run.summary["nodes_finished"] == 3


# ------------------------------------------------------------------ seeding in rounds (quick)

ROUND_TIMEOUT = 20.0


def seeding_config(out: Path, **changes: Any) -> SimConfig:
    """4 nodes in a ring, synchronous rounds; n000 SEEDING with a tiny shard (30 samples).

    With free-running processes the seeder, which never waits for anyone and trains 30
    samples against its neighbours' 122 to 695, ran rounds ahead: its neighbours adopted its
    round numbers, and once it had finished they waited ``round_timeout`` every round for
    rounds it never sent.
    """
    base = SimConfig(
        nodes=4,
        epochs=5,
        dataset="digits",
        partition="dirichlet:alpha=0.1",
        seed=0,
        topology="ring",
        model="mlp",
        hidden=128,
        batch_size=8,
        sync=True,
        round_timeout=ROUND_TIMEOUT,
        modes={"0": "seeding"},
        backend="process",
        out=str(out),
    )
    return base.replace(**changes)


@pytest.fixture(scope="module")
def seeding_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return run_simulation(seeding_config(tmp_path_factory.mktemp("seeding")))


def test_seeding_node_keeps_synchronous_rounds_in_step(seeding_run: RunResult) -> None:
    rows = seeding_run.metrics
    neighbours = [r for r in rows if r["node"] in ("n001", "n003")]
    sizes = [len(part) for part in Experiment.load(seeding_config(seeding_run.out)).parts]

    assert sizes[0] * 4 < min(sizes[1:]), sizes  # the premise: the seeder is the fast one
    # Every round of each neighbour had the seeder's update for that round (old: from epoch 4
    # on its neighbours were rounds ahead of it and merged without it, after a timeout).
    assert all("n000" in r["merged_from"] for r in neighbours), neighbours
    slowest = max(rows, key=lambda r: r["wall_s"])
    assert slowest["wall_s"] < ROUND_TIMEOUT, slowest  # nobody waited a round out


def test_seeding_rounds_merge_exactly_what_the_in_memory_backend_merges(
    seeding_run: RunResult, tmp_path: Path
) -> None:
    memory = run_simulation(seeding_config(tmp_path, backend="memory"))

    def merges(result: RunResult) -> list[tuple[Any, ...]]:
        return [(r["node"], r["epoch"], r["version"], r["merged_from"]) for r in result.metrics]

    assert merges(seeding_run) == merges(memory)
    # Rounds in step merge the same weights in the same order: the same numbers come out.
    accuracies = [r["accuracy"] for r in memory.metrics]
    assert [r["accuracy"] for r in seeding_run.metrics] == pytest.approx(accuracies, abs=1e-6)


# ------------------------------------------------------------------ the checks (slow)


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


@pytest.mark.slow
def test_ring_of_processes_matches_centralized(calm_run: RunResult) -> None:
    summary = calm_run.summary

    assert summary["nodes_finished"] == 8
    assert summary["mean_accuracy"] >= summary["centralized_accuracy"] - 0.03, summary


@pytest.mark.slow
def test_ring_of_processes_beats_local_training(calm_run: RunResult) -> None:
    summary = calm_run.summary

    assert summary["mean_accuracy"] >= summary["local_only_mean_accuracy"] + 0.15, summary


@pytest.mark.slow
def test_every_node_merged_only_from_its_ring_neighbours(calm_run: RunResult) -> None:
    ids = [f"n{i:03d}" for i in range(8)]
    neighbours = {node: {ids[(i - 1) % 8], ids[(i + 1) % 8]} for i, node in enumerate(ids)}

    merged = {r["node"]: set() for r in calm_run.metrics}
    for row in calm_run.metrics:
        merged[row["node"]].update(row["merged_from"])

    for node, sources in merged.items():
        assert sources, f"{node} never merged"
        assert sources <= neighbours[node], (node, sources)


@pytest.mark.slow
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


@pytest.mark.slow
def test_in_process_simulation_agrees_with_processes(rounds_run: RunResult, tmp_path: Path) -> None:
    # Synchronous rounds on both sides: the processes merge exactly what the lockstep in-process
    # nodes merge, so the two agree closely. (Free-running gossip is timing-dependent on both
    # sides, in-process included: four in-process gossip runs of this ring gave 0.927 to 0.960.)
    config = ring_config(tmp_path, backend="memory", sync=True, share_every=None, gossip_wait=0.0)

    in_process = run_simulation(config)

    assert rounds_run.summary["nodes_finished"] == 8
    gap = abs(in_process.summary["mean_accuracy"] - rounds_run.summary["mean_accuracy"])
    assert gap <= 0.03, (in_process.summary, rounds_run.summary)
